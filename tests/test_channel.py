"""
Tests for L{txupgrade.channel}: the real channel and site, in memory.

Every exchange goes through L{UpgradeSite.buildProtocol} and the real
L{UpgradeChannel}, over L{txupgrade.testing.MemoryConnection} or a
L{StringTransport}; no sockets, no real time. The rule tests live in a mixin
run twice: with every write delivered whole, and one byte at a time.
"""

from __future__ import annotations

import gc
import re
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from tests.support.http import Held, parseResponses
from tests.support.http import request as rawRequest
from txupgrade import negotiation
from txupgrade.channel import UpgradeAwareRequest, UpgradeChannel, UpgradeSite
from txupgrade.interfaces import IUpgradeProtocol
from txupgrade.negotiation import (
    Accept,
    Decision,
    Decline,
    Offer,
    ProtocolName,
    Refuse,
    UpgradeError,
    UpgradeRequest,
)
from txupgrade.protocols.echo import EchoResource, EchoUpgrade
from txupgrade.resource import DirectoryResource, UpgradeRequiredResource
from txupgrade.testing import MemoryConnection, RecordingProtocol, upgradeRequest

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
HOST = IPv4Address("TCP", "127.0.0.1", 8080)

HEAD_101 = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def head101(name: bytes = b"test") -> bytes:
    """The exact C{101} naming C{name}, with no extra header."""
    return HEAD_101 % (name,)


def request(target: bytes = b"/show", **fields: Any) -> bytes:
    """L{tests.support.http.request} to C{localhost}, C{target} first (C{/show} by default)."""
    return rawRequest(target=target, host=b"localhost", **fields)


def offering(
    protocols: bytes = b"test",
    target: bytes = b"/show",
    headers: Iterable[tuple[bytes, bytes]] = (),
    **fields: Any,
) -> bytes:
    """L{upgradeRequest} to C{localhost} offering C{protocols}: a C{Content-Length} C{body} if given."""
    return upgradeRequest([protocols.decode("ascii")], target, headers=headers, host=b"localhost", **fields)


def chunked(*chunks: bytes) -> bytes:
    """C{chunks} in the chunked transfer coding, with the last chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def clientOf(conn: MemoryConnection) -> RecordingProtocol:
    """The default recording client of C{conn}."""
    assert isinstance(conn.client, RecordingProtocol)
    return conn.client


_DATE = re.compile(rb"\r\nDate: [^\r\n]*")


def normalize(data: bytes) -> bytes:
    """C{data} with every C{Date} header's value blanked."""
    return _DATE.sub(b"\r\nDate: -", data)


class RecordedProtocol(RecordingProtocol):
    """What a L{RecordingUpgrade} builds: keeps everything it receives, and counts C{connectionMade}."""

    def __init__(self, request: UpgradeRequest) -> None:
        super().__init__()
        self.request = request
        self.made = 0

    def connectionMade(self) -> None:
        self.made += 1


@implementer(IUpgradeProtocol)
class RecordingUpgrade:
    """
    A test plugin: records the requests it is asked about and builds
    L{RecordedProtocol}s; its answers and failures are configurable.
    """

    def __init__(
        self,
        name: str = "test",
        version: str | None = None,
        decision: Any = None,
        *,
        negotiateError: Exception | None = None,
        buildError: Exception | None = None,
        buildNone: bool = False,
    ) -> None:
        self.name = name
        self.version = version
        self.decision = Accept() if decision is None else decision
        self.negotiateError = negotiateError
        self.buildError = buildError
        self.buildNone = buildNone
        self.negotiated: list[UpgradeRequest] = []
        self.sites: list[object] = []
        self.protocols: list[RecordedProtocol] = []

    def negotiate(self, request: UpgradeRequest) -> Decision:
        self.negotiated.append(request)
        if self.negotiateError is not None:
            raise self.negotiateError
        return self.decision  # type: ignore[no-any-return]

    def buildProtocol(self, request: UpgradeRequest, site: object) -> RecordedProtocol | None:
        self.sites.append(site)
        if self.buildError is not None:
            raise self.buildError
        if self.buildNone:
            return None
        protocol = RecordedProtocol(request)
        self.protocols.append(protocol)
        return protocol

    @property
    def protocol(self) -> RecordedProtocol:
        """The one protocol built so far."""
        (protocol,) = self.protocols
        return protocol


