"""
End-to-end tests of L{txupgrade.protocols.websocket} with real clients over real sockets.

A real L{UpgradeSite} listens on 127.0.0.1 with a L{WebSocketEndpoint} at
C{/ws}, backed by an autobahn factory that echoes and records what it sees.
The Python clients (C{websockets}, C{websocket-client}, and a raw RFC 6455
client on a plain socket) are blocking, so they run in a thread while the
reactor serves; every socket has a timeout and every wait is bounded.
"""

from __future__ import annotations

import os
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import trustme
import websocket as wsclient
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from autobahn.websocket.types import ConnectionDeny
from OpenSSL import SSL
from twisted.internet import interfaces
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as wsConnect
from zope.interface import implementer

from tests.support.net import RecordingProducer, inThread, listen, wait, withTimeout
from tests.support.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    BlockingClient,
    RecordingServerFactory,
    RecordingServerProtocol,
    closePayload,
    decodeAll,
    encodeFrame,
    handshake,
    webSocketSite,
)
from txupgrade.protocols.websocket import acceptKey

#: Socket timeout of the blocking clients (shorter than L{TIMEOUT}).
CLIENT_TIMEOUT = 5.0

ONE_MIB = 1 << 20


# The two client libraries behind one small interface, so that every
# scenario runs with both.


class _Session:
    """An open client connection, as the scenarios use it."""

    subprotocol: str | None
    extensions: list[str]
    localPort: int

    def send(self, message: str | bytes) -> None:
        raise NotImplementedError()

    def recv(self) -> str | bytes:
        raise NotImplementedError()

    def ping(self, payload: bytes) -> bytes:
        """Send a ping; return the payload of the pong that answers it."""
        raise NotImplementedError()

    def closeWith(self, code: int, reason: str) -> tuple[int | None, str]:
        """Close with C{code} and C{reason}; return the server's close frame."""
        raise NotImplementedError()

    def serverClose(self) -> tuple[int | None, str]:
        """Wait for the server to close; return its close frame."""
        raise NotImplementedError()


