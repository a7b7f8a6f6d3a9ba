"""
The one place that touches autobahn's private protocol state.

Theory of operation
===================
twisted.web has already read the handshake, so the protocol the factory
names must start in the OPEN state without parsing it again. Two ways:

  - the fast path (L{_openDirectly}): set by hand what autobahn's
    C{_connectionMade} and C{succeedHandshake} leave behind, and replace the
    few methods that format debug log arguments eagerly on every
    connection, read or write (L{_QUIET}: about 16 µs each, even with debug
    logging off). Used only when every autobahn function it replaces or
    mirrors has a known fingerprint (L{FINGERPRINTS}, see L{fingerprint}):
    the versions it was checked against;
  - the portable path (L{_connectionMadePortable}): on any other autobahn,
    let autobahn's own C{_connectionMade} run, then its C{succeedHandshake}
    with the answer C{onConnect} gave, dropping the C{101} it writes (the
    channel has sent ours). Slower, same behaviour.

L{bringUpPath} says which, and logs it once. C{tests/test_websocket_compat.py}
fails loudly when a fingerprint changes, and compares both paths' state with
autobahn's own handshake.

Autobahn reads a TLS connection's C{tls-unique} channel binding and peer
certificate only from Twisted's own TLS transport class;
L{_seeThroughWrappers} makes the two functions it reads them with look
under txupgrade's transport wrappers (the daemon's byte counting, the PROXY
protocol reader), on both paths; the peer address is still the wrappers'.

Everything here also frees a closed protocol by reference counting
(L{breakCycles}): autobahn's protocol keeps cycles (a resolved C{is_closed}
whose result is the protocol, timer handles holding bound methods) that only
Python's cycle collector would otherwise free.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from collections import deque
from collections.abc import Callable
from functools import cache
from typing import Any

import autobahn
import txaio
from autobahn.twisted import util as _twistedutil
from autobahn.twisted import websocket as _twistedwebsocket
from autobahn.twisted.util import create_transport_details
from autobahn.twisted.websocket import WebSocketAdapterProtocol
from autobahn.util import ObservableMixin, _is_tls_error, _maybe_tls_reason
from autobahn.wamp.types import TransportDetails
from autobahn.websocket import protocol as _wsprotocol
from autobahn.websocket.compress import PERMESSAGE_COMPRESSION_EXTENSION
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txupgrade.interfaces import IDrainable
from txupgrade.protocols.websocket._handshake import Handshake
from txupgrade.wrappers import innermostTransport

__all__ = [
    "FINGERPRINTS",
    "breakCycles",
    "bringUpPath",
    "fingerprint",
    "fingerprintMismatches",
    "inflationBounded",
    "prepareProtocol",
    "switchedClass",
    "usePerMessageCompress",
]

_log = Logger()
_WebSocketProtocol = _wsprotocol.WebSocketProtocol
_ObservableMixin = ObservableMixin
_ServerProtocol = _wsprotocol.WebSocketServerProtocol


def _fingerprinted() -> dict[str, Callable[..., Any]]:
    """Every autobahn function txupgrade replaces or mirrors, by qualified name."""
    return {
        # Mirrored by _openDirectly and _connectionMadeInit.
        "WebSocketProtocol._connectionMade": _WebSocketProtocol._connectionMade,
        "WebSocketServerProtocol._connectionMade": _ServerProtocol._connectionMade,
        "WebSocketServerProtocol.succeedHandshake": _ServerProtocol.succeedHandshake,
        # Mirrored by prepareProtocol (the fields it fills in) and _wshandshake.
        "WebSocketServerProtocol.processHandshake": _ServerProtocol.processHandshake,
        "WebSocketProtocol._parseExtensionsHeader": _WebSocketProtocol._parseExtensionsHeader,
        "_url_to_origin": _wsprotocol._url_to_origin,
        "_is_same_origin": _wsprotocol._is_same_origin,
        # Skipped when not overridden (it only logs).
        "WebSocketServerProtocol.onConnect": _ServerProtocol.onConnect,
        # Replaced by the quiet methods (_QUIET).
        "WebSocketAdapterProtocol.connectionMade": WebSocketAdapterProtocol.connectionMade,
        "WebSocketAdapterProtocol.connectionLost": WebSocketAdapterProtocol.connectionLost,
        "WebSocketAdapterProtocol.dataReceived": WebSocketAdapterProtocol.dataReceived,
        "WebSocketServerProtocol._connectionLost": _ServerProtocol._connectionLost,
        "WebSocketProtocol.sendData": _WebSocketProtocol.sendData,
        "WebSocketProtocol.onMessageEnd": _WebSocketProtocol.onMessageEnd,
        # What _onMessageEndQuiet skips when nothing listens (a resolved future, no other effect).
        "ObservableMixin.fire": _ObservableMixin.fire,
        # What breakCycles undoes.
        "WebSocketProtocol._connectionLost": _WebSocketProtocol._connectionLost,
    }


#: The fingerprints (see L{fingerprint}) of L{_fingerprinted}'s functions in
#: the autobahn versions the fast path was checked against: 24.4.2 and
#: 25.12.2 (identical), and 26.10.2.
FINGERPRINTS: dict[str, frozenset[str]] = {
    "WebSocketProtocol._connectionMade": frozenset({"15e3e80ebcf1"}),
    "WebSocketServerProtocol._connectionMade": frozenset({"a2b84f121e86"}),
    "WebSocketServerProtocol.succeedHandshake": frozenset({"885dc4d286c6", "c821bb556a96"}),
    "WebSocketServerProtocol.processHandshake": frozenset({"0541edf6ef9b", "70516bcd9a4c"}),
    "WebSocketProtocol._parseExtensionsHeader": frozenset({"13ea1baf6da6"}),
    "_url_to_origin": frozenset({"5ea78bb76796", "0b181c38d88d"}),
    "_is_same_origin": frozenset({"5d5880b20ef6"}),
    "WebSocketServerProtocol.onConnect": frozenset({"8ed99a7cf42d"}),
    "WebSocketAdapterProtocol.connectionMade": frozenset({"295ceb533ad9"}),
    "WebSocketAdapterProtocol.connectionLost": frozenset({"a62a6959b720"}),
    "WebSocketAdapterProtocol.dataReceived": frozenset({"14791b06dad8"}),
    "WebSocketServerProtocol._connectionLost": frozenset({"f0abd11dc3b0"}),
    "WebSocketProtocol.sendData": frozenset({"1743676d9de7"}),
    "WebSocketProtocol.onMessageEnd": frozenset({"632a8d0be9f9"}),
    "ObservableMixin.fire": frozenset({"22a1cf34ff3a"}),
    "WebSocketProtocol._connectionLost": frozenset({"c1da5a647735", "b80fc1cfb9ae"}),
}


class _Normalize(ast.NodeTransformer):
    """Drop what does not change behaviour: docstrings and type annotations."""

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.returns = None
        first = node.body[0] if node.body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            if isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
        self.generic_visit(node)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.annotation = None
        return node


def fingerprint(function: Callable[..., Any]) -> str:
    """
    A short hash of C{function}'s source, insensitive to formatting, quotes,
    comments, docstrings and type annotations (it hashes the syntax tree).

    @raise OSError: when the source is not available.
    """
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return hashlib.sha256(ast.dump(_Normalize().visit(tree)).encode()).hexdigest()[:12]


def fingerprintMismatches() -> dict[str, str]:
    """The functions whose fingerprint is not in L{FINGERPRINTS}, with what it is now."""
    mismatches = {}
    for name, function in _fingerprinted().items():
        try:
            now = fingerprint(function)
        except (OSError, TypeError, SyntaxError) as error:
            now = f"no source ({error})"
        if now not in FINGERPRINTS.get(name, frozenset()):
            mismatches[name] = now
    return mismatches


@cache
def bringUpPath() -> str:
    """
    C{"fast"} when this autobahn's internals are the fingerprinted ones,
    C{"portable"} otherwise; logged once.
    """
    mismatches = fingerprintMismatches()
    if not mismatches:
        _log.info("autobahn {version}: fast WebSocket bring-up", version=autobahn.__version__)
        return "fast"
    _log.info(
        "autobahn {version} is not a tested version ({changed} changed): "
        "portable WebSocket bring-up through its succeedHandshake",
        version=autobahn.__version__,
        changed=", ".join(sorted(mismatches)),
    )
    return "portable"


@cache
def inflationBounded() -> bool:
    """
    Whether this autobahn stops inflating a compressed message at the
    protocol's C{maxMessagePayloadSize} (26.10 and later). Older ones inflate
    a whole frame before checking, so a frame of a few kilobytes can take
    gigabytes: without this, accepting C{permessage-deflate} unbounds memory.
    """
    from autobahn.websocket.compress_deflate import PerMessageDeflate

    try:
        parameters = inspect.signature(PerMessageDeflate.decompress_message_data).parameters
    except (TypeError, ValueError):
        return False
    return "max_output_len" in parameters


def _seeThroughWrappers(module: Any) -> None:
    """
    Make C{module}'s TLS-detail functions take the transport under
    txupgrade's wrappers (L{innermostTransport}); done once, at import.
    """
    for name in ("transport_channel_id", "extract_peer_certificate"):
        original = getattr(module, name, None)
        if original is None or getattr(original, "_txupgradeUnwraps", False):
            continue  # not in this autobahn release (24.x has no extract_peer_certificate)

        def unwrapping(transport: Any, *args: Any, _original: Any = original) -> Any:
            return _original(innermostTransport(transport), *args)

        unwrapping._txupgradeUnwraps = True  # type: ignore[attr-defined]
        unwrapping.__doc__ = original.__doc__
        setattr(module, name, unwrapping)


# util's own create_transport_details calls util's; websocket's _onOpen its imported copies.
_seeThroughWrappers(_twistedutil)
_seeThroughWrappers(_twistedwebsocket)


def prepareProtocol(proto: Any, handshake: Handshake, peer: str) -> None:
    """Fill in the fields autobahn's C{processHandshake} would have set."""
    proto.__dict__.update(
        peer=peer,
        http_request_data=None,
        http_status_line=f"GET {handshake.target} HTTP/1.1",
        http_headers=handshake.headers,
        http_request_uri=handshake.target,
        http_request_path=handshake.path,
        http_request_params=handshake.params,
        http_request_host=handshake.hostName,
        websocket_version=13,
        websocket_origin=handshake.origin,
        websocket_protocols=list(handshake.protocols),
        websocket_extensions=list(handshake.extensions),
        _wskey=handshake.key.decode("ascii"),
        _perMessageCompress=None,
    )


