"""
C{twistd txupgrade}'s options as real processes: an operator's own site and
WebSocket factory, TLS and UNIX listeners, a config file, C{--list-protocols}
with a third-party plugin, JSON logs, and one-line errors for bad input.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import tempfile
import textwrap
from typing import Any

from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.trial.unittest import TestCase
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as wsConnect
from websockets.sync.client import unix_connect as wsUnixConnect

from tests.daemon_sample import HELLO
from tests.support.daemon import LOCAL, runToEnd, spawnDaemon, startDaemon
from tests.support.http import parseResponse
from tests.support.net import TrackingSite, inThread, listen, wait
from tests.test_e2e_plugins import GOOD_PLUGIN
from txupgrade.daemon.demo import demoRoot
from txupgrade.protocols.echo import EchoUpgrade
from txupgrade.registry import ProtocolRegistry

CLIENT_TIMEOUT = 10.0


def _get(port: int, path: str = "/", context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """A blocking GET on 127.0.0.1 (over TLS with C{context})."""
    if context is None:
        connection: http.client.HTTPConnection = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=CLIENT_TIMEOUT
        )
    else:
        connection = http.client.HTTPSConnection("localhost", port, timeout=CLIENT_TIMEOUT, context=context)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _getUnix(path: str, target: str) -> tuple[int, bytes]:
    """A blocking GET over the UNIX socket at C{path}."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        sock.connect(path)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    response = parseResponse(data)
    return response.code, response.body


def _chat(url: str, origin: str | None, message: str, unixPath: str | None = None) -> str:
    """Open C{url} (with C{Origin: origin}), send C{message}, return the answer."""
    headers = {"Origin": origin} if origin else None
    if unixPath is None:
        ws = wsConnect(url, additional_headers=headers, open_timeout=CLIENT_TIMEOUT)
    else:
        ws = wsUnixConnect(unixPath, url, additional_headers=headers, open_timeout=CLIENT_TIMEOUT)
    with ws:
        ws.send(message)
        answer = ws.recv(timeout=CLIENT_TIMEOUT)
        assert isinstance(answer, str)
        return answer


def _refusedStatus(url: str, origin: str) -> int:
    try:
        _chat(url, origin, "x")
    except InvalidStatus as error:
        return error.response.status_code
    return 101


class OwnSiteTests(TestCase):
    """C{--resource}, C{--websocket}, C{--websocket-origin}, TLS and UNIX listeners."""

    timeout = 120

    @inlineCallbacks
    def test_ownResourceAndWebSocket(self) -> Any:
        """The operator's root and chat factory are served; only the allowed origin may open it."""
        daemon = yield startDaemon(
            self,
            [
                "--listen",
                LOCAL,
                "--resource",
                "tests.daemon_sample.root",
                "--websocket",
                "/chat/room=tests.daemon_sample.chatFactory",
                "--websocket-origin",
                "https://*.allowed.example:*",
            ],
        )
        [port] = daemon.ports
        self.assertIn(b"upgrade protocols: echo, h2c, websocket", daemon.output)
        status, body = yield inThread(_get, port, "/hello")
        self.assertEqual((status, body), (200, HELLO))
        status, _ = yield inThread(_get, port, "/echo")
        self.assertEqual(status, 404)
        url = f"ws://127.0.0.1:{port}/chat/room"
        answer = yield inThread(_chat, url, "https://www.allowed.example:8443", "hi")
        self.assertRegex(answer, r"^chat: hi from tcp4:127\.0\.0\.1:\d+$")
        status = yield inThread(_refusedStatus, url, "https://evil.example")
        self.assertEqual(status, 403)

    @inlineCallbacks
    def test_tlsAndUnixListeners(self) -> Any:
        """C{ssl:} with C{--tls-certificate} and C{unix:} listeners serve the same site."""
        import trustme

        directory = tempfile.mkdtemp(prefix="txupgrade-tls-")
        ca = trustme.CA()
        pem = os.path.join(directory, "server.pem")
        ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(pem)
        unixPath = os.path.join(directory, "txupgrade.sock")
        daemon = yield startDaemon(
            self,
            [
                "--listen",
                "ssl:0:interface=127.0.0.1",
                "--listen",
                f"unix:{unixPath}",
                "--tls-certificate",
                pem,
            ],
        )
        self.assertEqual(len(daemon.listeners), 2, daemon.listeners)
        self.assertIn(unixPath, daemon.listeners[1])
        [port] = daemon.ports
        context = ssl.create_default_context()
        ca.configure_trust(context)
        status, body = yield inThread(_get, port, "/echo", context)
        self.assertEqual(status, 200)
        self.assertIn(b"Upgrade: echo", body)
        status, body = yield inThread(_getUnix, unixPath, "/echo")
        self.assertEqual(status, 200)
        self.assertIn(b"Upgrade: echo", body)
        answer = yield inThread(_chatUnixEcho, unixPath)
        self.assertEqual(answer, "over unix")


