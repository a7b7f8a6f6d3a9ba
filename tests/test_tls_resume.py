"""
The TLS upgrade's hand-back to HTTP, in memory: after the handshake the
channel that read the upgrade request answers it over TLS and goes on
serving (L{txupgrade.protocols.tls}, L{txupgrade._twistedcompat.resumeChannel}).

The transport's C{startTLS} puts a stand-in TLS layer in front of the
protocol, which records what it reads until the test completes its handshake;
the sockets and real TLS are in C{tests/test_tls_upgrade.py}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport, ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from zope.interface import alsoProvides, implementer

from tests.support.http import Response, parseResponses, request, switching, upgrade
from txupgrade import UpgradeSite
from txupgrade.protocols.echo import EchoUpgrade
from txupgrade.protocols.tls import TLSUpgrade
from txupgrade.resource import DirectoryResource

HELLO = b"\x16\x03\x01\x00\x05HELLO"


class SeenHeaders(Resource):
    """Says what the site sees of a request: TLS, path, the framing and upgrade fields, the body."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        fields = b" ".join(
            b"%s=%s" % (name, b",".join(request.requestHeaders.getRawHeaders(name, [b"-"])))
            for name in (b"connection", b"upgrade", b"expect", b"transfer-encoding", b"content-length")
        )
        args = b",".join(name + b"=" + b"|".join(values) for name, values in sorted(request.args.items()))
        return b"secure=%d %s %s args=%s body=%s" % (
            request.isSecure(),
            request.uri,
            fields,
            args,
            request.content.read(),
        )


def seen(
    target: bytes, connection: bytes = b"-", contentLength: bytes = b"-", args: bytes = b"", body: bytes = b""
) -> bytes:
    """What L{SeenHeaders} answers over TLS, where no upgrade, expect or chunked field is left."""
    return (
        b"secure=1 %s connection=%s upgrade=- expect=- transfer-encoding=- content-length=%s args=%s body=%s"
        % (
            target,
            connection,
            contentLength,
            args,
            body,
        )
    )


class Dynamic(Resource):
    """A parent whose children are made per request: reaching them needs twisted.web's traversal."""

    def getChild(self, path: bytes, request: Any) -> Resource:
        return SeenHeaders()