def usePerMessageCompress(proto: Any, accept: Any) -> None:
    """Set up the compression C{perMessageCompressionAccept} agreed to (as C{succeedHandshake})."""
    pmce: Any = PERMESSAGE_COMPRESSION_EXTENSION[accept.EXTENSION_NAME]
    proto._perMessageCompress = pmce["PMCE"].create_from_offer_accept(True, accept)
    proto.websocket_extensions_in_use.append(proto._perMessageCompress)


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
        if self.send_queue is _NO_SEND_QUEUE:
            self.send_queue = deque()
        _WebSocketProtocol.sendData(self, data, sync, chopsize)
        return
    self.transport.write(data)
    if self.state == _WebSocketProtocol.STATE_OPEN:
        self.trafficStats.outgoingOctetsWireLevel += len(data)
    if self.logOctets:
        self.logTxOctets(data, False)


def _onMessageEndQuiet(self: Any) -> None:
    """
    C{WebSocketProtocol.onMessageEnd} without firing its C{message} event
    when nothing listens to it (no C{on()}): autobahn then builds a resolved
    future and adds an errback to it for each message, a third of a small
    echo's work, to no effect.
    """
    if self._listeners is not None:
        _WebSocketProtocol.onMessageEnd(self)
        return
    if not self.failedByMe:
        payload = b"".join(self.message_data)
        if self.trackedTimings:
            self.trackedTimings.track("onMessage")
        self._onMessage(payload, self.message_is_binary)
    self.message_data = None


