"""
WebSocket over HTTP/2 (RFC 8441 extended CONNECT) against WebSocket over
HTTP/1.1, in the daemon as shipped, in code, and in hypercorn.

Usage::

    python benchmarks/bench_h2_websocket.py            # about 4 minutes: the figures
    python benchmarks/bench_h2_websocket.py --quick    # under a minute, smoke only

Theory of operation
-------------------
Three servers, each its own process on 127.0.0.1, serve a WebSocket echo at
C{/ws}, on HTTP/1.1 (C{Upgrade: websocket}) and on HTTP/2 by prior knowledge
(C{CONNECT} with C{:protocol websocket}, RFC 8441 §5):

  - B{twistd}: C{twistd -n txupgrade} as an operator runs it (the demo site,
    its access log, tracking and limits; extended CONNECT is on by default);
  - B{in-code}: C{UpgradeSite(root, [EchoUpgrade()], extendedConnect=True)}
    with the demo's echo (C{webSocketEchoFactory}) at C{/ws} in a
    C{WebSocketEndpoint}, access log off, log events discarded; C{echo} is in
    the site's protocols as in the daemon, since a site offers extended
    CONNECT only when one of I{its} protocols can live on a stream;
  - B{hypercorn} 0.18: a minimal ASGI WebSocket echo, one asyncio worker,
    logs off (it sends C{SETTINGS_ENABLE_CONNECT_PROTOCOL} on every HTTP/2
    connection, cleartext prior knowledge included, so no TLS is needed).

The load generator is C{h2ws_load.js} (Node's built-in C{http2} and C{net},
frames masked once before the clock), a process of its own with 100
WebSockets in flight: over ONE HTTP/2 connection, or over 100 HTTP/1.1
connections. It warms up, says it is ready, and counts what completes
between the driver's C{go} and the end of the window; the driver reads the
server's CPU (psutil, user + system), the generator's and the machine's
around it (C{_harness.CpuWindow}). Figures, per server CPU-second:

  1. B{handshakes}: a new WebSocket (h2: a new stream; h1: a new
     connection), the C{200}/C{101}, a masked Close (1000), the server's
     Close and the end (h2: both END_STREAMs; h1: the server closes TCP);
  2. B{echoes}: 100 established WebSockets ping-ponging a 32-byte binary
     message each.

Each figure is taken in alternating rounds (the servers in turn, the order
reversed every round); the summary gives medians and per-round ratio ranges.

  3. B{idle memory}: a fresh server of each txupgrade kind, per transport:
     server RSS before and after opening N idle WebSockets (h2: on
     N / SETTINGS_MAX_CONCURRENT_STREAMS connections, 100 streams each, the
     servers' limit), divided by N.

Last, B{in memory}: the Python work of 100 WebSocket handshakes and closes
on one HTTP/2 connection against 100 on their own HTTP/1.1 connections,
in-code site, no sockets (C{_harness.alternatingRounds}).

Goals (the issue): twistd over h2 >= 1.5x hypercorn over h2 on handshakes
and on echoes; idle RSS per WebSocket on h2 <= 0.5x that on h1. None is
asserted: the smoke test only checks that the table is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

if __package__ in (None, ""):
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [here, os.path.dirname(here)]

import _harness as H

LOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "h2ws_load.js")
SERVERS = ("twistd", "in-code", "hypercorn")
TRANSPORTS = ("h2", "h1")
#: WebSockets in flight, on one HTTP/2 connection or on as many HTTP/1.1 ones.
CONCURRENCY = 100
SIZE = 32


# ---------------------------------------------------------------------------
# Servers


def serveInCode() -> None:
    """The in-code server: an UpgradeSite with the demo's WebSocket echo at /ws."""

    def makeSite() -> Any:
        from twisted.web.resource import Resource

        from txupgrade import UpgradeSite
        from txupgrade.daemon.demo import webSocketEchoFactory
        from txupgrade.protocols.echo import EchoUpgrade
        from txupgrade.protocols.websocket import WebSocketEndpoint

        root = Resource()
        root.putChild(b"ws", WebSocketEndpoint(webSocketEchoFactory()))
        return UpgradeSite(root, [EchoUpgrade()], extendedConnect=True)

    H.serveSite(makeSite)


