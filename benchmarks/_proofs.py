"""
Shared parts of the proof scripts (C{benchmarks/proof_*.py}): a demo server
in its own process with a statistics resource and an error tally, raw
asyncio clients, and the machine's load.

The server is what C{twistd txupgrade} serves by default (the demo tree:
C{/}, C{/echo}, the WebSocket echo at C{/ws}, C{echo} on every path), plus
C{/_stats} (JSON: RSS, tracked gc objects, open fds, log error tally) for the
driver. It stops on SIGTERM, or by itself when its driver goes away.
L{Daemon} runs the real C{twistd -n txupgrade} instead, for a proof of the
daemon's own options (its figures then come from its C{--metrics} page).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from _harness import HOST, ServerProcess, Twistd, announce, processCpu, raiseFileLimit, useCheckout

# The proofs (and their servers) import txupgrade from this checkout.
useCheckout()


def machineLoad() -> str:
    """The load averages and the CPU used by other processes, for the report."""
    import psutil

    one, five, fifteen = os.getloadavg()
    mine = {os.getpid(), *(c.pid for c in psutil.Process().children(recursive=True))}
    others = []
    for proc in psutil.process_iter(["pid", "name", "cpu_percent"]):
        if proc.info["pid"] not in mine:
            others.append(proc)
    for proc in others:
        try:
            proc.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(0.5)
    busy = 0.0
    for proc in others:
        try:
            busy += proc.cpu_percent(None)
        except psutil.Error:
            pass
    return (
        f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs; "
        f"other processes using {busy:.0f}% CPU"
    )


def proofParser(doc: str | None, serve: bool = True) -> argparse.ArgumentParser:
    """A proof's command line: its docstring as the help, and the hidden C{--serve} of its server."""
    result = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if serve:
        result.add_argument("--serve", metavar="KIND", help=argparse.SUPPRESS)
    return result


def proofArguments(
    parser: argparse.ArgumentParser,
    quickHelp: str,
    quick: dict[str, Any],
    serving: Callable[[], None] | None = None,
    check: Callable[[argparse.Namespace], str | None] = lambda args: None,
) -> argparse.Namespace:
    """
    A proof's options (its own already on C{parser}; C{--quick}, with
    C{quickHelp}, added here). With C{--serve}, run C{serving} (default:
    L{serve}) and exit; C{--quick} sets C{quick}'s values; C{check} may name
    what is wrong with them. Then L{begin}.
    """
    parser.add_argument("--quick", action="store_true", help=quickHelp)
    args = parser.parse_args()
    if getattr(args, "serve", None):
        (serving or serve)()
        raise SystemExit(0)
    if args.quick:
        vars(args).update(quick)
    problem = check(args)
    if problem:
        parser.error(problem)
    begin()
    return args


def begin() -> int:
    """A driver's start: raise the fd limit (its servers inherit it), print it and the machine's load."""
    limit = raiseFileLimit()
    print(f"machine: {machineLoad()}; fd limit {limit:,}", flush=True)
    return limit


def errorsLogged(
    unexpected: Sequence[str], prefix: str = "", what: str = "errors logged by the server", most: int = 20
) -> bool:
    """Print how many errors a server logged and the first C{most} (after C{prefix}); whether none were."""
    print(f"{prefix}{what}: {len(unexpected)}")
    for text in unexpected[:most]:
        print(text)
    return not unexpected


def finish(ok: bool) -> int:
    """A driver's end: print the machine's load and the verdict; the exit status."""
    print(f"machine: {machineLoad()}")
    print("RESULT", "OK" if ok else "FAILED")
    return 0 if ok else 1


# --------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------


class ErrorTally:
    """Counts log events that are errors: expected ones (by a predicate) and the rest."""

    def __init__(self, expected: Callable[[dict[str, Any]], str | None]) -> None:
        self.expected = expected
        self.counts: dict[str, int] = {}
        self.unexpected: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        from twisted.logger import LogLevel, formatEvent

        failure = event.get("log_failure") or event.get("failure")
        if failure is None and event.get("log_level") not in (LogLevel.error, LogLevel.critical):
            return
        kind = self.expected(event)
        if kind is not None:
            self.counts[kind] = self.counts.get(kind, 0) + 1
        elif len(self.unexpected) < 20:
            text = formatEvent(event)
            if failure is not None:
                text += "\n" + failure.getTraceback()
            self.unexpected.append(text)
        else:
            self.unexpected.append("...")


