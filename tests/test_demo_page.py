"""
Tests for the demo page's report (L{txupgrade.daemon.demo.DemoRecorder},
L{txupgrade.daemon.demo.DemoReport}), the per-transport switch counts of
L{txupgrade.daemon.tracking} and their metric: in memory, then headless
Chromium on a real C{twistd txupgrade} over C{http://} and over an C{ssl:}
listener with ALPN C{h2} and extended CONNECT.
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
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support.daemon import LOCAL, startDaemon
from tests.support.http2 import H2EventClient
from tests.support.matrix import makeCertificate
from tests.support.processes import NODE_DIR, missingOrSkip, nodeOrSkip, runProcess
from txupgrade.channel import UpgradeSite
from txupgrade.daemon.demo import DemoRecorder, demoRoot
from txupgrade.daemon.metrics import DaemonMetrics
from txupgrade.daemon.tracking import ConnectionTracker
from txupgrade.protocols.echo import EchoUpgrade
from txupgrade.registry import ProtocolRegistry
from txupgrade.testing import MemoryConnection

CHROMIUM = "/usr/bin/chromium"
TOKEN = "0123456789abcdef"
ECHO = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
WEBSOCKET = (
    b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
    b"Cookie: theme=dark; txupgrade-demo=" + TOKEN.encode() + b"\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


def _report(memory: MemoryConnection, token: str = TOKEN) -> dict[str, Any]:
    """GET the report on C{memory} (HTTP/1.1), its JSON."""
    before = len(memory.received)
    memory.send(f"GET /demo/report?token={token} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    head, _, body = memory.received[before:].partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 "):
        raise AssertionError(head)
    result: dict[str, Any] = json.loads(body)
    return result


def _daemonSite(clock: Clock) -> tuple[UpgradeSite, ConnectionTracker]:
    """The demo tree on an echo site with extended CONNECT, tracked as the daemon tracks it."""
    site = UpgradeSite(demoRoot(ProtocolRegistry(), clock=clock), [EchoUpgrade()], reactor=clock)
    site.extendedConnect = True
    return site, ConnectionTracker(site, clock)


class DemoRecorderTests(SynchronousTestCase):
    """The recorder keeps a bounded, short-lived record per token."""

    def test_recordAndLookup(self) -> None:
        """A recorded token is found; an unknown one is not."""
        recorder = DemoRecorder(Clock())
        recorder.record(TOKEN, {"http": "2"})
        self.assertEqual(recorder.lookup(TOKEN), {"http": "2"})
        self.assertIsNone(recorder.lookup("fedcba9876543210"))

    def test_malformedToken(self) -> None:
        """A token that is not 8 to 64 lower-case hex digits is not kept."""
        recorder = DemoRecorder(Clock())
        for token in ("", "abc", "x" * 16, "A" * 16, "a" * 65, TOKEN + "\n"):
            recorder.record(token, {})
        self.assertEqual(len(recorder), 0)

    def test_bounded(self) -> None:
        """Past L{DemoRecorder.maxTokens}, the least recently recorded token goes first."""
        recorder = DemoRecorder(Clock())
        recorder.maxTokens = 3
        tokens = [f"{n:016x}" for n in range(5)]
        for token in tokens:
            recorder.record(token, {"n": token})
        self.assertEqual(len(recorder), 3)
        self.assertIsNone(recorder.lookup(tokens[1]))
        self.assertEqual(recorder.lookup(tokens[4]), {"n": tokens[4]})

    def test_expires(self) -> None:
        """An entry older than L{DemoRecorder.ttl} is forgotten."""
        clock = Clock()
        recorder = DemoRecorder(clock)
        recorder.record(TOKEN, {})
        clock.advance(recorder.ttl - 1)
        self.assertEqual(recorder.lookup(TOKEN), {})
        clock.advance(2)
        self.assertIsNone(recorder.lookup(TOKEN))
        self.assertEqual(len(recorder), 0)


class DemoReportTests(SynchronousTestCase):
    """C{/demo/report} tells what the server saw, in memory through the daemon's tracker."""

    def test_http11(self) -> None:
        """
        Over HTTP/1.1 on TCP: the report request itself, the page's
        WebSocket on its own connection, and the latest echo switch.
        """
        clock = Clock()
        site, tracker = _daemonSite(clock)
        page = MemoryConnection(site)
        first = _report(page)
        self.assertEqual(
            first["page"],
            {
                "http": "1.1",
                "tls": False,
                "alpn": None,
                "stream": None,
                "connection": 1,
                "peer": "127.0.0.1:40000",
            },
        )
        self.assertIsNone(first["webSocket"])
        self.assertIsNone(first["echo"])
        MemoryConnection(site).send(ECHO)
        ws = MemoryConnection(site)
        ws.send(WEBSOCKET)
        self.assertTrue(ws.received.startswith(b"HTTP/1.1 101 "), ws.received)
        clock.advance(3)
        seen = _report(page)
        self.assertEqual(seen["page"]["connection"], 1)
        self.assertEqual(
            seen["webSocket"],
            {
                "http": "1.1",
                "tls": False,
                "alpn": None,
                "stream": None,
                "connection": 3,
                "peer": "127.0.0.1:40000",
            },
        )
        echo = seen["echo"]
        self.assertEqual(
            (echo["http"], echo["tls"], echo["stream"], echo["connection"]), ("1.1", False, None, 2)
        )
        self.assertEqual(echo["ago"], 3.0)
        self.assertEqual(_report(page, "fedcba9876543210")["webSocket"], None)
        self.assertEqual(tracker.switches, {("echo", "1.1", "no"): 1, ("websocket", "1.1", "no"): 1})

    def test_http2Streams(self) -> None:
        """
        Over HTTP/2 (prior knowledge): the report is a stream, the page's
        WebSocket (extended CONNECT) another stream of the same connection,
        and an echo stream counts as an HTTP/2 switch.
        """
        site, tracker = _daemonSite(Clock())
        client = H2EventClient(site)
        client.request(
            1,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"websocket"),
                (b":path", b"/ws"),
                (b"cookie", f"txupgrade-demo={TOKEN}".encode()),
                (b"sec-websocket-version", b"13"),
            ],
        )
        self.assertEqual(client.status(1), b"200")
        client.request(3, [(b":method", b"CONNECT"), (b":protocol", b"echo"), (b":path", b"/")])
        self.assertEqual(client.status(3), b"200")
        client.request(5, [(b":method", b"GET"), (b":path", f"/demo/report?token={TOKEN}".encode())])
        client.h2.end_stream(5)
        client.flush()
        self.assertEqual(client.status(5), b"200")
        seen = json.loads(client.body(5))
        where = {"http": "2", "tls": False, "alpn": None, "connection": 1, "peer": "127.0.0.1:40000"}
        self.assertEqual(seen["page"], {**where, "stream": 5})
        self.assertEqual(seen["webSocket"], {**where, "stream": 1})
        self.assertEqual(
            {k: seen["echo"][k] for k in ("http", "stream", "connection")},
            {"http": "2", "stream": 3, "connection": 1},
        )
        self.assertEqual(tracker.switches, {("websocket", "2", "no"): 1, ("echo", "2", "no"): 1})