class Show(Resource):
    """Answers C{200} with the method, target and body it got."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        assert request.content is not None
        request.setHeader(b"Content-Type", b"text/plain")
        return b"%s %s %s" % (request.method, request.uri, request.content.read())


class TrackedRequest(UpgradeAwareRequest):
    """A request whose instances, and channels, the test can watch being collected."""

    refs: list[weakref.ref[Any]] = []

    def __init__(self, channel: HTTPChannel, *args: Any, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)
        TrackedRequest.refs.append(weakref.ref(self))
        TrackedRequest.refs.append(weakref.ref(channel))


class DynamicRoot(Resource):
    """A root whose children are found in code: no static shortcut applies."""

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        return super().getChildWithDefault(path, request)


class ChannelMixin:
    """
    Builds sites and connections, delivering writes in C{chunkSize} pieces.
    """

    chunkSize: int | None = None
    #: Whether the tree's root finds children in code, so that only
    #: twisted.web's traversal can tell the resource (the render-time path).
    dynamic = False

    def setUp(self) -> None:
        self.clock = Clock()
        self.slow = Held()
        self.ws = RecordingUpgrade("ws")

    def makeSite(self, protocols: Iterable[IUpgradeProtocol] = (), **kwargs: Any) -> UpgradeSite:
        """A site over the test tree, timing out on L{clock}."""
        root = DynamicRoot() if self.dynamic else DirectoryResource()
        root.putChild(b"show", Show())
        root.putChild(b"chat", Show())
        root.putChild(b"echo", EchoResource())
        root.putChild(b"slow", self.slow)
        root.putChild(b"ws", UpgradeRequiredResource([self.ws]))
        return UpgradeSite(root, protocols, reactor=self.clock, **kwargs)

    def connect(self, site: UpgradeSite) -> MemoryConnection:
        """A client connected to C{site} in memory."""
        return MemoryConnection(site, chunkSize=self.chunkSize, peer=PEER, host=HOST)

    def exchange(
        self, data: bytes, protocols: Iterable[IUpgradeProtocol] = (), **kwargs: Any
    ) -> MemoryConnection:
        """Connect to a new site, send C{data}, and return the connection."""
        conn = self.connect(self.makeSite(protocols, **kwargs))
        conn.send(data)
        return conn


class ChannelRuleTestsMixin(ChannelMixin):
    """
    The rules, through the real channel; run whole and byte by byte.
    """

    # SynchronousTestCase's assertions, for the type checker.
    assertEqual: Callable[..., None]
    assertIs: Callable[..., None]
    assertIsNone: Callable[..., None]
    assertIsNotNone: Callable[..., None]
    assertTrue: Callable[..., None]
    assertFalse: Callable[..., None]
    assertIn: Callable[..., None]
    assertNotIn: Callable[..., None]
    flushLoggedErrors: Callable[..., list[Failure]]

    def assertNoErrorsLogged(self) -> None:
        """Nothing was logged as an error."""
        self.assertEqual(self.flushLoggedErrors(), [])

    def assertServesHTTP(self, conn: MemoryConnection) -> None:
        """The connection still answers a plain C{GET} with C{200}."""
        before = len(conn.received)
        conn.send(request(b"/show?again"))
        responses, rest = parseResponses(conn.received[before:])
        self.assertEqual([(r.code, r.body) for r in responses], [(200, b"GET /show?again ")])
        self.assertEqual(rest, b"")
        self.assertFalse(conn.serverTransport.disconnecting)

    # R3, R4, R5: an ignored invitation.

    def test_noConnectionOption(self) -> None:
        """R3: C{Upgrade} without C{Connection: upgrade} is ignored, unvalidated."""
        for connection in ([], [(b"Connection", b"keep-alive")], [(b"Connection", b"upgraded")]):
            plugin = RecordingUpgrade()
            for upgrade in (b"test", b"n@pe"):
                conn = self.exchange(request(headers=[*connection, (b"Upgrade", upgrade)]), [plugin])
                (response,), _ = parseResponses(conn.received)
                self.assertEqual((response.code, response.body), (200, b"GET /show "))
                self.assertEqual(response.header(b"Upgrade"), [])
                self.assertServesHTTP(conn)
            self.assertEqual(plugin.negotiated, [])

    def test_connectionCloseInTokenList(self) -> None:
        """C{Connection: close, Upgrade} closes after an untaken offer (RFC 9112 §9.6)."""
        conn = self.exchange(
            request(headers=[(b"Connection", b"close, Upgrade"), (b"Upgrade", b"nope")]), [RecordingUpgrade()]
        )
        (response,), _ = parseResponses(conn.received)
        self.assertEqual((response.code, response.body), (200, b"GET /show "))
        self.assertIn(b"close", response.header(b"Connection"))
        self.assertTrue(conn.serverTransport.disconnected)

    def test_connectionTokenList(self) -> None:
        """R3: C{upgrade} is found in any case, in a list, on any line."""
        for connection in (
            [(b"Connection", b"keep-alive, Upgrade")],
            [(b"Connection", b"keep-alive"), (b"Connection", b"UPGRADE")],
            [(b"Connection", b"upgrade")],
        ):
            plugin = RecordingUpgrade()
            conn = self.exchange(request(headers=[*connection, (b"Upgrade", b"TEST")]), [plugin])
            self.assertEqual(conn.received, head101())
            self.assertEqual(len(plugin.protocols), 1)

    def test_http10Ignored(self) -> None:
        """R4: an HTTP/1.0 request's C{Upgrade} is ignored."""
        plugin = RecordingUpgrade()
        data = request(headers=[(b"Connection", b"Upgrade"), (b"Upgrade", b"test")], version=b"HTTP/1.0")
        conn = self.exchange(data, [plugin])
        (response,), _ = parseResponses(conn.received)
        self.assertEqual((response.code, response.body), (200, b"GET /show "))
        self.assertEqual(plugin.negotiated, [])
        self.assertNotIn(b" 101 ", conn.received)

    def test_advertise(self) -> None:
        """R5: an offer not taken gets a normal answer naming what could be."""
        first, second = RecordingUpgrade("test"), RecordingUpgrade("other", "2")
        conn = self.exchange(offering(b"unknown, other/1"), [first, second])
        (response,), _ = parseResponses(conn.received)
        self.assertEqual((response.code, response.body), (200, b"GET /show "))
        self.assertEqual(response.header(b"Upgrade"), [b"test, other/2"])
        self.assertIn(b"Upgrade", response.header(b"Connection"))
        self.assertEqual((first.negotiated, second.negotiated), ([], []))
        self.assertServesHTTP(conn)

    def test_advertiseOff(self) -> None:
        """R5: with C{advertise=False} nothing is named."""
        conn = self.exchange(offering(b"unknown"), [RecordingUpgrade()], advertise=False)
        (response,), _ = parseResponses(conn.received)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header(b"Upgrade"), [])

    def test_allDeclineAdvertises(self) -> None:
        """R5: when every listed protocol declines, the answer is normal."""
        plugin = RecordingUpgrade(decision=Decline("not today"))
        conn = self.exchange(offering(b"test"), [plugin])
        (response,), _ = parseResponses(conn.received)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header(b"Upgrade"), [b"test"])
        self.assertEqual(len(plugin.negotiated), 1)
        self.assertEqual(plugin.protocols, [])
        self.assertServesHTTP(conn)

    # R6: only what the client listed; client preference or server policy.

    def test_clientPreference(self) -> None:
        """R6: by default the client's first listed protocol wins."""
        a, b = RecordingUpgrade("a"), RecordingUpgrade("b")
        conn = self.exchange(offering(b"B, a"), [a, b])
        self.assertEqual(conn.received, head101(b"b"))
        self.assertEqual((len(a.protocols), len(b.protocols)), (0, 1))
        self.assertEqual(a.negotiated, [])

    def test_serverPolicy(self) -> None:
        """R6: with C{policy="server"} the site's order wins."""
        a, b = RecordingUpgrade("a"), RecordingUpgrade("b")
        conn = self.exchange(offering(b"b, a"), [a, b], policy="server")
        self.assertEqual(conn.received, head101(b"a"))
        self.assertEqual((len(a.protocols), len(b.protocols)), (1, 0))

    def test_versionMustMatch(self) -> None:
        """R2, R6: a plugin stating a version is not picked for another."""
        plugin = RecordingUpgrade("test", "1")
        conn = self.exchange(offering(b"test/2, test"), [plugin])
        (response,), _ = parseResponses(conn.received)
        self.assertEqual(response.code, 200)
        self.assertEqual(plugin.negotiated, [])
        conn = self.exchange(offering(b"TEST/1"), [plugin])
        self.assertEqual(conn.received, head101(b"test/1"))

    # R7, R8: the 101, then the new protocol answers the original request.

    def test_switchingHead(self) -> None:
        """R7: exactly the C{101} head, then the connection is the protocol's."""
        plugin = RecordingUpgrade()
        conn = self.exchange(offering(), [plugin])
        self.assertEqual(conn.received, head101())
        protocol = plugin.protocol
        self.assertEqual(protocol.made, 1)
        self.assertIs(protocol.transport, conn.serverTransport)
        assert protocol.transport is not None
        protocol.transport.write(b"from the protocol")
        conn.flush()
        self.assertEqual(conn.received, head101() + b"from the protocol")
        self.assertIsNone(protocol.lostReason)
        self.assertNoErrorsLogged()

    def test_switchingHeadExtras(self) -> None:
        """R7: accepted headers follow; layers are named in the given order."""
        accept = Accept(headers=((b"X-Key", b"v"),), upgrade=("TLS/1.2", "HTTP/1.1"))
        conn = self.exchange(offering(b"test"), [RecordingUpgrade(decision=accept)])
        self.assertEqual(
            conn.received,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: TLS/1.2, HTTP/1.1\r\n"
            b"Connection: Upgrade\r\nX-Key: v\r\n\r\n",
        )

    def test_originalRequest(self) -> None:
        """R8: the protocol gets the original request, body and peer included."""
        plugin = RecordingUpgrade()
        site = self.makeSite([plugin])
        conn = self.connect(site)
        conn.send(
            offering(
                b"test/3",
                b"/chat?room=1",
                [(b"X-One", b"1"), (b"X-Dup", b"a"), (b"X-Dup", b"b")],
                body=b"hello",
                method=b"POST",
            )
        )
        self.assertEqual(conn.received, head101())
        (got,) = plugin.negotiated
        self.assertIs(plugin.protocol.request, got)
        self.assertEqual(plugin.sites, [site])
        self.assertEqual(
            (got.method, got.target, got.version, got.path),
            (b"POST", b"/chat?room=1", b"HTTP/1.1", b"/chat"),
        )
        offer = ((b"host", b"localhost"), (b"connection", b"Upgrade"), (b"upgrade", b"test/3"))
        rest = ((b"x-one", b"1"), (b"x-dup", b"a"), (b"x-dup", b"b"), (b"content-length", b"5"))
        self.assertEqual(got.headers, (*offer, *rest))
        self.assertEqual(got.body, b"hello")
        self.assertEqual(got.offer, Offer((ProtocolName("test", "3"),)))
        self.assertEqual((got.peer, got.host, got.secure), (PEER, HOST, False))
        self.assertEqual(plugin.protocol.data, b"")

    # R9: 426 Upgrade Required, and the same path switching.

    def test_upgradeRequired(self) -> None:
        """R9: a path bound to protocols answers C{426} without an offer."""
        conn = self.exchange(request(b"/ws"))
        (response,), _ = parseResponses(conn.received)
        self.assertEqual(response.status, b"HTTP/1.1 426 Upgrade Required")
        self.assertEqual(response.header(b"Upgrade"), [b"ws"])
        self.assertEqual(response.header(b"Connection"), [b"Upgrade"])
        self.assertEqual(self.ws.negotiated, [])
        self.assertServesHTTP(conn)

    def test_upgradeRequiredSwitches(self) -> None:
        """R9: the same path with a valid offer switches to its protocol."""
        conn = self.exchange(offering(b"ws", b"/ws"))
        self.assertEqual(conn.received, head101(b"ws"))
        self.assertEqual(self.ws.protocol.request.path, b"/ws")

    def test_upgradeRequiredUnknownOffer(self) -> None:
        """R9: an offer the path cannot take gets one C{426} list, its own."""
        plugin = RecordingUpgrade()
        conn = self.exchange(offering(b"unknown", b"/ws"), [plugin])
        (response,), _ = parseResponses(conn.received)
        self.assertEqual(response.code, 426)
        self.assertEqual(response.header(b"Upgrade"), [b"ws"])
        self.assertEqual(response.header(b"Connection"), [b"Upgrade"])
        self.assertEqual((self.ws.negotiated, plugin.negotiated), ([], []))

    def test_boundProtocolOnlyOnItsPath(self) -> None:
        """R9: a path-bound protocol is not reached from another path."""
        conn = self.exchange(offering(b"ws", b"/show"))
        (response,), _ = parseResponses(conn.received)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.ws.negotiated, [])

    # R10: 100 Continue before 101.

    def test_expectContinue(self) -> None:
        """R10: C{100 Continue} goes out on the head, the C{101} after the body."""
        plugin = RecordingUpgrade()
        conn = self.connect(self.makeSite([plugin]))
        data = offering(headers=[(b"Expect", b"100-continue")], body=b"body!", method=b"POST")
        head, body = data[: -len(b"body!")], b"body!"
        conn.send(head)
        self.assertEqual(conn.received, CONTINUE)
        self.assertEqual(plugin.negotiated, [])
        conn.send(body + b"after")
        self.assertEqual(conn.received, CONTINUE + head101())
        self.assertEqual(plugin.protocol.request.body, b"body!")
        self.assertEqual(plugin.protocol.data, b"after")

    def test_expectContinueOneWrite(self) -> None:
        """R10: sent at once, the answer is still C{100} then C{101}."""
        plugin = RecordingUpgrade()
        data = offering(headers=[(b"Expect", b"100-continue")], body=b"body!", method=b"POST")
        conn = self.exchange(data, [plugin])
        self.assertEqual(conn.received, CONTINUE + head101())

    # R11: the body is read whole, within limits.

    def test_contentLengthBody(self) -> None:
        """R11: a C{Content-Length} body is the request's C{body}."""
        plugin = RecordingUpgrade()
        conn = self.exchange(offering(body=b"x" * 100 + b"\r\n\r\n", method=b"PUT") + b"next", [plugin])
        self.assertEqual(conn.received, head101())
        self.assertEqual(plugin.protocol.request.body, b"x" * 100 + b"\r\n\r\n")
        self.assertEqual(plugin.protocol.data, b"next")

    def test_chunkedBody(self) -> None:
        """R11: a chunked body is decoded whole into the request's C{body}."""
        plugin = RecordingUpgrade()
        data = offering(headers=[(b"Transfer-Encoding", b"chunked")], method=b"POST")
        conn = self.exchange(data + chunked(b"hello", b" ", b"world\r\n") + b"next", [plugin])
        self.assertEqual(conn.received, head101())
        self.assertEqual(plugin.protocol.request.body, b"hello world\r\n")
        self.assertEqual(plugin.protocol.data, b"next")

    def test_bodyAtLimit(self) -> None:
        """R11: a body of exactly C{maxUpgradeBodySize} bytes switches."""
        plugin = RecordingUpgrade()
        conn = self.exchange(offering(body=b"b" * 16), [plugin], maxUpgradeBodySize=16)
        self.assertEqual(conn.received, head101())
        self.assertEqual(plugin.protocol.request.body, b"b" * 16)

    def assertTooLarge(self, conn: MemoryConnection, plugin: RecordingUpgrade) -> None:
        """The client got a C{413} and the connection is closed."""
        self.assertEqual(
            conn.received,
            negotiation.simpleResponse(413, (), b"The upgrade request's body is too large.\n", close=True),
        )
        self.assertTrue(conn.serverTransport.disconnected)
        self.assertIsNotNone(clientOf(conn).lostReason)
        self.assertEqual(plugin.negotiated, [])
        self.assertNoErrorsLogged()

    def test_declaredBodyTooLarge(self) -> None:
        """R11: a declared C{Content-Length} over the limit gets C{413}."""
        plugin = RecordingUpgrade()
        conn = self.exchange(offering(body=b"b" * 17) + b"more", [plugin], maxUpgradeBodySize=16)
        self.assertTooLarge(conn, plugin)

    def test_chunkedBodyTooLarge(self) -> None:
        """R11: a chunked body growing past the limit gets C{413}."""
        plugin = RecordingUpgrade()
        data = offering(headers=[(b"Transfer-Encoding", b"chunked")], method=b"POST")
        conn = self.exchange(data + chunked(b"a" * 10, b"b" * 10, b"c" * 10), [plugin], maxUpgradeBodySize=16)
        self.assertTooLarge(conn, plugin)

    def test_declaredTooLargeNoContinue(self) -> None:
        """R10, R11: a body refused on its declared length is not invited."""
        plugin = RecordingUpgrade()
        data = offering(headers=[(b"Expect", b"100-continue")], body=b"b" * 17, method=b"POST")
        conn = self.exchange(data[:-17], [plugin], maxUpgradeBodySize=16)
        self.assertNotIn(b"100 Continue", conn.received)
        self.assertTooLarge(conn, plugin)

    def test_chunkedBodyGrowsTooLarge(self) -> None:
        """R11: the C{413} comes as soon as the limit is passed, before the end."""
        plugin = RecordingUpgrade()
        conn = self.connect(self.makeSite([plugin], maxUpgradeBodySize=16))
        conn.send(offering(headers=[(b"Transfer-Encoding", b"chunked")], method=b"POST"))
        conn.send(b"a\r\n" + b"a" * 10 + b"\r\n")
        self.assertEqual(conn.received, b"")
        conn.send(b"a\r\n" + b"b" * 10 + b"\r\n")
        self.assertTooLarge(conn, plugin)

    def test_limitOnlyForUpgrades(self) -> None:
        """R11: the limit does not apply to a request offering no upgrade."""
        conn = self.exchange(
            request(b"/echo", headers=[(b"Content-Length", b"40")], body=b"e" * 40, method=b"POST"),
            [RecordingUpgrade()],
            maxUpgradeBodySize=16,
        )
        (response,), _ = parseResponses(conn.received)
        self.assertEqual((response.code, response.body), (200, b"e" * 40))

    # R12: every later byte goes to the protocol.

    def test_trailingBytes(self) -> None:
        """R12: bytes after the request reach the protocol, never parsed as HTTP."""
        plugin = RecordingUpgrade()
        after = request(b"/show") + b"\x00\xff binary\r\n\r\n"
        conn = self.exchange(offering() + after, [plugin])
        self.assertEqual(conn.received, head101())
        self.assertEqual(plugin.protocol.data, after)
        conn.send(b"later, ")
        conn.send(b"and later")
        self.assertEqual(plugin.protocol.data, after + b"later, and later")
        self.assertEqual(conn.received, head101())

    # R13: earlier pipelined requests first.

    def test_pipelinedBefore(self) -> None:
        """R13: requests pipelined before the upgrade are answered first."""
        plugin = RecordingUpgrade()
        data = request(b"/show?1") + request(b"/echo") + offering() + b"tail"
        conn = self.exchange(data, [plugin])
        responses, rest = parseResponses(conn.received)
        self.assertEqual([r.code for r in responses], [200, 200, 101])
        self.assertEqual(responses[0].body, b"GET /show?1 ")
        self.assertTrue(responses[1].body.startswith(b"echo: "))
        self.assertTrue(conn.received.endswith(head101()))
        self.assertEqual(rest, b"")
        self.assertEqual(plugin.protocol.data, b"tail")

    def test_pipelinedBehindSlow(self) -> None:
        """R13: an upgrade waits for a slow earlier request, then switches."""
        plugin = RecordingUpgrade()
        conn = self.exchange(request(b"/slow") + offering() + b"tail", [plugin])
        self.assertEqual(conn.received, b"")
        self.assertEqual(plugin.negotiated, [])
        conn.send(b" more")
        (slow,) = self.slow.pending
        slow.setHeader(b"Content-Length", b"4")
        slow.write(b"done")
        slow.finish()
        conn.flush()
        responses, rest = parseResponses(conn.received)
        self.assertEqual([(r.code, r.body) for r in responses], [(200, b"done"), (101, b"")])
        self.assertEqual(rest, b"")
        self.assertEqual(plugin.protocol.data, b"tail more")

    # Bad input and faulty plugins.

    def test_negotiateRaises(self) -> None:
        """A plugin raising in C{negotiate} gets a C{500}; HTTP/1.1 goes on."""
        plugin = RecordingUpgrade(negotiateError=ZeroDivisionError())
        conn = self.exchange(offering() + request(b"/show?next"), [plugin])
        responses, _ = parseResponses(conn.received)
        self.assertEqual([(r.code, r.body) for r in responses[1:]], [(200, b"GET /show?next ")])
        self.assertEqual(responses[0].code, 500)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertServesHTTP(conn)

    def test_buildProtocolRaises(self) -> None:
        """A plugin raising in C{buildProtocol} gets a C{500}, and no C{101}."""
        plugin = RecordingUpgrade(buildError=KeyError("boom"))
        conn = self.exchange(offering(), [plugin])
        (response,), _ = parseResponses(conn.received)
        self.assertEqual(response.code, 500)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertServesHTTP(conn)

    def test_buildProtocolNone(self) -> None:
        """A plugin building no protocol gets a C{500}."""
        conn = self.exchange(offering(), [RecordingUpgrade(buildNone=True)])
        (response,), _ = parseResponses(conn.received)
        self.assertEqual(response.code, 500)
        self.assertEqual(len(self.flushLoggedErrors(UpgradeError)), 1)
        self.assertServesHTTP(conn)

    def test_refuse(self) -> None:
        """A C{Refuse} is answered as its HTTP error; HTTP/1.1 goes on."""
        refusal = Refuse(403, ((b"X-Why", b"because"),), b"no\n", "policy")
        plugin = RecordingUpgrade(decision=refusal)
        conn = self.exchange(offering(), [plugin])
        (response,), _ = parseResponses(conn.received)
        self.assertEqual(response.status, b"HTTP/1.1 403 Forbidden")
        self.assertEqual((response.header(b"X-Why"), response.body), ([b"because"], b"no\n"))
        self.assertEqual(plugin.protocols, [])
        self.assertNoErrorsLogged()
        self.assertServesHTTP(conn)

    def test_refuseNotAnError(self) -> None:
        """A C{Refuse} with a non-error status is the plugin's fault: C{500}."""
        conn = self.exchange(offering(), [RecordingUpgrade(decision=Refuse(200))])
        (response,), _ = parseResponses(conn.received)
        self.assertEqual(response.code, 500)
        self.assertEqual(len(self.flushLoggedErrors(UpgradeError)), 1)

    def test_refuseWithBadHeader(self) -> None:
        """A C{Refuse} whose headers hold CR/LF gets a logged C{500}, not a partial answer."""
        refusal = Refuse(403, ((b"X-Ok", b"fine"), (b"X-Bad", b"a\r\nInjected: 1")), b"no\n")
        conn = self.exchange(offering(), [RecordingUpgrade(decision=refusal)])
        (response,), _ = parseResponses(conn.received)
        self.assertEqual(response.code, 500)
        self.assertNotIn(b"Injected", conn.received)
        self.assertEqual(len(self.flushLoggedErrors(UpgradeError)), 1)
        self.assertServesHTTP(conn)

    def test_negotiateReturnsGarbage(self) -> None:
        """A decision that is none of Accept, Decline, Refuse gets a C{500}."""
        conn = self.exchange(offering(), [RecordingUpgrade(decision="yes")])
        (response,), _ = parseResponses(conn.received)
        self.assertEqual(response.code, 500)
        self.assertEqual(len(self.flushLoggedErrors(UpgradeError)), 1)
        self.assertServesHTTP(conn)

    def test_headerInjection(self) -> None:
        """Accepted headers holding CR/LF get a C{500} and no C{101}."""
        plugin = RecordingUpgrade(decision=Accept(headers=((b"X-Evil", b"a\r\nSet-Cookie: x=1"),)))
        conn = self.exchange(offering(), [plugin])
        (response,), _ = parseResponses(conn.received)
        self.assertEqual(response.code, 500)
        self.assertNotIn(b"Set-Cookie", conn.received)
        self.assertEqual(plugin.protocols, [])
        self.assertEqual(len(self.flushLoggedErrors(UpgradeError)), 1)
        self.assertServesHTTP(conn)

    def test_declineTriesNext(self) -> None:
        """A C{Decline} lets the client's next preference be tried."""
        first = RecordingUpgrade("first", decision=Decline("busy"))
        second = RecordingUpgrade("second")
        conn = self.exchange(offering(b"first, second"), [second, first])
        self.assertEqual(conn.received, head101(b"second"))
        self.assertEqual((len(first.negotiated), len(first.protocols)), (1, 0))
        self.assertEqual(len(second.protocols), 1)

    def test_malformedUpgrade(self) -> None:
        """R15: a malformed honoured C{Upgrade} gets C{400}; HTTP/1.1 goes on."""
        plugin = RecordingUpgrade()
        for upgrade in (b"n@pe", b"test, a b", b"x" * 1100, b",".join([b"p"] * 17)):
            conn = self.exchange(offering(upgrade) + request(b"/show?after"), [plugin])
            responses, _ = parseResponses(conn.received)
            self.assertEqual([r.code for r in responses], [400, 200], upgrade)
            self.assertEqual(responses[1].body, b"GET /show?after ")
            self.assertServesHTTP(conn)
        self.assertEqual(plugin.negotiated, [])
        self.assertNoErrorsLogged()

    def test_closeMidBody(self) -> None:
        """A client closing in an upgrade request's body logs no error."""
        plugin = RecordingUpgrade()
        for data in (
            offering(body=b"0123456789")[:-4],
            offering(headers=[(b"Transfer-Encoding", b"chunked")]) + b"5\r\nab",
        ):
            conn = self.exchange(data, [plugin])
            conn.close()
            self.assertEqual(conn.received, b"")
            self.assertTrue(conn.serverTransport.disconnected)
        self.assertEqual(plugin.negotiated, [])
        self.assertNoErrorsLogged()

    def test_closeAfterSwitch(self) -> None:
        """A client closing right after the C{101} reaches the protocol only."""
        plugin = RecordingUpgrade()
        conn = self.exchange(offering(), [plugin])
        conn.close()
        self.assertEqual(conn.received, head101())
        self.assertIsNotNone(plugin.protocol.lostReason)
        self.assertNoErrorsLogged()

    # R16: no switch on ambiguous framing; heads over the limits.

    def assertRejected(
        self, data: bytes, status: int, plugin: RecordingUpgrade | None = None, **kw: Any
    ) -> None:
        """C{data} is answered C{status} alone, with C{Connection: close}, and closed; never switched."""
        plugin = plugin or RecordingUpgrade()
        conn = self.exchange(data, [plugin], **kw)
        (response,), rest = parseResponses(conn.received)
        self.assertEqual(response.status, b"HTTP/1.1 %d %s" % (status, negotiation.reasonPhrase(status)))
        self.assertEqual(response.header(b"Connection"), [b"close"])
        self.assertEqual(rest, b"")
        self.assertNotIn(b" 101 ", conn.received)
        self.assertEqual(plugin.negotiated, [])
        self.assertTrue(conn.serverTransport.disconnecting)
        self.assertNoErrorsLogged()

    def test_noHost(self) -> None:
        """R16: an HTTP/1.1 upgrade request (or any request) without C{Host}: 400, closed."""
        for data in (offering(), request()):
            self.assertRejected(data.replace(b"Host: localhost\r\n", b""), 400)

    def test_twoHosts(self) -> None:
        """R16: two C{Host} lines, even equal ones: 400, closed."""
        for host in (b"localhost", b"127.0.0.1"):
            self.assertRejected(offering(headers=[(b"Host", host)]), 400)

    def test_invalidHost(self) -> None:
        """R16: a C{Host} that is not a host and port is refused even where any host is allowed."""
        for host in (b"a b", b"[::1", b"h\x01st", b"user@h"):
            data = offering().replace(b"Host: localhost", b"Host: " + host)
            self.assertRejected(data, 400, allowedHosts=None)

    def test_obsFold(self) -> None:
        """R16: obs-fold in C{Connection}, C{Upgrade} or any header: 400, closed."""
        folded = (
            b"Connection:\r\n upgrade\r\nUpgrade: test",
            b"Connection: upgrade\r\nUpgrade:\r\n\ttest",
            b"Connection: upgrade\r\nUpgrade: test\r\nX-Other: a\r\n b",
        )
        for fields in folded:
            self.assertRejected(b"GET /show HTTP/1.1\r\nHost: localhost\r\n" + fields + b"\r\n\r\n", 400)

    def test_transferEncodingNotChunked(self) -> None:
        """R16: C{Transfer-Encoding} other than exactly C{chunked}, with or without a length: 400."""
        for coding in (b"identity", b"gzip", b"chunked, chunked", b"gzip, chunked"):
            for length in ([], [(b"Content-Length", b"5")]):
                plugin = RecordingUpgrade()
                data = offering(headers=[(b"Transfer-Encoding", coding), *length]) + b"helloTAIL"
                conn = self.exchange(data, [plugin])
                # Twisted itself refuses codings it cannot decode; txupgrade the rest.
                self.assertTrue(conn.received.startswith(b"HTTP/1.1 400 Bad Request\r\n"), conn.received)
                self.assertNotIn(b" 101 ", conn.received)
                self.assertEqual(plugin.negotiated, [])
                self.assertTrue(conn.serverTransport.disconnecting)
                self.assertNoErrorsLogged()

    def test_transferEncodingIdentityPlain(self) -> None:
        """R16: a plain request with C{Transfer-Encoding: identity} is refused too."""
        data = request(headers=[(b"Transfer-Encoding", b"identity"), (b"Content-Length", b"5")]) + b"hello"
        self.assertRejected(data, 400)

    def test_chunkedAnyCase(self) -> None:
        """R16: C{Chunked} is C{chunked} (codings are case-insensitive)."""
        plugin = RecordingUpgrade()
        conn = self.exchange(
            offering(headers=[(b"Transfer-Encoding", b"Chunked")]) + chunked(b"ab"), [plugin]
        )
        self.assertTrue(conn.received.startswith(head101()))
        self.assertEqual(plugin.negotiated[0].body, b"ab")

    def test_requestLineTooLong(self) -> None:
        """A request line over the head limit: 414, closed."""
        self.assertRejected(offering(target=b"/show?" + b"q" * 17000), 414)

    def test_headerTooLong(self) -> None:
        """A header line over the head limit: 431, closed."""
        self.assertRejected(offering(headers=[(b"X-Big", b"v" * 17000)]), 431)

    def test_headTooLarge(self) -> None:
        """Many small headers adding up past the head limit: 431, closed."""
        self.assertRejected(offering(headers=[(b"X-Many-%d" % i, b"v" * 100) for i in range(200)]), 431)

    # The Host allow-list: DNS rebinding.

    def test_foreignHostOnLoopback(self) -> None:
        """By default a loopback listener answers only loopback names; another C{Host}: 400, closed."""
        for data in (offering(), request()):
            self.assertRejected(data.replace(b"Host: localhost", b"Host: attacker.example:8080"), 400)

    def test_loopbackNames(self) -> None:
        """By default a loopback listener answers C{localhost}, C{127.0.0.1} and C{[::1]}, any port."""
        for host in (b"localhost", b"LOCALHOST:8080", b"127.0.0.1:8080", b"[::1]:8080"):
            plugin = RecordingUpgrade()
            conn = self.exchange(offering().replace(b"Host: localhost", b"Host: " + host), [plugin])
            self.assertTrue(conn.received.startswith(head101()), (host, conn.received))

    def test_allowedHosts(self) -> None:
        """An explicit list (with subdomain wildcards) replaces the default."""
        allowed = ["example.com", "*.example.net"]
        for host, ok in (
            (b"example.com", True),
            (b"a.b.example.net:81", True),
            (b"example.net", False),
            (b"localhost", False),
        ):
            plugin = RecordingUpgrade()
            data = offering().replace(b"Host: localhost", b"Host: " + host)
            if ok:
                conn = self.exchange(data, [plugin], allowedHosts=allowed)
                self.assertTrue(conn.received.startswith(head101()), host)
            else:
                self.assertRejected(data, 400, plugin, allowedHosts=allowed)

    def test_anyHost(self) -> None:
        """C{allowedHosts=None} serves any C{Host}."""
        plugin = RecordingUpgrade()
        data = offering().replace(b"Host: localhost", b"Host: anything.example")
        conn = self.exchange(data, [plugin], allowedHosts=None)
        self.assertTrue(conn.received.startswith(head101()))
        self.assertEqual(plugin.negotiated[0].allowedHosts, None)

    def test_allowedHostsReachProtocols(self) -> None:
        """Protocols see the names the site answers to (for same-origin checks)."""
        plugin = RecordingUpgrade()
        self.exchange(offering(), [plugin])
        self.assertEqual(plugin.negotiated[0].allowedHosts, negotiation.LOOPBACK_HOSTS)

    def test_refusalReasonPhrase(self) -> None:
        """A refusal with a status Twisted has no phrase for (426) gets the right phrase."""
        plugin = RecordingUpgrade(decision=Refuse(426, ((b"Upgrade", b"test/2"),), b"v2 only\n"))
        conn = self.exchange(offering(), [plugin])
        (response,), _ = parseResponses(conn.received)
        self.assertEqual(response.status, b"HTTP/1.1 426 Upgrade Required")


