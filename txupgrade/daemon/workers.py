"""
C{twistd txupgrade --workers N}: N worker processes serving the same
listening sockets.

The supervisor (the C{twistd} process the operator started) binds every
C{--listen} endpoint once, before its reactor runs, and never accepts on
them. It starts N workers, each a C{twistd txupgrade} with the same settings,
handing each the listening file descriptors (C{spawnProcess} with
C{childFDs}); a worker adopts them (C{adoptStreamPort}, Twisted's documented
pattern), re-applying the C{haproxy:} wrapper and TLS of the description
itself. The kernel's one accept queue per socket then spreads connections
over whichever workers are free to accept.

The supervisor starts a worker again when it dies (after
L{txupgrade.daemon.workerplan.restartDelay}), puts every worker's log lines in its
own log (their system reads C{worker N|...}; in JSON, C{workerIndex} and
C{workerPid} are fields), and on C{SIGTERM} or
C{SIGINT} closes its copies of the sockets, sends C{SIGTERM} to every worker
(each stops accepting and drains as a single C{twistd txupgrade} does) and
exits once all have, killing any still running after the drain timeout and a
margin. A worker whose supervisor is gone (even killed) sees the end of its
control socket and stops too. With C{--metrics}, the supervisor serves the
metrics page and asks each worker for its figures over the same socket.

A worker formats its own log lines, in the supervisor's format, and writes
them to its standard output in batches (every L{BatchedOutput.delay}
seconds while its reactor runs); the supervisor appends whole lines to its
log output as they come, without reading them: one read and one write per
batch, not per line. Only when the supervisor has no output of its own
(C{--syslog}) do workers send JSON events, which it parses and re-emits.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO, Any, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.error import ConnectionDone, ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory, ProcessProtocol, connectionDone
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    eventAsJSON,
    eventFromJSON,
    formatEventAsClassicLogText,
    globalLogPublisher,
    jsonFileLogObserver,
    textFileLogObserver,
)
from twisted.protocols.basic import NetstringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from txupgrade.daemon.limits import Limits
from txupgrade.daemon.logs import BatchedOutput
from txupgrade.daemon.service import (
    DaemonError,
    DaemonService,
    badEndpoint,
    extraText,
    listenerText,
    listenExtra,
    upgradeCertificateWarnings,
    warnCertificates,
)
from txupgrade.daemon.workerplan import (
    ENVIRONMENT,
    STABLE_AFTER,
    SharedListener,
    WorkerSpec,
    endpointKind,
    restartDelay,
    shareable,
    splitWrappers,
    workerArguments,
)

__all__ = [
    "ListenError",
    "Supervisor",
    "WorkerService",
    "buildService",
    "isWorker",
    "watchSupervisor",
    "workerEndpoint",
    "workerLogObserver",
    "workerSpecFromEnvironment",
]

_log = Logger(namespace="txupgrade.workers")

#: How a worker's C{twistd} is run: the same Python, so the same packages.
TWISTD = ["-c", "from twisted.scripts.twistd import run; run()"]

#: The first descriptor number of the listeners in a worker (3 is the control socket).
_FIRST_LISTENER_FD = 4
_CONTROL_FD = 3

#: Seconds a worker still gets after the drain timeout before C{SIGKILL}.
STOP_MARGIN = 5.0

#: Tells a worker how to write its log (C{KIND:INDEX}): C{text} or C{json}
#: lines for the supervisor to append, or C{events} (JSON events to parse
#: and re-emit); and its index, for the lines' system C{worker INDEX|...}.
LOG_ENVIRONMENT = "TXUPGRADE_WORKER_LOG"

#: Settings the supervisor does not pass on: it binds the listeners, and
#: tells each worker how to log through L{LOG_ENVIRONMENT}.
_NOT_PASSED_ON = ("listen", "workers", "log-format")

_FAMILIES = {"INET": socket.AF_INET, "INET6": socket.AF_INET6, "UNIX": socket.AF_UNIX}


class ListenError(DaemonError):
    """A listener cannot be bound or shared; C{str()} is one line naming it."""


def _family(address: Any) -> str:
    kind = getattr(address, "type", None)
    if kind == "TCP6" or type(address).__name__ == "IPv6Address":
        return "INET6"
    if kind == "TCP":
        return "INET"
    if type(address).__name__ == "UNIXAddress":
        return "UNIX"
    raise ListenError(f"cannot share a listener on {address!r} with workers")


class _NeverAccepts(Factory):
    """The supervisor's listening ports never read: their workers accept."""

    noisy = False

    def logPrefix(self) -> str:
        return "txupgrade supervisor (shared with its workers)"

    def buildProtocol(self, addr: Any) -> None:  # pragma: no cover - the port never reads
        return None