async def _echoApp(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A minimal ASGI WebSocket echo, the lifespan acknowledged."""
    if scope["type"] == "lifespan":
        await H.asgiLifespan(receive, send)
        return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        if message.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
        else:
            await send({"type": "websocket.send", "text": message["text"]})


def serveHypercorn() -> None:
    """The hypercorn server: the ASGI echo, one worker, asyncio, logs off."""
    H.serveHypercorn(_echoApp, errorlog=os.environ.get("BENCH_HYPERCORN_ERRORLOG"))


SERVE = {"in-code": serveInCode, "hypercorn": serveHypercorn}


@dataclass
class Server:
    """One server under load: where it listens, whose CPU and RSS count, how it stops."""

    name: str
    port: int
    pid: int
    stop: Callable[[], None]
    troubles: Callable[[], str]

    def rss(self) -> int:
        import psutil

        return int(psutil.Process(self.pid).memory_info().rss)


def startServer(name: str, directory: str, label: str = "load") -> Server:
    """Server C{name}, serving (twistd: as shipped, its log C{twistd-LABEL.log} in C{directory})."""
    if name == "twistd":
        daemon = H.Twistd(f"twistd-{label}", [], directory)
        if daemon.workers:
            raise SystemExit("the daemon must serve in one process here")

        def daemonTroubles() -> str:
            return "\n".join(daemon.tracebacks())

        return Server(name, daemon.port, daemon.process.pid, daemon.stop, daemonTroubles)
    process = H.ServerProcess(__file__, name)
    return Server(name, process.port, process.pid, process.stop, process.extraOutput)


# ---------------------------------------------------------------------------
# The load generator


class Generator:
    """C{node h2ws_load.js CONFIG}: its JSON lines out, its words in."""

    def __init__(self, node: str, config: dict[str, Any]) -> None:
        self.process = subprocess.Popen(
            [node, LOAD, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=H.dieWithParent,
        )
        self.pid = self.process.pid
        self._buffer = b""

    def line(self, timeout: float) -> dict[str, Any]:
        """Its next JSON line; an error line, an exit or a timeout stops the benchmark."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.kill()
                raise H.BadAnswer(f"the load generator said nothing for {timeout} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise H.BadAnswer(f"the load generator exited: {self._buffer!r} {err[-2000:]}")
            self._buffer += chunk
        text, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(text)
        if "error" in message:
            self.kill()
            raise H.BadAnswer(f"load generator: {message['error']}")
        return message

    def say(self, word: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(word.encode() + b"\n")
        self.process.stdin.flush()

    def wait(self) -> None:
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@dataclass
class Settings:
    """What one run measures."""

    node: str
    seconds: float
    rounds: int
    warmup: int
    idle: int
    maxCount: int = 1_000_000


def measure(server: Server, mode: str, transport: str, settings: Settings) -> dict[str, float]:
    """One window of C{mode} over C{transport} against C{server}: its figures."""
    config = {
        "mode": mode,
        "transport": transport,
        "port": server.port,
        "path": "/ws",
        "concurrency": CONCURRENCY,
        "seconds": settings.seconds,
        "maxCount": settings.maxCount,
        "warmup": settings.warmup,
        "size": SIZE,
    }
    generator = Generator(settings.node, config)
    try:
        generator.line(60)
        window = H.CpuWindow(server.pid, [generator.pid])
        generator.say("go")
        result = generator.line(settings.seconds + 30)
        usage = window.close()
    finally:
        generator.wait()
    if result["failures"]:
        raise H.BadAnswer(
            f"{server.name} {mode} {transport}: {result['failures']} failed: {result['failure']}"
        )
    return H.windowFigures(result["done"], usage, count=result["done"])


def loadRounds(
    servers: dict[str, Server], settings: Settings
) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Every (mode, transport), the servers taking turns, the order reversed each round."""
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for mode in ("handshake", "echo"):
        for transport in TRANSPORTS:
            key = f"{mode} {transport}"
            results[key] = {name: [] for name in servers}
            for index in range(settings.rounds):
                order = list(servers) if index % 2 == 0 else list(reversed(servers))
                for name in order:
                    figures = measure(servers[name], mode, transport, settings)
                    results[key][name].append(figures)
                    H.say(H.figuresLine(key, 12, name, figures))
    return results


def idleMemory(name: str, transport: str, settings: Settings, directory: str) -> dict[str, Any]:
    """RSS per idle WebSocket over C{transport}, on a fresh server C{name}."""
    server = startServer(name, directory, f"idle-{transport}")
    try:
        warm = Generator(settings.node, _idleConfig(server, transport, min(CONCURRENCY, settings.idle)))
        warm.line(60)
        warm.say("close")
        warm.line(30)
        warm.wait()
        time.sleep(0.5)
        before = server.rss()
        generator = Generator(settings.node, _idleConfig(server, transport, settings.idle))
        try:
            opened = generator.line(120)
            time.sleep(1.0)
            after = server.rss()
            generator.say("close")
            generator.line(30)
        finally:
            generator.wait()
        troubles = server.troubles()
    finally:
        server.stop()
    per = (after - before) / settings.idle
    H.say(
        f"  {name:10} {transport}: server RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB with"
        f" {opened['open']:,} idle WebSockets on {opened['connections']:,} connections:"
        f" {per / 1024:.2f} KiB each"
    )
    return {
        "perSocket": per,
        "before": before,
        "after": after,
        "connections": opened["connections"],
        "troubles": troubles,
    }


def _idleConfig(server: Server, transport: str, count: int) -> dict[str, Any]:
    return {
        "mode": "idle",
        "transport": transport,
        "port": server.port,
        "path": "/ws",
        "concurrency": CONCURRENCY,
        "count": count,
        "seconds": 60,
    }


# ---------------------------------------------------------------------------
# In memory

#: A masked Close frame (1000), as a client sends it, and the server's answer.
_MASK = b"\x01\x02\x03\x04"
CLOSE = b"\x88\x82" + _MASK + bytes(b ^ _MASK[i % 4] for i, b in enumerate(b"\x03\xe8"))
SERVER_CLOSE = b"\x88\x02\x03\xe8"
STREAMS = 100


def _memorySite() -> Any:
    """The in-code site on a C{Clock}, autobahn's handshake timers off (they would use the global reactor)."""
    from twisted.internet.task import Clock
    from twisted.web.resource import Resource

    from txupgrade import UpgradeSite
    from txupgrade.daemon.demo import webSocketEchoFactory
    from txupgrade.protocols.echo import EchoUpgrade
    from txupgrade.protocols.websocket import WebSocketEndpoint

    factory = webSocketEchoFactory()
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
    root = Resource()
    root.putChild(b"ws", WebSocketEndpoint(factory))
    site = UpgradeSite(root, [EchoUpgrade()], reactor=Clock(), extendedConnect=True)
    site.log = lambda request: None  # type: ignore[method-assign]
    return site


def _h2Segments() -> tuple[bytes, bytes, bytes]:
    """What a client sends for C{STREAMS} WebSockets on one connection: CONNECTs, Closes, END_STREAMs."""
    import h2.config
    import h2.connection

    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
    )
    client.initiate_connection()
    ids = [1 + 2 * i for i in range(STREAMS)]
    for streamID in ids:
        headers = [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "http"),
            (":path", "/ws"),
            (":authority", "127.0.0.1:8080"),
            ("sec-websocket-version", "13"),
        ]
        client.send_headers(streamID, headers)
    opened = client.data_to_send()
    for streamID in ids:
        client.send_data(streamID, CLOSE)
    closes = client.data_to_send()
    for streamID in ids:
        client.end_stream(streamID)
    return opened, closes, client.data_to_send()


def inMemory(iterations: int, rounds: int) -> dict[str, Any]:
    """CPU per WebSocket (handshake + close): C{STREAMS} on one HTTP/2 connection vs one connection each."""
    from txupgrade.protocols.websocket import acceptKey

    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    handshake = (
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    h2Once = H.memoryConnection(_memorySite(), *_h2Segments())
    h1One = H.memoryConnection(_memorySite(), handshake, CLOSE)
    written = h2Once()
    if written.count(SERVER_CLOSE) != STREAMS:
        raise H.BadAnswer(f"h2 in memory: {written.count(SERVER_CLOSE)} Close frames of {STREAMS}")
    head, _, rest = h1One().partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101 ") or acceptKey(key) not in head or rest != SERVER_CLOSE:
        raise H.BadAnswer(f"h1 in memory: {head!r} {rest!r}")

    def h1Once() -> None:
        for _ in range(STREAMS):
            h1One()

    kinds: dict[str, Callable[[], object]] = {"h2": h2Once, "h1": h1Once}
    result = H.alternatingRounds(kinds, iterations, rounds)
    return {
        "perSocket": {kind: result.median(kind) / STREAMS for kind in kinds},
        "rounds": {kind: [value / STREAMS for value in values] for kind, values in result.perRound.items()},
        "other": result.other,
    }


# ---------------------------------------------------------------------------
# Report


@dataclass
class Row:
    """One summary row: a figure, ours and the peer's, their ratio, its per-round range and the goal."""

    figure: str
    ours: str
    peer: str
    ratio: float
    spread: str
    goal: tuple[str, float] | None

    def line(self) -> str:
        if self.goal is None:
            goal, verdict = "none", "n/a"
        else:
            sign, value = self.goal
            met = self.ratio >= value if sign == ">=" else self.ratio <= value
            goal = f"{sign} {value:.2f}"
            verdict = "n/a" if not math.isfinite(self.ratio) else ("met" if met else "MISSED")
        cells = [self.figure, self.ours, self.peer, f"{self.ratio:.3f}", self.spread, goal, verdict]
        return "| " + " | ".join(cells) + " |"


def rateRows(load: dict[str, dict[str, list[dict[str, float]]]]) -> list[Row]:
    """The rows of the rate figures: h2 vs h1 for each server, then each txupgrade vs hypercorn on h2."""
    rows = []

    def compare(figure: str, ours: list[float], theirs: list[float], goal: tuple[str, float] | None) -> None:
        a, b = statistics.median(ours), statistics.median(theirs)
        rows.append(
            Row(
                figure,
                f"{H.fmt(a)}/CPU-s",
                f"{H.fmt(b)}/CPU-s",
                H.ratio(a, b),
                H.ratioRange(ours, theirs),
                goal,
            )
        )

    for mode, label in (("handshake", "handshakes (open + close)"), ("echo", f"echoes of {SIZE} B")):
        for name in load[f"{mode} h2"]:
            h2 = [r["perCpu"] for r in load[f"{mode} h2"][name]]
            h1 = [r["perCpu"] for r in load[f"{mode} h1"][name]]
            compare(
                f"{label} per server CPU-s, {name}: h2 (1 conn) vs h1 ({CONCURRENCY} conns)", h2, h1, None
            )
        theirs = [r["perCpu"] for r in load[f"{mode} h2"]["hypercorn"]]
        for name in ("twistd", "in-code"):
            ours = [r["perCpu"] for r in load[f"{mode} h2"][name]]
            compare(f"{label} per server CPU-s over h2, {name} vs hypercorn", ours, theirs, (">=", 1.5))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", choices=sorted(SERVE), help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke test, not figures")
    parser.add_argument("--seconds", type=float, default=None, help="length of each window")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds per figure")
    parser.add_argument("--idle", type=int, default=None, help="idle WebSockets for the memory figure")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.serve:
        H.dieWithParent()
        H.raiseFileLimit()
        SERVE[args.serve]()
        return 0
    node = shutil.which("node")
    if node is None:
        parser.error("node is needed (the load generator is h2ws_load.js)")
    settings = Settings(
        node=node,
        seconds=args.seconds or (0.5 if args.quick else 3.0),
        rounds=args.rounds or (1 if args.quick else 3),
        warmup=100 if args.quick else 500,
        idle=args.idle or (200 if args.quick else 1000),
    )
    H.raiseFileLimit(settings.idle * 2 + 4096)
    H.say(H.machineLine())
    H.say(f"daemon: twistd -n txupgrade (defaults); load generator: node {os.path.basename(LOAD)}")
    H.say(
        f"{CONCURRENCY} WebSockets in flight (h2: on one connection; h1: one connection each),"
        f" windows of {settings.seconds} s, {settings.rounds} round(s); per server CPU-second"
    )
    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory(prefix="bench-h2ws-") as directory:
        try:
            for name in SERVERS:
                servers[name] = startServer(name, directory)
            load = loadRounds(servers, settings)
            troubles = {name: server.troubles() for name, server in servers.items()}
        finally:
            for server in servers.values():
                server.stop()
        H.say(f"\nidle memory: {settings.idle:,} WebSockets, a fresh server each")
        memory: dict[str, dict[str, dict[str, Any]]] = {}
        for name in ("twistd", "in-code"):
            memory[name] = {t: idleMemory(name, t, settings, directory) for t in TRANSPORTS}
    H.say(f"\nin memory: {STREAMS} WebSocket handshakes + closes, in-code site")
    inMem = inMemory(2 if args.quick else 20, 2 if args.quick else 5)

    rows = rateRows(load)
    for name, figures in memory.items():
        h2, h1 = figures["h2"]["perSocket"], figures["h1"]["perSocket"]
        rows.append(
            Row(
                f"RSS per idle WebSocket at {settings.idle:,}, {name}: h2"
                f" ({figures['h2']['connections']} conns) vs h1",
                f"{h2 / 1024:.2f} KiB",
                f"{h1 / 1024:.2f} KiB",
                H.ratio(h2, h1),
                "1 run",
                ("<=", 0.5),
            )
        )
    h2cpu, h1cpu = inMem["perSocket"]["h2"], inMem["perSocket"]["h1"]
    rows.append(
        Row(
            f"in memory, CPU per WebSocket (handshake + close), in-code: h2 ({STREAMS} streams) vs h1",
            f"{h2cpu * 1e6:.1f} us",
            f"{h1cpu * 1e6:.1f} us",
            H.ratio(h2cpu, h1cpu),
            H.ratioRange(inMem["rounds"]["h2"], inMem["rounds"]["h1"]),
            None,
        )
    )

    H.say("\n== SUMMARY ==")
    H.say("| figure | ours | peer | ratio | per-round ratios | goal | verdict |")
    H.say("|---|---|---|---|---|---|---|")
    for row in rows:
        H.say(row.line())
    others = [r["otherShare"] for per in load.values() for results in per.values() for r in results]
    note = H.otherLoadNote(others + inMem["other"])
    if note:
        H.say("\n" + note)
    H.say("\nLoad check, % of one core (medians): server / generator / other load")
    for key, per in load.items():
        for name, results in per.items():
            shares = [
                statistics.median(r[s] for r in results)
                for s in ("serverShare", "generatorShare", "otherShare")
            ]
            H.say(f"  {key:12} {name:10} {' / '.join(H.pct(s) for s in shares)}")
    idleTroubles = {f"{n} {t}": str(f["troubles"]) for n, per in memory.items() for t, f in per.items()}
    for name, text in {**troubles, **idleTroubles}.items():
        H.say(f"{name} printed after start-up: {'nothing' if not text.strip() else text[:500]!r}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "load": load,
                    "memory": {
                        n: {t: {k: v for k, v in f.items() if k != "troubles"} for t, f in per.items()}
                        for n, per in memory.items()
                    },
                    "inMemory": inMem,
                    "rows": [row.__dict__ for row in rows],
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
