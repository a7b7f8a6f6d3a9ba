"""C{Upgrade} over HTTP/1.1 (h11): L{upgrade}, and RFC 2817's L{upgradeToTLS}."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import h11
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IProtocol,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from txupgrade.client._common import (
    _CLOSED,
    Headers,
    ProtocolFactory,
    Response,
    UpgradeFailed,
    UpgradeResponse,
    buildClientProtocol,
    connectWithin,
)
from txupgrade.negotiation import (
    ProtocolName,
    UpgradeError,
    matches,
    parseConnectionOptions,
    parseProtocolList,
)


def _requestEvents(
    method: bytes,
    target: bytes,
    host: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes | None,
) -> list[Any]:
    """The h11 events of one request."""
    allHeaders = [(b"Host", host), *headers]
    if body is not None:
        allHeaders.append((b"Content-Length", b"%d" % len(body)))
    events: list[Any] = [h11.Request(method=method, target=target, headers=allHeaders)]
    if body:
        events.append(h11.Data(data=body))
    events.append(h11.EndOfMessage())
    return events


def _headers(event: Any) -> Headers:
    return tuple((bytes(name), bytes(value)) for name, value in event.headers)


@implementer(IHalfCloseableProtocol)
class _UpgradeClient(Protocol):
    """
    Sends the upgrade request, reads the answer, and after a C{101} forwards
    the connection to the protocol built for it.
    """

    def __init__(
        self,
        offered: tuple[ProtocolName, ...],
        events: list[Any],
        factory: ProtocolFactory,
        result: Deferred[IProtocol],
    ) -> None:
        self._offered = offered
        self._events = events
        self._factory = factory
        self._result = result
        self._h11 = h11.Connection(h11.CLIENT)
        self._response: Any = None
        self._body: list[bytes] = []
        self.inner: IProtocol | None = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"".join(self._h11.send(event) or b"" for event in self._events))

    def dataReceived(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.dataReceived(data)
            return
        self._h11.receive_data(data)
        self._readEvents()

    def _readEvents(self) -> None:
        while not self._result.called:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as error:
                self._fail(UpgradeFailed(f"malformed response: {error}"))
                return
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    self._switched(event)
                    return
                continue  # 100 Continue
            if isinstance(event, h11.Response):
                self._response = event
            elif isinstance(event, h11.Data):
                self._body.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                self._refused()
                return

    def _refused(self) -> None:
        """The server answered, but not with a C{101}."""
        response = self._response
        if response is None:
            self._fail(UpgradeFailed("connection closed before a response"))
            return
        self._fail(
            UpgradeFailed(
                f"server did not switch protocols: {bytes(response.reason).decode('latin-1')}",
                response.status_code,
                _headers(response),
                b"".join(self._body),
            )
        )

    def _switched(self, event: Any) -> None:
        """Check the C{101} and connect the new protocol."""
        headers = _headers(event)
        try:
            named = parseProtocolList([v for k, v in headers if k == b"upgrade"])
        except UpgradeError as error:
            self._fail(UpgradeFailed(f"invalid 101: {error}", 101, headers))
            return
        if not named or not any(matches(named[0], o.name, o.version) for o in self._offered):
            self._fail(UpgradeFailed(f"101 names a protocol not offered: {named!r}", 101, headers))
            return
        if b"upgrade" not in parseConnectionOptions([v for k, v in headers if k == b"connection"]):
            self._fail(UpgradeFailed("101 without Connection: upgrade", 101, headers))
            return
        response = UpgradeResponse(named[0], named, headers)
        trailing = bytes(self._h11.trailing_data[0])
        self._h11 = None  # type: ignore[assignment]
        try:
            inner = buildClientProtocol(self._factory, response)
            self.inner = inner
            inner.makeConnection(self.transport)  # type: ignore[arg-type]
            if trailing:
                inner.dataReceived(trailing)
        except Exception as error:  # noqa: BLE001 - the caller gets it as the failure
            self._fail(error)
            return
        self._result.callback(inner)

    def _fail(self, error: Exception) -> None:
        if not self._result.called:
            self._result.errback(Failure(error))
        if self.transport is not None:
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        if IHalfCloseableProtocol.providedBy(self.inner):
            self.inner.readConnectionLost()
        elif self.transport is not None:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        if IHalfCloseableProtocol.providedBy(self.inner):
            self.inner.writeConnectionLost()

    def connectionLost(self, reason: Failure = _CLOSED) -> None:
        if self.inner is not None:
            self.inner.connectionLost(reason)
            return
        if self._h11 is not None and not self._result.called:
            try:
                self._h11.receive_data(b"")
            except RuntimeError:
                pass
            self._readEvents()
        if not self._result.called:
            self._result.errback(Failure(UpgradeFailed(f"connection lost: {reason.getErrorMessage()}")))


def upgrade(
    endpoint: IStreamClientEndpoint,
    protocols: Sequence[str],
    protocolFactory: ProtocolFactory,
    *,
    target: bytes = b"/",
    host: bytes = b"localhost",
    method: bytes = b"GET",
    headers: Iterable[tuple[bytes, bytes]] = (),
    body: bytes | None = None,
    timeout: float | None = 30.0,
    reactor: Any = None,
) -> Deferred[IProtocol]:
    """
    Connect to C{endpoint} and ask to switch to one of C{protocols}.

    @param protocols: The offer, best first (C{"name"} or C{"name/version"}).
    @param protocolFactory: Builds the client protocol for the accepted
        L{UpgradeResponse}; or a mapping from the lower-cased name the server
        chose (with its version, if any) to such a callable.
    @param headers: Protocol-specific request headers (e.g. WebSocket keys).
    @param body: A request body (sent with C{Content-Length}).
    @param timeout: Seconds until the C{101} must have arrived, or L{None}.
    @return: Fires with the connected client protocol, after it got the bytes
        that came behind the C{101}; fails with L{UpgradeFailed}.
    """
    offered = parseProtocolList([", ".join(protocols).encode("ascii")])
    if not offered:
        raise ValueError("offer at least one protocol")
    requestHeaders = [
        (b"Connection", b"Upgrade"),
        (b"Upgrade", ", ".join(protocols).encode("ascii")),
        *headers,
    ]
    events = _requestEvents(method, target, host, requestHeaders, body)
    result: Deferred[IProtocol] = Deferred()
    client = _UpgradeClient(offered, events, protocolFactory, result)

    return connectWithin(endpoint, client, lambda _: result, timeout, reactor, lambda: client.inner is None)


class HTTPClientProtocol(Protocol):
    """
    HTTP/1.1 requests and responses over a connection, parsed with h11.

    After a TLS upgrade the server answers the request that asked for it
    (RFC 2817): L{expectResponse} reads that answer without sending again.
    """

    def __init__(self) -> None:
        self._h11 = h11.Connection(h11.CLIENT)
        self._waiting: list[Deferred[Response]] = []
        self._response: Any = None
        self._body: list[bytes] = []
        self.lost: Deferred[None] = Deferred()

    def request(
        self,
        method: bytes = b"GET",
        target: bytes = b"/",
        *,
        host: bytes = b"localhost",
        headers: Iterable[tuple[bytes, bytes]] = (),
        body: bytes | None = None,
    ) -> Deferred[Response]:
        """Send a request; fire with its response."""
        self._ready()
        data = b"".join(
            self._h11.send(event) or b"" for event in _requestEvents(method, target, host, headers, body)
        )
        assert self.transport is not None
        self.transport.write(data)
        return self._wait()

    def expectResponse(
        self, method: bytes = b"GET", target: bytes = b"/", host: bytes = b"localhost"
    ) -> Deferred[Response]:
        """Fire with the response to a request already sent (the upgrade request)."""
        self._ready()
        for event in _requestEvents(method, target, host, (), None):
            self._h11.send(event)
        return self._wait()

    def _ready(self) -> None:
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()

    def _wait(self) -> Deferred[Response]:
        d: Deferred[Response] = Deferred()
        self._waiting.append(d)
        self._readEvents()
        return d

    def dataReceived(self, data: bytes) -> None:
        self._h11.receive_data(data)
        self._readEvents()

    def _readEvents(self) -> None:
        while self._waiting:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as error:
                self._waiting.pop(0).errback(UpgradeFailed(f"malformed response: {error}"))
                assert self.transport is not None
                self.transport.loseConnection()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Response):
                self._response, self._body = event, []
            elif isinstance(event, h11.Data):
                self._body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                response = Response(
                    self._response.status_code, _headers(self._response), b"".join(self._body)
                )
                self._waiting.pop(0).callback(response)
            elif isinstance(event, h11.ConnectionClosed):
                break

    def connectionLost(self, reason: Failure = _CLOSED) -> None:
        try:
            self._h11.receive_data(b"")
            self._readEvents()
        except RuntimeError:
            pass
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(UpgradeFailed(f"connection lost before a response: {reason.getErrorMessage()}"))
        self.lost.callback(None)


class _StartTLS(Protocol):
    """After the C{101}: start TLS, then hand the connection to C{inner}."""

    def __init__(self, options: Any, inner: HTTPClientProtocol, request: tuple[bytes, bytes, bytes]) -> None:
        self.options = options
        self.inner = inner
        self.request = request
        self.response: Deferred[Response] | None = None

    def makeConnection(self, transport: Any) -> None:
        transport.startTLS(self.options)
        self.inner.makeConnection(transport)
        method, target, host = self.request
        self.response = self.inner.expectResponse(method, target, host)

    def dataReceived(self, data: bytes) -> None:
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Failure = _CLOSED) -> None:
        self.inner.connectionLost(reason)


# The request keywords (target to reactor) are upgrade()'s, on purpose: the two
# public calls take the same request, one to any protocol, one to TLS.
def upgradeToTLS(
    endpoint: IStreamClientEndpoint,
    options: Any,
    *,
    version: str = "1.2",
    target: bytes = b"/",
    host: bytes = b"localhost",
    method: bytes = b"GET",
    headers: Iterable[tuple[bytes, bytes]] = (),
    body: bytes | None = None,
    timeout: float | None = 30.0,
    reactor: Any = None,
) -> Deferred[tuple[HTTPClientProtocol, Response]]:
    """
    Upgrade a plain connection to TLS (RFC 2817) and read the original answer.

    @param options: The client TLS options (e.g. C{optionsForClientTLS(host)}).
    @return: Fires with the connection's L{HTTPClientProtocol} (for more
        requests, over TLS) and the L{Response} to this request.
    """
    starters: list[_StartTLS] = []

    def build(response: UpgradeResponse) -> IProtocol:
        starter = _StartTLS(options, HTTPClientProtocol(), (method, target, host))
        starters.append(starter)
        return starter

    d = upgrade(
        endpoint,
        [f"TLS/{version}"],
        build,
        target=target,
        host=host,
        method=method,
        headers=headers,
        body=body,
        timeout=timeout,
        reactor=reactor,
    )

    def switched(_: object) -> Deferred[tuple[HTTPClientProtocol, Response]]:
        starter = starters[0]
        assert starter.response is not None
        return starter.response.addCallback(lambda response: (starter.inner, response))

    return d.addCallback(switched)
