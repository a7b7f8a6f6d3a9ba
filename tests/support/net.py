"""
Real sockets on 127.0.0.1 for the end-to-end tests: the listener helper, the
site that tracks its connections, the raw client, bounded waits, and the
push producer tests register on a transport.

Every wait here is bounded (L{TIMEOUT} unless told), and every listener and
connection a test opens is closed by the test's cleanups, on both sides, so
trial's dirty-reactor check passes.
"""

from __future__ import annotations

import socket
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import reactor as _globalReactor
from twisted.internet import ssl, threads
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IListeningPort, IPushProducer, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from txupgrade.channel import UpgradeSite

reactor: Any = _globalReactor

#: The bound, in seconds, of any single wait in these tests.
TIMEOUT = 10.0

T = TypeVar("T")


def withTimeout(d: Deferred[T], seconds: float = TIMEOUT) -> Deferred[T]:
    """C{d}, failing with C{TimeoutError} after C{seconds}."""
    return d.addTimeout(seconds, reactor)


def wait(predicate: Callable[[], bool], seconds: float = TIMEOUT) -> Deferred[None]:
    """Fire once C{predicate()} is true (checked every 10 ms), failing after C{seconds}."""
    d: Deferred[None] = Deferred()
    deadline = time.monotonic() + seconds

    def check() -> None:
        if predicate():
            d.callback(None)
        elif time.monotonic() > deadline:
            d.errback(AssertionError(f"condition not met within {seconds} s"))
        else:
            reactor.callLater(0.01, check)

    check()
    return d


