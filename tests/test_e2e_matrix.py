"""
The composition matrix through the shipped service: real C{twistd txupgrade}
processes, each listener kind (a row class) crossed with each protocol (a
test method, a cell), driven by real clients.

Rows: C{tcp:}; C{ssl:} with C{--tls-certificate}; C{ssl:} with its own
C{privateKey=}/C{certKey=}; C{unix:}; C{haproxy:tcp:} behind a real HAProxy
in C{mode tcp} with C{send-proxy} and with C{send-proxy-v2}; C{--workers 2}
with a C{tcp:} and an C{ssl:} listener. Columns: a plain C{GET} (curl), the
C{echo} upgrade (raw socket, Python C{ssl}), C{/ws} (Node C{ws} and Python
C{websockets}), HTTP/2 (prior knowledge and h2c on cleartext, ALPN on TLS;
curl and h2load), the RFC 2817 TLS upgrade (switches on cleartext, must not
on TLS), ALPN with nothing in common (a clean C{no_application_protocol}
alert), and headless Chromium on the demo page over C{https}/C{wss}.

Each test starts its own daemon with the row's listener (about half a
second): trial's janitor kills every child process of the reactor at the end
of each test, so a daemon started with L{startDaemon} cannot outlive one.
Blocking clients run in threads (L{inThread}), the others as bounded
subprocesses; every address is on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support.daemon import LOCAL, Daemon, startDaemon
from tests.support.matrix import (
    CHROMIUM_TRUST_JS,
    ECHO_GET_BODY,
    Certificate,
    Target,
    alpnOutcome,
    echoUpgrade,
    makeCertificate,
    runNode,
    startTCPHAProxy,
    tlsUpgrade,
    tlsUpgradeOnTLS,
    webSocketEcho,
)
from tests.support.net import inThread, wait
from tests.support.processes import binaryOrSkip, missingOrSkip, nodeOrSkip, runProcess

SSL_LOCAL = "ssl:0:interface=127.0.0.1"
CHROMIUM = "/usr/bin/chromium"

#: The bound of each client subprocess, in seconds.
CLIENT_SECONDS = 30.0

#: How long the workers of C{--workers 2} get to serve.
WORKER_START = 30.0

_WORKER_SERVING = re.compile(rb"\[worker (\d+)\|[^\]]*\] txupgrade serving on")

#: The C{echo} upgrade's payload: every byte value, 16 KiB.
ECHO_PAYLOAD = bytes(range(256)) * 64


def runClient(name: str, *args: str) -> Any:
    """Run C{/usr/bin/<name> ARGS} (curl, h2load; bounded); fire with C{(out, err, exitCode)}."""
    path = binaryOrSkip(f"/usr/bin/{name}", {"curl": "curl", "h2load": "nghttp2-client"}[name])
    return runProcess(path, list(args), tempfile.gettempdir(), CLIENT_SECONDS)


@inlineCallbacks
def curlGet(target: Target, *options: str, path: str = "/echo") -> Any:
    """C{curl OPTIONS URL} (bounded, must exit 0): fire with C{(body, status, http_version, stderr)}."""
    out, err, code = yield runClient(
        "curl",
        "-s",
        "-S",
        "--max-time",
        "20",
        *options,
        "-w",
        "\n%{http_code} %{http_version}",
        *target.curlArgs(path),
    )
    assert code == 0, (code, err)
    body, _, last = out.rpartition(b"\n")
    status, version = last.decode("ascii").split()
    return body, status, version, err


@inlineCallbacks
def h2load(target: Target) -> Any:
    """h2load: 40 C{GET /echo} over 2 connections, 5 streams each; its report (it must exit 0)."""
    out, err, code = yield runClient("h2load", "-n", "40", "-c", "2", "-m", "5", target.url("http", "/echo"))
    assert code == 0, (code, out + err)
    return out


class _Row:
    """
    The columns every row has; mixed into a L{TestCase} per listener kind,
    which says how its daemon listens (L{daemonArgs}) and which listener the
    clients reach (L{listenerTarget}).
    """

    timeout = 90

    #: Whether the daemon runs C{--workers 2}.
    workers = False

    #: Whether the clients' listener is TLS.
    secure = False

    #: The HAProxy C{server} option that feeds the listener, if any.
    sendProxy = ""

    #: How the start-up line names each listener: a prefix per listener.
    named: tuple[str, ...] = ("tcp:127.0.0.1:",)

    directory: Path
    certificate: Certificate
    daemon: Daemon

    def daemonArgs(self) -> list[str]:
        """The C{txupgrade} options of the row's daemon (in L{directory})."""
        raise NotImplementedError

    def listenerTarget(self, daemon: Daemon) -> Target:
        """The listener the row's clients reach, from the daemon's start-up line."""
        return Target(daemon.ports[0], None, self.secure, self.certificate.ca)

    @inlineCallbacks
    def serve(self) -> Any:
        """Start the row's daemon (and HAProxy); fire with the L{Target} the clients reach."""
        test: Any = self
        try:
            import trustme  # noqa: F401
        except ImportError as error:
            missingOrSkip([f"trustme is missing ({error}): install the test extra"])
        self.directory = Path(tempfile.mkdtemp(prefix="txupgrade-matrix-"))
        test.addCleanup(shutil.rmtree, self.directory, True)
        self.certificate = makeCertificate(self.directory)
        args = (["--workers", "2"] if self.workers else []) + self.daemonArgs()
        self.daemon = yield startDaemon(test, args, cwd=str(self.directory))
        test.assertEqual(len(self.daemon.listeners), len(self.named), self.daemon.listeners)
        for listener, prefix in zip(self.daemon.listeners, self.named, strict=True):
            test.assertTrue(listener.startswith(prefix), (self.daemon.listeners, self.named))
        if self.workers:
            yield wait(lambda: len(set(_WORKER_SERVING.findall(self.daemon.output))) == 2, WORKER_START)
        target = self.listenerTarget(self.daemon)
        if self.sendProxy:
            assert target.port is not None
            port = yield startTCPHAProxy(test, target.port, self.sendProxy)
            target = Target(port, None, False, self.certificate.ca)
        return target

    @inlineCallbacks
    def assertServesGet(self, target: Target) -> Any:
        """curl's C{GET /echo} (default ALPN on TLS) is still answered C{200}: the daemon lived on."""
        test: Any = self
        body, status, _, err = yield curlGet(target)
        test.assertEqual((status, body), ("200", ECHO_GET_BODY), err)

    @inlineCallbacks
    def assertCurlHTTP2(self, *curlArgs: str, said: bytes = b"") -> Any:
        """C{curl curlArgs} gets C{200} and the body over HTTP/2, C{said} in its C{-v} log."""
        test: Any = self
        target = yield self.serve()
        body, status, version, err = yield curlGet(target, *curlArgs)
        test.assertIn(said, err)
        test.assertEqual((status, version, body), ("200", "2", ECHO_GET_BODY), err)

    @inlineCallbacks
    def assertH2load(self, application: bytes) -> Any:
        """h2load's 40 requests all succeed, over the C{application} protocol its report names."""
        test: Any = self
        target = yield self.serve()
        out = yield h2load(target)
        test.assertIn(b"Application protocol: " + application, out)
        test.assertIn(b"40 succeeded, 0 failed, 0 errored", out)

    @inlineCallbacks
    def nodeReport(self, node: str, args: list[str], env: dict[str, str], seconds: float) -> Any:
        """Run a client of C{tests/node}: its JSON report, once it names no error and exited 0."""
        test: Any = self
        out, err, exitCode = yield runNode(node, args, env, seconds)
        lines = out.decode("utf-8").splitlines()
        test.assertTrue(lines, f"no report from {args}; stderr: {err!r}")
        report = json.loads(lines[-1])
        test.assertEqual(report["errors"], [], err)
        test.assertEqual(exitCode, 0, (report, err))
        return report

    @inlineCallbacks
    def test_get(self) -> Any:
        """curl's plain C{GET /echo} (default ALPN on TLS, where ALPN C{h2} wins): C{200} and the body."""
        test: Any = self
        target = yield self.serve()
        body, status, version, err = yield curlGet(target)
        test.assertEqual((status, body), ("200", ECHO_GET_BODY), err)
        test.assertEqual(version, "2" if self.secure else "1.1", err)

    @inlineCallbacks
    def test_echoUpgrade(self) -> Any:
        """C{Upgrade: echo} (ALPN C{http/1.1} on TLS): a C{101} naming C{echo}, then 16 KiB echoed."""
        test: Any = self
        target = yield self.serve()
        seen = yield inThread(echoUpgrade, target, ECHO_PAYLOAD)
        test.assertEqual(
            seen,
            {
                "code": 101,
                "upgrade": [b"echo"],
                "alpn": "http/1.1" if self.secure else None,
                "echoed": ECHO_PAYLOAD,
            },
        )

    @inlineCallbacks
    def test_webSocketNode(self) -> Any:
        """Node's C{ws} at C{/ws} (C{wss://} on TLS): text, binary and 1 MiB echoed, close 1000."""
        test: Any = self
        node = nodeOrSkip("ws")
        target = yield self.serve()
        if target.path is not None:
            url = f"ws+unix://{target.path}:/ws"
        else:
            url = target.url("ws", "/ws")
        env = {"NODE_EXTRA_CA_CERTS": str(self.certificate.ca)}
        report = yield self.nodeReport(node, ["ws_client.js", url], env, CLIENT_SECONDS)
        test.assertEqual([echo["same"] for echo in report["echoes"]], [True, True, True], report)
        test.assertEqual(report["closeCode"], 1000, report)

    @inlineCallbacks
    def test_webSocketPython(self) -> Any:
        """Python's C{websockets} at C{/ws}: a text and a 64 KiB binary message echoed, close 1000."""
        test: Any = self
        target = yield self.serve()
        seen = yield inThread(webSocketEcho, target)
        test.assertEqual(seen, {"status": 101, "text": True, "blob": True, "close": 1000})


