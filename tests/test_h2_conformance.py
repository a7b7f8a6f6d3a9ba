"""
HTTP/2 conformance (RFC 9113, RFC 8441) of txupgrade's HTTP/2 connection,
one table row per rule: what a client sends (frames built by hand with
hyperframe and hpack, so that anything RFC 9113 forbids can be sent), and
what must come back (a stream reset with a code, a connection GOAWAY with a
code, a status, bytes on the stream). In memory, every input also one byte
at a time; then the connection preface on a real TLS socket with ALPN C{h2},
and a few rows through a real C{twistd txupgrade --extended-connect}.
"""

from __future__ import annotations

import re
import socket
import ssl
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
from hpack import Decoder, Encoder
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from tests.support.daemon import LOCAL, startDaemon
from tests.support.http import SimpleUpgrade, scrapeMetrics
from tests.support.http2 import PAGE, Headers, decodeFrames, h2cRequest, h2Site, splitSwitch
from tests.support.http2 import connectHeaders as connect
from tests.support.net import TLSPair, inThread, listen
from tests.support.websocket import maskedFrame
from txupgrade import DirectoryResource, ProtocolRegistry, UpgradeSite
from txupgrade._h2rules import PREFACE
from txupgrade.daemon.demo import demoRoot
from txupgrade.protocols.echo import EchoUpgrade
from txupgrade.protocols.h2c import H2cUpgrade
from txupgrade.testing import MemoryConnection, RecordingProtocol

NO_ERROR = int(h2.errors.ErrorCodes.NO_ERROR)
PROTOCOL_ERROR = int(h2.errors.ErrorCodes.PROTOCOL_ERROR)
REFUSED_STREAM = int(h2.errors.ErrorCodes.REFUSED_STREAM)
CANCEL = int(h2.errors.ErrorCodes.CANCEL)
ENABLE_CONNECT_PROTOCOL = 0x8
INITIAL_WINDOW = 65535
#: Both ways of feeding the server: whole writes, and one byte at a time.
CHUNKINGS = (None, 1)

GET: Headers = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"localhost")]


class Peer:
    """
    A client of an in-memory connection to a site, writing raw frames (its
    own HPACK state, no validation) and recording every frame the server
    sends, its header blocks decoded.
    """

    def __init__(self, site: Any, chunkSize: int | None = None, preface: bool = True) -> None:
        self.site = site
        self.memory = MemoryConnection(site, chunkSize=chunkSize)
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.frames: list[Frame] = []
        self.decoded: dict[int, list[Headers]] = {}
        self._seen = 0
        if preface:
            self.send(PREFACE, SettingsFrame(0))

    def send(self, *items: bytes | Frame) -> list[Frame]:
        """Send frames (or bytes), all in one write; return the frames the server sent back."""
        self.memory.send(b"".join(i if isinstance(i, bytes) else i.serialize() for i in items))
        return self.read()

    def read(self) -> list[Frame]:
        """The frames the server has sent since the last read."""
        self.memory.flush()
        data = self.memory.received
        fresh = decodeFrames(data[self._seen :])
        for frame in fresh:
            self._seen += 9 + frame.body_len
            if isinstance(frame, HeadersFrame):
                block = [(bytes(n), bytes(v)) for n, v in self.decoder.decode(bytes(frame.data), raw=True)]
                self.decoded.setdefault(frame.stream_id, []).append(block)
        self.frames.extend(fresh)
        return fresh

    def headers(self, streamID: int, headers: Headers, end: bool = False) -> HeadersFrame:
        """A HEADERS frame (END_HEADERS set) encoded with this client's HPACK state."""
        frame = HeadersFrame(streamID, self.encoder.encode(headers))
        frame.flags.add("END_HEADERS")
        if end:
            frame.flags.add("END_STREAM")
        return frame

    @property
    def closed(self) -> bool:
        return bool(self.memory.serverTransport.disconnected)

    def of(self, kind: type, streamID: int | None = None) -> list[Any]:
        return [
            f for f in self.frames if isinstance(f, kind) and (streamID is None or f.stream_id == streamID)
        ]

    def status(self, streamID: int) -> bytes | None:
        for block in self.decoded.get(streamID, []):
            return dict(block).get(b":status")
        return None

    def body(self, streamID: int) -> bytes:
        return b"".join(bytes(f.data) for f in self.of(DataFrame, streamID))

    def ended(self, streamID: int) -> bool:
        return any(
            "END_STREAM" in f.flags for f in self.of(DataFrame, streamID) + self.of(HeadersFrame, streamID)
        )

    def reset(self, streamID: int) -> int | None:
        resets = self.of(RstStreamFrame, streamID)
        return resets[0].error_code if resets else None

    def goaway(self) -> int | None:
        """The error code of the first GOAWAY that is not a drain's C{NO_ERROR}, or None."""
        for frame in self.of(GoAwayFrame):
            if frame.error_code != NO_ERROR:
                return int(frame.error_code)
        return None

    def outcome(self, streamID: int) -> tuple[Any, ...]:
        """What became of a request: a GOAWAY's code, else its status, else its reset's code."""
        if self.goaway() is not None:
            return ("goaway", self.goaway())
        if self.status(streamID) is not None:
            return ("status", self.status(streamID))
        if self.reset(streamID) is not None:
            return ("reset", self.reset(streamID))
        return ("none",)

    def servesAGet(self, streamID: int) -> bool:
        """Whether a GET on C{streamID} is still answered (the connection lives on)."""
        self.send(self.headers(streamID, GET, end=True))
        return self.status(streamID) is not None and self.ended(streamID)


