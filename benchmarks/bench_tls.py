"""
TLS as shipped: a real C{twistd -n txupgrade} on an C{ssl:} listener against
its peers, side by side in one run, per server CPU-second.

Usage::

    python benchmarks/bench_tls.py             # about 4 minutes: the figures
    python benchmarks/bench_tls.py --quick     # about 15 s, smoke only (figures are noise)
    python benchmarks/bench_tls.py --parts wss --profile DIR   # cProfile the daemon (slows it down)

Why: the other benchmarks measure cleartext; a deployment often terminates
TLS in the daemon (C{--listen ssl:...} with C{--tls-certificate}), where
every byte goes through Twisted's TLS layer (pyOpenSSL, memory BIOs) and a
handshake's CPU is added to every new connection. This says whether the
daemon still keeps up with its peers there, and how much of each
connection's cost is Twisted's TLS itself (the "TLS floor").

Theory of operation
-------------------
A certificate is made at start (trustme; C{--key-type}, ECDSA P-256 by
default): the key and chain in one PEM for the daemon and the Twisted
servers, key and certificate files for hypercorn. Every server runs at once,
each in its own process, on 127.0.0.1, all answering C{GET /echo} with the
body of L{txupgrade.protocols.echo.EchoResource} (52 bytes):

  - C{daemon}: C{twistd -n txupgrade --listen ssl:0:interface=127.0.0.1
    --tls-certificate server.pem}, default options (access log on, its text
    log in a file in a temporary directory), started by
    C{_harness.Twistd} (which also gives it an idle C{tcp:} listener);
  - C{plain Site}: a plain C{twisted.web.server.Site}, C{EchoResource} at
    C{/echo}, on the same C{ssl:} endpoint description (access lines
    formatted and published as twisted.web does; log events discarded);
  - C{in-code}: an C{UpgradeSite} on the demo's resources and every
    discovered protocol, built in code (no daemon: no tracking, limits or
    log file), on C{ssl:} with the daemon's ALPN set-up
    (C{txupgrade.daemon.service.prepareEndpoint});
  - C{autobahn}: autobahn's own C{WebSocketServerFactory}, an echo
    protocol, on C{reactor.listenSSL} with the same certificate;
  - C{hypercorn}: C{bench_h2}'s hypercorn server (one worker, asyncio, a
    minimal ASGI app) with C{certfile} and C{keyfile} (ALPN C{h2},
    C{http/1.1}), answering the same body;
  - C{TLS floor}: a bare C{Protocol} on C{listenSSL} answering each request
    head with canned bytes (the C{200}, or the C{101} with the key's
    C{Sec-WebSocket-Accept}): what Twisted's TLS and TCP cost per connection
    by themselves, so C{floor / peer} bounds the ratio any server on
    Twisted's TLS can reach against that peer.

Twisted answers a client's ALPN offer with the C{internal_error} alert when
the factory under C{listenSSL} names no protocol (autobahn's factory does
not), so those listeners declare C{http/1.1}, as one serving browsers must.

The loads, each for a C{--seconds} window per server, the servers
alternating round by round (A B C, then C B A; C{--rounds}):

  1. C{hs+GET}: a TLS handshake and one C{GET /echo} per new connection, no
     session resumption: C{h2load --h1 -n 32 -c 32} (each client does one
     request on its own connection; h2load resumes no session), run again
     until the window ends (more clients at once overflow the listeners'
     backlog of 50). Daemon / plain Site, goal >= 0.9; in-code for reference.
  2. C{wss}: a TLS handshake, the WebSocket opening handshake on C{/ws} (a
     random C{Sec-WebSocket-Key}; the C{101} and C{Sec-WebSocket-Accept}
     checked), then a reset (as in C{bench_daemon}: no port left in
     C{TIME_WAIT}), from 32 Python client threads (fewer leave the server
     idle between connections, which makes each cost more: the figures of a
     half-busy server are not comparable). Daemon / autobahn, goal >= 1.5.
  3. C{h2}: HTTP/2 over TLS (ALPN C{h2}), h2load on C{https://} at
     C{bench_h2}'s shapes (C{-c10 -m10}, C{-c10 -m1}, C{-c2 -m100}), runs of
     about half a second until the window ends. Daemon / hypercorn, goal
     >= 1.0 at every shape.

The figure is work (connections, handshakes, requests) per second of server
CPU (psutil, user + system), which a load generator sharing the machine's
two CPUs does not distort the way a wall-clock rate would; each window also
prints the server's, the generator's and everything else's CPU (the other
load, as C{_harness} defines it) and the hypervisor's steal. The summary
gives each server's totals over the rounds and, per ratio, the median of
the per-round ratios (a round's pair is measured seconds apart, so a host
whose speed drifts, as a shared one does by up to 2x, treats both alike),
the ratio of the totals and the per-round range. Every answer is checked
(status, body, ALPN protocol, the accept key): a broken server must not look
fast.

Options: C{--quick}, C{--seconds}, C{--rounds}, C{--parts hs+GET,wss,h2},
C{--clients}, C{--threads}, C{--key-type ecdsa|rsa}, C{--json FILE} (rates,
ratios, every window), C{--profile DIR} (the daemon runs under C{twistd
--profile --profiler cprofile --savestats}; its top functions are printed).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import re
import shutil
import socket
import ssl
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H
import bench_daemon_cost as _cost
import bench_h2 as _h2

PARTS = ("hs+GET", "wss", "h2")
#: The loads of each part: (label, the servers that serve it).
LOADS: dict[str, list[tuple[str, list[str]]]] = {
    "hs+GET": [("hs+GET", ["daemon", "plain Site", "in-code", "TLS floor"])],
    "wss": [("wss", ["daemon", "autobahn", "TLS floor"])],
    "h2": [(f"h2 {label}", ["daemon", "hypercorn"]) for label, _c, _m in _h2.SHAPES],
}
#: The ratios printed: (load, ours, theirs, goal; "" for a reference, "bound" for the TLS floor's).
RATIOS = [
    ("hs+GET", "daemon", "plain Site", ">= 0.9"),
    ("hs+GET", "in-code", "plain Site", ""),
    ("hs+GET", "daemon", "in-code", ""),
    ("hs+GET", "TLS floor", "plain Site", "bound"),
    ("wss", "daemon", "autobahn", ">= 1.5"),
    ("wss", "TLS floor", "autobahn", "bound"),
    *[(f"h2 {label}", "daemon", "hypercorn", ">= 1.0") for label, _c, _m in _h2.SHAPES],
]
_SSL_SERVING = re.compile(r"txupgrade serving on [^\n]*?ssl:127\.0\.0\.1:(\d+)")
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def echoBody() -> bytes:
    """What the demo's C{GET /echo} answers (every server here serves it)."""
    from twisted.web.test.requesthelper import DummyRequest

    from txupgrade.protocols.echo import EchoResource

    return EchoResource().render_GET(DummyRequest([b"echo"]))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Servers (run as `bench_tls.py --serve KIND --pem FILE ...`)


