"""
The C{shout/1} upgrade protocol: after the 101 it answers the original
request's body in capitals, then upper-cases every byte it receives.

This module is C{txupgrade/plugins/shout.py} in its own distribution, with
no C{__init__.py} beside it: the module-level C{shout} is the plugin.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from zope.interface import implementer

from txupgrade import Accept, Decline, IUpgradeProtocol, Refuse, UpgradeRequest


class ShoutProtocol(Protocol):
    """Answers the original request, then shouts back whatever arrives."""

    def __init__(self, request: UpgradeRequest) -> None:
        self.request = request

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"YOU SAID: " + self.request.body.upper() + b"\n")

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data.upper())


@implementer(IUpgradeProtocol)
class Shout:
    """The C{shout/1} protocol."""

    name = "shout"
    version = "1"

    def negotiate(self, request: UpgradeRequest) -> Accept | Decline | Refuse:
        if request.method not in (b"GET", b"POST"):
            return Decline("shout answers GET and POST only")
        if request.getHeader(b"x-quiet") is not None:
            return Refuse(403, body=b"no shouting here\n")
        return Accept(headers=((b"X-Shout", b"ready"),))

    def buildProtocol(self, request: UpgradeRequest, site: object) -> ShoutProtocol:
        return ShoutProtocol(request)


shout = Shout()
