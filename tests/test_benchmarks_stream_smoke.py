"""
Smoke test of benchmarks/bench_stream.py: a quick run prints a ratio for
each of its three parts, and the in-memory table, whatever the speed.
"""

from __future__ import annotations

from tests.support.benchmarks import checkQuickSummary


def test_quickRunPrintsSummary() -> None:
    """C{bench_stream.py --quick} exits 0 and prints a numeric ratio on every row, and the in-memory table."""
    parts = ("amp calls/s", "raw MB/s", "tls conns/s")
    out = checkQuickSummary(
        "bench_stream.py", [f"{part}, per server CPU-s" for part in parts], timeout=180, end="== IN MEMORY"
    )
    memory = out.split("== IN MEMORY", 1)[1]
    assert "stream handoff" in memory and "TLS upgrade" in memory, memory