class TransportMetricTests(SynchronousTestCase):
    """C{txupgrade_upgrades_by_transport_total} counts switches by HTTP version and TLS."""

    def test_metric(self) -> None:
        """HTTP/1.1 and HTTP/2 stream switches each have their sample; the old metric is unchanged."""
        site, tracker = _daemonSite(Clock())
        metrics = DaemonMetrics(tracker)
        self.addCleanup(metrics.stop)
        MemoryConnection(site).send(ECHO)
        MemoryConnection(site).send(ECHO)
        client = H2EventClient(site)
        client.request(1, [(b":method", b"CONNECT"), (b":protocol", b"echo"), (b":path", b"/")])
        self.assertEqual(client.status(1), b"200")
        page = metrics.exposition().decode()
        samples = dict(re.findall(r"^(txupgrade_upgrades_by_transport_total\{[^}]*\}) (\S+)$", page, re.M))
        self.assertEqual(
            samples,
            {
                'txupgrade_upgrades_by_transport_total{http="1.1",protocol="echo",tls="no"}': "2.0",
                'txupgrade_upgrades_by_transport_total{http="2",protocol="echo",tls="no"}': "1.0",
            },
        )
        self.assertIn('txupgrade_upgrades_total{outcome="accepted",protocol="echo"} 3.0', page)


class ClosedEventTests(SynchronousTestCase):
    """The closed event of an upgraded connection (a JSON log's record) says how it switched."""

    def test_fields(self) -> None:
        """C{http} and C{tls} are in the event; its text is the text line as before."""
        site, _ = _daemonSite(Clock())
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        memory = MemoryConnection(site)
        memory.send(ECHO)
        memory.serverTransport.loseConnection()
        memory.flush()
        [closed] = [e for e in events if e.get("connectionEvent") == "closed"]
        self.assertEqual((closed["http"], closed["tls"]), ("1.1", False))
        self.assertRegex(
            formatEvent(closed),
            r"^echo connection from 127\.0\.0\.1:40000 closed after 0\.000 s, 0 bytes in, 0 bytes out$",
        )


