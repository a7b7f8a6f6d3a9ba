"""
The demo WebSocket echo's bounds, over real sockets on 127.0.0.1: message
and frame limits answered with Close frames, protocol errors closed with
1002, backpressure against a client that never reads, permessage-deflate,
and closed protocols freed by reference counting alone.
"""

from __future__ import annotations

import gc
import os
import socket
import struct
import weakref
import zlib
from typing import Any

import psutil
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from websockets.sync.client import connect as wsConnect

from tests.support.net import inThread, listen, wait
from tests.support.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_TEXT,
    BlockingClient,
    closePayload,
    encodeFrame,
    handshake,
)
from txupgrade.channel import UpgradeSite
from txupgrade.daemon import demo
from txupgrade.protocols.websocket import WebSocketEndpoint
from txupgrade.protocols.websocket._autobahncompat import inflationBounded
from txupgrade.resource import DirectoryResource

CLIENT_TIMEOUT = 5.0

#: Whether the demo accepts permessage-deflate with this autobahn.
COMPRESSES = inflationBounded()


def _trackedDemoFactory() -> tuple[Any, list[weakref.ref[Any]]]:
    """The demo echo factory, its protocols also remembered by weak reference."""
    factory = demo.webSocketEchoFactory()
    refs: list[weakref.ref[Any]] = []

    class Tracked(factory.protocol):  # type: ignore[name-defined,misc]
        def onOpen(self) -> None:
            refs.append(weakref.ref(self))
            super().onOpen()

    factory.protocol = Tracked
    return factory, refs


def serveDemo(testCase: TestCase, factory: Any = None) -> tuple[int, list[weakref.ref[Any]]]:
    """
    Serve the demo echo (tracked) at C{/ws}; return the port and the weak
    references to its protocols. The site keeps no connection (L{listen}
    tracks them through weak references).
    """
    refs: list[weakref.ref[Any]] = []
    if factory is None:
        factory, refs = _trackedDemoFactory()
    root = DirectoryResource()
    root.putChild(b"ws", WebSocketEndpoint(factory))
    site = UpgradeSite(root)
    site.noisy = False
    return listen(testCase, site), refs


