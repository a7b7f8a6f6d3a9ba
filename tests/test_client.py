"""
L{txupgrade.client} over real sockets: against the built-ins (echo, raw
streams, AMP), against servers that answer something else, and against a
Node C{http} server's C{'upgrade'} event.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.defer import TimeoutError as DeferTimeoutError
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.protocols import amp
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.http import Hello, SimpleUpgrade
from tests.support.net import TIMEOUT, RawClient, listen, reactor, withTimeout
from tests.test_stream import loadExample
from txupgrade import Refuse, UpgradeRequiredResource, UpgradeSite
from txupgrade.client import UpgradeFailed, UpgradeResponse, upgrade
from txupgrade.protocols.echo import EchoUpgrade
from txupgrade.resource import DirectoryResource

NODE_DIR = os.path.join(os.path.dirname(__file__), "node")


def endpointFor(port: Any) -> TCP4ClientEndpoint:
    """A client endpoint for a listening port (or port number) on 127.0.0.1."""
    number = port if isinstance(port, int) else port.getHost().port
    return TCP4ClientEndpoint(reactor, "127.0.0.1", number, timeout=5)


def closeProtocol(protocol: Any) -> Deferred[Any]:
    """Abort C{protocol}'s connection; fire once it is closed (RawClient)."""
    if protocol.lostReason is None:
        protocol.transport.abortConnection()
    return protocol.waitForClose()


class FixedAnswer(Protocol):
    """A server that writes C{answer} once the request's head is in, then closes or not."""

    def __init__(self, answer: bytes, close: bool) -> None:
        self.answer = answer
        self.close = close
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and self.answer:
            self.transport.write(self.answer)  # type: ignore[union-attr]
            self.answer = b""
            if self.close:
                self.transport.loseConnection()  # type: ignore[union-attr]