class ChannelRuleWholeTests(ChannelRuleTestsMixin, SynchronousTestCase):
    """
    The rules, every write delivered in one piece.
    """


class ChannelRuleByteTests(ChannelRuleTestsMixin, SynchronousTestCase):
    """
    The rules, every write delivered one byte at a time.
    """

    chunkSize = 1


class ChannelRuleDynamicTests(ChannelRuleTestsMixin, SynchronousTestCase):
    """The rules over a dynamic tree (decided in render), whole writes."""

    dynamic = True


class ChannelRuleDynamicByteTests(ChannelRuleTestsMixin, SynchronousTestCase):
    """The rules over a dynamic tree (decided in render), one byte at a time."""

    dynamic = True
    chunkSize = 1


class SegmentationTests(ChannelMixin, SynchronousTestCase):
    """
    R12: TCP segmentation changes nothing that either side sees.
    """

    stream = (
        request(b"/echo")
        + offering(headers=[(b"Transfer-Encoding", b"chunked")], method=b"POST")
        + chunked(b"chunk one;", b" chunk two")
        + b"post-switch \r\n\r\nGET / HTTP/1.1\r\n\r\n bytes"
    )

    def run1(self, pieces: Iterable[bytes], chunkSize: int | None = None) -> tuple[bytes, bytes, bytes]:
        """Send C{pieces}; what the client got, the protocol got, and the body."""
        plugin = RecordingUpgrade()
        conn = MemoryConnection(self.makeSite([plugin]), chunkSize=chunkSize)
        for piece in pieces:
            conn.send(piece)
        protocol = plugin.protocol
        return normalize(conn.received), bytes(protocol.data), protocol.request.body

    def test_everySplit(self) -> None:
        """Split at every position into two writes, or byte by byte: same bytes."""
        expected = self.run1([self.stream])
        received, data, body = expected
        responses, rest = parseResponses(received)
        self.assertEqual([r.code for r in responses], [200, 101])
        self.assertEqual(rest, b"")
        self.assertEqual(data, b"post-switch \r\n\r\nGET / HTTP/1.1\r\n\r\n bytes")
        self.assertEqual(body, b"chunk one; chunk two")
        for i in range(1, len(self.stream)):
            got = self.run1([self.stream[:i], self.stream[i:]])
            self.assertEqual(got, expected, f"split at {i}")
        self.assertEqual(self.run1([self.stream], chunkSize=1), expected)
        self.assertEqual(self.run1([bytes([b]) for b in self.stream]), expected)

    def assertSplitsAnswer(self, stream: bytes, codes: list[int]) -> None:
        """C{stream}, whole, byte by byte or split in two anywhere, is answered C{codes}, then closed."""
        splits = [[stream], [bytes([b]) for b in stream]]
        splits += [[stream[:i], stream[i:]] for i in range(1, len(stream))]
        for pieces in splits:
            conn = MemoryConnection(self.makeSite([RecordingUpgrade()]))
            for piece in pieces:
                conn.send(piece)
            responses, _rest = parseResponses(conn.received)
            self.assertEqual([r.code for r in responses], codes, f"pieces of {list(map(len, pieces))}")
            self.assertTrue(conn.serverTransport.disconnecting)

    def test_foldEverySplit(self) -> None:
        """
        R16: a folded line is refused however the reads split it (the
        channel checks lines only while a read may complete a folded one),
        after a plain request on the same connection too.
        """
        folded = b"GET /show HTTP/1.1\r\nHost: localhost\r\nX-Other: a\r\n\tb\r\n\r\n"
        self.assertSplitsAnswer(folded, [400])
        self.assertSplitsAnswer(request(b"/echo") + folded, [200, 400])

    def test_headLimitEverySplit(self) -> None:
        """A head past the limit is refused however the reads split it, after a plain request too."""
        self.patch(UpgradeChannel, "totalHeadersSize", 600)  # (a short head: fewer splits to try)
        big = offering(headers=[(b"X-Many-%d" % i, b"v" * 100) for i in range(6)])
        self.assertSplitsAnswer(big, [431])
        self.assertSplitsAnswer(request(b"/echo") + big, [200, 431])