class _Cleartext(_Row):
    """The columns of a cleartext row: HTTP/2 without TLS, and the RFC 2817 switch to TLS."""

    def daemonArgs(self) -> list[str]:
        # The certificate enables the RFC 2817 TLS upgrade on cleartext listeners.
        return ["--tls-certificate", "server.pem", "--listen", LOCAL]

    def test_h2PriorKnowledge(self) -> Any:
        """C{curl --http2-prior-knowledge}: HTTP/2 from the first byte, C{200} and the body."""
        return self.assertCurlHTTP2("--http2-prior-knowledge")

    def test_h2c(self) -> Any:
        """C{curl --http2 http://}: C{Upgrade: h2c} switched (C{101}), the answer over HTTP/2."""
        return self.assertCurlHTTP2("-v", "--http2", said=b"< HTTP/1.1 101 Switching Protocols")

    @inlineCallbacks
    def test_tlsUpgrade(self) -> Any:
        """
        RFC 2817: C{Upgrade: TLS/1.2} gets a C{101}, the TLS handshake runs
        on the same socket, and the original request is answered over TLS.
        """
        test: Any = self
        target = yield self.serve()
        seen = yield inThread(tlsUpgrade, target)
        test.assertEqual(seen["code"], 101, seen)
        test.assertIn(b"TLS/1.2", seen["upgrade"][0], seen)
        test.assertEqual(seen["after"], b"", "nothing follows the 101 before the ClientHello")
        test.assertIn(seen.get("version"), ("TLSv1.2", "TLSv1.3"), seen)
        test.assertEqual(seen.get("answer"), (200, ECHO_GET_BODY), seen)


