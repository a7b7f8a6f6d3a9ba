"""
Guards on autobahn's private state, and in-memory tests of the handshake
decisions of L{txupgrade.protocols.websocket.WebSocketUpgrade}.

txupgrade brings an autobahn protocol up directly in the OPEN state, setting
by hand what autobahn's own C{connectionMade}/C{_connectionMade} and
handshake would have set (L{txupgrade.protocols.websocket._openDirectly}). The guards
here build the same factory's protocol both ways and compare their
attributes, so that an autobahn upgrade that adds or renames state fails
loudly here instead of in production.
"""

from __future__ import annotations

import base64
from typing import Any

import autobahn
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from tests.support.http import parseHead
from tests.support.websocket import OP_CLOSE, OP_TEXT, closePayload, decodeAll, encodeFrame, handshakeBytes
from txupgrade.channel import UpgradeSite
from txupgrade.protocols.websocket import WebSocketEndpoint, acceptKey
from txupgrade.protocols.websocket import _autobahncompat as _compat
from txupgrade.resource import DirectoryResource
from txupgrade.testing import MemoryConnection

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
HOST = IPv4Address("TCP", "127.0.0.1", 8080)
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="

#: Attributes autobahn's own handshake sets that txupgrade deliberately
#: leaves out or sets differently: the raw request bytes (txupgrade never
#: re-serializes the parsed request, so C{http_request_data} is L{None}) and
#: the raw 101 bytes (written by the channel, not by autobahn).
KNOWN_DIFFERENCES = {"http_request_data", "http_response_data"}


def handshake(
    target: bytes = b"/ws",
    *,
    key: bytes | None = KEY,
    host: bytes | None = b"127.0.0.1:8080",
    **kwargs: Any,
) -> bytes:
    """A handshake to L{HOST} with the RFC's sample key, unless told otherwise."""
    return handshakeBytes(target, key=key, host=host, **kwargs)


class _EchoProtocol(WebSocketServerProtocol):
    """Echo; C{onConnect} answers with the factory's C{answer} callable."""

    def onConnect(self, request: ConnectionRequest) -> Any:
        self.factory.requests.append(request)
        return self.factory.answer(request)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


class _EchoFactory(WebSocketServerFactory):
    """
    A factory of L{_EchoProtocol}s.

    @ivar requests: Every C{ConnectionRequest} its protocols saw.
    @ivar answer: Called with each request; its result is C{onConnect}'s.
    """

    protocol = _EchoProtocol

    def __init__(self, answer: Any) -> None:
        super().__init__()
        self.requests: list[ConnectionRequest] = []
        self.answer = answer


def _factory(answer: Any = lambda request: None, **options: Any) -> _EchoFactory:
    """
    An echo factory with C{options}; without autobahn's handshake timers,
    which run on the global reactor (these tests use no reactor).
    """
    factory = _EchoFactory(answer)
    factory.openHandshakeTimeout = 0
    factory.closeHandshakeTimeout = 0
    if options:
        # (setProtocolOptions also resets allowNullOrigin unless given.)
        factory.setProtocolOptions(**options)
    return factory


def _site(root: Resource, **kwargs: Any) -> UpgradeSite:
    """A site whose HTTP timeouts run on a clock nobody advances."""
    return UpgradeSite(root, reactor=MemoryReactorClock(), **kwargs)


def _response(data: bytes) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    """The status, headers (by lower-case name) and what follows the head of the first response in C{data}."""
    parsed = parseHead(data)
    assert parsed is not None, f"no whole response head in {data!r}"
    head, rest = parsed
    return head.code, head.byName(), rest


