"""
Extended CONNECT (RFC 8441) on the HTTP/2 connection: the setting, the
negotiation by the same C{IUpgradeProtocol}s as C{Upgrade}, the stream as
the protocol's transport (bytes both ways, END_STREAM, resets, flow
control), and the refusals. In memory with h2 as the client, then through
a real C{twistd txupgrade} (extended CONNECT is on by default) with Node's http2 client,
by prior knowledge and by ALPN C{h2} over TLS.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import h2.errors
import h2.events
import h2.settings
from hyperframe.frame import DataFrame, Frame, HeadersFrame
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support.benchmarks import importBenchmark
from tests.support.daemon import LOCAL, startDaemon
from tests.support.http2 import H2EventClient, Recording, decodeFrames
from tests.support.matrix import CHROMIUM_TRUST_JS, makeCertificate, runNode
from tests.support.net import wait
from tests.support.processes import NODE_DIR, missingOrSkip, nodeOrSkip, runProcess
from tests.support.websocket import maskedFrame
from txupgrade import (
    DirectoryResource,
    ProtocolRegistry,
    Refuse,
    StreamUpgrade,
    UpgradeRequiredResource,
    UpgradeSite,
)
from txupgrade.daemon.demo import demoRoot
from txupgrade.protocols.echo import EchoUpgrade
from txupgrade.protocols.h2c import H2cUpgrade
from txupgrade.testing import RecordingProtocol

ENABLE = h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL
CHROMIUM = "/usr/bin/chromium"


class Upper(Protocol):
    """A plain Twisted protocol, for the raw-stream handoff."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data.upper())  # type: ignore[union-attr]


def switched(*others: Any) -> tuple[H2EventClient, RecordingProtocol]:
    """A client with stream 1 switched to a L{Recording} plugin (C{others} offered too), and its protocol."""
    plugin = Recording()
    client = H2EventClient(site(plugin, *others))
    client.connect(b"recording", 1)
    [protocol] = plugin.protocols
    return client, protocol


def site(*protocols: Any, extendedConnect: bool = True) -> UpgradeSite:
    return UpgradeSite(DirectoryResource(), list(protocols), reactor=Clock(), extendedConnect=extendedConnect)


def treeSite(*protocols: Any, extendedConnect: bool = True) -> UpgradeSite:
    """A site offering nothing itself, C{protocols} on a resource two levels down (as a WebSocketEndpoint)."""
    root, below = DirectoryResource(), DirectoryResource()
    root.putChild(b"a", below)
    below.putChild(b"ws", UpgradeRequiredResource(list(protocols)))
    return UpgradeSite(root, [], reactor=Clock(), extendedConnect=extendedConnect)


class SettingTests(SynchronousTestCase):
    """SETTINGS_ENABLE_CONNECT_PROTOCOL is 1 when the site allows it and offers a protocol for streams."""

    def test_whenAdvertised(self) -> None:
        cases = [
            ("on, echo", site(EchoUpgrade()), 1),
            ("off, echo", site(EchoUpgrade(), extendedConnect=False), 0),
            ("on, only h2c", site(H2cUpgrade()), 0),
            ("on, nothing", site(), 0),
            ("on, echo on a resource below /", treeSite(EchoUpgrade()), 1),
            ("on, only h2c on a resource", treeSite(H2cUpgrade()), 0),
            ("off, echo on a resource", treeSite(EchoUpgrade(), extendedConnect=False), 0),
        ]
        for label, served, expected in cases:
            with self.subTest(label):
                client = H2EventClient(served)
                self.assertEqual(client.h2.remote_settings[ENABLE], expected)