class ReleaseTests(ChannelMixin, SynchronousTestCase):
    """
    After a switch the HTTP machinery lets go of the connection and is freed.
    """

    def setUp(self) -> None:
        super().setUp()
        TrackedRequest.refs = []

    def trackedSite(self, plugin: RecordingUpgrade) -> UpgradeSite:
        """A site whose requests and channels are tracked."""
        site = self.makeSite([plugin])
        site.requestFactory = TrackedRequest
        return site

    def connectString(self, plugin: RecordingUpgrade) -> tuple[Protocol, StringTransport]:
        """A tracked site's protocol on a L{StringTransport}, a push producer."""
        protocol = self.trackedSite(plugin).buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER, hostAddress=HOST)
        protocol.makeConnection(transport)
        return protocol, transport

    def assertCollected(self) -> None:
        """Every request, and the channel that made it, is gone."""
        gc.collect()
        self.assertTrue(TrackedRequest.refs)
        self.assertEqual([ref() for ref in TrackedRequest.refs], [None] * len(TrackedRequest.refs))

    def test_collectedAfterClose(self) -> None:
        """After an upgraded connection closes, channel and requests are freed."""
        plugin = RecordingUpgrade()
        conn = MemoryConnection(self.trackedSite(plugin))
        conn.send(request() + offering(body=b"body") + b"x")
        self.assertTrue(conn.received.endswith(head101()))
        conn.close()
        self.assertIsNotNone(plugin.protocol.lostReason)
        self.assertEqual(plugin.protocol.data, b"x")
        self.assertCollected()

    def test_collectedOverStringTransport(self) -> None:
        """The same over a transport the channel registers with as producer."""
        for data in (offering(), request() + offering(b"test", headers=[(b"Transfer-Encoding", b"chunked")])):
            plugin = RecordingUpgrade()
            protocol, transport = self.connectString(plugin)
            protocol.dataReceived(data + chunked(b"a") + b"x")
            self.assertTrue(transport.value().endswith(head101()))
            self.assertCollected()
            protocol.dataReceived(b"y")
            protocol.connectionLost(Failure(ConnectionDone()))
            self.assertIsNotNone(plugin.protocol.lostReason)
            self.assertCollected()

    def test_producerReleased(self) -> None:
        """The new protocol finds no producer registered, and may register one."""
        plugin = RecordingUpgrade()
        protocol, transport = self.connectString(plugin)
        self.assertIsNotNone(transport.producer)
        protocol.dataReceived(offering())
        self.assertIsNone(transport.producer)
        producer = RecordingProtocol()
        transport.registerProducer(producer, True)
        self.assertIs(transport.producer, producer)

    def test_resumedAfterBackpressure(self) -> None:
        """A transport paused by HTTP buffering is resumed for the new protocol."""
        plugin = RecordingUpgrade()
        protocol, transport = self.connectString(plugin)
        flood = bytes(range(256)) * 100
        protocol.dataReceived(request(b"/slow") + offering() + flood)
        self.assertEqual(transport.producerState, "paused")
        (slow,) = self.slow.pending
        slow.setHeader(b"Content-Length", b"0")
        slow.finish()
        self.assertTrue(transport.value().endswith(head101()))
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(plugin.protocol.data, flood)


