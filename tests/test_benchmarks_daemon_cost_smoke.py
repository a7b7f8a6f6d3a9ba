"""
Smoke test of benchmarks/bench_daemon_cost.py: it starts every peer and
daemon configuration, drives each request kind through them, and reports
rates, feature costs and ratios, whatever the speed (the machine is shared).
"""

from __future__ import annotations

import math
import shutil

from twisted.trial.unittest import SynchronousTestCase

from tests.support.benchmarks import runQuick
from tests.support.processes import missingOrSkip


class BenchDaemonCostSmokeTests(SynchronousTestCase):
    """C{bench_daemon_cost.py --quick}."""

    def test_quickRunPrintsRatios(self) -> None:
        """It exits 0, every server did work of each kind it serves, and the ratios are finite."""
        missing = [name for name in ("h2load", "gcc") if shutil.which(name) is None]
        if missing:
            missingOrSkip([f"{name} is missing (bash .ci/install installs it)" for name in missing])
        stdout, results = runQuick(self, "bench_daemon_cost.py", timeout=600)
        self.assertIn("=== twistd txupgrade, feature by feature", stdout)
        self.assertIn("feature costs, server CPU microseconds per request", stdout)
        peers = ("plain Site", "in-code", "autobahn", "raw TCP echo", "raw echo, backpressure", "bare switch")
        for name in (*peers, "daemon as shipped"):
            self.assertIn(name, results["rates"])
        for name, byKind in results["samples"].items():
            for kind, samples in byKind.items():
                self.assertTrue(all(s["work"] > 0 for s in samples), (name, kind, samples))
        for label in (
            "daemon echo / plain Site GET",
            "bare switch echo / plain Site GET",
            "daemon ws / autobahn ws",
            "daemon stream / raw TCP echo",
            "daemon stream / raw echo, backpressure",
        ):
            self.assertTrue(math.isfinite(results["ratios"][label]) and results["ratios"][label] > 0, label)
        for stack in ("in-code", "daemon"):
            self.assertEqual(sorted(results["memory"][stack]), ["echo", "get", "ws"])
        self.assertIn("in memory, CPU us per echo through the daemon's stack", stdout)
        for stack in ("tracked", "untracked"):
            cpu = results["memoryCpu"][stack]
            self.assertEqual(sorted(cpu), ["echo", "get", "ws"])
            self.assertTrue(all(value > 0 for value in cpu.values()), (stack, cpu))
        self.assertEqual(sorted(results["memoryStream"]), ["daemon", "in-code", "raw echo"])
        self.assertTrue(all(value > 0 for value in results["memoryStream"].values()), results["memoryStream"])
        echo = results["memoryEcho"]
        self.assertEqual(sorted(echo), ["bare switch echo", "daemon echo", "in-code echo", "plain Site GET"])
        self.assertTrue(all(value > 0 for value in echo.values()), echo)