class SwitchTests(SynchronousTestCase):
    """A CONNECT with :protocol switches the stream, and only the stream."""

    def test_echo(self) -> None:
        """200, the bytes echoed on the stream, END_STREAM answered with END_STREAM."""
        client = H2EventClient(site(EchoUpgrade()))
        client.connect(b"echo")
        self.assertEqual(client.status(1), b"200")
        client.h2.send_data(1, b"hello")
        client.flush()
        self.assertEqual(client.body(1), b"hello")
        client.h2.end_stream(1)
        client.flush()
        self.assertTrue(client.of(1, h2.events.StreamEnded))
        self.assertFalse(client.of(1, h2.events.StreamReset))

    def test_requestAsOffered(self) -> None:
        """The plugin sees the request as it came over HTTP/2; its headers go into the 200."""
        plugin = Recording()
        client = H2EventClient(site(plugin))
        client.connect(b"recording", extra=[(b"x-token", b"abc")])
        [request] = plugin.requests
        self.assertEqual(
            (request.method, request.target, request.version), (b"CONNECT", b"/chat?room=1", b"HTTP/2")
        )
        self.assertEqual(request.getHeader(b"x-token"), b"abc")
        self.assertEqual([str(p) for p in request.offer.protocols], ["recording"])
        [response] = client.of(1, h2.events.ResponseReceived)
        self.assertEqual(dict(response.headers)[b"x-recorded"], b"yes")
        self.assertFalse(client.of(1, h2.events.StreamEnded))

    def test_bytesAndEnd(self) -> None:
        """DATA frames are the protocol's bytes; END_STREAM ends a protocol that cannot half-close."""
        client, protocol = switched()
        for chunk in (b"one ", b"two"):
            client.h2.send_data(1, chunk)
        client.flush()
        self.assertEqual(bytes(protocol.data), b"one two")
        protocol.transport.write(b"back")
        client.flush()
        self.assertEqual(client.body(1), b"back")
        client.h2.end_stream(1)
        client.flush()
        self.assertIsNotNone(protocol.lostReason)
        self.assertTrue(client.of(1, h2.events.StreamEnded))

    def test_serverCloses(self) -> None:
        """loseConnection: END_STREAM, then a NO_ERROR reset of the client's half; the protocol is told."""
        client, protocol = switched()
        protocol.transport.loseConnection()
        client.flush()
        self.assertTrue(client.of(1, h2.events.StreamEnded))
        [reset] = client.of(1, h2.events.StreamReset)
        self.assertEqual(reset.error_code, h2.errors.ErrorCodes.NO_ERROR)
        self.assertTrue(protocol.lostReason.check(ConnectionDone))

    def test_resetMidStream(self) -> None:
        """A client reset loses that protocol's connection; another stream on the connection goes on."""
        client, protocol = switched(EchoUpgrade())
        client.connect(b"echo", 3)
        client.h2.reset_stream(1, error_code=h2.errors.ErrorCodes.CANCEL)
        client.flush()
        self.assertTrue(protocol.lostReason.check(ConnectionLost))
        client.h2.send_data(3, b"still here")
        client.flush()
        self.assertEqual(client.body(3), b"still here")

    def test_streamUpgrade(self) -> None:
        """The raw-stream handoff (any Twisted protocol factory) works on a stream unchanged."""
        client = H2EventClient(site(StreamUpgrade("upper", Factory.forProtocol(Upper))))
        client.connect(b"upper")
        client.h2.send_data(1, b"shout")
        client.flush()
        self.assertEqual((client.status(1), client.body(1)), (b"200", b"SHOUT"))

    def test_readerPausesWindow(self) -> None:
        """A protocol that stops reading stops the client: no window is given back until it reads."""
        client, protocol = switched()
        protocol.transport.pauseProducing()
        window = client.h2.local_flow_control_window(1)
        frame = client.h2.max_outbound_frame_size
        for start in range(0, window, frame):
            client.h2.send_data(1, b"x" * min(frame, window - start))
        client.flush()
        self.assertEqual((bytes(protocol.data), client.h2.local_flow_control_window(1)), (b"", 0))
        protocol.transport.resumeProducing()
        client.flush()
        self.assertEqual(len(bytes(protocol.data)), window)
        self.assertEqual(client.h2.local_flow_control_window(1), window)


