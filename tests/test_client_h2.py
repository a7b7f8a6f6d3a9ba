"""
L{txupgrade.client}'s HTTP/2 side: upgrades on streams by extended CONNECT
(RFC 8441). In memory against a real L{UpgradeSite} (the logic: fallback
after C{501}, refusals, half-closes, resets, both directions of flow
control, C{GOAWAY}, close), then over real sockets: an in-code site by
prior knowledge and by ALPN C{h2} over TLS, and a real C{twistd txupgrade}.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError, gatherResults, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IProtocol,
    IPushProducer,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.support.daemon import LOCAL, startDaemon
from tests.support.http2 import Recording
from tests.support.net import RecordingProducer, TLSPair, listen, reactor, wait, withTimeout
from tests.support.websocket import maskedFrame
from txupgrade import DirectoryResource, Refuse, UpgradeSite
from txupgrade.client import (
    ExtendedConnectUnavailable,
    HTTP2Connection,
    UpgradeFailed,
    UpgradeResponse,
    connectHTTP2,
    upgradeHTTP2,
)
from txupgrade.protocols.echo import EchoUpgrade
from txupgrade.testing import MemoryConnection, RecordingProtocol

MiB = 1 << 20


class Collector(RecordingProtocol):
    """A client protocol that keeps its response, its bytes and its end, and can be waited on."""

    def __init__(self, response: UpgradeResponse | None = None) -> None:
        super().__init__()
        self.response = response
        self.lost: Deferred[None] = Deferred()
        self._waiters: list[tuple[int, Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        for entry in list(self._waiters):
            if len(self.data) >= entry[0]:
                self._waiters.remove(entry)
                entry[1].callback(bytes(self.data))

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        self.lost.callback(None)

    def waitForBytes(self, count: int) -> Deferred[bytes]:
        """Fire with the bytes once C{count} are in."""
        if len(self.data) >= count:
            return succeed(bytes(self.data))
        d: Deferred[bytes] = Deferred()
        self._waiters.append((count, d))
        return withTimeout(d)


@implementer(IHalfCloseableProtocol)
class HalfClosing(Collector):
    """A client protocol that takes the server's END_STREAM as a half-close."""

    readLost = writeLost = False

    def readConnectionLost(self) -> None:
        self.readLost = True

    def writeConnectionLost(self) -> None:
        self.writeLost = True


class Counting(HTTP2Connection):
    """An L{HTTP2Connection} that counts the bytes it reads from the network."""

    received = 0

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        super().dataReceived(data)


class Pair:
    """An L{HTTP2Connection} connected in memory to an L{UpgradeSite} serving C{protocols}."""

    def __init__(self, *protocols: Any, extendedConnect: bool = True, chunkSize: int | None = None) -> None:
        self.clock = Clock()
        self.site = UpgradeSite(
            DirectoryResource(), list(protocols), reactor=self.clock, extendedConnect=extendedConnect
        )
        self.connection = Counting(self.clock)
        self.memory = MemoryConnection(self.site, self.connection, chunkSize=chunkSize)
        self.ready: list[Any] = []
        self.connection.whenReady().addBoth(self.ready.append)
        self.memory.flush()

    def upgrade(self, protocols: list[str], factory: Any = Collector, **kwargs: Any) -> Deferred[Any]:
        """Start an upgrade; move the bytes; the upgrade's Deferred."""
        d = self.connection.upgrade(protocols, factory, **kwargs)
        self.memory.flush()
        return d

    def flush(self) -> None:
        self.memory.flush()


def serverStream(plugin: Recording, index: int = -1) -> Any:
    """The server-side transport (the stream) of the protocol C{plugin} built."""
    return plugin.protocols[index].transport


