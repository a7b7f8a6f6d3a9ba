"""
What C{twistd txupgrade} costs per request beyond the bare channel, feature by
feature, against the peers an operator would compare it with.

Theory of operation
-------------------
Every server runs at once, each in its own process, on 127.0.0.1:

  - C{plain Site}: a plain C{twisted.web.server.Site} on the demo's
    resources (its access log formatted and published, as twisted.web does);
  - C{in-code}: an C{UpgradeSite} built in code on the same resources and
    protocols, no daemon (no tracking, no limits, log events discarded);
  - C{daemon}: a real C{twistd -n txupgrade} as shipped (its text log in a
    file), and the same daemon with one feature off in turn: C{--no-access-log},
    C{--request-head-timeout 0}, C{--allowed-host '*'} (no Host check), the
    connection lines off and the tracking off (both by a launcher that
    patches the tap before twistd runs: there is no option to turn them
    off), and with C{--metrics} on (it is off by default);
  - the peers: autobahn's own C{WebSocketServerFactory} (standalone), a raw
    Twisted TCP echo server, and the same with the backpressure txupgrade's
    C{echo} has (R17: the transport registered as its own producer, reading
    paused while the write buffer is full), so that the stream row compares
    like with like as well as with the bare echo; and the C{bare switch}
    (L{bareSwitchSite}): a plain C{Site} whose C{/echo} switches with a
    fixed C{101} and nothing else, the cheapest upgrade twisted.web allows,
    a floor for the C{echo} row.

The load, per kind, for C{--seconds} each, the kinds and servers alternating
round by round (C{--rounds}) so that a machine whose speed drifts treats
them alike:

  - C{get}: connect, C{GET /echo}, read the C{200} head, reset;
  - C{echo}: connect, C{GET /echo} with C{Upgrade: echo} and one byte behind
    it (echoed), read the C{101} head, reset;
  - C{ws}: a WebSocket handshake to C{/ws}, C{Sec-WebSocket-Accept} checked;
  - C{h2}: HTTP/2 by prior knowledge, C{h2load -c 10 -m 10} on C{/echo};
  - C{stream}: upgraded C{echo} connections (raw ones on the TCP echo
    server), 32-byte messages pipelined, echoed bytes counted.

C{get}, C{echo} and C{ws} are driven by C{hsload.c} (compiled at start:
about a tenth of the server's CPU per handshake), C{h2} by h2load, C{stream}
by a Python loop with deep pipelines. The figure is work per server
CPU-second (psutil), which the load generator sharing the two CPUs does not
distort the way a wall-clock rate would. Each feature's cost is the server
CPU microseconds per request it adds to the shipped daemon.

Paired with the socket figures, in memory: the Python function calls per
request through the in-code site and the daemon's stack
(L{callsPerRequest}; C{tests/test_call_budget.py} holds them to a budget),
and the CPU per connection through the daemon's stack with and without
its tracking (L{trackingInMemory}: the Python part of the C{- tracking}
row, free of the socket figures' noise), the CPU per connection of a plain
C{GET} and of an C{echo} switch through the bare switch, the in-code site
and the daemon's stack (L{echoInMemory}: the Python part of the C{echo} /
plain C{GET} ratio, layer by layer), and the CPU per pipelined read
after a switch against a bare echo protocol (L{streamInMemory}: the
Python part of the C{stream} row).

Run: C{python benchmarks/bench_daemon_cost.py} (about 6 minutes),
C{--quick} (a smoke run: the figures are noise), C{--json PATH} to keep the
results.
"""

from __future__ import annotations

import argparse
import base64
import collections
import functools
import hashlib
import io
import json
import os
import re
import select
import shutil
import socket
import statistics
import sys
import tempfile
import time
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_daemon as _daemon
from _harness import ServerProcess, Twistd, announce, cpuPerOperation, discardLogs, machineLine, runMeasured