def listenSSL(factory: Any, pem: str, alpn: bool = False) -> None:
    """Serve C{factory} on C{ssl:0:interface=127.0.0.1} with C{pem}; announce; run the reactor."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from txupgrade.daemon.service import prepareEndpoint
    from txupgrade.protocols.tls import sslListenDescription

    endpoint = serverFromString(reactor, sslListenDescription(f"ssl:0:interface={H.HOST}", pem))
    if alpn:
        prepareEndpoint(endpoint, factory)
    ports: list[Any] = []
    endpoint.listen(factory).addCallback(ports.append)
    H.profileOnSignals()
    H.announce(ports[0].getHost().port, reactor)
    reactor.run()  # type: ignore[attr-defined]


def servePlain(args: argparse.Namespace) -> None:
    """A plain twisted.web Site, C{EchoResource} at C{/echo}."""
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from txupgrade.protocols.echo import EchoResource

    H.discardLogs()
    root = Resource()
    root.putChild(b"echo", EchoResource())
    listenSSL(Site(root), args.pem)


def serveInCode(args: argparse.Namespace) -> None:
    """An C{UpgradeSite} on the demo's resources, every discovered protocol, no daemon."""
    from txupgrade.channel import UpgradeSite
    from txupgrade.daemon.demo import demoRoot
    from txupgrade.registry import ProtocolRegistry

    H.discardLogs()
    protocols = ProtocolRegistry.fromPlugins()
    listenSSL(UpgradeSite(demoRoot(protocols, webSocket=True), protocols), args.pem, alpn=True)


