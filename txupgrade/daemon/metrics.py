"""
Prometheus metrics of the daemon (the C{metrics} extra: C{prometheus_client}),
served on their own listener (C{--metrics ENDPOINT}) so that they are not
exposed on the public port.

  - C{txupgrade_upgrades_total{protocol,outcome}}: every upgrade decision, from
    the channel's C{txupgrade.upgrade} log events (outcome C{accepted},
    C{declined}, C{refused}, C{malformed}) and, for C{failed}, from the
    site's L{txupgrade.reporting.PluginFailures} (whose log lines are rate-limited).
  - C{txupgrade_upgrades_by_transport_total{protocol,http,tls}}: every
    switch, by how it came: C{http="1.1"} an C{Upgrade} (C{101}),
    C{http="2"} an extended CONNECT stream (RFC 8441); C{tls="yes"} or
    C{"no"}. (C{txupgrade_upgrades_total} stays as it was.)
  - C{txupgrade_plugin_failures_total{protocol,stage}}: every exception of a
    plugin or of the protocol it built, by where it happened.
  - C{txupgrade_connections_active{protocol}}: open connections, C{http}
    until they switch.
  - C{txupgrade_received_bytes_total{protocol}} and
    C{txupgrade_sent_bytes_total{protocol}}: bytes on the wire, the C{http}
    part of a connection (up to and including the C{101}) counted apart from
    its upgraded part.
  - C{txupgrade_handshake_seconds{protocol}}: from the first byte of the
    request to the C{101}.
  - C{txupgrade_limit_hits_total{limit}}: see L{txupgrade.daemon.limits}.
  - C{txupgrade_http2_refusals_total{kind}}: what HTTP/2 connections
    refused (L{txupgrade.channel.UpgradeSite.http2Refusals}): each bad input
    is logged once per connection and counted every time.
  - C{txupgrade_drained_connections_total{outcome}}: at shutdown, how many
    connections closed in time (C{drained}), were aborted at the deadline
    (C{aborted}) or whose protocol failed to drain (C{failed}).

Each L{DaemonMetrics} has its own registry: nothing is global, so two sites
(or tests) never mix their figures.

With C{--workers}, each worker keeps its own L{DaemonMetrics}, and the
supervisor serves the page (L{SupervisorMetrics}): at each scrape it asks
every worker for its figures over the worker's control socket and serves
them all, each sample labelled C{worker="N"} (sum them by the other labels
for the whole daemon), with C{txupgrade_workers_running} and
C{txupgrade_worker_restarts_total}.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.twisted import MetricsResource
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from txupgrade.daemon.tracking import ConnectionTracker, TrackedConnection
from txupgrade.resource import DirectoryResource, PlainResource

__all__ = ["DaemonMetrics", "SupervisorMetrics", "mergeWorkerMetrics"]

_log = Logger(namespace="txupgrade.metrics")

#: Handshake latency buckets, in seconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _TrackerCollector:
    """Reads the tracker at scrape time: open connections, bytes, limit hits, TLS and log failures."""

    def __init__(self, tracker: ConnectionTracker, metrics: DaemonMetrics) -> None:
        self.tracker = tracker
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        tracker = self.tracker
        active: dict[str, int] = {"http": 0}
        received = dict(tracker.bytesIn)
        sent = dict(tracker.bytesOut)
        for connection in list(tracker.connections):
            name = connection.protocol
            active[name] = active.get(name, 0) + 1
            received[name] = received.get(name, 0) + connection.bytesIn
            sent[name] = sent.get(name, 0) + connection.bytesOut
        gauge = GaugeMetricFamily(
            "txupgrade_connections_active", "Open connections, by protocol", labels=["protocol"]
        )
        for name, count in sorted(active.items()):
            gauge.add_metric([name], count)
        yield gauge
        for metric, values, text in (
            ("txupgrade_received_bytes", received, "Bytes received, by protocol"),
            ("txupgrade_sent_bytes", sent, "Bytes sent, by protocol"),
        ):
            family = CounterMetricFamily(metric, text, labels=["protocol"])
            for name, count in sorted(values.items()):
                family.add_metric([name], count)
            yield family
        byTransport = CounterMetricFamily(
            "txupgrade_upgrades_by_transport",
            "Switches, by protocol, HTTP version (1.1: Upgrade, 2: extended CONNECT) and TLS",
            labels=["protocol", "http", "tls"],
        )
        for labels, count in sorted(tracker.switches.items()):
            byTransport.add_metric(list(labels), count)
        yield byTransport
        refusals = CounterMetricFamily(
            "txupgrade_http2_refusals",
            "What HTTP/2 connections refused, by kind (malformed, refused-stream, foreign-host, "
            "connect-tunnel, protocol-error, too-many-resets)",
            labels=["kind"],
        )
        for name, count in sorted(getattr(tracker.site, "http2Refusals", {}).items()):
            refusals.add_metric([name], count)
        yield refusals
        hits = CounterMetricFamily("txupgrade_limit_hits", "Limit hits, by limit", labels=["limit"])
        for name, count in sorted(tracker.limitLog.counts.items()):
            hits.add_metric([name], count)
        yield hits
        failures = CounterMetricFamily(
            "txupgrade_tls_handshake_failures", "TLS handshakes that failed, by reason", labels=["reason"]
        )
        for name, count in sorted(tracker.tlsFailures.items()):
            failures.add_metric([name], count)
        yield failures
        output = self.metrics.logOutput
        if output is not None:
            yield CounterMetricFamily(
                "txupgrade_log_lines_dropped", "Log lines that could not be written", value=output.dropped
            )


@implementer(ILogObserver)
class _UpgradeEvents:
    """Counts the channel's C{txupgrade.upgrade} decision events (but switches and failures)."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def __call__(self, event: dict[str, Any]) -> None:
        outcome = event.get("upgradeOutcome")
        # Failures are counted from PluginFailures (their lines are rate-limited),
        # accepted switches from the site's onAccept (no event per switch).
        if (
            outcome is not None
            and outcome not in ("failed", "accepted")
            and event.get("log_namespace") == "txupgrade.upgrade"
        ):
            self.counter.labels(event.get("protocol") or "", outcome).inc()


