"""
The daemon's limits (L{txupgrade.daemon.limits}, enforced by L{txupgrade.daemon.tracking}):
in memory on a L{Clock}, then against a real C{twistd txupgrade}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support.daemon import LOCAL, startDaemon
from tests.support.net import connectClient, reactor, wait, withTimeout
from txupgrade.channel import UpgradeSite
from txupgrade.daemon.limits import LimitLog, Limits, parseIdleTimeout
from txupgrade.daemon.tracking import ConnectionTracker
from txupgrade.protocols.echo import EchoUpgrade
from txupgrade.resource import BytesResource, DirectoryResource

UPGRADE = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
GET = b"GET /page HTTP/1.1\r\nHost: a\r\n\r\n"


def _tracker(limits: Limits, **siteOptions: Any) -> tuple[ConnectionTracker, Clock]:
    clock = Clock()
    root = DirectoryResource()
    root.putChild(b"page", BytesResource(b"page", "text/plain"))
    site = UpgradeSite(root, [EchoUpgrade()], reactor=clock, timeout=None, **siteOptions)
    return ConnectionTracker(site, clock, limits), clock


def _connect(
    tracker: ConnectionTracker, host: str = "10.0.0.1", port: int = 1000
) -> tuple[Any, StringTransport]:
    address = IPv4Address("TCP", host, port)
    connection = tracker.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    connection.makeConnection(transport)
    return connection, transport


class _Events:
    def __init__(self, test: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def hits(self) -> list[dict[str, Any]]:
        return [e for e in self.events if "limitHit" in e]


class RequestHeadTimeoutTests(SynchronousTestCase):
    """C{request-head-timeout}: a head that trickles in is answered 408."""

    def test_slowloris(self) -> None:
        """Byte by byte, never finished: 408 and close at the deadline, not before; logged once."""
        events = _Events(self)
        tracker, clock = _tracker(Limits(requestHeadTimeout=10))
        connection, transport = _connect(tracker)
        for byte in GET[:-2]:
            connection.dataReceived(bytes([byte]))
            clock.advance(0.3)
        self.assertEqual(transport.value(), b"")
        clock.advance(10 - 0.3 * (len(GET) - 2) - 0.01)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.02)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 Request Timeout\r\n"), transport.value())
        self.assertIn(b"Connection: close\r\n", transport.value())
        self.assertTrue(transport.disconnecting)
        [hit] = events.hits()
        self.assertEqual((hit["limitHit"], hit["peer"]), ("request-head-timeout", "10.0.0.1:1000"))
        self.assertEqual(tracker.limitLog.counts, {"request-head-timeout": 1})

    def test_inTimeAndKeptAlive(self) -> None:
        """Heads that complete in time, byte by byte or not, on one connection: no 408."""
        tracker, clock = _tracker(Limits(requestHeadTimeout=10))
        connection, transport = _connect(tracker)
        for byte in GET:
            connection.dataReceived(bytes([byte]))
        clock.advance(60)
        connection.dataReceived(GET[:5])
        clock.advance(9)
        connection.dataReceived(GET[5:])
        clock.advance(60)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 2)
        self.assertNotIn(b"408", transport.value())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_manyConnectionsOneTimer(self) -> None:
        """
        Each connection keeps its own deadline, however many are timed, with
        one timer among them all; a connection whose head came in, or that
        closed, is never timed out.
        """
        tracker, clock = _tracker(Limits(requestHeadTimeout=10))
        _first, firstTransport = _connect(tracker, port=1)
        clock.advance(4)
        _second, secondTransport = _connect(tracker, port=2)
        done, doneTransport = _connect(tracker, port=3)
        gone, goneTransport = _connect(tracker, port=4)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        done.dataReceived(GET)
        gone.connectionLost(Failure(ConnectionDone()))
        clock.advance(6)
        self.assertTrue(firstTransport.value().startswith(b"HTTP/1.1 408 "))
        self.assertEqual(secondTransport.value(), b"")
        clock.advance(3.99)
        self.assertEqual(secondTransport.value(), b"")
        clock.advance(0.02)
        self.assertTrue(secondTransport.value().startswith(b"HTTP/1.1 408 "))
        self.assertNotIn(b"408", doneTransport.value())
        self.assertEqual(goneTransport.value(), b"")
        self.assertEqual(tracker.limitLog.counts, {"request-head-timeout": 2})
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_timerKeptUntilLastClose(self) -> None:
        """
        A head read in time leaves the one timer running for the next
        connection's (not a timer per head); it finds nothing due, times the
        next head from that head's own start, and goes with the last connection.
        """
        tracker, clock = _tracker(Limits(requestHeadTimeout=10))
        kept, keptTransport = _connect(tracker, port=1)
        kept.dataReceived(GET)
        [timer] = clock.getDelayedCalls()
        clock.advance(6)
        late, lateTransport = _connect(tracker, port=2)
        self.assertEqual(clock.getDelayedCalls(), [timer])
        clock.advance(4)
        self.assertEqual(lateTransport.value(), b"")
        clock.advance(5.99)
        self.assertEqual(lateTransport.value(), b"")
        clock.advance(0.02)
        self.assertTrue(lateTransport.value().startswith(b"HTTP/1.1 408 "), lateTransport.value())
        self.assertNotIn(b"408", keptTransport.value())
        late.connectionLost(Failure(ConnectionDone()))
        fresh, _ = _connect(tracker, port=3)
        fresh.dataReceived(GET)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        for connection in (kept, fresh):
            connection.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_notAfterSwitch(self) -> None:
        """An upgraded connection is not timed as HTTP."""
        tracker, clock = _tracker(Limits(requestHeadTimeout=10))
        connection, transport = _connect(tracker)
        connection.dataReceived(UPGRADE)
        clock.advance(100)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "))
        self.assertFalse(transport.disconnecting)


class IdleTimeoutTests(SynchronousTestCase):
    """C{idle-timeout PROTOCOL=SECONDS}."""

    def test_echoIdle(self) -> None:
        """Traffic keeps an echo connection open; silence closes it."""
        tracker, clock = _tracker(Limits(requestHeadTimeout=0, idleTimeouts={"echo": 5}))
        connection, transport = _connect(tracker)
        connection.dataReceived(UPGRADE)
        for _ in range(4):
            clock.advance(4)
            connection.dataReceived(b"x")
        self.assertFalse(transport.disconnecting)
        clock.advance(5)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(tracker.limitLog.counts, {"idle-timeout": 1})

    def test_parse(self) -> None:
        """C{NAME=SECONDS}; names match without version."""
        self.assertEqual(parseIdleTimeout("websocket=300"), ("websocket", 300.0))
        for bad in ("websocket", "=3", "x=0", "x=-1"):
            self.assertRaises(ValueError, parseIdleTimeout, bad)
        limits = Limits(idleTimeouts={"shout": 3, "TLS/1.2": 4})
        self.assertEqual(limits.idleTimeoutFor("shout/1"), 3)
        self.assertEqual(limits.idleTimeoutFor("tls/1.2"), 4)
        self.assertEqual(limits.idleTimeoutFor("TLS/1.3"), 0)


class ConnectionLimitTests(SynchronousTestCase):
    """C{max-connections} and C{max-connections-per-client}."""

    def test_perProcess(self) -> None:
        """One connection over the limit is answered 503 and half-closed; a slot freed is reused."""
        tracker, clock = _tracker(Limits(requestHeadTimeout=0, maxConnections=2))
        first, _ = _connect(tracker, port=1)
        _connect(tracker, port=2)
        refused, transport = _connect(tracker, port=3)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 Service Unavailable\r\n"))
        self.assertIn(b"Retry-After: 1\r\n", transport.value())
        self.assertEqual(len(tracker.connections), 2)
        clock.advance(3)
        refused.connectionLost(Exception("aborted"))  # type: ignore[arg-type]
        first.connectionLost(Exception("closed"))  # type: ignore[arg-type]
        _, transport = _connect(tracker, port=4)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(tracker.limitLog.counts, {"max-connections": 1})

    def test_perClient(self) -> None:
        """The limit counts one address's connections; others are not affected."""
        tracker, _ = _tracker(Limits(requestHeadTimeout=0, maxConnectionsPerClient=1))
        _connect(tracker, "10.0.0.1", 1)
        _, transport = _connect(tracker, "10.0.0.1", 2)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "))
        _, transport = _connect(tracker, "10.0.0.2", 3)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(tracker.limitLog.counts, {"max-connections-per-client": 1})


