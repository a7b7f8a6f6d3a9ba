"""
The benchmark scripts under benchmarks/, run by their smoke tests: a quick
run in a subprocess, and the scripts importable as modules.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
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


def checkSummary(out: str, expected: Sequence[str], end: str | None = None) -> None:
    """
    The C{== SUMMARY ==} table a benchmark printed in C{out} (up to C{end}):
    seven cells and a finite, positive ratio on every row, and a row for
    each figure starting with one of C{expected}.
    """
    assert "== SUMMARY ==" in out, out
    table = out.split("== SUMMARY ==", 1)[1]
    if end is not None:
        assert end in table, table
        table = table.split(end, 1)[0]
    rows = [
        line.strip().strip("|").split("|")
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith("| figure ")
    ]
    assert rows, table
    for cells in rows:
        assert len(cells) == 7, cells
        ratio = float(cells[3])
        assert math.isfinite(ratio) and ratio > 0, cells
    figures = [cells[0].strip() for cells in rows]
    for prefix in expected:
        assert any(f.startswith(prefix) for f in figures), (prefix, figures)


def checkQuickSummary(script: str, expected: Sequence[str], timeout: float, end: str | None = None) -> str:
    """Run C{benchmarks/<script> --quick}: it exits 0 and prints a summary (L{checkSummary}); its output."""
    done = runScript(os.path.join(BENCHMARKS, script), "--quick", timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    checkSummary(done.stdout, expected, end)
    return done.stdout


def checkInMemory(
    test: SynchronousTestCase, script: str, title: str, ratioLabel: str, kinds: Sequence[str]
) -> None:
    """
    A quick run of an in-memory benchmark (C{_harness.inMemoryMain}): it
    prints C{title}, a line per kind with its CPU per operation, and
    C{ratioLabel} with a finite, positive ratio.
    """
    out, results = runQuick(test, script, "--iterations", "5")
    test.assertIn(title, out)
    test.assertIn(ratioLabel, out)
    for kind in kinds:
        test.assertTrue(any(line.startswith(kind) for line in out.splitlines()), kind)
        test.assertGreater(results["median"][kind], 0)
    test.assertTrue(math.isfinite(results["ratio"]) and results["ratio"] > 0, results["ratio"])
    test.assertEqual(len(results["other"]), results["rounds"])


def importBenchmark(test: SynchronousTestCase, name: str) -> Any:
    """The module of C{benchmarks/<name>.py}, imported for the duration of C{test}."""
    sys.path.insert(0, BENCHMARKS)
    test.addCleanup(sys.path.remove, BENCHMARKS)
    return __import__(name)
