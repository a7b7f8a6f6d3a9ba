#!/usr/bin/env python
"""
Slowloris: connections trickling a request head one byte per second must
not delay a normal client, and the daemon's request-head deadline
(C{--request-head-timeout}) closes them with a C{408} once it passes.

The server is the real daemon, C{twistd -n txupgrade} (the demo site, the
access log off, metrics on a second port), started by this script. A normal
client, in a process of its own, makes requests one after another, each on
a new connection (C{GET /echo}, then an C{echo} upgrade with 16 bytes there
and back), for C{--seconds}: first alone, then while C{--trickle} other
connections each send the start of a request head and then one more byte
every second, never finishing it. A trickling connection the server closes
is opened again at once (as an attacker does), so C{--trickle} of them are
open all the time.

Two daemons, one after the other:

  - C{--request-head-timeout 0} (the deadline off; skipped by C{--quick}
    and C{--no-compare}): the trickling connections stay open;
  - C{--request-head-timeout DEADLINE} (C{--deadline}, 10 s by default):
    each is answered C{408} and closed DEADLINE seconds after it opened.

The figures, for each daemon: the normal client's latency p50/p99 alone and
beside the trickle, and their ratio; how many trickling connections were
opened, closed by the server, with a C{408} before the close or without;
their lifetimes (from the start of the connect to the close) against the
deadline; the server's own count of request-head timeouts (its metrics),
its open connections mid-phase and its CPU seconds. Proof: the normal
client served throughout; with the deadline, every trickling connection
older than the deadline plus a grace closed, each with a C{408}, none before
the deadline; without it, none closed; no traceback in the daemon's log.

    python benchmarks/proof_slowloris.py               # 1,000 connections, 20 s phases, deadline 10 s
    python benchmarks/proof_slowloris.py --quick       # 50 connections, 3.5 s, deadline 1.5 s: smoke only
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import itertools
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _proofs as P
from _harness import percentile

GET_ECHO = b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
TRICKLE_START = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
HEAD_408 = b"HTTP/1.1 408 "
#: Seconds the trickling connections get to connect before the measurement.
RAMP = 1.5
#: Seconds after the deadline by which a trickling connection must be closed.
GRACE = 2.0
#: Seconds before the deadline a close may come (the clocks' resolution).
EARLY = 0.01


async def normalClient(port: int, seconds: float) -> tuple[list[float], int]:
    """Requests one after another for C{seconds}: their latencies, and the failures."""
    latencies = []
    failures = 0
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection(P.HOST, port)
            if n % 2 == 0:
                writer.write(GET_ECHO)
                status, _body = await P.readResponse(reader)
                good = status == 200
            else:
                payload = b"%016d" % n
                writer.write(P.UPGRADE_ECHO + payload)
                head = await P.readHead(reader)
                good = head.startswith(P.HEAD_101) and await reader.readexactly(16) == payload
            writer.close()
        except (OSError, asyncio.IncompleteReadError):
            good = False
        if good:
            latencies.append(time.perf_counter() - started)
        else:
            failures += 1
        n += 1
    return latencies, failures


def normalClientProcess(port: int, seconds: float) -> tuple[list[float], int]:
    """L{normalClient} in a process of its own (the trickle's event loop does not delay it)."""
    return asyncio.run(normalClient(port, seconds))


@dataclass
class Trickled:
    """One trickling connection: when it opened, when the server closed it, what it answered."""

    opened: float
    closedAfter: float | None = None
    received: bytes = b""
    reset: bool = False
    refused: bool = False
    sent: int = 0


async def trickleOnce(port: int, stop: asyncio.Event) -> Trickled:
    """
    One trickling connection: the start of a head, then a byte a second
    until the server closes it or C{stop} is set.
    """
    record = Trickled(opened=time.perf_counter())
    try:
        reader, writer = await asyncio.open_connection(P.HOST, port)
    except OSError:
        record.refused = True
        return record
    writer.write(TRICKLE_START)
    received = bytearray()

    async def readAll() -> None:
        while chunk := await reader.read(65536):
            received.extend(chunk)

    closed = asyncio.ensure_future(readAll())
    stopped = asyncio.ensure_future(stop.wait())
    while True:
        done, _ = await asyncio.wait({closed, stopped}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        if closed in done:
            record.closedAfter = time.perf_counter() - record.opened
            record.reset = closed.exception() is not None
            break
        if stopped in done:
            break
        try:
            writer.write(b"a")
            record.sent += 1
        except OSError:
            pass
    closed.cancel()
    stopped.cancel()
    record.received = bytes(received)
    writer.close()
    return record


async def trickler(port: int, stop: asyncio.Event, records: list[Trickled]) -> None:
    """Keep one trickling connection open until C{stop}: a new one as soon as the server closes one."""
    while not stop.is_set():
        record = await trickleOnce(port, stop)
        records.append(record)
        if record.refused:
            await asyncio.sleep(0.1)


@dataclass
class Phase:
    """The figures of one daemon."""

    alone: list[float]
    failedAlone: int
    during: list[float]
    failedDuring: int
    records: list[Trickled]
    trickleSeconds: float
    stoppedAt: float
    midOpen: float
    midFds: int
    hits: float
    cpuAlone: float
    cpuDuring: float


async def measure(daemon: P.Daemon, pool: concurrent.futures.Executor, trickle: int, seconds: float) -> Phase:
    """The normal client alone, then beside C{trickle} trickling connections."""
    loop = asyncio.get_running_loop()
    hitsBefore = await asyncio.to_thread(_hits, daemon)
    cpu0 = daemon.cpu()
    alone, failedAlone = await loop.run_in_executor(pool, normalClientProcess, daemon.port, seconds)
    cpu1 = daemon.cpu()
    stop = asyncio.Event()
    records: list[Trickled] = []
    started = time.perf_counter()
    tasks = []
    for i in range(trickle):
        tasks.append(asyncio.ensure_future(trickler(daemon.port, stop, records)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    await asyncio.sleep(max(0.0, started + RAMP - time.perf_counter()))  # every trickler connected
    cpu2 = daemon.cpu()
    during = asyncio.ensure_future(loop.run_in_executor(pool, normalClientProcess, daemon.port, seconds))
    await asyncio.sleep(seconds / 2)
    metrics = await asyncio.to_thread(daemon.metrics)
    midOpen = metrics.get('txupgrade_connections_active{protocol="http"}', 0.0)
    midFds = daemon.fds()
    latencies, failedDuring = await during
    cpu3 = daemon.cpu()
    stoppedAt = time.perf_counter()
    stop.set()
    await asyncio.gather(*tasks)
    hits = await asyncio.to_thread(_hits, daemon) - hitsBefore
    return Phase(
        alone, failedAlone, latencies, failedDuring, records, stoppedAt - started, stoppedAt,
        midOpen, midFds, hits, cpu1 - cpu0, cpu3 - cpu2,
    )  # fmt: skip


def _hits(daemon: P.Daemon) -> float:
    """The daemon's count of request-head timeouts so far."""
    return daemon.metrics().get('txupgrade_limit_hits_total{limit="request-head-timeout"}', 0.0)


#: The buckets of L{histogram}: seconds after the deadline.
BUCKETS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, GRACE)


def histogram(values: list[float]) -> str:
    """How many of C{values} fall in each of L{BUCKETS} (and below and above them)."""
    counts = [0] * (len(BUCKETS) + 1)
    for value in values:
        counts[sum(value >= edge for edge in BUCKETS)] += 1
    labels = [f"<{BUCKETS[0]:g}"]
    labels += [f"{a:g}-{b:g}" for a, b in itertools.pairwise(BUCKETS)]
    labels.append(f">={BUCKETS[-1]:g}")
    return ", ".join(f"{label} s: {n:,}" for label, n in zip(labels, counts, strict=True))


def report(name: str, phase: Phase, trickle: int, deadline: float) -> bool:
    """Print one daemon's figures; whether its part of the proof holds."""

    def latencyLine(what: str, values: list[float], failed: int, cpu: float) -> str:
        p50, p99 = percentile(values, 50) * 1e3, percentile(values, 99) * 1e3
        return (
            f"[{name}] normal client {what}: {len(values):,} requests, p50 {p50:.2f} ms, "
            f"p99 {p99:.2f} ms, {failed} failed; server CPU {cpu:.2f} s"
        )

    print(latencyLine("alone", phase.alone, phase.failedAlone, phase.cpuAlone))
    print(latencyLine(f"with {trickle:,} trickling", phase.during, phase.failedDuring, phase.cpuDuring))
    ratio50 = percentile(phase.during, 50) / percentile(phase.alone, 50)
    ratio99 = percentile(phase.during, 99) / percentile(phase.alone, 99)
    print(f"[{name}] ratio with/without the trickle: p50 {ratio50:.2f}, p99 {ratio99:.2f}")
    print(
        f"[{name}] server mid-phase: {phase.midOpen:,.0f} open HTTP connections (its metrics), "
        f"{phase.midFds:,} fds"
    )
    records = [r for r in phase.records if not r.refused]
    refused = len(phase.records) - len(records)
    closed = [r for r in records if r.closedAfter is not None]
    with408 = [r for r in closed if r.received.startswith(HEAD_408)]
    without = len(closed) - len(with408)
    stillOpen = [r for r in records if r.closedAfter is None]
    end = phase.trickleSeconds
    oldest = max((phase.stoppedAt - r.opened for r in stillOpen), default=0.0)
    ages = [r.closedAfter for r in closed if r.closedAfter is not None]
    sent = sum(r.sent for r in records)
    print(
        f"[{name}] trickling connections: {len(records):,} opened in {end:.1f} s ({refused:,} refused, "
        f"{sent:,} bytes trickled), {len(closed):,} closed by the server "
        f"({len(with408):,} with a 408 first, {without:,} without)"
    )
    if without:
        resets = sum(r.reset for r in closed)
        print(f"[{name}] closed without a 408: {resets:,} by a reset, {without - resets:,} otherwise")
    ok = phase.failedAlone == 0 and phase.failedDuring == 0 and bool(phase.alone) and bool(phase.during)
    ok = ok and refused == 0
    if deadline:
        early = sum(a < deadline - EARLY for a in ages)
        late = sum(a > deadline + GRACE for a in ages)
        # Still open at the end, though older than the deadline and the grace: never closed.
        never = sum(phase.stoppedAt - r.opened > deadline + GRACE for r in stillOpen)
        print(
            f"[{name}] still open at the end: {len(stillOpen):,}, {never:,} of them older than "
            f"{deadline + GRACE:g} s (never closed)"
        )
        if ages:
            p50, p99 = percentile(ages, 50), percentile(ages, 99)
            print(
                f"[{name}] lifetimes of the closed ones: min {min(ages):.2f} s, p50 {p50:.2f} s, "
                f"p99 {p99:.2f} s, max {max(ages):.2f} s (deadline {deadline:g} s; "
                f"{early:,} before it, {late:,} later than +{GRACE:g} s)"
            )
            print(f"[{name}] lifetimes after the deadline: {histogram([a - deadline for a in ages])}")
        # A connection the client let go when the trickle stopped, at its deadline, may be
        # counted by the server too (its timer fired before the client's FIN was read).
        nearDeadline = sum(phase.stoppedAt - r.opened >= deadline - 1.0 for r in stillOpen)
        extra = phase.hits - len(closed)
        print(
            f"[{name}] request-head timeouts the server counted (its metrics): {phase.hits:,.0f} "
            f"({extra:+,.0f} against the closes seen; {nearDeadline:,} connections were within 1 s of "
            "the deadline when the trickle stopped)"
        )
        ok = ok and bool(closed) and without == 0 and early == 0 and late == 0 and never == 0
        ok = ok and 0 <= extra <= nearDeadline
    else:
        print(f"[{name}] still open at the end: {len(stillOpen):,} (oldest {oldest:.1f} s)")
        ok = ok and not closed
    return ok


def main() -> int:
    parser = P.proofParser(__doc__, serve=False)
    parser.add_argument("--trickle", type=int, default=1000, help="trickling connections [1000]")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measurement [20]")
    parser.add_argument("--deadline", type=float, default=10.0, help="--request-head-timeout [10]")
    parser.add_argument("--no-compare", action="store_true", help="skip the daemon without a deadline")

    def check(args: argparse.Namespace) -> str | None:
        if args.deadline <= 0 or args.seconds + RAMP < args.deadline + GRACE:
            return "--deadline must be positive and --seconds + 1.5 at least --deadline + 2"
        return None

    quick = {"trickle": 50, "seconds": 3.5, "deadline": 1.5, "no_compare": True}
    args = P.proofArguments(parser, "50 connections, 3.5 s, deadline 1.5 s: smoke only", quick, check=check)
    configs = [] if args.no_compare else [("no deadline", 0.0)]
    configs.append((f"deadline {args.deadline:g} s", args.deadline))
    ok = True
    for name, deadline in configs:
        with P.Daemon("--request-head-timeout", f"{deadline:g}") as daemon:
            print(f"[{name}] server: {' '.join(daemon.command)}")
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                phase = asyncio.run(measure(daemon, pool, args.trickle, args.seconds))
            ok = report(name, phase, args.trickle, deadline) and ok
        ok = P.errorsLogged(daemon.tracebacks(), f"[{name}] ", most=10) and ok  # drain included
    return P.finish(ok)


if __name__ == "__main__":
    sys.exit(main())
