"""
The demo WebSocket echo's size limits (C{--websocket-max-message},
C{--websocket-max-frame}) through real C{twistd txupgrade} processes and
real clients.

The Autobahn|Testsuite (Python 2 only) cannot run here, so its 9.x cases
(limits and performance: big messages whole, fragmented and chopped, and many
messages back to back) are re-created as a table, run against a daemon with
both limits at 16 MiB: the C{websockets} client for whole and fragmented
messages, a raw socket for the chopped ones. With the default limits
(1 MiB frames, 4 MiB messages) the same kinds of traffic end with close 1009,
over HTTP/1.1 and over HTTP/2 extended CONNECT (RFC 8441), and the settings
reach the worker processes of C{--workers}.
"""

from __future__ import annotations

import functools
import re
import select
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from twisted.internet import threads
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as wsConnect

from tests.support.daemon import LOCAL, startDaemon
from tests.support.net import wait, withTimeout
from tests.support.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_TEXT,
    BlockingClient,
    closePayload,
    decodeFrame,
    encodeFrame,
    handshake,
    maskedFrame,
)

KiB = 1 << 10
MiB = 1 << 20

#: Both limits of the daemon the 9.x cases run against: the largest case, 16 MiB.
RAISED = 16 * MiB
RAISED_ARGS = ["--websocket-max-message", str(RAISED), "--websocket-max-frame", str(RAISED)]

#: The bound of one socket read or one WebSocket receive.
CLIENT_TIMEOUT = 20.0

#: The bound of one case, run in a thread (the machine is shared and slow).
CASE_TIMEOUT = 60.0

#: Text payloads repeat this: ASCII with two- and three-byte characters, 15
#: bytes, so that fragment and chop boundaries split characters.
TEXT_PATTERN = "BAsd7&jh23ä€".encode()

#: What a case that works reports: the echo was whole and equal, then close 1000.
PASSED = ("echoed", 1000)


@dataclass(frozen=True)
class Case:
    """
    One Autobahn|Testsuite 9.x case.

    @ivar kind: C{"whole"} (one message in one frame), C{"fragmented"} (one
        message in frames of C{piece} bytes), C{"chopped"} (one frame written
        to the socket C{piece} bytes at a time) or C{"many"} (C{piece}
        messages of C{size} bytes, sent back to back).
    """

    id: str
    kind: str
    binary: bool
    size: int
    piece: int = 0


def autobahnCases() -> list[Case]:
    """The 9.1 to 9.8 cases, as the testsuite's C{case9_*} modules define them."""
    cases: list[Case] = []
    groups: list[tuple[str, str, list[int], Callable[[int, bool], Case]]] = [
        (
            "9.1",
            "9.2",
            [64 * KiB, 256 * KiB, MiB, 4 * MiB, 8 * MiB, 16 * MiB],
            lambda n, b: Case("", "whole", b, n),
        ),
        (
            "9.3",
            "9.4",
            [64, 256, KiB, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB],
            lambda n, b: Case("", "fragmented", b, 4 * MiB, n),
        ),
        ("9.5", "9.6", [64, 128, 256, 512, 1024, 2048], lambda n, b: Case("", "chopped", b, MiB, n)),
        ("9.7", "9.8", [0, 16, 64, 256, 1024, 4096], lambda n, b: Case("", "many", b, n, 1000)),
    ]
    for textGroup, binaryGroup, values, make in groups:
        for group, binary in ((textGroup, False), (binaryGroup, True)):
            for index, value in enumerate(values, 1):
                case = make(value, binary)
                cases.append(Case(f"{group}.{index}", case.kind, binary, case.size, case.piece))
    return cases


