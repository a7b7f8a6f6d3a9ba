"""
An autobahn WebSocket service at /chat of a txupgrade site, on the same port
as the site's ordinary resources.
"""

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny

from txupgrade import BytesResource, DirectoryResource, UpgradeSite
from txupgrade.protocols.websocket import WebSocketEndpoint


class ChatProtocol(WebSocketServerProtocol):
    """Echoes every message; speaks the chat.v1 subprotocol when asked."""

    def onConnect(self, request):
        # request: the real peer, path, params, headers, origin, protocols.
        if request.params.get("token") == ["banned"]:
            raise ConnectionDeny(403, "go away")  # answered 403, no 101
        if "chat.v1" in request.protocols:
            return "chat.v1"
        return None

    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)


def makeSite():
    """A page at /, and the WebSocket service at /chat."""
    factory = WebSocketServerFactory()
    factory.protocol = ChatProtocol
    # Bound what one client can make the server hold; answer with Close frames.
    factory.setProtocolOptions(maxFramePayloadSize=1 << 20, maxMessagePayloadSize=4 << 20, failByDrop=False)
    root = DirectoryResource()
    root.putChild(b"", BytesResource(b"hello\n", "text/plain"))
    # Browsers may open it only from pages of https://*.example.com (clients
    # that send no Origin, not being browsers, always may).
    root.putChild(b"chat", WebSocketEndpoint(factory, allowedOrigins=["https://*.example.com:*"]))
    return UpgradeSite(root)
