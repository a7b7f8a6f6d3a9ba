#!/usr/bin/env python
"""
Faults: clients that vanish at every stage, and plugins that raise in every
hook, while everyone else is served.

One server process (the demo site, plus five plugins that each raise
C{Boom} in one hook: C{negotiate}, C{buildProtocol}, and their protocol's
C{makeConnection}, C{dataReceived}, C{connectionLost}). For C{--rounds}
rounds, each round runs every fault once, each followed by normal clients
(C{GET /echo}, an C{echo} upgrade with bytes there and back, a WebSocket
echo on C{/ws}) that must be served exactly:

 - clients vanishing mid-headers, mid-body, right after the request, right
   after the C{101}, and mid-WebSocket-frame, each with a FIN (close) and
   with a RST (abort with SO_LINGER 0);
 - a client offering each raising plugin: C{500} (the connection then still
   serves a C{GET}) for C{negotiate} and C{buildProtocol}, a C{101} then a
   closed connection for C{makeConnection} and C{dataReceived}, an echo for
   C{connectionLost} (which raises when the client hangs up). (An aborted
   connection's reset may overtake its C{101}.)

The proof: every normal client served, and the server's log holds no error
but the expected plugin failures: one per round for C{dataReceived} and
C{connectionLost} (Twisted logs those); for C{negotiate}, C{buildProtocol}
and C{makeConnection}, which txupgrade rate-limits, every one counted (the
site's C{pluginFailures}) and at most one line per protocol per 10 seconds.

    python benchmarks/proof_faults.py               # 200 rounds
    python benchmarks/proof_faults.py --quick       # 5 rounds: smoke only
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
import time
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _proofs as P

from txupgrade.daemon.logs import LogRateLimit

HOOKS = ("negotiate", "buildProtocol", "makeConnection", "dataReceived", "connectionLost")


class Boom(Exception):
    """The planted failure of a raising plugin."""


def raisingPlugins() -> list[Any]:
    """One plugin per hook, raising L{Boom} there (built in the server process)."""
    from twisted.internet.protocol import Protocol
    from zope.interface import implementer

    from txupgrade.interfaces import IUpgradeProtocol
    from txupgrade.negotiation import Accept

    class BoomProtocol(Protocol):
        def __init__(self, hook: str) -> None:
            self.hook = hook

        def makeConnection(self, transport: Any) -> None:
            if self.hook == "makeConnection":
                raise Boom("makeConnection")
            super().makeConnection(transport)

        def dataReceived(self, data: bytes) -> None:
            if self.hook == "dataReceived":
                raise Boom("dataReceived")
            self.transport.write(data)

        def connectionLost(self, reason: Any = None) -> None:
            if self.hook == "connectionLost":
                raise Boom("connectionLost")

    @implementer(IUpgradeProtocol)
    class BoomUpgrade:
        version = None

        def __init__(self, hook: str) -> None:
            self.hook = hook
            self.name = _name(hook)

        def negotiate(self, request: Any) -> Accept:
            if self.hook == "negotiate":
                raise Boom("negotiate")
            return Accept()

        def buildProtocol(self, request: Any, site: object) -> Protocol:
            if self.hook == "buildProtocol":
                raise Boom("buildProtocol")
            return BoomProtocol(self.hook)

    return [BoomUpgrade(hook) for hook in HOOKS]


#: The hooks whose failures txupgrade logs rate-limited (one line per
#: protocol per LOG_INTERVAL seconds), counting each.
RATE_LIMITED = ("negotiate", "buildProtocol", "makeConnection")
LOG_INTERVAL = LogRateLimit.interval


def _name(hook: str) -> str:
    """The protocol name of the plugin raising in C{hook}."""
    return "boom-" + hook.lower()


def expectedError(event: dict[str, Any]) -> str | None:
    """The hook of a planted L{Boom}, or L{None} for any other error."""
    # Twisted's own "Unhandled Error" events (legacy log.err) carry "failure".
    failure = event.get("log_failure") or event.get("failure")
    if failure is not None and failure.check(Boom):
        return str(failure.value)
    return None


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(P.HOST, port)


def vanish(writer: asyncio.StreamWriter, reset: bool) -> None:
    """Hang up: a FIN, or a RST (SO_LINGER 0, then abort)."""
    if reset:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()


async def closedByServer(reader: asyncio.StreamReader) -> bool:
    """Whether the server closes (EOF or reset) within 10 s, reading nothing more."""
    try:
        return await asyncio.wait_for(reader.read(), 10) == b""
    except (ConnectionResetError, asyncio.IncompleteReadError):
        return True
    except asyncio.TimeoutError:
        return False


async def midHeaders(port: int, reset: bool) -> None:
    _reader, writer = await connect(port)
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgr")
    await writer.drain()
    vanish(writer, reset)


async def midBody(port: int, reset: bool) -> None:
    _reader, writer = await connect(port)
    writer.write(
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: echo\r\n"
        b"Content-Length: 100\r\n\r\n0123456789"
    )
    await writer.drain()
    vanish(writer, reset)


async def afterRequest(port: int, reset: bool) -> None:
    _reader, writer = await connect(port)
    writer.write(P.UPGRADE_ECHO + b"bytes for the echo")
    await writer.drain()
    vanish(writer, reset)


async def after101(port: int, reset: bool) -> None:
    reader, writer = await connect(port)
    writer.write(P.UPGRADE_ECHO)
    head = await P.readHead(reader)
    assert head.startswith(P.HEAD_101), head
    vanish(writer, reset)


async def midFrame(port: int, reset: bool) -> None:
    reader, writer = await connect(port)
    writer.write(P.wsHandshake())
    head = await P.readHead(reader)
    assert head.startswith(P.HEAD_101), head
    frame = P.wsFrame(b"x" * 200)
    writer.write(frame[: len(frame) // 2])
    await writer.drain()
    vanish(writer, reset)


VANISHING = {
    "mid-headers": midHeaders,
    "mid-body": midBody,
    "right after the request": afterRequest,
    "right after the 101": after101,
    "mid-WebSocket-frame": midFrame,
}


async def raisingPlugin(port: int, hook: str) -> bool:
    """Offer the plugin raising in C{hook}; whether the client saw what it should."""
    reader, writer = await connect(port)
    request = P.UPGRADE_ECHO.replace(b"Upgrade: echo", b"Upgrade: boom-" + hook.lower().encode())
    writer.write(request)
    try:
        if hook in ("negotiate", "buildProtocol"):
            status, _ = await P.readResponse(reader)
            writer.write(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            again, _ = await P.readResponse(reader)
            return status == 500 and again == 200
        if hook == "makeConnection":
            # The 101 is written, then the connection aborted: the reset may
            # overtake the 101.
            try:
                head = await P.readHead(reader)
            except (ConnectionResetError, asyncio.IncompleteReadError):
                return True
            return head.startswith(P.HEAD_101) and await closedByServer(reader)
        head = await P.readHead(reader)
        if not head.startswith(P.HEAD_101):
            return False
        writer.write(b"ping")
        if hook == "dataReceived":
            return await closedByServer(reader)
        return await reader.readexactly(4) == b"ping"
    finally:
        writer.close()


async def normalClients(port: int, n: int) -> list[str]:
    """The three normal clients; what went wrong with them (nothing, when served)."""
    problems = []
    reader, writer = await connect(port)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    status, body = await P.readResponse(reader)
    writer.close()
    if status != 200 or not body:
        problems.append(f"GET /echo: {status}")
    reader, writer = await connect(port)
    payload = b"normal %08d" % n
    writer.write(P.UPGRADE_ECHO + payload)
    head = await P.readHead(reader)
    echoed = await reader.readexactly(len(payload))
    writer.close()
    if not head.startswith(P.HEAD_101) or echoed != payload:
        problems.append(f"echo upgrade: {head[:20]!r} {echoed!r}")
    reader, writer = await connect(port)
    writer.write(P.wsHandshake() + P.wsFrame(payload))
    head = await P.readHead(reader)
    frame = await P.wsReadFrame(reader)
    writer.write(P.wsFrame((1000).to_bytes(2, "big"), opcode=0x8))
    closing = await P.wsReadFrame(reader)
    writer.close()
    if not head.startswith(P.HEAD_101) or frame != (1, payload) or closing[0] != 8:
        problems.append(f"WebSocket echo: {head[:20]!r} {frame!r}")
    return problems


async def run(port: int, rounds: int) -> bool:
    """Every fault, C{rounds} times, each followed by the normal clients."""
    served = 0
    problems: list[str] = []
    faults: Counter[str] = Counter()
    pluginOutcomes: Counter[str] = Counter()
    n = 0
    for _ in range(rounds):
        for name, fault in VANISHING.items():
            for reset in (False, True):
                await fault(port, reset)
                faults[f"{name} ({'RST' if reset else 'FIN'})"] += 1
                found = await normalClients(port, n)
                n += 1
                problems += found
                served += 3 - len(found)
        for hook in HOOKS:
            ok = await raisingPlugin(port, hook)
            pluginOutcomes[f"{hook}: {'as expected' if ok else 'WRONG'}"] += 1
            found = await normalClients(port, n)
            n += 1
            problems += found
            served += 3 - len(found)
    await asyncio.sleep(1.0)  # the server sees the last hang-ups
    print("faults:", ", ".join(f"{k} x{v}" for k, v in faults.items()))
    print("raising plugins, client side:", ", ".join(f"{k} x{v}" for k, v in sorted(pluginOutcomes.items())))
    print(f"normal clients served exactly: {served:,} of {3 * n:,}")
    for problem in problems[:10]:
        print("NOT SERVED:", problem)
    wrong = sum(v for k, v in pluginOutcomes.items() if k.endswith("WRONG"))
    return not problems and wrong == 0


def main() -> int:
    parser = P.proofParser(__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    args = P.proofArguments(
        parser, "5 rounds: smoke only", {"rounds": 5}, lambda: P.serve(raisingPlugins(), expectedError)
    )
    started = time.monotonic()
    with P.Server(os.path.abspath(__file__)) as server:
        ok = asyncio.run(run(server.port, args.rounds))
        final = server.stats()
    lines = 1 + int((time.monotonic() - started) // LOG_INTERVAL)
    logged, counted = final["errors"], final["pluginFailures"]
    print("expected plugin failures logged:", ", ".join(f"{h} x{logged.get(h, 0)}" for h in HOOKS))
    print("rate-limited ones counted:", ", ".join(f"{h} x{counted.get(_name(h), 0)}" for h in RATE_LIMITED))
    for hook in HOOKS:
        if hook in RATE_LIMITED and not (
            counted.get(_name(hook)) == args.rounds and 1 <= logged.get(hook, 0) <= lines
        ):
            print(f"FAILED: {hook}: {args.rounds} counted and 1 to {lines} logged expected")
            ok = False
        elif hook not in RATE_LIMITED and logged.get(hook, 0) != args.rounds:
            print(f"FAILED: {hook}: exactly {args.rounds} logged failures expected")
            ok = False
    what = "other errors (tracebacks) logged by the server"
    return P.finish(P.errorsLogged(final["unexpected"], what=what, most=5) and ok)


if __name__ == "__main__":
    sys.exit(main())
