"""
An operator's own site and WebSocket factory, loaded by dotted name in the
C{twistd txupgrade} tests (C{--resource}, C{--websocket}).
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import Resource
from twisted.web.static import Data

HELLO = b"hello from the operator's own site\n"


def root() -> Resource:
    """A root with C{/hello} only."""
    site = Resource()
    site.putChild(b"hello", Data(HELLO, "text/plain"))
    return site


#: Not a resource, nor callable: C{--resource} must refuse it.
NOT_A_RESOURCE = 42


def chatFactory() -> Any:
    """An autobahn factory whose protocol answers every message with C{chat: } and the peer."""
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    class Chat(WebSocketServerProtocol):
        def onConnect(self, request: Any) -> None:
            self.connectPeer = request.peer

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            self.sendMessage(b"chat: " + payload + b" from " + self.connectPeer.encode(), isBinary)

    factory = WebSocketServerFactory()
    factory.protocol = Chat
    return factory
