"""
Regression tests for what fuzzing found (C{tests/test_fuzz_channel.py}).

Each test names the input that broke the channel, in memory (one read per
write, and one byte at a time) and, where a transport made it reachable,
over real sockets.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.channel_oracle import PEER, checkStream, decodeInput, runStream
from tests.support.http import parseHead
from tests.support.net import TLSPair, TrackingSite, inThread, listen, wait
from txupgrade.channel import UpgradeSite
from txupgrade.protocols.echo import EchoUpgrade
from txupgrade.resource import DirectoryResource

FUZZ = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz")

#: Inputs after which Twisted's parser, fed more bytes once it answered 400,
#: raised (C{_version} missing; no transfer decoder). Each is (first, later).
AFTER_400 = [
    (b"\x00\r\n", b"\r\n"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\nchunked\r\n", b"\r\n0\r\n\r\n\x00"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\nX: y\r\n", b"\r\nabc"),
]


class AfterBadRequestTests(SynchronousTestCase):
    """
    Bytes that arrive after the channel answered C{400} and chose to close
    are ignored (over TLS, reading goes on after C{loseConnection}).
    """

    def test_laterBytesIgnored(self) -> None:
        """Each input, then more bytes in a later read: a 400, no exception, nothing more."""
        for first, later in AFTER_400:
            site = UpgradeSite(DirectoryResource(), [EchoUpgrade()], reactor=Clock())
            protocol = site.buildProtocol(PEER)
            transport = StringTransport()
            protocol.makeConnection(transport)
            protocol.dataReceived(first)
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), (first, transport.value()))
            self.assertTrue(transport.disconnecting)
            answered = transport.value()
            protocol.dataReceived(later)
            for byte in later:
                protocol.dataReceived(bytes([byte]))
            self.assertEqual(transport.value(), answered)
            protocol.connectionLost(Failure(ConnectionDone()))

    def test_byteByByte(self) -> None:
        """Each input one byte per read, through the fuzzing invariants: they hold."""
        for first, later in AFTER_400:
            stream = first + later
            seen = runStream([stream], chunkSize=1)
            checkStream(stream, seen)
            self.assertTrue(seen.received.startswith(b"HTTP/1.1 400 "))


class FoundByFuzzingTests(SynchronousTestCase):
    """
    Inputs on which the channel broke the RFC 9112 rules the fuzzing checks.
    """

    def test_headRejectedWithoutContent(self) -> None:
        """A HEAD the channel rejects (obs-fold, no Host, 431) gets a head and no content."""
        for stream in [
            b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade:\r\n echo\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"x" * 20000 + b"\r\n\r\n",
        ]:
            for chunkSize in (None, 1):
                seen = runStream([stream], chunkSize=chunkSize)
                checkStream(stream, seen)
                parsed = parseHead(seen.received)
                assert parsed is not None, seen.received
                self.assertEqual((parsed[0].version, parsed[0].code // 100, parsed[1]), (b"1.1", 4, b""))
                self.assertTrue(seen.closedBeforeTimeout)

    def test_twoHostsHTTP10(self) -> None:
        """An HTTP/1.0 request with two Host lines is answered 400 and closed (RFC 9112 §3.2)."""
        stream = b"GET /show HTTP/1.0\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n"
        seen = runStream([stream])
        checkStream(stream, seen)
        self.assertTrue(seen.received.startswith(b"HTTP/1.1 400 Bad Request\r\n"), seen.received)
        self.assertTrue(seen.closedBeforeTimeout)


class ReplayTests(SynchronousTestCase):
    """
    Every seed and every input the long mode stopped on (C{fuzz/seeds},
    C{fuzz/regressions}) passes the invariants.
    """

    def test_replay(self) -> None:
        """Each stored input, decoded as C{fuzz/fuzz_channel.py} does: every invariant holds."""
        replayed = 0
        for folder in ("seeds", "regressions"):
            path = os.path.join(FUZZ, folder)
            for name in sorted(os.listdir(path)):
                with open(os.path.join(path, name), "rb") as f:
                    stream, pieces, options = decodeInput(f.read())
                checkStream(stream, runStream(pieces, **options))
                replayed += 1
        self.assertGreaterEqual(replayed, 17)


def _sendTwice(ca: Any, port: int, first: bytes, later: bytes) -> bytes:
    """A TLS client: C{first}, then, once the 400 is in, C{later}; what it received."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        conn.sendall(first)
        received = conn.recv(4096)
        try:
            conn.sendall(later)
            while chunk := conn.recv(4096):
                received += chunk
        except (OSError, ssl.SSLError):
            pass
    return received


class AfterBadRequestTLSTests(TestCase):
    """
    Over real TLS on 127.0.0.1, bytes after a C{400} leave no traceback.
    """

    @inlineCallbacks
    def test_tlsLaterRecords(self) -> Any:
        """Each input, then more bytes in a later TLS record: a 400 and no logged error."""
        pair = TLSPair()
        site = TrackingSite(DirectoryResource(), [EchoUpgrade()])
        port = listen(self, site, pair.serverOptions())
        for first, later in AFTER_400:
            received = yield inThread(_sendTwice, pair.ca, port, first, later)
            self.assertTrue(received.startswith(b"HTTP/1.1 400 "), (first, received))
            # The server read the later record and the close.
            yield wait(lambda: site.connections[-1].closed)
        # trial fails the test on any error logged meanwhile (the traceback was one).
