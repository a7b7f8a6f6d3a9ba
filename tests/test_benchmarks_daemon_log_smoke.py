"""
Smoke test of benchmarks/bench_daemon_log.py: both daemons serve real
handshakes, and C{--no-access-log} really logs no access line.
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
SCRIPT = os.path.join(REPO, "benchmarks", "bench_daemon_log.py")


class BenchDaemonLogSmokeTests(SynchronousTestCase):
    """C{bench_daemon_log.py --quick --kinds echo}."""

    def test_quickRun(self) -> None:
        """It exits 0; both configurations served; only the default one wrote access lines."""
        with tempfile.TemporaryDirectory() as tmp:
            resultsPath = os.path.join(tmp, "results.json")
            done = subprocess.run(
                [sys.executable, SCRIPT, "--quick", "--kinds", "echo", "--json", resultsPath],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=300,
            )
            self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr[-3000:])
            with open(resultsPath) as f:
                results = json.load(f)
        for config in ("log on", "log off"):
            figures = results["results"][config]["echo"]
            self.assertGreater(figures["handshakes"], 0, config)
            self.assertEqual(figures["errors"], 0, config)
        self.assertGreater(results["results"]["log on"]["accessLines"], 0)
        self.assertEqual(results["results"]["log off"]["accessLines"], 0)
        self.assertIn("ratio echo: log off/on", done.stdout)
        self.assertTrue(math.isfinite(results["summary"]["inMemoryMicrosPerLine"]))