@implementer(IHalfCloseableProtocol)
class HalfClosing(RecordingProtocol):
    """A recording protocol that takes a half-close."""

    readLost = False

    def readConnectionLost(self) -> None:
        self.readLost = True

    def writeConnectionLost(self) -> None:
        pass


class Plugin(SimpleUpgrade):
    """The C{recording} upgrade: its protocols are kept, its decision may be a Deferred."""

    def __init__(self, build: Any = RecordingProtocol, decision: Any = None) -> None:
        self.built: list[Any] = []

        def factory(request: Any) -> Any:
            protocol = build()
            self.built.append(protocol)
            return protocol

        super().__init__("recording", factory, decision=decision)


def site(*protocols: Any, extendedConnect: bool = True, clock: Any = None) -> UpgradeSite:
    """L{h2Site} (a page at C{/}) with C{protocols} (a L{Plugin} by default), extended CONNECT on."""
    return h2Site(clock, protocols=list(protocols) or [Plugin()], extendedConnect=extendedConnect)


def webSocketSite(clock: Any = None) -> UpgradeSite:
    """The demo site: autobahn's echo at C{/ws}."""
    registry = ProtocolRegistry([EchoUpgrade()])
    root = demoRoot(registry)
    # autobahn's handshake timers run on the global reactor, not the test's clock: off.
    root.children[b"ws"].upgrade.factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
    return UpgradeSite(root, registry, reactor=clock if clock is not None else Clock(), extendedConnect=True)


def webSocketConnect(extra: Headers = ()) -> Headers:
    return connect(
        b"websocket",
        b"/ws",
        extra=[(b"sec-websocket-version", b"13"), (b"origin", b"http://localhost"), *extra],
    )


def serverFrame(payload: bytes) -> bytes:
    """The server's unmasked text frame carrying C{payload}."""
    if len(payload) < 126:
        return bytes([0x81, len(payload)]) + payload
    return bytes([0x81, 126]) + len(payload).to_bytes(2, "big") + payload


class SettingsTests(SynchronousTestCase):
    """SETTINGS (RFC 9113 §6.5, RFC 8441 §3): what the server sends, what it accepts."""

    def serverSettings(self, served: UpgradeSite) -> dict[int, int]:
        peer = Peer(served)
        first = next(f for f in peer.of(SettingsFrame) if "ACK" not in f.flags)
        return dict(first.settings)

    def test_advertised(self) -> None:
        """ENABLE_CONNECT_PROTOCOL=1 when the site offers extended CONNECT; else 0 (h2 states its default)."""
        cases = [
            ("offered", site(), 1),
            ("off", site(extendedConnect=False), 0),
            ("only h2c (IConnectionOnly), a 426 path offering websocket", site(H2cUpgrade()), 1),
            (
                "only h2c (IConnectionOnly), nothing in the tree",
                UpgradeSite(DirectoryResource(), [H2cUpgrade()], reactor=Clock(), extendedConnect=True),
                0,
            ),
        ]
        for label, served, expected in cases:
            with self.subTest(label):
                self.assertEqual(self.serverSettings(served).get(ENABLE_CONNECT_PROTOCOL), expected)

    def test_maxConcurrentStreams(self) -> None:
        """The server announces SETTINGS_MAX_CONCURRENT_STREAMS = 100 (h2's default, docs/h2c.md)."""
        self.assertEqual(self.serverSettings(site()).get(SettingsFrame.MAX_CONCURRENT_STREAMS), 100)

    def test_clientSettings(self) -> None:
        """The client's SETTINGS: acknowledged, or (a value RFC 8441 §3 forbids) GOAWAY PROTOCOL_ERROR."""
        cases = [
            ("ENABLE_CONNECT_PROTOCOL=1", {ENABLE_CONNECT_PROTOCOL: 1}, "ack"),
            ("ENABLE_CONNECT_PROTOCOL=0", {ENABLE_CONNECT_PROTOCOL: 0}, "ack"),
            ("ENABLE_CONNECT_PROTOCOL=2", {ENABLE_CONNECT_PROTOCOL: 2}, ("goaway", PROTOCOL_ERROR)),
            (
                "ENABLE_CONNECT_PROTOCOL=2**32-1",
                {ENABLE_CONNECT_PROTOCOL: 2**32 - 1},
                ("goaway", PROTOCOL_ERROR),
            ),
            ("ENABLE_PUSH=2", {SettingsFrame.ENABLE_PUSH: 2}, ("goaway", PROTOCOL_ERROR)),
            (
                "several",
                {SettingsFrame.HEADER_TABLE_SIZE: 0, SettingsFrame.INITIAL_WINDOW_SIZE: 1 << 20},
                "ack",
            ),
        ]
        for chunkSize in CHUNKINGS:
            for label, settings, expected in cases:
                with self.subTest(label, chunkSize=chunkSize):
                    peer = Peer(site(), chunkSize, preface=False)
                    peer.send(PREFACE, SettingsFrame(0, settings=settings))
                    if expected == "ack":
                        acks = [f for f in peer.of(SettingsFrame) if "ACK" in f.flags]
                        self.assertEqual(len(acks), 1)
                        self.assertIsNone(peer.goaway())
                        self.assertTrue(peer.servesAGet(1))
                    else:
                        self.assertEqual(("goaway", peer.goaway()), expected)
                        self.assertTrue(peer.closed)


