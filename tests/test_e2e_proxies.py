"""
End-to-end tests through real reverse proxies: nginx and HAProxy, run from
their Debian binaries on a loopback port, in front of a txupgrade site.

The site is the demo's (L{demoRoot}: C{/echo} in plain HTTP, a WebSocket echo
at C{/ws}) with the C{echo} protocol on every path, listening on 127.0.0.1 in
the test's reactor. The WebSocket echo at C{/ws} is a recording one (same
echo, but it also keeps what autobahn saw), so that the server's side of each
connection can be checked too.

Each test is bounded (C{timeout}); the cleanups stop the proxy first (it may
hold idle connections to the site), then the site, whose cleanup fails the
test if a connection it accepted stays open.

Not tested: HAProxy's C{send-proxy} (the PROXY protocol), which txupgrade
does not support yet.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as wsConnect

from tests.support.http import parseHead, parseResponses, request, upgrade
from tests.support.net import TrackingSite, connectClient, inThread, listen, wait
from tests.support.proxies import startProxy
from tests.support.websocket import BlockingClient, RecordingServerFactory, echoAndClose, handshake
from txupgrade.daemon.demo import demoRoot
from txupgrade.protocols.echo import EchoUpgrade
from txupgrade.protocols.websocket import WebSocketEndpoint
from txupgrade.registry import ProtocolRegistry

#: Socket timeout of the blocking clients.
CLIENT_TIMEOUT = 5.0

#: What L{txupgrade.protocols.echo.EchoResource} answers to C{GET /echo}.
ECHO_GET_BODY = b"echo: POST a body and get it back, or Upgrade: echo\n"

#: The size of the binary WebSocket message.
BINARY_SIZE = 256 * 1024


def _webSocketEcho(url: str) -> dict[str, Any]:
    """
    With the C{websockets} client: open C{url}, echo a text and a 256 KiB
    binary message, close with 1000. Return what was seen.
    """
    text = "hello through the proxy \N{SNOWMAN}"
    blob = os.urandom(BINARY_SIZE)
    conn = wsConnect(url, open_timeout=CLIENT_TIMEOUT, close_timeout=CLIENT_TIMEOUT, max_size=4 * BINARY_SIZE)
    status, textBack, blobBack, received = echoAndClose(conn, text, blob, CLIENT_TIMEOUT)
    return {
        "status": status,
        "textOk": textBack == text,
        "textBack": textBack if textBack != text else None,
        "blobType": type(blobBack).__name__,
        "blobOk": blobBack == blob,
        "blobLength": len(blobBack),
        "closeReceived": None if received is None else (received.code, received.reason),
    }


def _refusedHandshake(url: str) -> tuple[int, dict[str, str], bytes]:
    """Open C{url} with C{websockets}, expecting an HTTP refusal; return it."""
    try:
        with wsConnect(url, open_timeout=CLIENT_TIMEOUT, close_timeout=CLIENT_TIMEOUT):
            pass
    except InvalidStatus as refused:
        response = refused.response
        headers = {name.lower(): value for name, value in response.headers.raw_items()}
        return response.status_code, headers, bytes(response.body)
    raise AssertionError("the handshake succeeded")


class _ProxyTests:
    """The scenarios every proxy runs; mixed into a L{TestCase} per proxy."""

    #: C{"nginx"} or C{"haproxy"}, as L{startProxy} knows them.
    kind = ""

    #: The bound of each test, in seconds.
    timeout = 30

    factory: RecordingServerFactory
    site: TrackingSite
    backendPort: int
    proxyPort: int

    @inlineCallbacks
    def serve(self) -> Any:
        """
        Serve the site on 127.0.0.1 and start the proxy in front of it; set
        L{factory}, L{site}, L{backendPort} and L{proxyPort}.
        """
        test: Any = self
        protocols = ProtocolRegistry([EchoUpgrade()])
        root = demoRoot(protocols)
        self.factory = RecordingServerFactory()
        root.putChild(b"ws", WebSocketEndpoint(self.factory))
        self.site = TrackingSite(root, protocols)
        # First, so that its cleanup runs after the proxy's.
        self.backendPort = listen(test, self.site)
        self.proxyPort = yield startProxy(test, self.kind, self.backendPort)

    @inlineCallbacks
    def test_plainGet(self) -> Any:
        """A plain C{GET /echo} through the proxy gets the site's C{200} and body."""
        test: Any = self
        yield self.serve()
        client = yield connectClient(test, self.proxyPort)
        client.send(request(target=b"/echo", headers=[(b"Connection", b"close")]))
        data = yield client.waitForClose()
        responses, _ = parseResponses(data)
        test.assertEqual(len(responses), 1, data)
        test.assertEqual(responses[0].code, 200, data)
        test.assertEqual(responses[0].body, ECHO_GET_BODY)
        test.assertEqual(responses[0].header(b"content-type"), [b"text/plain; charset=utf-8"])
        test.assertEqual(len(self.site.connections), 1, "one connection reached the site")

    @inlineCallbacks
    def test_webSocketEcho(self) -> Any:
        """
        The C{websockets} client through the proxy at C{/ws}: a text and a
        256 KiB binary message come back, then a clean close with 1000.
        """
        test: Any = self
        yield self.serve()
        seen = yield inThread(_webSocketEcho, f"ws://127.0.0.1:{self.proxyPort}/ws")
        test.assertEqual(
            seen,
            {
                "status": 101,
                "textOk": True,
                "textBack": None,
                "blobType": "bytes",
                "blobOk": True,
                "blobLength": BINARY_SIZE,
                # autobahn answers a close with its code only, by default.
                "closeReceived": (1000, ""),
            },
        )
        test.assertEqual(len(self.factory.connections), 1)
        server = self.factory.connections[0]
        yield wait(lambda: server.lost.called)
        test.assertEqual(server.closeInfo, (True, 1000, "done"))
        # The proxy passed the close on: the site's connection is closed too.
        yield wait(self.site.allClosed)

    @inlineCallbacks
    def test_echoUpgrade(self) -> Any:
        """
        C{Upgrade: echo} through the proxy: a C{101} switching to C{echo}, then
        every byte comes back, in order.
        """
        test: Any = self
        yield self.serve()
        client = yield connectClient(test, self.proxyPort)
        client.send(upgrade(b"echo", target=b"/"))
        data = yield client.waitFor(lambda data: parseHead(data) is not None)
        parsed = parseHead(data)
        assert parsed is not None
        head, after = parsed
        test.assertEqual((head.version, head.code), (b"1.1", 101), data)
        test.assertEqual(head.header(b"upgrade"), [b"echo"], data)
        test.assertEqual([v.lower() for v in head.header(b"connection")], [b"upgrade"], data)
        test.assertEqual(after, b"", "nothing follows the 101 before the client speaks")
        headLength = len(data) - len(after)

        sent = b"hello, echo\r\n"
        client.send(sent)
        yield client.waitForBytes(headLength + len(sent))
        test.assertEqual(client.data[headLength:], sent)

        bulk = os.urandom(64 * 1024)
        client.send(bulk)
        expected = sent + bulk
        yield client.waitForBytes(headLength + len(expected))
        test.assertEqual(client.data[headLength:], expected)

        assert client.transport is not None
        client.transport.loseConnection()
        yield client.waitForClose()
        # The proxy closed its connection to the site too.
        yield wait(self.site.allClosed)
        test.assertEqual(len(self.site.connections), 1)