class AutobahnPrivateStateTests(SynchronousTestCase):
    """txupgrade's OPEN-state bring-up still matches autobahn's own."""

    #: Initial state kept as class attributes (the fast bring-up only).
    classState: tuple[str, ...] = ("wasClean", "closedByMe")

    def _standard(self, factory: WebSocketServerFactory, handshakeBytes: bytes | None) -> Any:
        """autobahn's own server protocol, connected, optionally after C{handshakeBytes}."""
        proto: Any = factory.buildProtocol(PEER)
        proto.makeConnection(StringTransport(hostAddress=HOST, peerAddress=PEER))
        if handshakeBytes is not None:
            proto.dataReceived(handshakeBytes)
            self.assertEqual(proto.state, WebSocketServerProtocol.STATE_OPEN)
        return proto

    def _switched(self, factory: WebSocketServerFactory, handshakeBytes: bytes) -> Any:
        """The same factory's protocol, after a txupgrade switch in memory."""
        root = DirectoryResource()
        root.putChild(b"ws", WebSocketEndpoint(factory))
        conn = MemoryConnection(_site(root), peer=PEER, host=HOST)
        conn.send(handshakeBytes)
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 101 "), conn.received)
        proto = conn.server._channel
        self.assertIsInstance(proto, _EchoProtocol)
        return proto

    def _state(self, proto: Any, names: set[str]) -> set[str]:
        """
        Which of C{names} C{proto} has: in its dict, or (the options, the
        constant initial state) as attributes of the class txupgrade made.
        """
        return set(vars(proto)) | {name for name in names if hasattr(proto, name)}

    def _assertNoneMissing(self, expected: set[str], actual: set[str], when: str) -> None:
        missing = sorted(expected - actual)
        if missing:
            self.fail(
                f"autobahn {autobahn.__version__} sets attributes {when} that txupgrade's "
                f"OPEN-state bring-up (txupgrade/protocols/websocket/__init__.py, _openDirectly and "
                f"_connectionMadeInit) does not: {missing}"
            )

    def test_connectionMadeState(self) -> None:
        """Every attribute autobahn's C{connectionMade} creates is set on a switched protocol."""
        factory = _factory()
        standard = set(vars(self._standard(factory, None)))
        ours = self._state(self._switched(factory, handshake()), standard)
        self._assertNoneMissing(standard, ours, "in connectionMade/_connectionMade")

    def test_openState(self) -> None:
        """
        Every attribute autobahn's own handshake leaves on an open protocol is
        set on a switched one (but for L{KNOWN_DIFFERENCES}), and none more.
        """
        factory = _factory()
        standard = set(vars(self._standard(factory, handshake())))
        switched = self._switched(factory, handshake())
        ours = self._state(switched, standard)
        self._assertNoneMissing(standard - KNOWN_DIFFERENCES, ours, "by the end of the handshake")
        self.assertEqual(
            sorted(set(vars(switched)) - standard), [], "txupgrade sets attributes autobahn does not"
        )

    def test_messageListeners(self) -> None:
        """
        A message reaches C{onMessage}, and the listeners of autobahn's
        C{message} event (C{on()}) too when there are some (the fast path
        skips the event only while nothing listens).
        """
        root = DirectoryResource()
        root.putChild(b"ws", WebSocketEndpoint(_factory()))
        conn = MemoryConnection(_site(root), peer=PEER, host=HOST)
        conn.send(handshake())
        proto = conn.server._channel
        _code, _headers, rest = _response(conn.received)
        self.assertEqual(rest, b"")
        conn.send(encodeFrame(OP_TEXT, b"one", maskKey=b"abcd"))
        heard: list[tuple[bytes, bool]] = []
        proto.on("message", lambda payload, is_binary: heard.append((payload, is_binary)))
        conn.send(encodeFrame(OP_TEXT, b"two", maskKey=b"abcd"))
        frames = decodeAll(_response(conn.received)[2])
        self.assertEqual([frame[2] for frame, _rest in frames], [b"one", b"two"])
        self.assertEqual(heard, [(b"two", False)])

    def test_openStateValues(self) -> None:
        """
        The plain values (state, options, handshake fields) of a switched
        protocol equal those of autobahn's own after the same handshake.
        """
        factory = _factory(
            lambda request: "chat",
            autoPingInterval=0,
            maxFramePayloadSize=1234,
            echoCloseCodeReason=True,
        )
        extra = [(b"Sec-WebSocket-Protocol", b"chat, other"), (b"Origin", b"http://127.0.0.1:8080")]
        standard = self._standard(factory, handshake(b"/ws?a=1", extra=extra))
        ours = self._switched(factory, handshake(b"/ws?a=1", extra=extra))
        plain = (bool, int, float, str, bytes, list, dict, tuple, type(None))
        differing = []
        for name in sorted(self._state(ours, set(vars(standard))) & set(vars(standard)) - KNOWN_DIFFERENCES):
            theirs, mine = getattr(standard, name), getattr(ours, name)
            if isinstance(theirs, plain) and theirs != mine:
                differing.append(f"{name}: autobahn {theirs!r}, txupgrade {mine!r}")
        self.assertEqual(differing, [])
        self.assertEqual(ours.state, WebSocketServerProtocol.STATE_OPEN)
        self.assertEqual(ours.websocket_protocol_in_use, "chat")
        self.assertEqual(ours.maxFramePayloadSize, 1234)
        self.assertEqual(factory.countConnections, 2)

    def test_optionsSetLater(self) -> None:
        """C{setProtocolOptions} after a connection: the next protocol has the new value."""
        factory = _factory(maxFramePayloadSize=1234)
        root = DirectoryResource()
        root.putChild(b"ws", WebSocketEndpoint(factory))
        site = _site(root)
        protocols = []
        for size in (1234, 4321):
            factory.setProtocolOptions(maxFramePayloadSize=size)
            conn = MemoryConnection(site, peer=PEER, host=HOST)
            conn.send(handshake())
            self.assertTrue(conn.received.startswith(b"HTTP/1.1 101 "), conn.received)
            protocols.append(conn.server._channel)
        self.assertEqual([p.maxFramePayloadSize for p in protocols], [1234, 4321])

    def test_functionOption(self) -> None:
        """A function option stays a plain function on the protocol (never bound as a method)."""
        seen: list[Any] = []

        def accept(offers: Any) -> None:
            seen.append(offers)

        ours = self._switched(_factory(perMessageCompressionAccept=accept), handshake())
        self.assertIs(ours.perMessageCompressionAccept, accept)
        ours.perMessageCompressionAccept(["offer"])
        self.assertEqual(seen, [["offer"]])

    def test_idleStateIsSmall(self) -> None:
        """The options and the constant initial state are not copied into each protocol's dict."""
        ours = self._switched(_factory(), handshake())
        for name in ("maxFramePayloadSize", "autoPingInterval", "failByDrop", *self.classState):
            with self.subTest(name):
                self.assertNotIn(name, vars(ours))
                self.assertTrue(hasattr(ours, name))