#: One row per request rule: label, the header list, END_STREAM, extended
#: CONNECT offered, the outcome on stream 1.
REQUEST_RULES: list[tuple[str, Headers, bool, bool, tuple[Any, ...]]] = [
    ("extended CONNECT", connect(), False, True, ("status", b"200")),
    (":protocol, setting not sent (RFC 8441 §4)", connect(), False, False, ("reset", PROTOCOL_ERROR)),
    (
        ":protocol on GET (RFC 8441 §4)",
        [(b":method", b"GET"), *connect()[1:]],
        True,
        True,
        ("reset", PROTOCOL_ERROR),
    ),
    (":protocol on POST", [(b":method", b"POST"), *connect()[1:]], False, True, ("reset", PROTOCOL_ERROR)),
    ("extended CONNECT without :path", connect(drop=[b":path"]), False, True, ("reset", PROTOCOL_ERROR)),
    ("extended CONNECT without :scheme", connect(drop=[b":scheme"]), False, True, ("reset", PROTOCOL_ERROR)),
    (
        "extended CONNECT without :authority",
        connect(drop=[b":authority"]),
        False,
        True,
        ("reset", PROTOCOL_ERROR),
    ),
    # RFC 8441 §4 reads :authority as RFC 9113 §8.3.1 does for any request: Host may stand in.
    (
        "extended CONNECT, Host for :authority",
        connect(drop=[b":authority"], extra=[(b"host", b"localhost")]),
        False,
        True,
        ("status", b"200"),
    ),
    ("two :protocol", [*connect()[:2], *connect()[1:]], False, True, ("reset", PROTOCOL_ERROR)),
    (":protocol not a token", connect(b"e c h o"), False, True, ("status", b"400")),
    ("unknown :protocol", connect(b"nope"), False, True, ("status", b"501")),
    (
        "plain CONNECT (RFC 9113 §8.5): no tunnels",
        [(b":method", b"CONNECT"), (b":authority", b"localhost:80")],
        False,
        True,
        ("status", b"501"),
    ),
    (
        "plain CONNECT with :path",
        [(b":method", b"CONNECT"), (b":path", b"/"), (b":authority", b"localhost:80")],
        False,
        True,
        ("reset", PROTOCOL_ERROR),
    ),
    (
        "plain CONNECT with :scheme",
        [(b":method", b"CONNECT"), (b":scheme", b"http"), (b":authority", b"localhost:80")],
        False,
        True,
        ("reset", PROTOCOL_ERROR),
    ),
    ("plain CONNECT without :authority", [(b":method", b"CONNECT")], False, True, ("reset", PROTOCOL_ERROR)),
    *(
        (
            f"{name.decode()} on extended CONNECT (RFC 9113 §8.2.2)",
            connect(extra=[(name, value)]),
            False,
            True,
            ("reset", PROTOCOL_ERROR),
        )
        for name, value in [
            (b"connection", b"upgrade"),
            (b"upgrade", b"websocket"),
            (b"keep-alive", b"timeout=5"),
            (b"transfer-encoding", b"chunked"),
            (b"proxy-connection", b"keep-alive"),
            (b"te", b"gzip"),
        ]
    ),
    ("upper-case field name", connect(extra=[(b"X-Token", b"a")]), False, True, ("reset", PROTOCOL_ERROR)),
    (
        "pseudo-header after a field",
        [*connect()[:4], (b"x-a", b"b"), connect()[4]],
        False,
        True,
        ("reset", PROTOCOL_ERROR),
    ),
    ("GET", GET, True, True, ("status", b"200")),
    (
        "GET with Upgrade (RFC 9113 §8.2.2)",
        [*GET, (b"upgrade", b"websocket")],
        True,
        True,
        ("reset", PROTOCOL_ERROR),
    ),
]


