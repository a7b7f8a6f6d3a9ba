"""
One C{echo} switch in memory, against one plain C{GET} on the same site.

Theory of operation
-------------------
No sockets, no reactor (like Twisted's own web benchmarks): what remains is
the Python work of one connection. Each iteration builds a fresh connection
of the same L{UpgradeSite} (the demo root, the C{echo} protocol, timeouts on
a C{Clock}, no access log) over a C{StringTransport}, feeds it one request,
then C{connectionLost}:

  - C{switch}: C{GET /} with C{Upgrade: echo}: twisted.web parses it, the
    channel negotiates, writes the C{101} and hands the connection to the
    echo protocol, which echoes a 16-byte probe sent behind the request;
  - C{get}: C{GET /echo} (the 200 of L{EchoResource}) on the same site.

The first iteration of each checks the bytes written, so that a broken path
cannot look fast. The two are timed in alternating rounds with
C{time.process_time} (this process's CPU); the report gives the CPU per
connection of each and the ratio switch/get, with the other load of each
round (see C{_harness.py}).

Run: C{python benchmarks/bench_core_memory.py} (about 10 s) or C{--quick} (a
smoke run; its figures are noise). C{--profile KIND} prints cProfile's top
functions for one round of KIND.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

if __package__ in (None, ""):
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [here, os.path.dirname(here)]

from _harness import inMemoryMain, memoryConnection, memoryReport
from twisted.internet.task import Clock

from txupgrade.channel import UpgradeSite
from txupgrade.daemon.demo import demoRoot
from txupgrade.protocols.echo import EchoUpgrade
from txupgrade.registry import ProtocolRegistry

PROBE = b"txupgrade-probe\n"
SWITCH = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n" + PROBE
GET = b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n"
SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n" + PROBE


class _QuietSite(UpgradeSite):
    def log(self, request: object) -> None:
        """No access log (as in bench_core.py's servers)."""


def connection(request: bytes) -> Callable[[], bytes]:
    """One connection of a fresh site fed C{request}, then closed; returns what it wrote."""
    protocols = ProtocolRegistry([EchoUpgrade()])
    return memoryConnection(_QuietSite(demoRoot(protocols), protocols, reactor=Clock()), request)


KINDS: dict[str, Callable[[], Callable[[], bytes]]] = {
    "switch": lambda: connection(SWITCH),
    "get": lambda: connection(GET),
}


def check(kind: str, written: bytes) -> None:
    """Refuse output that is not the expected answer of C{kind}."""
    if kind == "switch" and written != SWITCHED:
        raise SystemExit(f"switch: expected the exact 101 and the echoed probe, got {written[:300]!r}")
    if kind == "get":
        head, _, body = written.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200 ") or not body.startswith(b"echo"):
            raise SystemExit(f"get: expected the 200 of /echo, got {written[:300]!r}")


def report(results: dict[str, Any]) -> str:
    return memoryReport(
        "echo switch vs GET in memory (CPU per connection)", results, "ratio switch/get (CPU per connection)"
    )


def main(argv: list[str] | None = None) -> int:
    return inMemoryMain(argv, __doc__, KINDS, check, ("switch", "get"), report, 3000)


if __name__ == "__main__":
    sys.exit(main())
