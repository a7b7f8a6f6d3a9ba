"""
Socket helpers for the end-to-end tests: real listeners on 127.0.0.1, a raw
client that keeps every byte, and bounded waits.

Every wait here is a L{Deferred} with a timeout, and every listener and
connection a test opens is closed by the test's cleanups, on both sides, so
trial's dirty-reactor check passes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import reactor as _globalReactor
from twisted.internet import ssl
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IListeningPort, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from zope.interface import implementer

from txupgrade.channel import UpgradeSite
from txupgrade.interfaces import IUpgradeProtocol
from txupgrade.negotiation import Accept, Decision, UpgradeRequest

reactor: Any = _globalReactor

#: The bound, in seconds, of any single wait in these tests.
TIMEOUT = 10.0

# Only the exact shapes twisted.web writes, so that no other byte is dropped.
_VOLATILE = re.compile(
    rb"^(?:Date: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT"
    rb"|Server: TwistedWeb/[^\r\n]*)\r\n",
    re.MULTILINE,
)


def normalize(data: bytes) -> bytes:
    """C{data} without the C{Date} and C{Server} header lines twisted.web writes."""
    return _VOLATILE.sub(b"", data)


def request(
    method: bytes = b"GET",
    target: bytes = b"/",
    headers: Iterable[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """The raw bytes of one request (add C{Content-Length} yourself)."""
    lines = [method + b" " + target + b" " + version, b"Host: 127.0.0.1"]
    lines.extend(name + b": " + value for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def upgrade(
    protocols: bytes = b"echo",
    target: bytes = b"/",
    connection: bytes = b"Upgrade",
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> bytes:
    """The raw bytes of a body-less upgrade request."""
    return request(
        target=target,
        headers=[(b"Connection", connection), (b"Upgrade", protocols), *extra],
    )


def switching(protocol: bytes = b"echo") -> bytes:
    """The exact head of a C{101} switching to C{protocol} (R7)."""
    return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + protocol + b"\r\nConnection: Upgrade\r\n\r\n"


def withTimeout(d: Deferred[Any], seconds: float = TIMEOUT) -> Deferred[Any]:
    """C{d}, failing with C{TimeoutError} after C{seconds}."""
    return d.addTimeout(seconds, reactor)


class RawClient(Protocol):
    """
    A client that keeps every byte it receives, and can be waited on.

    @ivar data: Every byte received so far.
    @ivar lost: Fires once the connection is closed.
    @ivar lostReason: Why it closed, once it has.
    """

    def __init__(self) -> None:
        self.data = b""
        self.lost: Deferred[None] = Deferred()
        self.lostReason: Failure | None = None
        self._waiters: list[tuple[Callable[[bytes], bool], Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self._check()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lostReason = reason if reason is not None else Failure(ConnectionError("closed"))
        waiters, self._waiters = self._waiters, []
        for _, d in waiters:
            d.errback(AssertionError(f"connection closed after {self.data!r}"))
        self.lost.callback(None)

    def _check(self) -> None:
        for entry in list(self._waiters):
            predicate, d = entry
            if predicate(self.data):
                self._waiters.remove(entry)
                d.callback(self.data)

    def waitFor(self, predicate: Callable[[bytes], bool], seconds: float = TIMEOUT) -> Deferred[bytes]:
        """Fire with L{data} once C{predicate(data)} holds; fail on a close or timeout."""
        if predicate(self.data):
            return succeed(self.data)
        if self.lostReason is not None:
            return fail(AssertionError(f"connection closed after {self.data!r}"))
        d: Deferred[bytes] = Deferred()
        self._waiters.append((predicate, d))
        return withTimeout(d, seconds)

    def waitForBytes(self, count: int, seconds: float = TIMEOUT) -> Deferred[bytes]:
        """Fire with L{data} once at least C{count} bytes are in."""
        return self.waitFor(lambda data: len(data) >= count, seconds)

    def waitForSuffix(self, suffix: bytes, seconds: float = TIMEOUT) -> Deferred[bytes]:
        """Fire with L{data} once it ends with C{suffix}."""
        return self.waitFor(lambda data: data.endswith(suffix), seconds)

    def waitForClose(self, seconds: float = TIMEOUT) -> Deferred[bytes]:
        """Fire with L{data} once the connection is closed."""
        d: Deferred[bytes] = Deferred()

        def closed(result: None) -> None:
            if not d.called:
                d.callback(self.data)

        self.lost.addCallback(closed)
        return withTimeout(d, seconds)

    def send(self, data: bytes) -> None:
        """Write C{data} in one C{write}."""
        assert self.transport is not None
        self.transport.write(data)


class ServerConnection:
    """
    How many bytes the server side of one accepted connection has read.

    The wrapper the site built (what the transport calls) gets an instance
    attribute C{dataReceived} that counts and forwards; the code under test
    still sees the real transport.
    """

    def __init__(self, protocol: Any) -> None:
        self.received = 0
        self.reads = 0
        self._waiters: list[tuple[int, Deferred[None]]] = []
        original = protocol.dataReceived

        def dataReceived(data: bytes) -> Any:
            self.received += len(data)
            self.reads += 1
            try:
                return original(data)
            finally:
                for entry in list(self._waiters):
                    if self.received >= entry[0]:
                        self._waiters.remove(entry)
                        entry[1].callback(None)

        protocol.dataReceived = dataReceived
        # A proxied (data descriptor) attribute would have been set on the
        # wrapped channel instead: fail loudly rather than count nothing.
        assert vars(protocol).get("dataReceived") is dataReceived

    def waitReceived(self, count: int, seconds: float = TIMEOUT) -> Deferred[None]:
        """Fire once the server has read at least C{count} bytes."""
        if self.received >= count:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append((count, d))
        return withTimeout(d, seconds)


class TrackingSite(UpgradeSite):
    """An L{UpgradeSite} that counts what each accepted connection read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: list[ServerConnection] = []

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        self.connections.append(ServerConnection(protocol))
        return protocol


