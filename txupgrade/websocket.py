"""
WebSocket (RFC 6455) through autobahn, on the same port as the site.

Theory of operation
===================
twisted.web has already parsed the request, so autobahn must not parse it
again: L{WebSocketUpgrade.negotiate} checks the RFC 6455 §4.2 handshake from
the parsed request, builds the factory's protocol, fills in the fields
autobahn's own handshake would have set, and asks the protocol's
C{onConnect} (which may deny, pick a subprotocol, or return a Deferred).
The C{101} then carries C{Sec-WebSocket-Accept} and the agreed subprotocol
and extensions, and the protocol starts directly in the OPEN state, with the
bytes that followed the handshake (frames sent in the same segment) as its
first input.

Bringing autobahn up in the OPEN state means setting its private state by
hand (L{_openDirectly}); C{tests/test_websocket_compat.py} checks it against
what autobahn's own C{_connectionMade} sets, and fails loudly when a new
autobahn version changes it. The autobahn version is pinned in C{setup.cfg}.

The protocol class the factory names is subclassed once (L{_switchedClass})
to start in the OPEN state and, where the user did not override them, to
replace the few autobahn methods that format debug log arguments eagerly on
every connection, read or write (L{_QUIET}): about 16 µs each, even with
debug logging off, and the largest cost of a handshake after autobahn's own
request parsing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any
from urllib.parse import parse_qs, urlsplit

import txaio
from autobahn.twisted.util import create_transport_details
from autobahn.twisted.websocket import (
    WebSocketAdapterProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.util import _is_tls_error, _maybe_tls_reason, wildcards2patterns
from autobahn.wamp.types import TransportDetails
from autobahn.websocket import protocol as _wsprotocol
from autobahn.websocket.compress import PERMESSAGE_COMPRESSION_EXTENSION
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from txupgrade.interfaces import IUpgradeProtocol
from txupgrade.negotiation import Accept, Decision, Refuse, UpgradeRequest
from txupgrade.resource import UpgradeRequiredResource

__all__ = ["WebSocketEndpoint", "WebSocketUpgrade"]

txaio.use_twisted()

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_VERSION_HEADERS = ((b"Sec-WebSocket-Version", b"13"),)
_WebSocketProtocol = _wsprotocol.WebSocketProtocol


def acceptKey(key: bytes) -> bytes:
    """C{Sec-WebSocket-Accept} for a client's C{Sec-WebSocket-Key} (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())


def _peerString(address: Any) -> str:
    """The peer as autobahn names it (C{tcp4:127.0.0.1:5000})."""
    if isinstance(address, IPv4Address):
        return f"tcp4:{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"tcp6:{address.host}:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name.decode() if isinstance(address.name, bytes) else address.name
        return f"unix:{name}"
    return str(address)