class DemoPageChromiumTests(TestCase):
    """Headless Chromium reads the demo page's table from a real C{twistd txupgrade}."""

    timeout = 180

    def setUp(self) -> None:
        if not os.path.exists(CHROMIUM):
            missingOrSkip(
                [f"{CHROMIUM} is missing (install the Debian package chromium, as .ci/install does)"]
            )
        self.node = nodeOrSkip("playwright-core", required=True)
        self.directory = Path(tempfile.mkdtemp(prefix="txupgrade-demo-page-"))
        self.addCleanup(shutil.rmtree, self.directory, True)

    @inlineCallbacks
    def load(self, url: str, spki: str = "") -> Any:
        """Run C{tests/node/demo_page.js} on C{url} (trusting the key C{spki}); its report."""
        profile = self.directory / "profile"
        profile.mkdir()
        args = ["demo_page.js", url, CHROMIUM, str(profile), spki]
        out, err, exitCode = yield runProcess(self.node, args, str(NODE_DIR), 120)
        lines = out.decode("utf-8").splitlines()
        self.assertTrue(lines, f"no report from demo_page.js; stderr: {err!r}")
        report = json.loads(lines[-1])
        self.assertEqual((report["errors"], exitCode), ([], 0), (report, err))
        self.assertTrue(report["title"].startswith("echo ok: hello from "), report)
        return report

    @inlineCallbacks
    def test_http(self) -> Any:
        """Over C{http://}: HTTP/1.1 on TCP, the WebSocket on its own connection."""
        daemon = yield startDaemon(self, ["--listen", LOCAL])
        [port] = daemon.ports
        report = yield self.load(f"http://127.0.0.1:{port}/")
        rows = report["rows"]
        self.assertEqual(rows["page"]["http"], "HTTP/1.1")
        self.assertEqual(rows["page"]["transport"], "TCP")
        self.assertRegex(rows["page"]["connection"], r"^connection #\d+$")
        self.assertEqual((rows["websocket"]["http"], rows["websocket"]["transport"]), ("HTTP/1.1", "TCP"))
        self.assertRegex(rows["websocket"]["connection"], r"^its own connection #\d+$")
        self.assertEqual(rows["websocket"]["result"], report["title"])
        self.assertEqual((rows["echo"]["http"], rows["echo"]["transport"]), ("HTTP/1.1", "TCP"))
        self.assertRegex(rows["echo"]["result"], r"^switched \d+ s ago, from 127\.0\.0\.1:\d+$")
        [socket] = report["sockets"]
        self.assertEqual(socket, f"ws://127.0.0.1:{port}/ws")

    @inlineCallbacks
    def test_httpsH2(self) -> Any:
        """
        Over an C{ssl:} listener: the page is HTTP/2 on TLS with ALPN
        C{h2}, its WebSocket a stream of the page's own connection
        (extended CONNECT); the echo switch (ALPN C{http/1.1}) HTTP/1.1.
        """
        certificate = makeCertificate(self.directory)
        args = ["--listen", "ssl:0:interface=127.0.0.1", "--tls-certificate", str(certificate.server)]
        daemon = yield startDaemon(self, args)
        [port] = daemon.ports
        report = yield self.load(f"https://127.0.0.1:{port}/", certificate.spki)
        rows = report["rows"]
        self.assertEqual((rows["page"]["http"], rows["page"]["transport"]), ("HTTP/2", "TLS, ALPN h2"))
        page = re.fullmatch(r"stream \d+ of connection (#\d+)", rows["page"]["connection"])
        self.assertIsNotNone(page, rows)
        assert page is not None
        self.assertEqual(
            (rows["websocket"]["http"], rows["websocket"]["transport"]), ("HTTP/2", "TLS, ALPN h2")
        )
        self.assertRegex(
            rows["websocket"]["connection"], rf"^stream \d+ of connection {page.group(1)} \(this page's\)$"
        )
        self.assertEqual(rows["websocket"]["result"], report["title"])
        self.assertEqual(
            (rows["echo"]["http"], rows["echo"]["transport"]), ("HTTP/1.1", "TLS, ALPN http/1.1")
        )
        self.assertRegex(rows["echo"]["connection"], r"^connection #\d+$")
        [socket] = report["sockets"]
        self.assertEqual(socket, f"wss://127.0.0.1:{port}/ws")
