"""
Child processes for the tests: the binaries and Node modules the end-to-end
tests drive (missing ones skip a local run and fail CI), bounded runs, and
Python children that serve (their output kept, their ports read from it).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.net import reactor, withTimeout

#: The Node project of the browser and Node client tests.
NODE_DIR = Path(__file__).parent.parent / "node"


def missingOrSkip(missing: list[str], required: bool = False) -> None:
    """
    Nothing when nothing is C{missing}; otherwise fail the test in CI (C{CI}
    set) or when C{required}, and skip it elsewhere, saying what is missing.
    """
    if not missing:
        return
    message = "; ".join(missing)
    if required or os.environ.get("CI"):
        raise AssertionError(message)
    raise SkipTest(message)


def binaryOrSkip(path: str, package: str) -> str:
    """C{path}, when it is an executable (see L{missingOrSkip})."""
    if not os.access(path, os.X_OK):
        missingOrSkip([f"{path} is missing (install the Debian package {package}, as .ci/install does)"])
    return path


def nodeOrSkip(module: str, required: bool = False) -> str:
    """
    The path of C{node}, when it and C{tests/node/node_modules/<module>} exist
    (see L{missingOrSkip}).
    """
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node is not on PATH")
    if not (NODE_DIR / "node_modules" / module).is_dir():
        missing.append(f"tests/node/node_modules/{module} is missing (run: npm ci in tests/node)")
    missingOrSkip(missing, required)
    assert node is not None
    return node


class CollectingProcess(ProcessProtocol):
    """Collect a child's output; fire C{ended} with C{(out, err, exitCode)}."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.ended: Deferred[tuple[bytes, bytes, int | None]] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback((bytes(self.out), bytes(self.err), getattr(reason.value, "exitCode", None)))


@inlineCallbacks
def runProcess(executable: str, args: list[str], cwd: str, seconds: float) -> Any:
    """
    Run C{executable} with C{args} in C{cwd}; return C{(out, err, exitCode)}.

    A child still running after C{seconds} is killed, and the test fails.
    """
    collector = CollectingProcess()
    process = reactor.spawnProcess(collector, executable, [executable, *args], env=os.environ, path=cwd)
    timedOut = []

    def kill() -> None:
        timedOut.append(True)
        process.signalProcess("KILL")

    killer = reactor.callLater(seconds, kill)
    out, err, exitCode = yield collector.ended
    if killer.active():
        killer.cancel()
    if timedOut:
        raise AssertionError(f"{executable} still running after {seconds} s; killed. stderr: {err!r}")
    return out, err, exitCode


class ServingProcess(ProcessProtocol):
    """
    A child whose output (stdout and stderr, interleaved) is kept.

    @ivar ready: Fires with every port C{portPattern} (its group 1) finds in
        the output, once there are C{count}; fails if the child exits first.
    @ivar ended: Fires once the child is gone; C{endReason} says how.
    """

    def __init__(self, portPattern: bytes, count: int = 1) -> None:
        self.output = b""
        self.portPattern = re.compile(portPattern)
        self.count = count
        self.ready: Deferred[list[int]] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.endReason: Failure | None = None
        self.waiters: list[tuple[bytes, Deferred[None]]] = []

    def ports(self) -> list[int]:
        """Every port named in the output so far, in order."""
        return [int(port) for port in self.portPattern.findall(self.output)]

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.ready.called and len(self.ports()) >= self.count:
            self.ready.callback(self.ports())
        for waiter in list(self.waiters):
            if waiter[0] in self.output:
                self.waiters.remove(waiter)
                waiter[1].callback(None)

    errReceived = outReceived

    def waitFor(self, text: bytes) -> Deferred[None]:
        """Fire once C{text} is in the output."""
        d: Deferred[None] = Deferred()
        if text in self.output:
            d.callback(None)
        else:
            self.waiters.append((text, d))
        return d

    def processEnded(self, reason: Failure) -> None:
        self.endReason = reason
        if not self.ready.called:
            self.ready.errback(AssertionError(f"exited before listening: {self.output!r}"))
        self.ended.callback(None)


def spawnPython(
    test: TestCase, child: ServingProcess, argv: list[str], python: str = sys.executable, **env: str
) -> Any:
    """
    Run C{python argv} as C{child} in a temporary directory (removed at
    cleanup), unbuffered; SIGKILL it at cleanup if it still runs.
    """
    cwd = tempfile.mkdtemp(prefix="txupgrade-child-")
    test.addCleanup(shutil.rmtree, cwd, True)
    environ = dict(os.environ, PYTHONUNBUFFERED="1", **env)
    transport = reactor.spawnProcess(child, python, [python, *argv], env=environ, path=cwd)

    @inlineCallbacks
    def stop() -> Any:
        if child.endReason is None:
            transport.signalProcess("KILL")
            yield withTimeout(child.ended)

    test.addCleanup(stop)
    return transport
