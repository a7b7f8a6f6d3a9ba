"""
HTTP/2 with real clients over real sockets on 127.0.0.1: curl and nghttp
(Debian packages), h2load, and an h2-library client over TCP and TLS.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from h2.errors import ErrorCodes
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.support.http import parseResponses
from tests.support.http2 import PAGE, H2Client, h2cRequest, h2Site
from tests.support.net import TLSPair, connectClient, listen, reactor, withTimeout
from tests.support.processes import binaryOrSkip, runProcess

#: Every client run is bounded by this many seconds.
CLIENT_TIMEOUT = 30
BODY = os.urandom(1 << 20)
#: The Debian package of each client.
_PACKAGES = {"curl": "curl", "nghttp": "nghttp2-client", "h2load": "nghttp2-client"}


def run(executable: str, *args: str) -> Any:
    """Run a client (killed after L{CLIENT_TIMEOUT} s); fires with (stdout, stderr, exit code)."""
    path = binaryOrSkip(f"/usr/bin/{executable}", _PACKAGES[executable])
    return runProcess(path, list(args), tempfile.gettempdir(), CLIENT_TIMEOUT)


class ClientTestCase(TestCase):
    """Serve L{h2Site} on a free port with the real reactor."""

    def setUp(self) -> None:
        self.site = h2Site(reactor)
        self.base = f"http://127.0.0.1:{listen(self, self.site)}"

    def tempFile(self, data: bytes) -> str:
        """A file holding C{data}, removed at cleanup."""
        fd, path = tempfile.mkstemp()
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        self.addCleanup(os.remove, path)
        return path


class CurlTests(ClientTestCase):
    """curl 7.88: C{--http2} upgrades on http:// URLs; C{--http2-prior-knowledge}."""

    @inlineCallbacks
    def test_get(self) -> Any:
        """GET: curl reports the 101 and HTTP/2; the body is the HTTP/1.1 body."""
        out, err, code = yield run("curl", "-sv", "--http2", "-w", "\n%{http_version}", self.base + "/")
        self.assertEqual(code, 0, err)
        self.assertIn(b"< HTTP/1.1 101 Switching Protocols", err)
        self.assertEqual(out, PAGE + b"\n2")
        plain, _, _ = yield run("curl", "-s", "--http1.1", self.base + "/")
        self.assertEqual(plain, PAGE)

    @inlineCallbacks
    def test_head(self) -> Any:
        """HEAD: HTTP/2 headers with the page's length, no body."""
        out, err, code = yield run("curl", "-sI", "--http2", self.base + "/")
        self.assertEqual(code, 0, err)
        self.assertIn(b"HTTP/2 200", out)
        self.assertIn(b"content-length: %d" % len(PAGE), out)

    @inlineCallbacks
    def test_post1MiB(self) -> Any:
        """POST 1 MiB: 101, then the echoed body byte-identical to HTTP/1.1's."""
        path = self.tempFile(BODY)
        out, err, code = yield run(
            "curl",
            "-sv",
            "--http2",
            "--data-binary",
            "@" + path,
            "-w",
            "%{http_version}",
            self.base + "/echo",
        )
        self.assertEqual(code, 0, err[-500:])
        self.assertIn(b"< HTTP/1.1 101 Switching Protocols", err)
        self.assertEqual(out[-1:], b"2")
        self.assertEqual(out[:-1], BODY)
        plain, _, _ = yield run("curl", "-s", "--http1.1", "--data-binary", "@" + path, self.base + "/echo")
        self.assertEqual(plain, out[:-1])

    @inlineCallbacks
    def test_priorKnowledge(self) -> Any:
        """C{--http2-prior-knowledge}: static and dynamic paths over HTTP/2."""
        out, err, code = yield run(
            "curl", "-s", "--http2-prior-knowledge", "-w", "%{http_version}", self.base + "/"
        )
        self.assertEqual((code, out), (0, PAGE + b"2"), err)
        out, err, code = yield run("curl", "-s", "--http2-prior-knowledge", self.base + "/dyn?a=1")
        self.assertEqual((code, out), (0, b"GET /dyn?a=1 0\n"), err)

    @inlineCallbacks
    def test_426Path(self) -> Any:
        """The WebSocket-only path answers HTTP/2 with 426 and no Upgrade header."""
        out, err, code = yield run("curl", "-si", "--http2-prior-knowledge", self.base + "/ws")
        self.assertEqual(code, 0, err)
        self.assertTrue(out.startswith(b"HTTP/2 426"), out)
        self.assertNotIn(b"upgrade:", out.lower())


