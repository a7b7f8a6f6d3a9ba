"""
WebSocket echo servers compared: txupgrade against autobahn and Twisted.

Theory of operation
-------------------
One run starts each of six servers in its own process, one after the
other, all serving a WebSocket echo (every message is sent back as it came)
at C{/ws} on 127.0.0.1:

  (a) C{txupgrade}: C{UpgradeSite(root)} with C{root.putChild(b"ws",
      WebSocketEndpoint(factory))};
  (b) C{autobahn}: autobahn's C{WebSocketServerFactory} listening alone;
  (c) C{autobahn-resource}: autobahn's C{WebSocketResource(factory)} in a
      plain twisted.web C{Site};
  (d) C{twisted}: Twisted's own C{twisted.web.websocket.WebSocketResource}
      (wsproto underneath) in a plain C{Site};
  (e) C{daemon}: a real C{twistd -n txupgrade} as shipped, its demo's
      WebSocket echo at C{/ws}, with its access and connection lines in a
      log file, tracking and limits on (C{--listen tcp:0:...:backlog=1024});
  (f) C{websockets}: the C{websockets} library's asyncio C{serve()} with an
      echo handler (compression off, as the client offers none).

Every server listens with a backlog of 1024; the Twisted ones use the epoll
reactor. Those built in code have no log observer (twisted.logger only
buffers events in memory), no access log (C{Site(root)}, C{logPath=None})
and autobahn's default (debug off) logging; the daemon logs as shipped.
Its stdout and stderr go to a file, which is checked at the end: nothing may
be printed after the C{READY} line.

The load generator is a second process (C{--client}): one thread, one epoll
set, non-blocking sockets and RFC 6455 frames built and masked once before
the clock starts, so a request costs it a few system calls. It measures, in
this order, on a freshly started server:

  1. warm-up: a few hundred handshakes, not reported;
  2. idle RSS: server RSS before and after opening N (2,000) WebSocket
     connections that then stay idle, divided by N; the connections are
     then closed;
  3. handshakes: new connections, each one C{connect}, C{GET /ws} with
     C{Upgrade: websocket}, wait for the whole C{101}, send a masked close
     frame (1000), wait for the server's close frame and for the server to
     close TCP, then close the socket (a proper close handshake, in which
     the server closes TCP first, as RFC 6455 §7.1.1 asks); 32 in flight;
  4. echo: 50 established connections, each ping-ponging a binary message
     (send, wait for the whole echo, send again), with 32-byte and with
     64 KiB messages.

Each rate phase stops at a message count or a time limit, whichever comes
first, then waits for the requests in flight. The server's CPU time
(C{psutil} C{cpu_times}, user + system) is read just before and just after
each phase: rates are reported per wall-clock second and per server
CPU-second, with both processes' CPU utilisation, so that a load generator
that became the bottleneck shows (the server should be near 100% of a core).

C{--profile KIND} runs cProfile inside server KIND during the handshake
phase (switched on and off by C{SIGUSR1}/C{SIGUSR2}) and prints where the
time goes per handshake; C{--pyspy FILE} records the server with py-spy
instead (raw collapsed stacks).

Run: C{python benchmarks/bench_websocket.py} (three rounds of fresh servers,
medians reported; about three minutes) or C{--quick} (one round of short
phases, about ten seconds: a smoke test, its figures are noise).
"""

from __future__ import annotations

import argparse
import base64
import errno
import hashlib
import json
import math
import os
import platform
import pstats
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H

SERVERS = ("txupgrade", "autobahn", "autobahn-resource", "twisted", "daemon", "websockets")
LETTERS_ORDER = "abcdef"
LETTERS = dict(zip(SERVERS, LETTERS_ORDER, strict=True))
LABELS = {
    "txupgrade": "txupgrade UpgradeSite + WebSocketEndpoint",
    "autobahn": "autobahn WebSocketServerFactory alone",
    "autobahn-resource": "autobahn WebSocketResource in Site",
    "twisted": "twisted.web.websocket.WebSocketResource in Site",
    "daemon": "twistd -n txupgrade as shipped (its /ws echo; logs in a file)",
    "websockets": "websockets (asyncio) serve(), echo handler",
}
BASELINE = "autobahn"

WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
WS_ACCEPT = base64.b64encode(hashlib.sha1(WS_KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
HANDSHAKE_CONCURRENCY = 32
OPEN_CONCURRENCY = 64
ECHO_CONNECTIONS = 50
SMALL, LARGE = 32, 64 * 1024


# ---------------------------------------------------------------------------
# Servers


def _autobahnFactory() -> Any:
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    class Echo(WebSocketServerProtocol):
        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            self.sendMessage(payload, isBinary)

    factory = WebSocketServerFactory()
    factory.protocol = Echo
    return factory


def _twistedWebSocketResource() -> Any:
    from twisted.web.websocket import WebSocketResource

    class Echo:
        transport: Any = None

        def negotiationStarted(self, transport: Any) -> None:
            self.transport = transport

        def negotiationFinished(self) -> None:
            pass

        def pongReceived(self, payload: bytes) -> None:
            pass

        def textMessageReceived(self, message: str) -> None:
            self.transport.sendTextMessage(message)

        def bytesMessageReceived(self, data: bytes) -> None:
            self.transport.sendBytesMessage(bytes(data))

        def connectionLost(self, reason: object) -> None:
            self.transport = None

    class Factory:
        def buildProtocol(self, request: object) -> Any:
            return Echo()

    return WebSocketResource(Factory())


def _noAccessLog(request: object) -> None:
    """C{HTTPFactory.log} with no access log at all."""


def serveDaemon() -> None:
    """
    A real C{twistd -n txupgrade} in this process, as shipped (its demo's
    WebSocket echo on C{/ws}, access and connection lines into a log file),
    on C{tcp:0} with the others' backlog; C{READY} once it listens.
    """
    from twisted.scripts.twistd import run

    from txupgrade.daemon.service import DaemonService

    started = DaemonService.startService

    def announcing(self: DaemonService) -> None:
        started(self)
        # (twistd's log took sys.stdout: the line goes to the real one.)
        print(
            f"READY {self.ports[0].getHost().port} {type(self.reactor).__name__}",
            file=sys.__stdout__,
            flush=True,
        )

    DaemonService.startService = announcing  # type: ignore[method-assign]
    log = os.path.join(tempfile.mkdtemp(prefix="bench-ws-daemon-"), "twistd.log")
    sys.argv = ["twistd", "-n", "--pidfile=", f"--logfile={log}", "txupgrade"]
    sys.argv += ["--listen", f"tcp:0:interface={H.HOST}:backlog=1024"]
    run()


def serveWebsockets() -> None:
    """websockets' asyncio server, echoing every message as it came; C{READY} once it listens."""
    import asyncio

    from websockets.asyncio.server import serve as wsServe

    async def echo(connection: Any) -> None:
        async for message in connection:
            await connection.send(message)

    async def main() -> None:
        async with wsServe(echo, H.HOST, 0, backlog=1024, compression=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            H.announce(port, asyncio.get_running_loop())
            await asyncio.Future()

    H.profileOnSignals()
    asyncio.run(main())


def serve(kind: str) -> None:
    """Run server C{kind} on an ephemeral port; print C{READY <port>}."""
    H.dieWithParent()
    H.raiseFileLimit(65536)
    if kind == "daemon":
        return serveDaemon()
    if kind == "websockets":
        return serveWebsockets()
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    factory = None
    root = Resource()
    if kind == "txupgrade":
        from txupgrade import UpgradeSite
        from txupgrade.protocols.websocket import WebSocketEndpoint

        factory = _autobahnFactory()
        root.putChild(b"ws", WebSocketEndpoint(factory))
        listening: Any = UpgradeSite(root)
    elif kind == "autobahn":
        factory = listening = _autobahnFactory()
    elif kind == "autobahn-resource":
        from autobahn.twisted.resource import WebSocketResource

        factory = _autobahnFactory()
        root.putChild(b"ws", WebSocketResource(factory))
        listening = Site(root)
    elif kind == "twisted":
        root.putChild(b"ws", _twistedWebSocketResource())
        listening = Site(root)
    else:
        raise SystemExit(f"unknown server {kind!r}")
    if isinstance(listening, Site) and os.environ.get("BENCH_WS_ACCESS_LOG") != "default":
        # Site(root) has logPath=None, yet still formats a combined-log line
        # per finished request into log.logfile (the global log publisher).
        # Only (a) finishes its handshake requests (it logs the 101): turn the
        # access log off in every Site, as the comparison asks.
        listening.log = _noAccessLog  # type: ignore[method-assign]
    port = reactor.listenTCP(0, listening, backlog=1024, interface="127.0.0.1")  # type: ignore[attr-defined]
    number: int = port.getHost().port  # type: ignore[attr-defined]
    if factory is not None:
        path = "" if kind == "autobahn" else "/ws"
        factory.setSessionParameters(url=f"ws://127.0.0.1:{number}{path}")

    H.profileOnSignals()
    H.announce(number, reactor)
    reactor.run()  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# Load generator


def maskedFrame(opcode: int, payload: bytes, key: bytes) -> bytes:
    """One final client frame (RFC 6455 §5.2), masked with C{key}."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    stream = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
    return head + key + masked


def serverFrame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked server frame."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


class BenchError(Exception):
    """The server answered something other than the expected bytes."""


class Client:
    """
    The load generator: raw sockets on one epoll set.

    @ivar serverPid: Whose CPU time and RSS are read around each phase.
    """

    def __init__(self, port: int, serverPid: int) -> None:
        import psutil

        self.addr = ("127.0.0.1", port)
        self.server = psutil.Process(serverPid)
        self.request = (
            b"GET /ws HTTP/1.1\r\n"
            b"Host: 127.0.0.1:%d\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n" % (port, WS_KEY)
        )
        self.key = os.urandom(4)
        self.close = maskedFrame(8, struct.pack("!H", 1000), self.key)

    def serverRss(self) -> int:
        return int(self.server.memory_info().rss)

    def _connect(self) -> tuple[socket.socket, bool]:
        """A new non-blocking socket, connecting; C{True} if the request went out."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(self.addr)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(code, os.strerror(code))
        try:
            sock.send(self.request)
        except (BlockingIOError, OSError) as error:
            if isinstance(error, BlockingIOError) or error.errno in (errno.ENOTCONN, errno.EAGAIN):
                return sock, False
            sock.close()
            raise
        return sock, True

    @staticmethod
    def _check101(head: bytes) -> None:
        if not head.startswith(b"HTTP/1.1 101 "):
            raise BenchError(f"expected a 101, got {head[:200]!r}")

    def verify(self) -> None:
        """One full exchange, every byte checked, before anything is timed."""
        with socket.create_connection(self.addr, timeout=5) as sock:
            sock.sendall(self.request)
            head, rest = H.readHead(sock, b"HTTP/1.1 101 ")
            fields = dict(line.partition(b":")[::2] for line in head.split(b"\r\n")[1:])
            accept = {name.strip().lower(): value.strip() for name, value in fields.items()}
            if accept.get(b"sec-websocket-accept") != WS_ACCEPT:
                raise BenchError(f"wrong or missing Sec-WebSocket-Accept: {head!r}")
            for size in (SMALL, LARGE):
                payload = os.urandom(size)
                sock.sendall(maskedFrame(2, payload, self.key))
                want = serverFrame(2, payload)
                rest = H.recvUntil(sock, lambda data, want=want: len(data) >= len(want), rest)
                if rest != want:
                    raise BenchError(f"bad echo of {size} bytes: {rest[:40]!r}")
                rest = b""
            sock.sendall(self.close)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            if rest[:4] != b"\x88\x02\x03\xe8":
                raise BenchError(f"expected a close frame (1000), got {rest!r}")

    def handshakes(self, maxCount: int, maxSeconds: float, concurrency: int) -> dict[str, Any]:
        """
        New connections: upgrade, 101, close handshake, server closes TCP.

        States: 0 connecting, 1 waiting for the 101, 2 waiting for the
        close frame and the end of the stream.
        """
        epoll = select.epoll()
        IN, OUT = select.EPOLLIN, select.EPOLLOUT
        conns: dict[int, list[Any]] = {}
        request, close = self.request, self.close
        started = done = failures = 0
        failure = ""

        def start() -> None:
            nonlocal started
            sock, sent = self._connect()
            fd = sock.fileno()
            conns[fd] = [sock, 1 if sent else 0, b""]
            epoll.register(fd, IN if sent else OUT)
            started += 1

        window = H.CpuWindow(self.server.pid)
        deadline = time.monotonic() + maxSeconds
        for _ in range(min(concurrency, maxCount)):
            start()
        stopping = False
        poll = epoll.poll
        while conns:
            now = time.monotonic()
            if not stopping and (started >= maxCount or now >= deadline):
                stopping = True
                grace = now + 5.0
            if stopping and now > grace:
                failures += len(conns)
                failure = failure or "timed out waiting for in-flight handshakes"
                for entry in conns.values():
                    entry[0].close()
                conns.clear()
                break
            for fd, _events in poll(0.5):
                entry = conns[fd]
                sock = entry[0]
                state = entry[1]
                if state == 0:
                    sock.send(request)
                    entry[1] = 1
                    epoll.modify(fd, IN)
                    continue
                try:
                    data = sock.recv(4096)
                except ConnectionError as error:
                    data = b""
                    failure = failure or repr(error)
                if state == 1:
                    if not data:
                        failures += 1
                        failure = failure or "closed before the 101"
                    else:
                        buf = entry[2] + data
                        end = buf.find(b"\r\n\r\n")
                        if end < 0:
                            entry[2] = buf
                            continue
                        if not buf.startswith(b"HTTP/1.1 101 "):
                            raise BenchError(f"expected a 101, got {buf[:200]!r}")
                        sock.send(close)
                        entry[1] = 2
                        entry[2] = buf[end + 4 :]
                        continue
                elif data:
                    entry[2] += data
                    continue
                elif entry[2][:1] != b"\x88":
                    failures += 1
                    failure = failure or f"no close frame before the end: {entry[2]!r}"
                else:
                    done += 1
                del conns[fd]
                sock.close()
                if not stopping and started < maxCount:
                    start()
        epoll.close()
        return self._window(window, done, failures, failure)

    def _window(self, window: H.CpuWindow, count: int, failures: int, failure: str) -> dict[str, Any]:
        """A rate phase's result: C{count} done since C{window} opened, and who used the CPU."""
        usage = window.close()
        return {
            "count": count,
            "wall": usage.wall,
            "server_cpu": usage.server,
            "client_cpu": usage.generators,
            "other_cpu": usage.other,
            "failures": failures,
            "failure": failure,
        }

    def openMany(self, n: int, concurrency: int, maxSeconds: float = 60.0) -> list[socket.socket]:
        """C{n} upgraded, idle connections (their 101 read, nothing more)."""
        epoll = select.epoll()
        IN, OUT = select.EPOLLIN, select.EPOLLOUT
        conns: dict[int, list[Any]] = {}
        opened: list[socket.socket] = []
        started = 0
        deadline = time.monotonic() + maxSeconds

        def start() -> None:
            nonlocal started
            sock, sent = self._connect()
            conns[sock.fileno()] = [sock, sent, b""]
            epoll.register(sock.fileno(), IN if sent else OUT)
            started += 1

        for _ in range(min(n, concurrency)):
            start()
        while conns:
            if time.monotonic() > deadline:
                raise BenchError(f"opened only {len(opened)} of {n} connections in {maxSeconds} s")
            for fd, _events in epoll.poll(0.5):
                entry = conns[fd]
                sock = entry[0]
                if not entry[1]:
                    sock.send(self.request)
                    entry[1] = True
                    epoll.modify(fd, IN)
                    continue
                data = sock.recv(4096)
                if not data:
                    raise BenchError("connection closed during the handshake")
                entry[2] += data
                if b"\r\n\r\n" not in entry[2]:
                    continue
                head, _, rest = entry[2].partition(b"\r\n\r\n")
                self._check101(head)
                if rest:
                    raise BenchError(f"unexpected bytes after the 101: {rest!r}")
                epoll.unregister(fd)
                del conns[fd]
                opened.append(sock)
                if started < n:
                    start()
        epoll.close()
        return opened

    def closeMany(self, socks: Iterable[socket.socket], maxSeconds: float = 10.0) -> int:
        """Close handshake on every socket; the number the server closed cleanly."""
        epoll = select.epoll()
        conns: dict[int, socket.socket] = {}
        for sock in socks:
            try:
                sock.send(self.close)
            except OSError:
                sock.close()
                continue
            conns[sock.fileno()] = sock
            epoll.register(sock.fileno(), select.EPOLLIN)
        clean = 0
        deadline = time.monotonic() + maxSeconds
        while conns and time.monotonic() < deadline:
            for fd, _events in epoll.poll(0.5):
                sock = conns[fd]
                try:
                    data = sock.recv(65536)
                except ConnectionError:
                    data = b""
                if not data:
                    clean += 1
                    del conns[fd]
                    sock.close()
        for sock in conns.values():
            sock.close()
        epoll.close()
        return clean

    def echo(self, socks: list[socket.socket], size: int, maxCount: int, maxSeconds: float) -> dict[str, Any]:
        """Ping-pong one binary message of C{size} bytes on every connection."""
        payload = os.urandom(size)
        frame = maskedFrame(2, payload, self.key)
        want = serverFrame(2, payload)
        replyLen = len(want)
        epoll = select.epoll()
        IN, OUT = select.EPOLLIN, select.EPOLLOUT
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        # fd -> [sock, received, unsent view, first reply (checked) or None]
        conns: dict[int, list[Any]] = {}
        messages = sent = 0
        stopping = False

        def send(fd: int, entry: list[Any]) -> None:
            nonlocal sent
            sent += 1
            try:
                n = entry[0].send(frame)
            except BlockingIOError:
                n = 0
            if n < len(frame):
                entry[2] = memoryview(frame)[n:]
                epoll.modify(fd, IN | OUT)

        window = H.CpuWindow(self.server.pid)
        deadline = time.monotonic() + maxSeconds
        for sock in socks:
            fd = sock.fileno()
            entry: list[Any] = [sock, 0, None, bytearray()]
            conns[fd] = entry
            epoll.register(fd, IN)
            send(fd, entry)
        poll = epoll.poll
        while sent > messages:
            now = time.monotonic()
            if not stopping and (sent >= maxCount or now >= deadline):
                stopping = True
                grace = now + 10.0
            if stopping and now > grace:
                raise BenchError(f"{sent - messages} echoes never came back")
            for fd, events in poll(0.5):
                entry = conns[fd]
                sock = entry[0]
                if events & OUT and entry[2] is not None:
                    try:
                        n = sock.send(entry[2])
                    except BlockingIOError:
                        n = 0
                    rest = entry[2][n:]
                    if len(rest):
                        entry[2] = rest
                    else:
                        entry[2] = None
                        epoll.modify(fd, IN)
                if not events & (IN | select.EPOLLHUP | select.EPOLLERR):
                    continue
                try:
                    n = sock.recv_into(buf)
                except BlockingIOError:
                    continue
                if not n:
                    raise BenchError("the server closed an echo connection")
                received = entry[1] + n
                first = entry[3]
                if first is not None:
                    first += view[:n]
                if received < replyLen:
                    entry[1] = received
                    continue
                if received > replyLen:
                    raise BenchError(f"{received} bytes for a {replyLen}-byte echo")
                if first is not None:
                    if first != want:
                        raise BenchError(f"bad echo: {bytes(first[:40])!r}")
                    entry[3] = None
                entry[1] = 0
                messages += 1
                if not stopping:
                    send(fd, entry)
        epoll.close()
        return self._window(window, messages, 0, "")

    def idleRss(self, n: int) -> dict[str, Any]:
        """Server RSS growth per idle WebSocket connection, over C{n} of them."""
        time.sleep(0.3)
        before = self.serverRss()
        socks = self.openMany(n, OPEN_CONCURRENCY)
        time.sleep(0.5)
        after = self.serverRss()
        clean = self.closeMany(socks)
        return {
            "connections": len(socks),
            "rss_before": before,
            "rss_after": after,
            "per_connection": (after - before) / len(socks),
            "closed_cleanly": clean,
        }


def runClient(config: dict[str, Any]) -> dict[str, Any]:
    """All phases against one server; the results as a dict."""
    H.dieWithParent()
    H.raiseFileLimit(config["idle"] + 4096)
    client = Client(config["port"], config["server_pid"])
    client.verify()
    results: dict[str, Any] = {}
    client.handshakes(config["warmup"], 10.0, HANDSHAKE_CONCURRENCY)
    if config["idle"]:
        results["idle"] = client.idleRss(config["idle"])
    pyspy = None
    if config.get("profile"):
        os.kill(config["server_pid"], signal.SIGUSR1)
        time.sleep(0.3)
    if config.get("pyspy"):
        pyspy = subprocess.Popen(
            [
                *("py-spy", "record", "--pid", str(config["server_pid"]), "--rate", "250"),
                *("--format", "raw", "--output", config["pyspy"]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
    results["handshake"] = client.handshakes(
        config["handshake_count"], config["seconds"], HANDSHAKE_CONCURRENCY
    )
    if pyspy is not None:
        pyspy.send_signal(signal.SIGINT)
        pyspy.wait(30)
    if config.get("profile"):
        os.kill(config["server_pid"], signal.SIGUSR2)
    for name, size, count in (
        ("echo32", SMALL, config["echo_small_count"]),
        ("echo64k", LARGE, config["echo_large_count"]),
    ):
        if not count:
            continue
        socks = client.openMany(ECHO_CONNECTIONS, OPEN_CONCURRENCY)
        try:
            results[name] = client.echo(socks, size, count, config["seconds"])
        finally:
            client.closeMany(socks)
    return results


# ---------------------------------------------------------------------------
# Orchestration


_children: list[subprocess.Popen[Any]] = []


def _killChildren() -> None:
    for child in _children:
        if child.poll() is None:
            child.kill()
            child.wait(5)


def _onTerm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def missingDependency(kind: str) -> str | None:
    """Why server C{kind} cannot run here, or L{None}."""
    import importlib.util

    needs = {"twisted": ["wsproto"], "websockets": ["websockets"]}.get(kind, ["autobahn"])
    for module in needs:
        if importlib.util.find_spec(module) is None:
            extra = {"wsproto": "twisted[websocket]", "websockets": "txupgrade[test]"}.get(
                module, "txupgrade[websocket]"
            )
            return f"{module} is not installed (pip install '{extra}')"
    return None


def runOne(kind: str, config: dict[str, Any], profilePath: str | None = None) -> dict[str, Any]:
    """Start server C{kind}, run the client against it, stop the server."""
    server = H.ServerProcess(__file__, kind, profilePath=profilePath)
    _children.append(server.process)
    try:
        clientConfig = dict(config, port=server.port, server_pid=server.process.pid)
        print(f"  {kind}: pid {server.process.pid}, port {server.port}", file=sys.stderr, flush=True)
        client = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--client", json.dumps(clientConfig)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        _children.append(client)
        out, _ = client.communicate(timeout=config["client_timeout"])
        if client.returncode != 0:
            raise RuntimeError(f"the client failed against {kind} (exit {client.returncode})")
        results: dict[str, Any] = json.loads(out)
        server.waitProfile(10)
        results["server_output"] = server.extraOutput()
        results["reactor"] = server.reactor
        return results
    finally:
        server.stop()


def _rate(phase: dict[str, Any]) -> tuple[float, float]:
    """Per wall-clock second and per server CPU-second."""
    count = phase["count"]
    wall = count / phase["wall"] if phase["wall"] > 0 else math.nan
    cpu = count / phase["server_cpu"] if phase["server_cpu"] > 0 else math.nan
    return wall, cpu


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The median over rounds of each figure (rates recomputed from totals per round)."""
    out: dict[str, Any] = {}
    for phase in RATE_PHASES:
        rows = [r[phase] for r in rounds if phase in r]
        if not rows:
            continue
        rates = [_rate(row) for row in rows]
        out[phase] = {
            "wall_rate": statistics.median(r[0] for r in rates),
            "cpu_rate": statistics.median(r[1] for r in rates),
            "server_util": statistics.median(row["server_cpu"] / row["wall"] for row in rows),
            "client_util": statistics.median(row["client_cpu"] / row["wall"] for row in rows),
            "other_util": statistics.median(row["other_cpu"] / row["wall"] for row in rows),
            "count": sum(row["count"] for row in rows),
            "wall": sum(row["wall"] for row in rows),
            "failures": sum(row["failures"] for row in rows),
            "failure": next((row["failure"] for row in rows if row["failure"]), ""),
        }
    idle = [r["idle"] for r in rounds if "idle" in r]
    if idle:
        out["idle"] = {
            "per_connection": statistics.median(i["per_connection"] for i in idle),
            "connections": idle[0]["connections"],
            "rss_before": statistics.median(i["rss_before"] for i in idle),
        }
    out["server_output"] = "".join(r["server_output"] for r in rounds)
    out["reactor"] = rounds[0]["reactor"]
    return out


RATE_PHASES = ("handshake", "echo32", "echo64k")
METRICS = (
    # key, label, higher is better, goal for (a)/(b) per CPU-second
    ("handshake", "handshakes/s", True, 2.0),
    ("echo32", "echo 32 B msg/s", True, 1.0),
    ("echo64k", "echo 64 KiB msg/s", True, 1.0),
    ("idle", "idle RSS/conn", False, 1.0),
)


#: The ratios reported (numerator, denominator), by letter: txupgrade in code
#: against each peer, the peers against autobahn, and the daemon as shipped
#: against autobahn, the in-code site and websockets.
PAIRS = (("a", "b"), ("a", "c"), ("a", "d"), ("c", "b"), ("d", "b"), ("e", "b"), ("e", "a"), ("e", "f"))


def _figure(result: dict[str, Any], key: str, cpu: bool) -> float:
    if key not in result:
        return math.nan
    if key == "idle":
        return float(result["idle"]["per_connection"])
    return float(result[key]["cpu_rate" if cpu else "wall_rate"])


def summary(results: dict[str, dict[str, Any]], skipped: dict[str, str], config: dict[str, Any]) -> str:
    """The printed report."""
    import autobahn

    import twisted

    try:
        from autobahn.websocket.utf8validator import Utf8Validator

        nvx = "NVX" if "nvx" in Utf8Validator.__module__ else f"no NVX ({Utf8Validator.__module__})"
    except ImportError:
        nvx = "?"
    reactors = sorted({r.get("reactor", "?") for r in results.values()})
    lines = [
        "",
        "=== WebSocket echo benchmark (bench_websocket.py) ===",
        f"Python {platform.python_version()}, Twisted {twisted.__version__}, autobahn {autobahn.__version__}"
        f" ({nvx}), {', '.join(reactors)}, {os.cpu_count()} CPUs, rounds {config['rounds']}",
        "client: 1 process, epoll, raw RFC 6455 frames (masked once, before the clock). CPU columns:"
        " share of one core (other = every other process on the machine: see _harness.py).",
        "handshake = connect, GET /ws Upgrade, full 101 read, masked close(1000) sent, server close",
        f"  frame read, server closes TCP first; {HANDSHAKE_CONCURRENCY} in flight, "
        f"<= {config['handshake_count']} or {config['seconds']} s.",
        f"echo = {ECHO_CONNECTIONS} connections ping-ponging binary messages, "
        f"<= {config['echo_small_count']}/{config['echo_large_count']} msgs or {config['seconds']} s.",
        f"idle RSS = server RSS delta over {config['idle']} open idle connections / {config['idle']}.",
        "logging: no log observer; access log "
        + (
            "Twisted's default (logPath=None: formatted into the global log publisher)."
            if os.environ.get("BENCH_WS_ACCESS_LOG") == "default"
            else "off (Site.log is a no-op); autobahn debug off."
        ),
        "",
        "servers:",
    ]
    for kind in SERVERS:
        note = f"  SKIPPED: {skipped[kind]}" if kind in skipped else ""
        lines.append(f"  ({LETTERS[kind]}) {kind:<18} {LABELS[kind]}{note}")
    lines += [
        "",
        f"{'metric':<20}{'server':<22}{'per wall-s':>12}{'per CPU-s':>12}"
        f"{'server CPU':>12}{'client CPU':>12}{'other CPU':>11}{'n':>9}",
    ]
    for key, label, _higher, _goal in METRICS[:3]:
        for kind in SERVERS:
            row = results.get(kind, {}).get(key)
            if row is None:
                continue
            fail = f"  ({row['failures']} failed: {row['failure']})" if row["failures"] else ""
            lines.append(
                f"{label:<20}{f'({LETTERS[kind]}) {kind}':<22}{row['wall_rate']:>12,.0f}"
                f"{row['cpu_rate']:>12,.0f}{row['server_util']:>11.0%} {row['client_util']:>11.0%}"
                f"{row['other_util']:>10.0%} {row['count']:>8}{fail}"
            )
    for kind in SERVERS:
        idle = results.get(kind, {}).get("idle")
        if idle is not None:
            lines.append(
                f"{'idle RSS/conn':<20}{f'({LETTERS[kind]}) {kind}':<22}"
                f"{idle['per_connection'] / 1024:>10.1f} KiB"
                f"   (base RSS {idle['rss_before'] / 2**20:.1f} MiB, {idle['connections']} conns)"
            )
    others = [row["other_util"] for r in results.values() for k, row in r.items() if k in RATE_PHASES]
    note = H.otherLoadNote(others)
    if note:
        lines.append(note)
    lines += [
        "",
        "ratios per server CPU-second (idle RSS: per connection, lower is better); wall-clock in [ ]",
        f"{'metric':<20}{'(a)/(b)':>16}{'goal':>8}{'met':>5}{'(a)/(c)':>16}{'(a)/(d)':>16}"
        f"{'(c)/(b)':>16}{'(d)/(b)':>16}{'(e)/(b)':>16}{'(e)/(a)':>16}{'(e)/(f)':>16}",
    ]
    ratios: dict[str, dict[str, float]] = {}
    for key, label, higher, goal in METRICS:
        cells = []
        ratios[key] = {}
        for num, den in PAIRS:
            rn, rd = (
                results.get(SERVERS[LETTERS_ORDER.index(num)], {}),
                results.get(SERVERS[LETTERS_ORDER.index(den)], {}),
            )
            cpu = H.ratio(_figure(rn, key, True), _figure(rd, key, True))
            wall = H.ratio(_figure(rn, key, False), _figure(rd, key, False))
            ratios[key][f"{num}/{den}"] = cpu
            cell = H.fmtRatio(cpu) if key == "idle" else f"{H.fmtRatio(cpu)} [{H.fmtRatio(wall)}]"
            cells.append(cell)
        ab = ratios[key]["a/b"]
        met = "n/a" if math.isnan(ab) else ("yes" if (ab >= goal if higher else ab <= goal) else "NO")
        goalText = f"{'>=' if higher else '<='}{goal:.1f}x"
        lines.append(
            f"{label:<20}{cells[0]:>16}{goalText:>8}{met:>5}" + "".join(f"{cell:>16}" for cell in cells[1:])
        )
    printed = {kind: r["server_output"] for kind, r in results.items() if r["server_output"].strip()}
    lines.append("")
    if printed:
        for kind, text in printed.items():
            lines.append(f"server output after READY ({kind}), should be empty: {text[:500]!r}")
    else:
        lines.append("server output after READY: none from any server (no per-request logging).")
    config["ratios"] = {
        key: {pair: (None if math.isnan(v) else v) for pair, v in row.items()} for key, row in ratios.items()
    }
    return "\n".join(lines)


def printProfile(path: str, handshakes: int) -> None:
    """The server's cProfile, in microseconds per handshake."""
    stats = pstats.Stats(path)
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((ct, tt, nc, f"{_shortPath(filename)}:{line}({func})"))
    total = max((r[0] for r in rows), default=0.0)
    print(f"\n=== cProfile of the handshake phase: {handshakes} handshakes, cProfile-inflated times ===")
    print(f"{'cum us/hs':>10}{'own us/hs':>10}{'calls/hs':>10}  function")
    for ct, tt, nc, name in sorted(rows, reverse=True)[:45]:
        print(f"{ct / handshakes * 1e6:>10.1f}{tt / handshakes * 1e6:>10.1f}{nc / handshakes:>10.2f}  {name}")
    print(f"(total profiled {total:.2f} s)")
    print(f"\n{'own us/hs':>10}{'cum us/hs':>10}{'calls/hs':>10}  function (by own time)")
    for ct, tt, nc, name in sorted(rows, key=lambda r: r[1], reverse=True)[:30]:
        print(f"{tt / handshakes * 1e6:>10.1f}{ct / handshakes * 1e6:>10.1f}{nc / handshakes:>10.2f}  {name}")


def _shortPath(filename: str) -> str:
    for marker in ("site-packages/", "/main/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset")
    parser.add_argument("--rounds", type=int, default=None, help="fresh servers per kind (median)")
    parser.add_argument("--seconds", type=float, default=None, help="time limit of each rate phase")
    parser.add_argument("--idle", type=int, default=None, help="idle connections for the RSS phase")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--default-access-log",
        action="store_true",
        help="keep Twisted's default access log (logPath=None: lines go to the global log publisher)",
    )
    parser.add_argument("--profile", metavar="KIND", help="cProfile server KIND's handshake phase")
    parser.add_argument("--pyspy", metavar="FILE", help="py-spy the handshake phase (with --servers X)")
    parser.add_argument("--serve", metavar="KIND", help=argparse.SUPPRESS)
    parser.add_argument("--client", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve:
        serve(args.serve)
        return 0
    if args.client:
        print(json.dumps(runClient(json.loads(args.client))))
        return 0

    signal.signal(signal.SIGTERM, _onTerm)
    if args.default_access_log:
        os.environ["BENCH_WS_ACCESS_LOG"] = "default"
    quick = args.quick
    config: dict[str, Any] = {
        "rounds": args.rounds or (1 if quick else 3),
        "seconds": args.seconds or (0.5 if quick else 4.0),
        "idle": 200 if quick and args.idle is None else (args.idle if args.idle is not None else 2000),
        "warmup": 50 if quick else 300,
        "handshake_count": 1000 if quick else 20000,
        "echo_small_count": 2000 if quick else 200000,
        "echo_large_count": 500 if quick else 40000,
        "client_timeout": 120 if quick else 300,
        "profile": False,
        "pyspy": None,
    }
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in SERVERS]
    if unknown:
        parser.error(f"unknown servers {unknown}; choose from {', '.join(SERVERS)}")
    try:
        import psutil  # noqa: F401
    except ImportError:
        parser.error("psutil is needed (pip install psutil)")
    H.raiseFileLimit(config["idle"] + 4096)

    try:
        if args.profile:
            if args.profile not in SERVERS:
                parser.error(f"--profile takes one of {', '.join(SERVERS)}")
            path = os.path.join(tempfile.mkdtemp(prefix="bench-ws-"), f"{args.profile}.prof")
            profConfig = dict(config, idle=0, echo_small_count=0, echo_large_count=0, profile=True)
            result = runOne(args.profile, profConfig, profilePath=path)
            hs = result["handshake"]
            print(
                f"{args.profile}: {hs['count']} handshakes in {hs['wall']:.2f} s under cProfile "
                f"({hs['count'] / hs['server_cpu']:.0f} per CPU-s with the profiler on); stats in {path}"
            )
            printProfile(path, hs["count"])
            return 0
        if args.pyspy:
            pyConfig = dict(config, idle=0, echo_small_count=0, echo_large_count=0, pyspy=args.pyspy)
            for kind in kinds:
                result = runOne(kind, pyConfig)
                hs = result["handshake"]
                rate = hs["count"] / hs["server_cpu"]
                print(f"{kind}: {hs['count']} handshakes, {rate:.0f}/CPU-s; stacks in {args.pyspy}")
            return 0

        skipped = {k: why for k in SERVERS if (why := missingDependency(k)) is not None}
        skipped.update({k: "not selected (--servers)" for k in SERVERS if k not in kinds})
        perKind: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds if k not in skipped}
        for round_ in range(config["rounds"]):
            print(f"round {round_ + 1}/{config['rounds']}", file=sys.stderr, flush=True)
            for kind in perKind:
                perKind[kind].append(runOne(kind, config))
        results = {kind: combine(rounds) for kind, rounds in perKind.items()}
        print(summary(results, skipped, config))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"config": config, "results": results, "skipped": skipped}, f, indent=2)
        return 0
    finally:
        _killChildren()


if __name__ == "__main__":
    sys.exit(main())