class ClientTests(TestCase):
    """The client against txupgrade's own server."""

    def site(self) -> UpgradeSite:
        root = DirectoryResource()
        root.putChild(b"hello", Hello())
        root.putChild(b"only", UpgradeRequiredResource([SimpleUpgrade("special")]))
        protocols = [
            EchoUpgrade(),
            SimpleUpgrade("tagged"),
            SimpleUpgrade("refused", decision=lambda r: Refuse(403, ((b"X-Why", b"policy"),), b"no\n")),
            loadExample("amp_service").amp_,
            loadExample("reverse").reverse,
        ]
        return UpgradeSite(root, protocols)

    def connect(self, protocols: list[str], factory: Any = None, **kwargs: Any) -> Deferred[Any]:
        port = listen(self, self.site())
        built: list[RawClient] = []

        def build(response: UpgradeResponse) -> RawClient:
            client = RawClient()
            client.response = response  # type: ignore[attr-defined]
            built.append(client)
            self.addCleanup(closeProtocol, client)
            return client

        return withTimeout(upgrade(endpointFor(port), protocols, factory or build, **kwargs))

    @inlineCallbacks
    def test_echo(self) -> Any:
        """Echo switches; the client protocol gets the 101 and its bytes echoed."""
        client = yield self.connect(["nope", "echo"], host=b"127.0.0.1")
        self.assertEqual(str(client.response.protocol), "echo")
        self.assertEqual(client.response.getHeader(b"connection"), b"Upgrade")
        client.send(b"ping")
        data = yield client.waitForSuffix(b"ping")
        self.assertEqual(data, b"ping")

    @inlineCallbacks
    def test_bytesBehindThe101(self) -> Any:
        """What the server wrote right after the 101 reaches the client protocol first."""
        client = yield self.connect(["tagged"], host=b"127.0.0.1")
        data = yield client.waitForSuffix(b"[tagged]")
        self.assertEqual(data, b"[tagged]")

    @inlineCallbacks
    def test_reverseWithBody(self) -> Any:
        """The reverse/1 plugin through the client, with a POST body and extra headers."""
        client = yield self.connect(
            ["reverse/1"], target=b"/rev", method=b"POST", body=b"payload", headers=((b"X-A", b"1"),)
        )
        self.assertEqual(str(client.response.protocol), "reverse/1")
        client.send(b"abc\r\n")
        data = yield client.waitForSuffix(b"cba\r\n")
        self.assertEqual(data, b"/rev\r\ncba\r\n")

    @inlineCallbacks
    def test_amp(self) -> Any:
        """An AMP round trip through Upgrade: amp; the server sees the original request."""
        example = loadExample("amp_service")
        proto = yield self.connect(
            ["amp"], lambda response: amp.AMP(), headers=((b"X-Token", b"t1"),), target=b"/rpc"
        )
        self.addCleanup(proto.transport.loseConnection)
        result = yield withTimeout(proto.callRemote(example.Sum, a=20, b=22))
        self.assertEqual(result, {"total": 42})
        who = yield withTimeout(proto.callRemote(example.WhoAmI))
        self.assertEqual(who, {"path": "/rpc", "token": "t1"})

    @inlineCallbacks
    def test_mapping(self) -> Any:
        """A mapping picks the client protocol by the name the server chose."""
        chosen: list[str] = []

        def make(name: str) -> Any:
            def build(response: UpgradeResponse) -> RawClient:
                chosen.append(name)
                client = RawClient()
                self.addCleanup(closeProtocol, client)
                return client

            return build

        yield self.connect(["tagged", "echo"], {"echo": make("echo"), "tagged": make("tagged")})
        self.assertEqual(chosen, ["tagged"])

    @inlineCallbacks
    def assertFails(self, d: Deferred[Any], status: int | None) -> Any:
        try:
            yield d
        except UpgradeFailed as error:
            self.assertEqual(error.status, status)
            return error
        self.fail("no UpgradeFailed")

    @inlineCallbacks
    def test_plainAnswer(self) -> Any:
        """No protocol matches: the 200 is an UpgradeFailed with status, headers and body."""
        error = yield self.assertFails(self.connect(["nope"], target=b"/hello"), 200)
        self.assertEqual(error.body, b"hello /hello")
        self.assertIn(b"echo", error.getHeader(b"upgrade"))
        self.assertIn("200", str(error))

    @inlineCallbacks
    def test_426(self) -> Any:
        """A path that needs another protocol: 426 naming it."""
        error = yield self.assertFails(self.connect(["nope"], target=b"/only"), 426)
        self.assertEqual(error.getHeader(b"upgrade"), b"special")

    @inlineCallbacks
    def test_refused(self) -> Any:
        """A plugin's refusal: its status, headers and body."""
        error = yield self.assertFails(self.connect(["refused"]), 403)
        self.assertEqual(error.getHeader(b"x-why"), b"policy")
        self.assertEqual(error.body, b"no\n")


