"""
Unit tests of C{--workers}: the plan (L{txupgrade.daemon.workerplan}) and the
supervisor's lifecycle (L{txupgrade.daemon.workers.Supervisor}) on a fake reactor
that records the processes it would start; real binding for the one-line
errors. The real processes are in C{tests/test_e2e_workers.py}.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
from typing import Any

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.error import ConnectionDone, ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, capturedLogs, globalLogPublisher
from twisted.python.compat import iterbytes
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from txupgrade.daemon import workerplan, workers
from txupgrade.daemon.logs import BatchedOutput
from txupgrade.daemon.workerplan import SharedListener, WorkerSpec


class SplitWrappersTests(SynchronousTestCase):
    """Which wrappers a worker re-applies, and what it can share."""

    def test_plain(self) -> None:
        """A description without wrappers is its own inner endpoint."""
        self.assertEqual(workerplan.splitWrappers("tcp:8080"), ([], "tcp:8080"))

    def test_haproxy(self) -> None:
        """C{haproxy:} prefixes are peeled off, outermost first."""
        self.assertEqual(
            workerplan.splitWrappers("haproxy:tcp:0:interface=127.0.0.1"),
            (["haproxy"], "tcp:0:interface=127.0.0.1"),
        )
        self.assertEqual(workerplan.splitWrappers("HAProxy:ssl:443"), (["haproxy"], "ssl:443"))

    def test_shareable(self) -> None:
        """tcp, tcp6, unix, ssl and systemd listeners (also under haproxy:) are shareable; others are not."""
        for description in ("tcp:80", "8080", "tcp6:80", "unix:/x", "ssl:443", "systemd:domain=INET:index=0"):
            self.assertIsNone(workerplan.shareable(description), description)
            self.assertIsNone(workerplan.shareable("haproxy:" + description), description)
        reason = workerplan.shareable("onion:80")
        assert reason is not None
        self.assertIn("not onion:", reason)
        self.assertNotIn("\n", reason)


class WorkerSpecTests(SynchronousTestCase):
    """The spec a worker finds in its environment."""

    spec = WorkerSpec(
        2,
        3,
        (SharedListener(4, "INET", "haproxy:tcp:0"), SharedListener(5, "UNIX", "unix:/tmp/s")),
    )

    def test_roundTrip(self) -> None:
        """C{fromText(toText())} is the same spec."""
        self.assertEqual(WorkerSpec.fromText(self.spec.toText()), self.spec)

    def test_bad(self) -> None:
        """Text that is not a spec raises L{ValueError} naming the variable."""
        for text in ("", "{}", "[1]", '{"index": 1, "control": 3, "listeners": [[4, "IPX", "tcp:0"]]}'):
            with self.assertRaises(ValueError) as raised:
                WorkerSpec.fromText(text)
            self.assertIn(workerplan.ENVIRONMENT, str(raised.exception))

    def test_fromEnvironment(self) -> None:
        """The spec is taken out of the environment (a worker's own children are no workers)."""
        environ = {workerplan.ENVIRONMENT: self.spec.toText(), "OTHER": "1"}
        self.assertEqual(workers.workerSpecFromEnvironment(environ), self.spec)
        self.assertEqual(environ, {"OTHER": "1"})
        self.assertIsNone(workers.workerSpecFromEnvironment(environ))


class RestartDelayTests(SynchronousTestCase):
    """How long a dead worker waits."""

    def test_doubles(self) -> None:
        """The delay starts small, doubles with each death in a row, and is bounded."""
        delays = [workerplan.restartDelay(n) for n in range(1, 10)]
        self.assertEqual(delays[:4], [0.25, 0.5, 1.0, 2.0])
        self.assertEqual(delays[-1], workerplan.MAX_DELAY)
        self.assertEqual(sorted(delays), delays)


class WorkerArgumentsTests(SynchronousTestCase):
    """A worker gets the supervisor's merged settings on its command line."""

    def test_arguments(self) -> None:
        """Values, flags and lists are written out; dropped and unset ones are not."""

        class S:
            def __init__(self, name: str, kind: str) -> None:
                self.name, self.kind = name, kind

        table = [S("listen", "list"), S("timeout", "value"), S("resource", "value"), S("quiet", "flag")]
        table += [S("loud", "flag"), S("enable", "list"), S("workers", "value")]
        settings = {
            "listen": ["tcp:1"],
            "timeout": 60.0,
            "resource": None,
            "quiet": True,
            "loud": False,
            "enable": ["echo", "websocket"],
            "workers": 2,
        }
        self.assertEqual(
            workerplan.workerArguments(settings, table, drop=("listen", "workers")),
            ["--timeout=60.0", "--quiet", "--enable=echo", "--enable=websocket"],
        )


class _FakeProcess:
    """What the fake reactor's C{spawnProcess} hands the process protocol."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []
        self.stdinClosed = False

    def closeStdin(self) -> None:
        self.stdinClosed = True

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class _FakePort:
    """A bound listening port, as the supervisor keeps it."""

    def __init__(self, address: Any, fd: int) -> None:
        self.address = address
        self.fd = fd
        self.stopped = False

    def getHost(self) -> Any:
        return self.address

    def fileno(self) -> int:
        return self.fd

    def stopListening(self) -> None:
        self.stopped = True


class _SpawningReactor(MemoryReactorClock):
    """A memory reactor that records C{spawnProcess} calls."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[dict[str, Any]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: Any, env: Any = None, **kw: Any) -> Any:
        transport = _FakeProcess(1000 + len(self.spawned))
        self.spawned.append({"protocol": protocol, "executable": executable, "args": args, "env": env, **kw})
        protocol.makeConnection(transport)
        return transport


def _end(worker: Any, signal: int | None = None, status: int | None = None) -> None:
    if signal is None and not status:
        reason = Failure(ProcessDone(0))
    else:
        reason = Failure(ProcessTerminated(exitCode=status, signal=signal))
    worker.processEnded(reason)


class SupervisorTests(SynchronousTestCase):
    """The supervisor's lifecycle, without processes."""

    def supervisor(self, count: int = 2) -> tuple[workers.Supervisor, _SpawningReactor]:
        reactor = _SpawningReactor()
        supervisor = workers.Supervisor(
            ["haproxy:tcp:0:interface=127.0.0.1", "unix:/tmp/txupgrade.sock"],
            count,
            ["--timeout=5.0"],
            drainTimeout=3.0,
            reactor=reactor,
            executable="/py",
        )
        supervisor.ports = [
            _FakePort(IPv4Address("TCP", "127.0.0.1", 8080), 11),  # type: ignore[list-item]
            _FakePort(UNIXAddress(b"/tmp/txupgrade.sock"), 12),  # type: ignore[list-item]
        ]
        return supervisor, reactor

    def test_start(self) -> None:
        """Starting starts C{count} workers, each handed the control socket and every listener."""
        supervisor, reactor = self.supervisor()
        with capturedLogs() as events:
            supervisor.startService()
        self.addCleanup(supervisor.stopService)
        self.assertEqual(len(reactor.spawned), 2)
        self.assertEqual(sorted(supervisor.workers), [1, 2])
        for index, call in enumerate(reactor.spawned, 1):
            self.assertEqual(call["executable"], "/py")
            args = call["args"]
            self.assertEqual(args[0], "/py")
            self.assertIn("--logger=txupgrade.daemon.workers.workerLogObserver", args)
            self.assertEqual(args[args.index("txupgrade") :], ["txupgrade", "--timeout=5.0"])
            spec = WorkerSpec.fromText(call["env"][workerplan.ENVIRONMENT])
            self.assertEqual(spec.index, index)
            self.assertEqual(
                spec.listeners,
                (
                    SharedListener(4, "INET", "haproxy:tcp:0:interface=127.0.0.1"),
                    SharedListener(5, "UNIX", "unix:/tmp/txupgrade.sock"),
                ),
            )
            fds = call["childFDs"]
            self.assertEqual((fds[1], fds[2], fds[4], fds[5]), ("r", "r", 11, 12))
            self.assertIsInstance(fds[spec.control], int)
            self.assertTrue(call["protocol"].transport.stdinClosed)
        started = [e for e in events if e.get("daemonEvent") == "started"]
        self.assertEqual(len(started), 1)
        # Named as clients reach them: through the PROXY protocol, on a UNIX socket.
        self.assertIn("haproxy:tcp:127.0.0.1:8080, unix:/tmp/txupgrade.sock", started[0]["listeners"])
        self.assertEqual([e["workerIndex"] for e in events if e.get("workerEvent") == "started"], [1, 2])

    def test_restart(self) -> None:
        """A dead worker is started again in its slot after a delay that doubles while it keeps dying."""
        supervisor, reactor = self.supervisor()
        supervisor.startService()
        self.addCleanup(supervisor.stopService)
        first = supervisor.workers[1]
        with capturedLogs() as events:
            _end(first, signal=9)
        self.assertNotIn(1, supervisor.workers)
        [died] = [e for e in events if e.get("workerEvent") == "died"]
        self.assertEqual((died["workerIndex"], died["workerPid"], died["delay"]), (1, 1000, 0.25))
        self.assertIn("killed by signal 9", died["how"])
        reactor.advance(0.2)
        self.assertEqual(len(reactor.spawned), 2)
        reactor.advance(0.05)
        self.assertEqual(len(reactor.spawned), 3)
        second = supervisor.workers[1]
        self.assertEqual(WorkerSpec.fromText(reactor.spawned[2]["env"][workerplan.ENVIRONMENT]).index, 1)
        with capturedLogs() as events:
            _end(second, status=3)
        [died] = [e for e in events if e.get("workerEvent") == "died"]
        self.assertEqual(died["delay"], 0.5)
        self.assertIn("status 3", died["how"])
        reactor.advance(0.5)
        third = supervisor.workers[1]
        # A worker that served for a while starts the count again.
        reactor.advance(workerplan.STABLE_AFTER)
        with capturedLogs() as events:
            _end(third)
        [died] = [e for e in events if e.get("workerEvent") == "died"]
        self.assertEqual(died["delay"], 0.25)
        self.assertEqual(supervisor.restarts, 3)
        self.assertIn(2, supervisor.workers)

    def test_stop(self) -> None:
        """Stopping sends SIGTERM to every worker and fires once all ended; none is started again."""
        supervisor, reactor = self.supervisor()
        supervisor.startService()
        _end(supervisor.workers[2], signal=9)  # a restart is pending
        one = supervisor.workers[1]
        d = supervisor.stopService()
        self.assertTrue(all(port.stopped for port in supervisor.ports or []))
        self.assertEqual(one.transport.signals, ["TERM"])  # type: ignore[union-attr]
        self.assertNoResult(d)
        _end(one, signal=15)
        self.successResultOf(d)
        reactor.advance(60)
        self.assertEqual(len(reactor.spawned), 2, "nothing restarted")
        self.assertEqual(supervisor.workers, {})

    def test_stopPortsClosed(self) -> None:
        """The supervisor's copies of the sockets are closed first."""
        supervisor, _reactor = self.supervisor()
        ports = list(supervisor.ports)
        supervisor.startService()
        d = supervisor.stopService()
        self.assertEqual([p.stopped for p in ports], [True, True])  # type: ignore[attr-defined]
        for worker in list(supervisor.workers.values()):
            _end(worker)
        self.successResultOf(d)

    def test_stopStubborn(self) -> None:
        """A worker still running the drain timeout plus a margin after SIGTERM gets SIGKILL."""
        supervisor, reactor = self.supervisor(count=1)
        supervisor.startService()
        worker = supervisor.workers[1]
        d = supervisor.stopService()
        reactor.advance(3.0 + workers.STOP_MARGIN - 0.1)
        self.assertEqual(worker.transport.signals, ["TERM"])  # type: ignore[union-attr]
        with capturedLogs() as events:
            reactor.advance(0.1)
        self.assertEqual(worker.transport.signals, ["TERM", "KILL"])  # type: ignore[union-attr]
        self.assertEqual([e["count"] for e in events if e.get("workerEvent") == "killed"], [1])
        self.assertNoResult(d)
        _end(worker, signal=9)
        self.successResultOf(d)

    def test_relay(self) -> None:
        """
        A worker's JSON events join the supervisor's log with its index and
        pid; other lines are logged as text; lines may arrive a byte at a time.
        """
        supervisor, _reactor = self.supervisor(count=1)
        supervisor.startService()
        self.addCleanup(supervisor.stopService)
        worker = supervisor.workers[1]
        event = {
            "log_format": "upgrade {protocol}",
            "log_namespace": "txupgrade.upgrade",
            "log_level": {"name": "info", "__class_uuid__": "02e59486-f24d-46ad-8224-3acdf2a5732a"},
            "log_time": 1.0,
            "log_system": "UpgradeChannel,1,127.0.0.1",
            "protocol": "echo",
            "peer": "127.0.0.1:5000",
        }
        data = json.dumps(event).encode() + b"\n" + b"a traceback line\n"
        with capturedLogs() as events:
            for i in range(len(data)):
                worker.childDataReceived(1, data[i : i + 1])
            worker.childDataReceived(2, b"unfinished")
            _end(worker)
        [relayed] = [e for e in events if e.get("log_namespace") == "txupgrade.upgrade"]
        self.assertEqual((relayed["protocol"], relayed["peer"]), ("echo", "127.0.0.1:5000"))
        self.assertEqual((relayed["workerIndex"], relayed["workerPid"]), (1, 1000))
        self.assertEqual(relayed["log_system"], "worker 1|UpgradeChannel,1,127.0.0.1")
        lines = [e["workerLine"] for e in events if "workerLine" in e]
        self.assertEqual(lines, ["a traceback line", "unfinished"])

    def test_appendFormattedLines(self) -> None:
        """
        With a log output, a worker's standard output is appended as it comes,
        whole lines only, in order, without being parsed; the rest at its end.
        """
        supervisor, reactor = self.supervisor(count=1)
        output = io.StringIO()
        supervisor.logTo(output, "text")
        supervisor.startService()
        self.addCleanup(supervisor.stopService)
        self.assertEqual(reactor.spawned[0]["env"][workers.LOG_ENVIRONMENT], "text:1")
        worker = supervisor.workers[1]
        data = "2026-11-30T00:00:00+0000 [worker 1|x#info] one\n… two\nthree".encode()
        with capturedLogs() as events:
            for i in range(len(data)):
                worker.childDataReceived(1, data[i : i + 1])
                written = output.getvalue()
                self.assertTrue(written == "" or written.endswith("\n"), written)
            self.assertEqual(output.getvalue(), data.decode().rsplit("\n", 1)[0] + "\n")
            _end(worker)
        self.assertTrue(output.getvalue().endswith("… two\nthree\n"), output.getvalue())
        self.assertFalse([e for e in events if "workerLine" in e])

    def test_supervisorOwnLinesJSON(self) -> None:
        """In JSON, the supervisor's own events go to the same output; workers are told to write JSON."""
        supervisor, reactor = self.supervisor(count=1)
        output = io.StringIO()
        supervisor.logTo(output, "json")
        assert supervisor.logObserver is not None
        globalLogPublisher.addObserver(supervisor.logObserver)
        self.addCleanup(globalLogPublisher.removeObserver, supervisor.logObserver)
        supervisor.startService()
        self.addCleanup(supervisor.stopService)
        self.assertEqual(reactor.spawned[0]["env"][workers.LOG_ENVIRONMENT], "json:1")
        started = [json.loads(line) for line in output.getvalue().splitlines()]
        self.assertIn((1, "started"), [(e.get("workerIndex"), e.get("workerEvent")) for e in started])


class WorkerLogTests(SynchronousTestCase):
    """L{workers.workerLogObserver}: lines formatted and tagged in the worker."""

    def observe(self, setting: str) -> str:
        """What the observer C{setting} selects writes for one event."""
        self.patch(os, "environ", {workers.LOG_ENVIRONMENT: setting})
        out = io.StringIO()
        self.patch(sys, "__stdout__", out)
        observer = workers.workerLogObserver()
        Logger(namespace="txupgrade.test", observer=observer).info("hello {who}", who="there")
        self.assertNotIn(workers.LOG_ENVIRONMENT, os.environ)
        return out.getvalue()

    def test_text(self) -> None:
        """Text: the supervisor's format, the system naming the worker, the namespace and level."""
        line = self.observe("text:3")
        self.assertRegex(line, r"^\S+ \[worker 3\|txupgrade\.test#info\] hello there\n$")

    def test_json(self) -> None:
        """JSON: one event per line, with the worker's index, pid and system."""
        event = json.loads(self.observe("json:2"))
        self.assertEqual((event["who"], event["workerIndex"], event["workerPid"]), ("there", 2, os.getpid()))
        self.assertEqual(event["log_system"], "worker 2|txupgrade.test#info")

    def test_events(self) -> None:
        """Without a setting: plain JSON events, for the supervisor to parse."""
        event = json.loads(self.observe("events:0"))
        self.assertNotIn("workerIndex", event)
        self.assertEqual(event["log_namespace"], "txupgrade.test")


class BindTests(TestCase):
    """The supervisor binds before the reactor runs, or says why not in one line."""

    def test_taken(self) -> None:
        """A port in use is one line naming the listener; nothing stays bound."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        supervisor = workers.Supervisor(
            ["tcp:0:interface=127.0.0.1", f"tcp:{port}:interface=127.0.0.1"], 1, []
        )
        with self.assertRaises(workers.ListenError) as raised:
            supervisor.listen()
        text = str(raised.exception)
        self.assertIn(f"cannot listen on tcp:{port}:interface=127.0.0.1", text)
        self.assertIn("in use", text)
        self.assertNotIn("\n", text)
        self.assertEqual(supervisor.ports, [])

    def test_notShareable(self) -> None:
        """An endpoint kind a worker cannot adopt is refused before anything binds."""
        supervisor = workers.Supervisor(["tcp:0:interface=127.0.0.1", "stdio:"], 1, [])
        with self.assertRaises(workers.ListenError) as raised:
            supervisor.listen()
        self.assertIn("--listen stdio:: --workers can share", str(raised.exception))
        self.assertEqual(supervisor.ports, [])

    def test_bound(self) -> None:
        """Bound listeners are not read by the supervisor and report their addresses."""
        supervisor = workers.Supervisor(["tcp:0:interface=127.0.0.1"], 1, [])
        supervisor.listen()
        [port] = supervisor.ports
        self.addCleanup(port.stopListening)
        [address] = supervisor.addresses()
        self.assertEqual(address, f"tcp:127.0.0.1:{port.getHost().port}")  # type: ignore[attr-defined]
        self.assertEqual(supervisor.listeners(), (SharedListener(4, "INET", "tcp:0:interface=127.0.0.1"),))
        from twisted.internet import reactor

        self.assertNotIn(port, reactor.getReaders())


class BatchedOutputTests(SynchronousTestCase):
    """A worker's log lines reach its standard output in batches while the reactor runs."""

    def setUp(self) -> None:
        self.out = _CountingOutput()
        self.reactor = MemoryReactorClock()
        self.batched = BatchedOutput(self.out, self.reactor)

    def test_batchedWhileRunning(self) -> None:
        """Lines within the delay are one write, after it; the observer's flush does nothing."""
        self.reactor.running = True
        self.batched.write("a\n")
        self.batched.flush()
        self.batched.write("b\n")
        self.assertEqual(self.out.writes, [])
        self.reactor.advance(BatchedOutput.delay)
        self.assertEqual(self.out.writes, ["a\nb\n"])
        self.batched.write("c\n")
        self.reactor.advance(BatchedOutput.delay)
        self.assertEqual(self.out.writes, ["a\nb\n", "c\n"])

    def test_limit(self) -> None:
        """A batch reaching the limit is written at once."""
        self.reactor.running = True
        self.batched.write("x" * BatchedOutput.limit)
        self.assertEqual(len(self.out.writes), 1)
        self.reactor.advance(BatchedOutput.delay)
        self.assertEqual(len(self.out.writes), 1)

    def test_notRunningAndShutdown(self) -> None:
        """Before and after the reactor runs lines go out at once; at shutdown the batch does."""
        self.batched.write("early\n")
        self.assertEqual(self.out.writes, ["early\n"])
        self.reactor.running = True
        self.batched.write("late\n")
        [trigger] = self.reactor.triggers["after"]["shutdown"]
        trigger[0]()
        self.assertEqual(self.out.writes, ["early\n", "late\n"])


class _CountingOutput:
    """A text output recording each write."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


class ControlTests(SynchronousTestCase):
    """The control socket's questions and answers (C{--metrics} with C{--workers})."""

    def connected(self) -> tuple[Any, Any, StringTransport, StringTransport]:
        """A supervisor end and a worker end (answering C{metrics}), on string transports."""
        supervisorEnd = workers._SupervisorControl()
        workerEnd = workers._Control(MemoryReactorClock(), 1, {b"metrics": lambda: b"page of worker 1"})
        toWorker, toSupervisor = StringTransport(), StringTransport()
        supervisorEnd.makeConnection(toWorker)
        workerEnd.makeConnection(toSupervisor)
        return supervisorEnd, workerEnd, toWorker, toSupervisor

    def test_askAndAnswer(self) -> None:
        """Questions are answered in order, a byte at a time too; an unknown one gets an empty answer."""
        supervisorEnd, workerEnd, toWorker, toSupervisor = self.connected()
        first, second = supervisorEnd.ask(b"metrics"), supervisorEnd.ask(b"what?")
        for byte in iterbytes(toWorker.value()):
            workerEnd.dataReceived(byte)
        for byte in iterbytes(toSupervisor.value()):
            supervisorEnd.dataReceived(byte)
        self.assertEqual(self.successResultOf(first), b"page of worker 1")
        self.assertEqual(self.successResultOf(second), b"")

    def test_lost(self) -> None:
        """A question pending when the socket closes fails; one asked after fails at once."""
        supervisorEnd, _workerEnd, _toWorker, _toSupervisor = self.connected()
        pending = supervisorEnd.ask(b"metrics")
        supervisorEnd.connectionLost(Failure(ProcessDone(0)))
        self.failureResultOf(pending, ProcessDone)
        self.failureResultOf(supervisorEnd.ask(b"metrics"), ConnectionDone)

    def test_askWorkersLeavesOutSilentOnes(self) -> None:
        """The answers of the workers that answer in time, by worker; a silent one is left out."""
        reactor = MemoryReactorClock()
        supervisor = workers.Supervisor(["tcp:0"], 2, [], reactor=reactor)
        ends = {}
        for index in (1, 2):
            end = workers._SupervisorControl()
            end.makeConnection(StringTransport())
            supervisor._controls[index] = end
            ends[index] = end
        answers = supervisor.askWorkers(b"metrics", 5.0)
        ends[1].dataReceived(b"2:p1,")
        self.assertNoResult(answers)
        reactor.advance(5.0)
        self.assertEqual(self.successResultOf(answers), {1: b"p1"})
