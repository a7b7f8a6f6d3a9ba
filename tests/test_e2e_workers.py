"""
C{twistd txupgrade --workers 2} as real processes: one listening socket
served by two worker processes (each answers C{/pid} with its own process
id, from L{tests.workers_sample}), a killed worker replaced while the port
keeps serving, C{SIGTERM} draining and stopping every worker, and a
listener that cannot bind stopping the start with one line.

Which processes are the workers is read from the supervisor's log
(C{worker N started (pid P)}) and checked against the process table.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as wsConnect

from tests.support.daemon import LOCAL, Daemon, runToEnd, startDaemon
from tests.support.net import inThread, wait

CLIENT_TIMEOUT = 10.0

#: How long a test waits for workers to start (the machine is shared and slow).
WORKER_START = 60.0

#: The bound on requests spent looking for both workers.
MAX_REQUESTS = 400

_WORKER_STARTED = re.compile(rb"worker (\d+) started \(pid (\d+)\)")
_WORKER_SERVING = re.compile(rb"\[worker (\d+)\|[^\]]*\] txupgrade serving on")

ARGS = ["--workers", "2", "--listen", LOCAL, "--resource", "tests.workers_sample.root"]


def _getPid(port: int) -> int:
    """C{GET /pid} on a fresh connection: the serving worker's process id."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
    try:
        connection.request("GET", "/pid")
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body)
        return int(body)
    finally:
        connection.close()


def _pidsUntil(port: int, wanted: set[int], limit: int = MAX_REQUESTS) -> tuple[set[int], int]:
    """C{GET /pid} until every pid of C{wanted} answered (at most C{limit} requests): the pids seen, and how many requests."""  # noqa: E501
    seen: set[int] = set()
    for count in range(1, limit + 1):
        seen.add(_getPid(port))
        if wanted <= seen:
            return seen, count
    return seen, limit


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


def workerPids(daemon: Daemon) -> dict[int, int]:
    """The latest pid of each worker slot, from the supervisor's log."""
    pids = {}
    for index, pid in _WORKER_STARTED.findall(daemon.output):
        pids[int(index)] = int(pid)
    return pids


@inlineCallbacks
def startWorkers(test: TestCase, args: list[str] = ARGS) -> Any:
    """Start the supervisor; wait until both workers serve; fire with the daemon."""
    daemon = yield startDaemon(test, args)
    yield wait(lambda: len(set(_WORKER_SERVING.findall(daemon.output))) == 2, WORKER_START)
    return daemon


class WorkersTests(TestCase):
    """Two workers on one socket, as real processes."""

    timeout = 180

    @inlineCallbacks
    def test_bothAnswer(self) -> Any:
        """
        Both workers answer on the one port the supervisor listens on: they
        are the supervisor's two children, and the supervisor itself serves
        nothing.
        """
        daemon = yield startWorkers(self)
        [port] = daemon.ports
        pids = workerPids(daemon)
        self.assertEqual(sorted(pids), [1, 2])
        assert daemon.transport is not None
        self.assertEqual(_children(daemon.transport.pid), set(pids.values()))
        seen, count = yield inThread(_pidsUntil, port, set(pids.values()))
        self.assertEqual(seen, set(pids.values()), f"after {count} requests")
        self.assertNotIn(daemon.transport.pid, seen)

    @inlineCallbacks
    def test_killedWorkerReplaced(self) -> Any:
        """
        A worker killed with C{SIGKILL} is logged and started again in its
        slot; the port serves all along, and the new worker answers too.
        """
        daemon = yield startWorkers(self)
        [port] = daemon.ports
        before = workerPids(daemon)
        os.kill(before[1], 9)
        yield wait(
            lambda: not _alive(before[1]) or before[1] not in _children(daemon.transport.pid), WORKER_START
        )
        # Meanwhile the other worker serves every request.
        answers = yield inThread(lambda: [_getPid(port) for _ in range(5)])
        self.assertEqual(set(answers) - {before[1]}, set(answers))
        yield wait(lambda: workerPids(daemon)[1] != before[1], WORKER_START)
        yield wait(lambda: len(_WORKER_SERVING.findall(daemon.output)) >= 3, WORKER_START)
        self.assertRegex(
            daemon.output.decode(),
            rf"worker 1 \(pid {before[1]}\) killed by signal 9 after [\d.]+ s; restarting it in 0.25 s",
        )
        after = workerPids(daemon)
        self.assertEqual(after[2], before[2])
        self.assertNotEqual(after[1], before[1])
        assert daemon.transport is not None
        self.assertEqual(_children(daemon.transport.pid), set(after.values()))
        seen, count = yield inThread(_pidsUntil, port, set(after.values()))
        self.assertEqual(seen, set(after.values()), f"after {count} requests")

    @inlineCallbacks
    def test_sigtermDrainsAll(self) -> Any:
        """
        C{SIGTERM} to the supervisor: the worker holding an open WebSocket
        drains it (and closes it), every worker exits, then the supervisor,
        and the port is closed.
        """
        args = [*ARGS, "--websocket", "/chat=tests.daemon_sample.chatFactory", "--drain-timeout", "2"]
        daemon = yield startWorkers(self, args)
        [port] = daemon.ports
        pids = set(workerPids(daemon).values())
        opened = []

        def chatUntilClosed() -> int | None:
            with wsConnect(f"ws://127.0.0.1:{port}/chat", open_timeout=CLIENT_TIMEOUT) as ws:
                ws.send("hi")
                opened.append(ws.recv(timeout=CLIENT_TIMEOUT))
                try:
                    ws.recv(timeout=60)
                except ConnectionClosed as closed:
                    return closed.rcvd.code if closed.rcvd is not None else None
            return None

        closing = inThread(chatUntilClosed)
        yield wait(lambda: bool(opened), WORKER_START)
        daemon.signal("TERM")
        # The close itself (code 1001, or an abort at the drain deadline) is
        # the single daemon's drain, tested in its own tests.
        yield closing
        yield daemon.ended
        self.assertEqual(daemon.exitCode, -15)
        self.assertEqual({pid for pid in pids if _alive(pid)}, set())
        text = daemon.output.decode()
        self.assertIn("Shutting down: stopping 2 worker(s), waiting at most 7.0 s", text)
        self.assertRegex(
            text,
            r"\[worker \d\|txupgrade\.daemon#info\] Shutting down: no new connections; "
            r"draining 1 open connection",
        )
        self.assertEqual(len(re.findall(r"worker \d \(pid \d+\) stopped on SIGTERM", text)), 2, text)
        with socket.socket() as sock:
            self.assertNotEqual(sock.connect_ex(("127.0.0.1", port)), 0)

    @inlineCallbacks
    def test_cannotBind(self) -> Any:
        """A listener that cannot bind: one line on standard error, exit status 1, no worker started."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        daemon = yield runToEnd(self, ["--workers", "2", "--listen", LOCAL, "--listen", busy])
        self.assertEqual(daemon.exitCode, 1)
        lines = daemon.stderr.decode().strip().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], rf"^txupgrade: cannot listen on {re.escape(busy)}: .*in use")
        self.assertNotIn(b"worker", daemon.output)