def _bindNow(reactor: Any, description: str) -> IListeningPort:
    """Bind C{description} now, or raise L{ListenError} (one line)."""
    refusal = shareable(description)
    if refusal is not None:
        raise ListenError(f"--listen {description}: {refusal}")
    try:
        endpoint = serverFromString(reactor, description)
    except Exception as error:  # noqa: BLE001 - Twisted's parsers raise various errors
        raise ListenError(badEndpoint(description, error)) from None
    outcome: list[Any] = []
    endpoint.listen(_NeverAccepts()).addBoth(outcome.append)
    if not outcome:
        raise ListenError(f"--listen {description}: the endpoint did not listen at once")
    if isinstance(outcome[0], Failure):
        reason = outcome[0].value
        socketError = getattr(reason, "socketError", None)
        raise ListenError(f"cannot listen on {description}: {socketError or reason}")
    port: IListeningPort = outcome[0]
    port.stopReading()  # type: ignore[attr-defined]
    return port


class _WorkerProcess(ProcessProtocol):
    """One running worker: relays its log lines, reports its end to the supervisor."""

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.pid: int | None = None
        self.startedAt = 0.0
        self.ended: Deferred[None] = Deferred()
        self._buffers = {1: b"", 2: b""}

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 1 and self.supervisor.logOutput is not None:
            # Formatted lines: append the whole ones, keep the rest for later.
            whole, newline, rest = (self._buffers[1] + data).rpartition(b"\n")
            self._buffers[1] = rest
            if newline:
                self.supervisor.appendLog(whole + newline)
            return
        lines = (self._buffers.get(childFD, b"") + data).split(b"\n")
        self._buffers[childFD] = lines.pop()
        for line in lines:
            self.supervisor.relay(self, line)

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._buffers.items():
            if rest and fd == 1 and self.supervisor.logOutput is not None:
                self.supervisor.appendLog(rest + b"\n")
            elif rest:
                self.supervisor.relay(self, rest)
            self._buffers[fd] = b""
        self.supervisor.workerEnded(self, reason)
        self.ended.callback(None)

    def signal(self, name: str) -> None:
        """Send C{SIG<name>}, if it still runs."""
        try:
            if self.transport is not None:
                self.transport.signalProcess(name)
        except Exception:  # noqa: BLE001 - ProcessExitedAlready, or gone meanwhile
            pass


def _systemOf(event: LogEvent) -> str:
    """What the text log shows as an event's system: its C{log_system}, else C{namespace#level}."""
    system = event.get("log_system")
    if system is not None:
        return str(system)
    level = event.get("log_level")
    return f"{event.get('log_namespace', '-')}#{getattr(level, 'name', '-')}"


def _tagged(event: LogEvent, index: int, pid: int | None) -> LogEvent:
    """C{event} as it is logged for worker C{index}: with its number and pid, its system C{worker N|...}."""
    event = dict(event)
    event["workerIndex"], event["workerPid"] = index, pid
    event["log_system"] = f"worker {index}|{_systemOf(event)}"
    return event


def _endText(reason: Failure) -> str:
    value = reason.value
    if isinstance(value, ProcessTerminated):
        if value.signal == signal.SIGTERM:
            # twistd ends itself with the signal that stopped it, once stopped.
            return "stopped on SIGTERM"
        if value.signal is not None:
            return f"killed by signal {value.signal}"
        return f"exited with status {value.exitCode}"
    if isinstance(value, ProcessDone):
        return "exited with status 0"
    return str(value)