@functools.cache
def payload(size: int, binary: bool) -> bytes:
    """C{size} bytes of valid UTF-8 text (L{TEXT_PATTERN}) or of all byte values, built by repetition."""
    if binary:
        return (bytes(range(256)) * (size // 256 + 1))[:size]
    whole, rest = divmod(size, len(TEXT_PATTERN))
    return TEXT_PATTERN * whole + b"*" * rest


def expected(data: bytes, binary: bool) -> bytes | str:
    """What the C{websockets} client's C{recv} returns for C{data}: bytes or text."""
    return data if binary else data.decode("utf-8")


def numbered(size: int, binary: bool, count: int) -> list[bytes]:
    """C{count} payloads of C{size} bytes, each starting with its index (when it fits), to check the order."""
    if size < 6:
        return [payload(size, binary)] * count
    base = payload(size - 6, binary)
    return [b"%06d" % i + base for i in range(count)]


def wsConnection(port: int, compression: str | None = None) -> ClientConnection:
    """A C{websockets} client on the daemon's C{/ws}: no size or queue limit, no compression unless asked."""
    return wsConnect(
        f"ws://127.0.0.1:{port}/ws",
        compression=compression,
        max_size=None,
        max_queue=None,
        open_timeout=CLIENT_TIMEOUT,
        close_timeout=CLIENT_TIMEOUT,
    )


def closeCode(ws: ClientConnection) -> int | None:
    """The code of the Close frame the server sent (L{None}: none came)."""
    received = ws.protocol.close_rcvd
    return None if received is None else received.code


def fragments(data: bytes, size: int) -> Iterator[memoryview]:
    """C{data} in pieces of C{size} bytes, without copying."""
    view = memoryview(data)
    return (view[i : i + size] for i in range(0, len(data), size))


def exchange(
    ws: ClientConnection, messages: list[Any], wanted: list[bytes], binary: bool
) -> tuple[str, int | None]:
    """
    Send C{messages} (each bytes, or an iterable of fragments) back to back,
    then receive as many; close 1000. C{("echoed", code)} when each came back
    equal to its C{wanted} and in order, else C{("lost", code)} with the
    server's close code.
    """
    try:
        for message in messages:
            ws.send(message, text=not binary)
        echoed = all(ws.recv(timeout=CLIENT_TIMEOUT) == expected(want, binary) for want in wanted)
        ws.close(1000, "done")
    except ConnectionClosed:
        return "lost", closeCode(ws)
    return ("echoed" if echoed else "different"), closeCode(ws)


def runWhole(port: int, case: Case) -> tuple[str, int | None]:
    """One message in one frame."""
    data = payload(case.size, case.binary)
    with wsConnection(port) as ws:
        return exchange(ws, [data], [data], case.binary)


def runFragmented(port: int, case: Case) -> tuple[str, int | None]:
    """One message in frames of C{case.piece} bytes (C{websockets} ends it with an empty final frame)."""
    data = payload(case.size, case.binary)
    with wsConnection(port) as ws:
        return exchange(ws, [fragments(data, case.piece)], [data], case.binary)


def runMany(port: int, case: Case) -> tuple[str, int | None]:
    """C{case.piece} messages back to back, then every echo, in order."""
    with wsConnection(port) as ws:
        messages = numbered(case.size, case.binary, case.piece)
        return exchange(ws, messages, messages, case.binary)


@functools.cache
def oneFrame(size: int, binary: bool) -> bytes:
    """The masked client frame of a whole message (built once: masking is a Python loop)."""
    return encodeFrame(OP_BINARY if binary else OP_TEXT, payload(size, binary))


def runChopped(port: int, case: Case) -> tuple[str, int | None]:
    """
    On a raw socket: the handshake, then one frame written C{case.piece}
    bytes per C{send}; read the echo, then close 1000 and read the answer
    until the server closes the TCP connection.
    """
    data = payload(case.size, case.binary)
    frame = oneFrame(case.size, case.binary)
    with BlockingClient(port, timeout=CLIENT_TIMEOUT) as client:
        client.send(handshake(port))
        status, _headers = client.readHead()
        if status != 101:
            return f"status {status}", None
        for start in range(0, len(frame), case.piece):
            client.sock.sendall(frame[start : start + case.piece])
        fin, opcode, echo, masked = client.readFrame()
        wanted = (True, OP_BINARY if case.binary else OP_TEXT, data, False)
        outcome = "echoed" if (fin, opcode, echo, masked) == wanted else "different"
        if opcode == OP_CLOSE:
            return "lost", closePayload(echo)[0]
        client.send(encodeFrame(OP_CLOSE, struct.pack("!H", 1000)))
        _fin, opcode, answer, _masked = client.readFrame()
        rest, _elapsed = client.readUntilClosed(CLIENT_TIMEOUT)
        if opcode != OP_CLOSE or rest:
            return "no clean close", None
        return outcome, closePayload(answer)[0]


RUNNERS: dict[str, Callable[[int, Case], tuple[str, int | None]]] = {
    "whole": runWhole,
    "fragmented": runFragmented,
    "chopped": runChopped,
    "many": runMany,
}


def runCase(port: int, case: Case) -> tuple[str, int | None]:
    """Run C{case} against the daemon on C{port}: C{(outcome, close code)}."""
    return RUNNERS[case.kind](port, case)


def deflated(port: int, size: int) -> tuple[bool, tuple[str, int | None]]:
    """
    With permessage-deflate: whether it was agreed, and the outcome of one
    text message of C{size} bytes that compresses to a few kilobytes.
    """
    with wsConnection(port, compression="deflate") as ws:
        assert ws.response is not None
        agreed = "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
        data = b"a" * size
        return agreed, exchange(ws, [data], [data], False)


# WebSocket over an HTTP/2 extended CONNECT stream, with the h2 library.


def fragmentedFrames(data: bytes, size: int, binary: bool) -> list[bytes]:
    """The client frames of one message of C{data}, C{size} bytes each."""
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    first = OP_BINARY if binary else OP_TEXT
    return [
        maskedFrame(first if i == 0 else OP_CONT, piece, fin=i == len(pieces) - 1)
        for i, piece in enumerate(pieces)
    ]


class H2WebSocket:
    """
    A blocking HTTP/2 client that opens one WebSocket on an extended CONNECT
    stream (RFC 8441 §5) and keeps the bytes the server sends on it.
    """

    STREAM = 1

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.received = bytearray()
        self.events: list[Any] = []
        self.ended = False
        self.h2.initiate_connection()
        # Let the server send a whole echo without waiting for window updates.
        self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        self.h2.increment_flow_control_window(2**31 - 1 - 65535)
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.h2.data_to_send())

    def pump(self, timeout: float | None = CLIENT_TIMEOUT) -> bool:
        """Read once (waiting at most C{timeout}) and handle the events; C{False} at end of file."""
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if not readable:
            if timeout == 0:
                return True
            raise TimeoutError("the server sent nothing")
        data = self.sock.recv(1 << 20)
        if not data:
            return False
        for event in self.h2.receive_data(data):
            self.events.append(event)
            if isinstance(event, h2.events.DataReceived):
                self.received += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                self.ended = True
        self.flush()
        return True

    def open(self) -> int | None:
        """Wait for extended CONNECT in the server's SETTINGS, CONNECT C{/ws}: the status."""
        while self.h2.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL) != 1:
            if not self.pump():
                return None
        headers = [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "http"),
            (":path", "/ws"),
            (":authority", f"127.0.0.1:{self.port}"),
            ("sec-websocket-version", "13"),
        ]
        self.h2.send_headers(self.STREAM, headers)
        self.flush()
        while True:
            for event in self.events:
                if isinstance(event, h2.events.ResponseReceived):
                    return int(dict(event.headers)[b":status"])
            if not self.pump():
                return None

    def send(self, data: bytes) -> bool:
        """Send C{data} on the stream as flow control allows; C{False} if the stream ended first."""
        view = memoryview(data)
        while view:
            self.pump(0)
            if self.ended:
                return False
            window = min(self.h2.local_flow_control_window(self.STREAM), self.h2.max_outbound_frame_size)
            if window <= 0:
                self.pump()
                continue
            try:
                self.h2.send_data(self.STREAM, bytes(view[:window]))
            except h2.exceptions.StreamClosedError:
                return False
            self.flush()
            view = view[window:]
        return True

    def readFrame(self) -> tuple[bool, int, bytes, bool] | None:
        """The next whole WebSocket frame from the server, or L{None} if the stream ends first."""
        while True:
            decoded = decodeFrame(bytes(self.received)) if self._wholeFrame() else None
            if decoded is not None:
                frame, rest = decoded
                self.received = bytearray(rest)
                return frame
            if self.ended or not self.pump():
                return None

    def _wholeFrame(self) -> bool:
        """Whether the buffer holds a whole frame (without copying megabytes on each read)."""
        data = self.received
        if len(data) < 2:
            return False
        length, offset = data[1] & 0x7F, 2
        if length == 126:
            length, offset = (struct.unpack("!H", data[2:4])[0] if len(data) >= 4 else 1 << 62), 4
        elif length == 127:
            length, offset = (struct.unpack("!Q", data[2:10])[0] if len(data) >= 10 else 1 << 62), 10
        return len(data) >= offset + length

    def close(self) -> None:
        self.sock.close()


