"""
WebSocket (RFC 6455) through autobahn, on the same port as the site.

Theory of operation
===================
twisted.web has already parsed the request, so autobahn must not parse it
again: L{WebSocketUpgrade.negotiate} checks the RFC 6455 §4.2 handshake with
the sans-IO L{txupgrade.protocols.websocket._handshake.checkHandshake}, builds the factory's
protocol, fills in the fields autobahn's own handshake would have set, and
asks the protocol's C{onConnect} (which may deny, pick a subprotocol, or
return a Deferred). The C{101} then carries C{Sec-WebSocket-Accept} and the
agreed subprotocol and extensions, and the protocol starts directly in the
OPEN state, with the bytes that followed the handshake (frames sent in the
same segment) as its first input.

Bringing autobahn up in the OPEN state touches its private state; that is
all in L{txupgrade.protocols.websocket._autobahncompat}, which uses a fast path on the autobahn
versions it was checked against (fingerprinted) and autobahn's own
C{succeedHandshake} on any other.

When the connection closes, the protocol's reference cycles are broken
(L{txupgrade.protocols.websocket._autobahncompat.breakCycles}), so reference counting frees it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

import txaio
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket import protocol as _wsprotocol
from autobahn.websocket.compress import PERMESSAGE_COMPRESSION_EXTENSION
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from zope.interface import implementer

from txupgrade.interfaces import IUpgradeProtocol
from txupgrade.negotiation import Accept, Decision, Refuse, UpgradeRequest
from txupgrade.offer import peerText
from txupgrade.protocols.websocket import _autobahncompat as _compat
from txupgrade.protocols.websocket._handshake import (
    VERSION_HEADERS,
    HandshakeError,
    acceptKey,
    checkHandshake,
    wildcardPatterns,
)
from txupgrade.resource import UpgradeRequiredResource

__all__ = ["WebSocketEndpoint", "WebSocketUpgrade", "acceptKey"]

txaio.use_twisted()


def _peerString(address: Any) -> str:
    """The peer as autobahn names it (C{tcp4:127.0.0.1:5000}, C{tcp6:::1:5000}, C{unix:PATH})."""
    if isinstance(address, IPv6Address):
        return f"tcp6:{address.host}:{address.port}"
    prefix = (
        "tcp4:" if isinstance(address, IPv4Address) else "unix:" if isinstance(address, UNIXAddress) else ""
    )
    return prefix + peerText(address)


def _refuse(status: int, reason: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Refuse:
    return Refuse(status, headers, (reason + "\n").encode("utf-8", "replace"), reason)


@implementer(IUpgradeProtocol)
class WebSocketUpgrade:
    """
    The C{websocket} protocol, served by an autobahn C{WebSocketServerFactory}.

    @ivar factory: The autobahn server factory; its protocol class, options
        (C{setProtocolOptions}), C{onConnect}, C{headers} and connection
        count are used as autobahn would.
    @ivar allowedOrigins: L{None} (the default) accepts a request with no
        C{Origin} (not a browser) or whose C{Origin} is the same origin as the
        page (scheme, host and port of this server): a browser attaches its
        cookies to any page's WebSocket, so a cross-site page must not be able
        to open one in the user's name (C{Origin: null}, which any page can
        send from a sandboxed frame, is refused too). A list of
        autobahn-style wildcard patterns (C{"https://*.example.com:*"};
        C{["*"]} allows all) is matched against the C{Origin} instead, and
        the factory's C{allowNullOrigin} then decides on C{null}.
    """

    name = "websocket"
    version = None

    def __init__(self, factory: WebSocketServerFactory, allowedOrigins: Sequence[str] | None = None) -> None:
        if not (isinstance(factory.protocol, type) and issubclass(factory.protocol, WebSocketServerProtocol)):
            raise TypeError(
                f"{factory!r}.protocol must be a subclass of "
                f"autobahn.twisted.websocket.WebSocketServerProtocol, not {factory.protocol!r}"
            )
        self.factory = factory
        self.allowedOrigins = None if allowedOrigins is None else list(allowedOrigins)
        self._originPatterns = None if allowedOrigins is None else wildcardPatterns(allowedOrigins)
        self._path = _compat.bringUpPath()
        self._protocolClass = _compat.switchedClass(factory.protocol, self._path)
        self._optionNames: list[str] | None = None
        self._readOptions: Callable[[Any], tuple[Any, ...]] = tuple
        # The protocol class holding the factory's options (L{_classWithOptions}).
        self._optionsClass: type | None = None
        self._optionValues: tuple[Any, ...] = ()
        # autobahn's own onConnect accepts with no subprotocol, after an
        # eagerly formatted debug line: skip calling it.
        self._defaultOnConnect = (
            getattr(self._protocolClass, "onConnect", None) is _wsprotocol.WebSocketServerProtocol.onConnect
        )

    def negotiate(self, request: UpgradeRequest) -> Decision | Deferred[Decision]:
        """Check the RFC 6455 handshake, then ask the protocol's C{onConnect}."""
        try:
            handshake = checkHandshake(
                request.method,
                request.target,
                request.headers,
                secure=request.secure,
                originPatterns=self._originPatterns,
                allowNullOrigin=bool(self.factory.allowNullOrigin),
                allowedHosts=request.allowedHosts,
                http2=request.version == b"HTTP/2",
            )
        except HandshakeError as error:
            return _refuse(error.status, error.reason, error.headers)
        if 0 < self.factory.maxConnections <= self.factory.countConnections:
            return _refuse(503, "maximum number of connections reached")

        proto = self._classWithOptions()()
        proto.factory = self.factory
        _compat.prepareProtocol(proto, handshake, _peerString(request.peer))
        if self._defaultOnConnect:
            return self._accept(proto, handshake.accept, None)
        connectionRequest = ConnectionRequest(
            proto.peer,
            handshake.headers,
            handshake.hostName,
            handshake.path,
            handshake.params,
            13,
            handshake.origin,
            list(handshake.protocols),
            list(handshake.extensions),
        )
        try:
            answer = proto.onConnect(connectionRequest)
        except ConnectionDeny as deny:
            return _refuse(deny.code, deny.reason or "denied")
        if isinstance(answer, Deferred) or txaio.is_future(answer):  # type: ignore[attr-defined]
            deferred: Deferred[Decision] = maybeDeferred(lambda: answer)
            return deferred.addCallbacks(
                lambda result: self._accept(proto, handshake.accept, result), self._denied
            )
        return self._accept(proto, handshake.accept, answer)

    def _classWithOptions(self) -> type:
        """
        The protocol class with the factory's options it does not set itself,
        as autobahn's C{_connectionMade} gives each protocol (read afresh for
        each connection, so C{setProtocolOptions} calls made later still
        apply): class attributes of a subclass made again only when they
        change, where autobahn copies some forty into every protocol's dict.
        """
        base: Any = self._protocolClass
        if self._optionNames is None:
            self._optionNames = [name for name in base.CONFIG_ATTRS if not hasattr(base, name)]
            names = self._optionNames
            self._readOptions = lambda factory: tuple(getattr(factory, name) for name in names)
            if len(names) > 1:
                self._readOptions = attrgetter(*names)
        values = self._readOptions(self.factory)
        if self._optionsClass is None or values != self._optionValues:
            # A function option (perMessageCompressionAccept) must not become a method.
            attributes: dict[str, Any] = {
                name: staticmethod(value) if hasattr(value, "__get__") else value
                for name, value in zip(self._optionNames, values, strict=True)
            }
            attributes.update(__module__=base.__module__, __qualname__=base.__qualname__)
            self._optionsClass = type(base.__name__, (base,), attributes)
            self._optionValues = values
        return self._optionsClass

    @staticmethod
    def _denied(reason: Failure) -> Decision:
        """A C{ConnectionDeny} from an asynchronous C{onConnect} is a refusal."""
        reason.trap(ConnectionDeny)
        deny: Any = reason.value
        return _refuse(deny.code, deny.reason or "denied")

    def _accept(self, proto: Any, accept: bytes, answer: Any) -> Decision:
        """Build the C{101}'s headers from C{onConnect}'s answer (as C{succeedHandshake})."""
        subprotocol: str | None = None
        extraHeaders: dict[str, Any] = {}
        if isinstance(answer, tuple):
            subprotocol = answer[0] if answer else None
            extraHeaders = answer[1] if len(answer) > 1 else {}
        else:
            subprotocol = answer
        if subprotocol is not None and subprotocol not in proto.websocket_protocols:
            raise ValueError(f"onConnect chose {subprotocol!r}, which the client did not offer")
        proto.websocket_protocol_in_use = subprotocol
        proto.websocket_extensions_in_use = []
        response: list[tuple[bytes, bytes]] = []
        if self.factory.server:
            response.append((b"Server", self.factory.server.encode("latin-1")))
        for source in (self.factory.headers, extraHeaders):
            for name, values in source.items():
                for value in [values] if isinstance(values, str) else values:
                    response.append((name.encode("latin-1"), str(value).encode("latin-1")))
        if subprotocol is not None:
            response.append((b"Sec-WebSocket-Protocol", subprotocol.encode("latin-1")))
        if accept:  # none over HTTP/2 (RFC 8441 §5)
            response.append((b"Sec-WebSocket-Accept", accept))
        offers = []
        for extension, params in proto.websocket_extensions:
            pmce: Any = PERMESSAGE_COMPRESSION_EXTENSION.get(extension)
            if pmce is not None:
                try:
                    offers.append(pmce["Offer"].parse(params))
                except Exception as error:  # noqa: BLE001 - autobahn raises bare Exceptions here
                    return _refuse(400, f"bad extension offer: {error}")
        if offers:
            agreed = proto.perMessageCompressionAccept(offers)
            if agreed is not None:
                _compat.usePerMessageCompress(proto, agreed)
                response.append((b"Sec-WebSocket-Extensions", agreed.get_extension_string().encode("ascii")))
        if self._path != "fast":
            proto._txupgradeAnswer = answer
        return Accept(headers=tuple(response), upgrade=("websocket",), protocol=proto)

    def buildProtocol(self, request: UpgradeRequest, site: object) -> Any:
        """Not used: L{negotiate} builds the protocol (C{onConnect} needs it)."""
        raise NotImplementedError("WebSocketUpgrade builds its protocol in negotiate")


