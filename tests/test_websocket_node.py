"""
End-to-end test of L{txupgrade.protocols.websocket} with Node's C{ws} client.

C{tests/node/ws_client.js} connects to a real L{UpgradeSite} on 127.0.0.1,
sends text, binary and a 1 MiB message, checks each echo, and closes with
1000; this test runs it and reads its one-line JSON report. CI installs
C{ws} with C{npm ci} in C{tests/node} (C{.ci/install}).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support.net import listen, withTimeout
from tests.support.processes import NODE_DIR, nodeOrSkip, runProcess
from tests.support.websocket import RecordingServerFactory, webSocketSite


class NodeWsClientTests(TestCase):
    """Node's C{ws} client against a real server."""

    timeout = 90

    @inlineCallbacks
    def test_echoAndClose(self) -> Any:
        """Text, binary and 1 MiB messages come back; the close code is 1000."""
        node = nodeOrSkip("ws")
        factory = RecordingServerFactory()
        port = listen(self, webSocketSite(factory))
        url = f"ws://127.0.0.1:{port}/ws"
        out, err, exitCode = yield runProcess(node, ["ws_client.js", url], str(NODE_DIR), 60)
        lines = out.decode("utf-8").splitlines()
        self.assertTrue(lines, f"no report from ws_client.js; stderr: {err!r}")
        report = json.loads(lines[-1])
        self.assertEqual(report["errors"], [])
        self.assertEqual(
            report["echoes"],
            [
                {"length": len("hello from node \u2603".encode()), "binary": False, "same": True},
                {"length": 256, "binary": True, "same": True},
                {"length": 1 << 20, "binary": True, "same": True},
            ],
        )
        self.assertEqual(report["closeCode"], 1000)
        self.assertTrue(report["ok"])
        self.assertEqual(exitCode, 0, err)
        self.assertEqual(len(factory.connections), 1)
        proto = factory.connections[0]
        yield withTimeout(proto.lost)
        self.assertEqual(proto.closeInfo, (True, 1000, "node done"))
        request = proto.request
        assert request is not None
        self.assertTrue(request.peer.startswith("tcp4:127.0.0.1:"), request.peer)
