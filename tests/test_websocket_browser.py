"""
End-to-end test of the demo page's WebSocket echo in headless Chromium.

The demo tree (L{txupgrade.daemon.demo.demoRoot}) is served by a real
L{UpgradeSite} on 127.0.0.1; C{tests/node/browser_check.js} drives Debian's
Chromium with npm C{playwright-core}, loads C{/}, and waits for the page's
JavaScript to set C{document.title} to C{"echo ok: ..."} after its
WebSocket to C{/ws} echoed. (Plain C{--dump-dom} with
C{--virtual-time-budget} is flaky for WebSocket pages: virtual time runs
ahead of the socket.)

Without C{/usr/bin/chromium} the test is skipped, except in CI (C{CI} set),
where it must run; with Chromium present, a missing C{node} or
C{playwright-core} (C{npm ci} in C{tests/node}) fails it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.net import TrackingSite, listen
from tests.support.processes import NODE_DIR, nodeOrSkip, runProcess
from txupgrade.daemon.demo import demoRoot
from txupgrade.registry import ProtocolRegistry

CHROMIUM = "/usr/bin/chromium"


class ChromiumDemoPageTests(TestCase):
    """Headless Chromium runs the demo page's WebSocket echo."""

    timeout = 120

    @inlineCallbacks
    def test_demoPageEcho(self) -> Any:
        """The demo page's WebSocket to C{/ws} echoes: its title becomes C{echo ok: ...}."""
        if not os.path.exists(CHROMIUM):
            if os.environ.get("CI"):
                self.fail(f"{CHROMIUM} is missing; .ci/install installs the Debian package chromium")
            raise SkipTest(f"{CHROMIUM} is missing (apt-get install chromium)")
        node = nodeOrSkip("playwright-core", required=True)
        site = TrackingSite(demoRoot(ProtocolRegistry()))
        port = listen(self, site)
        profile = tempfile.mkdtemp(prefix="txupgrade-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        url = f"http://127.0.0.1:{port}/"
        out, err, exitCode = yield runProcess(
            node, ["browser_check.js", url, CHROMIUM, os.path.abspath(profile)], str(NODE_DIR), 90
        )
        lines = out.decode("utf-8").splitlines()
        self.assertTrue(lines, f"no report from browser_check.js; stderr: {err!r}")
        report = json.loads(lines[-1])
        self.assertEqual(report["errors"], [], err)
        self.assertTrue(report["title"].startswith("echo ok: hello from "), report)
        self.assertEqual(report["output"], report["title"])
        [socket] = report["sockets"]
        self.assertEqual(socket["url"], f"ws://127.0.0.1:{port}/ws")
        self.assertEqual(len(socket["sent"]), 1)
        self.assertEqual(socket["received"], socket["sent"])
        self.assertEqual(exitCode, 0, err)
