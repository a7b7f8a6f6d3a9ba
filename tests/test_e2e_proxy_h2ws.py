"""
WebSocket over HTTP/2 (RFC 8441) through real reverse proxies, in front of a
real C{twistd txupgrade} as shipped: what docs/operators.md tells operators.

HAProxy speaks RFC 8441 on its HTTP/2 side: with C{proto h2} on the server
line it passes the extended CONNECT on to txupgrade (the daemon logs
C{"CONNECT /ws HTTP/2" 200}); with an HTTP/1.1 server line it turns it into
an HTTP/1.1 C{Upgrade: websocket} (C{"GET /ws HTTP/1.1" 101}). nginx 1.22
does not offer extended CONNECT on its HTTP/2 listeners at all, so clients
open their WebSockets over HTTP/1.1 there (as the nginx tests in
test_e2e_proxies do).

The client is the h2 library over a blocking socket, in a thread: it waits
for the proxy's SETTINGS, sends C{CONNECT} with C{:protocol websocket} once
it may, waits for the 200 and then echoes one masked text frame.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support.daemon import LOCAL, startDaemon
from tests.support.net import freePort, inThread, wait
from tests.support.proxies import _haproxy, _nginx, nginxUpgradeLocation, startProxy
from tests.support.websocket import decodeFrame, encodeFrame

ENABLE = h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL

#: Seconds a blocking read may wait.
CLIENT_TIMEOUT = 5.0


def webSocketOverH2(port: int, text: bytes) -> dict[str, Any]:
    """
    Open C{/ws} on C{127.0.0.1:port} by extended CONNECT (prior knowledge),
    echo C{text} once: the server's setting, the status and the echoed text.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    seen: dict[str, Any] = {"enable": None, "status": None, "echo": None}
    events: list[Any] = []

    def read() -> None:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        events.extend(conn.receive_data(data))
        sock.sendall(conn.data_to_send())

    def waitFor(kind: type) -> Any:
        while True:
            for event in events:
                if isinstance(event, kind):
                    events.remove(event)
                    return event
            read()

    try:
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        waitFor(h2.events.RemoteSettingsChanged)
        seen["enable"] = conn.remote_settings.get(ENABLE)
        if seen["enable"] != 1:
            return seen
        conn.send_headers(
            1,
            [
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", "http"),
                (":path", "/ws"),
                (":authority", f"127.0.0.1:{port}"),
                ("sec-websocket-version", "13"),
            ],
        )
        sock.sendall(conn.data_to_send())
        # Only after the 200: HAProxy answers 500 to DATA that comes before it.
        response = waitFor(h2.events.ResponseReceived)
        seen["status"] = dict(response.headers)[b":status"]
        if seen["status"] != b"200":
            return seen
        conn.send_data(1, encodeFrame(0x1, text, maskKey=os.urandom(4)))
        sock.sendall(conn.data_to_send())
        received = b""
        while (decoded := decodeFrame(received)) is None:
            received += waitFor(h2.events.DataReceived).data
        (_, opcode, payload, _), _ = decoded
        seen["echo"] = (opcode, payload)
        conn.close_connection()
        sock.sendall(conn.data_to_send())
        return seen
    finally:
        sock.close()


def haproxyH2(backendPort: int, serverOptions: str, globalOptions: str = "") -> Any:
    """An HAProxy config writer: HTTP/1.1 and (by its preface) HTTP/2 in front, one server line."""

    def write(directory: Path, listenPort: int, token: str) -> str:
        config = _haproxy(listenPort, token, f"    server site 127.0.0.1:{backendPort}{serverOptions}\n")
        return config.replace("global\n", f"global\n{globalOptions}", 1)

    return write


def nginxH2(backendPort: int, h2Port: int) -> Any:
    """An nginx config writer: an HTTP/2 (prior knowledge) listener on C{h2Port} in front of txupgrade."""

    def write(directory: Path, listenPort: int, token: str) -> str:
        config = _nginx(
            directory,
            listenPort,
            token,
            "",
            nginxUpgradeLocation(backendPort, connection='"upgrade"', readTimeout=None),
        )
        # A second listener, HTTP/2 only: the first keeps serving the readiness probe.
        return config.replace(
            f"listen 127.0.0.1:{listenPort};",
            f"listen 127.0.0.1:{listenPort};\n        listen 127.0.0.1:{h2Port} http2;",
        )

    return write


class HAProxyTests(TestCase):
    """HAProxy 2.6 carries WebSocket over HTTP/2 to the daemon, either way it is told to."""

    timeout = 60

    @inlineCallbacks
    def proxied(self, serverOptions: str) -> Any:
        daemon = yield startDaemon(self, ["--listen", LOCAL])
        port = yield startProxy(self, "haproxy", daemon.ports[0], haproxyH2(daemon.ports[0], serverOptions))
        seen = yield inThread(webSocketOverH2, port, b"hello through HAProxy")
        self.assertEqual(
            seen, {"enable": 1, "status": b"200", "echo": (0x1, b"hello through HAProxy")}, daemon.output
        )
        return daemon

    @inlineCallbacks
    def test_h2Backend(self) -> None:
        """C{proto h2}: the extended CONNECT reaches txupgrade as one, on an HTTP/2 stream."""
        daemon = yield self.proxied(" proto h2")
        yield wait(lambda: b'"CONNECT /ws HTTP/2" 200' in daemon.output)
        self.assertNotIn(b'"GET /ws HTTP/1.1" 101', daemon.output)

    @inlineCallbacks
    def test_http11Backend(self) -> None:
        """An HTTP/1.1 server line: HAProxy turns it into an C{Upgrade: websocket} the daemon answers 101."""
        daemon = yield self.proxied("")
        yield wait(lambda: b'"GET /ws HTTP/1.1" 101' in daemon.output)
        self.assertNotIn(b"CONNECT /ws", daemon.output)

    @inlineCallbacks
    def test_workaroundTurnsItOff(self) -> None:
        """C{h2-workaround-bogus-websocket-clients}: HAProxy no longer offers extended CONNECT."""
        daemon = yield startDaemon(self, ["--listen", LOCAL])
        config = haproxyH2(daemon.ports[0], " proto h2", "    h2-workaround-bogus-websocket-clients\n")
        port = yield startProxy(self, "haproxy", daemon.ports[0], config)
        seen = yield inThread(webSocketOverH2, port, b"x")
        self.assertEqual(seen["enable"] or 0, 0)


class NginxTests(TestCase):
    """nginx 1.22 does not offer extended CONNECT: an HTTP/2 client there cannot open one."""

    timeout = 60

    @inlineCallbacks
    def test_notOffered(self) -> None:
        """Its HTTP/2 SETTINGS carry no ENABLE_CONNECT_PROTOCOL, so clients fall back to HTTP/1.1."""
        daemon = yield startDaemon(self, ["--listen", LOCAL])
        h2Port = freePort()
        yield startProxy(self, "nginx", daemon.ports[0], nginxH2(daemon.ports[0], h2Port))
        seen = yield inThread(webSocketOverH2, h2Port, b"x")
        self.assertEqual(seen["enable"] or 0, 0)
        self.assertNotIn(b"CONNECT /ws", daemon.output)