def listenSSLOptions(factory: Any, pem: str) -> None:
    """
    Serve C{factory} (one that does not negotiate ALPN) by C{reactor.listenSSL}
    with C{pem}'s options; announce; run the reactor.

    Twisted answers a client's ALPN offer with C{internal_error} when the
    factory names no protocol, so the options declare C{http/1.1}, as an
    operator serving browsers must.
    """
    from twisted.internet import reactor

    from txupgrade.protocols.tls import certificateOptionsFromPEM

    options = certificateOptionsFromPEM(pem, acceptableProtocols=[b"http/1.1"])
    port = reactor.listenSSL(0, factory, options, interface=H.HOST)  # type: ignore[attr-defined]
    if hasattr(factory, "setSessionParameters"):
        factory.setSessionParameters(url=f"wss://{H.HOST}:{port.getHost().port}")
    H.profileOnSignals()
    H.announce(port.getHost().port, reactor)
    reactor.run()  # type: ignore[attr-defined]


def serveAutobahn(args: argparse.Namespace) -> None:
    """autobahn's own WebSocket server, an echo protocol, on C{listenSSL}."""
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    class Echo(WebSocketServerProtocol):
        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            self.sendMessage(payload, isBinary)

    H.discardLogs()
    factory = WebSocketServerFactory()
    factory.protocol = Echo
    listenSSLOptions(factory, args.pem)


