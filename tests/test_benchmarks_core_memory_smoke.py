"""
Smoke test of benchmarks/bench_core_memory.py: it runs, checks its own
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
BENCHMARKS = os.path.join(REPO, "benchmarks")
SCRIPT = os.path.join(BENCHMARKS, "bench_core_memory.py")


class BenchCoreMemorySmokeTests(SynchronousTestCase):
    """C{bench_core_memory.py --quick}."""

    def test_quickRunPrintsRatio(self) -> None:
        """It exits 0 and prints CPU per connection for both kinds and a finite ratio."""
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
        self.assertIn("=== echo switch vs GET in memory", done.stdout)
        self.assertIn("ratio switch/get (CPU per connection):", done.stdout)
        for kind in ("switch", "get"):
            self.assertTrue(any(line.startswith(kind) for line in done.stdout.splitlines()), kind)
            self.assertGreater(results["median"][kind], 0)
        self.assertTrue(math.isfinite(results["ratio"]) and results["ratio"] > 0, results["ratio"])
        self.assertEqual(len(results["other"]), results["rounds"])

    def test_brokenAnswersAreCaught(self) -> None:
        """The script's own check refuses a switch or a GET that did not answer as expected."""
        sys.path.insert(0, BENCHMARKS)
        self.addCleanup(sys.path.remove, BENCHMARKS)
        import bench_core_memory as bench

        switched = bench.connection(bench.SWITCH)()
        bench.check("switch", switched)
        self.assertRaises(SystemExit, bench.check, "switch", switched + b"more")
        self.assertRaises(SystemExit, bench.check, "switch", b"HTTP/1.1 400 Bad Request\r\n\r\n")
        bench.check("get", bench.connection(bench.GET)())
        self.assertRaises(SystemExit, bench.check, "get", b"HTTP/1.1 404 Not Found\r\n\r\n")
