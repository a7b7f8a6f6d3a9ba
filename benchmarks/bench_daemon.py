"""
C{twistd txupgrade --workers N}: handshakes per second with two workers
against one, on the same machine, in the same run.

Theory of operation
-------------------
Three daemons are started one after the other, each a real
C{twistd -n txupgrade --listen tcp:0:interface=127.0.0.1} (the demo site,
its default logging to a file, as an operator runs it):

  - C{single}: no C{--workers} (one process serves);
  - C{workers=1}: a supervisor and one worker;
  - C{workers=2}: a supervisor and two workers sharing the socket.

Against each, this process is the load generator (non-blocking sockets,
C{--concurrency} connections in flight), for each kind of handshake:

  - C{echo}: connect, C{GET /} with C{Upgrade: echo}, read the C{101} head,
    close;
  - C{ws}: connect, a WebSocket handshake to the demo's C{/ws} (autobahn),
    read the C{101} head and check C{Sec-WebSocket-Accept}, close.

The client closes with an RST (C{SO_LINGER} 0), so that no client port stays
in C{TIME_WAIT} (a few hundred thousand connections would exhaust them);
the server sees the connection lost, as when a client goes away.

The generator shares the machine's CPUs with the daemon. In Python it costs
about a fifth of the server's CPU per handshake, which on two CPUs alone
caps C{workers=2 / workers=1} near 1.65x; so it is C{hsload.c} (the same
loop in C, compiled with the system's C compiler at start, about 10x
cheaper) when a compiler is there, else the Python loop (C{--generator}
chooses; the report says which ran, and its CPU is counted either way).

Each measurement runs C{--seconds} after a one-second warm-up. Figures:
handshakes per second (wall clock); the CPU seconds of the server processes
(supervisor and workers, from C{/proc} via psutil), of the generator, and of
everything else on the machine (the other load, as _harness.py defines it);
handshakes per server CPU-second. The summary gives the ratios
C{workers=2 / workers=1} (goal >= 1.6 on two cores) and
C{workers=2 / single}.

Run: C{python benchmarks/bench_daemon.py} (about 90 s),
C{--quick} (a smoke run: the figures are noise), C{--json PATH} to keep
the results.
"""

from __future__ import annotations

import argparse
import base64
import errno
import hashlib
import json
import os
import re
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import Twistd, fmtRatio, measured, ratio, runMeasured