def h2Exchange(port: int, data: bytes, frameSize: int, binary: bool) -> dict[str, Any]:
    """
    Over HTTP/2: open C{/ws}, send C{data} as one message in frames of
    C{frameSize} bytes, then close 1000. The status, whether the echo came
    back equal, and the code of the server's Close frame.
    """
    client = H2WebSocket(port)
    try:
        status = client.open()
        result: dict[str, Any] = {"status": status, "echoed": False, "close": None}
        if status != 200:
            return result
        client.send(b"".join(fragmentedFrames(data, frameSize, binary)))
        frame = client.readFrame()
        if frame is not None and frame[1] != OP_CLOSE:
            result["echoed"] = frame == (True, OP_BINARY if binary else OP_TEXT, data, False)
            client.send(maskedFrame(OP_CLOSE, struct.pack("!H", 1000)))
            frame = client.readFrame()
        if frame is not None and frame[1] == OP_CLOSE:
            result["close"] = closePayload(frame[2])[0]
        return result
    finally:
        client.close()


def inThread(function: Callable[..., Any], *args: Any) -> Any:
    """C{function(*args)} in a thread, bounded by L{CASE_TIMEOUT}."""
    return withTimeout(threads.deferToThread(function, *args), CASE_TIMEOUT)


#: Beyond the 9.x cases: one message over the message limit of 4 MiB, in frames within the frame limit.
EIGHT_IN_FRAMES = Case("8 MiB in 1 MiB frames", "fragmented", False, 8 * MiB, MiB)