class TimeoutTests(ChannelMixin, SynchronousTestCase):
    """
    The HTTP idle timeout ends with the switch, on the site's own clock.
    """

    def connectString(self, plugin: RecordingUpgrade) -> tuple[Protocol, StringTransport]:
        """A site's protocol on a L{StringTransport}, as Twisted tests do."""
        site = self.makeSite([plugin])
        protocol = site.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER, hostAddress=HOST)
        protocol.makeConnection(transport)
        return protocol, transport

    def feed(self, protocol: Protocol, data: bytes, chunkSize: int | None) -> None:
        """Deliver C{data} whole, or in C{chunkSize} pieces."""
        step = chunkSize or len(data)
        for i in range(0, len(data), step):
            protocol.dataReceived(data[i : i + step])

    def test_idleHTTPTimesOut(self) -> None:
        """An idle HTTP/1.1 connection is closed after the idle timeout."""
        protocol, transport = self.connectString(RecordingUpgrade())
        self.feed(protocol, request(), None)
        self.assertIn(b" 200 OK\r\n", transport.value())
        self.clock.advance(59)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(transport.disconnecting)

    def test_upgradedDoesNotTimeOut(self) -> None:
        """An idle upgraded connection outlives every HTTP timer."""
        for chunkSize in (None, 1):
            for data in (offering(), request() + offering(body=b"b")):
                plugin = RecordingUpgrade()
                protocol, transport = self.connectString(plugin)
                self.feed(protocol, data, chunkSize)
                self.assertTrue(transport.value().endswith(head101()))
                for _ in range(10):
                    self.clock.advance(60)
                self.assertFalse(transport.disconnecting)
                self.assertIsNone(plugin.protocol.lostReason)
                protocol.dataReceived(b"alive")
                self.assertEqual(plugin.protocol.data, b"alive")

    def test_upgradedBehindSlowDoesNotTimeOut(self) -> None:
        """A switch made when a slow request ends leaves no timer either."""
        plugin = RecordingUpgrade()
        protocol, transport = self.connectString(plugin)
        self.feed(protocol, request(b"/slow") + offering(), None)
        (slow,) = self.slow.pending
        slow.finish()
        self.assertTrue(transport.value().endswith(head101()))
        self.clock.advance(3600)
        self.assertFalse(transport.disconnecting)

    def test_memoryConnectionTimeout(self) -> None:
        """Over a L{MemoryConnection}, the same: HTTP times out, upgraded not."""
        plain = self.connect(self.makeSite([RecordingUpgrade()]))
        plain.send(request())
        plugin = RecordingUpgrade()
        upgraded = self.connect(self.makeSite([plugin]))
        upgraded.send(offering())
        self.clock.advance(61)
        self.clock.advance(16)
        plain.flush()
        upgraded.flush()
        self.assertTrue(plain.serverTransport.disconnected)
        self.assertIsNotNone(clientOf(plain).lostReason)
        self.assertFalse(upgraded.serverTransport.disconnecting)
        self.assertIsNone(plugin.protocol.lostReason)


