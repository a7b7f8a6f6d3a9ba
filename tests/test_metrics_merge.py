"""
L{txupgrade.daemon.metrics.mergeWorkerMetrics}: the supervisor's page from its
workers' pages, each sample labelled with its worker.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from txupgrade.daemon.metrics import mergeWorkerMetrics


def _page(upgrades: int, latency: float) -> bytes:
    """A worker's page: a counter and a histogram."""
    registry = CollectorRegistry()
    counter = Counter("txupgrade_upgrades", "Upgrades", ["protocol"], registry=registry)
    counter.labels("echo").inc(upgrades)
    histogram = Histogram("txupgrade_handshake_seconds", "Latency", buckets=(0.01, 1.0), registry=registry)
    histogram.observe(latency)
    return bytes(generate_latest(registry))


class MergeTests(SynchronousTestCase):
    """Pages of two workers, merged."""

    def test_labelledOnce(self) -> None:
        """Every sample gets its worker's label, each family is declared once, the extra ones follow."""
        running = GaugeMetricFamily("txupgrade_workers_running", "Running")
        running.add_metric([], 2)
        text = mergeWorkerMetrics({2: _page(3, 0.5), 1: _page(4, 0.001)}, [running]).decode()
        self.assertEqual(text.count("# TYPE txupgrade_upgrades_total counter"), 1, text)
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        self.assertEqual(samples[("txupgrade_upgrades_total", (("protocol", "echo"), ("worker", "1")))], 4)
        self.assertEqual(samples[("txupgrade_upgrades_total", (("protocol", "echo"), ("worker", "2")))], 3)
        self.assertEqual(
            samples[("txupgrade_handshake_seconds_bucket", (("le", "0.01"), ("worker", "1")))], 1
        )
        self.assertEqual(
            samples[("txupgrade_handshake_seconds_bucket", (("le", "0.01"), ("worker", "2")))], 0
        )
        self.assertEqual(samples[("txupgrade_workers_running", ())], 2)

    def test_noWorkers(self) -> None:
        """No page at all: only the extra families."""
        self.assertEqual(mergeWorkerMetrics({}).decode(), "")
