"""
Smoke test of benchmarks/bench_core.py: it runs and reports, whatever the speed.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "bench_core.py")

#: The start of every summary row the benchmark must print.
EXPECTED_ROWS = [
    "upgrades vs GETs on new conns, wall",
    "upgrades vs GETs on new conns, per server CPU-s",
    "(one more round trip) upgrade+echo vs GET",
    "echo 64 B ping-pong",
    "echo 64 B pipelined",
    "echo 64 KiB",
    "RSS per idle conn",
]


def test_quickRunPrintsSummary() -> None:
    """C{bench_core.py --quick} exits 0 and prints a summary with a numeric ratio on every row."""
    done = subprocess.run(
        [sys.executable, SCRIPT, "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "== SUMMARY ==" in out, out
    table = out.split("== SUMMARY ==", 1)[1]
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
    for prefix in EXPECTED_ROWS:
        assert any(f.startswith(prefix) for f in figures), (prefix, figures)
