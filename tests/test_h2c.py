"""
In-memory tests of HTTP/2 on the cleartext port: the C{h2c} plugin's rules,
stream 1, prior knowledge, the ban on C{Upgrade} inside HTTP/2, and bad input.
"""

from __future__ import annotations

import base64
import struct
import subprocess
import sys
from typing import Any

from hyperframe.frame import DataFrame, GoAwayFrame, PingFrame, RstStreamFrame
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.support.http2 import (
    PAGE,
    SWITCHING,
    H2Client,
    H2Memory,
    decodeFrames,
    h2cRequest,
    h2Site,
    pingAck,
    splitSwitch,
)
from txupgrade._twistedcompat import currentProtocol
from txupgrade.interfaces import IDrainable, IUpgradeProtocol
from txupgrade.negotiation import Accept, Decline, Offer, ProtocolName, UpgradeRequest
from txupgrade.protocols.h2c import PREFACE, H2cUpgrade, H2SettingsError, parseSettingsHeader, stream1Headers
from txupgrade.testing import MemoryConnection

PROTOCOL_ERROR = 0x1
STREAM_CLOSED = 0x5
REFUSED_STREAM = 0x7
ENHANCE_YOUR_CALM = 0xB


def settings(*pairs: tuple[int, int]) -> bytes:
    """An C{HTTP2-Settings} value (base64url, no padding) for C{pairs}."""
    payload = b"".join(struct.pack("!HL", i, v) for i, v in pairs)
    return base64.urlsafe_b64encode(payload).rstrip(b"=")


def upgradeRequest(
    headers: list[tuple[bytes, bytes]], secure: bool = False, body: bytes = b""
) -> UpgradeRequest:
    """The sans-IO request a plugin sees."""
    return UpgradeRequest(
        method=b"GET",
        target=b"/x?y=1",
        version=b"HTTP/1.1",
        headers=tuple(headers),
        body=body,
        offer=Offer((ProtocolName("h2c"),)),
        secure=secure,
    )


GOOD = [(b"host", b"example"), (b"connection", b"Upgrade, HTTP2-Settings"), (b"upgrade", b"h2c")]


def upgraded(
    target: bytes = b"/",
    method: bytes = b"GET",
    body: bytes | None = None,
    site: Any = None,
    chunkSize: int | None = None,
) -> H2Memory:
    """An h2c connection to C{site}: the upgrade request and the client preface, sent in one segment."""
    memory = H2Memory(site if site is not None else h2Site(), chunkSize=chunkSize, upgrade=True)
    memory.send(h2cRequest(memory.client.settingsHeader, target, method, body) + memory.client.preface())
    return memory


def logEvents(test: SynchronousTestCase) -> list[dict[str, object]]:
    """Every log event from now until C{test} ends."""
    events: list[dict[str, object]] = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


class SettingsTests(SynchronousTestCase):
    """L{parseSettingsHeader} takes exactly valid SETTINGS payloads."""

    def test_valid(self) -> None:
        """curl's value, with and without padding, and an empty-valued list."""
        self.assertEqual(parseSettingsHeader(b"AAMAAABkAAQCAAAAAAIAAAAA"), [(3, 100), (4, 0x2000000), (2, 0)])
        self.assertEqual(parseSettingsHeader(settings((5, 1 << 14))), [(5, 1 << 14)])
        self.assertEqual(parseSettingsHeader(b" AAMAAABk "), [(3, 100)])

    def test_invalid(self) -> None:
        """Bad alphabet, bad length, bad values and floods raise."""
        for value in (
            b"",
            b"AAMAAABk!",
            b"AAMAAABk+/",
            b"AAMAAA",
            b"AAMAAABkA",
            settings((2, 2)),
            settings((4, 1 << 31)),
            settings((5, 100)),
            settings((5, 1 << 24)),
            settings((8, 7)),
            settings(*[(3, 1)] * 33),
        ):
            with self.assertRaises(H2SettingsError, msg=repr(value)):
                parseSettingsHeader(value)