def _chatUnixEcho(unixPath: str) -> str:
    return _chat("ws://localhost/ws", None, "over unix", unixPath)


class ConfigFileTests(TestCase):
    """C{--config}: the TOML file, and the command line winning over it."""

    timeout = 120

    @inlineCallbacks
    def test_configFileServes(self) -> Any:
        """The file's listeners, resource and mounts are used; C{--disable} on the command line wins."""
        directory = tempfile.mkdtemp(prefix="txupgrade-config-")
        path = os.path.join(directory, "txupgrade.toml")
        with open(path, "w") as f:
            f.write(
                textwrap.dedent(f"""\
                listen = ["{LOCAL}", "{LOCAL}"]
                resource = "tests.daemon_sample.root"
                websocket = {{ "/chat" = "tests.daemon_sample.chatFactory" }}
                enable = ["echo", "websocket"]
                drain_timeout = 3
                """)
            )
        daemon = yield startDaemon(self, ["--config", path, "--disable", "echo"])
        self.assertEqual(len(set(daemon.ports)), 2)
        self.assertIn(b"upgrade protocols: websocket\n", daemon.output)
        for port in daemon.ports:
            status, body = yield inThread(_get, port, "/hello")
            self.assertEqual((status, body), (200, HELLO))
            answer = yield inThread(_chat, f"ws://127.0.0.1:{port}/chat", None, "cfg")
            self.assertTrue(answer.startswith("chat: cfg from tcp4:127.0.0.1:"), answer)