def openServerConnections(port: IListeningPort) -> list[Any]:
    """The accepted connections of C{port} still registered with the reactor."""
    selectables = set(reactor.getReaders()) | set(reactor.getWriters())
    return [s for s in selectables if getattr(s, "server", None) is port]


@inlineCallbacks
def waitServerClosed(port: IListeningPort, seconds: float = TIMEOUT) -> Any:
    """Poll (bounded) until every connection C{port} accepted is closed."""
    deadline = reactor.seconds() + seconds
    while openServerConnections(port):
        if reactor.seconds() > deadline:
            raise AssertionError(f"server connections still open: {openServerConnections(port)}")
        yield deferLater(reactor, 0.01, lambda: None)


def listen(test: TestCase, site: Any, interface: str = "127.0.0.1") -> IListeningPort:
    """Listen with C{site} on a free port; close port and connections at cleanup."""
    port = reactor.listenTCP(0, site, interface=interface)
    test.addCleanup(cleanupPort, port)
    return port


@inlineCallbacks
def cleanupPort(port: IListeningPort) -> Any:
    """Stop listening, then wait until the server side of every connection closed."""
    yield port.stopListening()
    yield waitServerClosed(port)


class TLSPair:
    """
    A throwaway CA (trustme), a certificate for C{127.0.0.1}, and the Twisted
    TLS options of both sides.
    """

    def __init__(self) -> None:
        import trustme

        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("127.0.0.1")
        self._private = ssl.PrivateCertificate.loadPEM(self.cert.private_key_and_cert_chain_pem.bytes())
        self._root = ssl.Certificate.loadPEM(self.ca.cert_pem.bytes())

    def serverOptions(self, acceptableProtocols: list[bytes] | None = None) -> Any:
        """Server options with our certificate, offering C{acceptableProtocols} via ALPN."""
        return ssl.CertificateOptions(
            privateKey=self._private.privateKey.original,
            certificate=self._private.original,
            acceptableProtocols=acceptableProtocols,
        )

    def clientEndpoint(self, port: IListeningPort, acceptableProtocols: list[bytes] | None = None) -> Any:
        """A Twisted client endpoint that verifies our certificate."""
        options = ssl.optionsForClientTLS(
            "127.0.0.1", trustRoot=self._root, acceptableProtocols=acceptableProtocols
        )
        tcp = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=5)  # type: ignore[attr-defined]
        return wrapClientTLS(options, tcp)


def listenTLS(
    test: TestCase, site: Any, pair: TLSPair, acceptableProtocols: list[bytes] | None = None
) -> IListeningPort:
    """Like L{listen}, over TLS with C{pair}'s certificate."""
    port = reactor.listenSSL(0, site, pair.serverOptions(acceptableProtocols), interface="127.0.0.1")
    test.addCleanup(cleanupPort, port)
    return port


def closeClient(client: RawClient) -> Deferred[bytes]:
    """Abort C{client}'s connection if still open; fire once it is closed."""
    if client.lostReason is None and client.transport is not None:
        client.transport.abortConnection()  # type: ignore[attr-defined]
    return client.waitForClose()


@inlineCallbacks
def connectClient(
    test: TestCase,
    port: IListeningPort | int,
    endpoint: IStreamClientEndpoint | None = None,
    client: RawClient | None = None,
) -> Any:
    """Connect C{client} (a new L{RawClient}) to C{port}; it is closed at cleanup."""
    if endpoint is None:
        number = port if isinstance(port, int) else port.getHost().port  # type: ignore[attr-defined]
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", number, timeout=5)
    if client is None:
        client = RawClient()
    yield withTimeout(connectProtocol(endpoint, client))
    test.addCleanup(closeClient, client)
    return client


@implementer(IUpgradeProtocol)
class SimpleUpgrade:
    """
    A configurable test protocol: accepts (or returns C{decision}) and builds
    C{factory(request)}.
    """

    def __init__(
        self,
        name: str,
        factory: Callable[[UpgradeRequest], Protocol] | None = None,
        version: str | None = None,
        decision: Callable[[UpgradeRequest], Decision] | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self._factory = factory
        self._decision = decision
        self.requests: list[UpgradeRequest] = []

    def negotiate(self, request: UpgradeRequest) -> Decision:
        self.requests.append(request)
        if self._decision is not None:
            return self._decision(request)
        return Accept()

    def buildProtocol(self, request: UpgradeRequest, site: object) -> Protocol:
        if self._factory is None:
            return TaggedEcho(self.name.encode("ascii"))
        return self._factory(request)


class TaggedEcho(Protocol):
    """Echo every byte, after announcing which protocol took the connection."""

    def __init__(self, tag: bytes) -> None:
        self.tag = tag

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"[" + self.tag + b"]")

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class Hello(Resource):
    """A leaf answering C{GET} with C{hello <path>}, C{POST} with the body."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain")
        return b"hello " + request.path

    def render_POST(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain")
        return b"posted " + request.content.read()


def plainResponse(body: bytes, extra: bytes = b"") -> bytes:
    """The normalized bytes of L{Hello}'s C{200} for C{body}."""
    return (
        b"HTTP/1.1 200 OK\r\n"
        + extra
        + b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )
