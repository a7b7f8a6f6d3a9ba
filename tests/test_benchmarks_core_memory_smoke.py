"""
Smoke test of benchmarks/bench_core_memory.py: it runs, checks its own
output, and reports a ratio, whatever the speed.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.support.benchmarks import checkInMemory, importBenchmark


class BenchCoreMemorySmokeTests(SynchronousTestCase):
    """C{bench_core_memory.py --quick}."""

    def test_quickRunPrintsRatio(self) -> None:
        """It exits 0 and prints CPU per connection for both kinds and a finite ratio."""
        title, ratioLabel = "=== echo switch vs GET in memory", "ratio switch/get (CPU per connection):"
        checkInMemory(self, "bench_core_memory.py", title, ratioLabel, ["switch", "get"])

    def test_brokenAnswersAreCaught(self) -> None:
        """The script's own check refuses a switch or a GET that did not answer as expected."""
        bench = importBenchmark(self, "bench_core_memory")
        switched = bench.connection(bench.SWITCH)()
        bench.check("switch", switched)
        self.assertRaises(SystemExit, bench.check, "switch", switched + b"more")
        self.assertRaises(SystemExit, bench.check, "switch", b"HTTP/1.1 400 Bad Request\r\n\r\n")
        bench.check("get", bench.connection(bench.GET)())
        self.assertRaises(SystemExit, bench.check, "get", b"HTTP/1.1 404 Not Found\r\n\r\n")