class DaemonMetrics:
    """
    The metrics of one daemon site: fed by its tracker and by the upgrade
    log events, served by L{resource}.
    """

    #: The log's L{txupgrade.daemon.logs.BatchedOutput} (from the daemon, at start):
    #: its dropped lines are counted.
    logOutput: Any = None

    def __init__(self, tracker: ConnectionTracker) -> None:
        self.registry = CollectorRegistry()
        self.tracker = tracker
        self.upgrades = Counter(
            "txupgrade_upgrades",
            "Upgrade decisions, by protocol and outcome",
            ["protocol", "outcome"],
            registry=self.registry,
        )
        self.handshakes = Histogram(
            "txupgrade_handshake_seconds",
            "From the request's first byte to the 101, by protocol",
            ["protocol"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.drained = Counter(
            "txupgrade_drained_connections",
            "Connections at shutdown, by how they ended",
            ["outcome"],
            registry=self.registry,
        )
        self.pluginFailures = Counter(
            "txupgrade_plugin_failures",
            "Exceptions of upgrade plugins and their protocols, by protocol and stage",
            ["protocol", "stage"],
            registry=self.registry,
        )
        self.registry.register(_TrackerCollector(tracker, self))
        self._failures = getattr(tracker.site, "pluginFailures", None)
        if self._failures is not None:
            self._failures.onFailure.append(self._failed)
        tracker.onUpgrade.append(self._upgraded)
        self._site = tracker.site
        self._site.onAccept.append(self._accepted)
        tracker.onDrained.append(self._drained)
        self._observer = _UpgradeEvents(self.upgrades)
        globalLogPublisher.addObserver(self._observer)

    def stop(self) -> None:
        """Stop listening to the log events, the switches and the plugin failures."""
        globalLogPublisher.removeObserver(self._observer)
        if self._accepted in self._site.onAccept:
            self._site.onAccept.remove(self._accepted)
        if self._failures is not None and self._failed in self._failures.onFailure:
            self._failures.onFailure.remove(self._failed)

    def _failed(self, protocol: str, stage: str) -> None:
        self.pluginFailures.labels(protocol, stage).inc()
        if stage == "negotiate":
            self.upgrades.labels(protocol, "failed").inc()

    def _accepted(self, protocol: str) -> None:
        self.upgrades.labels(protocol, "accepted").inc()

    def _upgraded(self, connection: TrackedConnection, latency: float) -> None:
        self.handshakes.labels(connection.protocol).observe(latency)

    def _drained(self, counts: dict[str, int]) -> None:
        aborted, failed = counts.get("aborted", 0), counts.get("failed", 0)
        self.drained.labels("drained").inc(counts.get("open", 0) - aborted - failed)
        self.drained.labels("aborted").inc(aborted)
        self.drained.labels("failed").inc(failed)

    def exposition(self) -> bytes:
        """The metrics page's text (what a worker tells its supervisor)."""
        return bytes(generate_latest(self.registry))

    def resource(self) -> Resource:
        """A root serving the metrics at C{/metrics} (and C{/})."""
        return _root(MetricsResource(registry=self.registry))

    def site(self) -> Site:
        """A plain site for the metrics listener."""
        return _site(self.resource())


def _root(metrics: IResource) -> Resource:
    root = DirectoryResource()
    root.putChild(b"metrics", metrics)
    root.putChild(b"", metrics)
    return root


def _site(root: Resource) -> Site:
    site = Site(root)
    site.noisy = False
    return site


class _Families:
    """A collector of fixed metric families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def mergeWorkerMetrics(pages: Mapping[int, bytes], extra: Iterable[Metric] = ()) -> bytes:
    """
    One metrics page from every worker's (C{pages}, by worker number): each
    sample labelled C{worker="N"}, each family once; then C{extra}.
    """
    families: dict[str, Metric] = {}
    for index, page in sorted(pages.items()):
        for family in text_string_to_metric_families(page.decode("utf-8")):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            worker = str(index)
            merged.samples.extend(s._replace(labels={**s.labels, "worker": worker}) for s in family.samples)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*families.values(), *extra]))
    return bytes(generate_latest(registry))


class _WorkersPage(PlainResource):
    """The supervisor's metrics page: asks the workers at each request."""

    isLeaf = True

    def __init__(self, metrics: SupervisorMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Any) -> int:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(body: bytes) -> None:
            if not gone:
                request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
                request.write(body)
                request.finish()

        self.metrics.page().addCallback(answer)
        return NOT_DONE_YET


class SupervisorMetrics:
    """
    The metrics page of a C{--workers} supervisor: every worker's figures,
    asked for at each scrape (a worker that does not answer within
    L{timeout} is left out, and logged).
    """

    timeout = 5.0

    def __init__(self, supervisor: Any) -> None:
        self.supervisor = supervisor

    def page(self) -> Any:
        """A Deferred firing with the whole page."""

        def merge(pages: dict[int, bytes]) -> bytes:
            missing = sorted(set(self.supervisor.workers) - set(pages))
            if missing:
                _log.warn("metrics: worker(s) {missing} did not answer; left out", missing=missing)
            running = GaugeMetricFamily("txupgrade_workers_running", "Worker processes running")
            running.add_metric([], len(self.supervisor.workers))
            restarts = CounterMetricFamily("txupgrade_worker_restarts", "Worker processes started again")
            restarts.add_metric([], self.supervisor.restarts)
            return mergeWorkerMetrics(pages, [running, restarts])

        return self.supervisor.askWorkers(b"metrics", self.timeout).addCallback(merge)

    def site(self) -> Site:
        """A plain site for the metrics listener."""
        return _site(_root(_WorkersPage(self)))