class UpgradeListLimitTests(SynchronousTestCase):
    """C{max-upgrade-offers}: the site's limit on the C{Upgrade} list, counted by the daemon's tracker."""

    def offer(self, tracker: ConnectionTracker, count: int) -> bytes:
        """What a request offering C{count} protocols (C{echo} last) gets."""
        return self.upgradeField(tracker, b", ".join([b"p%d" % i for i in range(count - 1)] + [b"echo"]))

    def upgradeField(self, tracker: ConnectionTracker, value: bytes) -> bytes:
        """What a request whose C{Upgrade} field is C{value} gets."""
        connection, transport = _connect(tracker)
        connection.dataReceived(UPGRADE.replace(b"Upgrade: echo", b"Upgrade: " + value))
        return bytes(transport.value())

    def test_configured(self) -> None:
        """Three offers pass a limit of 3; four are answered 400, counted and logged as the limit, once."""
        events = _Events(self)
        tracker, _ = _tracker(Limits(requestHeadTimeout=0), maxUpgradeOffers=3)
        self.assertTrue(self.offer(tracker, 3).startswith(b"HTTP/1.1 101 "))
        for _ in range(5):
            answer = self.offer(tracker, 4)
            self.assertTrue(answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer)
        self.assertEqual(tracker.limitLog.counts, {"max-upgrade-offers": 5})
        [hit] = events.hits()
        self.assertEqual(hit["limitHit"], "max-upgrade-offers")
        self.assertIn("too many protocols", hit["reason"])
        self.assertFalse([e for e in events.events if e.get("upgradeOutcome") == "malformed"])

    def test_defaultAndBytes(self) -> None:
        """By default 16 offers pass and 17 do not; the field may hold 64 bytes per offer."""
        tracker, _ = _tracker(Limits(requestHeadTimeout=0))
        self.assertTrue(self.offer(tracker, 16).startswith(b"HTTP/1.1 101 "))
        self.assertTrue(self.offer(tracker, 17).startswith(b"HTTP/1.1 400 "))
        tracker, _ = _tracker(Limits(requestHeadTimeout=0), maxUpgradeOffers=1)
        self.assertTrue(self.upgradeField(tracker, b"x" * 65).startswith(b"HTTP/1.1 400 "))
        self.assertEqual(tracker.limitLog.counts, {"max-upgrade-offers": 1})