class AutobahnLimitsTests(TestCase):
    """The Autobahn|Testsuite 9.x cases against C{twistd txupgrade} with both limits at 16 MiB."""

    maxDiff = None

    @inlineCallbacks
    def test_cases(self) -> Any:
        """Every 9.x case echoes whole and equal, then closes 1000; so do the cases the defaults refuse."""
        daemon = yield startDaemon(self, ["--listen", LOCAL, *RAISED_ARGS])
        port = daemon.ports[0]
        cases = autobahnCases()
        self.assertEqual(len(cases), 54)
        self.assertEqual([len(payload(16 * MiB, b)) for b in (False, True)], [16 * MiB, 16 * MiB])
        results = {}
        for case in [*cases, EIGHT_IN_FRAMES]:
            results[case.id] = yield inThread(runCase, port, case)
        self.assertEqual(results, {case.id: PASSED for case in [*cases, EIGHT_IN_FRAMES]})
        agreed, outcome = yield inThread(deflated, port, 8 * MiB)
        self.assertEqual((agreed, outcome), (True, PASSED))
        self.assertIn(b'"GET /ws HTTP/1.1" 101', daemon.output)


class DefaultLimitsTests(TestCase):
    """C{twistd txupgrade} with the default limits: 1 MiB frames, 4 MiB messages."""

    @inlineCallbacks
    def test_defaultsBite(self) -> Any:
        """
        Over HTTP/1.1 and HTTP/2: a 4 MiB frame is closed 1009 (frame limit),
        so is 8 MiB in 1 MiB frames (message limit) and 8 MiB that deflates
        to kilobytes (the limit holds after inflation); 4 MiB in 1 MiB frames,
        at the limit, is echoed.
        """
        daemon = yield startDaemon(self, ["--listen", LOCAL])
        port = daemon.ports[0]
        tooBigFrame = Case("9.1.4", "whole", False, 4 * MiB)
        atTheLimit = Case("9.3.8", "fragmented", False, 4 * MiB, MiB)
        results = {}
        for case in (tooBigFrame, EIGHT_IN_FRAMES, atTheLimit):
            results[case.id] = yield inThread(runCase, port, case)
        self.assertEqual(
            results,
            {"9.1.4": ("lost", 1009), "8 MiB in 1 MiB frames": ("lost", 1009), "9.3.8": PASSED},
        )
        agreed, outcome = yield inThread(deflated, port, 8 * MiB)
        self.assertEqual((agreed, outcome), (True, ("lost", 1009)))
        overH2 = yield inThread(h2Exchange, port, payload(6 * MiB, True), MiB, True)
        self.assertEqual(overH2, {"status": 200, "echoed": False, "close": 1009})
        atLimitOverH2 = yield inThread(h2Exchange, port, payload(4 * MiB, True), MiB, True)
        self.assertEqual(atLimitOverH2, {"status": 200, "echoed": True, "close": 1000})
        self.assertIn(b'"CONNECT /ws HTTP/2" 200', daemon.output)


