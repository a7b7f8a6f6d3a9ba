"""
HTTP/2 on the cleartext port: txupgrade vs hypercorn, by h2load with prior
knowledge; the latency of the h2c stream-1 answer; the Python work in memory.

Usage::

    python benchmarks/bench_h2.py            # about 2 minutes: the figures
    python benchmarks/bench_h2.py --quick    # a few seconds, smoke only
    python benchmarks/bench_h2.py --profile DIR   # cProfile each server, one .prof per shape

Two server processes serve the same small response (C{200}, C{text/plain},
C{hello, world\\n}) at C{/} on 127.0.0.1, access logs off on both:

  - B{txupgrade}: C{UpgradeSite} with a leaf resource (the built-in C{h2c}
    plugin and prior knowledge), epoll reactor, log events discarded;
  - B{hypercorn}: the same answer from a minimal ASGI app, one worker,
    asyncio, C{keep_alive_max_requests} raised so that h2load's connections
    are not closed after 1,000 requests.

For each shape (C{-c10 -m10}, C{-c10 -m1}, C{-c2 -m100}), h2load runs a
fixed number of requests against each server in alternating rounds; the
figure is requests per second of server CPU (psutil, user + system),
printed with the server's, h2load's and the rest of the machine's CPU
("other load", see C{_harness}). Goal: txupgrade / hypercorn >= 1.0 at every
shape.

Then the B{stream-1 latency}: on a new connection each time, the time from
sending C{GET /} to the complete answer, in HTTP/1.1, and with C{Upgrade:
h2c} (the client sends its preface when the C{101} arrives, as curl does):
the answer on stream 1, and the part after the C{101}.

Last, B{in memory}: the server-side Python work of 100 requests on one
prior-knowledge connection (one segment in, the answers out), with Twisted's
own C{H2Connection} and with txupgrade's, CPU per request.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _harness as H

BODY = b"hello, world\n"
SHAPES = [("c10 m10", 10, 10), ("c10 m1", 10, 1), ("c2 m100", 2, 100)]


# ---------------------------------------------------------------------------
# Servers


def serveTxupgrade() -> None:
    """The txupgrade server: an UpgradeSite with one leaf, on the epoll reactor."""

    def makeSite() -> Any:
        from twisted.web.resource import Resource

        from txupgrade import UpgradeSite
        from txupgrade.protocols.h2c import H2cUpgrade

        class Hello(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                request.setHeader(b"content-type", b"text/plain")
                return BODY

        return UpgradeSite(Hello(), [H2cUpgrade()])

    H.serveSite(makeSite)


def serveHypercorn() -> None:
    """The hypercorn server: a minimal ASGI app, one worker, asyncio."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await H.asgiLifespan(receive, send)
            return
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(BODY))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})

    H.serveHypercorn(app)


SERVERS = {"txupgrade": serveTxupgrade, "hypercorn": serveHypercorn}


# ---------------------------------------------------------------------------
# h2load rounds


def h2load(port: int, requests: int, clients: int, streams: int) -> tuple[int, float, str]:
    """Run h2load; (requests that succeeded, its CPU seconds, its output)."""
    done, cpu = H.runMeasured(
        ["h2load", "-n", str(requests), "-c", str(clients), "-m", str(streams), f"http://{H.HOST}:{port}/"],
        120,
    )
    match = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", done.stdout)
    succeeded = int(match.group(1)) if match else 0
    return succeeded, cpu, done.stdout + done.stderr


def measure(server: H.ServerProcess, requests: int, clients: int, streams: int) -> dict[str, float]:
    """One h2load run against C{server}: rates and the CPU check."""

    def run() -> tuple[tuple[int, str], float]:
        succeeded, generator, output = h2load(server.port, requests, clients, streams)
        return (succeeded, output), generator

    (succeeded, output), usage = H.measured(server.cpu, run)
    if succeeded != requests:
        raise RuntimeError(f"{server.kind}: {succeeded} of {requests} succeeded:\n{output}")
    return H.windowFigures(succeeded, usage, requests=succeeded)