class ConnectTests(SynchronousTestCase):
    """The connection is ready once the server's SETTINGS allow extended CONNECT, and only then."""

    def test_ready(self) -> None:
        """whenReady fires with the connection; a second caller gets it too."""
        pair = Pair(EchoUpgrade())
        self.assertEqual(pair.ready, [pair.connection])
        self.assertIs(self.successResultOf(pair.connection.whenReady()), pair.connection)

    def test_notOffered(self) -> None:
        """Without SETTINGS_ENABLE_CONNECT_PROTOCOL: ExtendedConnectUnavailable, and the connection closed."""
        pair = Pair(EchoUpgrade(), extendedConnect=False)
        [failure] = pair.ready
        failure.trap(ExtendedConnectUnavailable)
        self.assertIn("SETTINGS_ENABLE_CONNECT_PROTOCOL", str(failure.value))
        self.assertTrue(pair.memory.clientTransport.disconnected)
        # An UpgradeFailed, so one except clause catches every "did not switch".
        self.assertIsInstance(failure.value, UpgradeFailed)
        self.failureResultOf(pair.connection.upgrade(["echo"], Collector), UpgradeFailed)

    def test_notHTTP2(self) -> None:
        """A server that answers HTTP/1.1 to the preface: UpgradeFailed, the connection closed."""
        clock = Clock()
        site = UpgradeSite(DirectoryResource(), [EchoUpgrade()], reactor=clock, priorKnowledge=False)
        connection = HTTP2Connection(clock)
        memory = MemoryConnection(site, connection)
        memory.flush()
        failure = self.failureResultOf(connection.whenReady(), UpgradeFailed)
        self.assertNotIsInstance(failure.value, ExtendedConnectUnavailable)
        self.assertTrue(memory.clientTransport.disconnected)

    def test_interfaces(self) -> None:
        """The connection is a protocol and a handshake listener; a stream a full transport."""
        pair = Pair(EchoUpgrade())
        verifyObject(IProtocol, pair.connection)
        verifyObject(IHandshakeListener, pair.connection)
        verifyObject(IPushProducer, pair.connection)
        protocol = self.successResultOf(pair.upgrade(["echo"]))
        for interface in (ITransport, IConsumer, IPushProducer):
            verifyObject(interface, protocol.transport)

    def test_importsWithoutH2(self) -> None:
        """txupgrade.client imports without h2; building an HTTP/2 connection says which extra is missing."""
        code = (
            "import sys; sys.modules['h2'] = None\n"
            "import txupgrade.client as c\n"
            "try:\n    c.HTTP2Connection()\nexcept ImportError as e:\n    print(e)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("h2c extra", out.stdout)


class UpgradeTests(SynchronousTestCase):
    """One CONNECT per protocol offered, in order; the 200's stream becomes the protocol's transport."""

    def test_echo(self) -> None:
        """The response says HTTP/2; bytes written come back, also one byte at a time."""
        for chunkSize in (None, 1):
            with self.subTest(chunkSize=chunkSize):
                pair = Pair(EchoUpgrade(), chunkSize=chunkSize)
                protocol = self.successResultOf(pair.upgrade(["echo"]))
                self.assertEqual(
                    (protocol.response.version, str(protocol.response.protocol)), (b"HTTP/2", "echo")
                )
                protocol.transport.write(b"hello ")
                protocol.transport.writeSequence([b"over ", b"HTTP/2"])
                pair.flush()
                self.assertEqual(bytes(protocol.data), b"hello over HTTP/2")
                self.assertIsNone(protocol.lostReason)

    def test_requestAsSent(self) -> None:
        """The server sees the CONNECT with :protocol, the target, the authority and the extra headers."""
        plugin = Recording()
        pair = Pair(plugin)
        d = pair.upgrade(
            ["recording"], target=b"/room?id=7", authority=b"localhost:8080", headers=[(b"X-Token", b"t")]
        )
        protocol = self.successResultOf(d)
        [request] = plugin.requests
        self.assertEqual(
            (request.method, request.target, request.version), (b"CONNECT", b"/room?id=7", b"HTTP/2")
        )
        self.assertEqual([str(p) for p in request.offer.protocols], ["recording"])
        self.assertEqual(
            (request.getHeader(b"x-token"), request.getHeader(b"host")), (b"t", b"localhost:8080")
        )
        self.assertFalse(request.secure)
        self.assertEqual(protocol.response.getHeader(b"X-Recorded"), b"yes")
        self.assertEqual(protocol.response.headers, ((b"x-recorded", b"yes"),))

    def test_foreignAuthority(self) -> None:
        """An authority the site does not serve is answered 400: UpgradeFailed, not a fallback."""
        pair = Pair(EchoUpgrade())
        failure = self.failureResultOf(pair.upgrade(["echo"], authority=b"evil.example"), UpgradeFailed)
        self.assertEqual(failure.value.status, 400)

    def test_nextAfter501(self) -> None:
        """A 501 (not offered) moves on to the next protocol, on a new stream."""
        plugin = Recording()
        pair = Pair(plugin)
        protocol = self.successResultOf(pair.upgrade(["nope", "other", "recording"]))
        self.assertEqual(str(protocol.response.protocol), "recording")
        self.assertEqual(protocol.transport.streamID, 5)

    def test_allNotOffered(self) -> None:
        """Every protocol answered 501: UpgradeFailed with the last answer's status, headers and body."""
        pair = Pair(EchoUpgrade())
        failure = self.failureResultOf(pair.upgrade(["nope", "nada"]), UpgradeFailed)
        self.assertEqual(failure.value.status, 501)
        self.assertTrue(failure.value.body)
        self.assertIsNotNone(failure.value.getHeader(b"content-type"))
        self.assertIn("nada", str(failure.value))

    def test_refusalStops(self) -> None:
        """A plugin's own refusal (403) is final: the next protocol is not tried."""
        echo = Recording()
        refuser = Recording(Refuse(403, ((b"X-Why", b"policy"),), b"no\n"))
        refuser.name = "refuser"
        pair = Pair(refuser, echo)
        failure = self.failureResultOf(pair.upgrade(["refuser", "recording"]), UpgradeFailed)
        self.assertEqual((failure.value.status, failure.value.body), (403, b"no\n"))
        self.assertEqual(failure.value.getHeader(b"x-why"), b"policy")
        self.assertEqual(echo.requests, [])

    def test_mappingFactory(self) -> None:
        """A mapping from the chosen name to a factory, as for HTTP/1.1."""
        pair = Pair(EchoUpgrade())
        protocol = self.successResultOf(
            pair.upgrade(["nope", "echo"], {"nope": RecordingProtocol, "echo": HalfClosing})
        )
        self.assertIsInstance(protocol, HalfClosing)

    def test_factoryFails(self) -> None:
        """A factory that raises fails the upgrade with its error, and resets the stream."""
        plugin = Recording()
        pair = Pair(plugin)

        def broken(response: UpgradeResponse) -> Any:
            raise ValueError("broken factory")

        self.failureResultOf(pair.upgrade(["recording"], broken), ValueError)
        self.assertTrue(plugin.protocols[0].lostReason.check(ConnectionLost))

    def test_manyStreams(self) -> None:
        """Several upgrades at once on the one connection, each with its own bytes."""
        pair = Pair(EchoUpgrade())
        results = [pair.connection.upgrade(["echo"], Collector) for _ in range(5)]
        pair.flush()
        protocols = [self.successResultOf(d) for d in results]
        self.assertEqual(len({p.transport.streamID for p in protocols}), 5)
        for index, protocol in enumerate(protocols):
            protocol.transport.write(b"stream %d" % index)
        pair.flush()
        self.assertEqual([bytes(p.data) for p in protocols], [b"stream %d" % i for i in range(5)])

    def test_timeout(self) -> None:
        """No answer in time: TimeoutError, the stream reset; the connection serves on."""
        plugin = Recording(decision=Deferred())
        pair = Pair(plugin, EchoUpgrade())
        d = pair.upgrade(["recording"], timeout=5)
        self.assertNoResult(d)
        pair.clock.advance(5)
        pair.flush()
        self.failureResultOf(d, TimeoutError)
        self.successResultOf(pair.upgrade(["echo"]))

    def test_afterClose(self) -> None:
        """upgrade on a closed connection fails at once."""
        pair = Pair(EchoUpgrade())
        pair.connection.close()
        pair.flush()
        self.failureResultOf(pair.connection.upgrade(["echo"], Collector), UpgradeFailed)

    def test_badOffer(self) -> None:
        """An empty offer is the caller's mistake."""
        pair = Pair(EchoUpgrade())
        self.assertRaises(ValueError, pair.connection.upgrade, [], Collector)


class StreamTests(SynchronousTestCase):
    """The stream as a transport: ends, resets, and flow control both ways."""

    def switched(self, factory: Any = Collector, build: Any = RecordingProtocol) -> tuple[Pair, Any, Any]:
        """A pair with one stream switched: the pair, the server's plugin, the client protocol."""
        plugin = Recording(build=build)
        pair = Pair(plugin, EchoUpgrade())
        protocol = self.successResultOf(pair.upgrade(["recording"], factory))
        return pair, plugin, protocol

    def test_loseConnection(self) -> None:
        """loseConnection: END_STREAM after the bytes; the server ends too; connectionLost(ConnectionDone)."""
        pair, plugin, protocol = self.switched()
        protocol.transport.write(b"last words")
        protocol.transport.loseConnection()
        pair.flush()
        self.assertEqual(bytes(plugin.protocols[0].data), b"last words")
        self.assertTrue(protocol.lostReason.check(ConnectionDone))
        self.assertTrue(plugin.protocols[0].lostReason.check(ConnectionDone))

    def test_loseConnectionWaitsForServer(self) -> None:
        """After our END_STREAM a half-closing server may still write; the end comes with its END_STREAM."""
        pair = Pair(EchoUpgrade())
        protocol = self.successResultOf(pair.upgrade(["echo"], HalfClosing))
        protocol.transport.write(b"x" * 100_000)
        protocol.transport.loseConnection()
        pair.flush()
        self.assertEqual(len(protocol.data), 100_000)
        self.assertTrue(protocol.lostReason.check(ConnectionDone))

    def test_loseWriteConnection(self) -> None:
        """loseWriteConnection: END_STREAM, writeConnectionLost; reading goes on until the server ends."""
        pair, plugin, protocol = self.switched(HalfClosing, build=HalfClosing)
        protocol.transport.loseWriteConnection()
        pair.flush()
        self.assertTrue(plugin.protocols[0].readLost)
        self.assertTrue(protocol.writeLost)
        self.assertIsNone(protocol.lostReason)
        serverStream(plugin).write(b"after")
        serverStream(plugin).loseConnection()
        pair.flush()
        self.assertEqual((bytes(protocol.data), protocol.readLost), (b"after", True))
        self.assertTrue(protocol.lostReason.check(ConnectionDone))

    def test_networkBackpressure(self) -> None:
        """While the network transport pauses the connection, DATA waits (producers paused), then goes."""
        pair, plugin, protocol = self.switched()
        producer = RecordingProducer()
        protocol.transport.registerProducer(producer, True)
        pair.connection.pauseProducing()
        protocol.transport.write(b"held")
        pair.flush()
        self.assertEqual((bytes(plugin.protocols[0].data), producer.calls), (b"", ["pause"]))
        pair.connection.resumeProducing()
        pair.flush()
        self.assertEqual((bytes(plugin.protocols[0].data), producer.calls), (b"held", ["pause", "resume"]))

    def test_serverEndsHalfClose(self) -> None:
        """The server's END_STREAM is readConnectionLost for a half-closeable protocol."""
        pair, plugin, protocol = self.switched(HalfClosing)
        serverStream(plugin).loseConnection()
        pair.flush()
        self.assertTrue(protocol.readLost)
        self.assertTrue(protocol.lostReason.check(ConnectionDone))

    def test_serverEnds(self) -> None:
        """The server's END_STREAM ends a protocol that cannot half-close: ConnectionDone."""
        pair, plugin, protocol = self.switched()
        serverStream(plugin).write(b"bye")
        serverStream(plugin).loseConnection()
        pair.flush()
        self.assertEqual(bytes(protocol.data), b"bye")
        self.assertTrue(protocol.lostReason.check(ConnectionDone))

    def test_serverResets(self) -> None:
        """A server reset is connectionLost(ConnectionLost); the other streams go on."""
        pair, plugin, protocol = self.switched()
        other = self.successResultOf(pair.upgrade(["echo"]))
        serverStream(plugin).abortConnection()
        pair.flush()
        self.assertTrue(protocol.lostReason.check(ConnectionLost))
        self.assertFalse(protocol.lostReason.check(ConnectionDone))
        other.transport.write(b"still here")
        pair.flush()
        self.assertEqual(bytes(other.data), b"still here")

    def test_abort(self) -> None:
        """abortConnection resets the stream (CANCEL): both sides lose it at once."""
        pair, plugin, protocol = self.switched()
        protocol.transport.abortConnection()
        pair.flush()
        self.assertTrue(protocol.lostReason.check(ConnectionAborted))
        self.assertTrue(plugin.protocols[0].lostReason.check(ConnectionLost))

    def test_addresses(self) -> None:
        """getPeer and getHost are the connection's."""
        pair, _, protocol = self.switched()
        transport = pair.memory.clientTransport
        self.assertEqual(protocol.transport.getPeer(), transport.getPeer())
        self.assertEqual(protocol.transport.getHost(), transport.getHost())

    def test_writeWaitsForWindow(self) -> None:
        """Past the server's window writes are buffered and the producer paused, until the window reopens."""
        pair, plugin, protocol = self.switched()
        server = plugin.protocols[0]
        producer = RecordingProducer()
        protocol.transport.registerProducer(producer, True)
        server.transport.pauseProducing()
        protocol.transport.write(b"y" * MiB)
        pair.flush()
        self.assertEqual(producer.calls, ["pause"])
        self.assertLess(len(server.data), MiB)
        server.transport.resumeProducing()
        pair.flush()
        self.assertEqual(bytes(server.data), b"y" * MiB)
        self.assertEqual(producer.calls, ["pause", "resume"])

    def test_pausedReaderWithholdsWindow(self) -> None:
        """A paused protocol is given nothing and no window goes back; on resume, everything, in order."""
        pair, plugin, protocol = self.switched()
        protocol.transport.pauseProducing()
        before = pair.connection.received
        payload = bytes(range(256)) * 800  # 200 KiB, three times the initial window
        serverStream(plugin).write(payload)
        pair.flush()
        self.assertEqual(bytes(protocol.data), b"")
        self.assertLess(pair.connection.received - before, 70_000)
        protocol.transport.resumeProducing()
        pair.flush()
        self.assertEqual(bytes(protocol.data), payload)

    def test_producerStoppedAtEnd(self) -> None:
        """A producer still registered when the stream ends is stopped."""
        pair, plugin, protocol = self.switched()
        producer = RecordingProducer()
        protocol.transport.registerProducer(producer, True)
        serverStream(plugin).abortConnection()
        pair.flush()
        self.assertEqual(producer.calls, ["stop"])

    def test_largeEcho(self) -> None:
        """1 MiB through the echo, both windows opening and closing on the way: intact."""
        pair = Pair(EchoUpgrade())
        protocol = self.successResultOf(pair.upgrade(["echo"]))
        payload = bytes(range(251)) * (MiB // 251 + 1)
        protocol.transport.write(payload)
        pair.flush()
        self.assertEqual(bytes(protocol.data), payload)


class ConnectionEndTests(SynchronousTestCase):
    """close(), the server's GOAWAY, and the connection's loss end every stream."""

    def test_close(self) -> None:
        """close sends GOAWAY and closes: the streams end (ConnectionDone), the pending upgrades fail."""
        plugin = Recording(decision=Deferred())
        pair = Pair(plugin, EchoUpgrade())
        protocol = self.successResultOf(pair.upgrade(["echo"]))
        pending = pair.upgrade(["recording"])
        closed = pair.connection.close()
        pair.flush()
        self.successResultOf(closed)
        self.assertTrue(protocol.lostReason.check(ConnectionDone))
        self.failureResultOf(pending, UpgradeFailed)
        self.assertTrue(pair.memory.serverTransport.disconnected)

    def test_serverGoAway(self) -> None:
        """A server GOAWAY (its drain) fails the pending upgrades and loses the streams."""
        waiting = Recording(decision=Deferred())
        waiting.name = "waiting"
        plugin = Recording()
        pair = Pair(plugin, waiting)
        protocol = self.successResultOf(pair.upgrade(["recording"]))
        pending = pair.upgrade(["waiting"])
        pair.memory.server._channel.drain()
        pair.flush()
        failure = self.failureResultOf(pending, UpgradeFailed)
        self.assertIn("GOAWAY", str(failure.value))
        self.assertTrue(protocol.lostReason.check(ConnectionLost))
        self.assertIn("GOAWAY", protocol.lostReason.getErrorMessage())
        self.failureResultOf(pair.connection.upgrade(["recording"], Collector), UpgradeFailed)

    def test_h2PrivateNames(self) -> None:
        """The one h2 private name the client overrides (to hear a GOAWAY followed by more frames) exists."""
        import h2.connection

        self.assertTrue(callable(getattr(h2.connection.H2Connection, "_receive_frame", None)))
        state = h2.connection.H2Connection().state_machine.state
        self.assertIsInstance(state, h2.connection.ConnectionState)

    def test_lost(self) -> None:
        """The network connection lost: streams get ConnectionLost, pending upgrades fail."""
        plugin = Recording(decision=Deferred())
        pair = Pair(plugin, EchoUpgrade())
        protocol = self.successResultOf(pair.upgrade(["echo"]))
        pending = pair.upgrade(["recording"])
        pair.memory.serverTransport.loseConnection()
        pair.flush()
        self.assertTrue(protocol.lostReason.check(ConnectionLost))
        self.failureResultOf(pending, UpgradeFailed)


class Endpoints:
    """Client endpoints to 127.0.0.1."""

    @staticmethod
    def tcp(port: int) -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)


class RealSocketTests(TestCase):
    """An in-code L{UpgradeSite} on 127.0.0.1: prior knowledge over TCP, ALPN h2 over TLS."""

    def site(self) -> UpgradeSite:
        return UpgradeSite(DirectoryResource(), [EchoUpgrade(), Recording()], extendedConnect=True)

    @inlineCallbacks
    def test_priorKnowledge(self) -> Any:
        """connectHTTP2 on a TCP endpoint; two echo streams and a 501 fallback on the one connection."""
        port = listen(self, self.site())
        connection = yield withTimeout(connectHTTP2(Endpoints.tcp(port)))
        self.addCleanup(connection.close)
        first, second = yield withTimeout(
            gatherResults(
                [connection.upgrade(["echo"], Collector), connection.upgrade(["nope", "echo"], Collector)]
            )
        )
        first.transport.write(b"one")
        second.transport.write(b"two")
        self.assertEqual((yield first.waitForBytes(3)), b"one")
        self.assertEqual((yield second.waitForBytes(3)), b"two")
        self.assertEqual(second.transport.getPeer().port, port)

    @inlineCallbacks
    def test_tls(self) -> Any:
        """Over TLS with ALPN h2: upgradeHTTP2 switches a secure stream; the connection ends with it."""
        pair = TLSPair()
        site = self.site()
        port = listen(self, site, pair.serverOptions([b"h2", b"http/1.1"]))
        protocol = yield withTimeout(
            upgradeHTTP2(pair.clientEndpoint(port, [b"h2"]), ["recording"], Collector)
        )
        [plugin] = [p for p in site.protocols if isinstance(p, Recording)]
        [request] = plugin.requests
        self.assertTrue(request.secure)
        serverProtocol = plugin.protocols[0]
        protocol.transport.write(b"secret")
        yield wait(lambda: bytes(serverProtocol.data) == b"secret")
        protocol.transport.loseConnection()
        yield withTimeout(protocol.lost)
        self.assertTrue(protocol.lostReason.check(ConnectionDone))

    @inlineCallbacks
    def test_tlsWithoutALPN(self) -> Any:
        """TLS options that do not offer h2: ExtendedConnectUnavailable naming ALPN."""
        pair = TLSPair()
        port = listen(self, self.site(), pair.serverOptions([b"h2", b"http/1.1"]))
        d = connectHTTP2(pair.clientEndpoint(port))
        failure = yield withTimeout(self.assertFailure(d, ExtendedConnectUnavailable))
        self.assertIn("ALPN", str(failure))

    @inlineCallbacks
    def test_tlsServerChoosesHTTP1(self) -> Any:
        """A TLS server that chooses http/1.1 by ALPN: ExtendedConnectUnavailable, and the client hangs up."""
        pair = TLSPair()
        # Not an HTTP site: those choose ALPN themselves (IProtocolNegotiationFactory).
        port = listen(self, Factory.forProtocol(Protocol), pair.serverOptions([b"http/1.1"]))
        d = connectHTTP2(pair.clientEndpoint(port, [b"h2", b"http/1.1"]))
        failure = yield withTimeout(self.assertFailure(d, ExtendedConnectUnavailable))
        self.assertIn("http/1.1", str(failure))


class DaemonTests(TestCase):
    """A real C{twistd txupgrade} (extended CONNECT is on by default), by prior knowledge."""

    @inlineCallbacks
    def connect(self, *arguments: str) -> Any:
        daemon = yield startDaemon(self, ["--listen", LOCAL, *arguments])
        connection = yield withTimeout(connectHTTP2(Endpoints.tcp(daemon.ports[0])))
        self.addCleanup(connection.close)
        return daemon, connection

    @inlineCallbacks
    def test_echoStreamsAndFallback(self) -> Any:
        """Echo on several streams at once, an unknown protocol falling back, and one refused outright."""
        daemon, connection = yield self.connect()
        protocols = yield withTimeout(
            gatherResults([connection.upgrade(["nope", "echo"], Collector) for _ in range(4)])
        )
        for index, protocol in enumerate(protocols):
            protocol.transport.write(b"stream %d" % index)
        echoed = yield withTimeout(gatherResults([p.waitForBytes(8) for p in protocols]))
        self.assertEqual(echoed, [b"stream %d" % i for i in range(4)])
        error = yield withTimeout(self.assertFailure(connection.upgrade(["nope"], Collector), UpgradeFailed))
        self.assertEqual(error.status, 501)
        for protocol in protocols:
            protocol.transport.loseConnection()
        yield withTimeout(gatherResults([p.lost for p in protocols]))
        self.assertTrue(all(p.lostReason.check(ConnectionDone) for p in protocols))
        # The access log (written in batches) shows the switches as CONNECTs answered 200.
        yield wait(lambda: b'"CONNECT / HTTP/2" 200' in daemon.output)

    @inlineCallbacks
    def test_largeEcho(self) -> Any:
        """1 MiB written at once comes back intact through the daemon's echo (flow control both ways)."""
        _, connection = yield self.connect()
        protocol = yield withTimeout(connection.upgrade(["echo"], Collector))
        payload = bytes(range(251)) * (MiB // 251 + 1)
        protocol.transport.write(payload)
        echoed = yield protocol.waitForBytes(len(payload))
        self.assertEqual(echoed, payload)

    @inlineCallbacks
    def test_webSocket(self) -> Any:
        """WebSocket (RFC 8441 §5) at /ws: a 200 without an accept key, a frame echoed, close answered."""
        _, connection = yield self.connect()
        protocol = yield withTimeout(
            connection.upgrade(
                ["websocket"],
                Collector,
                target=b"/ws",
                headers=[(b"sec-websocket-version", b"13"), (b"origin", b"http://localhost")],
            )
        )
        self.assertIsNone(protocol.response.getHeader(b"sec-websocket-accept"))
        protocol.transport.write(maskedFrame(0x1, b"over a stream"))
        echoed = yield protocol.waitForBytes(15)
        self.assertEqual(echoed, b"\x81\x0dover a stream")
        protocol.transport.write(maskedFrame(0x8, b"\x03\xe8"))
        yield withTimeout(protocol.lost)
        self.assertTrue(bytes(protocol.data).endswith(b"\x88\x02\x03\xe8"))
        self.assertTrue(protocol.lostReason.check(ConnectionDone))

    @inlineCallbacks
    def test_withoutExtendedConnect(self) -> Any:
        """A daemon that does not offer extended CONNECT: a clear ExtendedConnectUnavailable."""
        daemon = yield startDaemon(self, ["--listen", LOCAL, "--no-extended-connect"])
        d = upgradeHTTP2(Endpoints.tcp(daemon.ports[0]), ["echo"], Collector)
        failure = yield withTimeout(self.assertFailure(d, ExtendedConnectUnavailable))
        self.assertIn("SETTINGS_ENABLE_CONNECT_PROTOCOL", str(failure))
