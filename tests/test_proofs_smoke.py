"""
Smoke tests of the proof scripts (benchmarks/proof_*.py): each fast variant
runs against a real server process on 127.0.0.1 and its proof holds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def runQuick(name: str, *args: str) -> str:
    """Run C{benchmarks/NAME --quick ARGS}; its output, after checking it passed."""
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", name), "--quick", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "RESULT OK" in done.stdout, output[-4000:]
    return done.stdout


@pytest.mark.parametrize("kind", ["echo", "ws"])
def test_soak(kind: str) -> None:
    """C{proof_soak.py --quick}: every cycle exact, RSS growth reported within 5%, no error logged."""
    out = runQuick("proof_soak.py", "--kind", kind)
    assert re.search(rf"^{kind}: 2,000 cycles in ", out, re.MULTILINE), out
    assert re.search(
        rf"^{kind}: RSS after warm-up .* growth [-+]\d+\.\d+% \(limit 5%\) OK$", out, re.MULTILINE
    ), out
    assert f"{kind}: errors logged by the server: 0" in out, out


def test_concurrent() -> None:
    """C{proof_concurrent.py --quick}: 200 upgraded connections, every echoed byte exact."""
    out = runQuick("proof_concurrent.py")
    assert "opened and upgraded 200 of 200 connections" in out, out
    assert re.search(r"handshake latency .* p50 [\d.]+ ms, p99 [\d.]+ ms", out), out
    assert "0 mismatched, 0 bytes extra" in out, out


def test_slowloris() -> None:
    """C{proof_slowloris.py --quick}: the normal client is served alone and beside 50 tricklers."""
    out = runQuick("proof_slowloris.py")
    assert re.search(
        r"^normal client alone: [\d,]+ requests, p50 [\d.]+ ms, p99 [\d.]+ ms, 0 failed$", out, re.M
    ), out
    assert re.search(r"^normal client with 50 trickling: [\d,]+ requests, .* 0 failed$", out, re.M), out
    assert "trickling connections closed by the server:" in out, out


def test_faults() -> None:
    """C{proof_faults.py --quick}: every normal client served; only the planted plugin failures logged."""
    out = runQuick("proof_faults.py")
    assert re.search(r"^normal clients served exactly: ([\d,]+) of \1$", out, re.M), out
    assert "expected plugin failures logged: negotiate x5, buildProtocol x5, makeConnection x5, " in out, out
    assert "other errors (tracebacks) logged by the server: 0" in out, out