class PluginTests(SynchronousTestCase):
    """L{H2cUpgrade} accepts only what RFC 7540 §3.2 allows."""

    def test_verify(self) -> None:
        """It provides L{IUpgradeProtocol}."""
        self.assertTrue(verifyObject(IUpgradeProtocol, H2cUpgrade()))

    def test_accept(self) -> None:
        """One valid HTTP2-Settings, listed in Connection, on cleartext: accepted."""
        decision = H2cUpgrade().negotiate(upgradeRequest([*GOOD, (b"http2-settings", settings((3, 10)))]))
        self.assertIsInstance(decision, Accept)

    def test_declines(self) -> None:
        """Missing, duplicated, unlisted or malformed settings, or TLS: declined."""
        value = settings((3, 10))
        cases = {
            "missing": upgradeRequest(GOOD),
            "duplicated": upgradeRequest([*GOOD, (b"http2-settings", value), (b"http2-settings", value)]),
            "unlisted": upgradeRequest(
                [(b"connection", b"Upgrade"), (b"upgrade", b"h2c"), (b"http2-settings", value)]
            ),
            "malformed": upgradeRequest([*GOOD, (b"http2-settings", b"%%%")]),
            "bad value": upgradeRequest([*GOOD, (b"http2-settings", settings((2, 5)))]),
            "tls": upgradeRequest([*GOOD, (b"http2-settings", value)], secure=True),
        }
        for name, request in cases.items():
            self.assertIsInstance(H2cUpgrade().negotiate(request), Decline, name)

    def test_stream1Headers(self) -> None:
        """Pseudo-headers from the request line and Host; no connection-specific fields."""
        connectionSpecific = [
            (b"http2-settings", b"AAMAAABk"),
            (b"keep-alive", b"5"),
            (b"te", b"trailers, deflate"),
        ]
        framing = [(b"transfer-encoding", b"chunked"), (b"expect", b"100-continue")]
        request = upgradeRequest([*GOOD, *connectionSpecific, (b"accept", b"*/*"), *framing], body=b"hello")
        pseudo = [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":path", b"/x?y=1"),
            (b":authority", b"example"),
        ]
        self.assertEqual(stream1Headers(request), [*pseudo, (b"accept", b"*/*"), (b"content-length", b"5")])

    def test_pluginScanImportsNoH2(self) -> None:
        """The plugin module imports no HTTP/2 code of ours, and imports without h2 at all."""
        code = (
            "import sys; import txupgrade.plugins.txupgrade_builtins as m; "
            "print(m.h2c.name, 'txupgrade._h2connection' in sys.modules)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=60)
        self.assertEqual(out.stdout.split(), [b"h2c", b"False"])
        blocked = "import sys; sys.modules['h2'] = None; sys.modules['priority'] = None; " + code
        out = subprocess.run([sys.executable, "-c", blocked], capture_output=True, check=True, timeout=60)
        self.assertEqual(out.stdout.split(), [b"h2c", b"False"])

    def test_declinesWithoutH2(self) -> None:
        """Without the h2 library (extra h2c), negotiate declines, naming the extra."""
        code = (
            "import sys; sys.modules['h2'] = None; sys.modules['h2.connection'] = None\n"
            "sys.modules['twisted.web._http2'] = None\n"
            "from txupgrade.protocols.h2c import H2cUpgrade\n"
            "from txupgrade.negotiation import UpgradeRequest\n"
            "r = UpgradeRequest(b'GET', b'/', b'HTTP/1.1', ((b'connection', b'Upgrade, HTTP2-Settings'),"
            " (b'http2-settings', b'AAMAAABk')))\n"
            "print(H2cUpgrade().negotiate(r).reason)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=60)
        self.assertIn(b"extra 'h2c'", out.stdout)


class Stream1Tests(SynchronousTestCase):
    """The upgraded request is answered on stream 1 by the same site."""

    def test_get(self) -> None:
        """GET: 101, then stream 1 carries the page, then stream 3 is served."""
        for chunkSize in (None, 1):
            memory = upgraded(chunkSize=chunkSize)
            answer = memory.client.answers[1]
            self.assertEqual((answer.status, answer.body, answer.ended), (b"200", PAGE, True))
            memory.send(memory.client.request(3, b"/dyn?q"))
            self.assertEqual(memory.client.answers[3].body, b"GET /dyn?q 0\n")
            self.assertEqual(memory.client.answers[3].header(b"x-proto"), b"HTTP/2")

    def test_head(self) -> None:
        """HEAD on stream 1: headers, no body."""
        client = H2Client(True)
        memory = H2Memory(h2Site(), upgrade=True)
        memory.client = client
        # The client library cannot know stream 1's method unless told.
        client.conn.streams[1].request_method = b"HEAD"
        memory.send(h2cRequest(client.settingsHeader, b"/", b"HEAD") + client.preface())
        answer = client.answers[1]
        self.assertEqual((answer.status, answer.body, answer.ended), (b"200", b"", True))
        self.assertEqual(answer.header(b"content-length"), b"%d" % len(PAGE))

    def test_post(self) -> None:
        """A POST body read before the switch reaches the resource whole."""
        body = bytes(range(256)) * 300
        memory = upgraded(b"/echo", b"POST", body)
        self.assertEqual(memory.client.answers[1].body, body)

    def test_optionsStar(self) -> None:
        """C{OPTIONS *} with Upgrade: h2c switches; stream 1 answers 200."""
        memory = upgraded(b"*", b"OPTIONS")
        self.assertEqual(memory.client.answers[1].status, b"200")
        memory.send(memory.client.request(3, b"/echo", b"POST", body=b"abc"))
        self.assertEqual(memory.client.answers[3].body, b"abc")

    def test_starWithoutUpgrade(self) -> None:
        """C{OPTIONS *} and C{GET *} without an offer are answered as twisted.web does."""
        connection = MemoryConnection(h2Site())
        connection.send(
            b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        self.assertEqual(connection.received.count(b"HTTP/1.1 200 OK"), 1)
        self.assertEqual(connection.received.count(b"HTTP/1.1 405 Method Not Allowed"), 1)

    def test_laterAnswer(self) -> None:
        """A resource that answers later answers on its stream when it does."""
        clock = Clock()
        memory = upgraded(b"/later", site=h2Site(clock))
        self.assertNotIn(1, memory.client.answers)
        clock.advance(1)
        memory.pump()
        self.assertEqual(memory.client.answers[1].body, b"later\n")

    def test_declinedAnsweredInHTTP11(self) -> None:
        """Missing, duplicated or malformed HTTP2-Settings: no 101, an HTTP/1.1 answer."""
        value = H2Client(True).settingsHeader
        for request in (
            h2cRequest(None),
            h2cRequest(value, extra=[(b"HTTP2-Settings", value)]),
            h2cRequest(b"not*base64"),
            h2cRequest(settings((4, 1 << 31))),
            h2cRequest(value, connection=b"Upgrade"),
        ):
            connection = MemoryConnection(h2Site())
            connection.send(request)
            self.assertTrue(connection.received.startswith(b"HTTP/1.1 200 OK\r\n"), request)
            self.assertIn(PAGE, connection.received)

    def test_segmentationInvariance(self) -> None:
        """The upgrade, the preface and the first frames, split anywhere, give the same answers."""
        client = H2Client(True)
        first = h2cRequest(client.settingsHeader, b"/echo", b"POST", b"0123456789")
        whole = first + client.preface() + client.request(3, b"/dyn", b"POST", body=b"xyz")
        expected = None
        for split in range(0, len(whole) + 1):
            # Same client state each time: a fresh client sending identical bytes.
            memory = H2Memory(h2Site(), upgrade=True)
            memory.client = H2Client(True)
            memory.client.conn.data_to_send()
            memory.client.request(3, b"/dyn", b"POST", body=b"xyz")
            memory.connection.send(whole[:split])
            memory.send(whole[split:])
            got = {k: (a.status, a.body, a.ended) for k, a in memory.client.answers.items()}
            if expected is None:
                expected = got
                self.assertEqual(got[1], (b"200", b"0123456789", True))
                self.assertEqual(got[3], (b"200", b"POST /dyn 3\n", True))
            self.assertEqual(got, expected, f"split at {split}")


class PriorKnowledgeTests(SynchronousTestCase):
    """A cleartext connection that starts with the preface is HTTP/2."""

    def test_served(self) -> None:
        """Static and dynamic paths, byte by byte and whole."""
        for chunkSize in (None, 1):
            memory = H2Memory(h2Site(), chunkSize=chunkSize)
            memory.send(
                memory.client.preface() + memory.client.request(1) + memory.client.request(3, b"/dyn")
            )
            self.assertEqual(memory.client.answers[1].body, PAGE)
            self.assertEqual(memory.client.answers[3].body, b"GET /dyn 0\n")

    def test_prefaceSplitAnywhere(self) -> None:
        """The preface split at every position still reads as HTTP/2."""
        for split in range(1, len(PREFACE) + 2):
            memory = H2Memory(h2Site())
            whole = memory.client.preface() + memory.client.request(1)
            memory.connection.send(whole[:split])
            memory.send(whole[split:])
            self.assertEqual(memory.client.answers[1].body, PAGE, split)

    def test_http11StillServed(self) -> None:
        """Requests that start like the preface (POST, PRI/1.1) are HTTP/1.1."""
        connection = MemoryConnection(h2Site(), chunkSize=1)
        connection.send(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\nhi")
        self.assertTrue(connection.received.startswith(b"HTTP/1.1 200 OK"))
        self.assertTrue(connection.received.endswith(b"\r\n\r\nhi"))

    def test_wrongPreface(self) -> None:
        """A preface that goes wrong midway is HTTP/1.1, answered 4xx."""
        connection = MemoryConnection(h2Site())
        connection.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        self.assertRegex(connection.received, rb"^HTTP/1.1 4\d\d ")

    def test_off(self) -> None:
        """C{priorKnowledge=False}: the preface is just a bad HTTP/1.1 request."""
        connection = MemoryConnection(h2Site(priorKnowledge=False))
        connection.send(H2Client().preface())
        self.assertRegex(connection.received, rb"^HTTP/1.1 4\d\d ")

    def test_h2cOff(self) -> None:
        """Without the h2c plugin, Upgrade: h2c is answered in HTTP/1.1; prior knowledge stays."""
        site = h2Site(protocols=[])
        connection = MemoryConnection(site)
        connection.send(h2cRequest(H2Client(True).settingsHeader))
        self.assertTrue(connection.received.startswith(b"HTTP/1.1 200 OK"))
        memory = H2Memory(h2Site(protocols=[]))
        memory.send(memory.client.preface() + memory.client.request(1))
        self.assertEqual(memory.client.answers[1].body, PAGE)


class NoUpgradeInHTTP2Tests(SynchronousTestCase):
    """RFC 9113 §8.2.2: connection-specific fields make a request malformed."""

    def test_refusedStreamsOthersServed(self) -> None:
        """Each bad stream is reset with PROTOCOL_ERROR; the others are answered."""
        events = logEvents(self)
        memory = H2Memory(h2Site())
        client = memory.client
        data = client.preface() + client.request(1)
        offers = [(b"upgrade", b"h2c"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade")]
        hopByHop = [(b"keep-alive", b"timeout=5"), (b"transfer-encoding", b"chunked")]
        bad = [*offers, *hopByHop, (b"proxy-connection", b"keep-alive"), (b"te", b"gzip")]
        for i, header in enumerate(bad):
            data += client.request(3 + 2 * i, b"/echo", extra=[header])
        data += client.request(99, b"/dyn")
        memory.send(data)
        self.assertEqual(client.answers[1].status, b"200")
        self.assertEqual(client.answers[99].body, b"GET /dyn 0\n")
        for i in range(len(bad)):
            self.assertEqual(client.answers[3 + 2 * i].reset, PROTOCOL_ERROR, bad[i])
            self.assertIsNone(client.answers[3 + 2 * i].status)
        self.assertIsNone(client.goaway)
        logged = [e for e in events if "malformed HTTP/2" in str(e.get("log_format"))]
        self.assertEqual(len(logged), 1)

    def test_upgradeNeverNegotiated(self) -> None:
        """Upgrade: echo over HTTP/2 never reaches the echo protocol, even after h2c."""
        memory = upgraded()
        memory.send(memory.client.request(3, extra=[(b"upgrade", b"echo"), (b"connection", b"upgrade")]))
        self.assertEqual(memory.client.answers[3].reset, PROTOCOL_ERROR)
        self.assertNotIn(b"HTTP/1.1 101", splitSwitch(memory.connection.received))

    def test_foreignHost(self) -> None:
        """A host the site does not serve (DNS rebinding) gets 400, as in HTTP/1.1; others go on."""
        memory = H2Memory(h2Site())
        client = memory.client
        memory.send(client.preface() + client.request(1, authority=b"evil.example") + client.request(3))
        self.assertEqual(client.answers[1].status, b"400")
        self.assertEqual(client.answers[3].body, PAGE)
        memory = H2Memory(h2Site(allowedHosts=None))
        memory.send(memory.client.preface() + memory.client.request(1, authority=b"evil.example"))
        self.assertEqual(memory.client.answers[1].body, PAGE)

    def test_426WithoutUpgrade(self) -> None:
        """A path that answers 426 under HTTP/1.1 answers HTTP/2 without Upgrade/Connection."""
        connection = MemoryConnection(h2Site())
        connection.send(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.assertIn(b"Upgrade: websocket", connection.received)
        memory = H2Memory(h2Site())
        memory.send(memory.client.preface() + memory.client.request(1, b"/ws"))
        answer = memory.client.answers[1]
        self.assertEqual(answer.status, b"426")
        names = {name for name, _ in answer.headers}
        self.assertFalse(names & {b"upgrade", b"connection"}, names)
        self.assertIn(b"sec-websocket-version", names)


class BadInputTests(SynchronousTestCase):
    """Bad HTTP/2 input: the right error code, logged, nothing else disturbed."""

    def test_garbageAfter101(self) -> None:
        """Garbage instead of the preface after the 101: closed (RFC 9113 §3.4), logged, no answer."""
        events = logEvents(self)
        for chunkSize in (None, 1):
            memory = H2Memory(h2Site(), upgrade=True, chunkSize=chunkSize)
            memory.send(h2cRequest(memory.client.settingsHeader) + b"GET / HTTP/1.1\r\n\r\n" + b"x" * 40)
            self.assertTrue(memory.connection.serverTransport.disconnected)
            self.assertNotIn(1, memory.client.answers)
        logged = [e for e in events if "protocol error" in str(e.get("log_format"))]
        self.assertEqual(len(logged), 2)

    def test_dataOnStream1(self) -> None:
        """DATA on stream 1 (half-closed remote) after the upgrade: RST_STREAM STREAM_CLOSED."""
        memory = upgraded(b"/later")
        client = memory.client
        # The client side of stream 1 is closed in h2; forge the frame.
        frame = struct.pack("!L", 3)[1:] + b"\x00\x01" + struct.pack("!L", 1) + b"abc"
        memory.send(frame + client.request(3, b"/dyn"))
        self.assertEqual(client.answers[1].reset, STREAM_CLOSED)
        self.assertEqual(client.answers[3].body, b"GET /dyn 0\n")
        self.assertIsNone(client.goaway)

    def test_invalidSettingsFrame(self) -> None:
        """A SETTINGS frame with an invalid value: GOAWAY PROTOCOL_ERROR."""
        memory = H2Memory(h2Site())
        bad = struct.pack("!L", 6)[1:] + b"\x04\x00" + struct.pack("!L", 0) + struct.pack("!HL", 2, 7)
        memory.send(PREFACE + bad)
        self.assertEqual(memory.client.goaway.error_code, PROTOCOL_ERROR)

    def test_headerBlockOverLimit(self) -> None:
        """A header list over 64 KiB: the connection ends with a GOAWAY; no answer."""
        memory = H2Memory(h2Site())
        client = memory.client
        client.conn.max_outbound_frame_size = 1 << 14
        extra = [(b"x-big-%d" % i, b"v" * 4000) for i in range(20)]
        memory.send(client.preface() + client.request(1, extra=extra))
        self.assertIsNotNone(client.goaway)
        self.assertNotIn(1, {k for k, a in client.answers.items() if a.status})

    def test_tooManyStreams(self) -> None:
        """Streams past SETTINGS_MAX_CONCURRENT_STREAMS are refused; the open ones are served."""
        clock = Clock()
        memory = H2Memory(h2Site(clock))
        client = memory.client
        client.conn.remote_settings.max_concurrent_streams = 1000
        data = client.preface()
        streams = [1 + 2 * i for i in range(101)]
        for streamID in streams:
            data += client.request(streamID, b"/later")
        memory.send(data)
        clock.advance(1)
        memory.pump()
        served = [s for s in streams if client.answers.get(s) and client.answers[s].body == b"later\n"]
        refused = [s for s in streams if client.answers.get(s) and client.answers[s].reset is not None]
        self.assertEqual(len(served), 100)
        self.assertEqual(refused, [201])
        self.assertEqual(client.answers[201].reset, REFUSED_STREAM)

    def test_rapidReset(self) -> None:
        """Open-and-cancel in a loop: GOAWAY ENHANCE_YOUR_CALM, logged once, bounded."""
        events = logEvents(self)
        clock = Clock()
        site = h2Site(clock)
        served = []
        original = site.requestFactory

        def counting(*args: object, **kwargs: object) -> object:
            served.append(1)
            return original(*args, **kwargs)

        site.requestFactory = counting  # type: ignore[assignment]
        memory = H2Memory(site)
        client = memory.client
        memory.send(client.preface())
        for i in range(3000):
            streamID = 1 + 2 * i
            data = client.request(streamID, b"/later")
            client.conn.reset_stream(streamID)
            memory.send(data + client.conn.data_to_send())
            if client.goaway is not None:
                break
        self.assertEqual(client.goaway.error_code, ENHANCE_YOUR_CALM)
        self.assertLessEqual(len(served), 1001)
        self.assertTrue(memory.connection.serverTransport.disconnected)
        logged = [e for e in events if "Rapid Reset" in str(e.get("log_format"))]
        self.assertEqual(len(logged), 1)
        clock.advance(1)
        self.assertEqual(clock.getDelayedCalls(), [])


class SwitchHeadTests(SynchronousTestCase):
    """The 101 is exactly what R7 asks."""

    def test_head(self) -> None:
        """C{Upgrade: h2c} and C{Connection: Upgrade}, then HTTP/2 frames."""
        memory = H2Memory(h2Site(), upgrade=True)
        memory.send(h2cRequest(memory.client.settingsHeader))
        self.assertTrue(memory.connection.received.startswith(SWITCHING))
        # The server's SETTINGS frame follows at once (type 4 on stream 0).
        self.assertEqual(memory.connection.received[len(SWITCHING) + 3 : len(SWITCHING) + 4], b"\x04")


class SwitchOffTests(SynchronousTestCase):
    """C{twistd txupgrade --disable h2c} and C{--no-prior-knowledge}."""

    def site(self, *argv: str) -> Any:
        from txupgrade.tap import Options, makeSite

        options = Options()
        options.parseOptions(list(argv))
        return makeSite(options.settings, options.protocols)

    def test_default(self) -> None:
        """By default h2c is offered, prior knowledge is on, the demo page lists h2c."""
        site = self.site()
        self.assertIn("h2c", site.protocols.names())
        self.assertTrue(site.priorKnowledge)
        connection = MemoryConnection(site)
        connection.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.assertRegex(connection.received, rb"Protocols offered on every path: <b>[^<]*h2c")
        # The site runs on the global reactor: close, so no idle timer outlives the test.
        connection.close()

    def test_disable(self) -> None:
        """C{--disable h2c}: not offered, an h2c request answered in HTTP/1.1; prior knowledge stays."""
        site = self.site("--disable", "h2c")
        self.assertNotIn("h2c", site.protocols.names())
        self.assertTrue(site.priorKnowledge)
        connection = MemoryConnection(site)
        connection.send(h2cRequest(H2Client(True).settingsHeader, b"/echo"))
        self.assertTrue(connection.received.startswith(b"HTTP/1.1 200 OK"))
        connection.close()

    def test_noPriorKnowledge(self) -> None:
        """C{--no-prior-knowledge} turns prior knowledge off."""
        self.assertFalse(self.site("--no-prior-knowledge").priorKnowledge)

    def test_unknown(self) -> None:
        """Disabling a protocol nobody provides is an error (one line, exit 1)."""
        with self.assertRaises(SystemExit):
            self.site("--disable", "nope")


class DrainTests(SynchronousTestCase):
    """C{IDrainable}: a graceful close in two C{GOAWAY} steps (RFC 9113 §6.8)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.memory = H2Memory(h2Site(self.clock))
        self.client = self.memory.client
        self.connection = self.memory.connection
        self.seen = 0

    @property
    def server(self) -> Any:
        """The protocol on the connection: HTTP/2 once the preface is in."""
        return currentProtocol(self.connection.server)

    def fresh(self) -> list[Any]:
        """The frames the server sent since the last call."""
        received = self.connection.received
        frames, self.seen = decodeFrames(received[self.seen :]), len(received)
        return frames

    def only(self, frames: list[Any], kind: type) -> Any:
        """The one frame of C{kind} among C{frames}."""
        found = [f for f in frames if isinstance(f, kind)]
        self.assertEqual(len(found), 1, frames)
        return found[0]

    def test_provides(self) -> None:
        """The HTTP/2 connection provides IDrainable."""
        self.memory.send(self.client.preface())
        self.assertTrue(verifyObject(IDrainable, self.server))

    def test_inFlightFinishLaterRefused(self) -> None:
        """Streams up to the final GOAWAY are answered, later ones refused, then the connection closes."""
        self.memory.send(self.client.preface() + self.client.request(1, b"/later"))
        self.fresh()
        self.server.drain()
        self.connection.flush()
        frames = self.fresh()
        first = self.only(frames, GoAwayFrame)
        self.assertEqual((first.last_stream_id, first.error_code), (2**31 - 1, 0))
        ping = self.only(frames, PingFrame)
        self.assertNotIn("ACK", ping.flags)
        # Opened before the client read the GOAWAY: still served.
        self.connection.send(self.client.request(3, b"/dyn"))
        # The PING is back: the final GOAWAY names stream 3.
        self.connection.send(pingAck(ping.opaque_data))
        final = self.only(self.fresh(), GoAwayFrame)
        self.assertEqual((final.last_stream_id, final.error_code), (3, 0))
        self.connection.send(self.client.request(5))
        reset = self.only(self.fresh(), RstStreamFrame)
        self.assertEqual((reset.stream_id, reset.error_code), (5, REFUSED_STREAM))
        self.clock.advance(0)
        self.assertFalse(self.connection.serverTransport.disconnecting)
        self.clock.advance(1)
        self.clock.advance(0)
        self.connection.flush()
        data = b"".join(f.data for f in self.fresh() if isinstance(f, DataFrame) and f.stream_id == 1)
        self.assertEqual(data, b"later\n")
        self.assertTrue(self.connection.serverTransport.disconnected)
        received = decodeFrames(self.connection.received)
        ends = {f.stream_id for f in received if isinstance(f, DataFrame) and "END_STREAM" in f.flags}
        self.assertEqual(ends, {1, 3})

    def test_idleClosesAfterPing(self) -> None:
        """An idle connection gets both GOAWAYs and is closed once the PING returns, not before."""
        self.memory.send(self.client.preface() + self.client.request(1))
        self.fresh()
        self.server.drain()
        self.server.drain()
        self.connection.flush()
        frames = self.fresh()
        self.assertEqual(len([f for f in frames if isinstance(f, GoAwayFrame)]), 1, frames)
        ping = self.only(frames, PingFrame)
        self.clock.advance(0)
        self.assertFalse(self.connection.serverTransport.disconnecting)
        self.connection.send(pingAck(ping.opaque_data))
        final = self.only(self.fresh(), GoAwayFrame)
        self.assertEqual(final.last_stream_id, 1)
        self.clock.advance(0)
        self.connection.flush()
        self.assertTrue(self.connection.serverTransport.disconnected)
