"""
A plugin that fails on every request is counted every time (and in the
metrics) but logged with its traceback at most once per interval per
protocol, whatever stage it fails in: C{negotiate}, the new protocol's
start, or a stream protocol's method.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.support.http import SimpleUpgrade, upgrade
from txupgrade.channel import UpgradeSite
from txupgrade.daemon.logs import LogRateLimit
from txupgrade.daemon.tracking import ConnectionTracker
from txupgrade.protocols.stream import StreamUpgrade
from txupgrade.resource import DirectoryResource
from txupgrade.testing import MemoryConnection

#: How many failing requests each test makes.
FLOOD = 50


def _boom(request: Any) -> Any:
    raise ZeroDivisionError("the plugin's bug")


class BadStart(Protocol):
    """A protocol whose start raises."""

    def makeConnection(self, transport: Any) -> None:
        raise KeyError("the protocol's bug")


class BadReader(Protocol):
    """A stream protocol that raises on its first byte."""

    def dataReceived(self, data: bytes) -> None:
        raise ValueError("the stream's bug")


class PluginFailureTests(SynchronousTestCase):
    """Failures of plugins, flooded."""

    def setUp(self) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.clock = Clock()

    def site(self, *protocols: Any) -> UpgradeSite:
        site = UpgradeSite(DirectoryResource(), protocols, reactor=self.clock)
        site.log = lambda request: None  # type: ignore[method-assign]
        return site

    def flood(self, site: UpgradeSite, name: bytes, after: bytes = b"") -> list[bytes]:
        """C{FLOOD} connections each offering C{name}: what each received."""
        answers = []
        for _ in range(FLOOD):
            connection = MemoryConnection(site)
            connection.send(upgrade(name) + after)
            answers.append(connection.received)
            connection.close()
        return answers

    def logged(self, namespace: str) -> list[LogEvent]:
        """The failure events (with a traceback) logged in C{namespace}."""
        return [e for e in self.events if e.get("log_namespace") == namespace and "log_failure" in e]

    def test_negotiateFlood(self) -> None:
        """Each request: 500, counted; one traceback; after the interval one line counts the rest."""
        site = self.site(SimpleUpgrade("boom", decision=_boom))
        answers = self.flood(site, b"boom")
        self.assertEqual(
            [a.split(b"\r\n", 1)[0] for a in answers], [b"HTTP/1.1 500 Internal Server Error"] * FLOOD
        )
        self.assertEqual(site.pluginFailures.counts, {"boom": FLOOD})
        [first] = self.logged("txupgrade.upgrade")
        self.assertEqual(
            (first["protocol"], first["failureStage"], first["unlogged"]), ("boom", "negotiate", 0)
        )
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.clock.advance(LogRateLimit.interval)
        self.flood(site, b"boom")
        [_first, second] = self.logged("txupgrade.upgrade")
        self.assertEqual(second["unlogged"], FLOOD - 1)
        self.assertIn(f"and {FLOOD - 1} more failure(s) of boom", second["unloggedText"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_perProtocol(self) -> None:
        """Each failing protocol gets its own first line."""
        site = self.site(SimpleUpgrade("a", decision=_boom), SimpleUpgrade("b", decision=_boom))
        self.flood(site, b"a")
        self.flood(site, b"b")
        self.assertEqual(sorted(e["protocol"] for e in self.logged("txupgrade.upgrade")), ["a", "b"])
        self.flushLoggedErrors(ZeroDivisionError)

    def test_startFlood(self) -> None:
        """A protocol whose start raises: every connection aborted, one traceback."""
        site = self.site(SimpleUpgrade("bad", factory=lambda request: BadStart()))
        answers = self.flood(site, b"bad")
        self.assertTrue(all(a.startswith(b"HTTP/1.1 101 ") for a in answers))
        self.assertEqual(site.pluginFailures.counts, {"bad": FLOOD})
        [event] = self.logged("txupgrade.channel.UpgradeChannel")
        self.assertEqual(event["failureStage"], "start")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_streamFlood(self) -> None:
        """A raw-stream protocol raising in dataReceived: counted every time, one traceback."""
        site = self.site(StreamUpgrade("raw", Factory.forProtocol(BadReader)))
        self.flood(site, b"raw", after=b"x")
        self.assertEqual(site.pluginFailures.counts, {"raw": FLOOD})
        [event] = self.logged("txupgrade.stream")
        self.assertEqual(event["failureStage"], "dataReceived")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_metricsCountEveryFailure(self) -> None:
        """The metrics count all failures, by stage, and the failed decisions, though one was logged."""
        from txupgrade.daemon.metrics import DaemonMetrics

        site = self.site(SimpleUpgrade("boom", decision=_boom))
        metrics = DaemonMetrics(ConnectionTracker(site, self.clock))
        self.addCleanup(metrics.stop)
        self.flood(site, b"boom")
        self.flushLoggedErrors(ZeroDivisionError)
        value = metrics.registry.get_sample_value
        self.assertEqual(
            value("txupgrade_plugin_failures_total", {"protocol": "boom", "stage": "negotiate"}), FLOOD
        )
        self.assertEqual(value("txupgrade_upgrades_total", {"protocol": "boom", "outcome": "failed"}), FLOOD)