class OddServerTests(TestCase):
    """The client against servers that answer something other than a valid 101."""

    def serve(self, answer: bytes, close: bool = True) -> TCP4ClientEndpoint:
        factory = Factory.forProtocol(lambda: FixedAnswer(answer, close))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return endpointFor(port)

    @inlineCallbacks
    def fails(self, answer: bytes, status: int | None, close: bool = True, **kwargs: Any) -> Any:
        built: list[Any] = []
        d = upgrade(self.serve(answer, close), ["echo"], lambda r: built.append(r) or Protocol(), **kwargs)
        try:
            yield withTimeout(d)
        except UpgradeFailed as error:
            self.assertEqual(error.status, status)
            self.assertEqual(built, [])
            return error
        self.fail("no UpgradeFailed")

    def test_garbage(self) -> Any:
        """A response that is not HTTP: UpgradeFailed without a status."""
        return self.fails(b"garbage\r\n\r\n", None)

    def test_closedEarly(self) -> Any:
        """A close before any response: UpgradeFailed without a status."""
        return self.fails(b"HTTP/1.1 1", None)

    @inlineCallbacks
    def test_notOffered(self) -> Any:
        """A 101 naming a protocol the client did not offer is rejected."""
        error = yield self.fails(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\nConnection: Upgrade\r\n\r\n", 101, False
        )
        self.assertIn("not offered", str(error))

    @inlineCallbacks
    def test_noConnectionUpgrade(self) -> Any:
        """A 101 without Connection: upgrade is rejected."""
        error = yield self.fails(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n\r\n", 101, False)
        self.assertIn("Connection", str(error))

    @inlineCallbacks
    def test_readUntilClose(self) -> Any:
        """A body delimited by the close is read whole."""
        error = yield self.fails(b"HTTP/1.1 503 Busy\r\nX-A: b\r\n\r\nlater", 503)
        self.assertEqual((error.body, error.getHeader(b"x-a")), (b"later", b"b"))

    @inlineCallbacks
    def test_refusedConnection(self) -> Any:
        """Nobody listening: the connection error itself, nothing left behind."""
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        number = port.getHost().port
        yield port.stopListening()
        with self.assertRaises(ConnectionRefusedError):
            yield withTimeout(upgrade(endpointFor(number), ["echo"], lambda r: Protocol()))

    @inlineCallbacks
    def test_timeout(self) -> Any:
        """A server that never answers: the Deferred fails at the timeout and the connection closes."""
        clock = Clock()
        servers: list[FixedAnswer] = []
        factory = Factory.forProtocol(lambda: servers.append(FixedAnswer(b"", False)) or servers[-1])
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        outcome: list[Any] = []
        upgrade(endpointFor(port), ["echo"], lambda r: Protocol(), timeout=5, reactor=clock).addBoth(
            outcome.append
        )
        for _ in range(250):
            if servers and b"\r\n\r\n" in servers[0].buffer:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(outcome, [])
        clock.advance(6)
        self.assertIsInstance(outcome[0].value, DeferTimeoutError)
        for _ in range(250):
            if servers[0].transport is None or not servers[0].transport.connected:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertFalse(servers[0].transport.connected)


class NodeServerTests(TestCase):
    """The client against a Node C{http} server's C{'upgrade'} event (tests/node/upgrade_server.js)."""

    timeout = 60

    @inlineCallbacks
    def startNode(self) -> Any:
        node = shutil.which("node")
        if node is None:
            if os.environ.get("CI"):
                raise AssertionError("node is not on PATH")
            raise SkipTest("node is not on PATH (.ci/install installs it)")

        class Server(ProcessProtocol):
            def __init__(self) -> None:
                self.out = b""
                self.port: Deferred[int] = Deferred()
                self.ended: Deferred[None] = Deferred()

            def outReceived(self, data: bytes) -> None:
                self.out += data
                if b"\n" in self.out and not self.port.called:
                    self.port.callback(int(self.out.split(b"\n", 1)[0]))

            def processEnded(self, reason: Any) -> None:
                if not self.port.called:
                    self.port.errback(reason)
                self.ended.callback(None)

        server = Server()
        process = reactor.spawnProcess(
            server, node, [node, "upgrade_server.js"], env=os.environ, path=NODE_DIR
        )

        def stop() -> Deferred[None]:
            if process.pid is not None:
                process.closeStdin()
            return withTimeout(server.ended)

        self.addCleanup(stop)
        port = yield withTimeout(server.port, TIMEOUT)
        return port

    @inlineCallbacks
    def test_echo(self) -> Any:
        """Node's 101 is accepted; its bytes after the 101 and the echo reach the client protocol."""
        port = yield self.startNode()
        clients: list[RawClient] = []

        def build(response: UpgradeResponse) -> RawClient:
            clients.append(RawClient())
            self.addCleanup(closeProtocol, clients[-1])
            return clients[-1]

        client = yield withTimeout(upgrade(endpointFor(port), ["h2c", "echo"], build, target=b"/from-py"))
        client.send(b"hello node")
        data = yield client.waitForSuffix(b"hello node")
        self.assertEqual(data, b"[node /from-py]hello node")

    @inlineCallbacks
    def test_refusedOffer(self) -> Any:
        """Node's 400 for an offer it cannot take is an UpgradeFailed with the status."""
        port = yield self.startNode()
        try:
            yield withTimeout(upgrade(endpointFor(port), ["websocket"], lambda r: Protocol()))
        except UpgradeFailed as error:
            self.assertEqual(error.status, 400)
        else:
            self.fail("no UpgradeFailed")
