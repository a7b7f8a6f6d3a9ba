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

import base64
import os
import struct
import sys
from collections.abc import Callable
from typing import Any

if __package__ in (None, ""):
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [here, os.path.dirname(here)]

from _harness import inMemoryMain, memoryConnection, memoryReport
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from txupgrade.channel import UpgradeSite
from txupgrade.protocols.websocket import WebSocketEndpoint
from txupgrade.protocols.websocket._handshake import acceptKey

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
    return memoryConnection(UpgradeSite(root, reactor=Clock()), HANDSHAKE, CLOSE)


def autobahnConnection() -> Callable[[], bytes]:
    """One connection to autobahn's own protocol; returns what it wrote."""
    return memoryConnection(_factory(), HANDSHAKE, CLOSE)


KINDS: dict[str, Callable[[], Callable[[], bytes]]] = {
    "txupgrade": txupgradeConnection,
    "autobahn": autobahnConnection,
}


def report(results: dict[str, Any]) -> str:
    return memoryReport(
        "WebSocket handshake in memory (CPU per connection: handshake + close)",
        results,
        "ratio txupgrade/autobahn (CPU per handshake)",
        "<= 0.5x",
    )


def main(argv: list[str] | None = None) -> int:
    return inMemoryMain(argv, __doc__, KINDS, _checkOutput, ("txupgrade", "autobahn"), report, 2000)


if __name__ == "__main__":
    sys.exit(main())
