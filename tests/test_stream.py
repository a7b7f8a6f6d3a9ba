"""
The raw-stream handoff (L{txupgrade.protocols.stream}): in memory through the real
channel (whole and one byte at a time), and over real sockets for half-close
and backpressure.
"""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.support.http import parseResponses, upgrade
from tests.support.net import (
    RawClient,
    RecordingProducer,
    TLSPair,
    connectClient,
    listen,
    reactor,
    wait,
    withTimeout,
)
from txupgrade import Decline, IUpgradeProtocol, Refuse, UpgradeSite
from txupgrade.protocols.stream import StreamUpgrade
from txupgrade.resource import DirectoryResource
from txupgrade.testing import MemoryConnection, upgradeRequest

EXAMPLES = pathlib.Path(__file__).parent.parent / "docs" / "examples"


def loadExample(name: str) -> Any:
    """Import C{docs/examples/NAME.py} as a module."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Recorder(Protocol):
    """Keeps what it saw: the request at connectionMade, data, the close."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def connectionMade(self) -> None:
        self.events.append(("made", self.upgradeRequest.target))  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.events.append(("data", data))
        if data == b"boom":
            raise ZeroDivisionError("the protocol's bug")

    def connectionLost(self, reason: Any = None) -> None:
        self.events.append(("lost", reason.type))


class ReverseExampleTests(SynchronousTestCase):
    """The third-party C{reverse/1} plugin of docs/examples/reverse.py."""

    def test_fifteenLines(self) -> None:
        """The whole plugin module fits in 15 lines."""
        self.assertLessEqual(len((EXAMPLES / "reverse.py").read_text().splitlines()), 15)

    def test_provides(self) -> None:
        """The plugin object provides IUpgradeProtocol."""
        self.assertTrue(verifyObject(IUpgradeProtocol, loadExample("reverse").reverse))

    def test_pathThenReversedLines(self) -> None:
        """It answers the request's path, then reverses lines, one byte at a time too."""
        for chunk in (None, 1):
            site = UpgradeSite(DirectoryResource(), [loadExample("reverse").reverse], reactor=Clock())
            conn = MemoryConnection(site, chunkSize=chunk)
            conn.send(upgradeRequest(["reverse/1"], b"/some/path?q=1") + b"abc\r\n")
            conn.send(b"hello\r\n")
            responses, rest = parseResponses(conn.received)
            upgrades = [(r.status, r.header(b"upgrade")) for r in responses]
            self.assertEqual(upgrades, [(b"HTTP/1.1 101 Switching Protocols", [b"reverse/1"])])
            self.assertEqual(rest, b"/some/path\r\ncba\r\nolleh\r\n")
            conn.close()

    def test_otherVersion(self) -> None:
        """C{reverse/2} is not served."""
        site = UpgradeSite(DirectoryResource(), [loadExample("reverse").reverse], reactor=Clock())
        conn = MemoryConnection(site)
        conn.send(upgradeRequest(["reverse/2"]))
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 404 "))
        conn.close()


