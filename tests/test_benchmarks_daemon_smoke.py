"""
Smoke test of benchmarks/bench_daemon.py: it starts the three daemons
(single, one worker, two workers), drives real handshakes through each, and
reports the ratios, whatever the speed (the machine is shared).
"""

from __future__ import annotations

import math

from twisted.trial.unittest import SynchronousTestCase

from tests.support.benchmarks import importBenchmark, runQuick


class BenchDaemonSmokeTests(SynchronousTestCase):
    """C{bench_daemon.py --quick}."""

    def test_quickRunPrintsRatios(self) -> None:
        """It exits 0, every configuration served handshakes, and the ratios are finite."""
        stdout, results = runQuick(self, "bench_daemon.py", timeout=300)
        self.assertIn("=== twistd txupgrade --workers", stdout)
        for config in ("single", "workers=1", "workers=2"):
            for kind in ("echo", "ws"):
                figures = results["results"][config][kind]
                self.assertGreater(figures["handshakes"], 0, (config, kind))
                self.assertEqual(figures["errors"], 0, (config, kind))
        # A supervisor and its workers were all measured.
        self.assertEqual(len(results["results"]["workers=2"]["echo"]["processCpu"]), 3)
        for kind in ("echo", "ws"):
            self.assertIn(f"ratio {kind}: workers=2/workers=1", stdout)
            ratio = results["summary"][kind]["workers2/workers1"]
            self.assertTrue(math.isfinite(ratio) and ratio > 0, ratio)

    def test_brokenHandshakeIsCaught(self) -> None:
        """The script refuses an answer that is not the 101 it asked for."""
        bench = importBenchmark(self, "bench_daemon")

        self.assertRaises(SystemExit, bench.checkHead, "echo", b"HTTP/1.1 400 Bad Request\r\n\r\n")
        self.assertRaises(SystemExit, bench.checkHead, "ws", b"HTTP/1.1 101 Switching\r\n\r\n")
        bench.checkHead("echo", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n\r\n")