def _refuse(status: int, reason: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Refuse:
    return Refuse(status, headers, (reason + "\n").encode("utf-8", "replace"), reason)


def _autobahnHeaders(request: UpgradeRequest) -> tuple[dict[str, str], dict[str, int]]:
    """
    The headers as autobahn's C{parseHttpHeader} presents them (lower-cased
    names, repeated lines joined with C{", "}), and how many lines each had.
    """
    headers: dict[str, str] = {}
    counts: dict[str, int] = {}
    for name, value in request.headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        if key in headers:
            headers[key] = f"{headers[key]}, {text}"
            counts[key] += 1
        else:
            headers[key] = text
            counts[key] = 1
    return headers, counts


_switchedClasses: dict[type, type] = {}


def _connectionMadeQuiet(self: Any) -> None:
    """C{WebSocketAdapterProtocol.connectionMade} without its eagerly formatted debug line."""
    self._transport_details = create_transport_details(self.transport, self.is_server)
    self._transport_details.channel_framing = TransportDetails.CHANNEL_FRAMING_WEBSOCKET
    self.peer = self._transport_details.peer
    # HTTPChannel.connectionMade already turned Nagle off on a TCP transport.
    if not (self.tcpNoDelay and ITCPTransport.providedBy(self.transport)):
        try:
            self.transport.setTcpNoDelay(self.tcpNoDelay)
        except Exception:  # noqa: BLE001 - as autobahn: not every transport has TCP options
            pass
    self._connectionMade()


def _connectionLostQuiet(self: Any, reason: Failure = connectionDone) -> None:
    """C{WebSocketAdapterProtocol.connectionLost}, logging only TLS errors as it does at info+."""
    if _is_tls_error(reason.value):
        self.log.error(_maybe_tls_reason(reason.value))
    self._connectionLost(reason)


def _serverConnectionLostQuiet(self: Any, reason: Failure) -> None:
    """C{WebSocketServerProtocol._connectionLost} without its eagerly formatted debug line."""
    _WebSocketProtocol._connectionLost(self, reason)  # type: ignore[arg-type]
    self.factory.countConnections -= 1


def _sendDataQuiet(self: Any, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
    """C{WebSocketProtocol.sendData}'s common case without its per-write debug line."""
    if chopsize or sync or self.send_queue:
        _WebSocketProtocol.sendData(self, data, sync, chopsize)
        return
    self.transport.write(data)
    if self.state == _WebSocketProtocol.STATE_OPEN:
        self.trafficStats.outgoingOctetsWireLevel += len(data)
    if self.logOctets:
        self.logTxOctets(data, False)


#: Methods whose autobahn versions format debug log arguments eagerly (about
#: 16 µs each, even with debug logging off), and their quiet equivalents. A
#: replacement is used only where the user's class does not override the
#: method; C{tests/test_websocket_compat.py} pins the originals' source.
_QUIET = (
    ("connectionMade", WebSocketAdapterProtocol, _connectionMadeQuiet),
    ("connectionLost", WebSocketAdapterProtocol, _connectionLostQuiet),
    ("dataReceived", WebSocketAdapterProtocol, _WebSocketProtocol._dataReceived),
    ("_connectionLost", _wsprotocol.WebSocketServerProtocol, _serverConnectionLostQuiet),
    ("sendData", _WebSocketProtocol, _sendDataQuiet),
)


def _switchedClass(cls: type) -> type:
    """
    A subclass of the factory's protocol class that starts in the OPEN state.

    It replaces autobahn's internal C{_connectionMade} (a user's
    C{connectionMade} override still runs, and reaches it) and, where the
    user's class does not override them, the methods in L{_QUIET}.
    """
    switched = _switchedClasses.get(cls)
    if switched is None:
        namespace: dict[str, Any] = {
            "_connectionMade": _openDirectly,
            "_connectionMadeInit": _connectionMadeInit,
            "__module__": cls.__module__,
        }
        for name, owner, quiet in _QUIET:
            if getattr(cls, name) is getattr(owner, name):
                namespace[name] = quiet
        switched = type(cls.__name__, (cls,), namespace)
        _switchedClasses[cls] = switched
    return switched


def _openDirectly(self: Any) -> None:
    """
    What autobahn's C{_connectionMade} and C{succeedHandshake} leave behind,
    for a handshake twisted.web has already read and L{negotiate} answered.
    """
    self._connectionMadeInit()
    self.factory.countConnections += 1
    self.state = _WebSocketProtocol.STATE_OPEN
    self.inside_message = False
    self.current_frame = None
    if self.autoPingInterval:
        self.autoPingPendingCall = self.factory._batched_timer.call_later(
            self.autoPingInterval, self._sendAutoPing
        )
    if self.trackedTimings:
        self.trackedTimings.track("onOpen")
    self._onOpen()
    txaio.resolve(self.is_open, None)  # type: ignore[attr-defined]


def _connectionMadeInit(self: Any) -> None:
    """The per-connection state of C{WebSocketProtocol._connectionMade}, minus its debug dump."""
    self.trackedTimings = None
    self.setTrackTimings(self.trackTimings)
    self.trafficStats = _wsprotocol.TrafficStats()
    self.send_state = _WebSocketProtocol.SEND_STATE_GROUND
    self.data = b""
    self.send_queue = deque()
    self.triggered = False
    self.utf8validator = _wsprotocol.Utf8Validator()
    self.wasMaxFramePayloadSizeExceeded = False
    self.wasMaxMessagePayloadSizeExceeded = False
    self.closedByMe = False
    self.failedByMe = False
    self.droppedByMe = False
    self.wasClean = False
    self.wasNotCleanReason = None
    self.wasServerConnectionDropTimeout = False
    self.wasOpenHandshakeTimeout = False
    self.wasCloseHandshakeTimeout = False
    self.wasServingFlashSocketPolicyFile = False
    self.localCloseCode = None
    self.localCloseReason = None
    self.remoteCloseCode = None
    self.remoteCloseReason = None
    self.openHandshakeTimeoutCall = None
    self.closeHandshakeTimeoutCall = None
    self.autoPingTimeoutCall = None
    self.autoPingPending = None
    self.autoPingPendingCall = None
    self.autoPingPendingSeq = 0
    self.autoPingPendingSent = None


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
        self._originPatterns = None if allowedOrigins is None else wildcards2patterns(self.allowedOrigins)
        self._protocolClass = _switchedClass(factory.protocol)
        self._optionNames: list[str] | None = None
        self._readOptions: Callable[[Any], tuple[Any, ...]] | None = None
        # autobahn's own onConnect accepts with no subprotocol, after an
        # eagerly formatted debug line: skip calling it.
        self._defaultOnConnect = (
            getattr(self._protocolClass, "onConnect", None) is _wsprotocol.WebSocketServerProtocol.onConnect
        )

    def negotiate(self, request: UpgradeRequest) -> Decision | Deferred[Decision]:
        """Check the RFC 6455 handshake, then ask the protocol's C{onConnect}."""
        if request.method != b"GET":
            return _refuse(405, "a WebSocket handshake must be a GET", ((b"Allow", b"GET"),))
        headers, counts = _autobahnHeaders(request)
        if counts.get("host") != 1:
            return _refuse(400, "a WebSocket handshake needs exactly one Host")
        if counts.get("sec-websocket-version") != 1 or headers["sec-websocket-version"] != "13":
            return _refuse(
                426,
                "this server speaks WebSocket version 13",
                ((b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"), *_VERSION_HEADERS),
            )
        key = headers.get("sec-websocket-key", "").strip().encode("latin-1")
        try:
            valid = counts["sec-websocket-key"] == 1 and len(base64.b64decode(key, validate=True)) == 16
        except (KeyError, binascii.Error, ValueError):
            valid = False
        if not valid:
            return _refuse(400, "Sec-WebSocket-Key must be 16 bytes in base64")
        host = headers["host"].strip()
        origin = headers.get("origin", "")
        if origin and not self._originAllowed(origin, host, request.secure):
            return _refuse(403, f"origin {origin!r} not allowed")
        offered = headers.get("sec-websocket-protocol")
        protocols = [p.strip() for p in offered.split(",") if p.strip()] if offered else []
        if len(set(protocols)) != len(protocols):
            return _refuse(400, "duplicate Sec-WebSocket-Protocol values")
        if 0 < self.factory.maxConnections <= self.factory.countConnections:
            return _refuse(503, "maximum number of connections reached")

        proto = self._protocolClass()
        proto.factory = self.factory
        self._copyOptions(proto)
        target = request.target.decode("latin-1")
        if target.startswith("/"):
            path, _, query = target.partition("?")
        else:
            parts = urlsplit(target)
            path, query = parts.path, parts.query
        hostName = host.rsplit(":", 1)[0] if ":" in host and not host.endswith("]") else host
        proto.peer = _peerString(request.peer)
        proto.http_request_data = None
        proto.http_status_line = f"GET {target} HTTP/1.1"
        proto.http_headers = headers
        proto.http_request_uri = target
        proto.http_request_path = path
        proto.http_request_params = parse_qs(query) if query else {}
        proto.http_request_host = hostName
        proto.websocket_version = 13
        proto.websocket_origin = origin
        proto.websocket_protocols = protocols
        extensions = headers.get("sec-websocket-extensions")
        proto.websocket_extensions = proto._parseExtensionsHeader(extensions) if extensions else []
        proto._wskey = key.decode("ascii")
        proto._perMessageCompress = None
        if self._defaultOnConnect:
            return self._accept(proto, key, None)
        connectionRequest = ConnectionRequest(
            proto.peer,
            headers,
            hostName,
            path,
            proto.http_request_params,
            13,
            origin,
            protocols,
            proto.websocket_extensions,
        )
        try:
            answer = proto.onConnect(connectionRequest)
        except ConnectionDeny as deny:
            return _refuse(deny.code, deny.reason or "denied")
        if isinstance(answer, Deferred) or txaio.is_future(answer):  # type: ignore[attr-defined]
            deferred: Deferred[Decision] = maybeDeferred(lambda: answer)
            return deferred.addCallbacks(lambda result: self._accept(proto, key, result), self._denied)
        return self._accept(proto, key, answer)

    def _copyOptions(self, proto: Any) -> None:
        """
        Copy the factory's options the protocol does not set itself, as
        autobahn's C{_connectionMade} does (read afresh for each connection,
        so C{setProtocolOptions} calls made later still apply).
        """
        if self._optionNames is None:
            names = [name for name in proto.CONFIG_ATTRS if not hasattr(proto, name)]
            self._optionNames = names
            self._readOptions = attrgetter(*names) if len(names) > 1 else None
        names = self._optionNames
        if self._readOptions is None:
            for name in names:
                setattr(proto, name, getattr(self.factory, name))
        else:
            proto.__dict__.update(zip(names, self._readOptions(self.factory), strict=True))

    @staticmethod
    def _denied(reason: Failure) -> Decision:
        """A C{ConnectionDeny} from an asynchronous C{onConnect} is a refusal."""
        reason.trap(ConnectionDeny)
        deny: Any = reason.value
        return _refuse(deny.code, deny.reason or "denied")

    def _originAllowed(self, origin: str, host: str, secure: bool) -> bool:
        """Apply L{allowedOrigins} to the request's C{Origin}."""
        try:
            originTuple = _wsprotocol._url_to_origin(origin)
        except ValueError:
            return False
        if originTuple == "null":
            # Sandboxed frames and file: pages send "null": it is never this
            # page's origin, so only an explicit pattern list lets autobahn's
            # allowNullOrigin (on by default) decide.
            return self._originPatterns is not None and bool(self.factory.allowNullOrigin)
        if self._originPatterns is not None:
            return _wsprotocol._is_same_origin(
                originTuple, originTuple[0], originTuple[2], self._originPatterns
            )
        scheme = "https" if secure else "http"
        try:
            here = urlsplit(f"{scheme}://{host}")
            herePort = here.port or (443 if secure else 80)
        except ValueError:
            return False
        return originTuple == (scheme, (here.hostname or "").lower(), herePort)

    def _accept(self, proto: Any, key: bytes, answer: Any) -> Decision:
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
        response.append((b"Sec-WebSocket-Accept", acceptKey(key)))
        offers = []
        for extension, params in proto.websocket_extensions:
            pmce: Any = PERMESSAGE_COMPRESSION_EXTENSION.get(extension)
            if pmce is not None:
                try:
                    offers.append(pmce["Offer"].parse(params))
                except Exception as error:  # noqa: BLE001 - autobahn raises bare Exceptions here
                    return _refuse(400, f"bad extension offer: {error}")
        if offers:
            accept = proto.perMessageCompressionAccept(offers)
            if accept is not None:
                pmce = PERMESSAGE_COMPRESSION_EXTENSION[accept.EXTENSION_NAME]
                proto._perMessageCompress = pmce["PMCE"].create_from_offer_accept(True, accept)
                proto.websocket_extensions_in_use.append(proto._perMessageCompress)
                response.append((b"Sec-WebSocket-Extensions", accept.get_extension_string().encode("ascii")))
        return Accept(headers=tuple(response), upgrade=("websocket",), protocol=proto)

    def buildProtocol(self, request: UpgradeRequest, site: object) -> Any:
        """Not used: L{negotiate} builds the protocol (C{onConnect} needs it)."""
        raise NotImplementedError("WebSocketUpgrade builds its protocol in negotiate")


class WebSocketEndpoint(UpgradeRequiredResource):
    """
    A WebSocket endpoint in the resource tree, served by an autobahn factory.

    A plain request gets C{426 Upgrade Required} with C{Upgrade: websocket}
    and C{Sec-WebSocket-Version: 13}.
    """

    def __init__(self, factory: WebSocketServerFactory, allowedOrigins: Sequence[str] | None = None) -> None:
        self.upgrade = WebSocketUpgrade(factory, allowedOrigins)
        super().__init__([self.upgrade], extraHeaders=_VERSION_HEADERS)
