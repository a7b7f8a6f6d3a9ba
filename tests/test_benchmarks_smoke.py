"""
Smoke test of benchmarks/bench_core.py: it runs and reports, whatever the speed.
"""

from __future__ import annotations

from tests.support.benchmarks import checkQuickSummary

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
    checkQuickSummary("bench_core.py", EXPECTED_ROWS, timeout=120)