class Supervisor(Service):
    """
    Binds the listeners (L{listen}, before the reactor runs), keeps
    L{count} workers serving them, stops them all on stop.

    @ivar ports: The bound listening ports (never read here).
    @ivar workers: The running worker of each slot (1..count), if any.
    @ivar restarts: How many times a worker was started again.
    """

    def __init__(
        self,
        descriptions: Sequence[str],
        count: int,
        workerArguments: Sequence[str],
        *,
        drainTimeout: float = 10.0,
        reactor: Any = None,
        executable: str = sys.executable,
        twistdArguments: Sequence[str] = (),
        now: Callable[[], float] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        if count < 1:
            raise ValueError("a supervisor needs at least one worker")
        self.reactor = reactor
        self.descriptions = list(descriptions)
        self.count = count
        self.workerArguments = list(workerArguments)
        self.twistdArguments = list(twistdArguments)
        self.drainTimeout = drainTimeout
        self.executable = executable
        self.now = now if now is not None else reactor.seconds
        self.ports: list[IListeningPort] = []
        self.workers: dict[int, _WorkerProcess] = {}
        self.restarts = 0
        self._deathsInARow: dict[int, int] = {}
        self._pending: dict[int, Any] = {}
        self._controls: dict[int, _SupervisorControl] = {}
        #: Other listeners of this process (C{("metrics", port)}).
        self.extraPorts: list[tuple[str, IListeningPort]] = []
        self._stopping = False
        self.logObserver: ILogObserver | None = None
        #: Where the workers' formatted lines go (L{logTo}); L{None}: their
        #: JSON events are parsed and re-emitted (L{relay}).
        self.logOutput: Any = None
        self.logFormat = "text"

    def logTo(self, output: Any, logFormat: str) -> None:
        """
        Log to C{output} (a text file, or a L{twisted.python.logfile.LogFile})
        in C{logFormat} (C{text} or C{json}), the workers' lines too;
        L{None} keeps twistd's own log (C{--syslog}) and relays events.
        """
        self.logOutput, self.logFormat = output, logFormat
        if output is None:
            return
        if logFormat == "json":
            self.logObserver = jsonFileLogObserver(output, recordSeparator="")
        else:
            self.logObserver = textFileLogObserver(output)

    def appendLog(self, data: bytes) -> None:
        """Append whole lines a worker formatted to the log output."""
        self.logOutput.write(data.decode("utf-8", "replace"))
        self.logOutput.flush()

    def setServiceParent(self, parent: Any) -> None:
        """Join C{parent}; give it L{logObserver} (the log in L{logFormat}), as L{DaemonService} does."""
        super().setServiceParent(parent)
        if self.logObserver is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.logObserver)

    def listen(self) -> None:
        """Bind every listener now; on the first that fails, close the others and raise L{ListenError}."""
        try:
            for description in self.descriptions:
                self.ports.append(_bindNow(self.reactor, description))
        except ListenError:
            for port in self.ports:
                port.stopListening()
            self.ports = []
            raise

    def addresses(self) -> list[str]:
        """Where each listener listens (L{listenerText})."""
        return [listenerText(d, p.getHost()) for d, p in zip(self.descriptions, self.ports, strict=True)]

    def listeners(self) -> tuple[SharedListener, ...]:
        """The sockets as a worker sees them."""
        return tuple(
            SharedListener(_FIRST_LISTENER_FD + i, _family(port.getHost()), description)
            for i, (port, description) in enumerate(zip(self.ports, self.descriptions, strict=True))
        )

    def addListener(self, description: str, factory: Any, what: str) -> None:
        """Also bind C{description} here for C{factory} (the metrics page), not shared."""
        self.extraPorts.append((what, listenExtra(self.reactor, description, factory, what)))

    def askWorkers(self, question: bytes, timeout: float) -> Deferred[dict[int, bytes]]:
        """Ask every running worker C{question}; the answers by worker, those in by C{timeout}."""
        asked = {index: control.ask(question) for index, control in sorted(self._controls.items())}
        for answer in asked.values():
            answer.addTimeout(timeout, self.reactor)
        answers = DeferredList(list(asked.values()), consumeErrors=True)
        return answers.addCallback(
            lambda results: {i: value for i, (ok, value) in zip(asked, results, strict=True) if ok}
        )

    def startService(self) -> None:
        super().startService()
        _log.info(
            "txupgrade serving on {listeners}; {count} worker processes{extra}",
            listeners=", ".join(self.addresses()),
            count=self.count,
            extra=extraText(self.extraPorts),
            daemonEvent="started",
        )
        for index in range(1, self.count + 1):
            self.startWorker(index)

    def startWorker(self, index: int) -> _WorkerProcess:
        """Start the worker of slot C{index}."""
        self._pending.pop(index, None)
        listeners = self.listeners()
        ours, theirs = socket.socketpair()
        spec = WorkerSpec(index, _CONTROL_FD, listeners)
        childFDs: dict[int, int | str] = {0: "w", 1: "r", 2: "r", _CONTROL_FD: theirs.fileno()}
        for listener, port in zip(listeners, self.ports, strict=True):
            childFDs[listener.fd] = port.fileno()  # type: ignore[attr-defined]
        env = dict(os.environ)
        env[ENVIRONMENT] = spec.toText()
        kind = self.logFormat if self.logOutput is not None else "events"
        env[LOG_ENVIRONMENT] = f"{kind}:{index}"
        env.setdefault("PYTHONUNBUFFERED", "1")
        args = [
            self.executable,
            *TWISTD,
            "--nodaemon",
            "--pidfile=",
            "--logger=txupgrade.daemon.workers.workerLogObserver",
            *self.twistdArguments,
            "txupgrade",
            *self.workerArguments,
        ]
        worker = _WorkerProcess(self, index)
        worker.startedAt = self.now()
        try:
            self.reactor.spawnProcess(worker, self.executable, args, env=env, childFDs=childFDs)
        finally:
            theirs.close()
        control = _SupervisorControl()
        try:
            self.reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, _ControlFactory(control))
        finally:
            ours.close()
        self._controls[index] = control
        self.workers[index] = worker
        _log.info(
            "worker {workerIndex} started (pid {workerPid})",
            workerIndex=index,
            workerPid=worker.pid,
            workerEvent="started",
        )
        return worker

    def relay(self, worker: _WorkerProcess, line: bytes) -> None:
        """Put one line a worker wrote (a JSON event, or plain text) in this process's log."""
        text = line.decode("utf-8", "replace").strip("\x1e \r\n")
        if not text:
            return
        event: dict[str, Any] | None = None
        if text.startswith("{"):
            try:
                event = eventFromJSON(text)
            except ValueError:
                event = None
        if event is None or "log_time" not in event:
            _log.info(
                "{workerLine}",
                workerLine=text,
                workerIndex=worker.index,
                workerPid=worker.pid,
                log_system=f"worker {worker.index}",
            )
            return
        globalLogPublisher(_tagged(event, worker.index, worker.pid))

    def workerEnded(self, worker: _WorkerProcess, reason: Failure) -> None:
        """A worker is gone: forget it, and start it again unless stopping."""
        index = worker.index
        if self.workers.get(index) is worker:
            del self.workers[index]
        control = self._controls.pop(index, None)
        if control is not None and control.transport is not None:
            control.transport.loseConnection()
        how = _endText(reason)
        if self._stopping:
            _log.info(
                "worker {workerIndex} (pid {workerPid}) {how}",
                workerIndex=index,
                workerPid=worker.pid,
                how=how,
                workerEvent="stopped",
            )
            return
        lived = self.now() - worker.startedAt
        deaths = 1 if lived >= STABLE_AFTER else self._deathsInARow.get(index, 0) + 1
        self._deathsInARow[index] = deaths
        delay = restartDelay(deaths)
        _log.warn(
            "worker {workerIndex} (pid {workerPid}) {how} after {lived:.1f} s; restarting it in {delay} s",
            workerIndex=index,
            workerPid=worker.pid,
            how=how,
            lived=lived,
            delay=delay,
            workerEvent="died",
        )
        self.restarts += 1
        self._pending[index] = self.reactor.callLater(delay, self.startWorker, index)

    @inlineCallbacks
    def stopService(self) -> Any:
        """Close the sockets here, C{SIGTERM} every worker, wait (bounded) for all to exit."""
        self._stopping = True
        super().stopService()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        ports, self.ports = self.ports, []
        extra, self.extraPorts = self.extraPorts, []
        for port in [*ports, *(p for _what, p in extra)]:
            port.stopListening()
        running = list(self.workers.values())
        bound = self.drainTimeout + STOP_MARGIN
        # This line and late()'s are alike on purpose: one event each, with its own daemon field.
        _log.info(
            "Shutting down: stopping {count} worker(s), waiting at most {bound} s",
            count=len(running),
            bound=bound,
            daemonEvent="stopping",
        )
        for worker in running:
            worker.signal("TERM")
        ended = DeferredList([w.ended for w in running])

        def late() -> None:
            stubborn = [w for w in running if not w.ended.called]
            _log.warn(
                "{count} worker(s) still running {bound} s after SIGTERM: killed",
                count=len(stubborn),
                bound=bound,
                workerEvent="killed",
            )
            for w in stubborn:
                w.signal("KILL")

        call = self.reactor.callLater(bound, late)
        yield ended
        if call.active():
            call.cancel()


