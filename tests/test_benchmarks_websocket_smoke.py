"""
Smoke test of benchmarks/bench_websocket.py: it runs and reports, whatever the speed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "bench_websocket.py")

#: The label of every ratio row, and its key in the JSON results.
METRICS = {
    "handshakes/s": "handshake",
    "echo 32 B msg/s": "echo32",
    "echo 64 KiB msg/s": "echo64k",
    "idle RSS/conn": "idle",
}

_MISSING = [name for name in ("autobahn", "psutil") if importlib.util.find_spec(name) is None]


class BenchWebSocketSmokeTests(SynchronousTestCase):
    """C{bench_websocket.py --quick} against every server it can start."""

    if _MISSING:
        skip = f"needs {', '.join(_MISSING)} (pip install -e '.[websocket,test]')"

    def test_quickRunPrintsRatios(self) -> None:
        """
        It exits 0 and prints a numeric txupgrade/autobahn ratio for every
        metric, and the daemon's against autobahn and websockets.
        """
        with tempfile.TemporaryDirectory() as tmp:
            resultsPath = os.path.join(tmp, "results.json")
            done = subprocess.run(
                [sys.executable, SCRIPT, "--quick", "--json", resultsPath],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=180,
            )
            self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr[-3000:])
            with open(resultsPath) as f:
                results = json.load(f)
        out = done.stdout
        self.assertIn("=== WebSocket echo benchmark", out)
        table = out.split("ratios per server CPU-second", 1)[1]
        for label, key in METRICS.items():
            row = next((line for line in table.splitlines() if line.startswith(label)), None)
            self.assertIsNotNone(row, f"no ratio row for {label!r} in:\n{table}")
            assert row is not None
            first = re.search(r"\d+\.\d+x", row[len(label) :])
            self.assertIsNotNone(first, f"no numeric (a)/(b) ratio in {row!r}")
            # txupgrade in code and the daemon as shipped against autobahn, the daemon against websockets.
            for pair in ("a/b", "e/b", "e/f"):
                ratio = results["config"]["ratios"][key][pair]
                self.assertTrue(
                    isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0, (key, pair, ratio)
                )
        self.assertIn("server output after READY: none", out)