class AutobahnPortableStateTests(AutobahnPrivateStateTests):
    """The portable bring-up (autobahn's own C{succeedHandshake}) leaves the same state."""

    classState = ()

    def setUp(self) -> None:
        self.patch(_compat, "bringUpPath", lambda: "portable")


#: One function written three ways: reformatted and annotated (the same
#: code), and with one changed constant.
_SOURCES = {
    "plain": "def f(self, x):\n    return self.g('x', x)\n",
    "reformatted": (
        "def f(self, x: int) -> int:\n"
        '    """Doc."""\n'
        "    return self.g(\n"
        '        "x",  # a comment\n'
        "        x,\n"
        "    )\n"
    ),
    "changed": "def f(self, x):\n    return self.g('y', x)\n",
}


class FingerprintTests(SynchronousTestCase):
    """The autobahn functions txupgrade replaces or mirrors are the ones it was checked against."""

    def test_fingerprints(self) -> None:
        """Every fingerprinted autobahn function has a known fingerprint (else: the portable path)."""
        mismatches = _compat.fingerprintMismatches()
        if mismatches:
            self.fail(
                f"autobahn {autobahn.__version__} changed functions that txupgrade's fast WebSocket "
                f"bring-up replaces or mirrors (now {mismatches}); txupgrade falls back to the "
                "slower portable path. Read the changes, adapt "
                "txupgrade/protocols/websocket/_autobahncompat.py (_openDirectly, _connectionMadeInit, "
                "the _QUIET methods, prepareProtocol, breakCycles) and "
                "txupgrade/protocols/websocket/_handshake.py, then add the new fingerprints to "
                "FINGERPRINTS and widen the autobahn range in setup.cfg"
            )
        self.assertEqual(_compat.bringUpPath(), "fast")

    def test_everyFunctionListed(self) -> None:
        """Every fingerprinted function has an entry in C{FINGERPRINTS}, and no entry is stale."""
        self.assertEqual(sorted(_compat._fingerprinted()), sorted(_compat.FINGERPRINTS))

    def test_fingerprintIgnoresFormatting(self) -> None:
        """Formatting, quotes, comments, docstrings and annotations do not change a fingerprint; code does."""
        functions = {}
        for name, source in _SOURCES.items():
            namespace: dict[str, Any] = {}
            exec(source, namespace)
            functions[name] = namespace["f"]
            namespace["f"].sourceName = name
        self.patch(_compat.inspect, "getsource", lambda function: _SOURCES[function.sourceName])
        prints = {name: _compat.fingerprint(function) for name, function in functions.items()}
        self.assertEqual(prints["plain"], prints["reformatted"])
        self.assertNotEqual(prints["plain"], prints["changed"])

    def test_portableWhenChanged(self) -> None:
        """A changed fingerprint selects the portable path, and says which functions in one log line."""
        self.patch(
            _compat, "FINGERPRINTS", {**_compat.FINGERPRINTS, "WebSocketProtocol.sendData": frozenset()}
        )
        events: list[Any] = []
        self.patch(_compat, "_log", Logger(observer=events.append))
        _compat.bringUpPath.cache_clear()
        self.addCleanup(_compat.bringUpPath.cache_clear)
        self.assertEqual(_compat.bringUpPath(), "portable")
        self.assertEqual(len(events), 1)
        text = formatEvent(events[0])
        self.assertIn("portable", text)
        self.assertIn("WebSocketProtocol.sendData", text)
        self.assertNotIn("\n", text)