_KEY = base64.b64encode(b"0123456789abcdef")
_ACCEPT = base64.b64encode(hashlib.sha1(_KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())

CONFIGS = {"single": [], "workers=1": ["--workers", "1"], "workers=2": ["--workers", "2"]}


def requestFor(kind: str, port: int) -> bytes:
    """The handshake bytes of C{kind} (C{echo} or C{ws})."""
    if kind == "echo":
        return (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
        ).encode()
    return (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Key: {_KEY.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def checkHead(kind: str, head: bytes) -> None:
    """Fail loudly unless C{head} is the C{101} of C{kind}: a broken server must not look fast."""
    if not head.startswith(b"HTTP/1.1 101 "):
        raise SystemExit(f"{kind}: not a 101: {head[:200]!r}")
    if kind == "ws" and b"Sec-WebSocket-Accept: " + _ACCEPT not in head:
        raise SystemExit(f"ws: wrong Sec-WebSocket-Accept: {head[:400]!r}")


def _linger(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def compileGenerator(directory: str) -> str | None:
    """C{hsload.c} compiled into C{directory}, or L{None} without a working C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    binary = os.path.join(directory, "hsload")
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hsload.c")
    done = subprocess.run([compiler, "-O2", "-o", binary, source], capture_output=True, text=True)
    return binary if done.returncode == 0 else None


def generate(binary: str | None, kind: str, port: int, seconds: float, concurrency: int) -> dict[str, Any]:
    """
    Handshakes of C{kind} for C{seconds}, C{concurrency} in flight, by the
    compiled C generator C{binary} (L{None}: the Python loop): counts, and
    the generator's CPU.
    """
    if binary is not None:
        return generateC(binary, kind, port, seconds, concurrency)
    before = time.process_time()
    counts = generatePython(kind, port, seconds, concurrency)
    return {**counts, "generatorCpu": time.process_time() - before}


def generateC(binary: str, kind: str, port: int, seconds: float, concurrency: int) -> dict[str, Any]:
    """L{generate} by C{hsload}: the same handshakes, checks and counts."""
    expect = "Sec-WebSocket-Accept: " + _ACCEPT.decode() if kind == "ws" else "Upgrade: echo"
    with tempfile.NamedTemporaryFile(prefix="hsload-", suffix=".request") as request:
        request.write(requestFor(kind, port))
        request.flush()
        done, cpu = runMeasured(
            [binary, str(port), str(seconds), str(concurrency), request.name, expect], seconds + 60
        )
    if done.returncode != 0:
        raise SystemExit(f"{kind}: hsload failed ({done.returncode}): {done.stderr.strip()[:400]}")
    match = re.fullmatch(r"handshakes (\d+) errors (\d+)\s*", done.stdout)
    if match is None:
        raise SystemExit(f"{kind}: hsload printed {done.stdout!r}")
    return {"handshakes": int(match.group(1)), "errors": int(match.group(2)), "generatorCpu": cpu}


def generatePython(kind: str, port: int, seconds: float, concurrency: int) -> dict[str, Any]:
    """Run handshakes of C{kind} for C{seconds}, C{concurrency} in flight; count them."""
    request = requestFor(kind, port)
    selector = selectors.DefaultSelector()
    done = errors = 0
    checked = False

    def start() -> None:
        sock = socket.socket()
        sock.setblocking(False)
        _linger(sock)
        err = sock.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
        selector.register(sock, selectors.EVENT_WRITE, [b""])

    for _ in range(concurrency):
        start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, events in selector.select(timeout=0.5):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            if events & selectors.EVENT_WRITE:
                sock.send(request)
                selector.modify(sock, selectors.EVENT_READ, key.data)
                continue
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            key.data[0] += data
            if b"\r\n\r\n" in key.data[0] or not data:
                head = key.data[0]
                selector.unregister(sock)
                sock.close()
                if data:
                    if not checked:
                        checkHead(kind, head)
                        checked = True
                    done += 1
                else:
                    errors += 1
                start()
    for key in list(selector.get_map().values()):
        selector.unregister(key.fileobj)
        key.fileobj.close()  # type: ignore[union-attr]
    return {"handshakes": done, "errors": errors}


def measure(
    daemon: Twistd, kind: str, seconds: float, concurrency: int, generator: str | None
) -> dict[str, Any]:
    """One measurement of C{kind} handshakes against C{daemon} (C{generator}: see L{generate})."""
    generate(generator, kind, daemon.port, min(1.0, seconds), concurrency)  # warm-up
    samples: list[dict[int, float]] = []

    def serverCpu() -> float:
        samples.append(daemon.cpuByProcess())
        return sum(samples[-1].values())

    def run() -> tuple[dict[str, Any], float]:
        counts = generate(generator, kind, daemon.port, seconds, concurrency)
        return counts, counts.pop("generatorCpu")

    counts, usage = measured(serverCpu, run)
    before, after = samples
    perProcess = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
    return {
        **counts,
        "wall": usage.wall,
        "perSecond": counts["handshakes"] / usage.wall,
        "serverCpu": usage.server,
        "perServerCpuSecond": ratio(counts["handshakes"], usage.server),
        "processCpu": [round(perProcess[pid], 2) for pid in sorted(perProcess)],
        "generatorCpu": usage.generators,
        "otherCpu": usage.other,
        "loadAverage": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = optionParser(__doc__, concurrency=32)
    parser.add_argument(
        "--daemon-args", default="", help="more txupgrade options for every daemon (e.g. --no-access-log)"
    )
    args = parseOptions(parser, argv)
    kinds = [k for k in args.kinds.split(",") if k]
    directory = tempfile.mkdtemp(prefix="txupgrade-bench-daemon-")
    results: dict[str, dict[str, Any]] = {}
    cpus = os.cpu_count()
    print(f"=== twistd txupgrade --workers: handshakes/s on {cpus} CPUs, load {os.getloadavg()}")
    generator = chooseGenerator(args.generator, directory)
    print(f"generator: {generatorName(generator)}")
    print(f"daemon options: --listen tcp:0:interface=127.0.0.1 {args.daemon_args}".rstrip())
    print(f"{'config':<10} {'kind':<5} {'hs/s':>8} {'hs/srv-cpu-s':>13} {'srv cpu':>8} {'per process':>22}")
    print(f"{'':<10} {'':<5} {'':>8} {'':>13} {'gen cpu':>8} {'other cpu':>10} {'errors':>7}")
    try:
        for name, extra in CONFIGS.items():
            daemon = Twistd(name, extra, directory, args.daemon_args.split())
            try:
                for kind in kinds:
                    r = measure(daemon, kind, args.seconds, args.concurrency, generator)
                    results.setdefault(name, {})[kind] = r
                    print(
                        f"{name:<10} {kind:<5} {r['perSecond']:>8.0f} {r['perServerCpuSecond']:>13.0f} "
                        f"{r['serverCpu']:>8.2f} {r['processCpu']!s:>22}"
                    )
                    print(
                        f"{'':<10} {'':<5} {'':>8} {'':>13} {r['generatorCpu']:>8.2f} "
                        f"{r['otherCpu']:>10.2f} {r['errors']:>7}"
                    )
            finally:
                daemon.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    summary = {}
    for kind in kinds:
        two, one, single = (results[c][kind] for c in ("workers=2", "workers=1", "single"))
        summary[kind] = {
            "workers2/workers1": ratio(two["perSecond"], one["perSecond"]),
            "workers2/single": ratio(two["perSecond"], single["perSecond"]),
            "perCpu workers2/single": ratio(two["perServerCpuSecond"], single["perServerCpuSecond"]),
        }
        s = {label: fmtRatio(value) for label, value in summary[kind].items()}
        print(
            f"ratio {kind}: workers=2/workers=1 {s['workers2/workers1']} (goal >= 1.6), "
            f"workers=2/single {s['workers2/single']}; per server CPU-second "
            f"workers=2/single {s['perCpu workers2/single']}"
        )
    print(f"load average at the end: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"results": results, "summary": summary, "cpus": cpus, "generator": generatorName(generator)},
                f,
                indent=2,
            )
    return 0


def optionParser(doc: str | None, concurrency: int) -> argparse.ArgumentParser:
    """The options this benchmark and C{bench_daemon_log.py} share, C{--generator} included."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[1] if doc else None)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measurement")
    parser.add_argument("--concurrency", type=int, default=concurrency, help="handshakes in flight")
    parser.add_argument("--kinds", default="echo,ws", help="echo, ws or both")
    parser.add_argument("--quick", action="store_true", help="smoke run: short, figures are noise")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--generator",
        choices=("auto", "c", "python"),
        default="auto",
        help="the load generator: hsload.c (compiled at start), the Python loop, or C if it compiles",
    )
    return parser


def parseOptions(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The options; C{--quick} makes the run short (its figures are noise)."""
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.concurrency = 0.5, 4
    return args


def chooseGenerator(choice: str, directory: str) -> str | None:
    """The C generator C{--generator} asks for, compiled; L{None} for the Python loop."""
    binary = compileGenerator(directory) if choice in ("auto", "c") else None
    if choice == "c" and binary is None:
        raise SystemExit("--generator c: no C compiler could build benchmarks/hsload.c")
    return binary


def generatorName(binary: str | None) -> str:
    """Which generator runs, for the report."""
    return (
        "C (benchmarks/hsload.c)" if binary is not None else "Python (no C compiler, or --generator python)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