class _H2loadCleartext(_Cleartext):
    """A cleartext row on TCP: h2load too (it cannot reach a Unix socket; curl covers HTTP/2 there)."""

    def test_h2load(self) -> Any:
        """h2load by prior knowledge: 40 requests over 2 connections, 5 streams each, all succeed."""
        return self.assertH2load(b"h2c")


class _Secure(_Row):
    """The columns of a TLS row: HTTP/2 by ALPN, ALPN failures, no TLS-in-TLS, Chromium."""

    secure = True
    named = ("ssl:127.0.0.1:",)

    def daemonArgs(self) -> list[str]:
        return ["--tls-certificate", "server.pem", "--listen", SSL_LOCAL]

    def test_h2ALPN(self) -> Any:
        """C{curl --http2 https://}: ALPN C{h2}, curl's C{http_version} is 2, C{200} and the body."""
        return self.assertCurlHTTP2("-v", "--http2", said=b"ALPN: server accepted h2")

    def test_h2loadALPN(self) -> Any:
        """h2load over C{https://} (it offers C{h2}): 40 requests over 2 connections, all succeed."""
        return self.assertH2load(b"h2\n")

    @inlineCallbacks
    def test_alpnChoice(self) -> Any:
        """The server's ALPN choice: C{h2} first, C{http/1.1} when only that is offered."""
        test: Any = self
        target = yield self.serve()
        both = yield inThread(alpnOutcome, target, ["h2", "http/1.1"])
        test.assertEqual(both, ("h2", None))
        only = yield inThread(alpnOutcome, target, ["http/1.1"])
        test.assertEqual(only, ("http/1.1", None))

    @inlineCallbacks
    def test_alpnNothingInCommon(self) -> Any:
        """
        A ClientHello offering ALPN C{foo} only gets the fatal alert
        C{no_application_protocol} (RFC 7301 §3.2), not C{internal_error};
        the daemon serves a C{GET} afterwards.
        """
        test: Any = self
        target = yield self.serve()
        chosen, error = yield inThread(alpnOutcome, target, ["foo"])
        test.assertIsNone(chosen, "the handshake succeeded")
        assert error is not None
        normalized = error.upper().replace(" ", "_")
        test.assertIn("NO_APPLICATION_PROTOCOL", normalized, error)
        test.assertNotIn("INTERNAL_ERROR", normalized, error)
        yield self.assertServesGet(target)

    @inlineCallbacks
    def test_tlsUpgradeRefused(self) -> Any:
        """C{Upgrade: TLS/1.2} on a TLS connection: no C{101}, answered as usual; so are later requests."""
        test: Any = self
        target = yield self.serve()
        response = yield inThread(tlsUpgradeOnTLS, target)
        test.assertNotEqual(response.code, 101, response)
        test.assertEqual((response.code, response.body), (200, ECHO_GET_BODY))
        yield self.assertServesGet(target)

    @inlineCallbacks
    def test_chromium(self) -> Any:
        """
        Headless Chromium loads the demo page over C{https://} and its
        WebSocket over C{wss://} echoes (the page's title becomes C{echo ok: ...}).
        """
        test: Any = self
        if not os.path.exists(CHROMIUM):
            missingOrSkip(
                [f"{CHROMIUM} is missing (install the Debian package chromium, as .ci/install does)"]
            )
        node = nodeOrSkip("playwright-core", required=True)
        target = yield self.serve()
        preload = self.directory / "trust.js"
        preload.write_text(CHROMIUM_TRUST_JS)
        profile = self.directory / "chromium-profile"
        profile.mkdir()
        url = target.url("http", "/")
        args = ["-r", str(preload), "browser_check.js", url, CHROMIUM, str(profile)]
        report = yield self.nodeReport(node, args, {"TXUPGRADE_SPKI": self.certificate.spki}, 60)
        test.assertTrue(report["title"].startswith("echo ok: hello from "), report)
        [socket] = report["sockets"]
        test.assertEqual(socket["url"], target.url("ws", "/ws"))
        test.assertEqual(len(socket["sent"]), 1, socket)
        test.assertEqual(socket["received"], socket["sent"])


