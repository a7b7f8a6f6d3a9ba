"""
Smoke test of fuzz/fuzz_channel.py: a short, bounded atheris run over the
channel finds no broken invariant (the long mode is run by hand).
"""

from __future__ import annotations

import os
import re

from tests.support.benchmarks import REPO, runScript

SCRIPT = os.path.join(REPO, "fuzz", "fuzz_channel.py")


def test_shortRun(tmp_path: object) -> None:
    """C{fuzz_channel.py --runs 3000} exits 0 having run every input, instrumented, writing no crash."""
    done = runScript(SCRIPT, "--runs", "3000", "--artifacts", f"{tmp_path}/")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert re.search(r"^Done 3000 runs in \d+ second", output, re.MULTILINE), output[-4000:]
    # Coverage reaches txupgrade and twisted.web.http (instrumentation not lost).
    (cov,) = re.findall(r"^#3000\s+DONE\s+cov: (\d+)", output, re.MULTILINE)
    assert int(cov) >= 400, cov
    assert os.listdir(str(tmp_path)) == [], output[-4000:]


def test_replayCatchesABrokenInvariant(tmp_path: object) -> None:
    """With a byte planted lost after a switch, replaying an upgrade fails the run with the assertion."""
    crash = os.path.join(str(tmp_path), "input")
    with open(crash, "wb") as f:
        f.write(b"\x00GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nx")
    env = dict(os.environ, TXUPGRADE_FUZZ_SELFTEST="1")
    done = runScript(SCRIPT, "--artifacts", f"{tmp_path}/", crash, env=env)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-4000:]
    assert "AssertionError" in output, output[-4000:]
