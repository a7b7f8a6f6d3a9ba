"""
C{twistd txupgrade}: what the default access log costs per upgrade.

Theory of operation
-------------------
Two daemons, one after the other, each a real
C{twistd -n txupgrade --listen tcp:0:interface=127.0.0.1} logging to a file
(as an operator runs it): C{log on} (the default: one access line per
request, a switch logged once as a C{101}, into the twistd log) and
C{log off} (C{--no-access-log}). The load generator, the measurement
windows and the CPU accounting (server, generator, everything else on the
shared machine) and the choice of generator are those of C{bench_daemon.py}: C{echo} and C{ws}
handshakes (connect, upgrade, read the C{101}, reset).

The figures: handshakes per second, server CPU microseconds per handshake,
and the difference between the two daemons: the access log's cost per
upgrade on the socket path. Paired with it, in memory, the Python work of
one access line as twistd does it (C{combinedLogFormatter} for a switched
request, then the legacy log file into a text observer writing a file).

Run: C{python benchmarks/bench_daemon_log.py} (about 40 s), C{--quick} (a
smoke run: the figures are noise), C{--json PATH} to keep the results.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H
import bench_daemon as _daemon

CONFIGS = {"log on": [], "log off": ["--no-access-log"]}


class Daemon(H.Twistd):
    """A single-process daemon (the harness's C{Twistd} without C{--workers}) that counts its access lines."""

    def accessLines(self) -> int:
        """How many access lines of switches its log holds."""
        return self.text().count('" 101 - "')


def inMemory(rounds: int) -> float:
    """Microseconds of Python work per access line of a switch, as twistd writes it."""
    from twisted.logger import LogPublisher, textFileLogObserver
    from twisted.web.http import combinedLogFormatter, datetimeToLogString
    from twisted.web.test.requesthelper import DummyRequest

    publisher = LogPublisher(textFileLogObserver(io.StringIO()))
    from twisted.logger import Logger

    logger = Logger(namespace="twisted.python.log", observer=publisher)
    request: Any = DummyRequest([b""])
    request.method, request.uri, request.clientproto = b"GET", b"/", b"HTTP/1.1"
    request.code, request.sentLength = 101, 0
    request.client = request.getClientAddress()
    started = time.perf_counter()
    for _ in range(rounds):
        line = combinedLogFormatter(datetimeToLogString(), request)
        logger.info("{log_text}", log_text=line, log_io=True)
    return (time.perf_counter() - started) / rounds * 1e6


def main(argv: list[str] | None = None) -> int:
    args = _daemon.parseOptions(_daemon.optionParser(__doc__, concurrency=16), argv)
    kinds = [k for k in args.kinds.split(",") if k]
    directory = tempfile.mkdtemp(prefix="txupgrade-bench-log-")
    results: dict[str, dict[str, Any]] = {}
    print(f"=== twistd txupgrade access log: on vs off, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    generator = _daemon.chooseGenerator(args.generator, directory)
    print(f"generator: {_daemon.generatorName(generator)}")
    print(f"{'config':<8} {'kind':<5} {'hs/s':>8} {'srv us/hs':>10} {'gen cpu':>8} {'other cpu':>10}")
    try:
        for name, extra in CONFIGS.items():
            daemon = Daemon(name, extra, directory)
            try:
                for kind in kinds:
                    r = _daemon.measure(daemon, kind, args.seconds, args.concurrency, generator)
                    r["serverMicrosPerHandshake"] = H.ratio(r["serverCpu"], r["handshakes"]) * 1e6
                    results.setdefault(name, {})[kind] = r
                    print(
                        f"{name:<8} {kind:<5} {r['perSecond']:>8.0f} {r['serverMicrosPerHandshake']:>10.1f} "
                        f"{r['generatorCpu']:>8.2f} {r['otherCpu']:>10.2f}"
                    )
                results[name]["accessLines"] = daemon.accessLines()  # type: ignore[assignment]
                print(f"{name:<8} access lines of switches in its log: {results[name]['accessLines']}")
            finally:
                daemon.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    summary: dict[str, Any] = {}
    for kind in kinds:
        on, off = results["log on"][kind], results["log off"][kind]
        summary[kind] = {
            "off/on handshakes per second": H.ratio(off["perSecond"], on["perSecond"]),
            "log cost us per handshake": on["serverMicrosPerHandshake"] - off["serverMicrosPerHandshake"],
        }
        s = summary[kind]
        print(
            f"ratio {kind}: log off/on {H.fmtRatio(s['off/on handshakes per second'])} handshakes/s; "
            f"the access log costs {s['log cost us per handshake']:.1f} us of server CPU per upgrade"
        )
    rounds = 2000 if args.quick else 50000
    summary["inMemoryMicrosPerLine"] = inMemory(rounds)
    perLine = summary["inMemoryMicrosPerLine"]
    print(f"in memory: one access line of a switch, formatted and logged: {perLine:.1f} us")
    print(f"load average at the end: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "summary": summary}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
