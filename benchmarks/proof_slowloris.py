#!/usr/bin/env python
"""
Slowloris: connections trickling a request head one byte per second must
not delay a normal client.

One server process (the demo site). A normal client makes requests one
after another, each on a new connection (C{GET /echo}, then an C{echo}
upgrade with 16 bytes there and back), for C{--seconds}: first alone, then
while C{--trickle} other connections each send the start of a request head
and then one more byte every second, never finishing it. The figures: the
normal client's latency p50/p99 with and without the trickle, and how many
trickling connections the server closed, and when (a request-head deadline
closes them; without one, none is closed while they keep sending).

    python benchmarks/proof_slowloris.py               # 1,000 trickling connections, 20 s each phase
    python benchmarks/proof_slowloris.py --quick       # 50 connections, 2 s: smoke only
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _proofs import (
    HEAD_101,
    HOST,
    UPGRADE_ECHO,
    Server,
    fetchStats,
    machineLoad,
    percentile,
    raiseNofile,
    readHead,
    readResponse,
    serve,
)

GET_ECHO = b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
TRICKLE_START = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


async def normalClient(port: int, seconds: float) -> tuple[list[float], int]:
    """Requests one after another for C{seconds}: their latencies, and the failures."""
    latencies = []
    failures = 0
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            if n % 2 == 0:
                writer.write(GET_ECHO)
                status, _body = await readResponse(reader)
                good = status == 200
            else:
                payload = b"%016d" % n
                writer.write(UPGRADE_ECHO + payload)
                head = await readHead(reader)
                good = head.startswith(HEAD_101) and await reader.readexactly(16) == payload
            writer.close()
        except (OSError, asyncio.IncompleteReadError):
            good = False
        if good:
            latencies.append(time.perf_counter() - started)
        else:
            failures += 1
        n += 1
    return latencies, failures


class Trickler:
    """One connection sending a request head, then one byte per second, never the end."""

    def __init__(self) -> None:
        self.opened = 0.0
        self.closedAfter: float | None = None
        self.sent = 0

    async def run(self, port: int, stop: asyncio.Event) -> None:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            self.closedAfter = 0.0
            return
        self.opened = time.perf_counter()
        writer.write(TRICKLE_START)
        closed = asyncio.ensure_future(reader.read())
        while not stop.is_set():
            done, _ = await asyncio.wait({closed}, timeout=1.0)
            if done:
                self.closedAfter = time.perf_counter() - self.opened
                break
            writer.write(b"a")
            self.sent += 1
        closed.cancel()
        writer.close()


async def run(port: int, trickle: int, seconds: float) -> bool:
    """Both phases; print the figures; whether the normal client was served throughout."""
    alone, failedAlone = await normalClient(port, seconds)
    stop = asyncio.Event()
    tricklers = [Trickler() for _ in range(trickle)]
    tasks = []
    for i, t in enumerate(tricklers):
        tasks.append(asyncio.ensure_future(t.run(port, stop)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.5)  # every trickler connected and sending
    before = await fetchStats(port)
    started = time.perf_counter()
    during, failedDuring = await normalClient(port, seconds)
    trickleSeconds = time.perf_counter() - started + 1.5
    stop.set()
    await asyncio.gather(*tasks)
    closed = [t.closedAfter for t in tricklers if t.closedAfter is not None]
    print(f"server before the measurement with the trickle: {before['fds']:,} fds")

    def line(name: str, values: list[float], failed: int) -> str:
        return (
            f"{name}: {len(values):,} requests, p50 {percentile(values, 50) * 1e3:.2f} ms, "
            f"p99 {percentile(values, 99) * 1e3:.2f} ms, {failed} failed"
        )

    print(line("normal client alone", alone, failedAlone))
    print(line(f"normal client with {trickle:,} trickling", during, failedDuring))
    ratio50 = percentile(during, 50) / percentile(alone, 50)
    ratio99 = percentile(during, 99) / percentile(alone, 99)
    print(f"ratio with/without the trickle: p50 {ratio50:.2f}, p99 {ratio99:.2f}")
    sent = sum(t.sent for t in tricklers)
    if closed:
        print(
            f"trickling connections closed by the server: {len(closed):,} of {trickle:,}, after "
            f"{min(closed):.1f}-{max(closed):.1f} s (p50 {percentile(closed, 50):.1f} s)"
        )
    else:
        print(
            f"trickling connections closed by the server: 0 of {trickle:,} in {trickleSeconds:.0f} s "
            f"({sent:,} bytes trickled): no request-head deadline closed them"
        )
    return failedAlone == 0 and failedDuring == 0 and bool(alone) and bool(during)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trickle", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="50 connections, 2 s phases: smoke only")
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0
    if args.quick:
        args.trickle, args.seconds = 50, 2.0
    raiseNofile()
    print(f"machine: {machineLoad()}")
    with Server(os.path.abspath(__file__)) as server:
        ok = asyncio.run(run(server.port, args.trickle, args.seconds))
        final = server.stats()
        if final["unexpected"]:
            print("errors logged by the server:\n" + "\n".join(final["unexpected"]))
            ok = False
        else:
            print("errors logged by the server: 0")
    print(f"machine: {machineLoad()}")
    print("RESULT", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