class StreamUpgradeTests(SynchronousTestCase):
    """L{StreamUpgrade} through the real channel, in memory."""

    def connect(self, upgrade: StreamUpgrade, chunkSize: int | None = None) -> MemoryConnection:
        site = UpgradeSite(DirectoryResource(), [upgrade], reactor=Clock())
        return MemoryConnection(site, chunkSize=chunkSize)

    def test_provides(self) -> None:
        """A StreamUpgrade provides IUpgradeProtocol."""
        self.assertTrue(verifyObject(IUpgradeProtocol, StreamUpgrade("x", Factory.forProtocol(Protocol))))

    def test_notAFactory(self) -> None:
        """Anything but an IProtocolFactory is a TypeError at once."""
        self.assertRaises(TypeError, StreamUpgrade, "x", Protocol)

    def test_requestBeforeConnectionMade(self) -> None:
        """The protocol sees C{upgradeRequest} in connectionMade, then the trailing bytes."""
        made: list[Recorder] = []

        def build() -> Recorder:
            made.append(Recorder())
            return made[-1]

        factory = Factory.forProtocol(Recorder)
        factory.buildProtocol = lambda addr: build()  # type: ignore[method-assign]
        conn = self.connect(StreamUpgrade("rec", factory))
        conn.send(upgradeRequest(["rec"], b"/t?x") + b"tail")
        self.assertEqual(made[0].events, [("made", b"/t?x"), ("data", b"tail")])
        conn.close()
        self.assertEqual(made[0].events[-1][0], "lost")
        self.assertEqual(len(made[0].events), 3)

    def test_checkDecisions(self) -> None:
        """The request check can decline (plain answer), refuse, or say False."""
        cases = [
            (lambda r: Decline("no"), b"HTTP/1.1 404 "),
            (lambda r: False, b"HTTP/1.1 404 "),
            (lambda r: Refuse(403, body=b"nope\n"), b"HTTP/1.1 403 "),
            (lambda r: "nonsense", b"HTTP/1.1 500 "),
            (lambda r: None, b"HTTP/1.1 101 "),
            (lambda r: True, b"HTTP/1.1 101 "),
        ]
        for check, status in cases:
            conn = self.connect(StreamUpgrade("x", Factory.forProtocol(Protocol), check=check))
            conn.send(upgradeRequest(["x"]))
            self.assertTrue(conn.received.startswith(status), (status, conn.received[:30]))
            conn.close()
        self.flushLoggedErrors(TypeError)

    def test_factoryReturnsNone(self) -> None:
        """A factory that refuses the connection (None) is a 500, HTTP goes on."""
        factory = Factory()
        factory.buildProtocol = lambda addr: None  # type: ignore[method-assign]
        conn = self.connect(StreamUpgrade("x", factory))
        conn.send(upgradeRequest(["x"]))
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 500 "))
        self.flushLoggedErrors()
        conn.close()

    def test_raisingProtocolClosedAndLogged(self) -> None:
        """An exception in dataReceived is logged, the connection closed, connectionLost once."""
        made: list[Recorder] = []
        factory = Factory()
        factory.buildProtocol = lambda addr: made.append(Recorder()) or made[-1]  # type: ignore[method-assign]
        conn = self.connect(StreamUpgrade("rec", factory))
        conn.send(upgradeRequest(["rec"]) + b"boom")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertTrue(conn.serverTransport.disconnected)
        self.assertEqual([e[0] for e in made[0].events], ["made", "data", "lost"])

    def test_raisingConnectionMade(self) -> None:
        """An exception in connectionMade closes only that connection, logged."""

        class Bad(Protocol):
            def connectionMade(self) -> None:
                raise ValueError("bad start")

        conn = self.connect(StreamUpgrade("bad", Factory.forProtocol(Bad)))
        conn.send(upgradeRequest(["bad"]))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 101 "))
        self.assertTrue(conn.serverTransport.disconnected)