# The worker's side.


def workerSpecFromEnvironment(environ: dict[str, str] | None = None) -> WorkerSpec | None:
    """
    The spec when this process is a worker (and take it out of the
    environment, so that processes it starts are not workers); L{None} when
    it is not.

    @raise ValueError: the variable is set but not a spec.
    """
    if environ is None:
        environ = os.environ  # type: ignore[assignment]
        assert environ is not None
    text = environ.pop(ENVIRONMENT, None)
    if text is None:
        return None
    return WorkerSpec.fromText(text)


@implementer(IStreamServerEndpoint)
class _TLSServerEndpoint:
    """Serve TLS over another server endpoint (the worker's adopted socket)."""

    def __init__(self, wrapped: IStreamServerEndpoint, contextFactory: Any) -> None:
        self._wrapped = wrapped
        self._contextFactory = contextFactory
        #: The certificate's warnings, once listening (the worker logs them).
        self.warnings: list[str] = []

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from txupgrade.daemon.service import prepareTLS

        self.warnings = prepareTLS(self._contextFactory, factory)
        return self._wrapped.listen(TLSMemoryBIOFactory(self._contextFactory, False, factory))


def workerEndpoint(reactor: Any, listener: SharedListener) -> IStreamServerEndpoint:
    """
    The endpoint serving C{listener} in a worker: the inherited socket, with
    TLS (from the description's certificate) and the C{haproxy:} wrappers
    applied as Twisted applies them to the description itself.
    """
    from txupgrade._twistedcompat import proxyEndpoint

    wrappers, inner = splitWrappers(listener.description)
    endpoint: IStreamServerEndpoint = AdoptedStreamServerEndpoint(
        reactor, listener.fd, _FAMILIES[listener.family]
    )
    if endpointKind(inner) == "ssl":
        from txupgrade._twistedcompat import sslContextFactory

        endpoint = _TLSServerEndpoint(endpoint, sslContextFactory(serverFromString(reactor, inner)))
    for _wrapper in reversed(wrappers):
        endpoint = proxyEndpoint(endpoint)
    return endpoint


