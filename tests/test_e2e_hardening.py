"""
Hardening over real sockets on 127.0.0.1: the framing a smuggler relies on is
refused before any switch (R16), oversized heads are answered (414, 431), a
foreign C{Host} is refused (DNS rebinding), and an upgraded C{echo} peer that
stops reading stops being read (R17).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.support.http import Hello, normalize, request, upgrade
from tests.support.net import TrackingSite, connectClient, listen
from txupgrade.interfaces import IUpgradeProtocol
from txupgrade.negotiation import UpgradeRequest
from txupgrade.protocols.echo import EchoProtocol, EchoUpgrade


def rejected(status: bytes, body: bytes) -> bytes:
    """The exact answer txupgrade gives a request it refuses outright, then closes."""
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    ) + body


class FramingTests(TestCase):
    """
    R16 and the head limits, with the reproducers of the hardening report.
    """

    def setUp(self) -> None:
        self.site = TrackingSite(Hello(), [EchoUpgrade()])
        self.port = listen(self, self.site)

    @inlineCallbacks
    def assertRefusedAndClosed(self, data: bytes, expected: bytes) -> Any:
        """C{data} gets exactly C{expected}, then the server closes; another client is served."""
        client = yield connectClient(self, self.port)
        client.send(data)
        received = yield client.waitForClose()
        self.assertEqual(normalize(received), expected)
        other = yield connectClient(self, self.port)
        other.send(request())
        answer = yield other.waitFor(lambda data: data.endswith(b"hello /"))
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_transferEncodingIdentity(self) -> Any:
        """C{Transfer-Encoding: identity} with a length and an upgrade offer: 400, closed, no 101."""
        data = (
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n"
            b"Connection: upgrade\r\nUpgrade: echo\r\n\r\nhelloTAIL"
        )
        return self.assertRefusedAndClosed(
            data, rejected(b"400 Bad Request", b"Transfer-Encoding must be exactly chunked.\n")
        )

    def test_noHost(self) -> Any:
        """An upgrade request without C{Host}: 400, closed."""
        data = b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"
        return self.assertRefusedAndClosed(data, rejected(b"400 Bad Request", b"No Host header.\n"))

    def test_twoHosts(self) -> Any:
        """An upgrade request with two C{Host} lines: 400, closed."""
        data = upgrade(b"echo", extra=[(b"Host", b"127.0.0.1")])
        body = b"An HTTP/1.1 request needs exactly one Host.\n"
        return self.assertRefusedAndClosed(data, rejected(b"400 Bad Request", body))

    def test_obsFoldInConnection(self) -> Any:
        """C{Connection:} folded onto the next line: 400, closed."""
        data = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection:\r\n upgrade\r\nUpgrade: echo\r\n\r\n"
        body = b"Obsolete line folding in a header.\n"
        return self.assertRefusedAndClosed(data, rejected(b"400 Bad Request", body))

    def test_requestLineTooLong(self) -> Any:
        """A request line over 16 KiB: 414."""
        data = b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        return self.assertRefusedAndClosed(
            data, rejected(b"414 URI Too Long", b"The request line is too long.\n")
        )

    def test_headerTooLong(self) -> Any:
        """A header over 16 KiB: 431."""
        data = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n"
        body = b"The request's header fields are too large.\n"
        return self.assertRefusedAndClosed(data, rejected(b"431 Request Header Fields Too Large", body))

    def test_foreignHost(self) -> Any:
        """A rebinding page's C{Host} on a loopback listener: 400, closed, before any switch."""
        data = upgrade(b"echo").replace(b"Host: 127.0.0.1", b"Host: rebind.attacker.example")
        body = b"This server does not serve the host 'rebind.attacker.example'.\n"
        return self.assertRefusedAndClosed(data, rejected(b"400 Bad Request", body))


class CountingEcho(EchoProtocol):
    """The real L{EchoProtocol}, counting what it reads, on a small kernel send buffer."""

    received = 0

    def connectionMade(self) -> None:
        assert self.transport is not None
        handle = self.transport.getHandle()  # type: ignore[attr-defined]
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        CountingEcho.received += len(data)
        super().dataReceived(data)


@implementer(IUpgradeProtocol)
class CountingEchoUpgrade(EchoUpgrade):
    """C{echo}, built as L{CountingEcho}."""

    def buildProtocol(self, request: UpgradeRequest, site: object) -> CountingEcho:
        return CountingEcho()


class BackpressureTests(TestCase):
    """
    R17: an upgraded peer that stops reading is no longer read from.
    """

    @inlineCallbacks
    def test_echoPeerNeverReads(self) -> Any:
        """The server holds what the kernel buffers hold plus a few hundred KiB, then all of it comes back."""
        CountingEcho.received = 0
        port = listen(self, TrackingSite(Hello(), [CountingEchoUpgrade()]))
        client = socket.create_connection(("127.0.0.1", port))
        self.addCleanup(client.close)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.sendall(upgrade(b"echo"))
        client.setblocking(False)
        head = b""
        while b"\r\n\r\n" not in head:
            try:
                head += client.recv(4096)
            except BlockingIOError:
                yield deferLater(reactor, 0.005, lambda: None)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "))
        received = bytearray(head.split(b"\r\n\r\n", 1)[1])
        pattern = bytes(range(256)) * 256  # 64 KiB
        sent = 0
        stalledSince = None
        deadline = reactor.seconds() + 20
        limit = 256 * 1024 * 1024
        while sent < limit and reactor.seconds() < deadline:
            try:
                sent += client.send(pattern[sent % len(pattern) :] + pattern[: sent % len(pattern)])
                stalledSince = None
            except BlockingIOError:
                stalledSince = stalledSince or reactor.seconds()
                if reactor.seconds() - stalledSince > 1.0:
                    break
                yield deferLater(reactor, 0.005, lambda: None)
        self.assertLess(sent, limit, "the server kept reading from a peer that never reads")
        # Read by the server but not yet taken by the kernel: Twisted's buffer.
        heldByServer = CountingEcho.received - 64 * 1024 * 2 - 4 * 1024 * 1024
        self.assertLess(CountingEcho.received, 8 * 1024 * 1024, (sent, CountingEcho.received))
        self.assertLess(heldByServer, 512 * 1024)
        # The peer reads again: every byte comes back, in order.
        while len(received) < sent and reactor.seconds() < deadline + 20:
            try:
                chunk = client.recv(1 << 20)
            except BlockingIOError:
                yield deferLater(reactor, 0.002, lambda: None)
                continue
            if not chunk:
                break
            received += chunk
        self.assertEqual(len(received), sent)
        expected = (pattern * (sent // len(pattern) + 1))[:sent]
        self.assertTrue(received == expected, "echoed bytes differ from those sent")