class ProducerTests(SynchronousTestCase):
    """Producer registration after a stream switch (on a L{StringTransport})."""

    def switch(self, protocol: type[Protocol]) -> tuple[StringTransport, list[Protocol]]:
        made: list[Protocol] = []
        factory = Factory()
        factory.buildProtocol = lambda addr: made.append(protocol()) or made[-1]  # type: ignore[method-assign]
        site = UpgradeSite(DirectoryResource(), [StreamUpgrade("s", factory)], reactor=Clock())
        server = site.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(upgradeRequest(["s"]))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "))
        return transport, made

    def test_fullBufferPausesReading(self) -> None:
        """The default producer pauses the transport's reading, and resumes it."""
        transport, _ = self.switch(Protocol)
        self.assertIsNotNone(transport.producer)
        self.assertTrue(transport.streaming)
        transport.producer.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        transport.producer.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_ownProducer(self) -> None:
        """A protocol's own registerProducer works, replacing the default, and resumes reading."""

        class Own(Protocol, RecordingProducer):
            def connectionMade(self) -> None:
                self.transport.registerProducer(self, True)  # type: ignore[union-attr]

        transport, made = self.switch(Own)
        self.assertIs(transport.producer, made[0])
        made[0].transport.unregisterProducer()  # type: ignore[union-attr]
        self.assertIsNone(transport.producer)

    def test_ownProducerWhilePaused(self) -> None:
        """Registering its own producer while reading is paused resumes reading."""
        transport, made = self.switch(Protocol)
        transport.producer.pauseProducing()
        own = Protocol()
        made[0].transport.registerProducer(own, True)  # type: ignore[union-attr]
        self.assertIs(transport.producer, own)
        self.assertEqual(transport.producerState, "producing")
        self.assertRaises(RuntimeError, made[0].transport.registerProducer, own, True)  # type: ignore[union-attr]

    def test_loseConnectionUnregisters(self) -> None:
        """loseConnection drops the default producer first, so the close is not held up."""
        transport, made = self.switch(Protocol)
        made[0].transport.loseConnection()  # type: ignore[union-attr]
        self.assertIsNone(transport.producer)
        self.assertTrue(transport.disconnecting)


class Collect(Protocol):
    """Counts what it reads and writes back what it reads."""

    instances: list[Collect] = []

    def __init__(self) -> None:
        self.received = 0
        Collect.instances.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.transport.write(data)  # type: ignore[union-attr]