class _SupervisorControl(NetstringReceiver):
    """The supervisor's end of a worker's control socket: questions out, answers back in order."""

    MAX_LENGTH = 1 << 24

    def __init__(self) -> None:
        self._waiting: deque[Deferred[bytes]] = deque()
        self._lost = False

    def ask(self, question: bytes) -> Deferred[bytes]:
        """Send C{question}; the worker's answer."""
        answer: Deferred[bytes] = Deferred()
        if self.transport is None or self._lost:
            answer.errback(Failure(ConnectionDone("the worker's control socket is closed")))
            return answer
        self._waiting.append(answer)
        self.sendString(question)
        return answer

    def stringReceived(self, string: bytes) -> None:
        if self._waiting:
            answer = self._waiting.popleft()
            if not answer.called:  # else it timed out
                answer.callback(string)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        waiting, self._waiting = self._waiting, deque()
        for answer in waiting:
            if not answer.called:
                answer.errback(reason)


class _ControlFactory(Factory):
    """Gives the one control protocol to an adopted control socket."""

    noisy = False

    def __init__(self, control: NetstringReceiver) -> None:
        self.control = control

    def buildProtocol(self, addr: Any) -> NetstringReceiver:
        return self.control


class _Control(NetstringReceiver):
    """
    The worker's end of its control socket: answers the supervisor's
    questions (C{metrics}: this worker's metrics page); its end means the
    supervisor is gone.
    """

    MAX_LENGTH = 1 << 16

    def __init__(self, reactor: Any, index: int, answers: dict[bytes, Callable[[], bytes]]) -> None:
        self.reactor = reactor
        self.index = index
        self.answers = answers

    def stringReceived(self, string: bytes) -> None:
        answer = self.answers.get(string)
        self.sendString(answer() if answer is not None else b"")

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.reactor.running:
            _log.warn(
                "worker {workerIndex}: the supervisor is gone; stopping",
                workerIndex=self.index,
                workerEvent="orphaned",
            )
            self.reactor.stop()