class WebSocketTests(SynchronousTestCase):
    """WebSocket over HTTP/2 (RFC 8441 §5): the demo's autobahn echo at /ws, on a stream."""

    def setUp(self) -> None:
        registry = ProtocolRegistry([EchoUpgrade()])
        root = demoRoot(registry)
        # autobahn's handshake timers run on the global reactor, not the test's clock: off.
        root.children[b"ws"].upgrade.factory.setProtocolOptions(
            openHandshakeTimeout=0, closeHandshakeTimeout=0
        )
        self.client = H2EventClient(UpgradeSite(root, registry, reactor=Clock(), extendedConnect=True))

    def open(self, streamID: int = 1, origin: bytes = b"http://localhost") -> None:
        self.client.connect(
            b"websocket", streamID, [(b"sec-websocket-version", b"13"), (b"origin", origin)], path=b"/ws"
        )

    def test_echoAndClose(self) -> None:
        """200 without Sec-WebSocket-Accept; a text message echoed; close 1000 answered, then END_STREAM."""
        client = self.client
        self.open()
        [response] = client.of(1, h2.events.ResponseReceived)
        headers = dict(response.headers)
        self.assertEqual(headers[b":status"], b"200")
        self.assertNotIn(b"sec-websocket-accept", headers)
        client.h2.send_data(1, maskedFrame(0x1, b"over a stream"))
        client.flush()
        self.assertEqual(client.body(1), b"\x81\x0dover a stream")
        client.h2.send_data(1, maskedFrame(0x8, b"\x03\xe8"))
        client.flush()
        self.assertTrue(client.body(1).endswith(b"\x88\x02\x03\xe8"))
        self.assertTrue(client.of(1, h2.events.StreamEnded))

    def test_twoOnOneConnection(self) -> None:
        """Two WebSockets share the connection, each with its own messages."""
        client = self.client
        self.open(1)
        self.open(3)
        client.h2.send_data(3, maskedFrame(0x1, b"three"))
        client.h2.send_data(1, maskedFrame(0x1, b"one"))
        client.flush()
        self.assertEqual((client.body(1), client.body(3)), (b"\x81\x03one", b"\x81\x05three"))

    def test_drain(self) -> None:
        """Draining the connection closes each WebSocket with 1001 first, then sends GOAWAY."""
        client = self.client
        self.open()
        before = len(client.memory.received)
        client.memory.server._channel.drain()
        client.memory.flush()
        frames = []
        data = client.memory.received[before:]
        while data:
            frame, length = Frame.parse_frame_header(memoryview(data[:9]))
            frame.parse_body(memoryview(data[9 : 9 + length]))
            frames.append(frame)
            data = data[9 + length :]
        kinds = [type(f).__name__ for f in frames]
        self.assertIn("GoAwayFrame", kinds)
        [close] = [f for f in frames if isinstance(f, DataFrame) and f.stream_id == 1]
        closeFrame = bytes(close.data)
        self.assertEqual((closeFrame[0], closeFrame[2:4]), (0x88, b"\x03\xe9"))  # close, 1001
        self.assertLess(frames.index(close), kinds.index("GoAwayFrame"))

    def test_sameOriginPolicy(self) -> None:
        """The Origin policy of HTTP/1.1: a foreign page's origin is refused 403, on that stream only."""
        self.open(1, origin=b"http://evil.example")
        self.assertEqual(self.client.status(1), b"403")
        self.open(3)
        self.assertEqual(self.client.status(3), b"200")


class RefusalTests(SynchronousTestCase):
    """What is not switched is answered on its stream, and the connection serves on."""

    def test_answers(self) -> None:
        cases = [
            ("unknown protocol", site(EchoUpgrade()), b"nope", b"501"),
            ("h2c cannot live on a stream", site(EchoUpgrade(), H2cUpgrade()), b"h2c", b"501"),
            ("the plugin's own refusal", site(Recording(Refuse(403, body=b"no\n"))), b"recording", b"403"),
            ("not a token", site(EchoUpgrade()), b"e c h o", b"400"),
        ]
        for label, served, protocol, status in cases:
            with self.subTest(label):
                client = H2EventClient(served)
                client.connect(protocol, 1)
                self.assertEqual(client.status(1), status)
                self.assertTrue(client.of(1, h2.events.StreamEnded))
                client.h2.send_headers(
                    3,
                    [
                        (b":method", b"GET"),
                        (b":scheme", b"http"),
                        (b":path", b"/"),
                        (b":authority", b"localhost"),
                    ],
                    end_stream=True,
                )
                client.flush()
                self.assertEqual(client.status(3), b"404")
                self.assertFalse(client.of(0, h2.events.ConnectionTerminated))

    def test_notAdvertised(self) -> None:
        """:protocol without the server's setting: that stream is malformed (PROTOCOL_ERROR), only it."""
        client = H2EventClient(site(EchoUpgrade(), extendedConnect=False))
        client.connect(b"echo", 1)
        [reset] = client.of(1, h2.events.StreamReset)
        self.assertEqual(reset.error_code, h2.errors.ErrorCodes.PROTOCOL_ERROR)
        self.assertIsNone(client.status(1))


