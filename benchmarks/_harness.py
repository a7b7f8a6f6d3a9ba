"""
What every benchmark and proof script shares: server processes (and the
real C{twistd txupgrade}), CPU sampling (one definition of "other load" for
all), timing windows, blocking client reads, in-memory rounds, and the
report's numbers and ratios.

Other load
----------
In a window, the machine's CPU time spent running processes (user, nice and
system time of every core, from C{psutil.cpu_times()}) minus the CPU time of
the processes the benchmark names (the server, the load generators), as a
share of one core. Interrupt and softirq time is left out, as in a process's
own CPU time: on loopback it is mostly the benchmark's own traffic, charged
to no process. Steal is left out too (the hypervisor's, not the machine's).

A server process prints C{READY <port> <reactor>} (L{announce}) as its first
line; everything it prints afterwards goes to a file and is reported (a
benchmark server should print nothing per request).
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import re
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

HOST = "127.0.0.1"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def useCheckout() -> None:
    """Import txupgrade from this checkout, before any installed copy (as L{ServerProcess}'s servers do)."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)


def say(*parts: object) -> None:
    """Print and flush (a benchmark's progress shows while it runs)."""
    print(*parts, flush=True)


# ---------------------------------------------------------------------------
# Server processes


def raiseFileLimit(wanted: int | None = None) -> int:
    """Raise the soft C{RLIMIT_NOFILE} to C{wanted} (default: the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = (1 << 20) if hard == resource.RLIM_INFINITY else hard
    target = ceiling if wanted is None else min(wanted, ceiling)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def dieWithParent() -> None:
    """Ask Linux to send this process C{SIGTERM} when its parent dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def discardLogs() -> None:
    """
    Start Twisted's logging with an observer that drops every event: events
    the code emits are still built, but not kept in the start-up buffer.
    """
    from twisted.logger import globalLogBeginner

    globalLogBeginner.beginLoggingTo([lambda event: None], discardBuffer=True, redirectStandardIO=False)


#: The environment variable that tells a server where to write its profile.
PROFILE_ENV = "BENCH_PROFILE"


def profileOnSignals(path: str | None = None) -> None:
    """
    In a server: cProfile from C{SIGUSR1} to C{SIGUSR2}, the stats then
    written to C{path} (default: the L{PROFILE_ENV} variable; none: no-op).
    """
    path = path or os.environ.get(PROFILE_ENV)
    if not path:
        return
    import cProfile

    state: dict[str, Any] = {}

    def start(signum: int, frame: object) -> None:
        state["profile"] = cProfile.Profile()
        state["profile"].enable()

    def stop(signum: int, frame: object) -> None:
        profile = state.pop("profile", None)
        if profile is not None:
            profile.disable()
            profile.dump_stats(path + ".tmp")
            os.replace(path + ".tmp", path)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


def announce(port: int, reactor: object) -> None:
    """In a server: the line L{ServerProcess} waits for."""
    print(f"READY {port} {type(reactor).__name__}", flush=True)


def serveSite(makeSite: Callable[[], Any]) -> None:
    """
    In a server: the site C{makeSite()} builds (called once the epoll
    reactor is installed and log events are discarded), its access log off,
    on C{HOST} (a free port, backlog 1024); profiled on signals
    (L{profileOnSignals}), announced (L{announce}), run until stopped.
    """
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor

    discardLogs()
    site = makeSite()
    site.log = lambda request: None
    running: Any = reactor
    port = running.listenTCP(0, site, backlog=1024, interface=HOST)
    profileOnSignals()
    announce(port.getHost().port, reactor)
    running.run()


async def asgiLifespan(receive: Any, send: Any) -> None:
    """An ASGI app's C{lifespan} scope: startup and shutdown acknowledged, until the shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def serveHypercorn(app: Any, errorlog: str | None = None) -> None:
    """
    In a server: hypercorn serving the ASGI C{app} on C{HOST} (a free port),
    one worker, asyncio, C{keep_alive_max_requests} raised (so that a load
    generator's connections are not closed after 1,000 requests), access log
    off, its error log to C{errorlog} (none by default), backlog 1024;
    profiled on signals (L{profileOnSignals}), announced (L{announce}) once
    it accepts connections, run until stopped.
    """
    import asyncio

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    sock.close()
    config = Config()
    config.bind = [f"{HOST}:{port}"]
    config.keep_alive_max_requests = 1 << 30
    config.accesslog = None
    config.errorlog = errorlog
    config.backlog = 1024
    profileOnSignals()

    async def main() -> None:
        task = asyncio.ensure_future(serve(app, config))
        for _ in range(500):
            try:
                socket.create_connection((HOST, port), 0.1).close()
                break
            except OSError:
                await asyncio.sleep(0.01)
        announce(port, asyncio.get_event_loop())
        await task

    asyncio.run(main())


class ServerProcess:
    """
    One benchmark server: C{python SCRIPT --serve KIND ...}, its output in a
    temporary file, ready once it printed L{announce}'s line; it gets
    C{SIGTERM} if the driver dies (L{dieWithParent}).

    @ivar port: The port it listens on.
    @ivar reactor: Its reactor's class name.
    @ivar pid: Its process id.
    """

    def __init__(
        self,
        script: str,
        kind: str,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        timeout: float = 30.0,
        profilePath: str | None = None,
    ) -> None:
        import psutil

        self.kind = kind
        self.profilePath = profilePath
        self.output = tempfile.NamedTemporaryFile(prefix=f"bench-{kind}-", suffix=".log", delete=False)
        environ = dict(os.environ if env is None else env)
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, environ.get("PYTHONPATH")]))
        environ["PYTHONUNBUFFERED"] = "1"
        if profilePath:
            environ[PROFILE_ENV] = profilePath
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(script), "--serve", kind, *args],
            stdout=self.output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environ,
            start_new_session=True,
            preexec_fn=dieWithParent,
        )
        self.pid = self.process.pid
        self.port = 0
        self.reactor = ""
        try:
            self._waitReady(timeout)
            self.ps = psutil.Process(self.pid)
        except BaseException:
            self.stop()
            raise

    def _waitReady(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if text.startswith("READY ") and "\n" in text:
                _, port, self.reactor = text.split("\n", 1)[0].split()
                self.port = int(port)
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"server {self.kind} exited with {self.process.returncode}:\n{text}")
            time.sleep(0.02)
        raise RuntimeError(f"server {self.kind} not ready after {timeout} s:\n{self.text()}")

    def text(self) -> str:
        """Everything it printed so far."""
        with open(self.output.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def extraOutput(self) -> str:
        """Whatever it printed after its C{READY} line (should be nothing)."""
        return self.text().partition("\n")[2]

    def cpu(self) -> float:
        """Its CPU seconds so far, user + system."""
        return processCpu(self.ps)

    def rss(self) -> int:
        """Its resident set size, in bytes."""
        return int(self.ps.memory_info().rss)

    def waitProfile(self, timeout: float = 30.0) -> str | None:
        """Wait until the server wrote its profile (after C{SIGUSR2}); its path, if any."""
        if not self.profilePath:
            return None
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.profilePath) and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.profilePath

    def profiled(self, dest: str, run: Callable[[], Any]) -> Any:
        """
        Run C{run()} with the server's profiler on (when started with a
        C{profilePath}); the stats are then moved to C{dest}.
        """
        if not self.profilePath:
            return run()
        if os.path.exists(self.profilePath):
            os.unlink(self.profilePath)
        os.kill(self.pid, signal.SIGUSR1)
        try:
            return run()
        finally:
            os.kill(self.pid, signal.SIGUSR2)
            if self.waitProfile():
                os.replace(self.profilePath, dest)

    def stop(self) -> None:
        """C{SIGTERM}, then C{SIGKILL} after 5 s; remove the output file."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.output.close()
        try:
            os.unlink(self.output.name)
        except OSError:
            pass

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: How a benchmark runs twistd: the interpreter running the benchmark, with the checkout first.
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
_SERVING = re.compile(r"txupgrade serving on tcp:127\.0\.0\.1:(\d+)")
_WORKER_SERVING = re.compile(r"\[worker (\d+)\|[^\]]*\] txupgrade serving on")


class Twistd:
    """
    A real C{twistd -n txupgrade --listen tcp:0:interface=127.0.0.1} (the
    daemon as an operator runs it), its log in a file in C{directory}; ready
    once it logged where it serves (and every C{--workers} worker did); it
    gets C{SIGTERM} if the driver dies (L{dieWithParent}).

    @ivar port: The port of its C{tcp:} listener.
    @ivar workers: How many workers it runs (0: it serves in one process).
    """

    def __init__(
        self,
        name: str,
        extra: Sequence[str],
        directory: str,
        common: Sequence[str] = (),
        command: Sequence[str] | None = None,
        timeout: float = 90.0,
    ) -> None:
        self.name = name
        self.log = os.path.join(directory, re.sub(r"[^\w.-]+", "-", name) + ".log")
        args = [*(command or TWISTD), "-n", "--pidfile=", f"--logfile={self.log}", "txupgrade"]
        args += ["--listen", f"tcp:0:interface={HOST}", *extra, *common]
        self.workers = int(extra[list(extra).index("--workers") + 1]) if "--workers" in extra else 0
        self.process = subprocess.Popen(
            args, cwd=directory, stdin=subprocess.DEVNULL, preexec_fn=dieWithParent
        )
        self.port = self._waitServing(timeout)

    def text(self) -> str:
        """Its log so far."""
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def _waitServing(self, seconds: float) -> int:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            text = self.text()
            match = _SERVING.search(text)
            if match and len(set(_WORKER_SERVING.findall(text))) >= self.workers:
                return int(match.group(1))
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited: {text[-2000:]}")
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"{self.name} did not start in {seconds} s: {self.text()[-2000:]}")

    def loggedPort(self, pattern: re.Pattern[str], what: str) -> int:
        """The port (C{pattern}'s first group) its start-up line names; without one, stop it and exit."""
        match = pattern.search(self.text())
        if match is None:
            self.stop()
            raise SystemExit(f"{self.name}: {what} in its start-up line: {self.text()[-2000:]}")
        return int(match.group(1))

    def tracebacks(self) -> list[str]:
        """Every traceback and C{Unhandled} error in its log, with the lines around it (should be none)."""
        lines = self.text().splitlines()
        found = []
        for i, line in enumerate(lines):
            if "Traceback (most recent call last)" in line or "Unhandled Error" in line:
                found.append("\n".join(lines[max(0, i - 1) : i + 12]))
        return found

    def processes(self) -> list[Any]:
        """The supervisor (or single process) and its workers, as C{psutil.Process}es."""
        import psutil

        main = psutil.Process(self.process.pid)
        return [main, *main.children()]

    def cpuByProcess(self) -> dict[int, float]:
        """CPU seconds (user + system) of each of L{processes}, by pid."""
        return {process.pid: processCpu(process) for process in self.processes()}

    def cpu(self) -> float:
        """CPU seconds of all its processes."""
        return sum(self.cpuByProcess().values())

    def stop(self) -> None:
        """C{SIGTERM} (it drains), then every process of it killed after 30 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                for process in self.processes():
                    process.kill()
                self.process.wait(5)

    def __enter__(self) -> Twistd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# CPU sampling and timing windows


def percentile(values: Sequence[float], p: float) -> float:
    """The C{p}-th percentile (nearest rank) of C{values}; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def runMeasured(args: Sequence[str], timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run C{args} to its end, its output captured as text; with the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def processCpu(process: Any) -> float:
    """CPU seconds, user + system, of a C{psutil.Process} (children not included)."""
    times = process.cpu_times()
    return float(times.user + times.system)


def machineCpu() -> float:
    """CPU seconds the whole machine spent running processes (see the module's "Other load")."""
    import psutil

    times = psutil.cpu_times()
    return float(times.user + times.nice + times.system)


@dataclass
class Usage:
    """
    Who used the CPU during one window, in CPU seconds.

    @ivar wall: The window's length, in seconds.
    @ivar server: The server's CPU.
    @ivar generators: The load generators' CPU (their sum).
    @ivar other: Everything else the machine ran meanwhile ("other load").
    """

    wall: float
    server: float
    generators: float
    other: float

    def share(self, cpu: float) -> float:
        """C{cpu} as a share of one core over the window."""
        return cpu / self.wall if self.wall > 0 else math.nan

    def shares(self) -> tuple[float, float, float]:
        """The server's, the generators' and the other load's shares of one core."""
        return self.share(self.server), self.share(self.generators), self.share(self.other)

    def describe(self) -> str:
        """The CPU check printed with every measurement."""
        server, generators, other = (pct(x) for x in self.shares())
        return f"server CPU {server}, generator CPU {generators}, other load {other}"

    def __add__(self, other: Usage) -> Usage:
        """Two windows' usage together (as one window as long as both)."""
        return Usage(
            *(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True))
        )


