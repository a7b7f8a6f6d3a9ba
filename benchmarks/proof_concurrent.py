#!/usr/bin/env python
"""
Many concurrent upgraded connections on one server process, messages
flowing on all of them.

Opens C{--connections} connections to one server (at most C{--parallel}
handshakes in flight), each upgraded to C{echo}; the time from the connect
to the whole C{101} head is each connection's handshake latency. With all of
them open, C{--rounds} rounds: every connection sends a 32-byte message
naming itself and the round, all at once, and reads it back; every byte must
come back exactly once, on its own connection. Both processes raise their
file descriptor limit themselves.

    python benchmarks/proof_concurrent.py                 # 10,000 connections, 5 rounds
    python benchmarks/proof_concurrent.py --quick         # 200 connections: smoke only
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _proofs as P
from _harness import percentile


async def run(port: int, connections: int, parallel: int, rounds: int) -> bool:
    """Open, upgrade, exchange, close; print the figures; whether all bytes came back exactly."""
    gate = asyncio.Semaphore(parallel)
    latencies: list[float] = []
    failures: list[str] = []

    async def open1(i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        async with gate:
            started = time.perf_counter()
            try:
                reader, writer = await asyncio.open_connection(P.HOST, port)
                writer.write(P.UPGRADE_ECHO)
                head = await P.readHead(reader)
            except (OSError, asyncio.IncompleteReadError) as error:
                failures.append(f"connection {i}: {error!r}")
                return None
            latencies.append(time.perf_counter() - started)
            if not head.startswith(P.HEAD_101):
                failures.append(f"connection {i}: {head[:40]!r}")
                return None
            return reader, writer

    started = time.perf_counter()
    opened = await asyncio.gather(*(open1(i) for i in range(connections)))
    openSeconds = time.perf_counter() - started
    conns = [c for c in opened if c is not None]
    peak = await P.fetchStats(port)
    print(
        f"opened and upgraded {len(conns):,} of {connections:,} connections in {openSeconds:.1f} s; "
        f"server RSS {peak['rss'] / 2**20:.1f} MiB, {peak['fds']:,} fds"
    )
    print(
        f"handshake latency (connect to the whole 101): p50 {percentile(latencies, 50) * 1e3:.1f} ms, "
        f"p99 {percentile(latencies, 99) * 1e3:.1f} ms, max {max(latencies, default=0) * 1e3:.1f} ms "
        f"({parallel} handshakes in flight at most)"
    )
    sent = received = 0
    mismatched = 0

    async def exchange(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, r: int) -> None:
        nonlocal sent, received, mismatched
        message = (b"conn %07d round %05d " % (i, r)).ljust(32, b".")
        writer.write(message)
        sent += len(message)
        try:
            echoed = await reader.readexactly(len(message))
        except asyncio.IncompleteReadError as error:
            echoed = error.partial
        received += len(echoed)
        if echoed != message:
            mismatched += 1

    roundTimes = []
    for r in range(rounds):
        t = time.perf_counter()
        await asyncio.gather(*(exchange(i, rd, wr, r) for i, (rd, wr) in enumerate(conns)))
        roundTimes.append(time.perf_counter() - t)
    # Nothing more may arrive: every connection's echo was exactly its messages.
    extra = 0
    for reader, _writer in conns:
        try:
            extra += len(await asyncio.wait_for(reader.read(1024), 0.001))
        except asyncio.TimeoutError:
            pass
    for _reader, writer in conns:
        writer.close()
    print(
        f"{rounds} rounds of one 32-byte message on every connection: {sent:,} bytes sent, "
        f"{received:,} echoed, {mismatched} mismatched, {extra} bytes extra; "
        f"round time {min(roundTimes, default=0):.2f}-{max(roundTimes, default=0):.2f} s"
    )
    for failure in failures[:10]:
        print("FAILED", failure)
    return not failures and len(conns) == connections and mismatched == 0 and extra == 0 and sent == received


def main() -> int:
    parser = P.proofParser(__doc__)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--parallel", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    args = P.proofArguments(
        parser, "200 connections, 3 rounds: smoke only", {"connections": 200, "rounds": 3}
    )
    with P.Server(os.path.abspath(__file__)) as server:
        try:
            ok = asyncio.run(
                asyncio.wait_for(run(server.port, args.connections, args.parallel, args.rounds), args.timeout)
            )
        except asyncio.TimeoutError:
            print(f"FAILED: not done in {args.timeout:.0f} s")
            ok = False
        ok = P.errorsLogged(server.stats()["unexpected"]) and ok
    return P.finish(ok)


if __name__ == "__main__":
    sys.exit(main())