class _WebsocketsSession(_Session):
    """The C{websockets} (sync) client."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.subprotocol = conn.subprotocol
        self.extensions = [ext.name for ext in conn.protocol.extensions]
        self.localPort = conn.local_address[1]

    def send(self, message: str | bytes) -> None:
        self.conn.send(message)

    def recv(self) -> str | bytes:
        return self.conn.recv(timeout=CLIENT_TIMEOUT)

    def ping(self, payload: bytes) -> bytes:
        if not self.conn.ping(payload).wait(CLIENT_TIMEOUT):
            raise AssertionError("no pong")
        return payload

    def closeWith(self, code: int, reason: str) -> tuple[int | None, str]:
        self.conn.close(code, reason)
        rcvd = self.conn.protocol.close_rcvd
        return (None, "") if rcvd is None else (rcvd.code, rcvd.reason)

    def serverClose(self) -> tuple[int | None, str]:
        try:
            message = self.conn.recv(timeout=CLIENT_TIMEOUT)
        except ConnectionClosed as closed:
            rcvd = closed.rcvd
            return (None, "") if rcvd is None else (rcvd.code, rcvd.reason)
        raise AssertionError(f"a message instead of a close: {message!r}")


class _WebSocketClientSession(_Session):
    """The C{websocket-client} client."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.subprotocol = conn.getsubprotocol()
        header = (conn.getheaders() or {}).get("sec-websocket-extensions", "")
        self.extensions = [e.split(";")[0].strip() for e in header.split(",") if e.strip()]
        self.localPort = conn.sock.getsockname()[1]

    def send(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.conn.send_binary(message)
        else:
            self.conn.send(message)

    def recv(self) -> str | bytes:
        return self.conn.recv()

    def ping(self, payload: bytes) -> bytes:
        self.conn.ping(payload)
        opcode, frame = self.conn.recv_data_frame(True)
        if opcode != wsclient.ABNF.OPCODE_PONG:
            raise AssertionError(f"opcode {opcode} instead of a pong")
        return bytes(frame.data)

    def _closeFrame(self) -> tuple[int | None, str]:
        frame = self.conn.recv_frame()
        if frame.opcode != wsclient.ABNF.OPCODE_CLOSE:
            raise AssertionError(f"opcode {frame.opcode} instead of a close")
        return closePayload(bytes(frame.data))

    def closeWith(self, code: int, reason: str) -> tuple[int | None, str]:
        self.conn.send_close(code, reason.encode("utf-8"))
        try:
            answer = self._closeFrame()
            # As RFC 6455 §7.1.1 asks, wait for the server to close TCP first.
            sock = self.conn.sock
            sock.settimeout(CLIENT_TIMEOUT)
            try:
                while sock.recv(4096):
                    pass
            except (ssl.SSLError, ConnectionError):
                pass
            return answer
        finally:
            self.conn.shutdown()

    def serverClose(self) -> tuple[int | None, str]:
        try:
            code, reason = self._closeFrame()
            self.conn.send_close(wsclient.STATUS_NORMAL if code is None else code)
            return code, reason
        finally:
            self.conn.shutdown()

    def shutdown(self) -> None:
        self.conn.shutdown()


@dataclass(frozen=True)
class _Options:
    """What a scenario may ask of the handshake, whichever the client library."""

    subprotocols: list[str] | None = None
    headers: dict[str, str] | None = None
    origin: str | None = None
    sslContext: ssl.SSLContext | None = None
    compress: bool = False


class _Client:
    """How to open a session with one client library."""

    name = ""
    #: What the library raises for an HTTP error instead of a C{101}.
    refusal: type[Exception] = Exception

    def connect(self, url: str, **options: Any) -> AbstractContextManager[_Session]:
        """A session with C{url}, opened with L{_Options}C{(**options)}."""
        return self.open(url, _Options(**options))

    def open(self, url: str, options: _Options) -> AbstractContextManager[_Session]:
        raise NotImplementedError()

    def status(self, refused: Any) -> int:
        """The HTTP status of a L{refusal}."""
        raise NotImplementedError()

    def refusedStatus(self, url: str, **options: Any) -> int:
        """Open C{url}, expecting an HTTP error; return its status."""
        try:
            with self.connect(url, **options):
                pass
        except self.refusal as refused:
            return self.status(refused)
        raise AssertionError("the handshake succeeded")


class _WebsocketsClient(_Client):
    name = "websockets"
    refusal = InvalidStatus

    @contextmanager
    def open(self, url: str, options: _Options) -> Iterator[_Session]:
        with wsConnect(
            url,
            additional_headers=options.headers,
            compression="deflate" if options.compress else None,
            open_timeout=CLIENT_TIMEOUT,
            close_timeout=CLIENT_TIMEOUT,
            max_size=4 * ONE_MIB,
            subprotocols=options.subprotocols,
            origin=options.origin,
            ssl=options.sslContext,
        ) as conn:
            yield _WebsocketsSession(conn)

    def status(self, refused: Any) -> int:
        return refused.response.status_code


class _WebSocketClientClient(_Client):
    name = "websocket-client"
    refusal = wsclient.WebSocketBadStatusException

    @contextmanager
    def open(self, url: str, options: _Options) -> Iterator[_Session]:
        if options.compress:
            raise AssertionError("websocket-client does not implement permessage-deflate")
        conn = wsclient.create_connection(
            url,
            timeout=CLIENT_TIMEOUT,
            subprotocols=options.subprotocols,
            header=[f"{k}: {v}" for k, v in (options.headers or {}).items()],
            origin=options.origin,
            sslopt={"context": options.sslContext} if options.sslContext is not None else None,
            enable_multithread=False,
        )
        session = _WebSocketClientSession(conn)
        try:
            yield session
        finally:
            session.shutdown()

    def status(self, refused: Any) -> int:
        return refused.status_code


@implementer(interfaces.IOpenSSLContextFactory)
class _ServerContextFactory:
    """A TLS server context with a trustme certificate, for C{listenSSL}."""

    def __init__(self, cert: trustme.LeafCert) -> None:
        self.context = SSL.Context(SSL.TLS_SERVER_METHOD)
        cert.configure_cert(self.context)

    def getContext(self) -> SSL.Context:
        return self.context


def _tls() -> tuple[_ServerContextFactory, ssl.SSLContext]:
    """A server context factory with a trustme certificate for 127.0.0.1, and a client context."""
    ca = trustme.CA()
    serverContext = _ServerContextFactory(ca.issue_cert("127.0.0.1"))
    clientContext = ssl.create_default_context()
    ca.configure_trust(clientContext)
    return serverContext, clientContext


class _ClientScenarios:
    """
    The scenarios every client library runs against a real server.

    Mixed into a L{TestCase} with a C{client}.
    """

    client: _Client
    timeout = 60

    # Provided by TestCase.
    assertEqual: Callable[..., None]
    assertTrue: Callable[..., None]
    assertIn: Callable[..., None]
    assertIsNotNone: Callable[..., None]
    assertLess: Callable[..., None]

    def _serve(self, factory: RecordingServerFactory | None = None, **siteArgs: Any) -> tuple[str, Any]:
        factory = factory if factory is not None else RecordingServerFactory()
        site = webSocketSite(factory, **siteArgs)
        port = listen(self, site)
        return f"ws://127.0.0.1:{port}/ws", factory

    @inlineCallbacks
    def _echo(self, messages: list[str | bytes]) -> Any:
        url, factory = self._serve()

        def run() -> list[str | bytes]:
            with self.client.connect(url) as session:
                received = []
                for message in messages:
                    session.send(message)
                    received.append(session.recv())
                return received

        received = yield inThread(run)
        self.assertEqual(received, messages)
        self.assertEqual(len(factory.connections), 1)
        yield withTimeout(factory.connections[0].lost)

    def test_text(self) -> Any:
        """Text messages, including non-ASCII ones, come back as text."""
        return self._echo(["hello", "snow \u2603 man", ""])

    def test_binary(self) -> Any:
        """Binary messages come back byte for byte, as binary."""
        return self._echo([bytes(range(256)), b"\x00", b""])

    def test_oneMebibyte(self) -> Any:
        """A 1 MiB message comes back whole."""
        return self._echo([os.urandom(ONE_MIB)])

    @inlineCallbacks
    def test_ping(self) -> Any:
        """A client's ping is answered by a pong with the same payload."""
        url, _ = self._serve()

        def run() -> tuple[bytes, str | bytes]:
            with self.client.connect(url) as session:
                pong = session.ping(b"are you there")
                session.send("after the ping")
                return pong, session.recv()

        pong, echoed = yield inThread(run)
        self.assertEqual((pong, echoed), (b"are you there", "after the ping"))

    @inlineCallbacks
    def _clientCloses(self, code: int, reason: str, echo: bool, echoed: tuple[int, str]) -> Any:
        factory = RecordingServerFactory()
        factory.setProtocolOptions(echoCloseCodeReason=echo)
        url, _ = self._serve(factory)

        def run() -> tuple[int | None, str]:
            with self.client.connect(url) as session:
                session.send("x")
                session.recv()
                return session.closeWith(code, reason)

        answer = yield inThread(run)
        self.assertEqual(answer, echoed)
        proto = factory.connections[0]
        yield withTimeout(proto.lost)
        self.assertEqual(proto.closeInfo, (True, code, reason or None))

    def test_clientCloses1000(self) -> Any:
        """A client's close with 1000 is answered with 1000, and the close is clean."""
        return self._clientCloses(1000, "", False, (1000, ""))

    def test_clientCloses4000(self) -> Any:
        """
        A client's close with 4000 and a reason is echoed with both, when the
        factory sets autobahn's C{echoCloseCodeReason}.
        """
        return self._clientCloses(4000, "done here", True, (4000, "done here"))

    def test_clientCloses4000NoEcho(self) -> Any:
        """
        Without C{echoCloseCodeReason} (autobahn's default), a close with 4000
        is answered with 1000, as autobahn's own server does.
        """
        return self._clientCloses(4000, "done here", False, (1000, ""))

    @inlineCallbacks
    def test_serverCloses(self) -> Any:
        """The server's C{sendClose(code=4001, reason=...)} reaches the client."""
        url, factory = self._serve()

        def run() -> tuple[int | None, str]:
            with self.client.connect(url) as session:
                session.send("please close")
                return session.serverClose()

        closed = yield inThread(run)
        self.assertEqual(closed, (4001, "server says bye"))
        proto = factory.connections[0]
        yield withTimeout(proto.lost)
        assert proto.closeInfo is not None
        self.assertTrue(proto.closeInfo[0])
        self.assertEqual((proto.localCloseCode, proto.localCloseReason), (4001, b"server says bye"))

    @inlineCallbacks
    def test_subprotocol(self) -> Any:
        """C{onConnect} picks C{chat.v1} from the client's offer; the client sees it."""
        factory = RecordingServerFactory()
        factory.onConnectHook = lambda proto, request: "chat.v1"
        url, _ = self._serve(factory)

        def run() -> tuple[str | None, str | bytes]:
            with self.client.connect(url, subprotocols=["chat.v2", "chat.v1"]) as session:
                session.send("hi")
                return session.subprotocol, session.recv()

        chosen, echoed = yield inThread(run)
        self.assertEqual((chosen, echoed), ("chat.v1", "hi"))
        request = factory.connections[0].request
        assert request is not None
        self.assertEqual(request.protocols, ["chat.v2", "chat.v1"])

    @inlineCallbacks
    def test_connectionDeny(self) -> Any:
        """C{ConnectionDeny(403)} from C{onConnect} is an HTTP 403 for the client."""
        factory = RecordingServerFactory()

        def deny(proto: RecordingServerProtocol, request: Any) -> None:
            raise ConnectionDeny(403, "no")

        factory.onConnectHook = deny
        url, _ = self._serve(factory)
        status = yield inThread(self.client.refusedStatus, url)
        self.assertEqual(status, 403)
        self.assertEqual(len(factory.connections), 1)
        self.assertEqual(factory.countConnections, 0)

    @inlineCallbacks
    def test_onConnectSeesTheRequest(self) -> Any:
        """
        C{onConnect} sees the real peer, path, query, headers, origin,
        protocols and extensions.
        """
        factory = RecordingServerFactory()
        factory.onConnectHook = lambda proto, request: "p2"
        site = webSocketSite(factory)
        port = listen(self, site)
        url = f"ws://127.0.0.1:{port}/ws?room=5&x=1"
        origin = f"http://127.0.0.1:{port}"

        def run() -> int:
            with self.client.connect(
                url,
                subprotocols=["p1", "p2"],
                headers={"X-Test-Token": "t0k3n", "Sec-WebSocket-Extensions": "x-test-ext; level=3"},
                origin=origin,
            ) as session:
                session.send("x")
                session.recv()
                return session.localPort

        localPort = yield inThread(run)
        request = factory.connections[0].request
        assert request is not None
        self.assertEqual(request.peer, f"tcp4:127.0.0.1:{localPort}")
        self.assertEqual(request.host, "127.0.0.1")
        self.assertEqual(request.path, "/ws")
        self.assertEqual(request.params, {"room": ["5"], "x": ["1"]})
        self.assertEqual(request.headers["x-test-token"], "t0k3n")
        self.assertEqual(request.headers["host"], f"127.0.0.1:{port}")
        self.assertEqual(request.origin, origin)
        self.assertEqual(request.protocols, ["p1", "p2"])
        self.assertEqual(request.version, 13)
        self.assertEqual(request.extensions, [("x-test-ext", {"level": ["3"]})])
        self.assertEqual(factory.connections[0].peer, request.peer)

    @inlineCallbacks
    def test_wss(self) -> Any:
        """
        Over TLS (trustme), messages round-trip, and when the client closes
        the server's side of the connection closes promptly.
        """
        serverOptions, clientContext = _tls()
        factory = RecordingServerFactory()
        site = webSocketSite(factory)
        port = listen(self, site, serverOptions)
        url = f"wss://127.0.0.1:{port}/ws"

        messages: list[str | bytes] = ["over tls", os.urandom(100_000)]

        def run() -> tuple[list[str | bytes], tuple[int | None, str], float]:
            with self.client.connect(url, sslContext=clientContext) as session:
                received = []
                for message in messages:
                    session.send(message)
                    received.append(session.recv())
                started = time.monotonic()
                echoed = session.closeWith(1000, "")
                return received, echoed, time.monotonic() - started

        received, echoed, closeSeconds = yield inThread(run)
        self.assertEqual(received, messages)
        self.assertEqual(echoed, (1000, ""))
        # The client waits up to CLIENT_TIMEOUT for the server to close TCP.
        self.assertLess(closeSeconds, 2.0)
        proto = factory.connections[0]
        yield withTimeout(proto.lost, 2.0)
        self.assertEqual(proto.closeInfo, (True, 1000, None))
        self.assertTrue(proto.request is not None and proto.request.peer.startswith("tcp4:127.0.0.1:"))
        self.assertTrue(interfaces.ISSLTransport.providedBy(proto.transport))


class WebsocketsClientTests(_ClientScenarios, TestCase):
    """The scenarios with the C{websockets} client."""

    client = _WebsocketsClient()

    @inlineCallbacks
    def test_permessageDeflate(self) -> Any:
        """
        With a factory that accepts C{permessage-deflate}, the client
        negotiates it and compressed messages round-trip.
        """
        factory = RecordingServerFactory()

        def accept(offers: list[Any]) -> PerMessageDeflateOfferAccept | None:
            for offer in offers:
                if isinstance(offer, PerMessageDeflateOffer):
                    return PerMessageDeflateOfferAccept(offer)
            return None

        factory.setProtocolOptions(perMessageCompressionAccept=accept)
        url, _ = self._serve(factory)
        messages: list[str | bytes] = ["squeeze me " * 1000, b"\x00" * ONE_MIB, os.urandom(5000)]

        def run() -> tuple[list[str], list[str | bytes]]:
            with self.client.connect(url, compress=True) as session:
                received = []
                for message in messages:
                    session.send(message)
                    received.append(session.recv())
                return session.extensions, received

        extensions, received = yield inThread(run)
        self.assertIn("permessage-deflate", extensions)
        self.assertEqual(received, messages)
        proto = factory.connections[0]
        assert proto.request is not None
        self.assertEqual([name for name, _ in proto.request.extensions], ["permessage-deflate"])
        self.assertIsNotNone(proto._perMessageCompress)
        stats = proto.trafficStats
        self.assertTrue(stats.incomingOctetsWireLevel < stats.incomingOctetsAppLevel / 10, stats)

    @inlineCallbacks
    def test_permessageDeflateNotAccepted(self) -> Any:
        """A factory with no acceptor negotiates no extension; messages still round-trip."""
        url, factory = self._serve()

        def run() -> tuple[list[str], str | bytes]:
            with self.client.connect(url, compress=True) as session:
                session.send("plain")
                return session.extensions, session.recv()

        extensions, echoed = yield inThread(run)
        self.assertEqual((extensions, echoed), ([], "plain"))
        request = factory.connections[0].request
        assert request is not None
        self.assertEqual([name for name, _ in request.extensions], ["permessage-deflate"])


class WebSocketClientTests(_ClientScenarios, TestCase):
    """
    The scenarios with the C{websocket-client} client (which does not
    implement permessage-deflate, so it has no such test).
    """

    client = _WebSocketClientClient()

    @inlineCallbacks
    def test_defaultOrigin(self) -> Any:
        """The C{Origin} websocket-client sends by default is this server's, so it is accepted."""
        url, factory = self._serve()

        def run() -> str | bytes:
            with self.client.connect(url) as session:
                session.send("o")
                return session.recv()

        echoed = yield inThread(run)
        self.assertEqual(echoed, "o")
        request = factory.connections[0].request
        assert request is not None
        self.assertEqual(request.origin, url.replace("ws://", "http://").removesuffix("/ws"))


class RawSocketTests(TestCase):
    """Byte-exact tests with a raw RFC 6455 client on a plain socket."""

    timeout = 60

    def _serve(self, factory: RecordingServerFactory | None = None, **siteArgs: Any) -> tuple[int, Any]:
        factory = factory if factory is not None else RecordingServerFactory()
        site = webSocketSite(factory, **siteArgs)
        return listen(self, site), factory

    @inlineCallbacks
    def _switchesAndEchoes(
        self, port: int, text: bytes, extra: list[tuple[bytes, bytes]] | None = None
    ) -> Any:
        """A handshake (with C{extra} headers) and a text frame in one write: a C{101}, and the frame back."""

        def run() -> tuple[int, tuple[bool, int, bytes, bool]]:
            with BlockingClient(port) as client:
                client.send(handshake(port, extra=extra or []) + encodeFrame(OP_TEXT, text))
                status, _ = client.readHead()
                return status, client.readFrame()

        status, frame = yield inThread(run)
        self.assertEqual((status, frame), (101, (True, OP_TEXT, text, False)))

    @inlineCallbacks
    def _noByteLost(self, oneByteAtATime: bool) -> Any:
        port, factory = self._serve()
        key = b"dGhlIHNhbXBsZSBub25jZQ=="

        def run() -> tuple[int, dict[bytes, list[bytes]], list[tuple[bool, int, bytes, bool]]]:
            with BlockingClient(port) as client:
                client.send(
                    handshake(port, key=key)
                    + encodeFrame(OP_TEXT, b"first")
                    + encodeFrame(OP_BINARY, b"\x01\x02second"),
                    oneByteAtATime,
                )
                status, headers = client.readHead()
                frames = [client.readFrame(), client.readFrame()]
                client.send(encodeFrame(OP_CLOSE, struct.pack("!H", 1000)))
                frames.append(client.readFrame())
                client.readUntilClosed(CLIENT_TIMEOUT)
                return status, headers, frames

        status, headers, frames = yield inThread(run)
        self.assertEqual(status, 101)
        self.assertEqual(headers[b"sec-websocket-accept"], [b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="])
        self.assertEqual(headers[b"sec-websocket-accept"], [acceptKey(key)])
        self.assertEqual(headers[b"upgrade"], [b"websocket"])
        self.assertEqual(
            frames,
            [
                (True, OP_TEXT, b"first", False),
                (True, OP_BINARY, b"\x01\x02second", False),
                (True, OP_CLOSE, struct.pack("!H", 1000), False),
            ],
        )
        yield withTimeout(factory.connections[0].lost)

    def test_framesInTheHandshakeSegment(self) -> Any:
        """Frames sent in the same C{sendall} as the handshake are all echoed."""
        return self._noByteLost(False)

    def test_oneByteAtATime(self) -> Any:
        """The handshake and frames sent one byte per write are all echoed."""
        return self._noByteLost(True)

    @inlineCallbacks
    def test_registerProducer(self) -> Any:
        """After the switch, the protocol's C{registerProducer} works."""
        factory = RecordingServerFactory()
        producer = RecordingProducer()
        registered: list[Any] = []

        def onOpen(proto: RecordingServerProtocol) -> None:
            proto.registerProducer(producer, True)
            transport: Any = proto.transport
            registered.append(transport.producer)

        factory.onOpenHook = onOpen
        port, _ = self._serve(factory)
        yield self._switchesAndEchoes(port, b"produce")
        proto = factory.connections[0]
        self.assertIsNone(proto.openError)
        self.assertEqual(registered, [producer])
        yield withTimeout(proto.lost)
        self.assertIn("stop", producer.calls)
        self.assertEqual(self.flushLoggedErrors(), [])

    @inlineCallbacks
    def test_httpIdleTimeoutDoesNotApply(self) -> Any:
        """The site's HTTP idle timeout (0.5 s) does not close an idle WebSocket."""
        port, factory = self._serve(timeout=0.5)

        def run() -> tuple[int, tuple[bool, int, bytes, bool]]:
            with BlockingClient(port) as client:
                client.send(handshake(port))
                status, _ = client.readHead()
                time.sleep(1.5)
                client.send(encodeFrame(OP_TEXT, b"still here"))
                echoed = client.readFrame()
                client.send(encodeFrame(OP_CLOSE, struct.pack("!H", 1000)))
                client.readFrame()
                client.readUntilClosed(CLIENT_TIMEOUT)
                return status, echoed

        status, frame = yield inThread(run)
        self.assertEqual((status, frame), (101, (True, OP_TEXT, b"still here", False)))
        proto = factory.connections[0]
        yield withTimeout(proto.lost)
        self.assertEqual(proto.closeInfo, (True, 1000, None))

    @inlineCallbacks
    def test_httpIdleTimeoutStillAppliesToHTTP(self) -> Any:
        """The same site's idle timeout does close an idle HTTP connection (the control case)."""
        port, _ = self._serve(timeout=0.5)

        def run() -> float:
            with BlockingClient(port) as client:
                return client.readUntilClosed(3.0)[1]

        elapsed = yield inThread(run)
        self.assertLess(elapsed, 3.0)

    @inlineCallbacks
    def test_autoPingClosesASilentClient(self) -> Any:
        """autobahn's auto-ping closes a client that never answers pings."""
        factory = RecordingServerFactory()
        factory.setProtocolOptions(autoPingInterval=0.3, autoPingTimeout=0.3)
        port, _ = self._serve(factory)

        def run() -> tuple[int, bytes, float]:
            with BlockingClient(port) as client:
                client.send(handshake(port))
                status, _ = client.readHead()
                data, elapsed = client.readUntilClosed(3.0)
                return status, data, elapsed

        status, data, elapsed = yield inThread(run)
        self.assertEqual(status, 101)
        self.assertLess(elapsed, 3.0)
        frame, _ = decodeAll(data)[0]
        self.assertEqual(frame[1], OP_PING)
        proto = factory.connections[0]
        yield withTimeout(proto.lost)
        assert proto.closeInfo is not None
        self.assertFalse(proto.closeInfo[0])

    @inlineCallbacks
    def _status(self, request: Callable[[int], bytes], **endpointArgs: Any) -> Any:
        """Send C{request(port)}; return the status, the headers and the body of the answer."""
        factory = RecordingServerFactory()
        port, _ = self._serve(factory, **endpointArgs)

        def run() -> tuple[int, dict[bytes, list[bytes]], bytes]:
            with BlockingClient(port) as client:
                client.send(request(port))
                status, headers = client.readHead()
                return status, headers, client.readBody(headers)

        result = yield inThread(run)
        self.assertEqual(factory.connections, [])
        return result

    @inlineCallbacks
    def test_missingKey(self) -> Any:
        """A handshake without C{Sec-WebSocket-Key} gets 400."""
        status, _, _ = yield self._status(lambda port: handshake(port, omitKey=True))
        self.assertEqual(status, 400)

    @inlineCallbacks
    def test_shortKey(self) -> Any:
        """A key that is not 16 bytes in base64 gets 400."""
        status, _, _ = yield self._status(lambda port: handshake(port, key=b"c2hvcnQ="))
        self.assertEqual(status, 400)

    @inlineCallbacks
    def test_version8(self) -> Any:
        """C{Sec-WebSocket-Version: 8} gets 426 naming version 13."""
        status, headers, _ = yield self._status(lambda port: handshake(port, version=b"8"))
        self.assertEqual(status, 426)
        self.assertEqual(headers[b"sec-websocket-version"], [b"13"])

    @inlineCallbacks
    def test_post(self) -> Any:
        """A POST offering websocket gets 405, never 101."""
        status, headers, _ = yield self._status(lambda port: handshake(port, method=b"POST"))
        self.assertEqual(status, 405)
        self.assertEqual(headers[b"allow"], [b"GET"])

    @inlineCallbacks
    def test_crossOrigin(self) -> Any:
        """By default, a foreign C{Origin} gets 403."""
        status, _, _ = yield self._status(
            lambda port: handshake(port, extra=[(b"Origin", b"http://evil.example")])
        )
        self.assertEqual(status, 403)

    @inlineCallbacks
    def test_plainGet(self) -> Any:
        """A plain GET on the endpoint gets 426 with the WebSocket upgrade headers."""
        status, headers, _ = yield self._status(
            lambda port: b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port
        )
        self.assertEqual(status, 426)
        self.assertEqual(headers[b"upgrade"], [b"websocket"])
        self.assertEqual(headers[b"connection"], [b"Upgrade"])
        self.assertEqual(headers[b"sec-websocket-version"], [b"13"])

    @inlineCallbacks
    def _opens(self, origin: bytes | Callable[[int], bytes], **endpointArgs: Any) -> Any:
        factory = RecordingServerFactory()
        port, _ = self._serve(factory, **endpointArgs)
        value = origin(port) if callable(origin) else origin
        yield self._switchesAndEchoes(port, b"o", [(b"Origin", value)])
        request = factory.connections[0].request
        assert request is not None
        self.assertEqual(request.origin, value.decode())

    def test_sameOrigin(self) -> Any:
        """By default, the server's own origin is accepted."""
        return self._opens(lambda port: b"http://127.0.0.1:%d" % port)

    def test_allowedOriginPattern(self) -> Any:
        """With C{allowedOrigins}, an origin matching a pattern is accepted."""
        return self._opens(b"http://a.example.com:80", allowedOrigins=["http://*.example.com:*"])

    @inlineCallbacks
    def test_disallowedOriginPattern(self) -> Any:
        """With C{allowedOrigins}, an origin matching no pattern gets 403."""
        status, _, _ = yield self._status(
            lambda port: handshake(port, extra=[(b"Origin", b"http://example.org:80")]),
            allowedOrigins=["http://*.example.com:*"],
        )
        self.assertEqual(status, 403)

    @inlineCallbacks
    def _oversize(self, failByDrop: bool, sameSegment: bool) -> Any:
        """
        Send a 4 KiB first frame to a factory with C{maxFramePayloadSize=1024}.

        Return the status (or L{None} if the connection was reset before the
        C{101} was read), the frames the server sent, and the protocol.
        """
        factory = RecordingServerFactory()
        factory.setProtocolOptions(maxFramePayloadSize=1024, failByDrop=failByDrop)
        port, _ = self._serve(factory)
        frame = encodeFrame(OP_BINARY, os.urandom(4096))

        def run() -> tuple[int | None, list[tuple[bool, int, bytes, bool]]]:
            with BlockingClient(port) as client:
                if sameSegment:
                    client.send(handshake(port) + frame)
                else:
                    client.send(handshake(port))
                try:
                    status, _ = client.readHead()
                except ConnectionError:
                    return None, []
                if not sameSegment:
                    client.send(frame)
                frames = []
                try:
                    frames.append(client.readFrame())
                    if frames[0][1] == OP_CLOSE:
                        client.send(encodeFrame(OP_CLOSE, frames[0][2]))
                    data = client.readUntilClosed(CLIENT_TIMEOUT)[0]
                except ConnectionError:
                    data = client.buffer
                frames.extend(frame for frame, _ in decodeAll(data))
                return status, frames

        status, frames = yield inThread(run)
        proto = factory.connections[0]
        yield withTimeout(proto.lost)
        self.assertTrue(proto.wasMaxFramePayloadSizeExceeded)
        self.assertTrue(all(frame[1] == OP_CLOSE for frame in frames), frames)
        self.assertIn(status, (None, 101))
        return status, frames, proto

    @inlineCallbacks
    def test_oversizeFirstFrameClose(self) -> Any:
        """
        With C{failByDrop=False}, a first frame over C{maxFramePayloadSize} is
        answered with a close frame with code 1009, never echoed.
        """
        for sameSegment in (False, True):
            status, frames, _ = yield self._oversize(failByDrop=False, sameSegment=sameSegment)
            self.assertEqual(status, 101)
            self.assertEqual([closePayload(f[2])[0] for f in frames], [1009])

    @inlineCallbacks
    def test_oversizeFirstFrameDrop(self) -> Any:
        """
        With autobahn's default C{failByDrop=True}, a first frame over
        C{maxFramePayloadSize} drops the connection, never echoed.
        """
        for sameSegment in (False, True):
            status, frames, proto = yield self._oversize(failByDrop=True, sameSegment=sameSegment)
            self.assertEqual(frames, [])
            self.assertTrue(proto.droppedByMe)
            if not sameSegment:
                self.assertEqual(status, 101)

    @inlineCallbacks
    def test_clientLeavesMidHandshake(self) -> Any:
        """A client gone after half its headers logs no error; the next client works."""
        port, factory = self._serve()

        def leave() -> None:
            with BlockingClient(port) as first:
                data = handshake(port)
                first.send(data[: len(data) // 2])

        yield inThread(leave)
        yield self._switchesAndEchoes(port, b"second")
        yield wait(lambda: all(p.lost.called for p in factory.connections))
        self.assertEqual(len(factory.connections), 1)
        self.assertEqual(self.flushLoggedErrors(), [])