class DemoEchoTests(TestCase):
    """The demo's C{/ws} factory behind a real L{UpgradeSite}."""

    timeout = 60

    def serve(self, factory: Any = None) -> tuple[int, list[weakref.ref[Any]]]:
        return serveDemo(self, factory)

    @inlineCallbacks
    def _closeFrame(self, payload: bytes, expected: int) -> Any:
        """
        Send C{payload} in the handshake's segment; expect the C{101}, then
        a Close with C{expected}, then the server closing TCP (no reset).
        """
        factory, refs = _trackedDemoFactory()
        # autobahn's default 1 s for the client's Close is short on a loaded machine.
        factory.setProtocolOptions(closeHandshakeTimeout=10)
        port, _ = self.serve(factory)

        def run() -> tuple[int, list[tuple[bool, int, bytes, bool]], bytes]:
            client = BlockingClient(port, timeout=CLIENT_TIMEOUT)
            try:
                client.send(handshake(port) + payload)
                status, _ = client.readHead()
                first = client.readFrame()
                if first[1] == OP_CLOSE:
                    client.send(encodeFrame(OP_CLOSE, first[2]))
                rest, _ = client.readUntilClosed(CLIENT_TIMEOUT)
                return status, [first], rest
            finally:
                client.close()

        status, frames, rest = yield inThread(run)
        self.assertEqual(status, 101)
        self.assertEqual([(f[1], closePayload(f[2])[0]) for f in frames], [(OP_CLOSE, expected)])
        self.assertEqual(rest, b"")
        yield wait(lambda: all(ref() is None for ref in refs))

    def test_oversizeFrame(self) -> Any:
        """A frame over the demo's frame limit gets the 101, then Close 1009, not an echo."""
        frame = encodeFrame(OP_BINARY, b"\0" * (demo.MAX_FRAME_PAYLOAD + 1))
        return self._closeFrame(frame, 1009)

    def test_oversizeMessage(self) -> Any:
        """Fragments adding up past the demo's message limit get Close 1009."""
        fragment = b"\0" * demo.MAX_FRAME_PAYLOAD
        count = demo.MAX_MESSAGE_PAYLOAD // len(fragment)
        frames = [encodeFrame(OP_BINARY if i == 0 else 0, fragment, fin=False) for i in range(count)]
        return self._closeFrame(b"".join(frames) + encodeFrame(0, b"\0" * 1024, fin=False), 1009)

    def test_protocolError(self) -> Any:
        """An unmasked client frame (a protocol error) gets the 101, then Close 1002, not a reset."""
        return self._closeFrame(b"\x81\x02hi", 1002)

    def test_reservedOpcode(self) -> Any:
        """A frame with a reserved opcode gets Close 1002."""
        return self._closeFrame(encodeFrame(0x3, b"x"), 1002)

    @inlineCallbacks
    def test_permessageDeflate(self) -> Any:
        """
        The C{websockets} client negotiates permessage-deflate; the wire
        carries compressed bytes. (With an autobahn that does not bound
        inflation, the demo declines it, and messages still round-trip.)
        """
        factory, refs = _trackedDemoFactory()
        port, _ = self.serve(factory)
        messages: list[str | bytes] = ["squeeze me " * 2000, b"\x00" * 100_000, os.urandom(3000)]

        def run() -> tuple[list[str], list[str | bytes]]:
            with wsConnect(
                f"ws://127.0.0.1:{port}/ws",
                compression="deflate",
                open_timeout=CLIENT_TIMEOUT,
                close_timeout=CLIENT_TIMEOUT,
            ) as conn:
                received = []
                for message in messages:
                    conn.send(message)
                    received.append(conn.recv(timeout=CLIENT_TIMEOUT))
                return [ext.name for ext in conn.protocol.extensions], received

        extensions, received = yield inThread(run)
        self.assertEqual(received, messages)
        if not COMPRESSES:
            self.assertEqual(extensions, [])
            return
        self.assertEqual(extensions, ["permessage-deflate"])
        proto = refs[0]()
        if proto is not None:  # still closing
            stats = proto.trafficStats
            self.assertLess(stats.incomingOctetsWireLevel, stats.incomingOctetsAppLevel / 10)
            self.assertLess(stats.outgoingOctetsWireLevel, stats.outgoingOctetsAppLevel / 10)
            del proto, stats
        yield wait(lambda: all(ref() is None for ref in refs))

    @inlineCallbacks
    def test_permessageDeflateWireBytes(self) -> Any:
        """Measured at the client: a 200 kB repetitive message travels in a few kB each way."""
        port, _ = self.serve()
        payload = b"abcdefgh" * 25_000
        offer = b"permessage-deflate; client_max_window_bits"

        def run() -> tuple[dict[bytes, list[bytes]], tuple[bool, int, bytes, bool], int]:
            client = BlockingClient(port, timeout=CLIENT_TIMEOUT)
            try:
                client.send(handshake(port, extra=[(b"Sec-WebSocket-Extensions", offer)]))
                _, headers = client.readHead()
                # Sent uncompressed (RSV1 clear, which RFC 7692 allows); the
                # echo comes back compressed.
                client.send(encodeFrame(OP_BINARY, payload))
                frame = client.readFrame()
                return headers, frame, len(frame[2])
            finally:
                client.close()

        headers, frame, wireLength = yield inThread(run)
        if not COMPRESSES:
            self.assertNotIn(b"sec-websocket-extensions", headers)
            self.assertEqual(frame[2], payload)
            return
        self.assertTrue(headers[b"sec-websocket-extensions"][0].startswith(b"permessage-deflate"))
        self.assertLess(wireLength, 5000)
        self.assertEqual(zlib.decompressobj(-15).decompress(frame[2] + b"\x00\x00\xff\xff"), payload)

    @inlineCallbacks
    def test_compressionBomb(self) -> Any:
        """
        A 64 MiB message of zeros compressed into one small frame is closed
        with 1009 at the 4 MiB message limit, without inflating it: the
        process grows by far less than 64 MiB. (Where the demo declines
        compression, the offer gets no C{Sec-WebSocket-Extensions}.)
        """
        port, refs = self.serve()
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        bomb = compressor.compress(b"\0" * (64 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
        bomb = bomb[:-4]  # RFC 7692 §7.2.1: without the trailing 00 00 ff ff
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(bomb))
        # FIN, RSV1 (compressed), binary; masked, the shortest length form.
        length = (
            struct.pack("!BH", 0xFE, len(bomb))
            if len(bomb) < 1 << 16
            else struct.pack("!BQ", 0xFF, len(bomb))
        )
        frame = b"\xc2" + length + mask + masked
        process = psutil.Process()
        offer = b"permessage-deflate"

        def run() -> tuple[dict[bytes, list[bytes]], int | None, int]:
            client = BlockingClient(port, timeout=CLIENT_TIMEOUT)
            try:
                client.send(handshake(port, extra=[(b"Sec-WebSocket-Extensions", offer)]))
                _, headers = client.readHead()
                if b"sec-websocket-extensions" not in headers:
                    return headers, None, 0
                before = process.memory_info().rss
                client.send(frame)
                closing = client.readFrame()
                grown = process.memory_info().rss - before
                client.send(encodeFrame(OP_CLOSE, closing[2]))
                client.readUntilClosed(CLIENT_TIMEOUT)
                return headers, closePayload(closing[2])[0] if closing[1] == OP_CLOSE else -1, grown
            finally:
                client.close()

        self.assertLess(len(frame), demo.MAX_FRAME_PAYLOAD)
        headers, code, grown = yield inThread(run)
        if not COMPRESSES:
            self.assertNotIn(b"sec-websocket-extensions", headers)
            return
        self.assertEqual(code, 1009)
        self.assertLess(grown, 32 << 20, f"RSS grew by {grown} bytes")
        yield wait(lambda: all(ref() is None for ref in refs))

    @inlineCallbacks
    def test_closedProtocolsFreedByReferenceCounting(self) -> Any:
        """
        With the cycle collector off, closed protocols are freed: after a
        clean close, an abrupt one, and a non-reading client's.
        """
        if gc.isenabled():
            gc.disable()
            self.addCleanup(gc.enable)
        port, refs = self.serve()

        def run() -> None:
            clean = BlockingClient(port, timeout=CLIENT_TIMEOUT)
            clean.send(handshake(port) + encodeFrame(OP_TEXT, b"hi"))
            clean.readHead()
            clean.readFrame()
            clean.send(encodeFrame(OP_CLOSE, struct.pack("!H", 1000)))
            clean.readFrame()
            clean.readUntilClosed(CLIENT_TIMEOUT)
            clean.close()
            abrupt = BlockingClient(port, timeout=CLIENT_TIMEOUT)
            abrupt.send(handshake(port) + encodeFrame(OP_TEXT, b"x" * 1000))
            abrupt.readHead()
            abrupt.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            abrupt.close()
            silent = BlockingClient(port, timeout=CLIENT_TIMEOUT)
            silent.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            silent.send(handshake(port))
            silent.readHead()
            frame = encodeFrame(OP_BINARY, b"y" * 65536)
            try:
                silent.sock.settimeout(1.0)
                for _ in range(200):
                    silent.sock.sendall(frame)
            except TimeoutError:
                pass
            silent.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            silent.close()

        yield inThread(run)
        yield wait(lambda: len(refs) == 3)
        try:
            yield wait(lambda: all(ref() is None for ref in refs))
        except AssertionError:
            alive = [ref() for ref in refs if ref() is not None]
            holders = [type(r).__name__ for p in alive for r in gc.get_referrers(p)]
            self.fail(f"{len(alive)} closed protocols still alive, held by {holders}")


class BackpressureTests(TestCase):
    """A client that sends and never reads does not grow the server's memory."""

    timeout = 120

    @inlineCallbacks
    def test_nonReadingClient(self) -> Any:
        """
        The server stops reading while its write buffer is full: the client
        cannot send 64 MiB, the process grows by far less than it sent, and
        once the client reads, every byte comes back.
        """
        pauses: list[int] = []
        original = demo.PauseReadingWhileFull.pauseProducing

        def pause(self: Any) -> None:
            pauses.append(1)
            original(self)

        self.patch(demo.PauseReadingWhileFull, "pauseProducing", pause)
        port, refs = serveDemo(self)
        payload = os.urandom(16384)
        frame = encodeFrame(OP_BINARY, payload)
        limit = 64 << 20
        process = psutil.Process()

        def run() -> tuple[int, int, int, int]:
            client = BlockingClient(port, timeout=CLIENT_TIMEOUT)
            try:
                client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                client.send(handshake(port))
                client.readHead()
                before = process.memory_info().rss
                sent = 0
                client.sock.settimeout(2.0)
                try:
                    while sent < limit:
                        client.sock.sendall(frame)
                        sent += len(payload)
                except TimeoutError:
                    pass
                grown = process.memory_info().rss - before
                # Now read: every echo arrives, then the close.
                client.sock.settimeout(CLIENT_TIMEOUT)
                expected = (sent // len(payload)) * (4 + len(payload))
                received = len(client.buffer)
                client.buffer = b""
                while received < expected:
                    chunk = client.sock.recv(1 << 20)
                    if not chunk:
                        break
                    received += len(chunk)
                client.send(encodeFrame(OP_CLOSE, struct.pack("!H", 1000)))
                client.readUntilClosed(CLIENT_TIMEOUT)
                return sent, grown, received, expected
            finally:
                client.close()

        sent, grown, received, expected = yield inThread(run)
        self.assertLess(sent, limit, "the client could send everything: nothing pushed back")
        self.assertTrue(pauses, "the server never paused reading")
        self.assertLess(grown, 16 << 20, f"RSS grew by {grown} bytes after {sent} sent")
        self.assertEqual(received, expected)
        yield wait(lambda: all(ref() is None for ref in refs))

    def test_pausesAndResumesTheTransport(self) -> None:
        """L{demo.PauseReadingWhileFull} pauses and resumes its transport's reading."""
        calls: list[str] = []

        class Transport:
            def pauseProducing(self) -> None:
                calls.append("pause")

            def resumeProducing(self) -> None:
                calls.append("resume")

        producer = demo.PauseReadingWhileFull(Transport())
        producer.pauseProducing()
        producer.resumeProducing()
        producer.stopProducing()
        self.assertEqual(calls, ["pause", "resume"])