def measured(serverCpu: Callable[[], float], run: Callable[[], tuple[T, float]]) -> tuple[T, Usage]:
    """
    Run C{run()} (which returns its result and the load generator's CPU
    seconds) as one timing window; with who used the CPU meanwhile: the
    server (C{serverCpu()} before and after), the generator, the other load.
    """
    serverBefore, machineBefore, start = serverCpu(), machineCpu(), time.monotonic()
    result, generator = run()
    wall = time.monotonic() - start
    server = serverCpu() - serverBefore
    return result, Usage(wall, server, generator, max(0.0, machineCpu() - machineBefore - server - generator))


class CpuWindow:
    """
    A timing window, opened at construction: the wall clock, the machine's
    CPU, and the CPU of the server and of the load generators (process ids;
    this process by default). The CPU of C{peers} (other servers measured
    in their own windows at the same time) is not "other load".
    """

    def __init__(
        self, server: int | None, generators: Iterable[int] | None = None, peers: Iterable[int] = ()
    ) -> None:
        import psutil

        self._server = psutil.Process(server) if server is not None else None
        pids = [os.getpid()] if generators is None else list(generators)
        self._generators = [psutil.Process(pid) for pid in pids]
        self._peers = [psutil.Process(pid) for pid in peers]
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float, float, float]:
        server = processCpu(self._server) if self._server is not None else 0.0
        generators = sum(processCpu(p) for p in self._generators)
        peers = sum(processCpu(p) for p in self._peers)
        return time.monotonic(), server, generators, peers, machineCpu()

    def close(self) -> Usage:
        """The usage since the window opened."""
        end = self._sample()
        wall, server, generators, peers, machine = (b - a for a, b in zip(self.start, end, strict=True))
        return Usage(wall, server, generators, max(0.0, machine - server - generators - peers))


