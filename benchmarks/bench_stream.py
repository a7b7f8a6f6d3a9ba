#!/usr/bin/env python
"""
Raw-stream handoff and RFC 2817 TLS upgrade, as ratios against the same
server without the upgrade, in one run.

1. AMP: calls per second of an AMP service reached with ``Upgrade: amp``
   (L{txupgrade.protocols.stream.StreamUpgrade}) vs the same factory listening alone.
   Goal >= 0.95 per server CPU-second.
2. Raw stream: bytes echoed per second through ``Upgrade: tcp`` vs the same
   echo factory listening alone (64 KiB writes). Goal >= 0.95.
3. TLS: ``Upgrade: TLS/1.2`` connections (request, 101, handshake, the
   original request answered over TLS, close) vs direct TLS connections to an
   ``ssl:`` listener of the same site (handshake, the same GET, close).
   Goal >= 0.9 per server CPU-second.

Every server runs in its own process (``--serve KIND``); each load runs in
its own process (``--load KIND``) that samples the servers' CPU time (psutil)
at the start and end of each measurement window. AMP and raw streams are
measured in turns, each side first in every other round (A B, B A, A B,
...). The two TLS servers are loaded at once, by threads that alternate an
upgraded and a direct connection, in eight times as many rounds (see
L{runPairedTLS} and L{tlsSchedule}). The per-round ratios are printed with the ratio of the
means and their standard deviation. In-memory figures of the Python work
(no sockets, no crypto) follow.

Run ``python benchmarks/bench_stream.py`` (about 2 minutes) or ``--quick``
(seconds; smoke test only, not figures). ``--only amp,raw,tls,memory``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl as pyssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H

CHUNK = 64 * 1024
PAYLOAD = b"p" * 1024


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------


def _ampModule() -> Any:
    """The AMP command and server protocol, shared by servers and clients."""
    from twisted.protocols import amp

    class Echo(amp.Command):
        arguments = [(b"payload", amp.String())]
        response = [(b"payload", amp.String())]

    class EchoAMP(amp.AMP):
        @Echo.responder
        def echo(self, payload: bytes) -> dict[str, bytes]:
            return {"payload": payload}

    return Echo, EchoAMP


def serve(kind: str, pem: str) -> None:
    """Run one server until the driver goes away; print its port."""
    H.useCheckout()
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.protocol import Factory, Protocol
    from twisted.internet.task import LoopingCall
    from twisted.web.resource import Resource

    from txupgrade.channel import UpgradeSite
    from txupgrade.protocols.stream import StreamUpgrade
    from txupgrade.protocols.tls import TLSUpgrade, certificateOptionsFromPEM
    from txupgrade.resource import BytesResource

    H.discardLogs()
    H.profileOnSignals()

    class QuietSite(UpgradeSite):
        def log(self, request: object) -> None:
            """No access log (the same for both sides)."""

    class RawEcho(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[union-attr]

    _, EchoAMP = _ampModule()
    root = Resource()
    root.putChild(b"", BytesResource(b"ok", "text/plain"))
    factory: Any
    description = "tcp:0:interface=127.0.0.1:backlog=1024"
    if kind == "amp-upgrade":
        factory = QuietSite(root, [StreamUpgrade("amp", Factory.forProtocol(EchoAMP))])
    elif kind == "amp-alone":
        factory = Factory.forProtocol(EchoAMP)
    elif kind == "raw-upgrade":
        factory = QuietSite(root, [StreamUpgrade("tcp", Factory.forProtocol(RawEcho))])
    elif kind == "raw-alone":
        factory = Factory.forProtocol(RawEcho)
    elif kind == "tls-upgrade":
        factory = QuietSite(root, [TLSUpgrade(certificateOptionsFromPEM(pem))])
    elif kind == "tls-direct":
        # The same site as tls-upgrade: twistd serves one site on its plain
        # and ssl: listeners alike.
        factory = QuietSite(root, [TLSUpgrade(certificateOptionsFromPEM(pem))])
        description = f"ssl:0:interface=127.0.0.1:backlog=1024:privateKey={pem}"
    else:
        raise SystemExit(f"unknown server kind {kind!r}")

    def listening(port: Any) -> None:
        H.announce(port.getHost().port, reactor)

    serverFromString(reactor, description).listen(factory).addCallback(listening)
    parent = os.getppid()

    def watchParent() -> None:
        if os.getppid() != parent:
            reactor.stop()  # type: ignore[attr-defined]

    LoopingCall(watchParent).start(0.5, now=False)
    reactor.run()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------
# Loads (each in its own process; prints one JSON line)
# --------------------------------------------------------------------------


def _result(count: int, usage: H.Usage, **extra: Any) -> dict[str, Any]:
    """A load's result: C{count} done in the window, and who used the CPU."""
    return {
        "count": count,
        "wall": usage.wall,
        "serverCpu": usage.server,
        "clientCpu": usage.generators,
        "otherCpu": usage.other,
        **extra,
    }