class NegotiateTests(SynchronousTestCase):
    """The handshake decisions, through the real channel in memory."""

    chunkSize: int | None = None

    def connect(
        self,
        factory: _EchoFactory | None = None,
        allowedOrigins: list[str] | None = None,
        allowedHosts: Any = "auto",
    ) -> tuple[MemoryConnection, _EchoFactory]:
        factory = factory if factory is not None else _factory()
        root = DirectoryResource()
        root.putChild(b"ws", WebSocketEndpoint(factory, allowedOrigins))
        site = _site(root, allowedHosts=allowedHosts)
        conn = MemoryConnection(site, chunkSize=self.chunkSize, peer=PEER, host=HOST)
        return conn, factory

    def assertRefused(
        self, request: bytes, status: int, factory: _EchoFactory | None = None, **kwargs: Any
    ) -> dict[bytes, list[bytes]]:
        """C{request} gets C{status}, and the connection still serves HTTP/1.1."""
        conn, factory = self.connect(factory, **kwargs)
        opened = factory.countConnections
        conn.send(request)
        got, headers, _ = _response(conn.received)
        self.assertEqual(got, status, conn.received)
        self.assertNotIn(b" 101 ", conn.received)
        self.assertEqual(factory.countConnections, opened)
        before = len(conn.received)
        conn.send(b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n")
        self.assertTrue(conn.received[before:].startswith(b"HTTP/1.1 404 "), conn.received[before:])
        conn.close()
        self.assertEqual(self.flushLoggedErrors(), [])
        return headers

    def assertOpens(
        self, request: bytes, factory: _EchoFactory | None = None, **kwargs: Any
    ) -> dict[bytes, list[bytes]]:
        """C{request} gets a 101; a frame sent with it is echoed; the close is clean."""
        conn, factory = self.connect(factory, **kwargs)
        conn.send(request + encodeFrame(OP_TEXT, b"hello"))
        status, headers, rest = _response(conn.received)
        self.assertEqual(status, 101, conn.received)
        frames = [frame for frame, _ in decodeAll(rest)]
        self.assertEqual(frames, [(True, OP_TEXT, b"hello", False)])
        before = len(conn.received)
        conn.send(encodeFrame(OP_CLOSE, b"\x03\xe8"))
        frames = [frame for frame, _ in decodeAll(conn.received[before:])]
        self.assertEqual(frames, [(True, OP_CLOSE, b"\x03\xe8", False)])
        self.assertTrue(conn.serverTransport.disconnected)
        self.assertEqual(self.flushLoggedErrors(), [])
        return headers

    def test_valid(self) -> None:
        """A valid handshake opens, with the RFC 6455 accept key."""
        headers = self.assertOpens(handshake())
        self.assertEqual(headers[b"sec-websocket-accept"], [acceptKey(KEY)])
        self.assertEqual(headers[b"sec-websocket-accept"], [b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="])
        self.assertEqual(headers[b"upgrade"], [b"websocket"])
        self.assertEqual(headers[b"connection"], [b"Upgrade"])

    def test_missingKey(self) -> None:
        """No C{Sec-WebSocket-Key}: 400."""
        self.assertRefused(handshake(key=None), 400)

    def test_keyNot16Bytes(self) -> None:
        """A key that decodes to other than 16 bytes: 400."""
        self.assertRefused(handshake(key=base64.b64encode(b"x" * 15)), 400)
        self.assertRefused(handshake(key=base64.b64encode(b"x" * 17)), 400)

    def test_keyNotBase64(self) -> None:
        """A key that is not base64: 400."""
        self.assertRefused(handshake(key=b"!!!!!!!!!!!!!!!!!!!!!!=="), 400)

    def test_twoKeys(self) -> None:
        """Two C{Sec-WebSocket-Key} lines: 400."""
        self.assertRefused(handshake(extra=[(b"Sec-WebSocket-Key", KEY)]), 400)

    def test_version8(self) -> None:
        """
        C{Sec-WebSocket-Version: 8}: C{426 Upgrade Required} naming version
        13, with the C{Upgrade} and C{Connection} headers (RFC 6455 §4.4).
        """
        conn, _ = self.connect()
        conn.send(handshake(version=b"8"))
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 426 Upgrade Required\r\n"), conn.received)
        headers = self.assertRefused(handshake(version=b"8"), 426)
        self.assertEqual(headers[b"sec-websocket-version"], [b"13"])
        self.assertEqual(headers[b"upgrade"], [b"websocket"])
        self.assertIn(b"Upgrade", headers[b"connection"])

    def test_noVersion(self) -> None:
        """No C{Sec-WebSocket-Version}: 426 naming version 13."""
        headers = self.assertRefused(handshake(version=None), 426)
        self.assertEqual(headers[b"sec-websocket-version"], [b"13"])

    def test_post(self) -> None:
        """A POST offering websocket: 405 with C{Allow: GET}, never 101."""
        headers = self.assertRefused(handshake(method=b"POST"), 405)
        self.assertEqual(headers[b"allow"], [b"GET"])

    def test_noHost(self) -> None:
        """A handshake without C{Host}: 400 from the channel, and closed (R16)."""
        conn, factory = self.connect(None)
        conn.send(handshake(host=None))
        got, _, _ = _response(conn.received)
        self.assertEqual(got, 400, conn.received)
        self.assertNotIn(b" 101 ", conn.received)
        self.assertEqual(factory.countConnections, 0)
        self.assertTrue(conn.serverTransport.disconnected)

    def test_crossOrigin(self) -> None:
        """By default, a foreign C{Origin}: 403."""
        self.assertRefused(handshake(extra=[(b"Origin", b"http://evil.example")]), 403)

    def test_otherPortOrigin(self) -> None:
        """By default, the same host on another port is another origin: 403."""
        self.assertRefused(handshake(extra=[(b"Origin", b"http://127.0.0.1:9999")]), 403)

    def test_sameOrigin(self) -> None:
        """By default, the server's own origin opens."""
        self.assertOpens(handshake(extra=[(b"Origin", b"http://127.0.0.1:8080")]))

    def test_originAgainstAllowedHosts(self) -> None:
        """
        With a host allow-list, the origin's host is compared with it, not
        with the request's C{Host}: another allowed name of this server opens.
        """
        hosts = ["localhost", "127.0.0.1"]
        self.assertOpens(handshake(extra=[(b"Origin", b"http://localhost:8080")]), allowedHosts=hosts)
        self.assertRefused(
            handshake(extra=[(b"Origin", b"http://rebound.example:8080")]), 403, allowedHosts=hosts
        )

    def test_originWithoutAllowedHosts(self) -> None:
        """Without an allow-list (any host), the origin must name the request's C{Host}."""
        self.assertRefused(handshake(extra=[(b"Origin", b"http://localhost:8080")]), 403, allowedHosts=None)
        self.assertOpens(handshake(extra=[(b"Origin", b"http://127.0.0.1:8080")]), allowedHosts=None)

    def test_allowedOriginPattern(self) -> None:
        """With C{allowedOrigins}, an origin matching a pattern opens; another gets 403."""
        patterns = ["http://*.example.com:*"]
        self.assertOpens(handshake(extra=[(b"Origin", b"http://a.example.com:80")]), allowedOrigins=patterns)
        self.assertRefused(
            handshake(extra=[(b"Origin", b"http://127.0.0.1:8080")]), 403, allowedOrigins=patterns
        )

    def test_nullOriginSameOriginPolicy(self) -> None:
        """
        Under the default same-origin policy, C{Origin: null} (a sandboxed
        frame of any site) gets 403, although autobahn's C{allowNullOrigin}
        is on by default.
        """
        factory = _factory()
        self.assertTrue(factory.allowNullOrigin)
        self.assertRefused(handshake(extra=[(b"Origin", b"null")]), 403, factory)

    def test_nullOriginPatterns(self) -> None:
        """With C{allowedOrigins}, the factory's C{allowNullOrigin} decides on C{Origin: null}."""
        request = handshake(extra=[(b"Origin", b"null")])
        self.assertOpens(request, _factory(), allowedOrigins=["*"])
        self.assertRefused(request, 403, _factory(allowNullOrigin=False), allowedOrigins=["*"])

    def test_plainGet(self) -> None:
        """A plain GET on the endpoint: 426 with the WebSocket upgrade headers."""
        headers = self.assertRefused(handshake(upgrade=False, key=None, version=None), 426)
        self.assertEqual(headers[b"upgrade"], [b"websocket"])
        self.assertEqual(headers[b"connection"], [b"Upgrade"])
        self.assertEqual(headers[b"sec-websocket-version"], [b"13"])

    def test_duplicateSubprotocols(self) -> None:
        """A subprotocol offered twice: 400."""
        self.assertRefused(handshake(extra=[(b"Sec-WebSocket-Protocol", b"a, a")]), 400)

    def test_connectionDeny(self) -> None:
        """C{ConnectionDeny(403, "no")} from C{onConnect}: 403 with the reason."""

        def deny(request: ConnectionRequest) -> None:
            raise ConnectionDeny(403, "no")

        conn, _ = self.connect(_factory(deny))
        conn.send(handshake())
        status, _, body = _response(conn.received)
        self.assertEqual((status, body), (403, b"no\n"))

    def connectPending(self, data: bytes) -> tuple[Any, Any, Deferred[Any]]:
        """Send C{data} to a factory whose C{onConnect} answers later: nothing is sent meanwhile."""
        pending: Deferred[Any] = Deferred()
        conn, factory = self.connect(_factory(lambda request: pending))
        conn.send(data)
        self.assertEqual(conn.received, b"")
        return conn, factory, pending

    def test_asyncConnectionDeny(self) -> None:
        """A Deferred C{onConnect} failing with C{ConnectionDeny}: that refusal."""
        conn, factory, pending = self.connectPending(handshake())
        pending.errback(ConnectionDeny(401, "later, no"))
        conn.flush()
        status, _, body = _response(conn.received)
        self.assertEqual((status, body), (401, b"later, no\n"))
        self.assertEqual(factory.countConnections, 0)

    def test_asyncAccept(self) -> None:
        """A Deferred C{onConnect}: frames sent meanwhile are echoed after the 101."""
        offer = handshake(extra=[(b"Sec-WebSocket-Protocol", b"x, y")])
        conn, _, pending = self.connectPending(offer + encodeFrame(OP_TEXT, b"early"))
        pending.callback("y")
        conn.flush()
        status, headers, rest = _response(conn.received)
        self.assertEqual(status, 101)
        self.assertEqual(headers[b"sec-websocket-protocol"], [b"y"])
        self.assertEqual([f for f, _ in decodeAll(rest)], [(True, OP_TEXT, b"early", False)])

    def test_unofferedSubprotocol(self) -> None:
        """C{onConnect} choosing a subprotocol the client did not offer: 500, logged."""
        conn, _ = self.connect(_factory(lambda request: "nope"))
        conn.send(handshake(extra=[(b"Sec-WebSocket-Protocol", b"a")]))
        self.assertEqual(_response(conn.received)[0], 500)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_maxConnections(self) -> None:
        """Past the factory's C{maxConnections}: 503."""
        factory = _factory(maxConnections=1)
        first, _ = self.connect(factory)
        first.send(handshake())
        self.assertEqual(_response(first.received)[0], 101)
        self.assertRefused(handshake(), 503, factory)

    def test_oversizeFirstFrame(self) -> None:
        """A first frame over C{maxFramePayloadSize}: close 1009, never echoed."""
        factory = _factory(maxFramePayloadSize=1024, failByDrop=False)
        conn, _ = self.connect(factory)
        conn.send(handshake() + encodeFrame(OP_TEXT, b"x" * 4096))
        status, _, rest = _response(conn.received)
        self.assertEqual(status, 101)
        frames = [frame for frame, _ in decodeAll(rest)]
        self.assertEqual([(f[1], closePayload(f[2])[0]) for f in frames], [(OP_CLOSE, 1009)])

    def test_clientLeavesMidHandshake(self) -> None:
        """A client gone after half its headers: nothing built, nothing logged."""
        conn, factory = self.connect()
        data = handshake()
        conn.send(data[: len(data) // 2])
        conn.close()
        self.assertEqual(factory.requests, [])
        self.assertEqual(self.flushLoggedErrors(), [])


class NegotiateOneByteTests(NegotiateTests):
    """The same decisions, every byte delivered on its own."""

    chunkSize = 1


class NegotiatePortableTests(NegotiateTests):
    """The same decisions and echoes on the portable bring-up path."""

    def setUp(self) -> None:
        self.patch(_compat, "bringUpPath", lambda: "portable")


class EndpointConstructionTests(SynchronousTestCase):
    """A factory whose protocol cannot run under Twisted is refused at once."""

    def test_genericProtocolRefused(self) -> None:
        """autobahn's default (framework-neutral) protocol class gives a clear TypeError."""
        factory = WebSocketServerFactory()
        error = self.assertRaises(TypeError, WebSocketEndpoint, factory)
        self.assertIn("WebSocketServerProtocol", str(error))
