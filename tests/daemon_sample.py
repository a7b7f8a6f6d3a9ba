"""
An operator's own site and WebSocket factory, loaded by dotted name in the
C{twistd txupgrade} tests (C{--resource}, C{--websocket}).
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import Resource

from txupgrade.resource import BytesResource

HELLO = b"hello from the operator's own site\n"


def root() -> Resource:
    """A root with C{/hello} only."""
    site = Resource()
    site.putChild(b"hello", BytesResource(HELLO, "text/plain"))
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


#: What L{SlowPage} writes at once, and after L{SLOW_SECONDS}.
SLOW_FIRST = b"first half, "
SLOW_REST = b"second half\n"
SLOW_SECONDS = 1.5


class SlowPage(Resource):
    """A response in two parts, L{SLOW_SECONDS} apart: an in-flight response to drain."""

    isLeaf = True

    def render_GET(self, request: Any) -> Any:
        from twisted.internet import reactor
        from twisted.web.server import NOT_DONE_YET

        request.setHeader(b"Content-Type", b"text/plain")
        request.setHeader(b"Content-Length", b"%d" % (len(SLOW_FIRST) + len(SLOW_REST)))
        request.write(SLOW_FIRST)

        def rest() -> None:
            request.write(SLOW_REST)
            request.finish()

        call = reactor.callLater(SLOW_SECONDS, rest)
        request.notifyFinish().addErrback(lambda _: call.cancel() if call.active() else None)
        return NOT_DONE_YET


def slowDemo() -> Resource:
    """The demo root, plus L{SlowPage} at C{/slow}."""
    from txupgrade.daemon.demo import demoRoot
    from txupgrade.registry import ProtocolRegistry

    root = demoRoot(ProtocolRegistry.fromPlugins())
    root.putChild(b"slow", SlowPage())
    return root
