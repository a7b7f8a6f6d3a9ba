"""
Child processes for the tests: the binaries and Node modules the end-to-end
tests drive (missing ones skip a local run and fail CI), and bounded runs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest

from tests.support.net import reactor

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