class AsyncNegotiateTests(ChannelMixin, SynchronousTestCase):
    """
    A plugin may answer C{negotiate} with a L{Deferred}.
    """

    def test_deferredAccept(self) -> None:
        """Bytes that arrive while a decision is pending reach the protocol."""
        for chunkSize in (None, 1):
            decision: Deferred[Decision] = Deferred()
            plugin = RecordingUpgrade(decision=decision)
            conn = MemoryConnection(self.makeSite([plugin]), chunkSize=chunkSize)
            conn.send(offering() + b"early ")
            conn.send(b"bytes")
            self.assertEqual(conn.received, b"")
            decision.callback(Accept())
            conn.flush()
            self.assertEqual(conn.received, head101())
            self.assertEqual(plugin.protocol.data, b"early bytes")

    def test_deferredResumesPausedTransport(self) -> None:
        """Input paused while a decision is pending is resumed by the switch."""
        decision: Deferred[Decision] = Deferred()
        plugin = RecordingUpgrade(decision=decision)
        protocol = self.makeSite([plugin]).buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER, hostAddress=HOST)
        protocol.makeConnection(transport)
        flood = bytes(range(256)) * 100
        protocol.dataReceived(offering() + flood)
        self.assertEqual(transport.producerState, "paused")
        decision.callback(Accept())
        self.assertEqual(transport.value(), head101())
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(plugin.protocol.data, flood)

    def test_deferredDeclineThenNext(self) -> None:
        """A deferred C{Decline} moves on to the next preference."""
        decision: Deferred[Decision] = Deferred()
        first, second = RecordingUpgrade("first", decision=decision), RecordingUpgrade("second")
        conn = MemoryConnection(self.makeSite([first, second]))
        conn.send(offering(b"first, second") + b"after")
        self.assertEqual(second.negotiated, [])
        decision.callback(Decline())
        conn.flush()
        self.assertEqual(conn.received, head101(b"second"))
        self.assertEqual(second.protocol.data, b"after")

    def test_deferredFailure(self) -> None:
        """A failed deferred decision is a C{500}; HTTP/1.1 goes on."""
        decision: Deferred[Decision] = Deferred()
        conn = MemoryConnection(self.makeSite([RecordingUpgrade(decision=decision)]))
        conn.send(offering() + request(b"/show?next"))
        decision.errback(ZeroDivisionError())
        conn.flush()
        responses, _ = parseResponses(conn.received)
        self.assertEqual([r.code for r in responses], [500, 200])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_closedWhilePending(self) -> None:
        """A client gone before the decision: nothing is sent, nothing logged."""
        decision: Deferred[Decision] = Deferred()
        plugin = RecordingUpgrade(decision=decision)
        conn = MemoryConnection(self.makeSite([plugin]))
        conn.send(offering())
        conn.close()
        decision.callback(Accept())
        self.assertEqual(conn.received, b"")
        self.assertEqual(plugin.protocols, [])
        self.assertEqual(self.flushLoggedErrors(), [])