class NghttpTests(ClientTestCase):
    """nghttp (exits 0 even on failure: its output is read)."""

    @inlineCallbacks
    def test_upgradeGet(self) -> Any:
        """C{nghttp -u}: upgrade success, stream 1 answered 200 with the page."""
        out, err, _code = yield run("nghttp", "-uv", self.base + "/")
        self.assertIn(b"HTTP Upgrade success", out)
        self.assertNotIn(b"[ERROR]", out + err)
        self.assertIn(b"recv (stream_id=1) :status: 200", out)
        self.assertIn(PAGE, out)

    @inlineCallbacks
    def test_upgradeWithBody(self) -> Any:
        """C{nghttp -u -d}: OPTIONS * upgrades, the POST follows on a later stream."""
        body = b"0123456789abcdef" * 4096
        # Only in -v mode does nghttp show the upgrade; the body is interleaved there.
        out, err, _code = yield run("nghttp", "-uv", "-d", self.tempFile(body), self.base + "/echo")
        self.assertIn(b"HTTP Upgrade success", out)
        self.assertNotIn(b"[ERROR]", out + err)
        self.assertTrue(b"] HTTP Upgrade request\nOPTIONS * HTTP/1.1\r\n" in out, out[:300])
        self.assertIn(b"recv (stream_id=1) :status: 200", out)
        self.assertIn(b"recv (stream_id=13) :status: 200", out)
        self.assertIn(b"recv (stream_id=13) content-length: %d" % len(body), out)

    @inlineCallbacks
    def test_twentyStreams(self) -> Any:
        """Twenty concurrent streams on one connection, all answered."""
        out, err, _code = yield run("nghttp", "-nv", "-m", "20", self.base + "/dyn")
        self.assertNotIn(b"[ERROR]", out + err)
        self.assertEqual(out.count(b":status: 200"), 20)
        self.assertIn(b"SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100", out)


class H2loadTests(ClientTestCase):
    """h2load speaks HTTP/2 by prior knowledge."""

    @inlineCallbacks
    def test_load(self) -> Any:
        """400 requests over 2 connections, 10 streams each: all succeed."""
        out, err, code = yield run("h2load", "-n", "400", "-c", "2", "-m", "10", self.base + "/dyn")
        self.assertEqual(code, 0, err)
        self.assertIn(b"400 succeeded, 0 failed, 0 errored", out)


class _H2Protocol(Protocol):
    """Drive an L{H2Client} over a real connection."""

    def __init__(self, client: H2Client, first: bytes, wanted: set[int]) -> None:
        self.client = client
        self.first = first
        self.wanted = wanted
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.first)

    def dataReceived(self, data: bytes) -> None:
        reply = self.client.receive(data)
        if reply:
            assert self.transport is not None
            self.transport.write(reply)
        answers = self.client.answers
        if not self.done.called and all(
            s in answers and (answers[s].ended or answers[s].reset is not None) for s in self.wanted
        ):
            self.done.callback(None)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.done.called:
            self.done.errback(reason or Failure(ConnectionError("lost")))


FORBIDDEN = [
    (b"upgrade", b"websocket"),
    (b"connection", b"keep-alive"),
    (b"keep-alive", b"timeout=5"),
    (b"transfer-encoding", b"chunked"),
]


class ForbiddenHeadersTests(TestCase):
    """An h2-library client sending connection-specific fields over real sockets."""

    @inlineCallbacks
    def exchange(self, endpoint: Any) -> Any:
        """Send one good, the forbidden, then one good request; wait for all answers."""
        client = H2Client()
        data = client.preface() + client.request(1)
        for i, header in enumerate(FORBIDDEN):
            data += client.request(3 + 2 * i, b"/echo", extra=[header])
        data += client.request(99, b"/dyn")
        protocol = _H2Protocol(client, data, {1, 3, 5, 7, 9, 99})
        yield withTimeout(connectProtocol(endpoint, protocol))
        self.addCleanup(lambda: protocol.transport.abortConnection())  # type: ignore[union-attr]
        yield withTimeout(protocol.done)
        return client

    def check(self, client: H2Client) -> None:
        self.assertEqual(client.answers[1].body, PAGE)
        self.assertEqual(client.answers[99].body, b"GET /dyn 0\n")
        for i, header in enumerate(FORBIDDEN):
            self.assertEqual(client.answers[3 + 2 * i].reset, ErrorCodes.PROTOCOL_ERROR, header)
        self.assertIsNone(client.goaway)

    @inlineCallbacks
    def test_priorKnowledge(self) -> Any:
        """Cleartext prior knowledge: the forbidden streams reset, the rest answered."""
        port = listen(self, h2Site(reactor))
        client = yield self.exchange(TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        self.check(client)

    @inlineCallbacks
    def test_tlsALPN(self) -> Any:
        """TLS with ALPN h2: the same, served by the same site."""
        pair = TLSPair()
        port = listen(self, h2Site(reactor), pair.serverOptions([b"h2", b"http/1.1"]))
        client = yield self.exchange(pair.clientEndpoint(port, [b"h2"]))
        self.check(client)

    @inlineCallbacks
    def test_noH2cOnTLS(self) -> Any:
        """Upgrade: h2c over TLS (ALPN http/1.1) is answered in HTTP/1.1, no 101."""
        pair = TLSPair()
        port = listen(self, h2Site(reactor), pair.serverOptions([b"h2", b"http/1.1"]))
        raw = yield connectClient(self, port, pair.clientEndpoint(port, [b"http/1.1"]))
        raw.send(h2cRequest(H2Client(True).settingsHeader))
        got = yield raw.waitFor(lambda data: PAGE in data)
        responses, _ = parseResponses(got)
        self.assertEqual([(r.status, r.body) for r in responses], [(b"HTTP/1.1 200 OK", PAGE)], got[:100])
