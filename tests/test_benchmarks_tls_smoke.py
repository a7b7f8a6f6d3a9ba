"""
Smoke test of benchmarks/bench_tls.py: it starts the shipped daemon on an
C{ssl:} listener and every peer, drives TLS handshakes with a GET, C{wss://}
handshakes and HTTP/2 over TLS through each, and reports the rates and the
ratios, whatever the speed (the machine is shared).

Run: C{python -m twisted.trial tests.test_benchmarks_tls_smoke} (about 20 s).
"""

from __future__ import annotations

import importlib.util
import math
import shutil

from twisted.trial.unittest import SynchronousTestCase

from tests.support.benchmarks import runQuick
from tests.support.processes import missingOrSkip

#: Who serves each load, as the report names them.
SERVERS = {
    "hs+GET": {"daemon", "plain Site", "in-code", "TLS floor"},
    "wss": {"daemon", "autobahn", "TLS floor"},
    "h2 c10 m10": {"daemon", "hypercorn"},
    "h2 c10 m1": {"daemon", "hypercorn"},
    "h2 c2 m100": {"daemon", "hypercorn"},
}

#: The ratios with a goal.
GOALS = {
    "hs+GET daemon / plain Site": ">= 0.9",
    "wss daemon / autobahn": ">= 1.5",
    "h2 c10 m10 daemon / hypercorn": ">= 1.0",
    "h2 c10 m1 daemon / hypercorn": ">= 1.0",
    "h2 c2 m100 daemon / hypercorn": ">= 1.0",
}


class BenchTLSSmokeTests(SynchronousTestCase):
    """C{bench_tls.py --quick}."""

    def test_quickRunPrintsRatios(self) -> None:
        """It exits 0, every server did work at every load it serves, and the ratios are finite."""
        missing = []
        if shutil.which("h2load") is None:
            missing.append("h2load is missing (Debian nghttp2-client; bash .ci/install installs it)")
        for module in ("trustme", "hypercorn", "autobahn", "OpenSSL"):
            if importlib.util.find_spec(module) is None:
                missing.append(f"the Python module {module} is missing (the test extra installs it)")
        missingOrSkip(missing)
        stdout, results = runQuick(self, "bench_tls.py", timeout=180)
        self.assertIn("=== TLS as shipped: twistd txupgrade on ssl:", stdout)
        self.assertIn("== Summary: work per server CPU-second", stdout)
        self.assertEqual({load: set(byServer) for load, byServer in results["samples"].items()}, SERVERS)
        for load, byServer in results["samples"].items():
            for name, windows in byServer.items():
                self.assertTrue(windows and all(w["work"] > 0 for w in windows), (load, name, windows))
                self.assertTrue(all(w["server"] > 0 for w in windows), (load, name, windows))
        self.assertEqual(
            {label: goal for label, goal in results["goals"].items() if goal not in ("", "bound")}, GOALS
        )
        for label, value in results["ratios"].items():
            self.assertTrue(math.isfinite(value) and value > 0, (label, value))
            self.assertIn(f"ratio {label}: ", stdout)
        # Every connection was answered, the daemon logged no error, no peer printed anything.
        self.assertEqual(set(results["wssErrors"].values()), {0}, results["wssErrors"])
        self.assertEqual(results["daemonTroubles"], 0)
        for name in ("plain Site", "in-code", "autobahn", "hypercorn", "TLS floor"):
            self.assertIn(f"{name} printed after start-up: 'nothing'", stdout)
        # HTTP/2 went over TLS to both servers (each h2load run checked ALPN h2), as h2load reported it.
        self.assertIn("TLS", results["tls"]["daemon h2"])
        self.assertIn("TLS", results["tls"]["hypercorn h2"])