def sleepUntil(moment: float) -> None:
    """Sleep until C{time.monotonic()} reaches C{moment}."""
    time.sleep(max(0.0, moment - time.monotonic()))


class PollWindow:
    """
    A load generator's side of a timing window (C{startAt}, C{deadline} on the
    monotonic clock): its poll loop runs before the window too (warm-up), but
    only what completes once L{started} is counted (L{done}).
    """

    def __init__(self, startAndEnd: tuple[float, float]) -> None:
        self.startAt, self.deadline = startAndEnd
        self.started = False
        self.done = 0
        self.t0 = 0.0
        self.now = time.monotonic()

    def count(self, n: int = 1) -> None:
        """C{n} more done now: counted once the window has started."""
        if self.started:
            self.done += n

    def events(self, poller: select.epoll, limit: float) -> Iterator[tuple[int, int]]:
        """C{poller}'s events, (fd, mask), until the window is over: its deadline, or C{limit} done."""
        while True:
            events = poller.poll(0.05)
            self.now = time.monotonic()
            if not self.started and self.now >= self.startAt:
                self.started, self.t0 = True, self.now
            if self.started and (self.now >= self.deadline or self.done >= limit):
                return
            yield from events

    def result(self, **figures: Any) -> dict[str, Any]:
        """What the driver gets: C{figures}, and when counting started and stopped."""
        return {**figures, "t0": self.t0, "t1": self.now}


