"""
Rules R1-R15 of docs/rules.md, each checked over a real TCP socket on 127.0.0.1.

The client writes raw request bytes and compares the answer byte for byte;
only the C{Date} and C{Server} header lines are removed before comparing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tests.support.http import Hello, SimpleUpgrade, normalize, plainResponse, request, switching, upgrade
from tests.support.net import RawClient, TLSPair, TrackingSite, connectClient, listen, withTimeout
from txupgrade.negotiation import Accept, Decline, Refuse, UpgradeError, UpgradeRequest
from txupgrade.protocols.echo import EchoUpgrade
from txupgrade.resource import BytesResource, DirectoryResource, UpgradeRequiredResource


def advertising(protocols: bytes) -> bytes:
    """The header lines of a plain answer advertising C{protocols} (R5)."""
    return b"Upgrade: " + protocols + b"\r\nConnection: Upgrade\r\n"


ADVERTISE_ECHO = advertising(b"echo")


class Report(Protocol):
    """Answer the original request: say what it was, then echo (R8)."""

    def __init__(self, request: UpgradeRequest) -> None:
        self.request = request

    def connectionMade(self) -> None:
        assert self.transport is not None
        r = self.request
        self.transport.write(b"<%s %s %s body=%d:%s>" % (r.method, r.target, r.version, len(r.body), r.body))

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


def reported(method: bytes, target: bytes, body: bytes) -> bytes:
    """What L{Report} writes first for that request."""
    return b"<%s %s HTTP/1.1 body=%d:%s>" % (method, target, len(body), body)


class _Server:
    """Helpers to serve a site and connect raw clients, for trial test cases."""

    def serve(self, protocols: Any = None, resource: Any = None, **kwargs: Any) -> Any:
        """Listen on 127.0.0.1 with an L{UpgradeSite} (C{echo} by default)."""
        if protocols is None:
            protocols = [EchoUpgrade()]
        self.site = TrackingSite(Hello() if resource is None else resource, protocols, **kwargs)
        self.port = listen(self, self.site)  # type: ignore[arg-type]
        return self.port

    def connect(self) -> Any:
        """A new L{RawClient} connected to the last L{serve}d port."""
        return connectClient(self, self.port)  # type: ignore[arg-type]

    @inlineCallbacks
    def roundTrip(self, data: bytes, expected: bytes, client: RawClient | None = None) -> Any:
        """
        Send C{data} on C{client} (a new connection by default); assert the
        normalized answer is exactly C{expected}.
        """
        if client is None:
            client = yield self.connect()
        before = len(normalize(client.data))
        client.send(data)
        yield client.waitFor(lambda received: len(normalize(received)) >= before + len(expected))
        self.assertEqual(normalize(client.data)[before:], expected)  # type: ignore[attr-defined]
        return client

    @inlineCallbacks
    def assertEchoes(self, client: RawClient, payload: bytes = b"ping \x00\xff pong") -> Any:
        """After a switch, C{payload} comes back exactly."""
        before = len(client.data)
        client.send(payload)
        yield client.waitForBytes(before + len(payload))
        self.assertEqual(client.data[before:], payload)  # type: ignore[attr-defined]


class ListSyntaxTests(_Server, TestCase):
    """R1: C{Upgrade = #protocol}, with OWS, empty elements and several lines."""

    @inlineCallbacks
    def test_owsAndEmptyElements(self) -> Any:
        """OWS around commas and empty elements are ignored."""
        self.serve()
        client = yield self.roundTrip(upgrade(b" ,\t, nope/1 ,,  echo\t, "), switching())
        yield self.assertEchoes(client)

    @inlineCallbacks
    def test_severalUpgradeLines(self) -> Any:
        """Several C{Upgrade} lines form one list, in order."""
        self.serve()
        data = request(headers=[(b"Upgrade", b"nope"), (b"Connection", b"Upgrade"), (b"Upgrade", b"echo")])
        client = yield self.roundTrip(data, switching())
        yield self.assertEchoes(client)

    @inlineCallbacks
    def test_firstListedWinsAcrossLines(self) -> Any:
        """The order of the list follows the order of the lines."""
        self.serve([SimpleUpgrade("alpha"), SimpleUpgrade("beta")])
        data = request(headers=[(b"Connection", b"Upgrade"), (b"Upgrade", b"beta"), (b"Upgrade", b"alpha")])
        yield self.roundTrip(data, switching(b"beta") + b"[beta]")

    @inlineCallbacks
    def test_onlyEmptyElements(self) -> Any:
        """An C{Upgrade} list of empty elements offers nothing: plain answer, no switch."""
        self.serve()
        yield self.roundTrip(upgrade(b" , ,"), plainResponse(b"hello /"))


class CaseAndVersionTests(_Server, TestCase):
    """R2: names compare case-insensitively; a stated version must match."""

    @inlineCallbacks
    def test_mixedCaseName(self) -> Any:
        """C{Upgrade: EcHo} switches to C{echo}, named as the server names it."""
        self.serve()
        client = yield self.roundTrip(upgrade(b"EcHo"), switching(b"echo"))
        yield self.assertEchoes(client)

    @inlineCallbacks
    def test_versionMustMatch(self) -> Any:
        """A plugin stating version C{1} is not chosen for C{/2}, but is for C{/1}."""
        self.serve([SimpleUpgrade("vers", version="1")])
        yield self.roundTrip(upgrade(b"VERS/2, vers/1"), switching(b"vers/1") + b"[vers]")

    @inlineCallbacks
    def test_wrongVersionOnly(self) -> Any:
        """Only a wrong version offered: a plain answer advertising C{vers/1}."""
        self.serve([SimpleUpgrade("vers", version="1")])
        yield self.roundTrip(upgrade(b"vers/2"), plainResponse(b"hello /", advertising(b"vers/1")))


class ConnectionOptionTests(_Server, TestCase):
    """R3: C{Upgrade} counts only when C{Connection} lists C{upgrade}."""

    @inlineCallbacks
    def test_withoutConnectionUpgrade(self) -> Any:
        """No C{Connection: upgrade}: plain HTTP, and later bytes stay HTTP."""
        self.serve()
        data = request(headers=[(b"Upgrade", b"echo")]) + request(target=b"/next")
        yield self.roundTrip(data, plainResponse(b"hello /") + plainResponse(b"hello /next"))

    @inlineCallbacks
    def test_connectionOtherOptionOnly(self) -> Any:
        """C{Connection: keep-alive} alone, or C{upgrades}, does not name C{upgrade}."""
        self.serve()
        client = yield self.roundTrip(upgrade(connection=b"keep-alive"), plainResponse(b"hello /"))
        yield self.roundTrip(upgrade(connection=b"upgrades"), plainResponse(b"hello /"), client)

    @inlineCallbacks
    def test_tokenList(self) -> Any:
        """C{Connection: keep-alive, Upgrade} names the option."""
        self.serve()
        client = yield self.roundTrip(upgrade(connection=b"keep-alive, Upgrade"), switching())
        yield self.assertEchoes(client)

    @inlineCallbacks
    def test_anyCase(self) -> Any:
        """C{Connection: UPGRADE} names the option."""
        self.serve()
        yield self.roundTrip(upgrade(connection=b"UPGRADE"), switching())

    @inlineCallbacks
    def test_twoConnectionLines(self) -> Any:
        """The option may be on a second C{Connection} line."""
        self.serve()
        data = request(
            headers=[(b"Connection", b"keep-alive"), (b"Upgrade", b"echo"), (b"Connection", b"upgrade")]
        )
        client = yield self.roundTrip(data, switching())
        yield self.assertEchoes(client)


class HTTP10Tests(_Server, TestCase):
    """R4: an C{Upgrade} in an HTTP/1.0 request is ignored."""

    @inlineCallbacks
    def test_http10Ignored(self) -> Any:
        """An HTTP/1.0 offer gets a plain HTTP/1.0 answer and no C{101}."""
        self.serve()
        client = yield self.connect()
        client.send(
            request(version=b"HTTP/1.0", headers=[(b"Connection", b"Upgrade"), (b"Upgrade", b"echo")])
        )
        data = yield client.waitForClose()
        self.assertEqual(
            normalize(data),
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\nhello /",
        )


class IgnoreAndAdvertiseTests(_Server, TestCase):
    """R5: an offer the server does not take gets a normal answer, advertising."""

    @inlineCallbacks
    def test_unknownProtocolAdvertised(self) -> Any:
        """C{Upgrade: nope}: C{200} with C{Upgrade: echo} and C{Connection: Upgrade}."""
        self.serve()
        client = yield self.roundTrip(upgrade(b"nope"), plainResponse(b"hello /", ADVERTISE_ECHO))
        yield self.roundTrip(request(target=b"/again"), plainResponse(b"hello /again"), client)

    @inlineCallbacks
    def test_noAdvertising(self) -> Any:
        """With C{advertise=False}, the answer lists nothing."""
        self.serve(advertise=False)
        yield self.roundTrip(upgrade(b"nope"), plainResponse(b"hello /"))

    @inlineCallbacks
    def test_allDecline(self) -> Any:
        """When the only match declines, the request is answered plainly."""
        self.serve([SimpleUpgrade("shy", decision=lambda r: Decline("no"))])
        yield self.roundTrip(upgrade(b"shy"), plainResponse(b"hello /", advertising(b"shy")))


class PreferenceTests(_Server, TestCase):
    """R6: only a listed protocol, by client preference unless configured."""

    def serveTwo(self, **kwargs: Any) -> None:
        self.serve([SimpleUpgrade("beta"), SimpleUpgrade("alpha")], **kwargs)

    @inlineCallbacks
    def test_clientFirstChoiceAlpha(self) -> Any:
        """C{alpha, beta} switches to C{alpha}, though the server lists beta first."""
        self.serveTwo()
        client = yield self.roundTrip(upgrade(b"alpha, beta"), switching(b"alpha") + b"[alpha]")
        yield self.assertEchoes(client)

    @inlineCallbacks
    def test_clientFirstChoiceBeta(self) -> Any:
        """C{beta, alpha} switches to C{beta}."""
        self.serveTwo()
        yield self.roundTrip(upgrade(b"beta, alpha"), switching(b"beta") + b"[beta]")

    @inlineCallbacks
    def test_unknownFirst(self) -> Any:
        """An unknown first choice is skipped."""
        self.serveTwo()
        yield self.roundTrip(upgrade(b"gamma, alpha"), switching(b"alpha") + b"[alpha]")

    @inlineCallbacks
    def test_declinedFirstChoice(self) -> Any:
        """A first choice that declines gives way to the client's second."""
        self.serve([SimpleUpgrade("beta"), SimpleUpgrade("alpha", decision=lambda r: Decline("busy"))])
        yield self.roundTrip(upgrade(b"alpha, beta"), switching(b"beta") + b"[beta]")

    @inlineCallbacks
    def test_serverPolicy(self) -> Any:
        """With C{policy="server"}, the server's order decides."""
        self.serveTwo(policy="server")
        yield self.roundTrip(upgrade(b"alpha, beta"), switching(b"beta") + b"[beta]")

    @inlineCallbacks
    def test_onlyListed(self) -> Any:
        """Nothing the client listed: no switch, both advertised in server order."""
        self.serveTwo()
        yield self.roundTrip(upgrade(b"gamma"), plainResponse(b"hello /", advertising(b"beta, alpha")))


class SwitchingResponseTests(_Server, TestCase):
    """R7: the exact C{101} head."""

    @inlineCallbacks
    def test_exactHead(self) -> Any:
        """The C{101} is exactly status line, C{Upgrade}, C{Connection}, CRLF."""
        self.serve()
        client = yield self.connect()
        client.send(upgrade())
        yield client.waitForSuffix(b"\r\n\r\n")
        self.assertEqual(
            client.data, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
        )
        yield self.assertEchoes(client)

    @inlineCallbacks
    def test_layersAndExtraHeaders(self) -> Any:
        """Several layers are listed as accepted, then the plugin's extra headers."""
        layered = SimpleUpgrade(
            "layered",
            decision=lambda r: Accept(headers=((b"X-Extra", b"1"),), upgrade=("TLS/1.2", "HTTP/1.1")),
        )
        self.serve([layered])
        yield self.roundTrip(
            upgrade(b"layered"),
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: TLS/1.2, HTTP/1.1\r\n"
            b"Connection: Upgrade\r\nX-Extra: 1\r\n\r\n[layered]",
        )


class OriginalRequestTests(_Server, TestCase):
    """R8: the new protocol answers the original request."""

    @inlineCallbacks
    def test_protocolSeesRequest(self) -> Any:
        """Method, target and body reach the new protocol, which answers them."""
        self.serve([SimpleUpgrade("report", Report)])
        data = upgrade(
            b"report", b"/some/path?q=1", extra=[(b"Content-Length", b"9")], method=b"POST", body=b"the body!"
        )
        client = yield self.roundTrip(
            data, switching(b"report") + reported(b"POST", b"/some/path?q=1", b"the body!")
        )
        yield self.assertEchoes(client)


class UpgradeRequiredTests(_Server, TestCase):
    """R9: a path served only through a protocol answers C{426}."""

    def serveBound(self) -> None:
        root = DirectoryResource()
        root.putChild(b"", Hello())
        bound = UpgradeRequiredResource([SimpleUpgrade("chat"), SimpleUpgrade("chat-old")])
        root.putChild(b"ws", bound)
        self.serve(resource=root)

    @inlineCallbacks
    def test_426(self) -> Any:
        """C{GET /ws} gets C{426} with C{Upgrade} (in preference order) and C{Connection}."""
        self.serveBound()
        body = b"This resource requires a protocol upgrade to: chat, chat-old\n"
        client = yield self.roundTrip(
            request(target=b"/ws"),
            b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: chat, chat-old\r\nConnection: Upgrade\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
        )
        yield self.roundTrip(request(), plainResponse(b"hello /"), client)

    @inlineCallbacks
    def test_426WithUntakenOffer(self) -> Any:
        """An offer nothing takes on C{/ws}: one C{426} naming this path's protocols once."""
        self.serveBound()
        body = b"This resource requires a protocol upgrade to: chat, chat-old\n"
        yield self.roundTrip(
            upgrade(b"nope", b"/ws"),
            b"HTTP/1.1 426 Upgrade Required\r\nConnection: Upgrade\r\nUpgrade: chat, chat-old\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
        )

    @inlineCallbacks
    def test_boundProtocolSwitches(self) -> Any:
        """Offering C{chat} on C{/ws} switches."""
        self.serveBound()
        client = yield self.roundTrip(upgrade(b"chat", b"/ws"), switching(b"chat") + b"[chat]")
        yield self.assertEchoes(client)

    @inlineCallbacks
    def test_boundProtocolElsewhere(self) -> Any:
        """C{chat} is bound to C{/ws}: offered on C{/}, only C{echo} is advertised."""
        self.serveBound()
        yield self.roundTrip(upgrade(b"chat"), plainResponse(b"hello /", ADVERTISE_ECHO))


class ExpectContinueTests(_Server, TestCase):
    """R10: C{100 Continue} comes before the C{101}."""

    @inlineCallbacks
    def sendExpecting(self, protocol: bytes, target: bytes, length: int, answer: bytes) -> Any:
        """
        On a new connection, a C{POST} head offering C{protocol} with
        C{Expect: 100-continue} and a C{Content-Length} of C{length}; assert
        what comes back is exactly C{answer}: a head (waited for up to its
        blank line), or a refusal (waited for until the server closes).
        """
        client = yield self.connect()
        client.send(
            upgrade(
                protocol,
                target,
                extra=[(b"Expect", b"100-continue"), (b"Content-Length", b"%d" % length)],
                method=b"POST",
            )
        )
        if answer.endswith(b"\r\n\r\n"):
            yield client.waitForSuffix(b"\r\n\r\n")
        else:
            yield client.waitForClose()
        self.assertEqual(client.data, answer)
        return client

    @inlineCallbacks
    def test_continueThenSwitch(self) -> Any:
        """The client waits for C{100 Continue}, sends the body, and gets the C{101}."""
        self.serve([SimpleUpgrade("report", Report)])
        client = yield self.sendExpecting(b"report", b"/up", 5, _CONTINUE)
        yield self.roundTrip(b"hello", switching(b"report") + reported(b"POST", b"/up", b"hello"), client)
        yield self.assertEchoes(client)

    @inlineCallbacks
    def test_continueThenPlainAnswer(self) -> Any:
        """An offer not taken, with C{Expect}: C{100}, then the normal answer."""
        self.serve()
        client = yield self.sendExpecting(b"nope", b"/", 2, _CONTINUE)
        yield self.roundTrip(b"ok", plainResponse(b"posted ok", ADVERTISE_ECHO), client)

    def test_tooLargeGetsNoContinue(self) -> Any:
        """A declared body over the limit: C{413} and close, never C{100 Continue}."""
        self.serve(maxUpgradeBodySize=16)
        return self.sendExpecting(b"echo", b"/", 17, _REFUSED_413)


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class WholeBodyTests(_Server, TestCase):
    """R11: the whole body is read before the switch; too large is refused."""

    bodyHeaders = [(b"Connection", b"Upgrade"), (b"Upgrade", b"report")]

    @inlineCallbacks
    def test_contentLengthInPieces(self) -> Any:
        """A C{Content-Length} body sent in pieces reaches the protocol whole."""
        self.serve([SimpleUpgrade("report", Report)])
        client = yield self.connect()
        data = request(b"POST", b"/", [*self.bodyHeaders, (b"Content-Length", b"12")], b"abcdefghijkl")
        sent = 0
        for piece in (data[:-12], data[-12:-8], data[-8:-1], data[-1:]):
            client.send(piece)
            sent += len(piece)
            yield self.site.connections[0].waitReceived(sent)
            if sent < len(data):
                self.assertEqual(client.data, b"")
        yield client.waitForBytes(len(switching(b"report")))
        yield client.waitFor(lambda d: d.endswith(b">"))
        self.assertEqual(client.data, switching(b"report") + reported(b"POST", b"/", b"abcdefghijkl"))

    @inlineCallbacks
    def test_chunked(self) -> Any:
        """A chunked body (with a trailer) reaches the protocol decoded and whole."""
        self.serve([SimpleUpgrade("report", Report)])
        data = request(
            b"POST",
            b"/c",
            [*self.bodyHeaders, (b"Transfer-Encoding", b"chunked")],
            b"4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n",
        )
        client = yield self.roundTrip(
            data + b"after", switching(b"report") + reported(b"POST", b"/c", b"wikipedia") + b"after"
        )
        yield self.assertEchoes(client)

    @inlineCallbacks
    def test_contentLengthTooLarge(self) -> Any:
        """A declared body over the limit: C{413}, then the server closes."""
        self.serve([SimpleUpgrade("report", Report)], maxUpgradeBodySize=16)
        client = yield self.connect()
        client.send(request(b"POST", b"/", [*self.bodyHeaders, (b"Content-Length", b"17")]))
        data = yield client.waitForClose()
        self.assertEqual(data, _REFUSED_413)

    @inlineCallbacks
    def test_chunkedTooLarge(self) -> Any:
        """A chunked body growing over the limit: C{413}, then the server closes."""
        self.serve([SimpleUpgrade("report", Report)], maxUpgradeBodySize=16)
        client = yield self.connect()
        client.send(request(b"POST", b"/", [*self.bodyHeaders, (b"Transfer-Encoding", b"chunked")]))
        client.send(b"10\r\n" + b"x" * 16 + b"\r\n")
        client.send(b"1\r\ny\r\n0\r\n\r\nafter")
        data = yield client.waitForClose()
        self.assertEqual(data, _REFUSED_413)

    @inlineCallbacks
    def test_limitAtBoundary(self) -> Any:
        """A body of exactly the limit is accepted."""
        self.serve([SimpleUpgrade("report", Report)], maxUpgradeBodySize=16)
        data = request(b"POST", b"/", [*self.bodyHeaders, (b"Content-Length", b"16")], b"y" * 16)
        yield self.roundTrip(data, switching(b"report") + reported(b"POST", b"/", b"y" * 16))

    @inlineCallbacks
    def test_limitOnlyForUpgrades(self) -> Any:
        """A large body without an upgrade offer is served as usual."""
        self.serve([SimpleUpgrade("report", Report)], maxUpgradeBodySize=16)
        body = b"z" * 100
        yield self.roundTrip(
            request(b"POST", b"/", [(b"Content-Length", b"100")], body), plainResponse(b"posted " + body)
        )


_REFUSED_413 = (
    b"HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 41\r\nConnection: close\r\n\r\nThe upgrade request's body is too large.\n"
)


class TrailingBytesTests(_Server, TestCase):
    """R12: every byte after the upgrade request goes to the new protocol."""

    @inlineCallbacks
    def test_sameSegment(self) -> Any:
        """Bytes in the same write as the request are echoed, in order."""
        self.serve()
        client = yield self.roundTrip(
            upgrade() + b"frame1\r\nGET / HTTP/1.1\r\n\r\n", switching() + b"frame1\r\nGET / HTTP/1.1\r\n\r\n"
        )
        yield self.assertEchoes(client)

    @inlineCallbacks
    def test_sameSegmentAfterBody(self) -> Any:
        """Bytes after a C{Content-Length} body, in the same write, follow it."""
        self.serve([SimpleUpgrade("report", Report)])
        data = upgrade(b"report", extra=[(b"Content-Length", b"3")], method=b"POST", body=b"abc")
        yield self.roundTrip(data + b"tail", switching(b"report") + reported(b"POST", b"/", b"abc") + b"tail")

    @inlineCallbacks
    def test_largeSameSegment(self) -> Any:
        """Over 16 KiB after the request (when the channel pauses reading) all arrive."""
        self.serve()
        tail = bytes(range(256)) * 400
        yield self.roundTrip(upgrade() + tail, switching() + tail)

    @inlineCallbacks
    def byteByByte(self, data: bytes, expected: bytes) -> Any:
        """Send C{data} one byte per write with C{TCP_NODELAY}, each read separately."""
        client = yield self.connect()
        client.transport.setTcpNoDelay(True)
        conn = self.site.connections[0]
        for i in range(len(data)):
            client.send(data[i : i + 1])
            yield conn.waitReceived(i + 1)
        self.assertEqual(conn.reads, len(data))
        yield client.waitForBytes(len(expected))
        self.assertEqual(client.data, expected)

    def test_oneBytePerWrite(self) -> Any:
        """A request and trailing bytes, one byte per segment, are echoed exactly."""
        self.serve()
        tail = b"\r\n\r\nGET / HTTP/1.1\r\n\r\nxyz"
        return self.byteByByte(upgrade() + tail, switching() + tail)

    def test_oneBytePerWriteChunked(self) -> Any:
        """A chunked upgrade request and trailing bytes, one byte per segment."""
        self.serve([SimpleUpgrade("report", Report)])
        chunked = [(b"Transfer-Encoding", b"chunked")]
        data = upgrade(b"report", extra=chunked, method=b"POST", body=b"3\r\nabc\r\n0\r\n\r\n")
        return self.byteByByte(
            data + b"0\r\n\r\n", switching(b"report") + reported(b"POST", b"/", b"abc") + b"0\r\n\r\n"
        )


class PipelineTests(_Server, TestCase):
    """R13: requests pipelined before the upgrade are answered first, in order."""

    @inlineCallbacks
    def test_twoGetsThenUpgrade(self) -> Any:
        """Two GETs and the upgrade in one write: two C{200}s, then the C{101}."""
        self.serve()
        data = request(target=b"/a") + request(target=b"/b") + upgrade(target=b"/c") + b"after"
        client = yield self.roundTrip(
            data, plainResponse(b"hello /a") + plainResponse(b"hello /b") + switching() + b"after"
        )
        yield self.assertEchoes(client)

    @inlineCallbacks
    def test_postThenUpgrade(self) -> Any:
        """A POST with a body, then the upgrade, in one write."""
        self.serve()
        data = request(b"POST", b"/p", [(b"Content-Length", b"4")], b"data") + upgrade() + b"after"
        yield self.roundTrip(data, plainResponse(b"posted data") + switching() + b"after")


class IdleTimeoutTests(_Server, TestCase):
    """After a switch the HTTP idle timeout no longer applies (the site runs on a fake clock)."""

    @inlineCallbacks
    def test_httpIdleTimesOut(self) -> Any:
        """Control: an idle HTTP connection is closed once the timeout passes."""
        clock = Clock()
        self.serve(timeout=30, reactor=clock)
        client = yield self.roundTrip(request(), plainResponse(b"hello /"))
        clock.advance(31)
        yield client.waitForClose()

    @inlineCallbacks
    def test_switchedNeverTimesOut(self) -> Any:
        """A switched connection survives long past the HTTP timeout."""
        clock = Clock()
        self.serve(timeout=30, reactor=clock)
        client = yield self.roundTrip(upgrade(), switching())
        for _ in range(3):
            clock.advance(1000)
        yield self.assertEchoes(client)
        self.assertIsNone(client.lostReason)


class Held(Resource):
    """A leaf whose answers wait until the test releases them."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Any] = []
        self.arrived: Deferred[None] = Deferred()

    def render_GET(self, request: Any) -> Any:
        self.waiting.append(request)
        if not self.arrived.called:
            self.arrived.callback(None)
        return NOT_DONE_YET

    def release(self) -> None:
        for waiting in self.waiting:
            waiting.setHeader(b"Content-Type", b"text/plain")
            waiting.write(b"held")
            waiting.finish()


class SlowPipelineTests(_Server, TestCase):
    """R13 when the request before the upgrade is answered later."""

    @inlineCallbacks
    def pipelineBehindHeld(self, tail: bytes) -> Any:
        held = Held()
        root = DirectoryResource()
        root.putChild(b"held", held)
        self.serve(resource=root)
        client = yield self.connect()
        data = request(target=b"/held") + upgrade() + tail
        client.send(data)
        yield withTimeout(held.arrived)
        # Past 16 KiB buffered, the HTTP channel stops reading (backpressure).
        yield self.site.connections[0].waitReceived(min(len(data), 16 * 1024))
        self.assertEqual(client.data, b"")
        held.release()
        expected = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nheld\r\n0\r\n\r\n" + switching() + tail
        )
        yield client.waitFor(lambda received: len(normalize(received)) >= len(expected))
        self.assertEqual(normalize(client.data), expected)
        yield self.assertEchoes(client)

    def test_upgradeBehindHeldRequest(self) -> Any:
        """The upgrade waits for the held answer, then switches with its trailing bytes."""
        return self.pipelineBehindHeld(b"after")

    def test_largeTailBehindHeldRequest(self) -> Any:
        """Over 16 KiB buffered behind a held request (reading paused) all arrive."""
        return self.pipelineBehindHeld(bytes(range(256)) * 400)


class BackpressurePipelineTests(_Server, TestCase):
    """R13 when an earlier answer fills the send buffer (the channel pauses reading)."""

    @inlineCallbacks
    def test_largeAnswerThenUpgrade(self) -> Any:
        """A 4 MiB answer, then the C{101}; the switched connection still reads."""
        big = bytes(range(256)) * (16 * 1024)
        root = DirectoryResource()
        root.putChild(b"big", BytesResource(big, "application/octet-stream"))
        self.serve(resource=root)
        client = yield self.connect()
        client.send(request(target=b"/big") + upgrade() + b"tail")
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
        expected = head % len(big) + big + switching() + b"tail"
        # Date and Server only add bytes: wait for the raw length, then compare.
        yield client.waitFor(lambda received: len(received) >= len(expected) and received.endswith(b"tail"))
        self.assertEqual(normalize(client.data), expected)
        yield self.assertEchoes(client)
        yield self.assertEchoes(client, b"x" * 100_000)


class H2Client(RawClient):
    """
    A raw HTTP/2 client (h2) that sends one request with whatever headers.

    @ivar events: Every h2 event received.
    """

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__()
        self.headers = headers
        self.events: list[Any] = []

    def connectionMade(self) -> None:
        from h2.config import H2Configuration
        from h2.connection import H2Connection

        config = H2Configuration(
            client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
        )
        self.conn = H2Connection(config)
        self.conn.initiate_connection()
        self.conn.send_headers(1, self.headers, end_stream=True)
        out = self.conn.data_to_send()
        self.sentHeaders = _decodeRequestHeaders(out)
        self.send(out)

    def dataReceived(self, data: bytes) -> None:
        import h2.exceptions

        try:
            self.events.extend(self.conn.receive_data(data))
        except h2.exceptions.ProtocolError as error:
            self.events.append(error)
        out = self.conn.data_to_send()
        if out and self.transport is not None:
            self.send(out)
        super().dataReceived(data)

    def statuses(self) -> list[bytes]:
        """Every C{:status} received, informational ones included."""
        import h2.events

        found: list[bytes] = []
        for event in self.events:
            if isinstance(event, (h2.events.ResponseReceived, h2.events.InformationalResponseReceived)):
                found.extend(value for name, value in event.headers if name == b":status")
        return found

    def refused(self) -> bool:
        """Whether stream 1 was reset or the connection terminated."""
        import h2.events

        return any(
            isinstance(e, h2.events.ConnectionTerminated)
            or (isinstance(e, h2.events.StreamReset) and e.stream_id == 1)
            for e in self.events
        )


def _decodeRequestHeaders(data: bytes) -> list[tuple[bytes, bytes]]:
    """The request headers a lenient HTTP/2 server decodes from C{data}."""
    import h2.events
    from h2.config import H2Configuration
    from h2.connection import H2Connection

    lenient = H2Connection(
        H2Configuration(client_side=False, validate_inbound_headers=False, normalize_inbound_headers=False)
    )
    lenient.initiate_connection()
    for event in lenient.receive_data(data):
        if isinstance(event, h2.events.RequestReceived):
            return list(event.headers)
    raise AssertionError("no request headers in what the client sent")


class HTTP2Tests(_Server, TestCase):
    """R14: on an HTTP/2 connection, C{Upgrade} is malformed and no C{101} is sent."""

    def setUp(self) -> None:
        try:
            import h2  # noqa: F401
            import trustme  # noqa: F401
        except ImportError as error:
            raise self.skipTest(f"needs the h2c and test extras: {error}") from None
        self.tls = TLSPair()
        self.site = TrackingSite(Hello(), [EchoUpgrade()])
        self.port = listen(self, self.site, self.tls.serverOptions([b"h2", b"http/1.1"]))

    def h2Headers(self, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        return [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"127.0.0.1"),
            (b":path", b"/"),
            *extra,
        ]

    @inlineCallbacks
    def h2Request(self, *extra: tuple[bytes, bytes]) -> Any:
        client = H2Client(self.h2Headers(*extra))
        endpoint = self.tls.clientEndpoint(self.port, [b"h2"])
        yield connectClient(self, self.port, endpoint, client)
        return client

    @inlineCallbacks
    def test_plainRequestServed(self) -> Any:
        """Control: over ALPN C{h2}, a request without C{Upgrade} gets C{200}."""
        import h2.events

        client = yield self.h2Request()
        yield client.waitFor(lambda d: any(isinstance(e, h2.events.StreamEnded) for e in client.events))
        self.assertEqual(client.transport.negotiatedProtocol, b"h2")
        self.assertEqual(client.statuses(), [b"200"])
        body = b"".join(e.data for e in client.events if isinstance(e, h2.events.DataReceived))
        self.assertEqual(body, b"hello /")

    @inlineCallbacks
    def assertRefused(self, *extra: tuple[bytes, bytes]) -> Any:
        client = yield self.h2Request(*extra)
        # Refused means: stream 1 reset, or the connection terminated / closed.
        for header in extra:
            self.assertIn(header, client.sentHeaders)
        yield client.waitFor(lambda d: client.refused())
        self.assertEqual(client.transport.negotiatedProtocol, b"h2")
        self.assertNotIn(b"101", client.statuses())
        self.assertEqual(client.statuses(), [])

    def test_upgradeAndConnectionRefused(self) -> Any:
        """C{upgrade: echo} with C{connection: upgrade} is refused, never switched."""
        return self.assertRefused((b"upgrade", b"echo"), (b"connection", b"upgrade"))

    def test_upgradeAloneRefused(self) -> Any:
        """C{upgrade: echo} alone is refused too."""
        return self.assertRefused((b"upgrade", b"echo"))


class MalformedTests(_Server, TestCase):
    """R15: malformed offers get C{400} (or are ignored), the channel stays intact."""

    @inlineCallbacks
    def test_nonTokenThenGet(self) -> Any:
        """Non-token characters: C{400}, then the same connection serves a GET."""
        self.serve()
        body = b"malformed protocol in Upgrade: 'ec@ho'"
        client = yield self.roundTrip(upgrade(b"ec@ho, echo"), _bad(body))
        yield self.roundTrip(request(target=b"/next"), plainResponse(b"hello /next"), client)
        yield self.roundTrip(upgrade(), switching(), client)
        yield self.assertEchoes(client)

    @inlineCallbacks
    def test_malformedWithBodyThenPipelinedGet(self) -> Any:
        """A malformed offer with a body, and a GET, in one write: C{400}, then C{200}."""
        self.serve()
        bad = upgrade(b"a b", extra=[(b"Content-Length", b"5")], method=b"POST", body=b"GET /")
        yield self.roundTrip(
            bad + request(target=b"/after"),
            _bad(b"malformed protocol in Upgrade: 'a b'") + plainResponse(b"hello /after"),
        )

    @inlineCallbacks
    def test_pluginRefuses(self) -> Any:
        """A plugin's C{Refuse} is answered as that HTTP error; the connection stays HTTP."""
        refusal = Refuse(403, ((b"X-Why", b"members only"),), b"go away\n", "test")
        self.serve([SimpleUpgrade("club", decision=lambda r: refusal)])
        client = yield self.roundTrip(
            upgrade(b"club"),
            b"HTTP/1.1 403 Forbidden\r\nX-Why: members only\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 8\r\n\r\ngo away\n",
        )
        yield self.roundTrip(request(), plainResponse(b"hello /"), client)

    @inlineCallbacks
    def assertFailed(self, offer: bytes, logged: type[BaseException]) -> Any:
        """C{offer} is answered C{500} with C{logged} logged once; a GET is served after."""
        client = yield self.roundTrip(upgrade(offer), _FAILED)
        self.assertEqual(len(self.flushLoggedErrors(logged)), 1)
        yield self.roundTrip(request(), plainResponse(b"hello /"), client)
        return client

    def test_pluginRefusesWithSuccess(self) -> Any:
        """A C{Refuse} with a non-error status is a plugin bug: C{500}, logged."""
        self.serve([SimpleUpgrade("odd", decision=lambda r: Refuse(200))])
        return self.assertFailed(b"odd", UpgradeError)

    @inlineCallbacks
    def test_oversizeValue(self) -> Any:
        """A 5000-byte C{Upgrade} value: C{400}, connection still usable."""
        self.serve()
        client = yield self.roundTrip(upgrade(b"e" * 5000), _bad(b"Upgrade field too long"))
        yield self.roundTrip(request(), plainResponse(b"hello /"), client)

    @inlineCallbacks
    def test_tooManyProtocols(self) -> Any:
        """Seventeen protocols offered: C{400}."""
        self.serve()
        offer = b", ".join(b"p%d" % i for i in range(17))
        yield self.roundTrip(upgrade(offer), _bad(b"Upgrade field lists too many protocols"))

    @inlineCallbacks
    def test_malformedButNotHonoured(self) -> Any:
        """A malformed C{Upgrade} without C{Connection: upgrade} is ignored (R3)."""
        self.serve()
        yield self.roundTrip(request(headers=[(b"Upgrade", b"ec@ho")]), plainResponse(b"hello /"))

    @inlineCallbacks
    def test_bareCarriageReturn(self) -> Any:
        """
        A bare CR inside the value: C{400}, never a switch. RFC 9112 §2.2 lets
        a parser refuse the line (Twisted 26.10: its own 400, and close) or
        read the CR as a space (Twisted 26.4: C{ec ho} is then a malformed
        offer, R15, answered 400 by txupgrade on a connection that goes on).
        """
        self.serve()
        client = yield self.connect()
        client.send(upgrade(b"ec\rho"))
        data = yield client.waitFor(lambda d: b"\r\n\r\n" in d)
        self.assertTrue(data.startswith(b"HTTP/1.1 400 Bad Request\r\n"), data)
        self.assertNotIn(b" 101 ", data)

    @inlineCallbacks
    def test_pluginHeaderWithCRLF(self) -> Any:
        """A plugin's header value with CRLF: C{500}, logged, no injection, usable after."""
        bad = SimpleUpgrade("bad", decision=lambda r: Accept(headers=((b"X-Bad", b"a\r\nInjected: yes"),)))
        self.serve([bad, EchoUpgrade()])
        client = yield self.assertFailed(b"bad", UpgradeError)
        yield self.roundTrip(upgrade(), switching(), client)
        self.assertNotIn(b"Injected", client.data)

    def test_pluginRaises(self) -> Any:
        """A plugin whose C{negotiate} raises: C{500}, logged, connection usable."""

        def explode(request: UpgradeRequest) -> Any:
            raise ZeroDivisionError("boom")

        self.serve([SimpleUpgrade("boom", decision=explode)])
        return self.assertFailed(b"boom", ZeroDivisionError)

    @inlineCallbacks
    def test_garbageDoesNotAffectOthers(self) -> Any:
        """While one client sends garbage, another's upgrade works."""
        self.serve()
        bad = yield self.connect()
        garbage = b"\x00\x01\x02 garbage \xff"
        bad.send(garbage)
        yield self.site.connections[0].waitReceived(len(garbage))
        good = yield self.connect()
        yield self.roundTrip(upgrade(), switching(), good)
        yield self.assertEchoes(good)
        bad.send(b"\r\nGET / HTTP/1.1\r\n\r\n")
        data = yield bad.waitForClose()
        self.assertEqual(data, b"HTTP/1.1 400 Bad Request\r\n\r\n")
        yield self.assertEchoes(good, b"still here")
        self.assertIsNone(good.lostReason)

    @inlineCallbacks
    def test_malformedOfferDoesNotAffectOthers(self) -> Any:
        """A C{400} for a bad offer on one connection leaves another's switch intact."""
        self.serve()
        good = yield self.connect()
        yield self.roundTrip(upgrade(), switching(), good)
        yield self.roundTrip(upgrade(b"e" * 5000), _bad(b"Upgrade field too long"))
        yield self.assertEchoes(good)


def _error(status: int, reason: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        reason,
        len(body),
        body,
    )


def _bad(body: bytes) -> bytes:
    return _error(400, b"Bad Request", body)


#: The C{500} for a plugin that fails (R15).
_FAILED = _error(500, b"Internal Server Error", b"The upgrade failed on the server.\n")
