"""
Helpers for the WebSocket tests with real clients: a recording autobahn
server, a site that tracks its connections, a raw RFC 6455 client on a
blocking socket, bounded child processes (Node, Chromium), and bounded waits.

The blocking clients (C{websockets}, C{websocket-client}, the raw socket)
run in a thread (L{inThread}) while the reactor serves; every socket they
open has a timeout, and every wait here is bounded by L{TIMEOUT}.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionRequest
from twisted.internet import reactor as _globalReactor
from twisted.internet import threads
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.resource import Resource

from txupgrade._twistedcompat import _HTTP2Wrapper
from txupgrade.channel import UpgradeSite
from txupgrade.websocket import WebSocketEndpoint

reactor: Any = _globalReactor

#: The bound, in seconds, of any single wait in these tests.
TIMEOUT = 10.0

#: Where the WebSocket endpoint lives in the test sites.
WS_PATH = b"/ws"

T = TypeVar("T")


def inThread(function: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
    """
    Run the blocking C{function} in a thread while the reactor serves.

    The result is bounded by twice L{TIMEOUT}; the clients themselves use
    socket timeouts shorter than that, so the thread ends too.
    """
    d = threads.deferToThread(function, *args, **kwargs)
    d.addTimeout(TIMEOUT * 2, reactor)
    return d


def bounded(d: Deferred[T], seconds: float = TIMEOUT) -> Deferred[T]:
    """C{d}, failing with a L{defer.TimeoutError} after C{seconds}."""
    d.addTimeout(seconds, reactor)
    return d


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


class _TrackedWrapper(_HTTP2Wrapper):
    """
    Twisted's per-connection wrapper, also firing C{lost} on C{connectionLost}.

    The wrapper proxies C{IProtocol} to the protocol it holds now (the
    switched one, after an upgrade), so C{super()} reaches that protocol.
    """

    lost: Deferred[None]
    serverTransport: Any = None

    def makeConnection(self, transport: Any) -> None:
        self.serverTransport = transport
        super().makeConnection(transport)

    def connectionLost(self, reason: Failure) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self.lost.callback(None)


class TrackingSite(UpgradeSite):
    """
    An L{UpgradeSite} that knows when each of its connections is lost.

    @ivar wrappers: Every connection's protocol, in order.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wrappers: list[_TrackedWrapper] = []

    def buildProtocol(self, addr: Any) -> Any:
        proto = super().buildProtocol(addr)
        assert type(proto) is _HTTP2Wrapper
        proto.__class__ = _TrackedWrapper
        proto.lost = Deferred()
        self.wrappers.append(proto)
        return proto

    def allClosed(self) -> bool:
        """Whether every connection this site accepted is closed."""
        return all(wrapper.lost.called for wrapper in self.wrappers)

    def abortAll(self) -> None:
        """Abort every connection still open."""
        for wrapper in self.wrappers:
            if not wrapper.lost.called and wrapper.serverTransport is not None:
                wrapper.serverTransport.abortConnection()


def webSocketSite(
    factory: WebSocketServerFactory,
    allowedOrigins: Sequence[str] | None = None,
    **siteArgs: Any,
) -> TrackingSite:
    """A site with L{WebSocketEndpoint} for C{factory} at L{WS_PATH}."""
    root = Resource()
    root.putChild(WS_PATH.lstrip(b"/"), WebSocketEndpoint(factory, allowedOrigins))
    return TrackingSite(root, **siteArgs)


def listen(testCase: TestCase, site: TrackingSite, tlsOptions: Any = None) -> int:
    """
    Serve C{site} on 127.0.0.1 (TLS when C{tlsOptions} is given); return the port.

    The cleanup stops listening and waits (bounded) for every connection the
    site accepted to be closed: a server that keeps one open after its client
    left fails the test, after the connection is aborted.
    """
    site.noisy = False
    port: IListeningPort
    if tlsOptions is None:
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
    else:
        port = reactor.listenSSL(0, site, tlsOptions, interface="127.0.0.1")

    @inlineCallbacks
    def cleanup() -> Any:
        yield port.stopListening()
        try:
            yield wait(site.allClosed)
        except AssertionError:
            site.abortAll()
            yield wait(site.allClosed, 2.0)
            testCase.fail("a server connection stayed open after its client left")

    testCase.addCleanup(cleanup)
    address: Any = port.getHost()
    return address.port


def wait(predicate: Callable[[], bool], seconds: float = TIMEOUT) -> Deferred[None]:
    """Fire once C{predicate()} is true (checked every 10 ms), failing after C{seconds}."""
    d: Deferred[None] = Deferred()
    deadline = time.monotonic() + seconds

    def check() -> None:
        if predicate():
            d.callback(None)
        elif time.monotonic() > deadline:
            d.errback(AssertionError(f"condition not met within {seconds} s"))
        else:
            reactor.callLater(0.01, check)

    check()
    return d


class _CollectingProcess(ProcessProtocol):
    """Collect a child's output; fire C{ended} with C{(out, err, exitCode)}."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.ended: Deferred[tuple[bytes, bytes, int | None]] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback((bytes(self.out), bytes(self.err), getattr(reason.value, "exitCode", None)))


@inlineCallbacks
def runProcess(executable: str, args: list[str], cwd: str, seconds: float) -> Any:
    """
    Run C{executable} with C{args} in C{cwd}; return C{(out, err, exitCode)}.

    A child still running after C{seconds} is killed, and the test fails.
    """
    collector = _CollectingProcess()
    process = reactor.spawnProcess(collector, executable, [executable, *args], env=os.environ, path=cwd)
    timedOut = []

    def kill() -> None:
        timedOut.append(True)
        process.signalProcess("KILL")

    killer = reactor.callLater(seconds, kill)
    out, err, exitCode = yield collector.ended
    if killer.active():
        killer.cancel()
    if timedOut:
        raise AssertionError(f"{executable} still running after {seconds} s; killed. stderr: {err!r}")
    return out, err, exitCode


NODE_DIR = Path(__file__).parent / "node"


def nodeOrSkip(module: str, required: bool = False) -> str:
    """
    The path of C{node}, when it and C{tests/node/node_modules/<module>} exist.

    A missing one fails the test in CI (C{CI} set) or when C{required};
    otherwise it skips the test, saying how to get it.
    """
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node is not on PATH")
    if not (NODE_DIR / "node_modules" / module).is_dir():
        missing.append(f"tests/node/node_modules/{module} is missing (run: npm ci in tests/node)")
    if missing:
        message = "; ".join(missing)
        if required or os.environ.get("CI"):
            raise AssertionError(message)
        raise SkipTest(message)
    assert node is not None
    return node


# RFC 6455, on a blocking socket, for the raw client.

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
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


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


class RawClient:
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
        while b"\r\n\r\n" not in self.buffer:
            if not self._more():
                raise ConnectionError(f"closed before a response head: {self.buffer!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, value = line.split(b":", 1)
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        return status, headers

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


def closePayload(payload: bytes) -> tuple[int | None, str]:
    """The code and reason of a close frame's payload."""
    if len(payload) < 2:
        return None, ""
    (code,) = struct.unpack("!H", payload[:2])
    return code, payload[2:].decode("utf-8")
