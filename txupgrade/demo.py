"""
The resource tree C{twistd txupgrade} serves by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.static import Data

from txupgrade.echo import EchoResource
from txupgrade.registry import ProtocolRegistry

__all__ = ["demoRoot", "webSocketEchoFactory"]

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


def _acceptDeflate(offers: Sequence[Any]) -> Any:
    """Accept the client's first permessage-deflate offer, as offered."""
    from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept

    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


def webSocketEchoFactory() -> Any:
    """An autobahn server factory whose protocol echoes every message (permessage-deflate accepted)."""
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    class EchoServerProtocol(WebSocketServerProtocol):
        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            self.sendMessage(payload, isBinary)

    factory = WebSocketServerFactory()
    factory.protocol = EchoServerProtocol
    factory.setProtocolOptions(perMessageCompressionAccept=_acceptDeflate)
    return factory


def demoRoot(
    protocols: ProtocolRegistry, *, webSocket: bool = True, allowedOrigins: Sequence[str] | None = None
) -> Resource:
    """
    A root with a page at C{/}, L{EchoResource} at C{/echo}, a WebSocket echo at C{/ws}.

    @param webSocket: Whether to serve C{/ws} (when autobahn is installed).
    @param allowedOrigins: The C{/ws} origin patterns (see
        L{txupgrade.websocket.WebSocketUpgrade}); same-origin by default.
    """
    names = ", ".join(protocols.names()) or "(none)"
    root = Resource()
    page = Data(_PAGE.format(names=names).encode("utf-8"), "text/html; charset=utf-8")
    root.putChild(b"", page)
    root.putChild(b"echo", EchoResource())
    if not webSocket:
        return root
    try:
        from txupgrade.websocket import WebSocketEndpoint
    except ImportError:
        _log.warn("autobahn is not installed (extra 'websocket'): no WebSocket echo at /ws")
    else:
        root.putChild(b"ws", WebSocketEndpoint(webSocketEchoFactory(), allowedOrigins))
    return root
