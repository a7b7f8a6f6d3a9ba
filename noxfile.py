"""
The dependency matrix: the fast in-memory unit and compat tests and the TLS
rows of the composition matrix (L{TLS_TESTS}), on the oldest supported
versions and on the newest releases.

  - C{oldest}: every runtime dependency at the floor that setup.cfg declares
    (the C{>=} of C{install_requires} and of the extras), so that a floor is
    only declared once it works;
  - C{newest}: the latest releases of everything.

The whole suite (end-to-end, browsers, proxies) runs on the newest through the
README's command (C{.ci/run} runs both). Run: C{python -m nox}, or one session
with C{python -m nox -s oldest}.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import nox

nox.options.sessions = ["oldest", "newest"]

EXTRAS = "websocket,h2c,tls,client,test"

#: The runtime dependencies whose floors the C{oldest} session installs.
FLOORED = (
    "Twisted",
    "zope.interface",
    "autobahn",
    "h2",
    "hyperframe",
    "priority",
    "pyOpenSSL",
    "cryptography",
    "service_identity",
    "h11",
)

#: In-memory tests only: the channel, negotiation, the private-API guards of
#: Twisted, h2 and autobahn, the WebSocket checks, h2c, and the in-memory benchmarks.
FAST_TESTS = [
    "tests/test_negotiation.py",
    "tests/test_offer.py",
    "tests/test_channel.py",
    "tests/test_callorder.py",
    "tests/test_twistedcompat.py",
    "tests/test_websocket_compat.py",
    "tests/test_websocket_handshake.py",
    "tests/test_tracking.py",
    "tests/test_daemon_config.py",
    "tests/test_h2c.py",
    "tests/test_h2compat.py",
    "tests/test_h2_connect.py::SettingTests",
    "tests/test_h2_connect.py::SwitchTests",
    "tests/test_h2_connect.py::RefusalTests",
    "tests/test_h2_connect.py::WebSocketTests",
    "tests/test_benchmarks_core_memory_smoke.py",
    "tests/test_benchmarks_websocket_memory_smoke.py",
]

#: The TLS rows, through real C{twistd txupgrade} processes and real clients
#: (curl, h2load, Node ws, Chromium, Python ssl): a TLS library or Twisted
#: release that breaks ALPN, wss or HTTP/2 over TLS fails on either session.
TLS_TESTS = [
    "tests/test_wrappers.py",
    "tests/test_tls_tap.py",
    "tests/test_e2e_matrix.py::SSLRow",
    "tests/test_e2e_matrix.py::SSLOwnKeyRow",
    "tests/test_e2e_matrix.py::WorkersSSLRow",
    "tests/test_e2e_matrix.py::NoALPNH2Tests",
    "tests/test_e2e_matrix.py::TCPRow::test_tlsUpgrade",
]

_FLOOR = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)")


def floors(setupCfg: Path = Path(__file__).parent / "setup.cfg") -> list[str]:
    """C{name==floor} for every L{FLOORED} dependency, read from setup.cfg."""
    config = configparser.ConfigParser()
    config.read(setupCfg)
    lines = config["options"]["install_requires"].splitlines()
    extras = config["options.extras_require"]
    for extra in EXTRAS.split(","):
        lines += extras.get(extra, "").splitlines()
    found: dict[str, str] = {}
    wanted = {name.lower().replace("_", "-"): name for name in FLOORED}
    for line in lines:
        match = _FLOOR.match(line.split(";")[0])
        if match and match.group(1).lower().replace("_", "-") in wanted:
            found[wanted[match.group(1).lower().replace("_", "-")]] = match.group(2)
    missing = sorted(set(FLOORED) - set(found))
    if missing:
        raise RuntimeError(f"setup.cfg declares no '>=' floor for {missing}")
    return [f"{name}=={version}" for name, version in found.items()]


def _install(session: nox.Session, *extra: str) -> None:
    session.install(
        "--disable-pip-version-check",
        "-e",
        f".[{EXTRAS}]",
        "--config-settings",
        "editable_mode=compat",
        *extra,
    )
    session.run(
        "python",
        "-c",
        "import importlib.metadata as m; "
        f"print('versions:', ', '.join(f'{{n}} {{m.version(n)}}' for n in {FLOORED!r}))",
    )


def _fastTests(session: nox.Session) -> None:
    tests = [*FAST_TESTS, *TLS_TESTS, *session.posargs]
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests)


@nox.session
def oldest(session: nox.Session) -> None:
    """The fast tests and the TLS rows on every floor setup.cfg declares."""
    _install(session, *floors())
    _fastTests(session)


@nox.session
def newest(session: nox.Session) -> None:
    """The fast tests and the TLS rows on the latest releases."""
    _install(session, "--upgrade", "--upgrade-strategy", "eager")
    _fastTests(session)