KINDS = ("get", "echo", "ws", "h2", "stream")
_KEY = base64.b64encode(b"0123456789abcdef").decode()
_ACCEPT = base64.b64encode(
    hashlib.sha1((_KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
).decode()
_MESSAGE = 32

#: The daemon's configurations: (name, txupgrade options, what the launcher turns off).
DAEMONS: list[tuple[str, list[str], str]] = [
    ("daemon as shipped", [], ""),
    ("- access log", ["--no-access-log"], ""),
    ("- connection lines", [], "connection-lines"),
    ("- head timeout", ["--request-head-timeout", "0"], ""),
    ("- Host check", ["--allowed-host", "*"], ""),
    ("- tracking", [], "tracking"),
    ("+ metrics", ["--metrics", "tcp:0:interface=127.0.0.1"], ""),
]

#: What each peer server serves.
PEERS = {
    "plain Site": ("plain", ("get",)),
    "in-code": ("incode", ("get", "echo", "ws", "h2", "stream")),
    "autobahn": ("autobahn", ("ws",)),
    "raw TCP echo": ("rawecho", ("stream",)),
    "raw echo, backpressure": ("rawechobp", ("stream",)),
    "bare switch": ("bare", ("echo",)),
}


# -- servers --------------------------------------------------------------------------


def serve(kind: str) -> None:
    """Run the peer server C{kind} until SIGTERM."""
    from twisted.internet import reactor

    _harness_die()
    discardLogs()
    if kind == "autobahn":
        from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

        class Echo(WebSocketServerProtocol):
            def onMessage(self, payload: bytes, isBinary: bool) -> None:
                self.sendMessage(payload, isBinary)

        factory: Any = WebSocketServerFactory("ws://127.0.0.1")
        factory.protocol = Echo
    elif kind in ("rawecho", "rawechobp"):
        from twisted.internet.protocol import Factory

        factory = Factory.forProtocol(rawEcho(backpressure=kind == "rawechobp"))
    elif kind == "bare":
        factory = bareSwitchSite()
    else:
        from twisted.web import server

        from txupgrade.channel import UpgradeSite
        from txupgrade.daemon.demo import demoRoot
        from txupgrade.registry import ProtocolRegistry

        protocols = ProtocolRegistry.fromPlugins()
        root = demoRoot(protocols, webSocket=True)
        factory = server.Site(root) if kind == "plain" else UpgradeSite(root, protocols)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1", backlog=1024)  # type: ignore[attr-defined]
    announce(port.getHost().port, reactor)
    reactor.run()  # type: ignore[attr-defined]


def rawEcho(backpressure: bool) -> Any:
    """
    A bare Twisted echo protocol (the C{stream} peers); with C{backpressure},
    reading pauses while the write buffer is full, as txupgrade's C{echo} does (R17).
    """
    from twisted.internet.protocol import Protocol

    class RawEcho(Protocol):
        def connectionMade(self) -> None:
            if backpressure:
                self.transport.registerProducer(self.transport, True)  # type: ignore[union-attr]

        def dataReceived(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[union-attr]

    return RawEcho


def bareSwitchSite() -> Any:
    """
    The cheapest upgrade twisted.web allows (the C{bare switch} peer, a
    floor): a plain C{Site} on the demo's resources whose C{/echo} answers
    a request with an C{Upgrade} field with a fixed C{101} and hands the
    connection to a bare echo (L{rawEcho}), with only the handoff itself
    (the bytes behind the request, the channel released, the access line):
    no Upgrade parsing, no Host or framing checks, no negotiation, no
    tracking. Any other request gets the demo's C{/echo} page.
    """
    from twisted.web import server
    from twisted.web.resource import Resource

    from txupgrade import _twistedcompat
    from txupgrade.daemon.demo import demoRoot
    from txupgrade.registry import ProtocolRegistry

    head = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    echo = rawEcho(backpressure=False)

    root = demoRoot(ProtocolRegistry.fromPlugins(), webSocket=True)
    page = root.children[b"echo"]

    class BareSwitch(Resource):
        isLeaf = True

        def render(self, request: Any) -> Any:
            if not request.requestHeaders.hasHeader(b"upgrade"):
                return page.render(request)
            channel = request.channel
            trailing = _twistedcompat.takeTrailingData(channel)
            _twistedcompat.releaseChannel(channel)
            transport = channel.transport
            protocol = echo()
            transport.protocol._channel = protocol  # the channel's wrapper: the transport's protocol
            transport.write(head)
            request.code, request.sentLength = 101, 0
            channel.site.log(request)
            protocol.makeConnection(transport)
            if trailing:
                protocol.dataReceived(trailing)
            return server.NOT_DONE_YET

    root.putChild(b"echo", BareSwitch())
    return server.Site(root)


def _harness_die() -> None:
    from _harness import dieWithParent

    dieWithParent()


def untrack(site: Any) -> None:
    """Take the daemon's tracking off C{site}: its connections are the site's plain channel wrappers."""
    from txupgrade import _twistedcompat

    site.tracker = None
    site.connectionClass = _twistedcompat.ChannelWrapper


def launch(without: str, argv: list[str]) -> None:
    """C{twistd} with one of the daemon's features patched off (for the C{- X} rows)."""
    from twisted.scripts.twistd import run

    from txupgrade.daemon.tracking import ConnectionTracker

    if without == "connection-lines":
        ConnectionTracker.logClosed = lambda self, connection, duration: None  # type: ignore[method-assign]
    elif without == "tracking":
        track = ConnectionTracker.__init__

        def untracked(self: Any, site: Any, *args: Any, **kwargs: Any) -> None:
            track(self, site, *args, **kwargs)
            untrack(site)

        ConnectionTracker.__init__ = untracked  # type: ignore[method-assign]
    sys.argv = ["twistd", *argv]
    run()


class Server:
    """One server under load: its port and CPU seconds."""

    def __init__(self, name: str, port: int, cpu: Any, stop: Any) -> None:
        self.name, self.port, self.cpu, self.stop = name, port, cpu, stop


def startServers(directory: str) -> dict[str, Server]:
    """Every peer and daemon configuration, serving."""
    servers: dict[str, Server] = {}
    script = os.path.abspath(__file__)
    for name, (kind, _kinds) in PEERS.items():
        process = ServerProcess(script, kind)
        servers[name] = Server(name, process.port, process.cpu, process.stop)
    for name, extra, without in DAEMONS:
        command = [sys.executable, script, "--launch", without] if without else None
        daemon = Twistd(name, extra, directory, command=command)
        servers[name] = Server(name, daemon.port, daemon.cpu, daemon.stop)
    return servers


def kindsOf(name: str) -> tuple[str, ...]:
    """The kinds a server is measured on."""
    return PEERS[name][1] if name in PEERS else KINDS


# -- load -----------------------------------------------------------------------------


def requestFor(kind: str, port: int) -> tuple[bytes, str, str]:
    """The bytes, the text the first answer must hold, and its status line's start."""
    host = f"Host: 127.0.0.1:{port}\r\n"
    if kind == "get":
        return f"GET /echo HTTP/1.1\r\n{host}\r\n".encode(), "Content-Length", "HTTP/1.1 200 "
    if kind == "echo":
        upgrade = "Connection: Upgrade\r\nUpgrade: echo\r\n\r\nx"
        return f"GET /echo HTTP/1.1\r\n{host}{upgrade}".encode(), "Upgrade: echo", "HTTP/1.1 101 "
    ws = (
        f"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: {_KEY}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    return f"GET /ws HTTP/1.1\r\n{host}{ws}".encode(), f"Sec-WebSocket-Accept: {_ACCEPT}", "HTTP/1.1 101 "


def handshakes(binary: str, kind: str, port: int, seconds: float, concurrency: int) -> int:
    """C{hsload}: how many C{kind} requests were answered in C{seconds}."""
    request, expect, status = requestFor(kind, port)
    with tempfile.NamedTemporaryFile(prefix="hsload-", suffix=".request") as f:
        f.write(request)
        f.flush()
        done, _cpu = runMeasured(
            [binary, str(port), str(seconds), str(concurrency), f.name, expect, status], seconds + 60
        )
    match = re.fullmatch(r"handshakes (\d+) errors (\d+)\s*", done.stdout)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"{kind} on {port}: hsload failed: {done.stdout!r} {done.stderr[:400]!r}")
    return int(match.group(1))


def h2requests(port: int, seconds: float) -> int:
    """h2load by prior knowledge, C{-c 10 -m 10}, for about C{seconds}: requests answered."""
    total, deadline = 0, time.monotonic() + seconds
    count = 2000
    while time.monotonic() < deadline:
        started = time.monotonic()
        done, _ = runMeasured(
            ["h2load", "-n", str(count), "-c", "10", "-m", "10", f"http://127.0.0.1:{port}/echo"], 120
        )
        match = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", done.stdout)
        if match is None or int(match.group(2)) == 0:
            raise SystemExit(f"h2load on {port} failed: {done.stdout[-600:]!r}")
        total += int(match.group(2))
        elapsed = max(time.monotonic() - started, 1e-3)
        count = max(200, min(int(count / elapsed * 0.5), 200_000))
    return total


def streamMessages(port: int, seconds: float, upgrade: bool, connections: int = 4, depth: int = 256) -> int:
    """32-byte messages echoed in C{seconds} on C{connections} pipelines C{depth} deep."""
    socks = []
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        if upgrade:
            sock.sendall(requestFor("echo", port)[0][:-1])
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(4096)
            if not head.startswith(b"HTTP/1.1 101 "):
                raise SystemExit(f"stream on {port}: not a 101: {head[:200]!r}")
        sock.setblocking(False)
        socks.append(sock)
    burst = b"m" * (_MESSAGE * depth)
    received = dict.fromkeys(range(len(socks)), 0)
    poller = select.epoll()
    byFd = {}
    for index, sock in enumerate(socks):
        byFd[sock.fileno()] = index
        poller.register(sock.fileno(), select.EPOLLIN)
        sock.send(burst)
    owed = dict.fromkeys(range(len(socks)), 0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for fd, _events in poller.poll(0.2):
            index = byFd[fd]
            try:
                data = socks[index].recv(1 << 18)
            except BlockingIOError:
                continue
            received[index] += len(data)
            owed[index] += len(data)
            if owed[index] >= len(burst) // 2:
                try:
                    sent = socks[index].send(b"m" * owed[index])
                except BlockingIOError:
                    sent = 0
                owed[index] -= sent
    for sock in socks:
        sock.close()
    return sum(received.values()) // _MESSAGE


def measure(server: Server, kind: str, seconds: float, binary: str) -> dict[str, float]:
    """One window of C{kind} on C{server}: work done, server CPU, work per server CPU-second."""
    before, wall = server.cpu(), time.monotonic()
    if kind in ("get", "echo", "ws"):
        work = handshakes(binary, kind, server.port, seconds, 50)
    elif kind == "h2":
        work = h2requests(server.port, seconds)
    else:
        work = streamMessages(server.port, seconds, upgrade=not server.name.startswith("raw "))
    cpu = server.cpu() - before
    return {"work": work, "cpu": cpu, "wall": time.monotonic() - wall, "perCpu": work / cpu if cpu else 0.0}


# -- in memory ------------------------------------------------------------------------


GET_BYTES = b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
ECHO_BYTES = b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nx"
WS_BYTES = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + _KEY.encode() + b"\r\n\r\n"
)


def stackFactory(daemon: bool, reactor: Any) -> tuple[Any, Any]:
    """
    The factory a listener of C{twistd txupgrade} (defaults) holds, as the tap
    builds it, with its text log into memory, and what stops it; or
    (C{daemon} false) the in-code C{UpgradeSite} on the same resources.
    """
    from twisted.internet.error import ConnectionDone
    from twisted.logger import globalLogPublisher, textFileLogObserver
    from twisted.python.failure import Failure

    from txupgrade.daemon.logs import BatchedOutput, LineLog
    from txupgrade.tap import Options, buildService, makeSite

    options = Options()
    options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1"])
    if not daemon:
        site = makeSite(options.settings, options.protocols)
        site.startFactory()
        return site, site.stopFactory
    service = buildService(options.settings, options.protocols, reactor)
    # Batched as in a running daemon (BatchedOutput writes each line at once
    # while the reactor is not running), into a file that keeps nothing.
    output = BatchedOutput(_Discard(), _Running(reactor))
    observer = textFileLogObserver(output)
    globalLogPublisher.addObserver(observer)
    service.lineLog = LineLog(output, reactor)
    service.startService()
    # A loaded daemon always has other connections open: one that has read
    # its request keeps the tracker's request-head timer, which the last
    # connection's close would otherwise cancel every time.
    other, _transport = connectInMemory(service.site)
    other.dataReceived(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")

    def stop() -> None:
        globalLogPublisher.removeObserver(observer)
        output.writeNow()
        for port in service.ports:
            port.stopListening()
        # Connections a caller left open (in memory) are closed, as their
        # transports would close them: the tracker's timers go with the last.
        for connection in list(service.tracker.connections):
            connection.connectionLost(Failure(ConnectionDone()))

    return service.site, stop


class _Discard(io.StringIO):
    """A text file that keeps nothing."""

    def write(self, text: str) -> int:
        return len(text)


class _Running:
    """C{reactor}, saying it runs (L{stackFactory}'s log output batches as a running daemon's)."""

    running = True

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def connectInMemory(factory: Any) -> tuple[Any, Any]:
    """A connection of C{factory} from 127.0.0.1:40000 on an in-memory transport: protocol, transport."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    protocol = factory.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer, hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
    transport.protocol = protocol  # as a TCP transport holds its protocol
    protocol.makeConnection(transport)
    return protocol, transport


def serveOnce(factory: Any, data: bytes) -> bytes:
    """Serve C{data} on one in-memory connection of C{factory}, open to close: what it answered."""
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    protocol, transport = connectInMemory(factory)
    protocol.dataReceived(data)
    protocol.connectionLost(Failure(ConnectionDone()))
    return bytes(transport.value())


def serveTurn(factory: Any, data: bytes, reactor: Any) -> bytes:
    """
    L{serveOnce}, then the C{reactor}'s turn (C{runUntilCurrent}), as a
    running reactor takes one after each read: the timers the connection set
    and cancelled are dropped. Without it (the reactor is not running) they
    pile up, three a request, and the collector's full runs over them cost
    more than the request itself.
    """
    answer = serveOnce(factory, data)
    reactor.runUntilCurrent()
    return answer


def callsPerRequest(factory: Any, data: bytes) -> tuple[int, bytes]:
    """Python function calls to serve C{data} on one connection of C{factory}, open to close."""

    def once() -> bytes:
        return serveOnce(factory, data)

    for _ in range(3):  # caches, lazy imports
        once()
    calls = collections.Counter[str]()

    def count(frame: Any, event: str, arg: object) -> None:
        if event == "call":
            calls["python"] += 1

    sys.setprofile(count)
    try:
        answer = once()
    finally:
        sys.setprofile(None)
    return calls["python"], answer


def inMemory() -> dict[str, dict[str, int]]:
    """Calls per request, in-code site and daemon stack, for a GET, an echo switch, a WebSocket handshake."""
    from twisted.internet import reactor

    result: dict[str, dict[str, int]] = {}
    for name, daemon in (("in-code", False), ("daemon", True)):
        factory, stop = stackFactory(daemon, reactor)
        try:
            result[name] = {
                kind: callsPerRequest(factory, data)[0]
                for kind, data in (("get", GET_BYTES), ("echo", ECHO_BYTES), ("ws", WS_BYTES))
            }
        finally:
            stop()
    return result


def trackingInMemory(rounds: int, iterations: int) -> dict[str, dict[str, float]]:
    """
    CPU microseconds per connection in memory through the daemon's stack,
    tracked (as shipped) and untracked (as the C{- tracking} row's launcher
    builds it), the two alternating round by round: the Python part of
    what tracking costs on sockets. Medians over C{rounds}.
    """
    from twisted.internet import reactor

    stacks = {"tracked": stackFactory(True, reactor), "untracked": stackFactory(True, reactor)}
    untrack(stacks["untracked"][0])
    kinds = (("get", GET_BYTES), ("echo", ECHO_BYTES), ("ws", WS_BYTES))
    perRound: dict[str, dict[str, list[float]]] = {name: {kind: [] for kind, _ in kinds} for name in stacks}
    try:
        for _round in range(rounds):
            for kind, data in kinds:
                for name, (factory, _stop) in stacks.items():
                    once = functools.partial(serveTurn, factory, data, reactor)
                    once()  # caches, lazy imports
                    seconds = cpuPerOperation(once, iterations)
                    perRound[name][kind].append(seconds * 1e6)
    finally:
        for _factory, stop in stacks.values():
            stop()
    return {
        name: {kind: statistics.median(v) for kind, v in byKind.items()} for name, byKind in perRound.items()
    }


def streamInMemory(rounds: int, iterations: int) -> dict[str, float]:
    """
    CPU microseconds per read of a pipelined stream (C{_MESSAGE} bytes times
    256, echoed) in memory: on a switched C{echo} connection of the daemon's
    stack and of the in-code site, and on a bare Twisted echo protocol. The
    Python part of the C{stream} row, free of the load generator's noise.
    Medians over C{rounds}.
    """
    from twisted.internet import reactor
    from twisted.internet.error import ConnectionDone
    from twisted.internet.protocol import Factory
    from twisted.python.failure import Failure

    chunk = b"m" * (_MESSAGE * 256)
    connections: dict[str, tuple[Any, Any]] = {}
    stacks = {"daemon": stackFactory(True, reactor), "in-code": stackFactory(False, reactor)}
    try:
        for name, (factory, _stop) in stacks.items():
            protocol, transport = connectInMemory(factory)
            protocol.dataReceived(ECHO_BYTES)
            if not transport.value().startswith(b"HTTP/1.1 101 "):
                raise SystemExit(f"stream in memory ({name}): not a 101: {transport.value()[:200]!r}")
            connections[name] = protocol, transport
        connections["raw echo"] = connectInMemory(Factory.forProtocol(rawEcho(backpressure=False)))
        perRound: dict[str, list[float]] = {name: [] for name in connections}
        for _round in range(rounds):
            for name, (protocol, transport) in connections.items():

                def once(protocol: Any = protocol, transport: Any = transport) -> None:
                    protocol.dataReceived(chunk)
                    transport.clear()

                perRound[name].append(cpuPerOperation(once, iterations) * 1e6)
        for name in stacks:
            connections[name][0].connectionLost(Failure(ConnectionDone()))
    finally:
        for _factory, stop in stacks.values():
            stop()
    return {name: statistics.median(values) for name, values in perRound.items()}


def echoInMemory(rounds: int, iterations: int) -> dict[str, float]:
    """
    CPU microseconds per connection in memory, each request on its own
    connection, open to close: a plain C{Site}'s C{GET /echo}, and an
    C{echo} switch through the L{bareSwitchSite} (the floor), the in-code
    site and the daemon's stack. The Python part of the C{echo} / plain
    C{GET} ratio, and how far each layer is above the floor. Events are
    published to an observer that drops them, as in the socket peers; the
    daemon's stack (whose text observer would also format the others'
    events) is built for its own turn in each round. Medians over C{rounds}.
    """
    from twisted.internet import reactor

    discardLogs()
    plain = bareSwitchSite()
    plain.startFactory()
    inCode, stopInCode = stackFactory(False, reactor)
    peers = {
        "plain Site GET": (plain, GET_BYTES),
        "bare switch echo": (plain, ECHO_BYTES),
        "in-code echo": (inCode, ECHO_BYTES),
    }
    answers = {"plain Site GET": b"HTTP/1.1 200 ", "bare switch echo": b"HTTP/1.1 101 "}
    for name, (factory, data) in peers.items():
        answer = serveTurn(factory, data, reactor)
        if not answer.startswith(answers.get(name, b"HTTP/1.1 101 ")):
            raise SystemExit(f"{name} in memory: {answer[:200]!r}")
    perRound: dict[str, list[float]] = {name: [] for name in [*peers, "daemon echo"]}
    try:
        for _round in range(rounds):
            for name, (factory, data) in peers.items():
                once = functools.partial(serveTurn, factory, data, reactor)
                once()
                perRound[name].append(cpuPerOperation(once, iterations) * 1e6)
            daemon, stopDaemon = stackFactory(True, reactor)
            try:
                once = functools.partial(serveTurn, daemon, ECHO_BYTES, reactor)
                once()
                perRound["daemon echo"].append(cpuPerOperation(once, iterations) * 1e6)
            finally:
                stopDaemon()
    finally:
        stopInCode()
        plain.stopFactory()
    return {name: statistics.median(values) for name, values in perRound.items()}


# -- report ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="What each part of twistd txupgrade costs per request.")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each window")
    parser.add_argument("--rounds", type=int, default=2, help="windows per server and kind")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--quick", action="store_true", help="smoke run: short, figures are noise")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 0.3, 1
    kinds = [k for k in args.kinds.split(",") if k]
    if shutil.which("h2load") is None and "h2" in kinds:
        raise SystemExit("h2load is needed (Debian nghttp2-client; bash .ci/install installs it)")
    directory = tempfile.mkdtemp(prefix="txupgrade-bench-cost-")
    binary = _daemon.compileGenerator(directory)
    if binary is None:
        raise SystemExit("a C compiler is needed to build benchmarks/hsload.c")
    print(f"=== twistd txupgrade, feature by feature: work per server CPU-second; {machineLine()}")
    memory = inMemory()
    for kind in ("get", "echo", "ws"):
        print(
            f"in memory, Python calls per {kind}: in-code {memory['in-code'][kind]}, "
            f"daemon {memory['daemon'][kind]} ({memory['daemon'][kind] / memory['in-code'][kind]:.2f}x)"
        )
    cpu = trackingInMemory(args.rounds * 3, 50 if args.quick else 2000)
    for kind in ("get", "echo", "ws"):
        tracked, untracked = cpu["tracked"][kind], cpu["untracked"][kind]
        print(
            f"in memory, CPU us per {kind} through the daemon's stack: {tracked:.1f} tracked, "
            f"{untracked:.1f} untracked (tracking {tracked - untracked:+.1f})"
        )
    stream = streamInMemory(args.rounds * 3, 200 if args.quick else 20000)
    print(
        "in memory, CPU us per pipelined read after the switch: "
        + ", ".join(f"{name} {value:.2f}" for name, value in stream.items())
        + f" (daemon/raw echo {stream['daemon'] / stream['raw echo']:.2f}x the CPU)"
    )
    echo = echoInMemory(args.rounds * 3, 50 if args.quick else 2000)
    print(
        "in memory, CPU us per connection: "
        + ", ".join(f"{name} {value:.1f}" for name, value in echo.items())
        + f" (plain Site GET / daemon echo {echo['plain Site GET'] / echo['daemon echo']:.2f}x, "
        f"/ bare switch {echo['plain Site GET'] / echo['bare switch echo']:.2f}x)"
    )
    servers = startServers(directory)
    samples: dict[str, dict[str, list[dict[str, float]]]] = {}
    try:
        for _round in range(args.rounds):
            for kind in kinds:
                for name, server in servers.items():
                    if kind in kindsOf(name):
                        sample = measure(server, kind, args.seconds, binary)
                        samples.setdefault(name, {}).setdefault(kind, []).append(sample)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    rates = {
        name: {
            kind: sum(s["work"] for s in got) / max(sum(s["cpu"] for s in got), 1e-9)
            for kind, got in byKind.items()
        }
        for name, byKind in samples.items()
    }
    print(f"{'server':<22}" + "".join(f"{kind:>12}" for kind in kinds))
    for name in rates:
        print(
            f"{name:<22}"
            + "".join(f"{rates[name][k]:>12,.0f}" if k in rates[name] else f"{'-':>12}" for k in kinds)
        )
    shipped = rates["daemon as shipped"]
    print("feature costs, server CPU microseconds per request added to the shipped daemon:")
    for name, _extra, _without in DAEMONS[1:]:
        parts = []
        for kind in kinds:
            if kind in shipped and rates[name].get(kind):
                cost = 1e6 / shipped[kind] - 1e6 / rates[name][kind]
                parts.append(f"{kind} {cost if name[0] == '-' else -cost:+.1f}")
        print(f"  {name[2:]:<18} " + ", ".join(parts))
    ratios = {f"daemon/in-code {k}": shipped[k] / rates["in-code"][k] for k in kinds if k in shipped}
    if "echo" in kinds and "get" in kinds:
        ratios["daemon echo / plain Site GET"] = shipped["echo"] / rates["plain Site"]["get"]
        ratios["in-code echo / plain Site GET"] = rates["in-code"]["echo"] / rates["plain Site"]["get"]
        bare = rates["bare switch"]["echo"]
        ratios["bare switch echo / plain Site GET"] = bare / rates["plain Site"]["get"]
    if "ws" in kinds:
        ratios["daemon ws / autobahn ws"] = shipped["ws"] / rates["autobahn"]["ws"]
    if "stream" in kinds:
        ratios["daemon stream / raw TCP echo"] = shipped["stream"] / rates["raw TCP echo"]["stream"]
        ratios["in-code stream / raw TCP echo"] = rates["in-code"]["stream"] / rates["raw TCP echo"]["stream"]
        ratios["daemon stream / raw echo, backpressure"] = (
            shipped["stream"] / rates["raw echo, backpressure"]["stream"]
        )
    goals = {
        "daemon echo / plain Site GET": ">= 0.9",
        "daemon ws / autobahn ws": ">= 2.0",
        "daemon stream / raw TCP echo": ">= 0.95",
    }
    for label, value in ratios.items():
        goal = goals.get(label, ">= 0.9" if label.startswith("daemon/in-code") else "")
        print(f"ratio {label}: {value:.2f}x" + (f" (goal {goal})" if goal else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "rates": rates,
                    "ratios": ratios,
                    "memory": memory,
                    "memoryCpu": cpu,
                    "memoryStream": stream,
                    "memoryEcho": echo,
                    "samples": samples,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
    elif len(sys.argv) > 2 and sys.argv[1] == "--launch":
        launch(sys.argv[2], sys.argv[3:])
    else:
        raise SystemExit(main())