def loadRounds(
    servers: dict[str, H.ServerProcess], requests: int, rounds: int, profile: str | None
) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Every shape, the servers alternating (A B, then B A, ...)."""
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for label, clients, streams in SHAPES:
        results[label] = {kind: [] for kind in servers}
        for kind in servers:  # warm-up, not counted
            h2load(servers[kind].port, max(200, requests // 10), clients, streams)
        for index in range(rounds):
            order = list(servers) if index % 2 == 0 else list(reversed(servers))
            for kind in order:
                server = servers[kind]

                def run(
                    server: H.ServerProcess = server, clients: int = clients, streams: int = streams
                ) -> dict[str, float]:
                    return measure(server, requests, clients, streams)

                if profile and index == 0:
                    dest = os.path.join(profile, f"{kind}-{label.replace(' ', '')}.prof")
                    figures = server.profiled(dest, run)
                else:
                    figures = run()
                results[label][kind].append(figures)
                H.say(H.figuresLine(label, 8, kind, figures, unit=" req", generator="h2load"))
    return results


# ---------------------------------------------------------------------------
# Stream-1 latency


def latencyHTTP11(port: int) -> float:
    """Seconds from sending C{GET /} to the whole HTTP/1.1 answer, on a new connection."""
    with socket.create_connection((H.HOST, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        H.recvUntil(sock, lambda d: d.endswith(BODY))
        return time.perf_counter() - start


def latencyH2c(port: int) -> tuple[float, float]:
    """(seconds to the stream-1 answer, of which after the C{101}), on a new connection."""
    import h2.config
    import h2.connection
    import h2.events

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings = client.initiate_upgrade_connection() or b""
    request = (
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n"
    )
    with socket.create_connection((H.HOST, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        sock.sendall(request)
        _, rest = H.readHead(sock, b"HTTP/1.1 101")
        switched = time.perf_counter()
        sock.sendall(client.data_to_send())
        ended = False
        pending = rest
        while not ended:
            for event in client.receive_data(pending):
                if isinstance(event, h2.events.StreamEnded) and event.stream_id == 1:
                    ended = True
            if not ended:
                pending = sock.recv(65536)
                if not pending:
                    raise RuntimeError("closed before stream 1 ended")
        end = time.perf_counter()
        return end - start, end - switched


def latencies(port: int, count: int) -> dict[str, list[float]]:
    """Alternating HTTP/1.1 and h2c requests, C{count} of each."""
    plain, total, after = [], [], []
    for _ in range(count):
        plain.append(latencyHTTP11(port))
        whole, part = latencyH2c(port)
        total.append(whole)
        after.append(part)
    return {"HTTP/1.1 answer": plain, "h2c: stream-1 answer": total, "h2c: after the 101": after}


# ---------------------------------------------------------------------------
# In memory


def inMemory(iterations: int, streams: int = 100) -> dict[str, float]:
    """CPU per request of C{streams} requests on one connection, Twisted's H2Connection vs ours."""
    import h2.config
    import h2.connection
    from twisted.internet.task import Clock
    from twisted.test.iosim import FakeTransport
    from twisted.web import _http2
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from txupgrade._h2connection import H2Connection

    class Hello(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            request.setHeader(b"content-type", b"text/plain")
            return BODY

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    for i in range(streams):
        client.send_headers(
            1 + 2 * i,
            [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "127.0.0.1")],
            end_stream=True,
        )
    segment = client.data_to_send()
    clock = Clock()
    site = Site(Hello(), reactor=clock)
    site.log = lambda request: None  # type: ignore[method-assign]

    def once(kind: type) -> Any:
        def run() -> None:
            connection = kind(clock)
            connection.site, connection.factory = site, site
            connection.requestFactory = site.requestFactory
            connection.callLater = clock.callLater
            transport = FakeTransport(connection, True)
            connection.makeConnection(transport)
            connection.dataReceived(segment)
            while clock.getDelayedCalls():
                clock.advance(0)
                if all(call.getTime() > clock.seconds() for call in clock.getDelayedCalls()):
                    break
            written = transport.getOutBuffer()
            assert written.count(BODY) == streams, (kind, written.count(BODY))
            connection.connectionLost(None)
            for call in clock.getDelayedCalls():
                call.cancel()

        return run

    results = H.alternatingRounds(
        {"Twisted H2Connection": once(_http2.H2Connection), "txupgrade H2Connection": once(H2Connection)},
        iterations,
        3,
    )
    return {kind: statistics.median(values) / streams for kind, values in results.perRound.items()}


