"""
Smoke test of benchmarks/bench_daemon.py: it starts the three daemons
(single, one worker, two workers), drives real handshakes through each, and
reports the ratios, whatever the speed (the machine is shared).
"""

from __future__ import annotations

import math
import shutil
import socket
import tempfile
import threading

from twisted.trial.unittest import SynchronousTestCase

from tests.support.benchmarks import importBenchmark, runQuick
from tests.support.processes import missingOrSkip


class BenchDaemonSmokeTests(SynchronousTestCase):
    """C{bench_daemon.py --quick}."""

    def test_quickRunPrintsRatios(self) -> None:
        """It exits 0, every configuration served handshakes, and the ratios are finite."""
        stdout, results = runQuick(self, "bench_daemon.py", timeout=300)
        self.assertIn("=== twistd txupgrade --workers", stdout)
        # With a C compiler (CI has one) the C generator ran.
        wanted = "C (benchmarks/hsload.c)" if shutil.which("cc") or shutil.which("gcc") else "Python"
        self.assertTrue(results["generator"].startswith(wanted), results["generator"])
        for config in ("single", "workers=1", "workers=2"):
            for kind in ("echo", "ws"):
                figures = results["results"][config][kind]
                self.assertGreater(figures["handshakes"], 0, (config, kind))
                self.assertEqual(figures["errors"], 0, (config, kind))
        # A supervisor and its workers were all measured.
        self.assertEqual(len(results["results"]["workers=2"]["echo"]["processCpu"]), 3)
        for kind in ("echo", "ws"):
            self.assertIn(f"ratio {kind}: workers=2/workers=1", stdout)
            ratio = results["summary"][kind]["workers2/workers1"]
            self.assertTrue(math.isfinite(ratio) and ratio > 0, ratio)

    def test_brokenHandshakeIsCaught(self) -> None:
        """The script refuses an answer that is not the 101 it asked for."""
        bench = importBenchmark(self, "bench_daemon")

        self.assertRaises(SystemExit, bench.checkHead, "echo", b"HTTP/1.1 400 Bad Request\r\n\r\n")
        self.assertRaises(SystemExit, bench.checkHead, "ws", b"HTTP/1.1 101 Switching\r\n\r\n")
        bench.checkHead("echo", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n\r\n")

    def test_cGeneratorCatchesABrokenServer(self) -> None:
        """hsload counts nothing for a server that answers 400: the script stops with the answer."""
        bench = importBenchmark(self, "bench_daemon")
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        binary = bench.compileGenerator(directory)
        if binary is None:
            missingOrSkip(["no C compiler builds benchmarks/hsload.c (Debian gcc, as .ci/install installs)"])
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)

        def answer400() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(4096)
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        threading.Thread(target=answer400, daemon=True).start()
        with self.assertRaises(SystemExit) as caught:
            bench.generateC(binary, "echo", listener.getsockname()[1], 5.0, 1)
        self.assertIn("400 Bad Request", str(caught.exception))
