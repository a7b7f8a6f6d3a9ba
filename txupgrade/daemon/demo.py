"""
The resource tree C{twistd txupgrade} serves by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.resource import Resource
from zope.interface import implementer

from txupgrade.protocols.echo import EchoResource
from txupgrade.registry import ProtocolRegistry
from txupgrade.resource import BytesResource, DirectoryResource

__all__ = [
    "MAX_FRAME_PAYLOAD",
    "MAX_MESSAGE_PAYLOAD",
    "PauseReadingWhileFull",
    "demoRoot",
    "webSocketEchoFactory",
]

_log = Logger()

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>txupgrade</title></head>
<body>
<h1>txupgrade</h1>
<p>One HTTP/1.1 port; any connection can switch protocols with
<code>Upgrade</code>. Protocols offered on every path: <b>{names}</b>.</p>
<ul>
<li><code>GET /echo</code> and <code>POST /echo</code>: plain HTTP.</li>
<li><code>curl -i -H 'Connection: Upgrade' -H 'Upgrade: echo' http://HOST/</code>:
a 101, then every byte comes back.</li>
<li><code>/ws</code>: a WebSocket echo (autobahn), used by this page.</li>
</ul>
<p>WebSocket echo: <output id="ws">connecting…</output></p>
<script>
(function () {{
  var out = document.getElementById("ws");
  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  var sent = "hello from " + navigator.userAgent.split(" ")[0];
  var ws;
  try {{ ws = new WebSocket(scheme + location.host + "/ws"); }}
  catch (e) {{ out.textContent = "failed: " + e; return; }}
  ws.onopen = function () {{ ws.send(sent); }};
  ws.onmessage = function (event) {{
    out.textContent = event.data === sent ? "echo ok: " + event.data : "echo MISMATCH: " + event.data;
    document.title = out.textContent;
    ws.close(1000);
  }};
  ws.onerror = function () {{ out.textContent = "error"; document.title = "error"; }};
}})();
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


def webSocketEchoFactory() -> Any:
    """
    An autobahn server factory whose protocol echoes every message.

    Bounded: frames over L{MAX_FRAME_PAYLOAD} and messages over
    L{MAX_MESSAGE_PAYLOAD} bytes (after decompression) are closed with 1009,
    and a protocol error with 1002, each with a Close frame (C{failByDrop}
    off, so that the C{101} and the Close reach the client even when the bad
    frame came in the handshake's segment). A client that does not read is
    not read from either (L{PauseReadingWhileFull}). C{permessage-deflate} is
    accepted with an autobahn that stops inflating at the message limit
    (26.10 and later); older ones would inflate a whole frame first, so the
    demo declines compression there.
    """
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    class EchoServerProtocol(WebSocketServerProtocol):
        def onOpen(self) -> None:
            self.registerProducer(PauseReadingWhileFull(self.transport), True)

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            self.sendMessage(payload, isBinary)

    factory = WebSocketServerFactory()
    factory.protocol = EchoServerProtocol
    factory.setProtocolOptions(
        maxFramePayloadSize=MAX_FRAME_PAYLOAD,
        maxMessagePayloadSize=MAX_MESSAGE_PAYLOAD,
        failByDrop=False,
        perMessageCompressionAccept=_acceptDeflate,
    )
    return factory


def demoRoot(
    protocols: ProtocolRegistry, *, webSocket: bool = True, allowedOrigins: Sequence[str] | None = None
) -> Resource:
    """
    A root with a page at C{/}, L{EchoResource} at C{/echo}, a WebSocket echo at C{/ws}.

    @param webSocket: Whether to serve C{/ws} (when autobahn is installed).
    @param allowedOrigins: The C{/ws} origin patterns (see
        L{txupgrade.protocols.websocket.WebSocketUpgrade}); same-origin by default.
    """
    names = ", ".join(protocols.names()) or "(none)"
    root = DirectoryResource()
    page = BytesResource(_PAGE.format(names=names).encode("utf-8"), "text/html; charset=utf-8")
    root.putChild(b"", page)
    root.putChild(b"echo", EchoResource())
    if not webSocket:
        return root
    try:
        from txupgrade.protocols.websocket import WebSocketEndpoint
    except ImportError:
        _log.warn("autobahn is not installed (extra 'websocket'): no WebSocket echo at /ws")
    else:
        root.putChild(b"ws", WebSocketEndpoint(webSocketEchoFactory(), allowedOrigins))
    return root