class NginxTests(_ProxyTests, TestCase):
    """Through nginx, configured as its documentation says for WebSocket."""

    kind = "nginx"

    @inlineCallbacks
    def test_forgottenUpgradeHeaders(self) -> Any:
        """
        Behind a C{location} without C{proxy_set_header Upgrade}/C{Connection}
        (C{/plain/}, proxied to C{/}), nginx drops the hop-by-hop C{Upgrade}:
        the WebSocket handshake reaches the site as a plain C{GET /ws}, which
        gets C{426 Upgrade Required} with C{Upgrade: websocket}. That is what
        an operator who forgot the headers sees.
        """
        yield self.serve()
        status, headers, body = yield inThread(_refusedHandshake, f"ws://127.0.0.1:{self.proxyPort}/plain/ws")
        self.assertEqual(status, 426, (headers, body))
        self.assertEqual(headers.get("upgrade"), "websocket", headers)
        self.assertEqual(headers.get("sec-websocket-version"), "13", headers)
        # The site answered (autobahn never saw a handshake), and its
        # connection did not switch protocols.
        self.assertEqual(self.factory.connections, [])
        self.assertEqual(len(self.site.connections), 1)

    @inlineCallbacks
    def test_forgottenUpgradeHeadersRaw(self) -> Any:
        """
        The same with a raw handshake: the C{426} head names C{websocket}, and the
        very same handshake at C{/ws} (headers set) gets the C{101}.
        """
        yield self.serve()
        # The sample key of RFC 6455 §1.3, and its accept value.
        key = b"dGhlIHNhbXBsZSBub25jZQ=="

        def exchange(target: bytes) -> tuple[int, dict[bytes, list[bytes]]]:
            client = BlockingClient(self.proxyPort, timeout=CLIENT_TIMEOUT)
            try:
                client.send(handshake(self.proxyPort, target, key=key))
                return client.readHead()
            finally:
                client.close()

        status, headers = yield inThread(exchange, b"/plain/ws")
        self.assertEqual(status, 426, headers)
        self.assertEqual(headers.get(b"upgrade"), [b"websocket"], headers)
        status, headers = yield inThread(exchange, b"/ws")
        self.assertEqual(status, 101, headers)
        self.assertEqual(headers.get(b"sec-websocket-accept"), [b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="], headers)


class HAProxyTests(_ProxyTests, TestCase):
    """Through HAProxy in C{mode http}, which passes any C{Upgrade} on."""

    kind = "haproxy"