def loadAMP(
    kind: str, port: int, pid: int, seconds: float, warmup: float, connections: int
) -> dict[str, Any]:
    """AMP Echo calls with 1 KiB payloads, 16 in flight on each connection."""
    H.useCheckout()
    from twisted.internet import reactor
    from twisted.internet.defer import gatherResults
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    from txupgrade.client import upgrade

    Echo, _ = _ampModule()
    from twisted.protocols import amp

    state = {"count": 0, "measuring": False, "stop": False}
    window: dict[str, Any] = {}

    def run(proto: Any) -> None:
        def call() -> None:
            if state["stop"]:
                return
            proto.callRemote(Echo, payload=PAYLOAD).addCallback(done)

        def done(result: Any) -> None:
            if state["measuring"]:
                state["count"] += 1
            call()

        for _ in range(16):
            call()

    def connectOne() -> Any:
        endpoint = TCP4ClientEndpoint(reactor, H.HOST, port)
        if kind == "upgrade":
            return upgrade(endpoint, ["amp"], lambda response: amp.AMP())
        return connectProtocol(endpoint, amp.AMP())

    def start(protocols: list[Any]) -> None:
        for proto in protocols:
            run(proto)
        reactor.callLater(warmup, begin)  # type: ignore[attr-defined]

    def begin() -> None:
        state["measuring"] = True
        window["cpu"] = H.CpuWindow(pid)
        reactor.callLater(seconds, end)  # type: ignore[attr-defined]

    def end() -> None:
        state["measuring"] = False
        state["stop"] = True
        window["usage"] = window["cpu"].close()
        reactor.stop()  # type: ignore[attr-defined]

    def failed(reason: Any) -> None:
        window["error"] = 1
        sys.stderr.write(reason.getTraceback())
        reactor.stop()  # type: ignore[attr-defined]

    gatherResults([connectOne() for _ in range(connections)]).addCallbacks(start, failed)
    reactor.run()  # type: ignore[attr-defined]
    if "error" in window:
        raise SystemExit(1)
    return _result(state["count"], window["usage"])


