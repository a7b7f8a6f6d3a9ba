"""
C{twistd txupgrade} as a real child process of the test's reactor: started in
a temporary directory, its log kept, its listening addresses read from the
daemon's start-up line, killed at cleanup if still running.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.support.net import reactor, withTimeout

#: How long a daemon gets to start serving (the machine is shared and slow).
START_TIMEOUT = 45.0

_STARTED = re.compile(rb"txupgrade serving on ([^;\n]*);")
_PORT = re.compile(r"(?:tcp|ssl):(?:\[[^\]]*\]|[^:,\s]+):(\d+)")

TWISTD = ["-c", "from twisted.scripts.twistd import run; run()"]


class Daemon(ProcessProtocol):
    """
    A C{twistd} child: its output (stdout and stderr, interleaved), when it
    started serving, and how it ended.

    @ivar started: Fires with the listener texts of the start-up line.
    @ivar ended: Fires once the process is gone.
    """

    def __init__(self) -> None:
        self.output = b""
        self.stderr = b""
        self.started: Deferred[list[str]] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.endReason: Failure | None = None
        self.listeners: list[str] = []

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.started.called:
            match = _STARTED.search(self.output)
            if match:
                self.listeners = match.group(1).decode().split(", ")
                self.started.callback(self.listeners)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data
        self.outReceived(data)

    def processEnded(self, reason: Failure) -> None:
        self.endReason = reason
        if not self.started.called:
            self.started.errback(AssertionError(f"exited before serving: {self.output!r}"))
        self.ended.callback(None)

    @property
    def ports(self) -> list[int]:
        """The TCP ports of the listeners, in order."""
        return [int(m) for listener in self.listeners for m in _PORT.findall(listener)]

    @property
    def exitCode(self) -> int | None:
        """The exit status, or C{-signal} when a signal ended it."""
        assert self.endReason is not None
        value = self.endReason.value
        if isinstance(value, ProcessTerminated):
            return -value.signal if value.signal is not None else value.exitCode
        assert isinstance(value, ProcessDone)
        return 0

    def signal(self, name: str) -> None:
        """Send C{SIG<name>}."""
        assert self.transport is not None
        self.transport.signalProcess(name)

    def jsonEvents(self) -> list[dict[str, Any]]:
        """Every standard-output line that is a JSON object."""
        events = []
        for line in self.output.splitlines():
            line = line.strip(b"\x1e").strip()
            if line.startswith(b"{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass
        return events


def spawnDaemon(
    test: TestCase,
    args: Sequence[str],
    *,
    twistdArgs: Sequence[str] = (),
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> Daemon:
    """
    Run C{twistd -n --pidfile= --logfile=- [twistdArgs] txupgrade [args]};
    SIGKILL it at cleanup if it still runs.
    """
    daemon = Daemon()
    if cwd is None:
        cwd = tempfile.mkdtemp(prefix="txupgrade-daemon-")
        test.addCleanup(shutil.rmtree, cwd, True)
    environ = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    argv = [sys.executable, *TWISTD, "-n", "--pidfile=", "--logfile=-", *twistdArgs, "txupgrade", *args]
    reactor.spawnProcess(daemon, sys.executable, argv, env=environ, path=cwd)

    @inlineCallbacks
    def stop() -> Any:
        if daemon.endReason is None:
            daemon.signal("KILL")
            yield withTimeout(daemon.ended, 30)

    test.addCleanup(stop)
    return daemon


@inlineCallbacks
def startDaemon(test: TestCase, args: Sequence[str], **kwargs: Any) -> Any:
    """L{spawnDaemon}, then wait until it serves; fire with it."""
    daemon = spawnDaemon(test, args, **kwargs)
    yield withTimeout(daemon.started, START_TIMEOUT)
    return daemon


@inlineCallbacks
def runToEnd(test: TestCase, args: Sequence[str], **kwargs: Any) -> Any:
    """L{spawnDaemon} a run expected to end by itself; fire with it once ended."""
    daemon = spawnDaemon(test, args, **kwargs)
    daemon.started.addErrback(lambda _: None)
    yield withTimeout(daemon.ended, START_TIMEOUT)
    return daemon


LOCAL = "tcp:0:interface=127.0.0.1"
