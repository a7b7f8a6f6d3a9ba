"""
Smoke test of benchmarks/bench_h2_websocket.py: it runs against its servers and reports, whatever the speed.
"""

from __future__ import annotations

import math
import shutil

from twisted.trial.unittest import SynchronousTestCase

from tests.support.benchmarks import checkSummary, runQuick

#: The start of every summary row the benchmark must print.
EXPECTED_ROWS = [
    "handshakes (open + close) per server CPU-s, twistd: h2 (1 conn) vs h1",
    "handshakes (open + close) per server CPU-s, in-code: h2 (1 conn) vs h1",
    "handshakes (open + close) per server CPU-s, hypercorn: h2 (1 conn) vs h1",
    "handshakes (open + close) per server CPU-s over h2, twistd vs hypercorn",
    "handshakes (open + close) per server CPU-s over h2, in-code vs hypercorn",
    "echoes of 32 B per server CPU-s, twistd: h2 (1 conn) vs h1",
    "echoes of 32 B per server CPU-s, in-code: h2 (1 conn) vs h1",
    "echoes of 32 B per server CPU-s, hypercorn: h2 (1 conn) vs h1",
    "echoes of 32 B per server CPU-s over h2, twistd vs hypercorn",
    "echoes of 32 B per server CPU-s over h2, in-code vs hypercorn",
    "RSS per idle WebSocket at 200, twistd: h2",
    "RSS per idle WebSocket at 200, in-code: h2",
    "in memory, CPU per WebSocket (handshake + close), in-code: h2",
]


class BenchH2WebSocketSmokeTests(SynchronousTestCase):
    """C{bench_h2_websocket.py --quick} against its three servers."""

    if shutil.which("node") is None:
        skip = "needs node on PATH (the load generator is benchmarks/h2ws_load.js)"

    def test_quickRunPrintsSummary(self) -> None:
        """It exits 0, prints every row with a finite ratio; no txupgrade server printed or logged trouble."""
        out, results = runQuick(self, "bench_h2_websocket.py", timeout=240)
        checkSummary(out, EXPECTED_ROWS, end="Load check")
        self.assertEqual(len(results["rows"]), len(EXPECTED_ROWS))
        for row in results["rows"]:
            self.assertTrue(math.isfinite(row["ratio"]) and row["ratio"] > 0, row)
        for mode in ("handshake", "echo"):
            for transport in ("h2", "h1"):
                for server, rounds in results["load"][f"{mode} {transport}"].items():
                    self.assertTrue(all(r["count"] > 0 for r in rounds), (mode, transport, server, rounds))
        for name in ("twistd", "in-code", "twistd h2", "twistd h1", "in-code h2", "in-code h1"):
            self.assertIn(f"\n{name} printed after start-up: 'nothing'", out)
