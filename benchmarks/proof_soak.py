#!/usr/bin/env python
"""
Soak: many upgrade + echo + close cycles against one server process, its
memory sampled as it goes.

Each cycle is a new connection: for C{echo}, the upgrade request and 16
bytes in one write, the C{101}, the 16 bytes back, close; for C{ws}, a
WebSocket handshake on the demo C{/ws} (frames written by hand), one masked
text frame and its echo, a Close frame and its answer, close. Every
C{--every} cycles the server's RSS and its count of gc-tracked objects are
read (C{/_stats}, without a collection, and with one at the end). The proof:
RSS growth after the warm-up (the first C{--warmup} cycles) at most 5%, and
the object count flat.

    python benchmarks/proof_soak.py                  # 200,000 cycles of each kind
    python benchmarks/proof_soak.py --kind ws --cycles 50000
    python benchmarks/proof_soak.py --quick          # a few seconds: smoke test only
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H
import _proofs as P

CLOSE_1000 = (1000).to_bytes(2, "big")


async def echoCycle(port: int, n: int) -> None:
    """One upgrade to C{echo}, 16 bytes there and back, close."""
    payload = b"%016d" % n
    reader, writer = await asyncio.open_connection(P.HOST, port)
    writer.write(P.UPGRADE_ECHO + payload)
    head = await P.readHead(reader)
    if not head.startswith(P.HEAD_101):
        raise AssertionError(f"no 101: {head!r}")
    echoed = await reader.readexactly(16)
    if echoed != payload:
        raise AssertionError(f"echo {echoed!r} != {payload!r}")
    writer.close()


async def wsCycle(port: int, n: int) -> None:
    """One WebSocket handshake, a message there and back, the closing handshake, close."""
    payload = b"message %d" % n
    reader, writer = await asyncio.open_connection(P.HOST, port)
    writer.write(P.wsHandshake() + P.wsFrame(payload))
    head = await P.readHead(reader)
    if not head.startswith(P.HEAD_101):
        raise AssertionError(f"no 101: {head!r}")
    opcode, echoed = await P.wsReadFrame(reader)
    if (opcode, echoed) != (0x1, payload):
        raise AssertionError(f"echo {(opcode, echoed)!r}")
    writer.write(P.wsFrame(CLOSE_1000, opcode=0x8))
    opcode, _ = await P.wsReadFrame(reader)
    if opcode != 0x8:
        raise AssertionError(f"expected a Close frame, got opcode {opcode}")
    writer.close()


async def soak(port: int, kind: str, cycles: int, every: int, concurrency: int) -> list[dict[str, float]]:
    """Run C{cycles} cycles, C{concurrency} at a time; the samples taken every C{every}."""
    cycle = echoCycle if kind == "echo" else wsCycle
    samples = []
    done = 0
    nextSample = 0
    started = time.perf_counter()

    async def sample() -> None:
        stats = await P.fetchStats(port)
        samples.append(
            {
                "cycles": done,
                "rss": stats["rss"],
                "objects": stats["objects"],
                "fds": stats["fds"],
                "cpu": stats["cpu"],
                "t": time.perf_counter() - started,
            }
        )
        # As it goes, so that a run cut short still shows its samples.
        print(
            f"sample {kind}: {done:,} cycles, RSS {stats['rss'] / 2**20:.2f} MiB, "
            f"{stats['objects']:,} objects, {time.perf_counter() - started:.0f} s",
            flush=True,
        )

    await sample()
    nextSample = every
    counter = iter(range(cycles))

    async def worker() -> None:
        nonlocal done, nextSample
        for n in counter:
            await cycle(port, n)
            done += 1
            if done >= nextSample:
                nextSample += every
                await sample()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if samples[-1]["cycles"] != done:
        await sample()
    return samples


def report(kind: str, samples: list[dict[str, float]], warmup: int, final: dict[str, float]) -> bool:
    """Print the samples and the verdict; whether the proof holds."""
    print(f"\n== {kind}: RSS and gc-tracked objects every sample ==")
    print("| cycles | RSS MiB | objects | fds | server CPU s | wall s |")
    print("|---|---|---|---|---|---|")
    for s in samples:
        print(
            f"| {s['cycles']:,} | {s['rss'] / 2**20:.2f} | {s['objects']:,} | {s['fds']} "
            f"| {s['cpu']:.1f} | {s['t']:.1f} |"
        )
    base = next((s for s in samples if s["cycles"] >= warmup), samples[0])
    last = samples[-1]
    growth = (last["rss"] - base["rss"]) / base["rss"] * 100
    objects = last["objects"] - base["objects"]
    cycles = last["cycles"] - samples[0]["cycles"]
    cpu = last["cpu"] - samples[0]["cpu"]
    ok = growth <= 5.0
    print(
        f"{kind}: {cycles:,} cycles in {last['t']:.1f} s ({H.fmt(H.ratio(cycles, last['t']))}/s wall, "
        f"{H.fmt(H.ratio(cycles, cpu))} per server CPU-s)"
    )
    print(
        f"{kind}: RSS after warm-up ({base['cycles']:,} cycles) {base['rss'] / 2**20:.2f} MiB -> "
        f"{last['rss'] / 2**20:.2f} MiB: growth {growth:+.2f}% (limit 5%) {'OK' if ok else 'FAILED'}"
    )
    print(
        f"{kind}: gc-tracked objects {base['objects']:,} -> {last['objects']:,} ({objects:+,}); "
        f"after gc.collect() {final['objects']:,}, RSS {final['rss'] / 2**20:.2f} MiB"
    )
    return ok


def main() -> int:
    parser = P.proofParser(__doc__)
    parser.add_argument("--kind", choices=["echo", "ws", "both"], default="both")
    parser.add_argument("--cycles", type=int, default=200_000)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    quick = {"cycles": 2000, "every": 500, "warmup": 500}
    args = P.proofArguments(parser, "2,000 cycles, sampled every 500: smoke only", quick)
    ok = True
    for kind in ("echo", "ws") if args.kind == "both" else (args.kind,):
        with P.Server(os.path.abspath(__file__)) as server:
            samples = asyncio.run(soak(server.port, kind, args.cycles, args.every, args.concurrency))
            final = server.stats(collect=True)
            ok = report(kind, samples, args.warmup, final) and ok
            ok = P.errorsLogged(final["unexpected"], f"{kind}: ") and ok
    return P.finish(ok)


if __name__ == "__main__":
    sys.exit(main())
