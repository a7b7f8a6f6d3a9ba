"""
The benchmark scripts under benchmarks/, run by their smoke tests: a quick
run in a subprocess, and the scripts importable as modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(REPO, "benchmarks")


def runScript(
    path: str, *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run C{python PATH ARGS} in the checkout; its exit status and (text) output."""
    return subprocess.run(
        [sys.executable, path, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
    )


def runQuick(test: SynchronousTestCase, script: str, *args: str, timeout: float = 120) -> tuple[str, Any]:
    """
    Run C{benchmarks/<script> --quick --json FILE *args}; fail C{test} unless
    it exits 0; return its output and the JSON it wrote.
    """
    with tempfile.TemporaryDirectory() as tmp:
        resultsPath = os.path.join(tmp, "results.json")
        done = runScript(
            os.path.join(BENCHMARKS, script), "--quick", "--json", resultsPath, *args, timeout=timeout
        )
        test.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr[-3000:])
        with open(resultsPath) as f:
            return done.stdout, json.load(f)


def importBenchmark(test: SynchronousTestCase, name: str) -> Any:
    """The module of C{benchmarks/<name>.py}, imported for the duration of C{test}."""
    sys.path.insert(0, BENCHMARKS)
    test.addCleanup(sys.path.remove, BENCHMARKS)
    return __import__(name)