def serveFloor(args: argparse.Namespace) -> None:
    """
    The TLS floor: a bare Protocol on Twisted's TLS that answers each request
    head with canned bytes (a C{200} with the body, or a C{101} with the
    C{Sec-WebSocket-Accept} of its key): what Twisted's TLS and TCP alone
    cost per connection, the least any server on them can spend.
    """
    from twisted.internet.protocol import Factory, Protocol

    body = echoBody()
    ok = (
        b"HTTP/1.1 200 OK\r\nServer: floor\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    keyLine = re.compile(rb"\r\nsec-websocket-key: *([^\r]+)", re.IGNORECASE)

    class Floor(Protocol):
        buffer = b""

        def dataReceived(self, data: bytes) -> None:
            self.buffer += data
            while b"\r\n\r\n" in self.buffer:
                head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
                key = keyLine.search(head)
                if key is None:
                    self.transport.write(ok)  # type: ignore[union-attr]
                    continue
                accept = base64.b64encode(hashlib.sha1(key.group(1).strip() + _WS_GUID).digest())
                self.transport.write(  # type: ignore[union-attr]
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )

    H.discardLogs()
    listenSSLOptions(Factory.forProtocol(Floor), args.pem)


def serveHypercorn(args: argparse.Namespace) -> None:
    """C{bench_h2}'s hypercorn server, over TLS, answering L{echoBody}."""
    from hypercorn.config import Config

    # bench_h2.serveHypercorn builds its own Config(): TLS on for every Config of this process.
    Config.certfile, Config.keyfile = args.cert, args.key
    _h2.BODY = echoBody()
    _h2.serveHypercorn()


SERVERS: dict[str, Callable[[argparse.Namespace], None]] = {
    "plain": servePlain,
    "incode": serveInCode,
    "autobahn": serveAutobahn,
    "hypercorn": serveHypercorn,
    "floor": serveFloor,
}
#: The peers: report name -> C{--serve} kind.
PEERS = {
    "plain Site": "plain",
    "in-code": "incode",
    "autobahn": "autobahn",
    "hypercorn": "hypercorn",
    "TLS floor": "floor",
}


class TLSDaemon(H.Twistd):
    """The harness's C{Twistd} with an C{ssl:} listener too: L{port} is the TLS one."""

    def __init__(self, directory: str, pem: str, command: list[str] | None = None) -> None:
        extra = ["--listen", f"ssl:0:interface={H.HOST}", "--tls-certificate", pem]
        super().__init__("daemon", extra, directory, command=command)
        self.tcpPort = self.port
        self.port = self.loggedPort(_SSL_SERVING, "no ssl: listener")

    def troubles(self) -> int:
        """Tracebacks and unhandled errors in its log (should be none)."""
        return len(self.tracebacks())


def makeCertificate(directory: str, keyType: str) -> dict[str, str]:
    """A trustme certificate for 127.0.0.1: C{pem} (key + chain), C{key}, C{cert} files."""
    import trustme

    kind = trustme.KeyType.RSA if keyType == "rsa" else trustme.KeyType.ECDSA
    issued = trustme.CA(key_type=kind).issue_cert("127.0.0.1", "localhost", key_type=kind)
    paths = {name: os.path.join(directory, f"{name}.pem") for name in ("server", "key", "cert")}
    issued.private_key_and_cert_chain_pem.write_to_path(paths["server"])
    issued.private_key_pem.write_to_path(paths["key"])
    with open(paths["cert"], "wb") as f:
        f.write(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    return {"pem": paths["server"], "key": paths["key"], "cert": paths["cert"]}


class Servers:
    """
    The daemon and the peers in C{wanted}, serving; L{byName} holds each as a
    C{bench_daemon_cost.Server} (name, port, CPU, stop).
    """

    def __init__(self, directory: str, files: dict[str, str], profile: str | None, wanted: set[str]) -> None:
        self.daemon: TLSDaemon | None = None
        self.peers: dict[str, H.ServerProcess] = {}
        self.byName: dict[str, _cost.Server] = {}
        command = None
        if profile:
            dest = os.path.join(profile, "daemon.prof")
            command = [*H.TWISTD, f"--profile={dest}", "--profiler=cprofile", "--savestats"]
        try:
            daemon = self.daemon = TLSDaemon(directory, files["pem"], command)
            self.byName["daemon"] = _cost.Server("daemon", daemon.port, daemon.cpu, daemon.stop)
            serverArgs = ["--pem", files["pem"], "--cert", files["cert"], "--key", files["key"]]
            for name, kind in PEERS.items():
                if name in wanted:
                    process = self.peers[name] = H.ServerProcess(__file__, kind, serverArgs)
                    self.byName[name] = _cost.Server(name, process.port, process.cpu, process.stop)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every server started."""
        if self.daemon is not None:
            self.daemon.stop()
        for process in self.peers.values():
            process.stop()


# ---------------------------------------------------------------------------
# Load


def clientContext(alpn: list[str] | None = None) -> ssl.SSLContext:
    """A client TLS context that does not verify (the server's CPU is what is measured)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def checkGet(name: str, port: int, body: bytes) -> None:
    """One C{GET /echo} over TLS (HTTP/1.1): C{200} and C{body}, or stop with what came."""
    with socket.create_connection((H.HOST, port), 10) as raw:
        with clientContext(["http/1.1"]).wrap_socket(raw) as sock:
            sock.sendall(f"GET /echo HTTP/1.1\r\nHost: {H.HOST}:{port}\r\n\r\n".encode())
            data = b""
            while len(data.partition(b"\r\n\r\n")[2]) < len(body) and (chunk := sock.recv(65536)):
                data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 ") or rest != body:
        raise SystemExit(f"{name}: GET /echo over TLS answered {data[:600]!r}")


def h2load(args: list[str], url: str, protocol: str) -> tuple[int, float, str]:
    """
    One h2load run: (requests that succeeded, its CPU seconds, its TLS
    line); stops unless every request succeeded over C{protocol} (ALPN).
    """
    done, cpu = H.runMeasured(["h2load", *args, url], 120)
    out = done.stdout + done.stderr
    match = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded", out)
    if match is None or match.group(1) != match.group(2) or f"Application protocol: {protocol}\n" not in out:
        raise SystemExit(f"h2load {' '.join(args)} {url} failed ({protocol} wanted):\n{out[-1500:]}")
    tls = " ".join(re.findall(r"^(?:TLS Protocol|Cipher|Server Temp Key): (.+)$", out, re.MULTILINE))
    return int(match.group(2)), cpu, tls


def repeatFor(seconds: float, run: Callable[[int], tuple[int, float]], count: int, adapt: int) -> Any:
    """
    C{run(count)} until C{seconds} have passed (once at least); with
    C{adapt} > 0, C{count} is resized after each run to last about half a
    second, or what is left of the window (at least C{adapt}).
    Returns (work, generator CPU).
    """
    work, cpu = 0, 0.0
    deadline = time.monotonic() + seconds
    while True:
        started = time.monotonic()
        done, used = run(count)
        work, cpu = work + done, cpu + used
        now = time.monotonic()
        if now >= deadline:
            return work, cpu
        if adapt:
            rate = count / max(now - started, 1e-3)
            count = int(max(adapt, min(rate * min(0.5, deadline - now), 2_000_000)))


class Loads:
    """The load generators, with what they saw of each server's TLS."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.clients = args.clients
        self.threads = args.threads
        self.tls: dict[str, str] = {}
        self.errors: dict[str, int] = {}

    def run(self, load: str, server: _cost.Server, seconds: float) -> tuple[int, float]:
        """C{load} against C{server} for C{seconds}: (work, generator CPU)."""
        url = f"https://{H.HOST}:{server.port}/echo"
        if load == "hs+GET":
            args = ["--h1", "-n", str(self.clients), "-c", str(self.clients)]

            def once(count: int) -> tuple[int, float]:
                done, cpu, tls = h2load(args, url, "http/1.1")
                self.tls.setdefault(server.name, tls)
                return done, cpu

            return repeatFor(seconds, once, self.clients, 0)
        if load == "wss":
            return self.wss(server, seconds)
        clients, streams = {f"h2 {label}": (c, m) for label, c, m in _h2.SHAPES}[load]

        def h2(count: int) -> tuple[int, float]:
            done, cpu, tls = h2load(["-n", str(count), "-c", str(clients), "-m", str(streams)], url, "h2")
            self.tls.setdefault(f"{server.name} h2", tls)
            return done, cpu

        return repeatFor(seconds, h2, 1000, clients * streams)

    def wss(self, server: _cost.Server, seconds: float) -> tuple[int, float]:
        """WebSocket handshakes over TLS for C{seconds} from L{threads} threads: (handshakes, CPU)."""
        context = clientContext(["http/1.1"])
        deadline = time.monotonic() + seconds
        counts = {"done": 0, "errors": 0}
        wrong: list[bytes] = []
        lock = threading.Lock()

        def client() -> None:
            done = errors = 0
            while time.monotonic() < deadline and not wrong:
                try:
                    head, accept = wssHandshake(context, server.port)
                except OSError:
                    errors += 1
                    continue
                if not head.startswith(b"HTTP/1.1 101 ") or b"Sec-WebSocket-Accept: " + accept not in head:
                    wrong.append(head)
                    break
                done += 1
            with lock:
                counts["done"] += done
                counts["errors"] += errors

        before = time.process_time()
        threads = [threading.Thread(target=client) for _ in range(self.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if wrong:
            raise SystemExit(f"wss on {server.name}: not the 101 asked for: {wrong[0][:600]!r}")
        self.errors[server.name] = self.errors.get(server.name, 0) + counts["errors"]
        return counts["done"], time.process_time() - before


def wssHandshake(context: ssl.SSLContext, port: int) -> tuple[bytes, bytes]:
    """
    Connect, TLS handshake, WebSocket opening handshake on C{/ws}, reset:
    the answer's head and the C{Sec-WebSocket-Accept} it must carry.
    """
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {H.HOST}:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    raw = socket.create_connection((H.HOST, port), 10)
    # A reset, not a FIN: no client port is left in TIME_WAIT.
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with context.wrap_socket(raw) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return head, base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())


def measure(loads: Loads, load: str, server: _cost.Server, seconds: float) -> dict[str, float]:
    """One window of C{load} on C{server}: work, server CPU, rates and the CPU check."""
    import psutil

    stealBefore = getattr(psutil.cpu_times(), "steal", 0.0)
    work, usage = H.measured(server.cpu, lambda: loads.run(load, server, seconds))
    steal = getattr(psutil.cpu_times(), "steal", 0.0) - stealBefore
    # The hypervisor's steal: CPU the machine's cores waited for (not counted as anyone's).
    return H.windowFigures(work, usage, work=work, stealShare=usage.share(steal))


# ---------------------------------------------------------------------------
# Report


def printProfile(path: str, count: int = 25) -> None:
    """The daemon's top functions by own time, from twistd's saved stats."""
    import io
    import pstats

    if not os.path.exists(path):
        H.say(f"no profile at {path}")
        return
    out = io.StringIO()
    stats = pstats.Stats(path, stream=out)
    stats.sort_stats("tottime").print_stats(count)
    stats.sort_stats("cumulative").print_stats(count)
    H.say(f"== daemon profile ({path}) ==")
    H.say(out.getvalue())


def report(
    samples: dict[str, dict[str, list[dict[str, float]]]],
    generator: Loads,
    wanted: set[str],
    troubles: int,
    extra: dict[str, str],
) -> dict[str, Any]:
    """Print the summary of the windows in C{samples}: the table, the ratios, the checks; return them."""
    rates = {
        load: {
            name: sum(s["work"] for s in got) / max(sum(s["server"] for s in got), 1e-9)
            for name, got in byServer.items()
        }
        for load, byServer in samples.items()
    }
    H.say("")
    H.say("== Summary: work per server CPU-second (totals over the rounds); µs of server CPU each ==")
    columns = [name for name in ("daemon", *PEERS) if name in wanted]
    H.say(f"{'load':12}" + "".join(f"{name:>22}" for name in columns))
    for load, byServer in rates.items():
        cells = [
            f"{byServer[n]:>12,.0f} ({1e6 / byServer[n]:6.1f})" if n in byServer else f"{'-':>22}"
            for n in columns
        ]
        H.say(f"{load:12}" + "".join(cells))
    H.say(
        "ratios: the median of the per-round ratios (each round's pair measured close in time, so a"
        " machine whose speed drifts treats both alike); the ratio of the totals, and the per-round range"
    )
    ratios: dict[str, float] = {}
    ofTotals: dict[str, float] = {}
    goals: dict[str, str] = {}
    what = {"": "(reference)", "bound": "(bound: no server on Twisted's TLS passes this ratio)"}
    for load, ours, theirs, goal in RATIOS:
        if load not in rates:
            continue
        label = f"{load} {ours} / {theirs}"
        mine, peer = ([s["perCpu"] for s in samples[load][name]] for name in (ours, theirs))
        paired = [r for a, b in zip(mine, peer, strict=True) if math.isfinite(r := H.ratio(a, b))]
        ratios[label] = statistics.median(paired) if paired else math.nan
        ofTotals[label] = H.ratio(rates[load][ours], rates[load][theirs])
        goals[label] = goal
        H.say(
            f"ratio {label}: {H.fmtRatio(ratios[label])} {what.get(goal, f'(goal {goal})')}"
            f"  totals {H.fmtRatio(ofTotals[label])}, per round {H.ratioRange(mine, peer)}"
        )
    note = H.otherLoadNote(
        [s["otherShare"] for byServer in samples.values() for got in byServer.values() for s in got]
    )
    if note:
        H.say(note)
    steal = [s["stealShare"] for byServer in samples.values() for got in byServer.values() for s in got]
    if steal and max(steal) > 0.05:
        H.say(
            f"NOTE: the hypervisor stole {H.pct(statistics.mean(steal))} of a core on average (up to"
            f" {H.pct(max(steal))}): the host is shared beyond this machine, per-CPU figures drift with it"
        )
    for name, tls in generator.tls.items():
        H.say(f"TLS negotiated with {name}: {tls}")
    if generator.errors:
        H.say("wss connections that failed: " + ", ".join(f"{n} {c}" for n, c in generator.errors.items()))
    H.say(f"daemon log: {troubles} tracebacks or unhandled errors")
    for name, text in extra.items():
        H.say(f"{name} printed after start-up: {'nothing' if not text.strip() else text[:500]!r}")
    return {
        "rates": rates,
        "ratios": ratios,
        "ratiosOfTotals": ofTotals,
        "goals": goals,
        "samples": samples,
        "tls": generator.tls,
        "wssErrors": generator.errors,
        "daemonTroubles": troubles,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--serve", choices=sorted(SERVERS), help=argparse.SUPPRESS)
    parser.add_argument("--pem", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a smoke run: short, figures are noise")
    parser.add_argument("--seconds", type=float, default=None, help="length of each window [1]")
    parser.add_argument("--rounds", type=int, default=None, help="windows per server and load [12]")
    parser.add_argument("--parts", default=",".join(PARTS), help="a subset of: " + ", ".join(PARTS))
    parser.add_argument("--clients", type=int, default=None, help="hs+GET: connections per h2load run [32]")
    parser.add_argument("--threads", type=int, default=None, help="wss: client threads [32]")
    parser.add_argument("--key-type", choices=("ecdsa", "rsa"), default="ecdsa", help="the certificate's key")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--profile", metavar="DIR", help="cProfile the daemon (twistd --profile); slows it")
    args = parser.parse_args(argv)
    if args.serve:
        H.dieWithParent()
        H.raiseFileLimit()
        SERVERS[args.serve](args)
        return 0
    parts = [p for p in args.parts.split(",") if p]
    if unknown := set(parts) - set(PARTS):
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))}")
    if shutil.which("h2load") is None and parts != ["wss"]:
        raise SystemExit("h2load is needed (Debian nghttp2-client; bash .ci/install installs it)")
    seconds = args.seconds or (0.3 if args.quick else 1.0)
    rounds = args.rounds or (1 if args.quick else 12)
    args.clients = args.clients or (8 if args.quick else 32)
    args.threads = args.threads or (4 if args.quick else 32)
    warm = min(seconds, 0.1 if args.quick else 0.5)
    loads = [(load, names) for part in parts for load, names in LOADS[part]]
    wanted = {name for _load, names in loads for name in names}
    body = echoBody()
    directory = tempfile.mkdtemp(prefix="txupgrade-bench-tls-")
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        args.profile = os.path.abspath(args.profile)
    H.say(
        f"=== TLS as shipped: twistd txupgrade on ssl: vs its peers, per server CPU-second; {H.machineLine()}"
    )
    samples: dict[str, dict[str, list[dict[str, float]]]] = {load: {} for load, _names in loads}
    generator = Loads(args)
    try:
        files = makeCertificate(directory, args.key_type)
        started = Servers(directory, files, args.profile, wanted)
        servers = started.byName
        try:
            H.say(
                f"certificate: trustme, {args.key_type.upper()} key; daemon: twistd -n txupgrade --listen"
                f" tcp:0:interface={H.HOST} (idle) --listen ssl:0:interface={H.HOST} --tls-certificate"
                " server.pem, default options (access log on, log file in a temp dir)"
                + (", PROFILED" if args.profile else "")
            )
            H.say(
                f"{rounds} rounds of {seconds:g} s windows per server and load, servers alternating;"
                f" hs+GET: h2load --h1 -n {args.clients} -c {args.clients} repeated; wss: {args.threads}"
                f" Python client threads; h2: h2load on https:// (ALPN h2); body {len(body)} bytes"
            )
            for name, server in servers.items():
                if name != "autobahn":  # a WebSocket endpoint only; its 101s are checked by the load
                    checkGet(name, server.port, body)
            for load, names in loads:  # warm-up, not counted
                for name in names:
                    generator.run(load, servers[name], warm)
            for index in range(rounds):
                for load, names in loads:
                    for name in names if index % 2 == 0 else list(reversed(names)):
                        figures = measure(generator, load, servers[name], seconds)
                        samples[load].setdefault(name, []).append(figures)
                        H.say(
                            f"  round {index + 1} {load:11} {name:10} {figures['perCpu']:9,.0f}/CPU-s"
                            f" {figures['perWall']:9,.0f}/s  (server CPU {H.pct(figures['serverShare'])},"
                            f" generator {H.pct(figures['generatorShare'])},"
                            f" other load {H.pct(figures['otherShare'])},"
                            f" steal {H.pct(figures['stealShare'])})"
                        )
            extra = {name: process.extraOutput() for name, process in started.peers.items()}
            assert started.daemon is not None
            troubles = started.daemon.troubles()
        finally:
            started.stop()
        if args.profile:
            printProfile(os.path.join(args.profile, "daemon.prof"))
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    results = report(samples, generator, wanted, troubles, extra)
    results.update(machine=H.machineLine(), keyType=args.key_type, seconds=seconds, rounds=rounds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
