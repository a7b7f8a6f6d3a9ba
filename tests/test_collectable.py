"""
A closed connection leaves nothing for the cyclic garbage collector: the
objects of each connection (wrapper, tracking, channel, request, upgraded
protocol, Twisted's transport) are freed by reference counting the moment
it closes. A reference cycle among them (a wrapper and its channel holding
each other, the tracking and its counting transport, a bound method kept
on its own instance) made every closed connection garbage that only the
cyclic collector frees, and those collections cost the daemon more per
connection than all of its tracking.

Through the service C{twistd txupgrade} builds, over real sockets: GET, an
C{echo} switch, a WebSocket, and HTTP/2 by prior knowledge with an
extended CONNECT; and in memory, through the same stack and the in-code
site. (Not TLS: Twisted's TLS transport keeps its producer, the channel,
after the connection is lost, a cycle of Twisted's own.)
"""

from __future__ import annotations

import collections
import gc
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support.benchmarks import importBenchmark
from tests.support.http2 import H2Client
from tests.support.net import connectClient, reactor, withTimeout
from tests.support.websocket import handshakeBytes, maskedFrame, newKey
from txupgrade.daemon.service import keepOutOfCollections
from txupgrade.daemon.tracking import TrackedConnection
from txupgrade.registry import ProtocolRegistry
from txupgrade.tap import Options, buildService


class Watched:
    """
    Weak references to a connection's server objects, taken while it is
    open; once it is closed, those still alive with automatic collection
    off are held by a reference cycle (or leaked).
    """

    def __init__(self) -> None:
        self._refs: list[weakref.ref[Any]] = []

    def watch(self, *objects: Any) -> None:
        self._refs.extend(weakref.ref(o) for o in objects if o is not None)

    def watchConnection(self, connection: Any) -> None:
        """A tracked connection or channel wrapper: it, its transports, its protocol (and HTTP/2 streams)."""
        current = connection._channel
        transports = (getattr(connection, "transport", None), getattr(connection, "_counting", None))
        self.watch(connection, *transports, current)
        for stream in getattr(current, "streams", {}).values():
            self.watch(stream, getattr(getattr(stream, "_bytes", None), "protocol", None))

    def alive(self) -> collections.Counter[str]:
        """The watched objects not freed, by class."""
        found = collections.Counter[str]()
        for ref in self._refs:
            thing = ref()
            if thing is not None:
                found[f"{type(thing).__module__}.{type(thing).__qualname__}"] += 1
        return found

    def __len__(self) -> int:
        return len(self._refs)


@contextmanager
def collectionOff() -> Iterator[None]:
    """Automatic garbage collection off inside: what is freed there, reference counting freed."""
    gc.collect()
    wasEnabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if wasEnabled:
            gc.enable()


class RealSocketTests(TestCase):
    """The service the tap builds, real clients: every server object of a connection is freed."""

    def setUp(self) -> None:
        options = Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1"])
        protocols = options.protocols or ProtocolRegistry.fromPlugins()
        self.service = buildService(options.settings, protocols, reactor)
        self.service.startService()
        self.addCleanup(lambda: [port.stopListening() for port in self.service.ports])
        self.port = self.service.ports[0].getHost().port

    @inlineCallbacks
    def assertNoServerCycles(self, run: Callable[[], Any], count: int = 5) -> Any:
        """C{run} C{count} connections, each closed on both sides: every server object of each freed."""
        tracker = self.service.tracker
        watched = Watched()
        closing = TrackedConnection.connectionLost

        def connectionLost(connection: TrackedConnection, reason: Any) -> None:
            watched.watchConnection(connection)
            closing(connection, reason)

        self.patch(TrackedConnection, "connectionLost", connectionLost)
        with collectionOff():
            for _ in range(count):
                yield run()
            yield withTimeout(tracker.whenEmpty())
            yield deferLater(reactor, 0, lambda: None)
            self.assertGreaterEqual(len(watched), 4 * count)
            self.assertEqual(watched.alive(), collections.Counter())

    @inlineCallbacks
    def exchange(self, request: bytes, until: bytes) -> Any:
        """One connection: C{request}, the answer up to C{until}, then a close."""
        client = yield connectClient(self, self.port)
        client.send(request)
        data = yield client.waitFor(lambda data: until in data)
        yield client.close()
        return data

    def test_get(self) -> None:
        """A plain GET."""
        request = b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        return self.assertNoServerCycles(lambda: self.exchange(request, b"\r\n\r\n"))

    def test_echo(self) -> None:
        """An C{echo} switch with bytes behind the request, echoed."""
        request = b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nping"
        return self.assertNoServerCycles(lambda: self.exchange(request, b"\r\n\r\nping"))

    def test_webSocket(self) -> None:
        """A WebSocket handshake, one message echoed, the client gone."""
        request = handshakeBytes(b"/ws", key=newKey(), host=b"127.0.0.1") + maskedFrame(0x1, b"hello")
        return self.assertNoServerCycles(lambda: self.exchange(request, b"hello"))

    def test_http2(self) -> None:
        """HTTP/2 by prior knowledge: a GET and an extended-CONNECT C{echo} stream on one connection."""

        def run() -> Any:
            client = H2Client()
            data = client.preface() + client.request(1, b"/echo")
            connect = [(b":method", b"CONNECT"), (b":protocol", b"echo"), (b":scheme", b"http")]
            client.conn.send_headers(3, [*connect, (b":path", b"/echo"), (b":authority", b"127.0.0.1")])
            client.conn.send_data(3, b"ping")
            return self.exchange(data + client.conn.data_to_send(), b"ping")

        return self.assertNoServerCycles(run)


def serveOnce(factory: Any, data: bytes, watched: Watched) -> bytes:
    """One in-memory connection of C{factory}: C{data} in, closed; what it answered."""
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    protocol = factory.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer, hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
    protocol.makeConnection(transport)
    watched.watch(protocol._channel)
    protocol.dataReceived(data)
    watched.watchConnection(protocol)
    protocol.connectionLost(Failure(ConnectionDone()))
    # As Twisted's TCP transport does once the connection is lost.
    transport.unregisterProducer()
    return bytes(transport.value())


class InMemoryTests(SynchronousTestCase):
    """The same through the in-memory stacks of C{benchmarks/bench_daemon_cost.py}: both of them."""

    def assertNoCycles(self, daemon: bool) -> None:
        bench = importBenchmark(self, "bench_daemon_cost")
        factory, stop = bench.stackFactory(daemon, reactor)
        self.addCleanup(stop)
        for kind, data in (("get", bench.GET_BYTES), ("echo", bench.ECHO_BYTES), ("ws", bench.WS_BYTES)):
            watched = Watched()
            with collectionOff():
                answer = serveOnce(factory, data, watched)
                self.assertTrue(answer.startswith((b"HTTP/1.1 200 ", b"HTTP/1.1 101 ")), answer[:100])
                self.assertGreaterEqual(len(watched), 3)
                self.assertEqual(watched.alive(), collections.Counter(), kind)

    def test_daemon(self) -> None:
        """The stack C{twistd txupgrade} builds."""
        self.assertNoCycles(daemon=True)

    def test_inCode(self) -> None:
        """The in-code C{UpgradeSite}."""
        self.assertNoCycles(daemon=False)


class KeepOutOfCollectionsTests(SynchronousTestCase):
    """What start-up built is kept out of later collections (C{gc.freeze}), once the reactor runs."""

    def test_frozen(self) -> None:
        self.addCleanup(gc.unfreeze)
        before = gc.get_freeze_count()
        keepOutOfCollections()
        self.assertGreater(gc.get_freeze_count(), before)