# ---------------------------------------------------------------------------
# Report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", choices=sorted(SERVERS))
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke test, not figures")
    parser.add_argument("--requests", type=int, default=None, help="requests per h2load run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--profile", metavar="DIR", help="cProfile the servers in the first round of each shape"
    )
    args = parser.parse_args()
    if args.serve:
        H.dieWithParent()
        H.raiseFileLimit()
        SERVERS[args.serve]()
        return
    requests = args.requests or (300 if args.quick else 30000)
    rounds = args.rounds or (1 if args.quick else 3)
    H.say(H.machineLine())
    profilePaths = {}
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        profilePaths = {kind: os.path.join(args.profile, f".{kind}.prof") for kind in SERVERS}
    servers: dict[str, H.ServerProcess] = {}
    try:
        for kind in SERVERS:
            servers[kind] = H.ServerProcess(__file__, kind, profilePath=profilePaths.get(kind))
        H.say(
            f"h2load prior knowledge, {requests:,} requests per run, {rounds} rounds; per server CPU-second"
        )
        load = loadRounds(servers, requests, rounds, args.profile)
        H.say("stream-1 latency (new connection each, alternating):")
        lat = latencies(servers["txupgrade"].port, 20 if args.quick else 400)
        extra = {kind: s.extraOutput() for kind, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    memory = inMemory(2 if args.quick else 60)

    H.say("")
    H.say(f"== Summary: h2load -n {requests}, per server CPU-second (medians of {rounds} rounds) ==")
    H.say(f"{'shape':9} {'txupgrade':>12} {'hypercorn':>12} {'ratio':>7}  goal  per-round ratios")
    others = []
    for label, _c, _m in SHAPES:
        ours = [r["perCpu"] for r in load[label]["txupgrade"]]
        theirs = [r["perCpu"] for r in load[label]["hypercorn"]]
        others.extend(r["otherShare"] for kind in load[label] for r in load[label][kind])
        ratio = H.ratio(statistics.median(ours), statistics.median(theirs))
        H.say(
            f"{label:9} {statistics.median(ours):12,.0f} {statistics.median(theirs):12,.0f}"
            f" {H.fmtRatio(ratio):>7}  >=1.0 {H.ratioRange(ours, theirs)}"
        )
    note = H.otherLoadNote(others)
    if note:
        H.say(note)
    H.say("")
    H.say("== Stream-1 latency, µs (median / p90) ==")
    for label, values in lat.items():
        p90 = H.percentile(values, 90)
        H.say(f"{label:24} {statistics.median(values) * 1e6:8.0f} / {p90 * 1e6:8.0f}")
    H.say("")
    H.say("== In memory: 100 requests on one connection, server CPU per request (µs) ==")
    for kind, value in memory.items():
        H.say(f"{kind:24} {value * 1e6:8.1f}")
    H.say(
        "ratio (Twisted / txupgrade, >1: ours does less work) "
        + H.fmtRatio(H.ratio(memory["Twisted H2Connection"], memory["txupgrade H2Connection"]))
    )
    for kind, text in extra.items():
        H.say(f"{kind} printed after start-up: {'nothing' if not text.strip() else text[:500]!r}")


if __name__ == "__main__":
    main()