def tlsArguments(certificate: Any) -> list[str]:
    """A daemon's arguments for one ssl: listener with C{certificate} (extended CONNECT is the default)."""
    return [
        "--listen",
        "ssl:0:interface=127.0.0.1",
        "--tls-certificate",
        str(certificate.server),
    ]


class DaemonTests(TestCase):
    """C{twistd txupgrade} as shipped, with Node's http2 client and Chromium."""

    @inlineCallbacks
    def node(self, url: str, protocol: str, payload: str) -> Any:
        node = nodeOrSkip("ws")
        out, err, code = yield runProcess(node, ["h2_connect.js", url, protocol, payload], str(NODE_DIR), 30)
        self.assertEqual(code, 0, err)
        return json.loads(out)

    @inlineCallbacks
    def test_priorKnowledge(self) -> None:
        """Cleartext: echo switches on its stream, an unknown protocol gets 501, on one daemon."""
        daemon = yield startDaemon(self, ["--listen", LOCAL])
        url = f"http://127.0.0.1:{daemon.ports[0]}"
        echoed = yield self.node(url, "echo", "hello over a stream")
        self.assertEqual(
            echoed,
            {"enableConnectProtocol": True, "status": 200, "body": "hello over a stream", "ended": "end"},
        )
        refused = yield self.node(url, "nope", "x")
        self.assertEqual((refused["status"], refused["ended"]), (501, "end"))
        self.assertIn(b'"CONNECT / HTTP/2" 200', daemon.output)

    @inlineCallbacks
    def test_tls(self) -> None:
        """HTTP/2 by ALPN h2 on an ssl: listener: the same switch."""
        directory = Path(tempfile.mkdtemp(prefix="txupgrade-h2connect-"))
        self.addCleanup(shutil.rmtree, directory, True)
        certificate = makeCertificate(directory)
        daemon = yield startDaemon(self, tlsArguments(certificate))
        echoed = yield self.node(f"https://127.0.0.1:{daemon.ports[0]}", "echo", "secret")
        self.assertEqual((echoed["status"], echoed["body"]), (200, "secret"))

    @inlineCallbacks
    def chromium(self, *arguments: str) -> Any:
        """Chromium loads the demo page over https (ALPN h2) from a daemon; its echo works."""
        if not os.path.exists(CHROMIUM):
            missingOrSkip(
                [f"{CHROMIUM} is missing (install the Debian package chromium, as .ci/install does)"]
            )
        node = nodeOrSkip("playwright-core", required=True)
        directory = Path(tempfile.mkdtemp(prefix="txupgrade-h2ws-"))
        self.addCleanup(shutil.rmtree, directory, True)
        certificate = makeCertificate(directory)
        daemon = yield startDaemon(self, [*tlsArguments(certificate), *arguments])
        preload = directory / "trust.js"
        preload.write_text(CHROMIUM_TRUST_JS)
        profile = directory / "profile"
        profile.mkdir()
        url = f"https://127.0.0.1:{daemon.ports[0]}/"
        out, err, code = yield runNode(
            node,
            ["-r", str(preload), "browser_check.js", url, CHROMIUM, str(profile)],
            {"TXUPGRADE_SPKI": certificate.spki},
            60,
        )
        report = json.loads(out.decode("utf-8").splitlines()[-1])
        self.assertEqual(report["errors"], [], err)
        self.assertTrue(report["title"].startswith("echo ok: "), (report, daemon.output.decode()[-3000:]))
        self.assertEqual(code, 0, err)
        # The access log is written in batches: wait for the WebSocket's line.
        yield wait(lambda: b" /ws HTTP/" in daemon.output)
        self.assertIn(b'"GET / HTTP/2" 200', daemon.output)
        return daemon

    @inlineCallbacks
    def test_chromiumWebSocketOnTheConnection(self) -> None:
        """
        Chromium's wss:// WebSocket on a page loaded over HTTP/2 rides that
        connection: the access log shows an extended CONNECT answered 200.
        """
        daemon = yield self.chromium()
        self.assertIn(b'"CONNECT /ws HTTP/2" 200', daemon.output)
        self.assertNotIn(b'"GET /ws HTTP/1.1" 101', daemon.output)

    @inlineCallbacks
    def test_chromiumWithoutExtendedConnect(self) -> None:
        """With --no-extended-connect Chromium opens its WebSocket on an HTTP/1.1 connection of its own."""
        daemon = yield self.chromium("--no-extended-connect")
        self.assertIn(b'"GET /ws HTTP/1.1" 101', daemon.output)
        self.assertNotIn(b"CONNECT /ws", daemon.output)

    @inlineCallbacks
    def test_turnedOff(self) -> None:
        """With --no-extended-connect the setting is not sent, so clients do not try."""
        daemon = yield startDaemon(self, ["--listen", LOCAL, "--no-extended-connect"])
        answer = yield self.node(f"http://127.0.0.1:{daemon.ports[0]}", "echo", "x")
        self.assertEqual(answer["enableConnectProtocol"], False)