class LimitLogTests(SynchronousTestCase):
    """A flood of hits: every one counted, one line per interval."""

    def test_rateLimited(self) -> None:
        """Three hits within the interval are one line; the next line says how many were not logged."""
        events = _Events(self)
        clock = Clock()
        log = LimitLog(clock.seconds)
        seen: list[str] = []
        log.onHit.append(seen.append)
        for _ in range(3):
            log.hit("max-connections", "1.2.3.4:5")
            clock.advance(1)
        clock.advance(log.rate.interval)
        log.hit("max-connections", "1.2.3.4:6")
        hits = events.hits()
        self.assertEqual([h["unlogged"] for h in hits], [0, 2])
        self.assertEqual(log.counts, {"max-connections": 4})
        self.assertEqual(len(seen), 4)


class DaemonLimitTests(TestCase):
    """The limits as options of a real C{twistd txupgrade}."""

    timeout = 90

    @inlineCallbacks
    def test_limitsTrigger(self) -> Any:
        """A second connection from one address gets 503; a trickled head gets 408 after the timeout."""
        daemon = yield startDaemon(
            self, ["--listen", LOCAL, "--max-connections-per-client", "2", "--request-head-timeout", "1"]
        )
        [port] = daemon.ports
        slow = yield connectClient(self, port)
        slow.send(b"GET / HTTP/1.1\r\n")
        other = yield connectClient(self, port)
        refused = yield connectClient(self, port)
        yield refused.waitForClose()
        self.assertTrue(refused.data.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), refused.data)
        other.send(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        yield other.waitFor(lambda d: d.endswith(b"Upgrade: echo\n"))
        for _ in range(3):
            slow.send(b"X")
            yield withTimeout(_sleep(0.2))
        yield slow.waitForClose()
        self.assertTrue(slow.data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), slow.data)
        # The daemon writes its log in batches (every 50 ms at most).
        yield wait(lambda: b"Limit request-head-timeout hit by 127.0.0.1:" in daemon.output)
        self.assertIn(b"Limit max-connections-per-client hit by 127.0.0.1:", daemon.output)


def _sleep(seconds: float) -> Any:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)