def windowFigures(done: float, usage: Usage, **extra: float) -> dict[str, float]:
    """A window's figures for a report: C{done} per server CPU-second and per second, and the CPU check."""
    server, generator, other = usage.shares()
    return {
        **extra,
        "wall": usage.wall,
        "server": usage.server,
        "perCpu": ratio(done, usage.server),
        "perWall": ratio(done, usage.wall),
        "serverShare": server,
        "generatorShare": generator,
        "otherShare": other,
    }


def figuresLine(
    label: str, width: int, name: str, figures: dict[str, float], unit: str = "", generator: str = "generator"
) -> str:
    """
    A progress line of one window's L{windowFigures} for server C{name}:
    C{unit}s per server CPU-second and per second, and the CPU check (the
    load generator called C{generator}); C{label} padded to C{width}.
    """
    server, generated, other = (pct(figures[key]) for key in ("serverShare", "generatorShare", "otherShare"))
    return (
        f"  {label:{width}} {name:10} {figures['perCpu']:9,.0f}{unit}/CPU-s"
        f" {figures['perWall']:9,.0f}{unit}/s"
        f"  (server CPU {server}, {generator} {generated}, other load {other})"
    )


# ---------------------------------------------------------------------------
# Blocking clients


class BadAnswer(Exception):
    """A server answered other than the benchmark expects (a broken server must not look fast)."""