class TestingHelperTests(SynchronousTestCase):
    """
    L{txupgrade.testing} works as its module docstring shows.
    """

    def test_docstringExample(self) -> None:
        """The example: a 101, echoed bytes, then the client hangs up."""
        for chunkSize in (None, 1):
            site = UpgradeSite(Show(), [EchoUpgrade()], reactor=Clock())
            conn = MemoryConnection(site, chunkSize=chunkSize)
            conn.send(upgradeRequest(["echo"]) + b"first bytes")
            self.assertTrue(conn.received.startswith(b"HTTP/1.1 101 "))
            self.assertEqual(conn.received, head101(b"echo") + b"first bytes")
            conn.send(b"more")
            self.assertEqual(conn.received, head101(b"echo") + b"first bytesmore")
            client = conn.client
            assert isinstance(client, RecordingProtocol)
            self.assertIsNone(client.lostReason)
            conn.close()
            self.assertIsNotNone(client.lostReason)
            self.assertTrue(conn.serverTransport.disconnected)

    def test_upgradeRequestBytes(self) -> None:
        """C{upgradeRequest} builds the documented request, in offer order."""
        self.assertEqual(
            upgradeRequest(["a", "b/2"]),
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: a, b/2\r\n\r\n",
        )
        self.assertEqual(
            upgradeRequest(["x"], b"/p?q", method=b"POST", headers=[(b"X-A", b"1")], body=b"hi", host=b"h:1"),
            b"POST /p?q HTTP/1.1\r\nHost: h:1\r\nConnection: Upgrade\r\nUpgrade: x\r\n"
            b"X-A: 1\r\nContent-Length: 2\r\n\r\nhi",
        )

    def test_plainHTTP(self) -> None:
        """Without an offer, the connection is a plain HTTP/1.1 one."""
        conn = MemoryConnection(UpgradeSite(EchoResource(), reactor=Clock()))
        conn.send(request(b"/", headers=[(b"Content-Length", b"3")], body=b"abc", method=b"POST"))
        (response,), _ = parseResponses(conn.received)
        self.assertEqual((response.code, response.body), (200, b"abc"))

    def test_addresses(self) -> None:
        """The server side sees the given peer and host addresses."""
        plugin = RecordingUpgrade()
        peer = IPv4Address("TCP", "10.0.0.1", 1234)
        conn = MemoryConnection(UpgradeSite(Show(), [plugin], reactor=Clock()), peer=peer, host=HOST)
        conn.send(upgradeRequest(["test"]))
        self.assertEqual((plugin.protocol.request.peer, plugin.protocol.request.host), (peer, HOST))


