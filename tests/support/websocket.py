"""
WebSocket for the tests: RFC 6455 frames and opening handshakes, the
blocking client for byte-exact tests run in a thread (L{inThread}), the echo
round of a C{websockets} client, and the recording autobahn server with the
site that serves it.

Every socket the blocking client opens has a timeout shorter than the bound
of L{inThread}, so its thread ends too.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from tests.support.http import parseHead
from tests.support.net import TrackingSite
from txupgrade.protocols.websocket import WebSocketEndpoint
from txupgrade.resource import DirectoryResource

#: Where the WebSocket endpoint lives in the test sites.
WS_PATH = b"/ws"


class RecordingServerProtocol(WebSocketServerProtocol):
    """
    Echo every message, recording what autobahn reports.

    A text message C{"please close"} makes the server close with code 4001.

    @ivar request: The C{ConnectionRequest} given to C{onConnect}.
    @ivar closeInfo: C{(wasClean, code, reason)} from C{onClose}.
    @ivar lost: Fires when the connection is lost.
    @ivar opened: Fires when C{onOpen} ran.
    """

    request: ConnectionRequest | None = None
    closeInfo: tuple[bool, int | None, str | None] | None = None

    def onConnect(self, request: ConnectionRequest) -> Any:
        self.request = request
        self.lost: Deferred[None] = Deferred()
        self.opened: Deferred[None] = Deferred()
        self.openError: BaseException | None = None
        factory: RecordingServerFactory = self.factory
        factory.connections.append(self)
        if factory.onConnectHook is not None:
            return factory.onConnectHook(self, request)
        return None

    def onOpen(self) -> None:
        factory: RecordingServerFactory = self.factory
        try:
            if factory.onOpenHook is not None:
                factory.onOpenHook(self)
        except BaseException as error:
            self.openError = error
            raise
        finally:
            self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not isBinary and payload == b"please close":
            self.sendClose(code=4001, reason="server says bye")
            return
        self.sendMessage(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closeInfo = (wasClean, code, reason)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        super().connectionLost(reason)
        lost = getattr(self, "lost", None)
        if lost is not None and not lost.called:
            lost.callback(None)


class RecordingServerFactory(WebSocketServerFactory):
    """
    A factory of L{RecordingServerProtocol}s that keeps every one built.

    @ivar connections: The protocols whose C{onConnect} ran, in order.
    @ivar onConnectHook: Called as C{hook(protocol, request)}; its result is
        C{onConnect}'s answer.
    @ivar onOpenHook: Called as C{hook(protocol)} from C{onOpen}.
    """

    protocol = RecordingServerProtocol

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: list[RecordingServerProtocol] = []
        self.onConnectHook: Callable[[RecordingServerProtocol, ConnectionRequest], Any] | None = None
        self.onOpenHook: Callable[[RecordingServerProtocol], None] | None = None


def webSocketSite(
    factory: WebSocketServerFactory,
    allowedOrigins: Sequence[str] | None = None,
    **siteArgs: Any,
) -> TrackingSite:
    """A site with L{WebSocketEndpoint} for C{factory} at L{WS_PATH}."""
    root = DirectoryResource()
    root.putChild(WS_PATH.lstrip(b"/"), WebSocketEndpoint(factory, allowedOrigins))
    return TrackingSite(root, **siteArgs)


# RFC 6455, on a blocking socket, for the blocking client.

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def newKey() -> bytes:
    """A fresh C{Sec-WebSocket-Key}: 16 random bytes in base64."""
    return base64.b64encode(os.urandom(16))


def handshakeBytes(
    target: bytes = WS_PATH,
    *,
    method: bytes = b"GET",
    key: bytes | None,
    version: bytes | None = b"13",
    host: bytes | None,
    upgrade: bool = True,
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> bytes:
    """
    The bytes of a WebSocket opening handshake (RFC 6455 §4.1); a C{None}
    key, version or host, or C{upgrade=False}, leaves that header out.
    """
    lines = [method + b" " + target + b" HTTP/1.1"]
    if host is not None:
        lines.append(b"Host: " + host)
    if upgrade:
        lines += [b"Upgrade: websocket", b"Connection: Upgrade"]
    if key is not None:
        lines.append(b"Sec-WebSocket-Key: " + key)
    if version is not None:
        lines.append(b"Sec-WebSocket-Version: " + version)
    lines.extend(name + b": " + value for name, value in extra)
    if method == b"POST":
        lines.append(b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def handshake(
    port: int,
    target: bytes = WS_PATH,
    *,
    key: bytes | None = None,
    method: bytes = b"GET",
    version: bytes | None = b"13",
    extra: Iterable[tuple[bytes, bytes]] = (),
    omitKey: bool = False,
) -> bytes:
    """A handshake to C{127.0.0.1:port}, with a fresh key unless one is given or omitted."""
    return handshakeBytes(
        target,
        method=method,
        key=None if omitKey else (key if key is not None else newKey()),
        version=version,
        host=b"127.0.0.1:%d" % port,
        extra=extra,
    )


def encodeFrame(opcode: int, payload: bytes, *, fin: bool = True, maskKey: bytes | None = None) -> bytes:
    """A client frame: masked (RFC 6455 §5.3) with C{maskKey} or a random key."""
    key = maskKey if maskKey is not None else os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    return head + key + mask(payload, key)


def mask(data: bytes, key: bytes) -> bytes:
    """C{data} masked with the 4-byte C{key} (RFC 6455 §5.3): one big-integer XOR, fast for megabytes."""
    if not data:
        return data
    stream = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


#: The fixed mask key of L{maskedFrame}.
MASK_KEY = b"\x0f\x1e\x2d\x3c"


def maskedFrame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One client frame (final unless told), masked with L{MASK_KEY} (the same bytes every time)."""
    return encodeFrame(opcode, payload, fin=fin, maskKey=MASK_KEY)