class ListProtocolsTests(TestCase):
    """C{--list-protocols} with a third-party plugin distribution installed."""

    timeout = 60

    @inlineCallbacks
    def test_thirdPartyListed(self) -> Any:
        """A plugin module in another path entry's C{txupgrade/plugins/} is listed with its module."""
        root = tempfile.mkdtemp(prefix="txupgrade-dist-")
        plugins = os.path.join(root, "txupgrade", "plugins")
        os.makedirs(plugins)
        with open(os.path.join(plugins, "mytestproto.py"), "w") as f:
            f.write(GOOD_PLUGIN)
        with open(os.path.join(plugins, "brokenproto.py"), "w") as f:
            f.write("import no_such_module_anywhere\n")
        env = {"PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        daemon = yield runToEnd(self, ["--list-protocols"], env=env)
        self.assertEqual(daemon.exitCode, 0, daemon.output)
        lines = daemon.output.decode().splitlines()
        self.assertIn("mytestproto/1            txupgrade.plugins.mytestproto", lines)
        self.assertIn("echo                     txupgrade.plugins.txupgrade_builtins", lines)
        self.assertTrue(any(line.startswith("websocket ") for line in lines), lines)
        skipped = [line for line in lines if "brokenproto" in line]
        self.assertEqual(len(skipped), 1, lines)
        self.assertIn("No module named 'no_such_module_anywhere'", skipped[0])
        self.assertIn("skipped", skipped[0])
        self.assertNotIn("Traceback", daemon.output.decode())


class JSONLogTests(TestCase):
    """C{--log-format json} and twistd's C{--logger}."""

    timeout = 90

    @inlineCallbacks
    def test_logFormatJSON(self) -> Any:
        """Every line is a JSON event; the start-up one carries the listeners and protocols."""
        daemon = spawnDaemon(self, ["--listen", LOCAL, "--log-format", "json"])
        yield self._started(daemon)

    @inlineCallbacks
    def test_twistdLogger(self) -> Any:
        """C{twistd --logger txupgrade.daemon.logs.jsonLogObserver} logs the same events as JSON."""
        daemon = spawnDaemon(
            self, ["--listen", LOCAL], twistdArgs=["--logger", "txupgrade.daemon.logs.jsonLogObserver"]
        )
        yield self._started(daemon)

    @inlineCallbacks
    def _started(self, daemon: Any) -> Any:
        """Wait for the start-up event; check it, and that nothing but JSON was written."""

        def started() -> bool:
            return daemon.endReason is not None or any(
                e.get("daemonEvent") == "started" for e in daemon.jsonEvents()
            )

        yield wait(started, 45)
        events = daemon.jsonEvents()
        [started] = [e for e in events if e.get("daemonEvent") == "started"]
        self.assertEqual(started["log_namespace"], "txupgrade.daemon")
        self.assertEqual(started["protocols"], "echo, h2c, websocket")
        self.assertRegex(started["listeners"], r"^tcp:127\.0\.0\.1:\d+$")
        text = [line for line in daemon.output.splitlines() if line.strip(b"\x1e").strip()]
        self.assertEqual(len(text), len(events), daemon.output)


#: Bad input: arguments, and what the one line must say.
BAD_INPUT = [
    (["--enable", "nosuchproto"], "unknown protocol 'nosuchproto'"),
    (["--disable", "echo/7"], "unknown protocol 'echo/7'"),
    (["--resource", "tests.no_such_module.root"], "--resource 'tests.no_such_module.root' cannot be loaded"),
    (["--resource", "tests.daemon_sample.NOT_A_RESOURCE"], "is int, not a twisted.web resource"),
    (["--websocket", "/x=tests.daemon_sample.root"], "not an autobahn WebSocketServerFactory"),
    (["--websocket", "nopath"], "--websocket wants PATH=DOTTED.NAME"),
    (["--listen", "tcp:notaport"], "--listen tcp:notaport: bad endpoint"),
    (["--listen", "ssl:0:interface=127.0.0.1"], "needs --tls-certificate"),
    (["--timeout", "soon"], "bad timeout 'soon'"),
    (["--policy", "random"], "bad policy 'random'"),
]


class BadInputTests(TestCase):
    """Each mistake: one line on standard error naming it, exit status 1, no traceback."""

    timeout = 180

    def assertOneLine(self, daemon: Any, expected: str, args: Any = None) -> None:
        """C{daemon} exited 1 after one line on standard error containing C{expected}."""
        stderr = daemon.stderr.decode()
        self.assertEqual(daemon.exitCode, 1, (args, daemon.output))
        self.assertEqual(len(stderr.splitlines()), 1, (args, stderr))
        self.assertTrue(stderr.startswith("txupgrade: "), (args, stderr))
        self.assertIn(expected, stderr, args)
        self.assertNotIn("Traceback", daemon.output.decode(), args)

    @inlineCallbacks
    def test_badArguments(self) -> Any:
        """Unknown protocols, unloadable names, bad endpoints and values."""
        runs = [runToEnd(self, args) for args, _ in BAD_INPUT]
        results = yield DeferredList(runs, fireOnOneErrback=True, consumeErrors=True)
        for (_, daemon), (args, expected) in zip(results, BAD_INPUT, strict=True):
            self.assertOneLine(daemon, expected, args)

    @inlineCallbacks
    def test_badFiles(self) -> Any:
        """A config file that is not TOML, names an unknown setting, or is missing; a PEM without key."""
        directory = tempfile.mkdtemp(prefix="txupgrade-bad-")
        files = {"notoml.toml": "listen = [", "unknown.toml": 'listn = ["tcp:0"]\n', "cert.pem": ""}
        for name, text in files.items():
            with open(os.path.join(directory, name), "w") as f:
                f.write(text)
        import trustme

        trustme.CA().issue_cert("localhost").cert_chain_pems[0].write_to_path(
            os.path.join(directory, "cert.pem")
        )
        cases = [
            (["--config", "notoml.toml"], "config file notoml.toml is not valid TOML"),
            (["--config", "unknown.toml"], "unknown.toml: unknown setting 'listn'"),
            (["--config", "missing.toml"], "cannot read config file missing.toml"),
            (
                ["--listen", "ssl:0:interface=127.0.0.1", "--tls-certificate", "cert.pem"],
                "--tls-certificate cert.pem: no private key",
            ),
        ]
        runs = [runToEnd(self, args, cwd=directory) for args, _ in cases]
        results = yield DeferredList(runs, fireOnOneErrback=True, consumeErrors=True)
        for (_, daemon), (args, expected) in zip(results, cases, strict=True):
            self.assertOneLine(daemon, expected, args)

    @inlineCallbacks
    def test_cannotBind(self) -> Any:
        """A listener whose port is taken: one line, exit 1, and no other listener left running."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = yield runToEnd(self, ["--listen", LOCAL, "--listen", f"tcp:{port}:interface=127.0.0.1"])
        self.assertOneLine(
            daemon, f"cannot listen on tcp:{port}:interface=127.0.0.1: [Errno 98] Address already in use"
        )


def _deflateEcho(port: int) -> tuple[list[str], str]:
    """With websockets (which offers permessage-deflate): the extensions agreed, and an echo."""
    with wsConnect(f"ws://127.0.0.1:{port}/ws", open_timeout=CLIENT_TIMEOUT) as ws:
        agreed = ws.response.headers.get_all("Sec-WebSocket-Extensions")
        text = "compress me " * 100
        ws.send(text)
        answer = ws.recv(timeout=CLIENT_TIMEOUT)
        assert isinstance(answer, str)
        return agreed, "ok" if answer == text else answer


class DemoTests(TestCase):
    """The demo site's C{/ws}."""

    @inlineCallbacks
    def test_permessageDeflate(self) -> Any:
        """The demo's WebSocket echo accepts permessage-deflate, and echoes through it."""
        site = TrackingSite(demoRoot(ProtocolRegistry([EchoUpgrade()])))
        port = listen(self, site)
        agreed, echoed = yield inThread(_deflateEcho, port)
        self.assertEqual(len(agreed), 1, agreed)
        self.assertTrue(agreed[0].startswith("permessage-deflate"), agreed)
        self.assertEqual(echoed, "ok")
