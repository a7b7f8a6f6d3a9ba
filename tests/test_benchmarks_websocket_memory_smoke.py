"""
Smoke test of benchmarks/bench_websocket_memory.py: it runs, checks its own
output, and reports a ratio, whatever the speed.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.support.benchmarks import checkInMemory, importBenchmark


class BenchWebSocketMemorySmokeTests(SynchronousTestCase):
    """C{bench_websocket_memory.py --quick}."""

    def test_quickRunPrintsRatio(self) -> None:
        """It exits 0 and prints CPU per handshake for both kinds and a finite ratio."""
        title = "=== WebSocket handshake in memory"
        ratioLabel = "ratio txupgrade/autobahn (CPU per handshake):"
        checkInMemory(self, "bench_websocket_memory.py", title, ratioLabel, ("txupgrade", "autobahn"))

    def test_brokenSwitchIsCaught(self) -> None:
        """The script's own check refuses output that is not a 101 followed by the server's Close."""
        bench = importBenchmark(self, "bench_websocket_memory")

        self.assertRaises(SystemExit, bench._checkOutput, "x", b"HTTP/1.1 400 Bad Request\r\n\r\n")
        good = bench.txupgradeConnection()()
        bench._checkOutput("txupgrade", good)
        self.assertRaises(SystemExit, bench._checkOutput, "x", good + b"more")