class TCPRow(_H2loadCleartext, TestCase):
    """C{--listen tcp:0:interface=127.0.0.1}."""


class SSLRow(_Secure, TestCase):
    """C{--listen ssl:0:interface=127.0.0.1} with C{--tls-certificate server.pem}."""


class SSLOwnKeyRow(_Secure, TestCase):
    """C{--listen ssl:0:interface=127.0.0.1:privateKey=k.pem:certKey=c.pem}, no C{--tls-certificate}."""

    def daemonArgs(self) -> list[str]:
        return ["--listen", f"{SSL_LOCAL}:privateKey=k.pem:certKey=c.pem"]


class UnixRow(_Cleartext, TestCase):
    """C{--listen unix:PATH}."""

    named = ("unix:/",)

    def daemonArgs(self) -> list[str]:
        return ["--tls-certificate", "server.pem", "--listen", f"unix:{self.directory / 'txupgrade.sock'}"]

    def listenerTarget(self, daemon: Daemon) -> Target:
        return Target(None, str(self.directory / "txupgrade.sock"), False, self.certificate.ca)


class _HAProxyRow(_H2loadCleartext):
    """C{--listen haproxy:tcp:0:interface=127.0.0.1}, fed by HAProxy in C{mode tcp}."""

    named = ("haproxy:tcp:127.0.0.1:",)

    def daemonArgs(self) -> list[str]:
        return ["--tls-certificate", "server.pem", "--listen", f"haproxy:{LOCAL}"]

    @inlineCallbacks
    def test_directConnectionUnanswered(self) -> Any:
        """A client reaching the C{haproxy:} listener without the PROXY header is closed unanswered."""
        test: Any = self
        yield self.serve()
        direct = Target(self.daemon.ports[0], None, False, self.certificate.ca)

        def ask() -> bytes:
            with direct.connectPlain() as sock:
                sock.sendall(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                data = b""
                try:
                    while chunk := sock.recv(65536):
                        data += chunk
                except ConnectionResetError:
                    pass
                return data

        test.assertEqual((yield inThread(ask)), b"")


class HAProxyV1Row(_HAProxyRow, TestCase):
    """Behind HAProxy C{mode tcp} with C{send-proxy} (PROXY protocol version 1)."""

    sendProxy = "send-proxy"


class HAProxyV2Row(_HAProxyRow, TestCase):
    """Behind HAProxy C{mode tcp} with C{send-proxy-v2} (PROXY protocol version 2)."""

    sendProxy = "send-proxy-v2"


class _Workers:
    """C{--workers 2} with a C{tcp:} and an C{ssl:} listener (mixed in before the row's columns)."""

    workers = True
    named = ("tcp:127.0.0.1:", "ssl:127.0.0.1:")

    def daemonArgs(self) -> list[str]:
        return ["--tls-certificate", "server.pem", "--listen", LOCAL, "--listen", SSL_LOCAL]


class WorkersTCPRow(_Workers, _H2loadCleartext, TestCase):
    """C{--workers 2} with a C{tcp:} and an C{ssl:} listener: the C{tcp:} one."""


class WorkersSSLRow(_Workers, _Secure, TestCase):
    """C{--workers 2} with a C{tcp:} and an C{ssl:} listener: the C{ssl:} one."""

    def listenerTarget(self, daemon: Daemon) -> Target:
        return Target(daemon.ports[1], None, True, self.certificate.ca)


class NoALPNH2Tests(TestCase):
    """C{--no-alpn-h2}: TLS clients get HTTP/1.1, even those that ask for C{h2} first."""

    timeout = 60

    @inlineCallbacks
    def serve(self) -> Any:
        """A daemon with one C{ssl:} listener and C{--no-alpn-h2}; fire with its L{Target}."""
        directory = Path(tempfile.mkdtemp(prefix="txupgrade-matrix-"))
        self.addCleanup(shutil.rmtree, directory, True)
        certificate = makeCertificate(directory)
        args = ["--tls-certificate", "server.pem", "--no-alpn-h2", "--listen", SSL_LOCAL]
        daemon = yield startDaemon(self, args, cwd=str(directory))
        return Target(daemon.ports[0], None, True, certificate.ca)

    @inlineCallbacks
    def test_curlHTTP2FallsBack(self) -> Any:
        """C{curl --http2 https://}: C{http_version} 1.1, still C{200} and the body."""
        target = yield self.serve()
        body, status, version, err = yield curlGet(target, "--http2")
        self.assertEqual((status, version, body), ("200", "1.1", ECHO_GET_BODY), err)

    @inlineCallbacks
    def test_alpnChoice(self) -> Any:
        """
        ALPN C{h2, http/1.1} chooses C{http/1.1}; C{h2} alone is refused with
        C{no_application_protocol}; a C{GET} is served afterwards.
        """
        target = yield self.serve()
        both = yield inThread(alpnOutcome, target, ["h2", "http/1.1"])
        self.assertEqual(both, ("http/1.1", None))
        chosen, error = yield inThread(alpnOutcome, target, ["h2"])
        self.assertIsNone(chosen, "the handshake succeeded")
        assert error is not None
        self.assertIn("NO_APPLICATION_PROTOCOL", error.upper().replace(" ", "_"), error)
        body, status, version, err = yield curlGet(target)
        self.assertEqual((status, version, body), ("200", "1.1", ECHO_GET_BODY), err)