class AsyncNegotiateDynamicTests(AsyncNegotiateTests):
    """A L{Deferred} from C{negotiate}, decided in render over a dynamic tree."""

    dynamic = True


class CountingRequest(UpgradeAwareRequest):
    """Counts how often twisted.web's C{process} ran."""

    processed = 0

    def process(self) -> None:
        CountingRequest.processed += 1
        super().process()


class DecisionPointTests(ChannelMixin, SynchronousTestCase):
    """
    A static path switches before twisted.web processes the request; a
    dynamic one after its traversal. The answers are the same.
    """

    def switchOver(self, dynamic: bool, target: bytes) -> tuple[int, bytes]:
        self.dynamic = dynamic
        CountingRequest.processed = 0
        site = self.makeSite([self.ws])
        site.requestFactory = CountingRequest
        conn = self.connect(site)
        conn.send(offering(target=target, protocols=b"ws") + b"after")
        return CountingRequest.processed, conn.received

    def test_staticSwitchSkipsProcessing(self) -> None:
        """Over a static tree the switch happens without C{Request.process}."""
        processed, received = self.switchOver(False, b"/ws")
        self.assertEqual(processed, 0)
        self.assertTrue(received.startswith(head101(b"ws")), received)

    def test_dynamicSwitchAfterProcessing(self) -> None:
        """Over a dynamic tree the same switch happens from render."""
        processed, received = self.switchOver(True, b"/ws")
        self.assertEqual(processed, 1)
        self.assertTrue(received.startswith(head101(b"ws")), received)

    def test_unknownChildIsNotStatic(self) -> None:
        """A path missing from C{children} falls back to twisted.web's traversal."""
        processed, received = self.switchOver(False, b"/nothing/here")
        self.assertEqual(processed, 1)
        self.assertTrue(received.startswith(head101(b"ws")), received)
