"""
Smoke test of benchmarks/bench_stream.py: it runs and reports, whatever the speed.
"""

from __future__ import annotations

import math
import os

from tests.support.benchmarks import BENCHMARKS, runScript

SCRIPT = os.path.join(BENCHMARKS, "bench_stream.py")

#: The start of every summary row the benchmark must print.
EXPECTED_ROWS = [
    "amp calls/s, per server CPU-s",
    "raw MB/s, per server CPU-s",
    "tls conns/s, per server CPU-s",
]


def test_quickRunPrintsSummary() -> None:
    """C{bench_stream.py --quick} exits 0 and prints a numeric ratio on every row, and the in-memory table."""
    done = runScript(SCRIPT, "--quick", timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "== SUMMARY ==" in out and "== IN MEMORY" in out, out
    table = out.split("== SUMMARY ==", 1)[1].split("== IN MEMORY", 1)[0]
    rows = [
        line.strip().strip("|").split("|")
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith("| figure ")
    ]
    for cells in rows:
        assert len(cells) == 7, cells
        ratio = float(cells[3])
        assert math.isfinite(ratio) and ratio > 0, cells
    figures = [cells[0].strip() for cells in rows]
    for prefix in EXPECTED_ROWS:
        assert any(f.startswith(prefix) for f in figures), (prefix, figures)
    memory = out.split("== IN MEMORY", 1)[1]
    assert "stream handoff" in memory and "TLS upgrade" in memory, memory
