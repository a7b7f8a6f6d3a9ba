"""
The demo protocol C{echo}: after the C{101}, every byte comes back.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Protocol
from twisted.web.server import Request
from zope.interface import implementer

from txupgrade.interfaces import IDrainable, IUpgradeProtocol
from txupgrade.negotiation import Accept, Decision, UpgradeRequest
from txupgrade.resource import PlainResource

__all__ = ["EchoProtocol", "EchoResource", "EchoUpgrade"]


@implementer(IDrainable)
class EchoProtocol(Protocol):
    """
    Write back every byte received, reading no faster than the peer reads.

    The transport is registered as its own streaming producer: when its
    write buffer fills (the peer stopped reading), it pauses reading from the
    peer, and resumes once the buffer drains (R17). Any protocol that writes
    what it reads can do the same; one that produces data of its own
    registers its own producer instead.
    """

    def connectionMade(self) -> None:
        transport: Any = self.transport  # an IConsumer and IPushProducer, as TCP and TLS transports are
        transport.registerProducer(transport, True)

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def drain(self) -> None:
        """
        L{IDrainable}: half-close (no more bytes from us, still echoing what
        the peer sends until it closes its side); close when half-close is
        not available.
        """
        transport: Any = self.transport
        loseWrite = getattr(transport, "loseWriteConnection", None)
        if loseWrite is None:
            transport.loseConnection()
        else:
            loseWrite()


@implementer(IUpgradeProtocol)
class EchoUpgrade:
    """The connection-wide C{echo} protocol: accepts any request."""

    name = "echo"
    version = None

    def negotiate(self, request: UpgradeRequest) -> Decision:
        return Accept()

    def buildProtocol(self, request: UpgradeRequest, site: object) -> EchoProtocol:
        return EchoProtocol()


class EchoResource(PlainResource):
    """Plain HTTP at C{/echo}: C{GET} says hello, C{POST} returns the body."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"echo: POST a body and get it back, or Upgrade: echo\n"

    def render_POST(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"application/octet-stream")
        assert request.content is not None
        return request.content.read()