#: Methods whose autobahn versions format debug log arguments eagerly (or,
#: C{onMessageEnd}, fire an event no one listens to), and their quiet
#: equivalents (fast path only). A replacement is used only
#: where the user's class does not override the method.
_QUIET = (
    ("connectionMade", WebSocketAdapterProtocol, _connectionMadeQuiet),
    ("connectionLost", WebSocketAdapterProtocol, _connectionLostQuiet),
    ("dataReceived", WebSocketAdapterProtocol, _WebSocketProtocol._dataReceived),
    ("_connectionLost", _ServerProtocol, _serverConnectionLostQuiet),
    ("sendData", _WebSocketProtocol, _sendDataQuiet),
    ("onMessageEnd", _WebSocketProtocol, _onMessageEndQuiet),
)


def _openDirectly(self: Any) -> None:
    """
    What autobahn's C{_connectionMade} and C{succeedHandshake} leave behind,
    for a handshake twisted.web has already read and txupgrade answered.
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


#: The constant part of the per-connection state C{_connectionMade} sets.
_INITIAL_STATE = {
    "trackedTimings": None,
    "send_state": _WebSocketProtocol.SEND_STATE_GROUND,
    "data": b"",
    "triggered": False,
    "wasMaxFramePayloadSizeExceeded": False,
    "wasMaxMessagePayloadSizeExceeded": False,
    "closedByMe": False,
    "failedByMe": False,
    "droppedByMe": False,
    "wasClean": False,
    "wasNotCleanReason": None,
    "wasServerConnectionDropTimeout": False,
    "wasOpenHandshakeTimeout": False,
    "wasCloseHandshakeTimeout": False,
    "wasServingFlashSocketPolicyFile": False,
    "localCloseCode": None,
    "localCloseReason": None,
    "remoteCloseCode": None,
    "remoteCloseReason": None,
    "openHandshakeTimeoutCall": None,
    "closeHandshakeTimeoutCall": None,
    "autoPingTimeoutCall": None,
    "autoPingPending": None,
    "autoPingPendingCall": None,
    "autoPingPendingSeq": 0,
    "autoPingPendingSent": None,
}


def _connectionMadeInit(self: Any) -> None:
    """
    The per-connection state of C{WebSocketProtocol._connectionMade}, minus
    its debug dump: the constant part is the switched class's (L{switchedClass}).
    """
    state = self.__dict__
    self.setTrackTimings(self.trackTimings)
    state["trafficStats"] = _wsprotocol.TrafficStats()
    if getattr(type(self), "send_queue", None) is not _NO_SEND_QUEUE:
        state["send_queue"] = deque()
    state["utf8validator"] = _wsprotocol.Utf8Validator()


#: The send queue of a protocol that has queued nothing (L{_sendDataQuiet}
#: makes its deque): an idle WebSocket holds none.
_NO_SEND_QUEUE: Any = ()


class _DropHandshakeResponse:
    """
    The transport while autobahn's C{succeedHandshake} runs on the portable
    path: writes before the OPEN state (its own C{101}) are dropped, since
    the channel has sent txupgrade's; everything else reaches C{transport}.
    """

    def __init__(self, proto: Any, transport: Any) -> None:
        self._proto = proto
        self.wrappedTransport = transport

    def write(self, data: bytes) -> None:
        if self._proto.state == _WebSocketProtocol.STATE_OPEN:
            self.wrappedTransport.write(data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrappedTransport, name)


def _connectionMadePortable(original: Callable[[Any], None]) -> Callable[[Any], None]:
    """
    The portable path's C{_connectionMade}: autobahn's own (C{original}),
    then its C{succeedHandshake} with C{onConnect}'s answer.
    """

    def _connectionMade(self: Any) -> None:
        original(self)
        transport = self.transport
        self.transport = _DropHandshakeResponse(self, transport)
        try:
            self.succeedHandshake(self.__dict__.pop("_txupgradeAnswer", None))
        finally:
            if isinstance(self.transport, _DropHandshakeResponse):
                self.transport = transport

    return _connectionMade


class _IsClosed:
    """
    C{is_closed}: autobahn's future while the protocol lives; once
    L{breakCycles} dropped it, a new fired Deferred on each read, with the
    protocol as result as autobahn's, that the protocol does not keep.
    """

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        future = obj.__dict__.get("is_closed")
        return future if future is not None else succeed(obj)

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__["is_closed"] = value


def breakCycles(proto: Any) -> None:
    """
    Drop a closed protocol's references that form cycles, so that reference
    counting frees it: the resolved C{is_closed} future (whose result is the
    protocol), timer handles that hold its bound methods, and the answer
    kept for the portable path. (The transport is left: Twisted's own
    transports drop their protocol when the connection is lost.)
    """
    future = proto.__dict__.get("is_closed")
    if isinstance(future, Deferred) and future.called:
        del proto.__dict__["is_closed"]
    for name in (
        "openHandshakeTimeoutCall",
        "closeHandshakeTimeoutCall",
        "autoPingTimeoutCall",
        "autoPingPendingCall",
    ):
        call = proto.__dict__.get(name)
        if call is not None:
            try:
                call.cancel()
            except Exception:  # noqa: BLE001 - already fired or cancelled
                pass
            proto.__dict__[name] = None
    proto.__dict__.pop("_txupgradeAnswer", None)


def _thenBreakCycles(connectionLost: Callable[[Any, Failure], None]) -> Callable[[Any, Failure], None]:
    """C{connectionLost}, then L{breakCycles}."""

    def lost(self: Any, reason: Failure = connectionDone) -> None:
        try:
            connectionLost(self, reason)
        finally:
            breakCycles(self)

    return lost


_switchedClasses: dict[tuple[type, str], type] = {}


def _drainGoingAway(self: Any) -> None:
    """
    L{IDrainable}: the server is going away: close with 1001 (RFC 6455
    §7.4.1), through C{sendCloseFrame} (C{sendClose} allows applications
    only 1000 and 3000-4999).
    """
    self.sendCloseFrame(code=1001, reasonUtf8=b"going away", isReply=False)


def switchedClass(cls: type, path: str) -> type:
    """
    A subclass of the factory's protocol class that starts in the OPEN state
    on C{path} (C{"fast"} or C{"portable"}, see L{bringUpPath}).

    It replaces autobahn's internal C{_connectionMade} (a user's
    C{connectionMade} override still runs, and reaches it) and, on the fast
    path where the user's class does not override them, the L{_QUIET} methods.
    """
    switched = _switchedClasses.get((cls, path))
    if switched is None:
        namespace: dict[str, Any] = {"__module__": cls.__module__, "is_closed": _IsClosed()}
        if path == "fast":
            namespace["_connectionMade"] = _openDirectly
            namespace["_connectionMadeInit"] = _connectionMadeInit
            for name, owner, quiet in _QUIET:
                if getattr(cls, name) is getattr(owner, name):
                    namespace[name] = quiet
            # The constant initial state as class attributes, shadowed by the
            # instance's once it changes: an idle WebSocket's dict stays small.
            namespace.update(_INITIAL_STATE)
            if namespace.get("sendData") is _sendDataQuiet:
                namespace["send_queue"] = _NO_SEND_QUEUE
        else:
            namespace["_connectionMade"] = _connectionMadePortable(cls._connectionMade)  # type: ignore[attr-defined]
        lost: Any = namespace.get("connectionLost") or cls.connectionLost  # type: ignore[attr-defined]
        namespace["connectionLost"] = _thenBreakCycles(lost)
        if not hasattr(cls, "drain"):
            namespace["drain"] = _drainGoingAway
        switched = type(cls.__name__, (cls,), namespace)
        implementer(IDrainable)(switched)
        _switchedClasses[(cls, path)] = switched
    return switched