class _StandInTLS:
    """What C{startTLS} puts in front of the protocol: holds bytes until L{handshake}."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped
        self.hello = b""
        self.done = False

    def dataReceived(self, data: bytes) -> None:
        if self.done:
            self.wrapped.dataReceived(data)
        else:
            self.hello += data

    def handshake(self) -> None:
        self.done = True
        self.wrapped.handshakeCompleted()

    def connectionLost(self, reason: Failure) -> None:
        self.wrapped.connectionLost(reason)


@implementer(ITLSTransport)
class _TLSCapableTransport(StringTransport):
    """A L{StringTransport} that can start (stand-in) TLS, as TCP can."""

    def __init__(self) -> None:
        super().__init__(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
        )
        self.protocol: Any = None
        self.tls: _StandInTLS | None = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        """Nothing to set."""

    def startTLS(self, contextFactory: object, normal: bool = True) -> None:
        self.tls = _StandInTLS(self.protocol)
        self.protocol = self.tls
        alsoProvides(self, ISSLTransport)


class ResumeTests(SynchronousTestCase):
    """The original request answered over TLS by the channel that read it, and what follows."""

    def connect(self) -> _TLSCapableTransport:
        """A new connection to a new site (on its own clock, L{clock}), closed at cleanup."""
        self.clock = Clock()
        root = DirectoryResource()
        root.putChild(b"seen", SeenHeaders())
        root.putChild(b"dynamic", Dynamic())
        site = UpgradeSite(
            root, [TLSUpgrade(object(), handshakeTimeout=5), EchoUpgrade()], reactor=self.clock
        )
        site.timeOut = 30
        transport = _TLSCapableTransport()
        protocol = site.buildProtocol(transport.getPeer())
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.addCleanup(self.close, transport, self.clock)
        return transport

    def close(self, transport: _TLSCapableTransport, clock: Clock) -> None:
        """The connection ends; no timer of its own is left."""
        transport.protocol.connectionLost(Failure(ConnectionError("test over")))
        self.assertEqual(clock.getDelayedCalls(), [])

    def send(self, transport: _TLSCapableTransport, data: bytes, byteByByte: bool) -> None:
        """Deliver C{data} to whatever protocol the transport calls now, whole or one byte at a time."""
        chunks = [data[i : i + 1] for i in range(len(data))] if byteByByte else [data]
        for chunk in chunks:
            transport.protocol.dataReceived(chunk)

    def switchToTLS(self, data: bytes, byteByByte: bool, before: bytes = b"") -> _TLSCapableTransport:
        """
        Send the upgrade request C{data} (and any ClientHello behind it);
        check the plain 101, and C{before} it (a C{100 Continue}).
        """
        transport = self.connect()
        self.send(transport, data, byteByByte)
        self.assertEqual(transport.value(), before + switching(b"TLS/1.2, HTTP/1.1"), data)
        self.assertIsNotNone(transport.tls)
        transport.clear()
        return transport

    def handshake(self, transport: _TLSCapableTransport) -> list[Response]:
        """Complete the (stand-in) TLS handshake; the responses then written over TLS."""
        assert transport.tls is not None
        transport.tls.handshake()
        return self.answers(transport)

    def assertSeenOverTLS(
        self, transport: _TLSCapableTransport, expected: bytes, message: Any = None
    ) -> None:
        """Complete the handshake: one answer, whose body is C{expected} (as L{seen} writes it)."""
        [answer] = self.handshake(transport)
        self.assertEqual(answer.code, 200, message)
        self.assertEqual(answer.body, expected, message)

    def answers(self, transport: _TLSCapableTransport) -> list[Response]:
        responses, rest = parseResponses(transport.value())
        self.assertEqual(rest, b"")
        transport.clear()
        return responses

    def test_staticPathAnsweredAfterHandshake(self) -> None:
        """Switched at once: nothing before the handshake, then the request as the site sees it over TLS."""
        for byteByByte in (False, True):
            transport = self.switchToTLS(upgrade(b"TLS/1.2", b"/seen?a=1") + HELLO, byteByByte)
            assert transport.tls is not None
            self.assertEqual(transport.tls.hello, HELLO)
            self.assertEqual(transport.value(), b"")
            self.assertSeenOverTLS(transport, seen(b"/seen?a=1", args=b"a=1"))

    def test_traversedPathAnsweredAfterHandshake(self) -> None:
        """Switched from render (dynamic children): a chunked POST body arrives with a Content-Length."""
        body = b"5\r\nfirst\r\n0\r\n\r\n"
        chunked = [(b"Transfer-Encoding", b"chunked")]
        data = upgrade(b"TLS/1.2", b"/dynamic/x", b"keep-alive, Upgrade", chunked, method=b"POST", body=body)
        for byteByByte in (False, True):
            transport = self.switchToTLS(data, byteByByte)
            expected = seen(b"/dynamic/x", b"keep-alive", contentLength=b"5", body=b"first")
            self.assertSeenOverTLS(transport, expected)

    def test_formOnStaticPath(self) -> None:
        """A form POST switched on at once: twisted.web still parses its body into the arguments."""
        body = b"b=2&c=3"
        form = [
            (b"Content-Type", b"application/x-www-form-urlencoded"),
            (b"Expect", b"100-continue"),
            (b"Content-Length", b"%d" % len(body)),
        ]
        data = upgrade(b"TLS/1.2", b"/seen?a=1", extra=form, method=b"POST")
        for byteByByte in (False, True):
            transport = self.connect()
            self.send(transport, data, byteByByte)
            self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
            transport.clear()
            self.send(transport, body, byteByByte)
            self.assertEqual(transport.value(), switching(b"TLS/1.2, HTTP/1.1"))
            transport.clear()
            expected = seen(b"/seen?a=1", contentLength=b"7", args=b"a=1,b=2,c=3", body=b"b=2&c=3")
            self.assertSeenOverTLS(transport, expected)

    def test_upgradeFieldsNotCarried(self) -> None:
        """Over TLS the site sees no C{upgrade} option (any case, spacing or line) and no C{Expect}."""
        cases = [
            # (Connection lines, Expect line, what the site sees of Connection)
            ([b"upgrade"], [], b"-"),
            ([b" UPGRADE "], [], b"-"),
            ([b"Upgrade", b"keep-alive"], [], b"keep-alive"),
            ([b"keep-alive", b"Upgrade"], [], b"keep-alive"),
            ([b"Upgrade, Upgrade"], [], b"-"),
            ([b"Upgrade"], [b"100-continue"], b"-"),
        ]
        for connection, expect, shown in cases:
            headers = [(b"Connection", value) for value in connection]
            headers += [(b"Upgrade", b"TLS/1.2")] + [(b"Expect", value) for value in expect]
            for byteByByte in (False, True):
                # twisted.web answers an Expect before the body it waits for, even an empty one (R10).
                continued = b"HTTP/1.1 100 Continue\r\n\r\n" if expect else b""
                transport = self.switchToTLS(request(target=b"/seen", headers=headers), byteByByte, continued)
                self.assertSeenOverTLS(transport, seen(b"/seen", connection=shown), (connection, expect))

    def test_connectionGoesOnOverTLS(self) -> None:
        """Later requests are answered over TLS, a TLS offer there declined, and the idle timeout is back."""
        for byteByByte in (False, True):
            transport = self.switchToTLS(upgrade(b"TLS/1.2", b"/seen"), byteByByte)
            self.handshake(transport)
            self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [self.clock.seconds() + 30])
            self.send(transport, request(target=b"/dynamic/y"), byteByByte)
            self.send(transport, upgrade(b"TLS/1.2", b"/seen"), byteByByte)
            first, second = self.answers(transport)
            self.assertTrue(first.body.startswith(b"secure=1 /dynamic/y "), first.body)
            self.assertEqual(second.code, 200)
            self.assertTrue(second.body.startswith(b"secure=1 /seen "), second.body)
            self.clock.advance(30)
            self.assertTrue(transport.disconnecting)

    def test_switchAgainOverTLS(self) -> None:
        """The resumed channel can switch again: C{echo} over the upgraded connection."""
        transport = self.switchToTLS(upgrade(b"TLS/1.2", b"/seen"), byteByByte=False)
        self.handshake(transport)
        self.send(transport, upgrade(b"echo", b"/seen") + b"ping", byteByByte=True)
        self.assertEqual(transport.value(), switching(b"echo") + b"ping")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closeRequested(self) -> None:
        """C{Connection: Upgrade, close}: the answer over TLS says close, and the connection is closed."""
        transport = self.switchToTLS(upgrade(b"TLS/1.2", b"/seen", connection=b"Upgrade, close"), False)
        [answer] = self.handshake(transport)
        self.assertEqual(answer.header(b"connection"), [b"close"])
        self.assertTrue(answer.body.startswith(b"secure=1 /seen connection=close "), answer.body)
        self.assertTrue(transport.disconnecting)

    def test_lostBeforeHandshake(self) -> None:
        """A connection lost before the handshake leaves no timer behind (checked at cleanup)."""
        self.switchToTLS(upgrade(b"TLS/1.2", b"/seen") + b"\x16\x03", byteByByte=True)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