def watchSupervisor(
    reactor: Any, spec: WorkerSpec, answers: dict[bytes, Callable[[], bytes]] | None = None
) -> None:
    """
    Answer the supervisor's questions (C{answers}, by question) on the
    control socket, and stop this worker's reactor when the socket closes.
    """
    factory = _ControlFactory(_Control(reactor, spec.index, answers or {}))
    reactor.adoptStreamConnection(spec.control, socket.AF_UNIX, factory)
    os.close(spec.control)


def workerLogObserver() -> ILogObserver:
    """
    A worker's log (for C{twistd --logger}): one line per event on its
    standard output, formatted as the supervisor logs (L{LOG_ENVIRONMENT})
    and tagged with the worker, for the supervisor to append to its log.
    """
    assert sys.__stdout__ is not None
    out = cast(IO[str], BatchedOutput(sys.__stdout__))
    kind, _, index = os.environ.pop(LOG_ENVIRONMENT, "events:0").partition(":")
    if kind not in ("text", "json"):
        return jsonFileLogObserver(out, recordSeparator="")
    worker, pid = int(index or 0), os.getpid()
    if kind == "json":
        return FileLogObserver(out, lambda event: eventAsJSON(_tagged(event, worker, pid)) + "\n")
    return FileLogObserver(out, lambda event: formatEventAsClassicLogText(_tagged(event, worker, pid)))


class WorkerService(DaemonService):
    """
    A worker's L{DaemonService}: the site on the sockets its supervisor
    handed it (L{WorkerSpec}), drained on C{SIGTERM} like any
    C{twistd txupgrade}; it stops by itself when the supervisor is gone.
    """

    def __init__(self, spec: WorkerSpec, site: Any, **kwargs: Any) -> None:
        super().__init__(site, [listener.description for listener in spec.listeners], **kwargs)
        self.spec = spec

    def listen(self) -> None:
        """Adopt the inherited sockets (with their wrappers and TLS)."""
        from txupgrade._twistedcompat import endpointLayers

        warnings = upgradeCertificateWarnings(self.site)
        for listener in self.spec.listeners:
            endpoint = workerEndpoint(self.reactor, listener)
            self.ports.append(self._listenNow(listener.description, endpoint, self.site))
            for layer in endpointLayers(endpoint):
                warnings += getattr(layer, "warnings", [])
        warnCertificates(warnings)

    def startService(self) -> None:
        answers = {}
        if self.metrics is not None:
            answers[b"metrics"] = self.metrics.exposition
        watchSupervisor(self.reactor, self.spec, answers)
        super().startService()


def isWorker() -> bool:
    """Whether this process was started by a supervisor as one of its workers."""
    return ENVIRONMENT in os.environ


def buildService(settings: dict[str, Any], site: Any, reactor: Any = None) -> Any:
    """
    For C{twistd txupgrade}: the supervisor when C{--workers} is set, or the
    worker's service in a worker; bound (the one-line L{DaemonError} when a
    listener cannot be).
    """
    from txupgrade.daemon.config import SETTINGS

    try:
        spec = workerSpecFromEnvironment()
    except ValueError as error:
        raise DaemonError(str(error)) from None
    if spec is not None:
        service: Any = WorkerService(
            spec,
            site,
            drainTimeout=settings["drain-timeout"],
            protocolNames=settings.get("protocols", ()),
            limits=Limits.fromSettings(settings),
            reactor=reactor,
        )
    else:
        service = Supervisor(
            settings["listen"],
            settings["workers"],
            workerArguments(settings, SETTINGS, drop=_NOT_PASSED_ON),
            drainTimeout=settings["drain-timeout"],
            reactor=reactor,
        )
    service.listen()
    return service
