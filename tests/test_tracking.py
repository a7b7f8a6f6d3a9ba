"""
Unit tests for L{txupgrade.daemon.tracking} and the built-in L{IDrainable}
protocols, in memory (string transports, a L{Clock}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel
from zope.interface.verify import verifyClass, verifyObject

from tests.support.http import Held
from txupgrade import _twistedcompat
from txupgrade.channel import UpgradeSite
from txupgrade.daemon.demo import webSocketEchoFactory
from txupgrade.daemon.tracking import ConnectionTracker, TrackedConnection, peerText
from txupgrade.interfaces import IDrainable
from txupgrade.negotiation import upgradedName
from txupgrade.protocols.echo import EchoProtocol, EchoUpgrade
from txupgrade.protocols.websocket import WebSocketUpgrade
from txupgrade.resource import DirectoryResource

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


def _tracker() -> tuple[ConnectionTracker, Clock, Held]:
    clock = Clock()
    root = DirectoryResource()
    held = Held()
    root.putChild(b"held", held)
    site = UpgradeSite(root, [EchoUpgrade()], reactor=clock)
    return ConnectionTracker(site, clock), clock, held


def _connect(tracker: ConnectionTracker) -> tuple[TrackedConnection, StringTransport]:
    connection = tracker.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    connection.makeConnection(transport)
    return connection, transport


def _events() -> tuple[list[dict[str, Any]], Any]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    return events, lambda: globalLogPublisher.removeObserver(events.append)


UPGRADE = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"


class TrackedConnectionTests(SynchronousTestCase):
    """What a tracked connection sees and logs."""

    def test_switchAndClose(self) -> None:
        """
        The C{101} marks the switch; the close event has protocol, peer,
        duration and bytes, those behind the request (C{abc}) the new protocol's.
        """
        tracker, clock, _ = _tracker()
        switches: list[tuple[str, float]] = []
        tracker.onUpgrade.append(lambda c, latency: switches.append((c.protocol, latency)))
        connection, transport = _connect(tracker)
        for byte in UPGRADE[:-1]:
            connection.dataReceived(bytes([byte]))
        clock.advance(0.25)
        connection.dataReceived(UPGRADE[-1:] + b"abc")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 Switching Protocols\r\n"))
        self.assertEqual(switches, [("echo", 0.25)])
        self.assertEqual((connection.bytesIn, connection.bytesOut), (3, 3))
        self.assertEqual(tracker.bytesIn, {"http": len(UPGRADE)})
        self.assertIsInstance(connection.current(), EchoProtocol)
        connection.dataReceived(b"de")
        clock.advance(2)
        events, stop = _events()
        self.addCleanup(stop)
        connection.connectionLost(Exception("gone"))  # type: ignore[arg-type]
        [closed] = [e for e in events if e.get("connectionEvent") == "closed"]
        self.assertEqual(
            {k: closed[k] for k in ("protocol", "peer", "duration", "bytesIn", "bytesOut")},
            {"protocol": "echo", "peer": "127.0.0.1:40000", "duration": 2.0, "bytesIn": 5, "bytesOut": 5},
        )
        self.assertEqual(tracker.connections, set())

    def test_plainHTTPNoEvent(self) -> None:
        """A connection that never switched logs no close event."""
        tracker, _, _ = _tracker()
        connection, _ = _connect(tracker)
        connection.dataReceived(b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(connection.protocol, "http")
        events, stop = _events()
        self.addCleanup(stop)
        connection.connectionLost(Exception("gone"))  # type: ignore[arg-type]
        self.assertEqual([e for e in events if e.get("connectionEvent")], [])

    def test_names(self) -> None:
        """Protocol names from C{101} heads; peers as text."""
        self.assertEqual(upgradedName(b"HTTP/1.1 101 X\r\nUpgrade: TLS/1.2, HTTP/1.1\r\n\r\n"), "TLS/1.2")
        self.assertEqual(upgradedName(b"HTTP/1.1 101 X\r\n\r\n"), "?")
        self.assertEqual(peerText(IPv4Address("TCP", "::1", 5)), "[::1]:5")


class DrainTests(SynchronousTestCase):
    """L{ConnectionTracker.drain} on each kind of connection."""

    def test_idleAndInFlight(self) -> None:
        """An idle connection closes now; one in flight gets C{Connection: close} and closes after."""
        tracker, clock, held = _tracker()
        idle, idleTransport = _connect(tracker)
        busy, busyTransport = _connect(tracker)
        busy.dataReceived(b"GET /held HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(held.pending), 1)
        done = tracker.drain(10)
        self.assertTrue(idleTransport.disconnecting)
        self.assertFalse(busyTransport.disconnecting)
        idle.connectionLost(Exception("closed"))  # type: ignore[arg-type]
        held.pending[0].write(b"late")
        held.pending[0].finish()
        self.assertIn(b"\r\nConnection: close\r\n", busyTransport.value())
        self.assertTrue(busyTransport.disconnecting)
        busy.connectionLost(Exception("closed"))  # type: ignore[arg-type]
        self.assertEqual(self.successResultOf(done), {"open": 2, "aborted": 0, "failed": 0})
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_deadline(self) -> None:
        """An upgraded connection still open at the deadline is aborted and counted."""
        tracker, clock, _ = _tracker()
        connection, transport = _connect(tracker)
        connection.dataReceived(UPGRADE)
        done = tracker.drain(3)
        self.assertTrue(transport.disconnecting)  # echo's half-close (no loseWriteConnection here)
        self.assertNoResult(done)
        clock.advance(3)
        connection.connectionLost(Exception("aborted"))  # type: ignore[arg-type]
        self.assertEqual(self.successResultOf(done), {"open": 1, "aborted": 1, "failed": 0})

    def test_failingDrain(self) -> None:
        """A protocol whose drain raises is aborted at once, logged and counted."""
        tracker, _, _ = _tracker()
        connection, transport = _connect(tracker)
        connection.dataReceived(UPGRADE)
        echo = connection.current()

        def broken() -> None:
            raise RuntimeError("no drain today")

        echo.drain = broken
        aborted: list[bool] = []
        transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        done = tracker.drain(3)
        self.assertEqual(aborted, [True])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        connection.connectionLost(Exception("aborted"))  # type: ignore[arg-type]
        self.assertEqual(self.successResultOf(done), {"open": 1, "aborted": 0, "failed": 1})

    def test_empty(self) -> None:
        """Nothing open: done at once."""
        tracker, _, _ = _tracker()
        self.assertEqual(self.successResultOf(tracker.drain(1)), {"open": 0, "aborted": 0, "failed": 0})


class DrainableTests(SynchronousTestCase):
    """The built-in upgraded protocols provide L{IDrainable}."""

    def test_echo(self) -> None:
        """C{echo} half-closes when it can."""
        verifyObject(IDrainable, EchoProtocol())
        halfClosed: list[bool] = []
        protocol = EchoProtocol()
        transport = StringTransport()
        transport.loseWriteConnection = lambda: halfClosed.append(True)  # type: ignore[attr-defined]
        protocol.makeConnection(transport)
        protocol.drain()
        self.assertEqual(halfClosed, [True])
        self.assertFalse(transport.disconnecting)

    def test_webSocket(self) -> None:
        """The switched WebSocket class sends close 1001 "going away"."""
        upgrade = WebSocketUpgrade(webSocketEchoFactory())
        cls = type(upgrade.negotiate(_wsRequest()).protocol)  # type: ignore[union-attr]
        verifyClass(IDrainable, cls)
        self.assertTrue(IDrainable.implementedBy(cls))

    def test_compatCurrentProtocol(self) -> None:
        """C{currentProtocol} sees through the site's wrapper, and passes anything else through."""
        wrapper = _twistedcompat.wrapChannel(HTTPChannel())
        self.assertIsInstance(_twistedcompat.currentProtocol(wrapper), HTTPChannel)
        other = EchoProtocol()
        self.assertIs(_twistedcompat.currentProtocol(other), other)


def _wsRequest() -> Any:
    from txupgrade.negotiation import UpgradeRequest, offerFromHeaders

    headers = (
        (b"host", b"127.0.0.1:80"),
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"sec-websocket-version", b"13"),
    )
    return UpgradeRequest(
        method=b"GET",
        target=b"/ws",
        version=b"HTTP/1.1",
        headers=headers,
        body=b"",
        offer=offerFromHeaders(b"HTTP/1.1", [b"websocket"], [b"Upgrade"]),
        peer=PEER,
        host=b"127.0.0.1",
        secure=False,
    )