def recvUntil(sock: socket.socket, done: Callable[[bytes], bool], data: bytes = b"") -> bytes:
    """Read from the blocking C{sock} onto C{data} until C{done(data)}; L{BadAnswer} if it closes first."""
    while not done(data):
        chunk = sock.recv(65536)
        if not chunk:
            raise BadAnswer(f"connection closed early, after {data[:200]!r}")
        data += chunk
    return data


def readHead(sock: socket.socket, expect: bytes = b"", alone: bool = False) -> tuple[bytes, bytes]:
    """
    A response head from the blocking C{sock} (without its empty line), and
    what came after it; L{BadAnswer} unless the head starts with C{expect}
    (and, when C{alone}, nothing came after it).
    """
    head, _, rest = recvUntil(sock, lambda data: b"\r\n\r\n" in data).partition(b"\r\n\r\n")
    if not head.startswith(expect):
        raise BadAnswer(f"expected {expect!r}, got {head[:200]!r}")
    if alone and rest:
        raise BadAnswer(f"unexpected bytes after the head: {rest[:100]!r}")
    return head, rest


# ---------------------------------------------------------------------------
# In-memory micro-benchmarks


def cpuPerOperation(once: Callable[[], object], iterations: int) -> float:
    """This process's CPU seconds per call of C{once}, over C{iterations} calls."""
    gc.collect()
    start = time.process_time()
    for _ in range(iterations):
        once()
    return (time.process_time() - start) / iterations


@dataclass
class Rounds:
    """
    Alternating rounds of in-memory operations: CPU per operation per kind.

    @ivar perRound: C{{kind: [CPU seconds per operation, one per round]}}.
    @ivar other: The other load (share of a core) in each round.
    """

    iterations: int
    perRound: dict[str, list[float]] = field(default_factory=dict)
    other: list[float] = field(default_factory=list)

    def median(self, kind: str) -> float:
        """The median over rounds of C{kind}'s CPU per operation."""
        return statistics.median(self.perRound[kind])

    def ratio(self, kind: str, baseline: str) -> float:
        """C{kind}'s median CPU per operation over C{baseline}'s."""
        return ratio(self.median(kind), self.median(baseline))

    def json(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "rounds": len(self.other),
            "perRound": self.perRound,
            "median": {kind: self.median(kind) for kind in self.perRound},
            "other": self.other,
        }


