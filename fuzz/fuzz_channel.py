#!/usr/bin/env python
"""
Coverage-guided fuzzing of the HTTP/1.1 channel with atheris (libFuzzer).

Every input is bytes sent to a fresh connection of the real
L{txupgrade.channel.UpgradeSite}, in memory: its first byte picks the site
(static or dynamic tree, upgrade body limit) and how reads are cut (whole,
one byte at a time, three bytes), the next up to three bytes cut the stream
into writes, the rest is the stream. The invariants of
C{tests/channel_oracle.py} are asserted on what comes back (no exception, no
error logged, no C{101} for an invalid request, answered or closed, bytes
after a switch echoed exactly once); a broken one is a crash: libFuzzer
stops, prints the traceback and writes the input as C{crash-*} (replay it
with C{python fuzz/fuzz_channel.py crash-...}).

Instrumented for coverage: txupgrade, and twisted.web's HTTP parser and
request (C{twisted.web.http}), and LineReceiver.

    pip install -e '.[fuzz]'
    python fuzz/fuzz_channel.py --runs 1000000            # the long mode
    python fuzz/fuzz_channel.py --seconds 20              # a short smoke
    python fuzz/fuzz_channel.py --runs 1000000 --corpus /tmp/corpus

Both bounds may be given; the run stops at the first reached. libFuzzer runs
in a child process; the inputs that reach new code go to C{--corpus} (by
default a scratch directory, removed afterwards), C{fuzz/seeds} is only
read. Other libFuzzer flags go after C{--}. The exit status is libFuzzer's:
0 when no invariant broke.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import atheris  # noqa: E402 - after the path is set

# Coverage: all of txupgrade; of Twisted (instrument_imports would take the
# whole package, at several times the cost per input), the HTTP/1.1 parser
# and the request, and LineReceiver.
with atheris.instrument_imports(include=["txupgrade"]):
    for _module in (
        "txupgrade.channel",
        "txupgrade.negotiation",
        "txupgrade.offer",
        "txupgrade.protocols.echo",
    ):
        importlib.import_module(_module)

from twisted.protocols import basic  # noqa: E402
from twisted.web import http  # noqa: E402


def _instrument(owner: object) -> None:
    """Instrument, in place, every function defined on a class or module C{owner}."""
    for value in list(vars(owner).values()):
        if inspect.isfunction(value) and value.__module__ == getattr(owner, "__module__", owner.__name__):
            atheris.instrument_func(value)


for _owner in (
    http,
    http.HTTPChannel,
    http.Request,
    http._ChunkedTransferDecoder,
    http._IdentityTransferDecoder,
    basic.LineReceiver,
):
    _instrument(_owner)

from twisted.logger import globalLogBeginner  # noqa: E402

from tests.channel_oracle import checkStream, decodeInput, runStream  # noqa: E402

#: Inputs longer than this are cut (the channel's size limits are tested elsewhere).
MAX_LEN = 4096


#: With this set, one byte the client received is dropped before the check:
#: the test suite's proof that a broken invariant stops the run.
_SELFTEST = os.environ.get("TXUPGRADE_FUZZ_SELFTEST") == "1"


def testOneInput(data: bytes) -> None:
    """Run one input through the channel and assert every invariant."""
    stream, pieces, options = decodeInput(data)
    seen = runStream(pieces, **options)  # type: ignore[arg-type]
    if _SELFTEST:
        seen.received = seen.received[:-1]
    checkStream(stream, seen)


def _worker(argv: list[str]) -> None:
    """Run libFuzzer in this process (it exits the process when done)."""
    # Events are built and published as in a server, then dropped (not
    # buffered): the invariants watch for errors with their own observer.
    globalLogBeginner.beginLoggingTo([lambda event: None], discardBuffer=True, redirectStandardIO=False)
    atheris.Setup(argv, testOneInput)
    atheris.Fuzz()


def main(argv: list[str]) -> int:
    """Parse the bounds, then run libFuzzer in a child process with a scratch corpus."""
    if argv[1:2] == ["--worker"]:
        _worker([argv[0], *argv[2:]])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, help="stop after this many inputs")
    parser.add_argument("--seconds", type=int, help="stop after this many seconds")
    parser.add_argument("--corpus", help="corpus directory to keep (default: a scratch one, removed)")
    parser.add_argument("--artifacts", default="./", help="where a crashing input is written (prefix)")
    parser.add_argument("--jobs", type=int, default=1, help="fuzzing processes, the runs shared among them")
    parser.add_argument("inputs", nargs="*", help="replay these input files instead of fuzzing")
    ours, extra = argv[1:], []
    if "--" in ours:
        # Everything after "--" is for libFuzzer (not an input to replay).
        cut = ours.index("--")
        ours, extra = ours[:cut], ours[cut + 1 :]
    args = parser.parse_args(ours)
    if not (args.runs or args.seconds or args.inputs):
        parser.error("give --runs and/or --seconds (or inputs to replay): the run must be bounded")
    flags = [
        f"-max_len={MAX_LEN}",
        "-timeout=20",
        f"-dict={os.path.join(HERE, 'http.dict')}",
        f"-artifact_prefix={args.artifacts}",
        "-print_final_stats=1",
    ]
    if args.inputs:
        dirs = args.inputs
    else:
        if args.runs:
            flags.append(f"-runs={args.runs}")
        if args.seconds:
            flags.append(f"-max_total_time={args.seconds}")
    scratch = None
    if not args.inputs:
        corpus = args.corpus or tempfile.mkdtemp(prefix="txupgrade-fuzz-")
        scratch = None if args.corpus else corpus
        os.makedirs(corpus, exist_ok=True)
        # New inputs go to the first directory; the seeds are only read.
        dirs = [corpus, os.path.join(HERE, "seeds")]
    jobs = max(1, args.jobs) if not args.inputs else 1
    processes = []
    for job in range(jobs):
        jobFlags = list(flags)
        if jobs > 1:
            # Each job its own share of the runs and its own random seed; they
            # share the corpus directory (each reads what is there when it starts).
            jobFlags = [f for f in jobFlags if not f.startswith("-runs=")]
            if args.runs:
                jobFlags.append(f"-runs={-(-args.runs // jobs)}")
            jobFlags.append(f"-seed={job + 1}")
        command = [sys.executable, os.path.abspath(__file__), "--worker", *jobFlags]
        command += extra + dirs
        processes.append(subprocess.Popen(command))
    try:
        codes = [p.wait() for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return next((c for c in codes if c), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
