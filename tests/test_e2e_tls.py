"""
The C{echo} upgrade, and a protocol that hangs up, over a real TLS listener.

The certificate is made at test time (trustme); both ends are Twisted's own
TLS (C{reactor.listenSSL} and a C{wrapClientTLS} client endpoint).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase

from tests.support.http import Hello, SimpleUpgrade, normalize, plainResponse, request, switching, upgrade
from tests.support.net import TLSPair, TrackingSite, connectClient, listen
from txupgrade.negotiation import UpgradeRequest
from txupgrade.protocols.echo import EchoUpgrade

#: How long a hang-up may take to reach the client, in seconds.
CLOSE_BOUND = 5


class HangUp(Protocol):
    """
    Reply, then C{loseConnection()}: at once, or on the first C{quit}.
    """

    def __init__(self, request: UpgradeRequest, atOnce: bool) -> None:
        self.request = request
        self.atOnce = atOnce

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"secure=%d;" % self.request.secure)
        if self.atOnce:
            self.transport.write(b"bye")
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        if data.endswith(b"quit"):
            self.transport.write(data + b"-bye")
            self.transport.loseConnection()
        else:
            self.transport.write(data)


def hangUpProtocols() -> list[Any]:
    return [
        SimpleUpgrade("bye", lambda r: HangUp(r, atOnce=True)),
        SimpleUpgrade("later", lambda r: HangUp(r, atOnce=False)),
        EchoUpgrade(),
    ]


class TLSUpgradeTests(TestCase):
    """The upgrade over TLS (C{listenSSL}, Twisted client endpoint)."""

    def setUp(self) -> None:
        try:
            import trustme  # noqa: F401
        except ImportError as error:
            raise self.skipTest(f"needs the test extra (trustme): {error}") from None
        self.tls = TLSPair()

    def serve(self, alpn: list[bytes] | None = None) -> None:
        self.site = TrackingSite(Hello(), hangUpProtocols())
        self.port = listen(self, self.site, self.tls.serverOptions(alpn))

    def connect(self, alpn: list[bytes] | None = None) -> Any:
        return connectClient(self, self.port, self.tls.clientEndpoint(self.port, alpn))

    @inlineCallbacks
    def test_echoAfterSwitch(self) -> Any:
        """A plain request, then the C{101}; bytes in the same record and later are echoed."""
        self.serve()
        client = yield self.connect()
        first = plainResponse(b"hello /", b"Upgrade: bye, later, echo\r\nConnection: Upgrade\r\n")
        client.send(upgrade(b"nope"))
        yield client.waitFor(lambda d: len(normalize(d)) >= len(first))
        self.assertEqual(normalize(client.data), first)
        mark = len(client.data)
        client.send(upgrade(b"echo") + b"same record")
        expected = switching() + b"same record"
        yield client.waitForBytes(mark + len(expected))
        self.assertEqual(client.data[mark:], expected)
        for payload in (b"x", b"\x00" * 70000, b"last"):
            mark = len(client.data)
            client.send(payload)
            yield client.waitForBytes(mark + len(payload))
            self.assertEqual(client.data[mark:], payload)
        self.assertIsNone(client.lostReason)

    @inlineCallbacks
    def test_echoWithALPNHTTP11(self) -> Any:
        """With ALPN C{http/1.1} negotiated (the server also offers C{h2}), the switch works."""
        self.serve([b"h2", b"http/1.1"])
        client = yield self.connect([b"http/1.1"])
        client.send(upgrade(b"echo") + b"ping")
        expected = switching() + b"ping"
        yield client.waitForBytes(len(expected))
        self.assertEqual(client.transport.negotiatedProtocol, b"http/1.1")
        self.assertEqual(client.data, expected)

    @inlineCallbacks
    def test_hangUpAtOnce(self) -> Any:
        """A protocol that replies and hangs up in C{connectionMade}: the client sees the close."""
        self.serve()
        client = yield self.connect()
        client.send(upgrade(b"bye"))
        data = yield client.waitForClose(CLOSE_BOUND)
        self.assertEqual(data, switching(b"bye") + b"secure=1;bye")
        self.assertIsInstance(client.lostReason.value, ConnectionDone)

    @inlineCallbacks
    def test_hangUpLater(self) -> Any:
        """A protocol that hangs up after some traffic: the client sees the close."""
        self.serve()
        client = yield self.connect()
        client.send(upgrade(b"later") + b"one,")
        expected = switching(b"later") + b"secure=1;one,"
        yield client.waitForBytes(len(expected))
        self.assertEqual(client.data, expected)
        client.send(b"quit")
        data = yield client.waitForClose(CLOSE_BOUND)
        self.assertEqual(data, expected + b"quit-bye")
        self.assertIsInstance(client.lostReason.value, ConnectionDone)

    @inlineCallbacks
    def test_plainHTTPStillClosesNormally(self) -> Any:
        """Control: a C{Connection: close} request over TLS is answered and closed."""
        self.serve()
        client = yield self.connect()
        client.send(request(headers=[(b"Connection", b"close")]))
        data = yield client.waitForClose(CLOSE_BOUND)
        self.assertEqual(normalize(data), plainResponse(b"hello /", b"Connection: close\r\n"))


class TCPHangUpTests(TestCase):
    """Control for L{TLSUpgradeTests}: the same hang-ups over plain TCP."""

    @inlineCallbacks
    def test_hangUpAtOnce(self) -> Any:
        """The client sees the close, and the request is not marked secure."""
        site = TrackingSite(Hello(), hangUpProtocols())
        port = listen(self, site)
        client = yield connectClient(self, port)
        client.send(upgrade(b"bye"))
        data = yield client.waitForClose(CLOSE_BOUND)
        self.assertEqual(data, switching(b"bye") + b"secure=0;bye")
