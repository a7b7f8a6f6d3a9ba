"""
Smoke tests of the proof scripts (benchmarks/proof_*.py): each fast variant
runs against a real server process on 127.0.0.1 and its proof holds.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.support.benchmarks import BENCHMARKS, runScript


def runProof(name: str, *args: str) -> str:
    """Run C{benchmarks/NAME --quick ARGS}; its output, after checking it passed."""
    done = runScript(os.path.join(BENCHMARKS, name), "--quick", *args)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "RESULT OK" in done.stdout, output[-4000:]
    return done.stdout


@pytest.mark.parametrize("kind", ["echo", "ws"])
def test_soak(kind: str) -> None:
    """C{proof_soak.py --quick}: every cycle exact, RSS growth reported within 5%, no error logged."""
    out = runProof("proof_soak.py", "--kind", kind)
    assert re.search(rf"^{kind}: 2,000 cycles in ", out, re.MULTILINE), out
    assert re.search(
        rf"^{kind}: RSS after warm-up .* growth [-+]\d+\.\d+% \(limit 5%\) OK$", out, re.MULTILINE
    ), out
    assert f"{kind}: errors logged by the server: 0" in out, out


def test_concurrent() -> None:
    """C{proof_concurrent.py --quick}: 200 upgraded connections, every echoed byte exact."""
    out = runProof("proof_concurrent.py")
    assert "opened and upgraded 200 of 200 connections" in out, out
    assert re.search(r"handshake latency .* p50 [\d.]+ ms, p99 [\d.]+ ms", out), out
    assert "0 mismatched, 0 bytes extra" in out, out


def test_slowloris() -> None:
    """
    C{proof_slowloris.py --quick} against C{twistd txupgrade --request-head-timeout 1.5}: the
    normal client is served alone and beside 50 tricklers, and every trickling connection is
    answered 408 and closed at the deadline (not before, not 2 s late, never left open).
    """
    out = runProof("proof_slowloris.py")
    name = r"\[deadline 1\.5 s\]"
    assert re.search(rf"^{name} server: twistd -n txupgrade .*--request-head-timeout 1\.5$", out, re.M), out
    assert re.search(
        rf"^{name} normal client alone: [\d,]+ requests, p50 [\d.]+ ms, p99 [\d.]+ ms, 0 failed;", out, re.M
    ), out
    assert re.search(rf"^{name} normal client with 50 trickling: [\d,]+ requests, .* 0 failed;", out, re.M), (
        out
    )
    opened = re.search(
        rf"^{name} trickling connections: (\d+) opened in [\d.]+ s \(0 refused, \d+ bytes trickled\), "
        rf"(\d+) closed by the server \((\d+) with a 408 first, 0 without\)$",
        out,
        re.M,
    )
    assert opened, out
    total, closed, with408 = map(int, opened.groups())
    # The first 50 connections are older than 3.5 s (deadline + grace) at the end: each was closed.
    assert closed >= 50 and with408 == closed, out
    assert re.search(
        rf"^{name} still open at the end: {total - closed}, 0 of them older than 3\.5 s", out, re.M
    ), out
    lifetimes = re.search(
        rf"^{name} lifetimes of the closed ones: min ([\d.]+) s, .* max ([\d.]+) s "
        r"\(deadline 1\.5 s; 0 before it, 0 later than \+2 s\)$",
        out,
        re.M,
    )
    assert lifetimes, out
    assert 1.49 <= float(lifetimes.group(1)) <= float(lifetimes.group(2)) <= 3.5, out
    counted = re.search(
        rf"^{name} request-head timeouts the server counted \(its metrics\): (\d+) ", out, re.M
    )
    assert counted and closed <= int(counted.group(1)) <= total, out
    assert "[deadline 1.5 s] errors logged by the server: 0" in out, out


def test_faults() -> None:
    """C{proof_faults.py --quick}: every normal client served; only the planted plugin failures logged."""
    out = runProof("proof_faults.py")
    assert re.search(r"^normal clients served exactly: ([\d,]+) of \1$", out, re.M), out
    # txupgrade rate-limits its own plugin-failure lines, but counts each one.
    assert "expected plugin failures logged: negotiate x1, buildProtocol x1, makeConnection x1, " in out, out
    assert "rate-limited ones counted: negotiate x5, buildProtocol x5, makeConnection x5" in out, out
    assert "dataReceived x5, connectionLost x5" in out, out
    assert "other errors (tracebacks) logged by the server: 0" in out, out
