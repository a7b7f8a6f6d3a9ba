"""
Graceful shutdown of C{twistd txupgrade}, as a real process: on C{SIGTERM}
it stops accepting, lets in-flight responses finish, closes WebSocket
connections with 1001, sends HTTP/2 connections GOAWAY, half-closes C{echo}
streams, and aborts what is left at the drain deadline.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from typing import Any

from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.daemon_sample import SLOW_FIRST, SLOW_REST
from tests.support.daemon import LOCAL, startDaemon
from tests.support.http import parseHead, request, upgrade
from tests.support.net import RawClient, connectClient, reactor, wait, withTimeout
from tests.support.processes import CollectingProcess, binaryOrSkip
from tests.support.websocket import decodeAll, encodeFrame, handshake

#: How many WebSocket clients are connected when the daemon is told to stop.
CLIENTS = 100


def _closeCode(data: bytes) -> int | None:
    """The code of the first Close frame after the C{101} head in C{data}, if one is in."""
    parsed = parseHead(data)
    if parsed is None:
        return None
    for (_fin, opcode, payload, _masked), _raw in decodeAll(parsed[1]):
        if opcode == 8:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
    return None


class DrainTests(TestCase):
    """SIGTERM drains the daemon."""

    timeout = 180

    @inlineCallbacks
    def terminated(self, daemon: Any, within: float) -> Any:
        """SIGTERM C{daemon}; it must end within C{within} seconds; return how long it took."""
        started = time.monotonic()
        daemon.signal("TERM")
        yield withTimeout(daemon.ended, within)
        self.assertIn(daemon.exitCode, (0, -15), daemon.output)
        self.assertIn(b"Main loop terminated.", daemon.output)
        return time.monotonic() - started

    @inlineCallbacks
    def test_webSocketClientsGetGoingAway(self) -> Any:
        """100 WebSocket clients each get close 1001; the daemon exits well before its deadline."""
        daemon = yield startDaemon(self, ["--listen", LOCAL, "--drain-timeout", "20"])
        [port] = daemon.ports
        clients: list[RawClient] = []
        for _ in range(CLIENTS):
            client = yield connectClient(self, port)
            client.send(handshake(port, b"/ws"))
            clients.append(client)
        yield DeferredList(
            [c.waitFor(lambda d: b"\r\n\r\n" in d) for c in clients],
            fireOnOneErrback=True,
            consumeErrors=True,
        )
        for client in clients:
            self.assertTrue(client.data.startswith(b"HTTP/1.1 101 "), client.data)

        def answer(client: RawClient) -> None:
            # A well-behaved client echoes the Close, then the server closes TCP.
            client.send(encodeFrame(8, struct.pack("!H", 1001)))

        waiting = []
        for client in clients:
            d = client.waitFor(lambda d: _closeCode(d) is not None, 30)
            d.addCallback(lambda _, c=client: answer(c))
            waiting.append(d)
        took = yield self.terminated(daemon, 15)
        yield DeferredList(waiting, fireOnOneErrback=True, consumeErrors=True)
        self.assertEqual([_closeCode(c.data) for c in clients], [1001] * CLIENTS)
        yield DeferredList([withTimeout(c.lost) for c in clients])
        self.assertLess(took, 15)
        self.assertRegex(daemon.output, rb"draining \d+ open connection")
        self.assertIn(b"Drained %d connection(s) gracefully" % CLIENTS, daemon.output)
        self.assertNotIn(b"aborting", daemon.output)

    @inlineCallbacks
    def test_slowResponseCompletes(self) -> Any:
        """A response in flight at SIGTERM is finished, then its connection closed; new ones are refused."""
        daemon = yield startDaemon(self, ["--listen", LOCAL, "--resource", "tests.daemon_sample.slowDemo"])
        [port] = daemon.ports
        idle = yield connectClient(self, port)
        idle.send(request(target=b"/echo"))
        yield idle.waitFor(lambda d: d.endswith(b"Upgrade: echo\n"))
        client = yield connectClient(self, port)
        client.send(request(target=b"/slow"))
        yield client.waitFor(lambda d: d.endswith(SLOW_FIRST))
        daemon.signal("TERM")
        yield withTimeout(idle.lost)
        yield wait(lambda: _refused(port))
        yield withTimeout(client.lost)
        self.assertTrue(client.data.endswith(SLOW_FIRST + SLOW_REST), client.data)
        yield withTimeout(daemon.ended)
        self.assertIn(daemon.exitCode, (0, -15), daemon.output)

    @inlineCallbacks
    def test_http2GoAwayThenFinish(self) -> Any:
        """nghttp mid-response at SIGTERM: GOAWAY (any stream), PING, GOAWAY (its stream), the rest."""
        nghttp = binaryOrSkip("/usr/bin/nghttp", "nghttp2-client")
        daemon = yield startDaemon(self, ["--listen", LOCAL, "--resource", "tests.daemon_sample.slowDemo"])
        [port] = daemon.ports
        client = CollectingProcess()
        reactor.spawnProcess(
            client, "/usr/bin/timeout", ["timeout", "30", nghttp, "-v", f"http://127.0.0.1:{port}/slow"]
        )
        yield wait(lambda: SLOW_FIRST in client.out)
        daemon.signal("TERM")
        out, err, code = yield withTimeout(client.ended)
        self.assertEqual(code, 0, err)
        goAways = re.findall(rb"recv GOAWAY frame.*\n\s*\(last_stream_id=(\d+), error_code=(\w+)", out)
        # nghttp's first request is stream 13 (11 to 3 carry its priority tree).
        self.assertEqual(goAways, [(b"2147483647", b"NO_ERROR"), (b"13", b"NO_ERROR")], out)
        self.assertIn(b"send PING frame <length=8, flags=0x01", out)
        self.assertLess(out.index(b"recv GOAWAY"), out.index(SLOW_REST), out)
        self.assertRegex(out, rb"recv DATA frame <length=\d+, flags=0x01, stream_id=13>")
        yield withTimeout(daemon.ended)
        self.assertIn(b"Drained 1 connection(s) gracefully", daemon.output)

    @inlineCallbacks
    def test_deadlineAborts(self) -> Any:
        """An echo peer that ignores the half-close is aborted at the deadline, and counted."""
        daemon = yield startDaemon(self, ["--listen", LOCAL, "--drain-timeout", "1.5"])
        [port] = daemon.ports
        stubborn = StubbornClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), stubborn)
        self.addCleanup(lambda: stubborn.transport.abortConnection() if stubborn.lostReason is None else None)
        stubborn.send(upgrade(b"echo") + b"ping")
        yield stubborn.waitFor(lambda d: d.endswith(b"ping"))
        # A plain client closes when it reads the server's half-close (end of stream).
        polite = yield connectClient(self, port)
        polite.send(upgrade(b"echo"))
        yield polite.waitFor(lambda d: d.endswith(b"\r\n\r\n"))
        took = yield self.terminated(daemon, 10)
        self.assertGreaterEqual(took, 1.4)
        yield withTimeout(polite.lost)
        self.assertTrue(stubborn.halfClosed)
        # It was reset: its next write fails.
        stubborn.send(b"anyone there?")
        yield withTimeout(stubborn.lost)
        self.assertRegex(
            daemon.output, rb"Drain deadline \(1\.5 s\) passed: aborting 1 connection\(s\) \(1 echo\)"
        )
        match = re.search(
            rb"echo connection from 127\.0\.0\.1:\d+ closed after [\d.]+ s, (\d+) bytes in", daemon.output
        )
        self.assertIsNotNone(match, daemon.output)


@implementer(IHalfCloseableProtocol)
class StubbornClient(RawClient):
    """Keeps its side open after the server half-closes."""

    halfClosed = False

    def readConnectionLost(self) -> None:
        self.halfClosed = True

    def writeConnectionLost(self) -> None:
        pass


def _refused(port: int) -> bool:
    """Whether a new connection to C{port} is refused (the daemon stopped listening)."""
    with socket.socket() as sock:
        sock.settimeout(2)
        try:
            sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        return False