def decodeFrame(data: bytes) -> tuple[tuple[bool, int, bytes, bool], bytes] | None:
    """
    One frame from the start of C{data}: C{((fin, opcode, payload, masked), rest)}.

    L{None} when C{data} does not hold a whole frame yet.
    """
    if len(data) < 2:
        return None
    fin = bool(data[0] & 0x80)
    opcode = data[0] & 0x0F
    masked = bool(data[1] & 0x80)
    length = data[1] & 0x7F
    offset = 2
    if length == 126:
        if len(data) < 4:
            return None
        (length,) = struct.unpack("!H", data[2:4])
        offset = 4
    elif length == 127:
        if len(data) < 10:
            return None
        (length,) = struct.unpack("!Q", data[2:10])
        offset = 10
    key = b""
    if masked:
        key = data[offset : offset + 4]
        offset += 4
    if len(data) < offset + length:
        return None
    payload = data[offset : offset + length]
    if masked:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return (fin, opcode, payload, masked), data[offset + length :]


def decodeAll(data: bytes) -> list[tuple[tuple[bool, int, bytes, bool], bytes]]:
    """Every whole frame in C{data}, each with the bytes that followed it."""
    frames: list[tuple[tuple[bool, int, bytes, bool], bytes]] = []
    while True:
        decoded = decodeFrame(data)
        if decoded is None:
            return frames
        frames.append(decoded)
        data = decoded[1]


def echoAndClose(conn: Any, text: str, blob: bytes, timeout: float) -> tuple[int, Any, Any, Any]:
    """
    On an open C{websockets} (sync) client connection: echo C{text}, then
    C{blob}, and close with 1000 C{"done"}. The handshake's status, what came
    back for each, and the close frame received (L{None} if none).
    """
    with conn:
        assert conn.response is not None
        status = conn.response.status_code
        conn.send(text)
        textBack = conn.recv(timeout=timeout)
        conn.send(blob)
        blobBack = conn.recv(timeout=timeout)
        conn.close(1000, "done")
        return status, textBack, blobBack, conn.protocol.close_rcvd


class BlockingClient:
    """
    A blocking RFC 6455 client on a plain socket, for byte-exact tests.

    Every read has a timeout; L{close} is safe to call twice.
    """

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.timeout = timeout

    def send(self, data: bytes, oneByteAtATime: bool = False) -> None:
        """Send C{data} in one C{sendall}, or one byte per write."""
        if not oneByteAtATime:
            self.sock.sendall(data)
            return
        for i in range(len(data)):
            self.sock.sendall(data[i : i + 1])
            time.sleep(0.0005)

    def _more(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def readHead(self) -> tuple[int, dict[bytes, list[bytes]]]:
        """Read a response head: C{(status, {lower-case name: [values]})}."""
        while (parsed := parseHead(self.buffer)) is None:
            if not self._more():
                raise ConnectionError(f"closed before a response head: {self.buffer!r}")
        head, self.buffer = parsed
        return head.code, head.byName()

    def readBody(self, headers: dict[bytes, list[bytes]]) -> bytes:
        """Read a body of the C{Content-Length} in C{headers}."""
        length = int(headers.get(b"content-length", [b"0"])[0])
        while len(self.buffer) < length:
            if not self._more():
                break
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return body

    def readFrame(self) -> tuple[bool, int, bytes, bool]:
        """Read one frame: C{(fin, opcode, payload, masked)}."""
        while True:
            decoded = decodeFrame(self.buffer)
            if decoded is not None:
                frame, self.buffer = decoded
                return frame
            if not self._more():
                raise ConnectionError(f"closed inside a frame: {self.buffer!r}")

    def readUntilClosed(self, seconds: float) -> tuple[bytes, float]:
        """
        Read until the server closes the connection; return the bytes and when.

        @raise TimeoutError: if it stays open for C{seconds}.
        """
        start = time.monotonic()
        deadline = start + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"still open after {seconds} s")
            self.sock.settimeout(remaining)
            try:
                if not self._more():
                    break
            except ConnectionResetError:
                break
        return self.buffer, time.monotonic() - start

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def closePayload(payload: bytes) -> tuple[int | None, str]:
    """The code and reason of a close frame's payload."""
    if len(payload) < 2:
        return None, ""
    (code,) = struct.unpack("!H", payload[:2])
    return code, payload[2:].decode("utf-8")