class RequestRuleTests(SynchronousTestCase):
    """A request's header block (RFC 9113 §8.1-8.5, RFC 8441 §4): each rule's answer, on its stream only."""

    def test_rules(self) -> None:
        for chunkSize in CHUNKINGS:
            for label, headers, end, offered, expected in REQUEST_RULES:
                with self.subTest(label, chunkSize=chunkSize):
                    peer = Peer(site(extendedConnect=offered), chunkSize)
                    peer.send(peer.headers(1, headers, end))
                    self.assertEqual(peer.outcome(1), expected)
                    self.assertIsNone(peer.goaway())
                    # Counted, for txupgrade_http2_refusals_total.
                    counted = (
                        {"malformed": 1}
                        if expected == ("reset", PROTOCOL_ERROR)
                        else {"connect-tunnel": 1}
                        if label.startswith("plain CONNECT (")
                        else {}
                    )
                    self.assertEqual(peer.site.http2Refusals, counted)
                    self.assertTrue(peer.servesAGet(3), "the connection serves on")
                    self.assertEqual(peer.body(3), PAGE)

    def test_plainConnectStopsTheClient(self) -> None:
        """The 501 to a plain CONNECT ends our side, then a NO_ERROR reset asks the client to stop."""
        peer = Peer(site())
        peer.send(
            peer.headers(1, [(b":method", b"CONNECT"), (b":authority", b"localhost:80")]), DataFrame(1, b"x")
        )
        self.assertTrue(peer.ended(1))
        self.assertEqual(peer.reset(1), NO_ERROR)

    def test_webSocketKey(self) -> None:
        """
        C{Sec-WebSocket-Key} on an HTTP/2 WebSocket is not used (RFC 8441 §5):
        ignored, as hypercorn does; the 200 carries no C{Sec-WebSocket-Accept}.
        """
        for chunkSize in CHUNKINGS:
            with self.subTest(chunkSize=chunkSize):
                peer = Peer(webSocketSite(), chunkSize)
                peer.send(
                    peer.headers(1, webSocketConnect([(b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")]))
                )
                self.assertEqual(peer.status(1), b"200")
                self.assertNotIn(b"sec-websocket-accept", dict(peer.decoded[1][0]))
                peer.send(DataFrame(1, maskedFrame(0x1, b"keyed")))
                self.assertEqual(peer.body(1), serverFrame(b"keyed"))


class PrefaceTests(SynchronousTestCase):
    """The connection preface (RFC 9113 §3.4) on the ways in that are known to be HTTP/2."""

    def test_cleartextPortAnswersHTTP11(self) -> None:
        """On the cleartext port a non-preface is HTTP/1.1 (the port serves both): a 400 to a bad one."""
        for chunkSize in CHUNKINGS:
            with self.subTest(chunkSize=chunkSize):
                memory = MemoryConnection(site(), chunkSize=chunkSize)
                memory.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
                self.assertTrue(memory.received.startswith(b"HTTP/1.1 400 "), memory.received[:100])

    def test_afterH2c(self) -> None:
        """After a 101 to h2c the client must send the preface: anything else is GOAWAY PROTOCOL_ERROR."""
        from tests.support.http2 import H2Client

        for chunkSize in CHUNKINGS:
            with self.subTest(chunkSize=chunkSize):
                served = site(Plugin(), H2cUpgrade())
                memory = MemoryConnection(served, chunkSize=chunkSize)
                memory.send(h2cRequest(H2Client(upgrade=True).settingsHeader) + b"GET / HTTP/1.1\r\n\r\n")
                self.assertEqual(served.http2Refusals, {"protocol-error": 1})
                frames = decodeFrames(splitSwitch(memory.received))
                [goaway] = [f for f in frames if isinstance(f, GoAwayFrame)]
                self.assertEqual(goaway.error_code, PROTOCOL_ERROR)
                self.assertTrue(memory.serverTransport.disconnected)


class ConnectStreamTests(SynchronousTestCase):
    """A switched CONNECT stream (RFC 8441 §4, RFC 9113 §8.5): bytes, ends, resets, and what is refused."""

    def switched(self, chunkSize: int | None, build: Any = RecordingProtocol, *more: bytes | Frame) -> Any:
        plugin = Plugin(build)
        peer = Peer(site(plugin), chunkSize)
        peer.send(peer.headers(1, connect()), *more)
        self.assertEqual(peer.status(1), b"200")
        [protocol] = plugin.built
        return peer, protocol

    def test_dataBothWays(self) -> None:
        """DATA frames are the protocol's bytes, and its writes are DATA frames."""
        for chunkSize in CHUNKINGS:
            with self.subTest(chunkSize=chunkSize):
                peer, protocol = self.switched(chunkSize)
                peer.send(DataFrame(1, b"one "), DataFrame(1, b""), DataFrame(1, b"two"))
                self.assertEqual(bytes(protocol.data), b"one two")
                protocol.transport.write(b"back")
                peer.read()
                self.assertEqual(peer.body(1), b"back")

    def test_dataRightAfterHeaders(self) -> None:
        """DATA in the same write as the HEADERS reaches the protocol, in order."""
        for chunkSize in CHUNKINGS:
            with self.subTest(chunkSize=chunkSize):
                _, protocol = self.switched(
                    chunkSize, RecordingProtocol, DataFrame(1, b"a"), DataFrame(1, b"bc")
                )
                self.assertEqual(bytes(protocol.data), b"abc")

    def test_dataBeforeTheDecision(self) -> None:
        """DATA sent while the plugin's negotiate is pending reaches the protocol after the 200, in order."""
        from txupgrade import Accept

        for chunkSize in CHUNKINGS:
            with self.subTest(chunkSize=chunkSize):
                pending: Deferred[Any] = Deferred()
                plugin = Plugin(decision=lambda request, pending=pending: pending)
                peer = Peer(site(plugin), chunkSize)
                peer.send(peer.headers(1, connect()), DataFrame(1, b"early "), DataFrame(1, b"bytes"))
                self.assertIsNone(peer.status(1))
                pending.callback(Accept())
                peer.send(DataFrame(1, b" late"))
                self.assertEqual(peer.status(1), b"200")
                [protocol] = plugin.built
                self.assertEqual(bytes(protocol.data), b"early bytes late")

    def test_clientEndStreamIsAHalfClose(self) -> None:
        """The client's END_STREAM is readConnectionLost; the protocol still writes, then ends the stream."""
        for chunkSize in CHUNKINGS:
            with self.subTest(chunkSize=chunkSize):
                peer, protocol = self.switched(chunkSize, HalfClosing)
                peer.send(DataFrame(1, b"last", flags=["END_STREAM"]))
                self.assertEqual((bytes(protocol.data), protocol.readLost), (b"last", True))
                self.assertIsNone(protocol.lostReason)
                protocol.transport.write(b"reply")
                protocol.transport.loseConnection()
                peer.read()
                self.assertEqual(peer.body(1), b"reply")
                self.assertTrue(peer.ended(1))
                self.assertIsNone(peer.reset(1))
                self.assertTrue(protocol.lostReason.check(ConnectionDone))

    def test_clientReset(self) -> None:
        """The client's RST_STREAM is connectionLost (ConnectionLost); the connection serves on."""
        for chunkSize in CHUNKINGS:
            with self.subTest(chunkSize=chunkSize):
                peer, protocol = self.switched(chunkSize)
                peer.send(RstStreamFrame(1, error_code=CANCEL))
                self.assertTrue(protocol.lostReason.check(ConnectionLost))
                self.assertTrue(peer.servesAGet(3))

    def test_serverEnds(self) -> None:
        """loseConnection: our END_STREAM, then RST_STREAM NO_ERROR; the protocol hears ConnectionDone."""
        for chunkSize in CHUNKINGS:
            with self.subTest(chunkSize=chunkSize):
                peer, protocol = self.switched(chunkSize)
                protocol.transport.loseConnection()
                peer.read()
                self.assertTrue(peer.ended(1))
                self.assertEqual(peer.reset(1), NO_ERROR)
                ends = [
                    f
                    for f in peer.frames
                    if f.stream_id == 1 and ("END_STREAM" in f.flags or isinstance(f, RstStreamFrame))
                ]
                self.assertIsInstance(ends[-1], RstStreamFrame)
                self.assertTrue(protocol.lostReason.check(ConnectionDone))

    def test_headersOnAConnectStream(self) -> None:
        """A second HEADERS (END_STREAM or not) on a switched stream: PROTOCOL_ERROR for that stream only."""
        for chunkSize in CHUNKINGS:
            for end in (False, True):
                with self.subTest(chunkSize=chunkSize, endStream=end):
                    peer, protocol = self.switched(chunkSize)
                    peer.send(peer.headers(1, [(b"x-more", b"1")], end))
                    self.assertEqual(peer.reset(1), PROTOCOL_ERROR)
                    self.assertEqual(len(peer.of(RstStreamFrame, 1)), 1)
                    self.assertTrue(protocol.lostReason.check(ConnectionLost))
                    self.assertIsNone(peer.goaway())
                    self.assertTrue(peer.servesAGet(3))

    def test_secondHeadersOnARequest(self) -> None:
        """A second HEADERS without END_STREAM on an ordinary request is malformed too (RFC 9113 §8.1)."""
        for chunkSize in CHUNKINGS:
            with self.subTest(chunkSize=chunkSize):
                peer = Peer(site(), chunkSize)
                post = [(b":method", b"POST"), *GET[1:]]
                peer.send(peer.headers(1, post), DataFrame(1, b"body"), peer.headers(1, [(b"x-a", b"b")]))
                self.assertEqual(peer.reset(1), PROTOCOL_ERROR)
                self.assertIsNone(peer.goaway())
                self.assertTrue(peer.servesAGet(3))


class GoAwayTests(SynchronousTestCase):
    """CONNECT streams and a drain's GOAWAYs (RFC 9113 §6.8)."""

    def test_drainLetsConnectStreamsFinish(self) -> None:
        """
        An open CONNECT stream carries on through both GOAWAYs until its
        protocol ends it; a stream opened after the final GOAWAY is refused;
        then the connection closes.
        """
        for chunkSize in CHUNKINGS:
            with self.subTest(chunkSize=chunkSize):
                clock = Clock()
                plugin = Plugin()
                peer = Peer(site(plugin, clock=clock), chunkSize)
                peer.send(peer.headers(1, connect()))
                [protocol] = plugin.built
                peer.memory.server._channel.drain()
                [ping] = [f for f in peer.read() if isinstance(f, PingFrame)]
                pong = PingFrame(0, opaque_data=ping.opaque_data, flags=["ACK"])
                peer.send(pong)
                goaways = peer.of(GoAwayFrame)
                self.assertEqual(
                    [(g.last_stream_id, g.error_code) for g in goaways], [(2**31 - 1, 0), (1, 0)]
                )
                peer.send(DataFrame(1, b"still"))
                protocol.transport.write(b"open")
                peer.send(peer.headers(3, connect()))
                clock.advance(0)
                self.assertEqual((bytes(protocol.data), peer.body(1)), (b"still", b"open"))
                self.assertEqual(peer.reset(3), REFUSED_STREAM)
                self.assertEqual(len(plugin.built), 1)
                self.assertFalse(peer.closed)
                protocol.transport.loseConnection()
                peer.read()
                clock.advance(0)
                peer.read()
                self.assertTrue(peer.ended(1))
                self.assertTrue(peer.closed)


class Producer:
    """A push producer that writes C{chunk} to C{transport} while it is not paused, up to C{total}."""

    def __init__(self, transport: Any, chunk: int, total: int) -> None:
        self.transport, self.chunk, self.left = transport, chunk, total
        self.paused = False
        self.pauses = 0
        transport.registerProducer(self, True)

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.left > 0:
            size = min(self.chunk, self.left)
            self.left -= size
            self.transport.write(b"x" * size)

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def stopProducing(self) -> None:
        self.left = 0


class FlowControlTests(SynchronousTestCase):
    """A stream window the client never reopens (RFC 9113 §5.2, §6.9)."""

    def test_neverReopened(self) -> None:
        """
        The server sends the window and no more, pauses the protocol's
        producer with at most one write buffered, and serves other streams
        on the connection window; a WINDOW_UPDATE resumes it.
        """
        total, chunk = 200_000, 16_384
        for chunkSize in CHUNKINGS:
            with self.subTest(chunkSize=chunkSize):
                plugin = Plugin()
                peer = Peer(site(plugin), chunkSize)
                peer.send(WindowUpdateFrame(0, window_increment=10 * total), peer.headers(1, connect()))
                [protocol] = plugin.built
                producer = Producer(protocol.transport, chunk, total)
                producer.resumeProducing()
                peer.read()
                sent = len(peer.body(1))
                self.assertEqual(sent, INITIAL_WINDOW)
                self.assertTrue(producer.paused)
                self.assertLessEqual((total - producer.left) - sent, chunk)
                self.assertTrue(peer.servesAGet(3))
                self.assertEqual(peer.body(3), PAGE)
                peer.send(WindowUpdateFrame(1, window_increment=total))
                self.assertEqual(len(peer.body(1)), total)
                self.assertEqual(producer.left, 0)


class ConcurrencyTests(SynchronousTestCase):
    """SETTINGS_MAX_CONCURRENT_STREAMS (100) against 1,000 WebSocket streams on one connection."""

    def test_thousandWebSockets(self) -> None:
        """
        1,000 opened at once: 100 served, 900 refused with REFUSED_STREAM,
        no GOAWAY; then 900 more in turns of 100 as the earlier ones close,
        each echoing (1,000 WebSockets served on the connection). Whole
        writes only: one byte at a time would cost seconds here.
        """
        clock = Clock()
        peer = Peer(webSocketSite(clock))
        first = range(1, 2001, 2)
        peer.send(*(peer.headers(s, webSocketConnect()) for s in first))
        served = [s for s in first if peer.status(s) == b"200"]
        refused = [s for s in first if peer.reset(s) == REFUSED_STREAM]
        self.assertEqual((served, refused), (list(first[:100]), list(first[100:])))
        self.assertIsNone(peer.goaway())
        self.assertEqual(peer.site.http2Refusals, {"refused-stream": 900})
        echoed = 0
        streams = served
        nextStream = 2001
        while True:
            peer.send(*(DataFrame(s, maskedFrame(0x1, b"%d" % s)) for s in streams))
            echoed += sum(peer.body(s) == serverFrame(b"%d" % s) for s in streams)
            peer.send(*(RstStreamFrame(s, error_code=CANCEL) for s in streams))
            clock.advance(10)  # the reset budget refills (33 a second)
            if echoed >= 1000:
                break
            streams = list(range(nextStream, nextStream + 200, 2))
            nextStream += 200
            peer.send(*(peer.headers(s, webSocketConnect()) for s in streams))
            self.assertEqual([peer.status(s) for s in streams], [b"200"] * 100)
        self.assertEqual(echoed, 1000)
        self.assertIsNone(peer.goaway())
        self.assertTrue(peer.servesAGet(nextStream))


class WebSocketFramingTests(SynchronousTestCase):
    """WebSocket frames over DATA frames (RFC 8441 §5): DATA boundaries mean nothing."""

    def open(self, chunkSize: int | None, *streams: int) -> Peer:
        peer = Peer(webSocketSite(), chunkSize)
        peer.send(*(peer.headers(s, webSocketConnect()) for s in streams))
        self.assertEqual([peer.status(s) for s in streams], [b"200"] * len(streams))
        return peer

    def test_frameAcrossDataFrames(self) -> None:
        """One 1,000-byte message split over 1,000 one-byte DATA frames is echoed whole."""
        message = bytes(range(33, 126)) * 10 + b"0123456789"
        for chunkSize in (None, 7):
            with self.subTest(chunkSize=chunkSize):
                peer = self.open(chunkSize, 1)
                frame = maskedFrame(0x1, message)
                peer.send(*(DataFrame(1, frame[i : i + 1]) for i in range(len(frame))))
                self.assertEqual(peer.body(1), serverFrame(message))

    def test_framesInOneDataFrame(self) -> None:
        """Fifty messages in one DATA frame are echoed, in order."""
        for chunkSize in CHUNKINGS:
            with self.subTest(chunkSize=chunkSize):
                peer = self.open(chunkSize, 1)
                messages = [b"m%d" % i for i in range(50)]
                peer.send(DataFrame(1, b"".join(maskedFrame(0x1, m) for m in messages)))
                self.assertEqual(peer.body(1), b"".join(serverFrame(m) for m in messages))

    def test_resetMidMessage(self) -> None:
        """A stream reset halfway through a message ends that WebSocket only."""
        for chunkSize in CHUNKINGS:
            with self.subTest(chunkSize=chunkSize):
                peer = self.open(chunkSize, 1, 3)
                frame = maskedFrame(0x1, b"half of this is never sent")
                peer.send(DataFrame(1, frame[:10]), RstStreamFrame(1, error_code=CANCEL))
                peer.send(DataFrame(3, maskedFrame(0x1, b"three")))
                self.assertEqual((peer.body(1), peer.body(3)), (b"", serverFrame(b"three")))
                self.assertIsNone(peer.goaway())


def _tlsExchange(port: int, ca: Any, payload: bytes) -> tuple[str | None, bytes, bool]:
    """Over TLS offering ALPN h2 only, send C{payload}: the ALPN chosen, what came back, whether EOF came."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=8) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(payload)
            received = b""
            while True:
                try:
                    data = sock.recv(65536)
                except (ssl.SSLEOFError, ConnectionResetError):
                    return sock.selected_alpn_protocol(), received, True
                if not data:
                    return sock.selected_alpn_protocol(), received, True
                received += data


class TLSPrefaceTests(TestCase):
    """On TLS with ALPN h2 the connection is known to be HTTP/2: a bad preface is GOAWAY PROTOCOL_ERROR."""

    @inlineCallbacks
    def test_badPreface(self) -> None:
        tls = TLSPair()
        served = site()
        port = listen(self, served, tls.serverOptions(served.acceptableProtocols()))
        for payload in (b"GET / HTTP/1.1\r\n\r\n", PREFACE[:-2] + b"XX"):
            alpn, received, eof = yield inThread(_tlsExchange, port, tls.ca, payload)
            self.assertEqual(alpn, "h2")
            frames = decodeFrames(received)
            self.assertIsInstance(frames[0], SettingsFrame)
            self.assertIsInstance(frames[-1], GoAwayFrame)
            self.assertEqual(frames[-1].error_code, PROTOCOL_ERROR)
            self.assertTrue(eof)


def _daemonRows(port: int) -> dict[str, Any]:
    """Through h2 over TCP: a CONNECT without :authority, then a GET; then 101 CONNECT streams at once."""
    config = h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False
    )
    seen: dict[str, Any] = {}

    def run(send: Any, until: Any) -> dict[int, list[Any]]:
        client = h2.connection.H2Connection(config=config)
        client.initiate_connection()
        events: dict[int, list[Any]] = {}
        with socket.create_connection(("127.0.0.1", port), timeout=8) as sock:
            send(client)
            sock.sendall(client.data_to_send())
            while not until(events):
                data = sock.recv(65536)
                if not data:
                    break
                for event in client.receive_data(data):
                    events.setdefault(getattr(event, "stream_id", 0), []).append(event)
                    if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
                        client.send_data(1, b"echo me")
                sock.sendall(client.data_to_send())
        return events

    def kinds(events: list[Any]) -> list[Any]:
        out: list[Any] = []
        for e in events:
            if isinstance(e, h2.events.ResponseReceived):
                out.append(dict(e.headers)[b":status"])
            elif isinstance(e, h2.events.StreamReset):
                out.append(("reset", int(e.error_code)))
            elif isinstance(e, h2.events.DataReceived):
                out.append(("data", e.data))
        return out

    def first(client: Any) -> None:
        client.send_headers(1, connect(b"echo", drop=[b":authority"]))
        client.send_headers(3, GET, end_stream=True)

    events = run(first, lambda ev: any(isinstance(e, h2.events.StreamEnded) for e in ev.get(3, [])))
    seen["missingAuthority"] = kinds(events.get(1, []))
    seen["nextStream"] = kinds(events.get(3, []))[:1]

    streams = list(range(1, 203, 2))

    def many(client: Any) -> None:
        for s in streams:
            client.send_headers(s, connect(b"echo"))

    def done(ev: dict[int, list[Any]]) -> bool:
        return bool(ev.get(201)) and any(isinstance(e, h2.events.DataReceived) for e in ev.get(1, []))

    events = run(many, done)
    seen["statuses"] = [kinds(events.get(s, []))[:1] for s in streams]
    seen["echo"] = kinds(events.get(1, []))[1:2]
    return seen


class DaemonTests(TestCase):
    """A few rows through a real C{twistd txupgrade --extended-connect}, h2 as the client over TCP."""

    @inlineCallbacks
    def test_rows(self) -> None:
        """The rows' answers, and txupgrade_http2_refusals_total counting each refusal once."""
        daemon = yield startDaemon(self, ["--listen", LOCAL, "--metrics", LOCAL])
        metricsPort = int(re.search(rb"metrics on 127\.0\.0\.1:(\d+)", daemon.output).group(1))  # type: ignore[union-attr]
        seen = yield inThread(_daemonRows, daemon.ports[0])
        samples = yield inThread(scrapeMetrics, metricsPort)
        refusals = {
            dict(labels)["kind"]: value
            for (name, labels), value in samples.items()
            if name == "txupgrade_http2_refusals_total"
        }
        self.assertEqual(refusals, {"malformed": 1.0, "refused-stream": 1.0})
        self.assertEqual(seen["missingAuthority"], [("reset", PROTOCOL_ERROR)])
        self.assertEqual(seen["nextStream"], [b"200"])
        self.assertEqual(seen["statuses"], [[b"200"]] * 100 + [[("reset", REFUSED_STREAM)]])
        self.assertEqual(seen["echo"], [("data", b"echo me")])
