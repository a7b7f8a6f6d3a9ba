"""
The work per request, counted rather than timed: Python function calls (a
C{sys.setprofile} hook) to serve one connection, open to close, through the
stack C{twistd txupgrade} builds with its defaults (tracking, limits, head
timeout, access and connection lines) and through the in-code
C{UpgradeSite}, against a recorded budget. Deterministic on any machine: a
change that makes a GET, an C{echo} switch or a WebSocket handshake do much
more work fails here, while C{benchmarks/bench_daemon_cost.py} stays the
place for rates.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase

from tests.support.benchmarks import importBenchmark

#: Calls recorded per request (CPython 3.11, Twisted 26.10, autobahn 26.11),
#: in-code site and daemon stack. A budget is the recorded figure plus a
#: quarter: room for a release's drift, not for doubled work.
RECORDED = {
    "in-code": {"get": 182, "echo": 188, "ws": 264},
    "daemon": {"get": 171, "echo": 186, "ws": 262},
}
HEADROOM = 1.25

#: The daemon's defaults may add at most this share of the in-code work.
DAEMON_OVERHEAD = 1.2

#: What each request must be answered with: the count is of real work.
ANSWERS = {"get": b"HTTP/1.1 200 ", "echo": b"HTTP/1.1 101 ", "ws": b"HTTP/1.1 101 "}


class CallBudgetTests(SynchronousTestCase):
    """Calls per GET, per C{echo} switch and per WebSocket handshake, within budget."""

    def setUp(self) -> None:
        self.bench = importBenchmark(self, "bench_daemon_cost")
        self.requests = {
            "get": self.bench.GET_BYTES,
            "echo": self.bench.ECHO_BYTES,
            "ws": self.bench.WS_BYTES,
        }

    def measure(self, stack: str) -> dict[str, int]:
        """Calls per request kind through C{stack} (C{in-code} or C{daemon}), each answered as it must be."""
        factory, stop = self.bench.stackFactory(stack == "daemon", reactor)
        self.addCleanup(stop)
        counts = {}
        for kind, data in self.requests.items():
            calls, answer = self.bench.callsPerRequest(factory, data)
            self.assertTrue(answer.startswith(ANSWERS[kind]), (stack, kind, answer[:200]))
            if kind == "ws":
                self.assertIn(b"\r\nSec-WebSocket-Accept: ", answer)
            counts[kind] = calls
        return counts

    def assertWithinBudget(self, stack: str, counts: dict[str, Any]) -> None:
        for kind, calls in counts.items():
            budget = int(RECORDED[stack][kind] * HEADROOM)
            self.assertLessEqual(
                calls,
                budget,
                f"{stack} {kind}: {calls} calls, budget {budget} (recorded {RECORDED[stack][kind]})",
            )

    def test_inCode(self) -> None:
        """The in-code C{UpgradeSite}: each request within its budget."""
        self.assertWithinBudget("in-code", self.measure("in-code"))

    def test_daemon(self) -> None:
        """
        The daemon's stack as the tap builds it: each request within its
        budget, and within L{DAEMON_OVERHEAD} of the in-code site's work.
        """
        inCode = self.measure("in-code")
        daemon = self.measure("daemon")
        self.assertWithinBudget("daemon", daemon)
        for kind, calls in daemon.items():
            self.assertLessEqual(
                calls, inCode[kind] * DAEMON_OVERHEAD, f"{kind}: daemon {daemon}, in-code {inCode}"
            )
