"""
The resource tree C{twistd txupgrade} serves by default.
"""

from __future__ import annotations

import html
import json
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IPushProducer, IReactorTime, ISSLTransport
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from txupgrade.daemon.tracking import connectionOf, peerText, tlsOf
from txupgrade.protocols.echo import EchoResource
from txupgrade.registry import ProtocolRegistry
from txupgrade.resource import BytesResource, DirectoryResource

__all__ = [
    "MAX_FRAME_PAYLOAD",
    "MAX_MESSAGE_PAYLOAD",
    "DemoRecorder",
    "DemoReport",
    "PauseReadingWhileFull",
    "demoRoot",
    "webSocketEchoFactory",
]

_log = Logger()

#: The page at C{/}: its table is filled from L{DemoReport} (what the server saw).
_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>txupgrade</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 15px/1.5 system-ui, sans-serif; margin: 2em auto; max-width: 52em; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
code { background: #f3f3f3; border-radius: 3px; padding: 0 0.25em; }
table { border-collapse: collapse; width: 100%; margin: 1em 0; }
caption { text-align: left; color: #555; padding-bottom: 0.4em; }
th, td { text-align: left; padding: 0.45em 0.7em; border-bottom: 1px solid #ddd; vertical-align: top; }
thead th { background: #f6f6f6; font-weight: 600; }
tbody th { font-weight: 600; white-space: nowrap; }
td.ok { color: #176b1e; }
td.bad { color: #a11; }
.muted { color: #777; }
</style></head>
<body>
<h1>txupgrade</h1>
<p>One port; any connection can switch protocols, by HTTP/1.1 <code>Upgrade</code> or by an
HTTP/2 extended CONNECT stream. Protocols offered on every path: <b>@NAMES@</b>.</p>
<table id="seen">
<caption>As the server saw them (<code>/demo/report</code>), not as this page guesses:</caption>
<thead><tr><th></th><th>HTTP</th><th>transport</th><th>connection</th><th>result</th></tr></thead>
<tbody>
<tr id="page"><th>this page</th><td class="http">…</td><td class="transport">…</td>
<td class="connection">…</td><td class="result">…</td></tr>
<tr id="websocket"><th>WebSocket /ws</th><td class="http">…</td><td class="transport">…</td>
<td class="connection">…</td><td class="result"><output id="ws">connecting…</output></td></tr>
<tr id="echo"><th>echo switch</th><td class="http">…</td><td class="transport">…</td>
<td class="connection">…</td><td class="result">…</td></tr>
</tbody></table>
<p class="muted">A browser cannot send <code>Upgrade: echo</code>: the echo row shows the latest echo switch
the server saw from any client. Make one with
<code id="echo-command">curl -i -H 'Connection: Upgrade' -H 'Upgrade: echo' http://HOST/</code>
(a <code>101</code>, then every byte comes back).</p>
<ul>
<li><code>GET /echo</code> and <code>POST /echo</code>: plain HTTP.</li>
<li><code>/ws</code>: a WebSocket echo (autobahn), used by this page.</li>
</ul>
<script>
(function () {
  "use strict";
  var out = document.getElementById("ws");
  var bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  var token = Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); });
  token = token.join("");
  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  var sent = "hello from " + navigator.userAgent.split(" ")[0];
  var command = document.getElementById("echo-command");
  command.textContent = command.textContent.replace("http://HOST/", location.protocol === "https:"
    ? "-k https://" + location.host + "/" : "http://" + location.host + "/");

  function cell(row, name) { return document.querySelector("#" + row + " ." + name); }
  function transport(seen) {
    if (!seen.tls) { return "TCP"; }
    return seen.alpn ? "TLS, ALPN " + seen.alpn : "TLS, no ALPN";
  }
  function connection(seen) {
    var which = seen.connection === null ? "from " + seen.peer : "#" + seen.connection;
    return seen.stream === null ? "connection " + which : "stream " + seen.stream + " of connection " + which;
  }
  function fill(row, seen, where, result) {
    cell(row, "http").textContent = seen ? "HTTP/" + seen.http : "-";
    cell(row, "transport").textContent = seen ? transport(seen) : "-";
    cell(row, "connection").textContent = seen ? where : "-";
    if (result !== undefined) { cell(row, "result").textContent = result; }
  }
  function finish(title) {
    document.title = title;
    if (ws) { ws.close(1000); }
  }
  function show(seen) {
    var page = seen.page, sock = seen.webSocket, echo = seen.echo;
    fill("page", page, page && connection(page), "loaded");
    var where = null;
    if (sock) {
      var same = sock.connection === page.connection && sock.peer === page.peer;
      where = (sock.stream === null ? "its own " : "") + connection(sock) + (same ? " (this page's)" : "");
    }
    fill("websocket", sock, where);
    fill("echo", echo, echo && connection(echo), echo
      ? "switched " + Math.round(echo.ago) + " s ago, from " + echo.peer
      : "none seen yet: run the command below");
    cell("echo", "result").className = echo ? "result ok" : "result muted";
  }
  function report(echoed) {
    fetch("/demo/report?token=" + token, { cache: "no-store" }).then(function (answer) {
      if (!answer.ok) { throw new Error("HTTP " + answer.status); }
      return answer.json();
    }).then(function (seen) {
      show(seen);
      finish(echoed ? out.textContent : "error");
    }).catch(function (error) {
      cell("page", "result").textContent = "report failed: " + error;
      finish(echoed ? out.textContent : "error");
    });
  }
  var ws;
  // The token goes in a cookie for /ws only: the URL (and the access log's line) stays /ws.
  document.cookie = "txupgrade-demo=" + token + "; path=/ws; max-age=60; SameSite=Strict";
  try { ws = new WebSocket(scheme + location.host + "/ws"); }
  catch (e) { out.textContent = "failed: " + e; report(false); return; }
  ws.onopen = function () { ws.send(sent); };
  ws.onmessage = function (event) {
    var ok = event.data === sent;
    out.textContent = ok ? "echo ok: " + event.data : "echo MISMATCH: " + event.data;
    cell("websocket", "result").className = ok ? "result ok" : "result bad";
    ws.onmessage = null;
    report(ok);
  };
  ws.onerror = function () { out.textContent = "error"; ws = null; report(false); };
})();
</script>
</body></html>
"""


#: The demo WebSocket echo's limits: a frame or message past them is answered
#: with a Close frame, code 1009 (message too big), instead of being held.
MAX_FRAME_PAYLOAD = 1 << 20
MAX_MESSAGE_PAYLOAD = 4 << 20


@implementer(IPushProducer)
class PauseReadingWhileFull:
    """
    Backpressure for a protocol that writes what it reads: registered as the
    transport's producer, it stops reading from the peer while the
    transport's write buffer is full, and resumes once it has drained.
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """Nothing to stop: the transport is closing."""


def seenOn(channel: Any, version: bytes) -> dict[str, Any]:
    """
    What the server sees of C{channel}, a request's channel (HTTP/1.1) or
    stream (HTTP/2), or a switched protocol's transport, for a request of
    HTTP C{version}: the HTTP version, TLS and its ALPN, the HTTP/2 stream,
    and the connection (the tracker's number, L{None} when untracked, and the peer).
    """
    stream = getattr(channel, "streamID", None)
    transport = channel
    if stream is not None:
        from txupgrade._h2connection import streamConnection

        transport = streamConnection(channel).transport
    elif not ISSLTransport.providedBy(channel) and hasattr(channel, "requests"):
        transport = channel.transport  # an HTTP/1.1 channel: its connection's transport
    tls, alpn = tlsOf(transport)
    tracked = connectionOf(transport)
    return {
        "http": "2" if version == b"HTTP/2" else "1.1",
        "tls": tls,
        "alpn": alpn,
        "stream": stream,
        "connection": tracked.serial if tracked is not None else None,
        "peer": peerText(transport.getPeer()),
    }


#: The demo page's cookie for C{/ws}: its token.
_COOKIE = re.compile(r"(?:^|[;,]\s*)txupgrade-demo=([0-9a-f]{8,64})(?=$|[;,])")
_TOKEN = re.compile(r"[0-9a-f]{8,64}\Z")


class DemoRecorder:
    """
    What the server saw of the demo page's WebSockets, by the page's token
    (in the cookie C{txupgrade-demo=TOKEN} the page sets for C{/ws}, so that
    the path and the access log stay C{/ws}), for L{DemoReport}. Bounded, since any client can
    open such WebSockets: at most L{maxTokens} (the oldest forgotten first),
    each kept L{ttl} seconds.
    """

    maxTokens = 256
    ttl = 300.0

    def __init__(self, clock: IReactorTime | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock: IReactorTime = clock  # type: ignore[assignment]
        self._seen: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def record(self, token: str, seen: dict[str, Any]) -> None:
        """Keep C{seen} for C{token} (a malformed token is ignored)."""
        if not _TOKEN.match(token):
            return
        self._expire()
        self._seen[token] = (self.clock.seconds(), seen)
        self._seen.move_to_end(token)
        while len(self._seen) > self.maxTokens:
            self._seen.popitem(last=False)

    def lookup(self, token: str) -> dict[str, Any] | None:
        """What was recorded for C{token}, if it is still kept."""
        self._expire()
        entry = self._seen.get(token)
        return entry[1] if entry is not None else None

    def webSocketOpened(self, protocol: Any) -> None:
        """An autobahn protocol opened: record its transport if its request had the page's cookie."""
        headers: dict[str, str] = getattr(protocol, "http_headers", None) or {}
        tokens = _COOKIE.findall(headers.get("cookie", ""))
        if len(tokens) == 1 and protocol.transport is not None:
            http = getattr(protocol.transport, "streamID", None) is not None
            self.record(tokens[0], seenOn(protocol.transport, b"HTTP/2" if http else b"HTTP/1.1"))

    def _expire(self) -> None:
        deadline = self.clock.seconds() - self.ttl
        while self._seen:
            token, entry = next(iter(self._seen.items()))
            if entry[0] >= deadline:
                break
            del self._seen[token]


class DemoReport(Resource):
    """
    C{GET /demo/report?token=TOKEN}: JSON saying how the server saw this very
    request (C{page}), the page's WebSocket (C{webSocket}, from the
    L{DemoRecorder}) and the latest C{echo} switch from any client (C{echo},
    from the daemon's tracker; L{None} without one).
    """

    isLeaf = True

    def __init__(self, recorder: DemoRecorder) -> None:
        super().__init__()
        self.recorder = recorder

    def render_GET(self, request: Request) -> bytes:
        token = (request.args.get(b"token") or [b""])[0].decode("ascii", "replace")
        tracker = getattr(request.site, "tracker", None)
        echo = None
        latest = tracker.lastSwitch.get("echo") if tracker is not None else None
        if tracker is not None and latest is not None:
            echo = {
                "http": latest.http,
                "tls": latest.tls,
                "alpn": latest.alpn,
                "stream": latest.stream,
                "connection": latest.connection,
                "peer": latest.peer,
                "ago": max(0.0, tracker.clock.seconds() - latest.at),
            }
        body = {
            "page": seenOn(request.channel, request.clientproto),
            "webSocket": self.recorder.lookup(token),
            "echo": echo,
        }
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps(body).encode("utf-8")


def _acceptDeflate(offers: list[Any]) -> Any:
    """
    Accept the client's first C{permessage-deflate} offer (RFC 7692), when
    autobahn bounds inflation by the message limit (else decline them all).
    """
    from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept

    from txupgrade.protocols.websocket._autobahncompat import inflationBounded

    if not inflationBounded():
        return None
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


def webSocketEchoFactory(
    *, maxFramePayload: int = MAX_FRAME_PAYLOAD, maxMessagePayload: int = MAX_MESSAGE_PAYLOAD
) -> Any:
    """
    An autobahn server factory whose protocol echoes every message.

    Bounded: frames over C{maxFramePayload} and messages over
    C{maxMessagePayload} bytes (after decompression) are closed with 1009,
    and a protocol error with 1002, each with a Close frame (C{failByDrop}
    off, so that the C{101} and the Close reach the client even when the bad
    frame came in the handshake's segment). A client that does not read is
    not read from either (L{PauseReadingWhileFull}). C{permessage-deflate} is
    accepted with an autobahn that stops inflating at the message limit
    (26.10 and later); older ones would inflate a whole frame first, so the
    demo declines compression there.

    @param maxFramePayload: The largest frame payload, in bytes (the daemon's
        C{--websocket-max-frame}); at most C{maxMessagePayload}.
    @param maxMessagePayload: The largest message, in bytes (the daemon's
        C{--websocket-max-message}): autobahn holds a whole message, so this
        bounds the memory of each connection.
    @raise ValueError: a limit under 1, or a frame limit over the message limit.
    """
    if not 1 <= maxFramePayload <= maxMessagePayload:
        raise ValueError(
            f"WebSocket limits must satisfy 1 <= frame ({maxFramePayload}) <= message ({maxMessagePayload})"
        )
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    class EchoServerProtocol(WebSocketServerProtocol):
        def onOpen(self) -> None:
            self.registerProducer(PauseReadingWhileFull(self.transport), True)
            recorder = getattr(self.factory, "demoRecorder", None)
            if recorder is not None:
                recorder.webSocketOpened(self)

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            self.sendMessage(payload, isBinary)

    factory = WebSocketServerFactory()
    factory.protocol = EchoServerProtocol
    factory.setProtocolOptions(
        maxFramePayloadSize=maxFramePayload,
        maxMessagePayloadSize=maxMessagePayload,
        failByDrop=False,
        perMessageCompressionAccept=_acceptDeflate,
    )
    return factory


def demoRoot(
    protocols: ProtocolRegistry,
    *,
    webSocket: bool = True,
    allowedOrigins: Sequence[str] | None = None,
    maxFramePayload: int = MAX_FRAME_PAYLOAD,
    maxMessagePayload: int = MAX_MESSAGE_PAYLOAD,
    clock: IReactorTime | None = None,
) -> Resource:
    """
    A root with a page at C{/}, L{EchoResource} at C{/echo}, a WebSocket echo at
    C{/ws}, and the page's L{DemoReport} at C{/demo/report}.

    @param webSocket: Whether to serve C{/ws} (when autobahn is installed).
    @param allowedOrigins: The C{/ws} origin patterns (see
        L{txupgrade.protocols.websocket.WebSocketUpgrade}); same-origin by default.
    @param maxFramePayload: The C{/ws} frame limit (see L{webSocketEchoFactory}).
    @param maxMessagePayload: The C{/ws} message limit (see L{webSocketEchoFactory}).
    @param clock: The L{DemoRecorder}'s clock (the reactor by default).
    """
    names = ", ".join(protocols.names()) or "(none)"
    root = DirectoryResource()
    text = _PAGE.replace("@NAMES@", html.escape(names))
    page = BytesResource(text.encode("utf-8"), "text/html; charset=utf-8")
    root.putChild(b"", page)
    root.putChild(b"echo", EchoResource())
    recorder = DemoRecorder(clock)
    demo = DirectoryResource()
    demo.putChild(b"report", DemoReport(recorder))
    root.putChild(b"demo", demo)
    if not webSocket:
        return root
    try:
        from txupgrade.protocols.websocket import WebSocketEndpoint
    except ImportError:
        _log.warn("autobahn is not installed (extra 'websocket'): no WebSocket echo at /ws")
    else:
        factory = webSocketEchoFactory(maxFramePayload=maxFramePayload, maxMessagePayload=maxMessagePayload)
        factory.demoRecorder = recorder  # the page's WebSocket tells what the server saw of it
        root.putChild(b"ws", WebSocketEndpoint(factory, allowedOrigins))
    return root
