"""
Smoke test of benchmarks/bench_daemon.py: it starts the three daemons
(single, one worker, two workers), drives real handshakes through each, and
reports the ratios, whatever the speed (the machine is shared).
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
SCRIPT = os.path.join(REPO, "benchmarks", "bench_daemon.py")


class BenchDaemonSmokeTests(SynchronousTestCase):
    """C{bench_daemon.py --quick}."""

    def test_quickRunPrintsRatios(self) -> None:
        """It exits 0, every configuration served handshakes, and the ratios are finite."""
        with tempfile.TemporaryDirectory() as tmp:
            resultsPath = os.path.join(tmp, "results.json")
            done = subprocess.run(
                [sys.executable, SCRIPT, "--quick", "--json", resultsPath],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=300,
            )
            self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr[-3000:])
            with open(resultsPath) as f:
                results = json.load(f)
        self.assertIn("=== twistd txupgrade --workers", done.stdout)
        for config in ("single", "workers=1", "workers=2"):
            for kind in ("echo", "ws"):
                figures = results["results"][config][kind]
                self.assertGreater(figures["handshakes"], 0, (config, kind))
                self.assertEqual(figures["errors"], 0, (config, kind))
        # A supervisor and its workers were all measured.
        self.assertEqual(len(results["results"]["workers=2"]["echo"]["processCpu"]), 3)
        for kind in ("echo", "ws"):
            self.assertIn(f"ratio {kind}: workers=2/workers=1", done.stdout)
            ratio = results["summary"][kind]["workers2/workers1"]
            self.assertTrue(math.isfinite(ratio) and ratio > 0, ratio)

    def test_brokenHandshakeIsCaught(self) -> None:
        """The script refuses an answer that is not the 101 it asked for."""
        sys.path.insert(0, os.path.join(REPO, "benchmarks"))
        self.addCleanup(sys.path.remove, os.path.join(REPO, "benchmarks"))
        import bench_daemon as bench

        self.assertRaises(SystemExit, bench.checkHead, "echo", b"HTTP/1.1 400 Bad Request\r\n\r\n")
        self.assertRaises(SystemExit, bench.checkHead, "ws", b"HTTP/1.1 101 Switching\r\n\r\n")
        bench.checkHead("echo", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n\r\n")