class IdleMemoryTests(SynchronousTestCase):
    """
    An idle WebSocket on an HTTP/2 stream holds no more Python memory than
    one on an HTTP/1.1 connection of its own (tracemalloc, both in one run,
    so on any machine): the stream keeps no queue or buffer it has not used;
    and the daemon's tracking adds little to an idle one.
    """

    #: What the daemon's tracking may add to an idle upgraded connection, in
    #: bytes (recorded: about 1,360 on CPython 3.11; 1,610 before its
    #: counting transport let go of the methods it binds for HTTP).
    TRACKING_BUDGET = 1600

    HANDSHAKE = (
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )

    def perWebSocket(
        self, chunk: bytes, perConnection: int, connections: int, answered: Any, site: Any = None
    ) -> float:
        """
        Bytes allocated per open WebSocket, C{perConnection} of them on each
        of C{connections}, each connection's answer checked by C{answered}
        (through C{site}; by default, the benchmark's in-code one).
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        bench = importBenchmark(self, "bench_h2_websocket")
        if site is None:
            site = bench._memorySite()
        peer, host = IPv4Address("TCP", "127.0.0.1", 40000), IPv4Address("TCP", "127.0.0.1", 8080)
        kept: list[Any] = []

        def openAll(count: int) -> None:
            for _ in range(count):
                transport = StringTransport(hostAddress=host, peerAddress=peer)
                protocol = site.buildProtocol(peer)
                protocol.makeConnection(transport)
                protocol.dataReceived(chunk)
                self.assertTrue(answered(transport.value()), transport.value()[:200])
                transport.clear()
                kept.append((transport, protocol))

        openAll(1)  # imports, caches and the site's first-connection work
        kept.clear()
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            openAll(connections)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        return (after - before) / (perConnection * connections)

    def test_streamNoHeavierThanConnection(self) -> None:
        bench = importBenchmark(self, "bench_h2_websocket")
        opened, _, _ = bench._h2Segments()

        def all200(written: bytes) -> bool:
            return sum(isinstance(frame, HeadersFrame) for frame in decodeFrames(written)) == bench.STREAMS

        onStreams = self.perWebSocket(opened, bench.STREAMS, 3, all200)
        onConnections = self.perWebSocket(
            self.HANDSHAKE, 1, 3 * bench.STREAMS, lambda written: written.startswith(b"HTTP/1.1 101 ")
        )
        self.assertLessEqual(onStreams, 1.1 * onConnections, (onStreams, onConnections))

    def test_daemonTrackingWithinBudget(self) -> None:
        """
        Through the stack C{twistd txupgrade} builds, an idle WebSocket on a
        connection of its own holds at most L{TRACKING_BUDGET} bytes more
        than through the in-code site.
        """
        from twisted.internet import reactor

        daemonSite, stop = importBenchmark(self, "bench_daemon_cost").stackFactory(True, reactor)
        self.addCleanup(stop)

        def switched(written: bytes) -> bool:
            return written.startswith(b"HTTP/1.1 101 ")

        inCode = self.perWebSocket(self.HANDSHAKE, 1, 300, switched)
        daemon = self.perWebSocket(self.HANDSHAKE, 1, 300, switched, daemonSite)
        self.assertLessEqual(daemon - inCode, self.TRACKING_BUDGET, (daemon, inCode))
