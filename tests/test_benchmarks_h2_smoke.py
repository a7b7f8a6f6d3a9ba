"""
Smoke test of benchmarks/bench_h2.py: it runs against both servers and reports, whatever the speed.
"""

from __future__ import annotations

import math
import os
import re

from tests.support.benchmarks import BENCHMARKS, runScript

SCRIPT = os.path.join(BENCHMARKS, "bench_h2.py")


def test_quickRunPrintsSummary() -> None:
    """C{bench_h2.py --quick} exits 0 with a finite ratio per shape, the latencies and the in-memory table."""
    done = runScript(SCRIPT, "--quick", timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    summary = out.split("== Summary", 1)[1].split("== Stream-1 latency", 1)[0]
    for shape in ("c10 m10", "c10 m1", "c2 m100"):
        match = re.search(rf"^{shape}\s+([\d,]+)\s+([\d,]+)\s+([\d.]+)x", summary, re.MULTILINE)
        assert match is not None, (shape, summary)
        assert math.isfinite(float(match.group(3))) and float(match.group(3)) > 0, match.group(0)
    latency = out.split("== Stream-1 latency", 1)[1].split("== In memory", 1)[0]
    for label in ("HTTP/1.1 answer", "h2c: stream-1 answer", "h2c: after the 101"):
        assert re.search(rf"^{re.escape(label)}\s+\d+ /\s+\d+$", latency, re.MULTILINE), (label, latency)
    memory = out.split("== In memory", 1)[1]
    assert re.search(r"^Twisted H2Connection\s+[\d.]+$", memory, re.MULTILINE), memory
    assert re.search(r"^txupgrade H2Connection\s+[\d.]+$", memory, re.MULTILINE), memory
    assert "txupgrade printed after start-up: 'nothing'" in out, out
    assert "hypercorn printed after start-up: 'nothing'" in out, out
