"""
One WebSocket handshake in memory: txupgrade's switch against autobahn alone.

Theory of operation
-------------------
No sockets, no reactor: what remains is the Python work of one connection.
Each iteration feeds the same bytes to a fresh server protocol over a
C{StringTransport}:

  (a) C{txupgrade}: an L{UpgradeSite} (timeouts on a C{Clock}) with a
      L{WebSocketEndpoint} at C{/ws}; its channel gets the handshake (twisted.web
      parses it, the C{101} is written, autobahn's protocol starts OPEN), then
      a masked Close (1000), which the echo protocol answers and closes on;
      then C{connectionLost};
  (b) C{autobahn}: the same factory's own protocol (C{factory.buildProtocol}),
      fed the same handshake bytes and the same Close, then C{connectionLost}.

Both factories are the same echo, with autobahn's handshake timers off (they
would run on the global reactor). The first iteration of each checks the
bytes written (a C{101} with the right C{Sec-WebSocket-Accept}, then the
server's Close frame) so that a broken path cannot look fast.

The two are measured in alternating rounds (a, b, a, b, ...), each round
C{--iterations} connections timed with C{time.process_time} (this process's
CPU, user + system, so other load on the machine counts less than with a
wall clock); the report gives each round's CPU per handshake, the median per
kind, and the ratio txupgrade/autobahn (the goal is 0.5 or less).

Run: C{python benchmarks/bench_websocket_memory.py} (about 20 s) or
C{--quick} (a smoke run; its figures are noise). C{--profile KIND} prints
cProfile's top functions for one round of KIND.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
import io
import json
import os
import pstats
import statistics
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource

from txupgrade._wshandshake import acceptKey
from txupgrade.channel import UpgradeSite
from txupgrade.websocket import WebSocketEndpoint

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
HOST = IPv4Address("TCP", "127.0.0.1", 8080)
KEY = base64.b64encode(b"0123456789abcdef")
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8080\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + KEY + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"User-Agent: bench\r\n"
    b"\r\n"
)
#: A masked Close frame (code 1000), as a client sends it.
_MASK = b"\x01\x02\x03\x04"
CLOSE = b"\x88\x82" + _MASK + bytes(b ^ _MASK[i % 4] for i, b in enumerate(struct.pack("!H", 1000)))
#: The server's answering Close frame.
SERVER_CLOSE = b"\x88\x02" + struct.pack("!H", 1000)


class _Transport(StringTransport):
    """A C{StringTransport} that, like Twisted's real ones, lets anyone unregister no producer."""

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None


class _Echo(WebSocketServerProtocol):
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


def _factory() -> WebSocketServerFactory:
    factory = WebSocketServerFactory()
    factory.protocol = _Echo
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
    return factory


def _checkOutput(kind: str, written: bytes) -> None:
    head, sep, rest = written.partition(b"\r\n\r\n")
    if not (sep and head.startswith(b"HTTP/1.1 101 ") and b"Sec-WebSocket-Accept: " + acceptKey(KEY) in head):
        raise SystemExit(f"{kind}: no valid 101: {written[:300]!r}")
    if rest != SERVER_CLOSE:
        raise SystemExit(f"{kind}: expected the server's Close after the 101, got {rest!r}")


def txupgradeConnection() -> Callable[[], bytes]:
    """One connection through txupgrade's channel; returns what the server wrote."""
    root = Resource()
    root.putChild(b"ws", WebSocketEndpoint(_factory()))
    site = UpgradeSite(root, reactor=Clock())

    def once() -> bytes:
        transport = _Transport(hostAddress=HOST, peerAddress=PEER)
        proto = site.buildProtocol(PEER)
        proto.makeConnection(transport)
        proto.dataReceived(HANDSHAKE)
        proto.dataReceived(CLOSE)
        proto.connectionLost(_DONE)
        return transport.value()

    return once


def autobahnConnection() -> Callable[[], bytes]:
    """One connection to autobahn's own protocol; returns what it wrote."""
    factory = _factory()

    def once() -> bytes:
        transport = _Transport(hostAddress=HOST, peerAddress=PEER)
        proto = factory.buildProtocol(PEER)
        proto.makeConnection(transport)
        proto.dataReceived(HANDSHAKE)
        proto.dataReceived(CLOSE)
        proto.connectionLost(_DONE)
        return transport.value()

    return once


def _done() -> Any:
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    return Failure(ConnectionDone())


_DONE = _done()
KINDS: dict[str, Callable[[], Callable[[], bytes]]] = {
    "txupgrade": txupgradeConnection,
    "autobahn": autobahnConnection,
}


def measure(once: Callable[[], bytes], iterations: int) -> float:
    """CPU seconds per connection over C{iterations} connections."""
    gc.collect()
    start = time.process_time()
    for _ in range(iterations):
        once()
    return (time.process_time() - start) / iterations


def run(iterations: int, rounds: int) -> dict[str, Any]:
    connections = {kind: make() for kind, make in KINDS.items()}
    for kind, once in connections.items():
        _checkOutput(kind, once())
        measure(once, max(1, iterations // 10))  # warm-up
    perRound: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(rounds):
        for kind, once in connections.items():
            perRound[kind].append(measure(once, iterations))
    medians = {kind: statistics.median(values) for kind, values in perRound.items()}
    return {
        "iterations": iterations,
        "rounds": rounds,
        "perRound": perRound,
        "median": medians,
        "ratio": medians["txupgrade"] / medians["autobahn"],
    }


def _machineLoad() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "unknown"
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def report(results: dict[str, Any]) -> str:
    lines = [
        "=== WebSocket handshake in memory (CPU per connection: handshake + close) ===",
        f"{results['rounds']} rounds of {results['iterations']} connections per kind, alternating; "
        f"machine: {_machineLoad()}",
    ]
    for kind in KINDS:
        rounds = " ".join(f"{value * 1e6:.1f}" for value in results["perRound"][kind])
        lines.append(f"{kind:<10} median {results['median'][kind] * 1e6:8.1f} µs   (rounds: {rounds})")
    lines.append(f"ratio txupgrade/autobahn (CPU per handshake): {results['ratio']:.3f}x (goal <= 0.5x)")
    return "\n".join(lines)


def profile(kind: str, iterations: int) -> str:
    once = KINDS[kind]()
    once()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(iterations):
        once()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run (figures are noise)")
    parser.add_argument("--iterations", type=int, default=None, help="connections per round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per kind")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--profile", metavar="KIND", choices=sorted(KINDS), help="cProfile one round of KIND")
    args = parser.parse_args(argv)
    iterations = args.iterations or (20 if args.quick else 2000)
    rounds = args.rounds or (2 if args.quick else 5)
    if args.profile:
        print(profile(args.profile, iterations))
        return 0
    results = run(iterations, rounds)
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