class WebSocketEndpoint(UpgradeRequiredResource):
    """
    A WebSocket endpoint in the resource tree, served by an autobahn factory.

    A plain request gets C{426 Upgrade Required} with C{Upgrade: websocket}
    and C{Sec-WebSocket-Version: 13}.

    Memory limits are the factory's (C{setProtocolOptions}): autobahn's
    defaults accept frames and messages of any size, so set
    C{maxFramePayloadSize} and C{maxMessagePayloadSize} (a message past them
    is closed with 1009), and C{failByDrop=False} so that such a close, or a
    protocol error's (1002), is a Close frame the client sees rather than a
    TCP reset that can also lose the C{101}. The demo's
    L{txupgrade.daemon.demo.webSocketEchoFactory} does (1 MiB frames, 4 MiB
    messages). A protocol that writes what it reads should also register a
    producer that pauses reading while the transport's buffer is full
    (L{txupgrade.daemon.demo.PauseReadingWhileFull}). A closed protocol is freed by
    reference counting, without waiting for Python's cycle collector.
    """

    def __init__(self, factory: WebSocketServerFactory, allowedOrigins: Sequence[str] | None = None) -> None:
        self.upgrade = WebSocketUpgrade(factory, allowedOrigins)
        super().__init__([self.upgrade], extraHeaders=VERSION_HEADERS)
