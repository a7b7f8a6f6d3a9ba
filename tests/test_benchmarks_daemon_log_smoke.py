"""
Smoke test of benchmarks/bench_daemon_log.py: both daemons serve real
handshakes, and C{--no-access-log} really logs no access line.
"""

from __future__ import annotations

import math

from twisted.trial.unittest import SynchronousTestCase

from tests.support.benchmarks import runQuick


class BenchDaemonLogSmokeTests(SynchronousTestCase):
    """C{bench_daemon_log.py --quick --kinds echo}."""

    def test_quickRun(self) -> None:
        """It exits 0; both configurations served; only the default one wrote access lines."""
        stdout, results = runQuick(self, "bench_daemon_log.py", "--kinds", "echo", timeout=300)
        for config in ("log on", "log off"):
            figures = results["results"][config]["echo"]
            self.assertGreater(figures["handshakes"], 0, config)
            self.assertEqual(figures["errors"], 0, config)
        self.assertGreater(results["results"]["log on"]["accessLines"], 0)
        self.assertEqual(results["results"]["log off"]["accessLines"], 0)
        self.assertIn("ratio echo: log off/on", stdout)
        self.assertTrue(math.isfinite(results["summary"]["inMemoryMicrosPerLine"]))