class MessageLimitTests(TestCase):
    """C{--websocket-max-message} raised alone: bigger messages, frames still bounded."""

    @inlineCallbacks
    def test_raisedOverBothTransports(self) -> Any:
        """
        With 8 MiB messages: 6 MiB in 1 MiB frames is echoed over HTTP/2 and
        8 MiB over HTTP/1.1; a 2 MiB frame is still closed 1009.
        """
        daemon = yield startDaemon(self, ["--listen", LOCAL, "--websocket-max-message", str(8 * MiB)])
        port = daemon.ports[0]
        overH2 = yield inThread(h2Exchange, port, payload(6 * MiB, False), MiB, False)
        self.assertEqual(overH2, {"status": 200, "echoed": True, "close": 1000})
        overH1 = yield inThread(runCase, port, EIGHT_IN_FRAMES)
        self.assertEqual(overH1, PASSED)
        frame = yield inThread(runCase, port, Case("2 MiB frame", "whole", True, 2 * MiB))
        self.assertEqual(frame, ("lost", 1009))
        self.assertIn(b'"CONNECT /ws HTTP/2" 200', daemon.output)


_WORKER_SERVING = re.compile(rb"\[worker \d+\|[^\]]*\] txupgrade serving on")


class WorkerLimitsTests(TestCase):
    """The limits reach the worker processes of C{--workers}."""

    @inlineCallbacks
    def test_worker(self) -> Any:
        """A worker of a supervisor with 16 MiB limits echoes 8 MiB in one frame (the defaults close 1009)."""
        daemon = yield startDaemon(self, ["--listen", LOCAL, "--workers", "1", *RAISED_ARGS])
        yield wait(lambda: _WORKER_SERVING.search(daemon.output) is not None, 60)
        result = yield inThread(runCase, daemon.ports[0], Case("9.2.5", "whole", True, 8 * MiB))
        self.assertEqual(result, PASSED)