def serve(
    protocols: Iterable[Any] = (), expected: Callable[[dict[str, Any]], str | None] = lambda e: None
) -> None:
    """
    Run the demo server on 127.0.0.1 (a free port, announced as L{announce}
    does) until SIGTERM or until the parent process goes away.

    @param protocols: Protocols served on every path besides C{echo}.
    @param expected: Names the kind of an expected error event, or L{None}.
    """
    raiseFileLimit()
    import psutil
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner
    from twisted.web.resource import Resource

    from txupgrade.channel import UpgradeSite
    from txupgrade.daemon.demo import demoRoot
    from txupgrade.protocols.echo import EchoUpgrade
    from txupgrade.registry import ProtocolRegistry

    tally = ErrorTally(expected)
    globalLogBeginner.beginLoggingTo([tally], discardBuffer=True, redirectStandardIO=False)
    process = psutil.Process()

    class Stats(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            collect = request.args.get(b"collect") == [b"1"]
            if collect:
                gc.collect()
            body = {
                "rss": process.memory_info().rss,
                "objects": len(gc.get_objects()),
                "fds": process.num_fds(),
                "cpu": processCpu(process),
                "errors": tally.counts,
                "unexpected": tally.unexpected,
                "pluginFailures": site.pluginFailures.counts,
            }
            request.setHeader(b"Content-Type", b"application/json")
            return json.dumps(body).encode()

    class QuietSite(UpgradeSite):
        def log(self, request: object) -> None:
            """No access log (as in a benchmark: it would dominate)."""

    registry = ProtocolRegistry([EchoUpgrade(), *protocols])
    root = demoRoot(registry)
    root.putChild(b"_stats", Stats())
    site = QuietSite(root, registry, logPath=None)
    port = reactor.listenTCP(0, site, backlog=4096, interface=HOST)  # type: ignore[attr-defined]
    announce(port.getHost().port, reactor)
    # The reactor stops on SIGTERM (its own handler), and the process dies
    # with its driver (ServerProcess starts it with dieWithParent).
    reactor.run()  # type: ignore[attr-defined]


class Server(ServerProcess):
    """A proof's server process, started by its driver: C{python SCRIPT --serve proof}."""

    def __init__(self, script: str) -> None:
        super().__init__(script, "proof")

    def stats(self, collect: bool = False) -> dict[str, Any]:
        """The server's C{/_stats}, over a new connection."""
        return asyncio.run(fetchStats(self.port, collect))


# --------------------------------------------------------------------------
# Clients (asyncio, raw bytes)
# --------------------------------------------------------------------------

UPGRADE_ECHO = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
HEAD_101 = b"HTTP/1.1 101 Switching Protocols\r\n"


async def readHead(reader: asyncio.StreamReader) -> bytes:
    """One response head (through the empty line)."""
    return await reader.readuntil(b"\r\n\r\n")


async def readResponse(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response with a C{Content-Length} body: (status, body)."""
    head = await readHead(reader)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


async def fetchStats(port: int, collect: bool = False) -> dict[str, Any]:
    """GET C{/_stats} on a new connection."""
    reader, writer = await asyncio.open_connection(HOST, port)
    query = b"?collect=1" if collect else b""
    writer.write(b"GET /_stats%s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % query)
    status, body = await readResponse(reader)
    writer.close()
    assert status == 200, (status, body)
    return json.loads(body)  # type: ignore[no-any-return]


def wsHandshake(path: bytes = b"/ws") -> bytes:
    """A WebSocket opening handshake (RFC 6455 §4.1), no Origin (not a browser)."""
    key = base64.b64encode(os.urandom(16))
    return (
        b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, key)
    )


def wsFrame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked client frame, FIN set."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    elif length < 1 << 16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


async def wsReadFrame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await reader.readexactly(length)


# --------------------------------------------------------------------------
# The real daemon
# --------------------------------------------------------------------------

_METRICS_PORT = re.compile(
    r"txupgrade serving on tcp:127\.0\.0\.1:\d+;[^\n]*?; metrics on 127\.0\.0\.1:(\d+)$", re.M
)
_METRIC = re.compile(r"^([a-z_]+)(?:\{([^}]*)\})? ([0-9.e+-]+|NaN)$", re.M)


class Daemon(Twistd):
    """
    The harness's real C{twistd -n txupgrade} for a proof, in a directory of
    its own, its Prometheus metrics on a second free port: the daemon exactly
    as an operator starts it, with the access log off (it would dominate).

    @ivar metricsPort: The metrics page's port.
    @ivar command: The daemon's options, for the report.
    """

    def __init__(self, *args: str, startTimeout: float = 90.0) -> None:
        self._final: str | None = None
        self.directory = tempfile.mkdtemp(prefix="txupgrade-proof-")
        extra = ["--no-access-log", "--metrics", f"tcp:0:interface={HOST}", *args]
        self.command = ["twistd", "-n", "txupgrade", "--listen", f"tcp:0:interface={HOST}", *extra]
        super().__init__("twistd", extra, self.directory, timeout=startTimeout)
        self.metricsPort = self.loggedPort(_METRICS_PORT, "no metrics port")

    def text(self) -> str:
        """The daemon's log so far (all of it once stopped)."""
        return super().text() if self._final is None else self._final

    def metrics(self) -> dict[str, float]:
        """The metrics page: C{name{labels}} to value (a new connection)."""

        async def fetch() -> str:
            reader, writer = await asyncio.open_connection(HOST, self.metricsPort)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = await reader.read()
            writer.close()
            return data.split(b"\r\n\r\n", 1)[1].decode()

        text = asyncio.run(fetch())
        return {
            f"{m.group(1)}{{{m.group(2)}}}" if m.group(2) else m.group(1): float(m.group(3))
            for m in _METRIC.finditer(text)
        }

    def fds(self) -> int:
        """The daemon's open file descriptors."""
        return int(self.processes()[0].num_fds())

    def stop(self) -> None:
        """Stop it (it drains), keep its log, remove the directory."""
        super().stop()
        if self._final is None:
            self._final = self.text()
        shutil.rmtree(self.directory, ignore_errors=True)
