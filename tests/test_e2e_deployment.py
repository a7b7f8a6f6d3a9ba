"""
The deployment docs/operators.md describes, as real processes: two
C{twistd txupgrade --workers 2} daemons listening with C{haproxy:}, behind
HAProxy balancing round robin with C{send-proxy-v2}. WebSocket clients get
through to both daemons, and the real client address reaches the
WebSocket protocol's C{onConnect} (echoed back by
L{tests.daemon_sample.chatFactory}) and each daemon's log (the end of
each upgraded connection, with its peer), relayed from its workers.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from websockets.sync.client import connect as wsConnect

from tests.support.net import inThread, wait
from tests.support.proxies import haproxyPairConfig, startProxy
from tests.test_e2e_workers import startWorkers

CLIENT_TIMEOUT = 10.0
CLIENTS = 4

DAEMON = [
    "--workers",
    "2",
    "--listen",
    "haproxy:tcp:0:interface=127.0.0.1",
    "--websocket",
    "/chat=tests.daemon_sample.chatFactory",
]


def _chats(port: int, count: int) -> list[tuple[int, str]]:
    """C{count} WebSocket clients in a row: each one's local port and the chat answer."""
    seen = []
    for i in range(count):
        with wsConnect(f"ws://127.0.0.1:{port}/chat", open_timeout=CLIENT_TIMEOUT) as ws:
            ws.send(f"hi {i}")
            seen.append((ws.local_address[1], str(ws.recv(timeout=CLIENT_TIMEOUT))))
    return seen


class DeploymentTests(TestCase):
    """Two daemons with two workers each, behind HAProxy and the PROXY protocol v2."""

    timeout = 240

    @inlineCallbacks
    def test_behindHAProxy(self) -> Any:
        """
        Every client's chat is answered with its own address; both daemons
        served, and their logs name exactly the clients' ports.
        """
        first = yield startWorkers(self, DAEMON)
        second = yield startWorkers(self, DAEMON)
        ports = [first.ports[0], second.ports[0]]
        proxyPort = yield startProxy(
            self, "haproxy", ports[0], config=haproxyPairConfig(ports, "send-proxy-v2")
        )
        seen = yield inThread(_chats, proxyPort, CLIENTS)
        for i, (clientPort, answer) in enumerate(seen):
            self.assertEqual(answer, f"chat: hi {i} from tcp4:127.0.0.1:{clientPort}")
        # Each upgraded connection's end is logged with its peer, by its worker.
        closed = r"\[worker \d\|[^\]]*\] websocket connection from 127\.0\.0\.1:(\d+) closed"

        def closedPorts(daemon: Any) -> list[int]:
            return [int(p) for p in re.findall(closed, daemon.output.decode())]

        yield wait(lambda: len(closedPorts(first)) + len(closedPorts(second)) >= CLIENTS, 30)
        logged = []
        for daemon in (first, second):
            self.assertEqual(len(closedPorts(daemon)), CLIENTS // 2, "round robin: half to each daemon")
            logged += closedPorts(daemon)
        self.assertEqual(sorted(logged), sorted(port for port, _answer in seen))