def loadRaw(
    kind: str, port: int, pid: int, seconds: float, warmup: float, connections: int
) -> dict[str, Any]:
    """64 KiB writes, up to 256 KiB in flight per connection, echoes counted."""
    import selectors

    socks = []
    for _ in range(connections):
        sock = socket.create_connection((H.HOST, port), timeout=10)
        if kind == "upgrade":
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
            H.readHead(sock, b"HTTP/1.1 101 ", alone=True)
        sock.setblocking(False)
        socks.append(sock)
    selector = selectors.DefaultSelector()
    inflight = dict.fromkeys(range(connections), 0)
    for i, sock in enumerate(socks):
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, i)
    chunk = b"r" * CHUNK
    received = 0
    t0 = time.perf_counter()
    measuring = False
    window: H.CpuWindow | None = None
    deadline = t0 + warmup + seconds
    while True:
        now = time.perf_counter()
        if not measuring and now >= t0 + warmup:
            measuring, received, window = True, 0, H.CpuWindow(pid)
        if now >= deadline:
            break
        for key, events in selector.select(0.1):
            i = key.data
            sock = key.fileobj  # type: ignore[assignment]
            if events & selectors.EVENT_READ:
                data = sock.recv(1 << 20)  # type: ignore[attr-defined]
                if not data:
                    raise RuntimeError("server closed")
                received += len(data)
                inflight[i] -= len(data)
            if events & selectors.EVENT_WRITE and inflight[i] < 4 * CHUNK:
                try:
                    sent = sock.send(chunk)  # type: ignore[attr-defined]
                except BlockingIOError:
                    sent = 0
                inflight[i] += sent
    assert window is not None
    usage = window.close()
    for sock in socks:
        sock.close()
    return _result(received, usage)


def loadTLSPaired(
    servers: dict[str, tuple[int, int]],
    rounds: int,
    seconds: float,
    warmup: float,
    connections: int,
    cafile: str,
) -> dict[str, Any]:
    """
    New connections to both TLS servers at once (C{servers}: kind -> (port,
    pid)), each thread alternating an upgraded and a direct one: TLS, the
    same GET answered, close. After C{warmup}, C{rounds} windows of
    C{seconds}, each with both servers' CPU and the count of each kind.
    """
    context = pyssl.create_default_context(cafile=cafile)
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    counts = {kind: 0 for kind in servers}
    state = {"measuring": False, "stop": False, "errors": 0}
    lock = threading.Lock()

    def once(kind: str) -> None:
        with socket.create_connection((H.HOST, servers[kind][0]), timeout=10) as sock:
            if kind == "upgrade":
                sock.sendall(request + b"Connection: Upgrade\r\nUpgrade: TLS/1.2\r\n\r\n")
                H.readHead(sock, b"HTTP/1.1 101 ", alone=True)
            with context.wrap_socket(sock, server_hostname=H.HOST) as tls:
                if kind != "upgrade":
                    tls.sendall(request + b"\r\n")
                data = b""
                while not data.endswith(b"\r\n\r\nok"):
                    chunk = tls.recv(4096)
                    if not chunk:
                        raise RuntimeError(f"closed: {data!r}")
                    data += chunk

    def worker(index: int) -> None:
        # Half the threads start with each kind; each then alternates.
        kinds = sorted(servers, reverse=index % 2 == 1)
        turn = 0
        while not state["stop"]:
            kind = kinds[turn % 2]
            turn += 1
            try:
                once(kind)
            except Exception as error:
                with lock:
                    state["errors"] += 1
                sys.stderr.write(f"{kind}: {error!r}\n")
                continue
            if state["measuring"]:
                with lock:
                    counts[kind] += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
    for thread in threads:
        thread.start()
    time.sleep(warmup)
    results = []
    for _ in range(rounds):
        with lock:
            for kind in counts:
                counts[kind] = 0
        windows = {
            kind: H.CpuWindow(pid, peers=[p for k, (_, p) in servers.items() if k != kind])
            for kind, (_, pid) in servers.items()
        }
        state["measuring"] = True
        time.sleep(seconds)
        state["measuring"] = False
        usages = {kind: window.close() for kind, window in windows.items()}
        with lock:
            done = dict(counts)
        results.append({kind: _result(done[kind], usage) for kind, usage in usages.items()})
    state["stop"] = True
    for thread in threads:
        thread.join(10)
    return {"rounds": results, "errors": state["errors"]}


# --------------------------------------------------------------------------
# In-memory figures of the Python work
# --------------------------------------------------------------------------


