"""
Smoke test of benchmarks/bench_websocket_memory.py: it runs, checks its own
output, and reports a ratio, whatever the speed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "bench_websocket_memory.py")


class BenchWebSocketMemorySmokeTests(SynchronousTestCase):
    """C{bench_websocket_memory.py --quick}."""

    def test_quickRunPrintsRatio(self) -> None:
        """It exits 0 and prints CPU per handshake for both kinds and a finite ratio."""
        with tempfile.TemporaryDirectory() as tmp:
            resultsPath = os.path.join(tmp, "results.json")
            done = subprocess.run(
                [sys.executable, SCRIPT, "--quick", "--iterations", "5", "--json", resultsPath],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=120,
            )
            self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr[-3000:])
            with open(resultsPath) as f:
                results = json.load(f)
        self.assertIn("=== WebSocket handshake in memory", done.stdout)
        self.assertIn("ratio txupgrade/autobahn (CPU per handshake):", done.stdout)
        for kind in ("txupgrade", "autobahn"):
            self.assertTrue(any(line.startswith(kind) for line in done.stdout.splitlines()), kind)
            self.assertGreater(results["median"][kind], 0)
        self.assertTrue(math.isfinite(results["ratio"]) and results["ratio"] > 0, results["ratio"])

    def test_brokenSwitchIsCaught(self) -> None:
        """The script's own check refuses output that is not a 101 followed by the server's Close."""
        sys.path.insert(0, os.path.join(REPO, "benchmarks"))
        self.addCleanup(sys.path.remove, os.path.join(REPO, "benchmarks"))
        import bench_websocket_memory as bench

        self.assertRaises(SystemExit, bench._checkOutput, "x", b"HTTP/1.1 400 Bad Request\r\n\r\n")
        good = bench.txupgradeConnection()()
        bench._checkOutput("txupgrade", good)
        self.assertRaises(SystemExit, bench._checkOutput, "x", good + b"more")