def alternatingRounds(kinds: dict[str, Callable[[], object]], iterations: int, rounds: int) -> Rounds:
    """
    Warm each kind up, then time C{rounds} rounds of C{iterations} calls per
    kind, alternating kinds (so that other load hits them alike).
    """
    for once in kinds.values():
        cpuPerOperation(once, max(1, iterations // 10))
    result = Rounds(iterations, {kind: [] for kind in kinds})
    for _ in range(rounds):
        window = CpuWindow(None)
        for kind, once in kinds.items():
            result.perRound[kind].append(cpuPerOperation(once, iterations))
        usage = window.close()
        result.other.append(usage.share(usage.other))
    return result


def memoryConnection(factory: Any, *chunks: bytes) -> Callable[[], bytes]:
    """
    A call that builds one connection of C{factory} over a fresh in-memory
    transport, feeds it C{chunks} one C{dataReceived} each, closes it
    (C{connectionLost}), and returns what the server wrote.
    """
    from twisted.internet.address import IPv4Address
    from twisted.internet.error import ConnectionDone
    from twisted.internet.testing import StringTransport
    from twisted.python.failure import Failure

    class Transport(StringTransport):
        """Like Twisted's real transports, lets anyone unregister no producer."""

        def unregisterProducer(self) -> None:
            self.producer = None
            self.streaming = None

    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    host = IPv4Address("TCP", "127.0.0.1", 8080)
    done = Failure(ConnectionDone())

    def once() -> bytes:
        transport = Transport(hostAddress=host, peerAddress=peer)
        proto = factory.buildProtocol(peer)
        proto.makeConnection(transport)
        for chunk in chunks:
            proto.dataReceived(chunk)
        proto.connectionLost(done)
        written: bytes = transport.value()
        return written

    return once


def profileRound(once: Callable[[], object], iterations: int) -> str:
    """cProfile's top functions (by own time) over C{iterations} calls of C{once}."""
    import cProfile
    import io
    import pstats

    once()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(iterations):
        once()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


def memoryReport(title: str, results: dict[str, Any], ratioLabel: str, goal: str = "") -> str:
    """The report of an in-memory benchmark (L{inMemoryMain}'s results)."""
    lines = [
        f"=== {title} ===",
        f"{results['rounds']} rounds of {results['iterations']} connections per kind, alternating;"
        f" {machineLine()}; other load per round: {' '.join(pct(x) for x in results['other'])}",
    ]
    width = max(len(kind) for kind in results["median"])
    for kind, values in results["perRound"].items():
        rounds = " ".join(f"{value * 1e6:.2f}" for value in values)
        lines.append(
            f"{kind:<{width}} median {results['median'][kind] * 1e6:8.2f} us/conn   (rounds: {rounds})"
        )
    lines.append(f"{ratioLabel}: {results['ratio']:.3f}x" + (f" (goal {goal})" if goal else ""))
    note = otherLoadNote(results["other"])
    if note:
        lines.append(note)
    return "\n".join(lines)


def inMemoryMain(
    argv: list[str] | None,
    doc: str | None,
    kinds: dict[str, Callable[[], Callable[[], bytes]]],
    check: Callable[[str, bytes], None],
    pair: tuple[str, str],
    report: Callable[[dict[str, Any]], str],
    iterations: int,
) -> int:
    """
    The command line of an in-memory benchmark: C{kinds} maps each kind to a
    maker of its one-connection call, whose first output C{check} verifies;
    the rounds alternate kinds, the ratio is C{pair[0]} over C{pair[1]}, and
    C{report} (usually with L{memoryReport}) prints the results.
    """
    import argparse
    import json

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run (figures are noise)")
    parser.add_argument("--iterations", type=int, default=None, help="connections per round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per kind")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--profile", metavar="KIND", choices=sorted(kinds), help="cProfile one round of KIND")
    args = parser.parse_args(argv)
    count = args.iterations or (20 if args.quick else iterations)
    rounds = args.rounds or (2 if args.quick else 5)
    if args.profile:
        print(profileRound(kinds[args.profile](), count))
        return 0
    connections = {kind: make() for kind, make in kinds.items()}
    for kind, once in connections.items():
        check(kind, once())
    result = alternatingRounds(connections, count, rounds)
    results = {**result.json(), "ratio": result.ratio(*pair)}
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


# ---------------------------------------------------------------------------
# Numbers and ratios in reports


def ratio(a: float, b: float) -> float:
    """C{a / b}, NaN when either is NaN or C{b} is 0."""
    if math.isnan(a) or math.isnan(b) or b == 0:
        return math.nan
    return a / b


def fmtRatio(value: float) -> str:
    """A ratio as C{1.23x}."""
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def ratioRange(ours: Sequence[float], theirs: Sequence[float]) -> str:
    """The ratio of each round's pair, as min-max."""
    values = [r for a, b in zip(ours, theirs, strict=True) if math.isfinite(r := ratio(a, b))]
    if not values:
        return "nan"
    lo, hi = min(values), max(values)
    return f"{lo:.2f}" if len(values) == 1 else f"{lo:.2f}-{hi:.2f}"


def fmt(x: float, digits: int = 0) -> str:
    """A number with thousands separators."""
    return "nan" if not math.isfinite(x) else f"{x:,.{digits}f}"


def pct(x: float) -> str:
    """A share as a percentage."""
    return "nan" if not math.isfinite(x) else f"{100 * x:.0f}%"


#: Other load above this share of a core (on average) makes wall-clock figures unreliable.
OTHER_LOAD_WARNING = 0.25


def otherLoadNote(shares: Sequence[float]) -> str | None:
    """A warning when the other load (shares of a core) was high during the measurements."""
    values = [s for s in shares if math.isfinite(s)]
    if not values:
        return None
    mean = sum(values) / len(values)
    if mean <= OTHER_LOAD_WARNING and max(values) <= 2 * OTHER_LOAD_WARNING:
        return None
    return (
        f"NOTE: other load took {pct(mean)} of a core on average (up to {pct(max(values))}) during"
        " the measurements: the machine was shared, so wall-clock figures are depressed and CPU"
        " figures noisier; compare per-CPU figures, and rerun on a quiet machine for final ones."
    )


def machineLine() -> str:
    """Python, CPUs and load average, for a report's header."""
    try:
        one, five, _ = os.getloadavg()
        load = f"load average {one:.2f} (1 min), {five:.2f} (5 min)"
    except OSError:
        load = "load average unknown"
    return f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {load}"