def inThread(function: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
    """
    Run the blocking C{function} in a thread while the reactor serves.

    The result is bounded by twice L{TIMEOUT}; blocking clients use socket
    timeouts shorter than that, so the thread ends too.
    """
    return withTimeout(threads.deferToThread(function, *args, **kwargs), TIMEOUT * 2)


def freePort() -> int:
    """A loopback port that was free a moment ago (for programs that cannot listen on port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerConnection:
    """
    The server side of one accepted connection: what it read, and whether
    its socket is closed.

    The wrapper the site built (what the transport calls) becomes an instance
    of a subclass of its own class that counts what it reads and then does
    what the wrapper does; the code under test still sees the real transport.
    A protocol that takes the transport over from the wrapper after a switch
    (a raw stream, a TLS upgrade) reads uncounted; L{closed} looks at the
    socket itself, so it holds for every connection.

    It keeps the transport through a weak reference only, so that a test of
    what the server frees still sees it freed.

    @ivar received: How many bytes the wrapper has read.
    @ivar reads: In how many C{dataReceived} calls.
    """

    def __init__(self, protocol: Any) -> None:
        self.received = 0
        self.reads = 0
        self._transport: Callable[[], Any] = lambda: None
        self._connected = False
        self._waiters: list[tuple[int, Deferred[None]]] = []
        protocol.__class__ = _trackedClass(type(protocol))
        protocol._serverConnection = self

    @property
    def transport(self) -> Any:
        """The server's transport, once connected (L{None} once freed)."""
        return self._transport()

    @property
    def closed(self) -> bool:
        """Whether the connection's socket is closed (below any TLS layer)."""
        transport = self.transport
        if transport is None:
            return self._connected  # freed: closed, once it was connected
        while transport is not None and not hasattr(transport, "disconnected"):
            transport = getattr(transport, "transport", None)
        return transport is not None and bool(transport.disconnected)

    def abort(self) -> None:
        """Abort the connection, if still open."""
        if not self.closed and self.transport is not None:
            self.transport.abortConnection()

    def waitReceived(self, count: int, seconds: float = TIMEOUT) -> Deferred[None]:
        """Fire once the server has read at least C{count} bytes."""
        if self.received >= count:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append((count, d))
        return withTimeout(d, seconds)

    def _read(self, data: bytes) -> None:
        self.received += len(data)
        self.reads += 1

    def _afterRead(self) -> None:
        for entry in list(self._waiters):
            if self.received >= entry[0]:
                self._waiters.remove(entry)
                entry[1].callback(None)


_trackedClasses: dict[type, type] = {}


def _trackedClass(wrapperClass: type) -> type:
    """The subclass of C{wrapperClass} that reports to its L{ServerConnection}."""
    if wrapperClass not in _trackedClasses:

        class Tracked(wrapperClass):  # type: ignore[valid-type, misc]
            _serverConnection: ServerConnection

            def makeConnection(self, transport: Any) -> Any:
                self._serverConnection._transport = weakref.ref(transport)
                self._serverConnection._connected = True
                return super().makeConnection(transport)

            def dataReceived(self, data: bytes) -> Any:
                self._serverConnection._read(data)
                try:
                    return super().dataReceived(data)
                finally:
                    self._serverConnection._afterRead()

        # Logs and reprs name the connection as before.
        Tracked.__name__ = Tracked.__qualname__ = wrapperClass.__name__
        _trackedClasses[wrapperClass] = Tracked
    return _trackedClasses[wrapperClass]


def trackConnections(site: Any) -> list[ServerConnection]:
    """
    Make C{site} (any L{Site}) track the connections it accepts from now on;
    return its list of L{ServerConnection}s, also kept as C{site.connections}.
    """
    if "connections" not in vars(site):
        build = site.buildProtocol
        connections: list[ServerConnection] = []

        def buildProtocol(addr: Any) -> Any:
            protocol = build(addr)
            connections.append(ServerConnection(protocol))
            return protocol

        site.buildProtocol = buildProtocol
        site.connections = connections
    tracked: list[ServerConnection] = site.connections
    return tracked


class TrackingSite(UpgradeSite):
    """
    An L{UpgradeSite} that tracks every connection it accepts.

    @ivar connections: A L{ServerConnection} per accepted connection, in order.
    """

    connections: list[ServerConnection]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.noisy = False
        trackConnections(self)

    def allClosed(self) -> bool:
        """Whether every connection this site accepted is closed."""
        return all(connection.closed for connection in self.connections)


def listen(test: TestCase, site: Any, tlsOptions: Any = None) -> int:
    """
    Serve C{site} (any L{Site}) on a free port of 127.0.0.1, over TLS with
    C{tlsOptions} if given; return the port number. See L{stopAtCleanup}.
    """
    connections = trackConnections(site)
    port: IListeningPort
    if tlsOptions is None:
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
    else:
        port = reactor.listenSSL(0, site, tlsOptions, interface="127.0.0.1")
    stopAtCleanup(test, port, connections)
    address: Any = port.getHost()
    number: int = address.port
    return number


def stopAtCleanup(test: TestCase, port: IListeningPort, connections: list[ServerConnection]) -> None:
    """
    At C{test}'s cleanup, stop C{port} listening and wait (bounded) until
    every one of its C{connections} (see L{trackConnections}) is closed: a
    server that keeps one open after its client left fails the test, after
    the connection is aborted.
    """

    def allClosed() -> bool:
        return all(connection.closed for connection in connections)

    @inlineCallbacks
    def cleanup() -> Any:
        yield port.stopListening()
        try:
            yield wait(allClosed)
        except AssertionError:
            for connection in connections:
                connection.abort()
            yield wait(allClosed, 2.0)
            test.fail("a server connection stayed open after its client left")

    test.addCleanup(cleanup)


class TLSPair:
    """
    A throwaway CA (trustme), a certificate for C{127.0.0.1}, and the Twisted
    TLS options of both sides.
    """

    def __init__(self) -> None:
        import trustme

        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("127.0.0.1")
        self._root = ssl.Certificate.loadPEM(self.ca.cert_pem.bytes())

    def serverOptions(self, acceptableProtocols: list[bytes] | None = None) -> Any:
        """Server options: our certificate (cryptography objects), ALPN C{acceptableProtocols}."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        return ssl.CertificateOptions(
            privateKey=load_pem_private_key(self.cert.private_key_pem.bytes(), password=None),
            certificate=x509.load_pem_x509_certificate(self.cert.cert_chain_pems[0].bytes()),
            acceptableProtocols=acceptableProtocols,
        )

    def clientEndpoint(self, port: int, acceptableProtocols: list[bytes] | None = None) -> Any:
        """A Twisted client endpoint to C{port} that verifies our certificate."""
        options = ssl.optionsForClientTLS(
            "127.0.0.1", trustRoot=self._root, acceptableProtocols=acceptableProtocols
        )
        return wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5))


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
        for entry in list(self._waiters):
            predicate, d = entry
            if predicate(self.data):
                self._waiters.remove(entry)
                d.callback(self.data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lostReason = reason if reason is not None else Failure(ConnectionError("closed"))
        waiters, self._waiters = self._waiters, []
        for _, d in waiters:
            d.errback(AssertionError(f"connection closed after {self.data!r}"))
        self.lost.callback(None)

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

    def close(self) -> Deferred[bytes]:
        """Abort the connection if still open; fire with L{data} once it is closed."""
        if self.lostReason is None and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        return self.waitForClose()


@inlineCallbacks
def connectClient(
    test: TestCase,
    port: int,
    endpoint: IStreamClientEndpoint | None = None,
    client: RawClient | None = None,
    connectTimeout: float = 5,
) -> Any:
    """Connect C{client} (a new L{RawClient}) to C{port}; it is closed at cleanup."""
    if endpoint is None:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=connectTimeout)
    if client is None:
        client = RawClient()
    yield withTimeout(connectProtocol(endpoint, client))
    test.addCleanup(client.close)
    return client


@implementer(IPushProducer)
class RecordingProducer:
    """A push producer that records what it is asked, in order: C{"pause"}, C{"resume"}, C{"stop"}."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")