class NonReading(RawClient):
    """
    A client that stops reading right after the 101 and writes C{total}
    bytes; after the head it only counts what it reads (in C{echoed}).
    """

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self.echoed = 0
        self.done: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self.total == 0:
            self.echoed += data.count(b"x")
            if self.done is not None and self.echoed >= self.expected:
                self.done, done = None, self.done
                done.callback(None)
            return
        super().dataReceived(data)
        if self.data.startswith(b"HTTP/1.1 101 ") and b"\r\n\r\n" in self.data:
            self.echoed = self.data.partition(b"\r\n\r\n")[2].count(b"x")
            self.transport.pauseProducing()  # type: ignore[union-attr]
            total, self.total = self.total, 0
            chunk = b"x" * 65536
            for _ in range(total // len(chunk)):
                self.transport.write(chunk)  # type: ignore[union-attr]


class StreamSocketTests(TestCase):
    """Half-close and backpressure over real sockets."""

    @inlineCallbacks
    def test_halfCloseReachesProtocol(self) -> None:
        """The Docker-style example: end of input reaches readConnectionLost; it answers and closes."""
        tcp = loadExample("tcp_stream").tcp
        port = listen(self, UpgradeSite(DirectoryResource(), [tcp]))

        @implementer(IHalfCloseableProtocol)
        class HalfClient(RawClient):
            def readConnectionLost(self) -> None:
                self.transport.loseConnection()  # type: ignore[union-attr]

            def writeConnectionLost(self) -> None:
                pass

        client = yield connectClient(self, port, client=HalfClient())
        request = upgrade(b"tcp", b"/containers/c0ffee/attach").replace(b"GET", b"POST", 1)
        client.send(request[:-2] + b"Content-Length: 0\r\n\r\nstdin-1")
        yield client.waitForSuffix(b"stdin-1")
        self.assertIn(b"\r\nContent-Type: application/vnd.docker.raw-stream\r\n", client.data)
        client.transport.loseWriteConnection()
        data = yield client.waitForClose()
        self.assertTrue(data.endswith(b"stdin-1[container c0ffee exited]\n"), data[-80:])

    @inlineCallbacks
    def test_protocolHalfClosesItsSide(self) -> None:
        """The protocol's loseWriteConnection ends our side; it still reads the client after that."""
        got: list[bytes] = []

        @implementer(IHalfCloseableProtocol)
        class Sender(Protocol):
            def connectionMade(self) -> None:
                self.transport.write(b"all of it")  # type: ignore[union-attr]
                self.transport.loseWriteConnection()  # type: ignore[attr-defined, union-attr]

            def dataReceived(self, data: bytes) -> None:
                got.append(data)

            def readConnectionLost(self) -> None:
                self.transport.loseConnection()  # type: ignore[union-attr]

            def writeConnectionLost(self) -> None:
                got.append(b"<write side closed>")

        @implementer(IHalfCloseableProtocol)
        class Reader(RawClient):
            eof = False

            def readConnectionLost(self) -> None:
                self.eof = True
                self.transport.write(b"thanks")  # type: ignore[union-attr]
                self.transport.loseWriteConnection()  # type: ignore[union-attr]

            def writeConnectionLost(self) -> None:
                # Both halves are shut: only now does Twisted end the connection.
                self.transport.loseConnection()  # type: ignore[union-attr]

        port = listen(
            self, UpgradeSite(DirectoryResource(), [StreamUpgrade("send", Factory.forProtocol(Sender))])
        )
        client = yield connectClient(self, port, client=Reader())
        client.send(upgrade(b"send"))
        data = yield client.waitForClose()
        self.assertTrue(data.endswith(b"\r\n\r\nall of it"), data[-40:])
        self.assertTrue(client.eof)
        yield wait(lambda: len(got) == 2)
        self.assertEqual(got, [b"<write side closed>", b"thanks"])

    @inlineCallbacks
    def test_overTLSListener(self) -> None:
        """Over an ssl: listener the stream works, and the protocol's close ends the TLS session."""

        class Once(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(data.upper())  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]

        pair = TLSPair()
        site = UpgradeSite(DirectoryResource(), [StreamUpgrade("once", Factory.forProtocol(Once))])
        port = listen(self, site, pair.serverOptions())
        client = yield connectClient(self, port, endpoint=pair.clientEndpoint(port))
        client.send(upgrade(b"once") + b"shout")
        data = yield client.waitForClose()
        self.assertTrue(data.startswith(b"HTTP/1.1 101 "), data[:40])
        self.assertTrue(data.endswith(b"\r\n\r\nSHOUT"), data[-40:])

    @inlineCallbacks
    def test_refusedPath(self) -> None:
        """The example refuses a path that is not an attach endpoint with 404; GET is declined."""
        port = listen(self, UpgradeSite(DirectoryResource(), [loadExample("tcp_stream").tcp]))
        client = yield connectClient(self, port)
        client.send(upgrade(b"tcp", b"/nope").replace(b"GET", b"POST", 1)[:-2] + b"Content-Length: 0\r\n\r\n")
        data = yield client.waitFor(lambda d: b"no such container endpoint\n" in d)
        self.assertTrue(data.startswith(b"HTTP/1.1 404 "))

    @inlineCallbacks
    def test_nonReadingClientBoundsMemory(self) -> None:
        """A client that never reads stops the server reading; resuming delivers every byte."""
        Collect.instances = []
        total = 32 * 1024 * 1024
        port = listen(
            self, UpgradeSite(DirectoryResource(), [StreamUpgrade("echo-s", Factory.forProtocol(Collect))])
        )
        client = yield connectClient(self, port, client=NonReading(total))
        client.send(upgrade(b"echo-s"))
        yield client.waitFor(lambda d: b"\r\n\r\n" in d)
        previous = -1
        for _ in range(100):
            yield deferLater(reactor, 0.05, lambda: None)
            received = Collect.instances[0].received if Collect.instances else 0
            if received == previous:
                break
            previous = received
        server = Collect.instances[0]
        # Kernel buffers on both sides hold some megabytes; the rest stays unread.
        self.assertLess(server.received, total // 2)
        self.assertGreater(server.received, 0)
        client.expected = total
        client.done = Deferred()
        client.transport.resumeProducing()
        yield withTimeout(client.done, 60)
        self.assertEqual(server.received, total)
        self.assertEqual(client.echoed, total)