def memoryFigures(quick: bool) -> list[tuple[str, float, float, str]]:
    """
    (name, txupgrade µs, baseline µs, unit) rows, measured without sockets:
    the cost of one 64 KiB read through the stream handoff vs the protocol
    called directly, and the Python work of a TLS upgrade without crypto
    (upgrade request, 101, startTLS on a fake transport, then the original
    request answered as after handshakeCompleted) vs the same GET answered
    on a fresh connection.
    """
    H.useCheckout()
    from twisted.internet.interfaces import ITLSTransport
    from twisted.internet.main import CONNECTION_DONE
    from twisted.internet.protocol import Factory, Protocol
    from twisted.internet.task import Clock
    from twisted.python.failure import Failure
    from twisted.web.resource import Resource
    from zope.interface import implementer

    from txupgrade.channel import UpgradeSite
    from txupgrade.protocols.stream import StreamUpgrade
    from txupgrade.protocols.tls import TLSUpgrade
    from txupgrade.resource import BytesResource
    from txupgrade.testing import upgradeRequest

    connectionDone = Failure(CONNECTION_DONE)

    class NullTransport:
        disconnecting = False
        connected = True

        def __init__(self) -> None:
            self.protocol: Any = None

        def write(self, data: bytes) -> None:
            pass

        writeSequence = write

        def pauseProducing(self) -> None:
            pass

        resumeProducing = stopProducing = pauseProducing

        def registerProducer(self, producer: object, streaming: bool) -> None:
            pass

        def unregisterProducer(self) -> None:
            pass

        def getPeer(self) -> None:
            return None

        getHost = getPeer

        def loseConnection(self) -> None:
            self.disconnecting = True

        abortConnection = loseConnection

        def setTcpNoDelay(self, enabled: bool) -> None:
            pass

    class RawEcho(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[union-attr]

    class Quiet(UpgradeSite):
        def log(self, request: object) -> None:
            pass

    def fed(site: Quiet, transport: NullTransport, data: bytes) -> Any:
        """A new connection of C{site} on C{transport}, fed C{data}: the protocol now behind the transport."""
        server = site.buildProtocol(None)
        transport.protocol = server
        server.makeConnection(transport)  # type: ignore[arg-type]
        server.dataReceived(data)
        return transport.protocol

    rows: list[Any] = []
    n = 20_000 if quick else 300_000
    chunk = b"r" * CHUNK

    direct = RawEcho()
    transport = NullTransport()
    direct.makeConnection(transport)  # type: ignore[arg-type]
    t = time.perf_counter()
    for _ in range(n):
        direct.dataReceived(chunk)
    directCost = (time.perf_counter() - t) / n * 1e6

    site = Quiet(Resource(), [StreamUpgrade("tcp", Factory.forProtocol(RawEcho))], reactor=Clock())
    switched = fed(site, NullTransport(), upgradeRequest(["tcp"]))
    t = time.perf_counter()
    for _ in range(n):
        switched.dataReceived(chunk)
    rows.append(
        ("64 KiB read through the stream handoff", (time.perf_counter() - t) / n * 1e6, directCost, "µs")
    )

    root = Resource()
    root.putChild(b"", BytesResource(b"ok", "text/plain"))
    upgradeSite = Quiet(root, [TLSUpgrade(object())], reactor=Clock())
    count = 500 if quick else 20_000
    get = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    offer = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: TLS/1.2\r\n\r\n"

    @implementer(ITLSTransport)
    class NullTLSTransport(NullTransport):
        def startTLS(self, options: object) -> None:
            pass

    def upgraded() -> None:
        switch = fed(upgradeSite, NullTLSTransport(), offer)
        switch.handshakeCompleted()  # what the TLS layer calls; then the original request is answered
        switch.connectionLost(connectionDone)

    def plain() -> None:
        fed(upgradeSite, NullTLSTransport(), get).connectionLost(connectionDone)

    # Alternating rounds, medians: CPU time, steady against the machine's other load.
    rounds = H.alternatingRounds({"upgrade": upgraded, "plain": plain}, count // 10, 10)
    rows.append(
        (
            "TLS upgrade's HTTP work (no crypto) vs one GET",
            rounds.median("upgrade") * 1e6,
            rounds.median("plain") * 1e6,
            "µs/conn",
        )
    )

    from OpenSSL import SSL

    return [*rows, _handshakeFloor(SSL, 50 if quick else 400)]


def _handshakeFloor(SSL: Any, count: int) -> tuple[str, float, float, str]:
    """Server-side pyOpenSSL handshake cost in memory (the crypto floor of part 3)."""
    cert = _certificate()
    from twisted.internet import ssl

    from txupgrade.protocols.tls import certificateOptionsFromPEM

    serverContext = certificateOptionsFromPEM(cert[0]).getContext()
    clientContext = ssl.CertificateOptions().getContext()
    serverTime = 0.0
    for _ in range(count):
        server = SSL.Connection(serverContext, None)
        server.set_accept_state()
        client = SSL.Connection(clientContext, None)
        client.set_connect_state()
        done = False
        while not done:
            done = True
            for side, other, isServer in ((client, server, False), (server, client, True)):
                t = time.perf_counter()
                try:
                    side.do_handshake()
                except SSL.WantReadError:
                    done = False
                if isServer:
                    serverTime += time.perf_counter() - t
                try:
                    data = side.bio_read(65536)
                except SSL.WantReadError:
                    data = b""
                if data:
                    t = time.perf_counter()
                    other.bio_write(data)
                    if not isServer:
                        serverTime += time.perf_counter() - t
                    done = False
    floor = serverTime / count * 1e6
    return ("server TLS handshake, pyOpenSSL in memory", floor, floor, "µs (crypto floor)")


_CERT: list[tuple[str, str]] = []


def _certificate() -> tuple[str, str]:
    """A throwaway CA and a 127.0.0.1 certificate: (server PEM, CA PEM) paths."""
    if not _CERT:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert(H.HOST)
        directory = tempfile.mkdtemp(prefix="bench_stream_")
        pem = os.path.join(directory, "server.pem")
        cafile = os.path.join(directory, "ca.pem")
        cert.private_key_and_cert_chain_pem.write_to_path(pem)
        ca.cert_pem.write_to_path(cafile)
        _CERT.append((pem, cafile))
    return _CERT[0]


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------


def runLoad(
    part: str,
    kind: str,
    server: H.ServerProcess,
    seconds: float,
    warmup: float,
    connections: int,
    rounds: int = 1,
    extra: Sequence[str] = (),
) -> Any:
    """Run one load process against C{server} (C{extra}: more arguments); its JSON result."""
    args = [
        sys.executable,
        __file__,
        "--load",
        f"{part}:{kind}",
        "--port",
        str(server.port),
        "--pid",
        str(server.pid),
        "--seconds",
        str(seconds),
        "--warmup",
        str(warmup),
        "--connections",
        str(connections),
        "--rounds",
        str(rounds),
        "--pem",
        _certificate()[1],
        *extra,
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=rounds * seconds + warmup + 60)
    if done.returncode != 0:
        raise RuntimeError(f"load {part}:{kind} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


PARTS = {
    # part: (our server, baseline server, unit, goal, connections)
    "amp": ("amp-upgrade", "amp-alone", "calls", 0.95, 8),
    "raw": ("raw-upgrade", "raw-alone", "MB", 0.95, 8),
    "tls": ("tls-upgrade", "tls-direct", "conns", 0.90, 4),
}
#: The TLS part's rounds per round of the others (see L{tlsSchedule}).
TLS_SPLIT = 8


def tlsSchedule(rounds: int, seconds: float) -> tuple[int, float]:
    """
    The TLS part's rounds and their length: both servers are loaded at once
    (L{runPairedTLS}), for as long in all as the other parts' sides take in
    turns, in L{TLS_SPLIT} times as many rounds (at least 2).
    """
    count = rounds * TLS_SPLIT if rounds > 1 else 2
    return count, 2 * seconds * rounds / count


def runSequential(
    part: str,
    servers: dict[str, H.ServerProcess],
    rounds: int,
    seconds: float,
    warmup: float,
    connections: int,
) -> dict[str, list[Any]]:
    """
    One load process per side and round, the sides taking turns, each first
    in every other round (A B, B A, ...): what drifts within a round hits
    both alike.
    """
    results: dict[str, list[Any]] = {"upgrade": [], "alone": []}
    for i in range(rounds):
        for kind in ("upgrade", "alone") if i % 2 == 0 else ("alone", "upgrade"):
            results[kind].append(runLoad(part, kind, servers[kind], seconds, warmup, connections))
    return results


def runPairedTLS(
    servers: dict[str, H.ServerProcess], rounds: int, seconds: float, warmup: float, connections: int
) -> dict[str, list[Any]]:
    """
    One load process for both TLS servers at once, each of its threads
    alternating an upgraded and a direct connection: every round measures
    both under the same conditions. Handshake rates on a shared machine
    drift (other guests, CPU frequency) by more than the difference
    measured; taking turns, round ratios spread several times wider.
    """
    direct = servers["alone"]
    extra = ["--port2", str(direct.port), "--pid2", str(direct.pid)]
    paired = runLoad("tls", "paired", servers["upgrade"], seconds, warmup, connections, rounds, extra)
    return {
        "upgrade": [r["upgrade"] for r in paired["rounds"]],
        "alone": [r["direct"] for r in paired["rounds"]],
    }


def measure(
    parts: list[str], rounds: int, seconds: float, warmup: float, otherLoads: list[float]
) -> list[tuple[Any, ...]]:
    pem = _certificate()[0]
    rows = []
    for part in parts:
        ours, theirs, unit, goal, connections = PARTS[part]
        paired = part == "tls"
        servers = {
            kind: H.ServerProcess(__file__, name, ["--pem", pem])
            for kind, name in (("upgrade", ours), ("alone", theirs))
        }
        try:
            if paired:
                results = runPairedTLS(servers, *tlsSchedule(rounds, seconds), warmup, connections)
            else:
                results = runSequential(part, servers, rounds, seconds, warmup, connections)
        finally:
            for server in servers.values():
                server.stop()
        scale = 1e6 if unit == "MB" else 1.0

        def perCpu(r: dict[str, Any], scale: float = scale) -> float:
            return float(r["count"]) / scale / max(r["serverCpu"], 1e-9)

        def perWall(r: dict[str, Any], scale: float = scale) -> float:
            return float(r["count"]) / scale / r["wall"]

        labels = [("per server CPU-s", perCpu)]
        if not paired:  # paired, both sides make as many connections: no wall figure
            labels.append(("wall", perWall))
        spread: list[float] = []
        for label, rate in labels:
            ratios = [
                rate(a) / max(rate(b), 1e-9)
                for a, b in zip(results["upgrade"], results["alone"], strict=True)
            ]
            spread = spread or ratios
            ourRate = statistics.mean(rate(r) for r in results["upgrade"])
            theirRate = statistics.mean(rate(r) for r in results["alone"])
            rows.append(
                (
                    f"{part} {unit}/s, {label}",
                    f"{ourRate:,.1f}",
                    f"{theirRate:,.1f}",
                    ourRate / max(theirRate, 1e-9),
                    " ".join(f"{x:.3f}" for x in ratios),
                    goal if label.startswith("per server") else None,
                )
            )
        cpuShare = statistics.mean(r["serverCpu"] / r["wall"] for r in results["upgrade"] + results["alone"])
        otherLoads.extend(r["otherCpu"] / r["wall"] for r in results["upgrade"] + results["alone"])
        single = {"calls": "call", "MB": "MB", "conns": "connection"}[unit]
        perUnit = {k: 1e6 / max(statistics.mean(perCpu(r) for r in v), 1e-9) for k, v in results.items()}
        deviation = f"{statistics.stdev(spread):.3f}" if len(spread) > 1 else "n/a"
        H.say(
            f"  {part}{' (both servers at once)' if paired else ''}: server busy {cpuShare:.0%} of the"
            f" window on average; server CPU per {single}: {perUnit['upgrade']:.1f} µs through the"
            f" upgrade, {perUnit['alone']:.1f} µs alone; per-round ratio SD {deviation}"
            f" over {len(spread)} rounds"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="seconds, small counts: smoke test only")
    parser.add_argument("--only", default="amp,raw,tls,memory")
    parser.add_argument("--serve")
    parser.add_argument("--load")
    parser.add_argument("--pem", default="")
    parser.add_argument("--port", type=int)
    parser.add_argument("--pid", type=int)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1, help="(tls:paired load) windows to measure")
    parser.add_argument("--port2", type=int, help="(tls:paired load) the direct TLS server's port")
    parser.add_argument("--pid2", type=int, help="(tls:paired load) the direct TLS server's pid")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.pem)
        return
    if args.load:
        part, kind = args.load.split(":")
        if part == "amp":
            result = loadAMP(kind, args.port, args.pid, args.seconds, args.warmup, args.connections)
        elif part == "raw":
            result = loadRaw(kind, args.port, args.pid, args.seconds, args.warmup, args.connections)
        else:
            servers = {"upgrade": (args.port, args.pid), "direct": (args.port2, args.pid2)}
            result = loadTLSPaired(
                servers, args.rounds, args.seconds, args.warmup, args.connections, args.pem
            )
            if result["errors"]:
                # Each was written to standard error; the driver shows them.
                raise SystemExit(f"{result['errors']} connection(s) failed")
        sys.stdout.write(json.dumps(result) + "\n")
        return

    only = [p.strip() for p in args.only.split(",") if p.strip()]
    rounds, seconds, warmup = (1, 0.3, 0.1) if args.quick else (3, 4.0, 1.0)
    tlsRounds, tlsSeconds = tlsSchedule(rounds, seconds)
    H.say(
        f"bench_stream: {rounds} round(s) of {seconds} s per side (tls: {tlsRounds} of"
        f" {tlsSeconds} s, both sides at once), {os.cpu_count()} CPUs"
    )
    H.say(f"before the run: {H.machineLine()}")
    otherLoads: list[float] = []
    rows = measure([p for p in only if p in PARTS], rounds, seconds, warmup, otherLoads)
    memory = memoryFigures(args.quick) if "memory" in only else []
    H.say("\n== SUMMARY ==")
    H.say("| figure | txupgrade | baseline | ratio | per-round ratios | goal | verdict |")
    H.say("|---|---|---|---|---|---|---|")
    for figure, ours, theirs, ratio, spread, goal in rows:
        verdict = "n/a" if goal is None else ("met" if ratio >= goal else "MISSED")
        goalText = "none" if goal is None else f">= {goal:.2f}"
        H.say(f"| {figure} | {ours} | {theirs} | {ratio:.3f} | {spread} | {goalText} | {verdict} |")
    if memory:
        H.say("\n== IN MEMORY (Python work, no sockets) ==")
        H.say("| figure | txupgrade | baseline | unit |")
        H.say("|---|---|---|---|")
        for figure, ours, theirs, unit in memory:
            H.say(f"| {figure} | {ours:.2f} | {theirs:.2f} | {unit} |")
    note = H.otherLoadNote(otherLoads)
    if note:
        H.say("\n" + note)
    H.say(f"\nafter the run: {H.machineLine()}")


if __name__ == "__main__":
    main()
