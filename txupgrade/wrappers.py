"""
Wrappers that hide nothing: every optional interface Twisted asks of a
protocol or a factory passes through them.

Twisted asks the object it holds, never what that object wraps: a TLS layer
asks its factory's C{wrappedFactory} for L{IProtocolNegotiationFactory}
(ALPN) and its protocol for L{IHandshakeListener}; a TCP connection asks its
protocol for L{IHalfCloseableProtocol}. A wrapper that does not provide
them hides them from the protocol underneath, which then never hears of a
finished handshake or a half-close, and a TLS listener offers no ALPN
protocol at all. Each wrapper txupgrade puts between Twisted and the site
(the site's own channel wrapper, the daemon's tracking, the PROXY protocol
reader of L{txupgrade._twistedcompat}) derives from these, and
C{tests/test_wrappers.py} walks the stack the daemon builds to check that
none hides one.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    IProtocolNegotiationFactory,
)
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer

__all__ = [
    "ForwardingProtocol",
    "TransparentFactory",
    "TransparentWrapper",
    "innermostTransport",
]


@implementer(IHandshakeListener, IHalfCloseableProtocol)
class ForwardingProtocol:
    """
    The optional protocol interfaces, passed to L{forwardTo}'s protocol;
    a half-close it cannot take closes the connection, as Twisted would.
    """

    def forwardTo(self) -> Any:
        """The protocol underneath (overridden)."""
        raise NotImplementedError

    def handshakeCompleted(self) -> None:
        inner = self.forwardTo()
        if IHandshakeListener.providedBy(inner):
            inner.handshakeCompleted()

    def readConnectionLost(self) -> None:
        inner = self.forwardTo()
        if IHalfCloseableProtocol.providedBy(inner):
            inner.readConnectionLost()
        elif inner is not None and inner.transport is not None:
            inner.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        inner = self.forwardTo()
        if IHalfCloseableProtocol.providedBy(inner):
            inner.writeConnectionLost()


class TransparentWrapper(ForwardingProtocol, ProtocolWrapper):
    """
    A L{ProtocolWrapper} that passes on the optional protocol interfaces; as
    the transport of the protocol it wraps, it names its own transport
    C{wrappedTransport} (L{innermostTransport}).
    """

    def forwardTo(self) -> Any:
        return self.wrappedProtocol

    @property
    def wrappedTransport(self) -> Any:
        return self.transport


@implementer(IProtocolNegotiationFactory)
class TransparentFactory(WrappingFactory):
    """A L{WrappingFactory} that passes on the wrapped factory's ALPN protocols."""

    def acceptableProtocols(self) -> list[bytes]:
        negotiating = IProtocolNegotiationFactory(self.wrappedFactory, None)
        return list(negotiating.acceptableProtocols()) if negotiating is not None else []


def innermostTransport(transport: Any) -> Any:
    """
    The transport under every txupgrade transport wrapper (each names what it
    wraps C{wrappedTransport}): Twisted's TLS or TCP transport, for code that
    checks a transport's class, as autobahn does to read a TLS connection's
    channel binding. Wrappers above it may answer differently (the PROXY
    protocol's C{getPeer}), so ask it only what they do not change.
    """
    while (inner := getattr(transport, "wrappedTransport", None)) is not None:
        transport = inner
    return transport
