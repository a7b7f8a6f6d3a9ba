"""
The contracts of txupgrade: what a protocol author implements.
"""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface


# Interface is named beside IPlugin (which already extends it) so that tools
# reading the source without importing Twisted, such as pydoctor, know this
# is an interface.
class IUpgradeProtocol(IPlugin, Interface):
    """
    A protocol that an HTTP/1.1 connection can switch to through C{Upgrade}.

    Call order, for one request whose offer lists this protocol's L{name}
    (and L{version}, when stated):

      1. L{negotiate} is called once the whole request, body included, has
         been read (R11). It returns a L{txupgrade.negotiation.Accept}, a
         L{txupgrade.negotiation.Decline} or a
         L{txupgrade.negotiation.Refuse}. A decline lets the channel try the
         client's next preference; a refusal is answered as an HTTP error and
         the connection stays HTTP/1.1. An exception counts as a C{500}.
      2. On C{Accept}, the channel calls L{buildProtocol} (unless the
         C{Accept} carries a C{protocol} already built): the C{101} is NOT
         on the wire yet, so an exception (or a L{None}) here is still
         answered C{500} and the connection stays HTTP/1.1.
      3. The channel writes C{101 Switching Protocols} with the accepted
         headers, then calls C{makeConnection(transport)} on the protocol,
         then C{dataReceived} once with every byte that followed the request
         (if any), then hands it the connection: every later byte and the
         final C{connectionLost} go to it. The HTTP idle timeout no longer
         applies, and the transport has no producer registered.

    It extends L{twisted.plugin.IPlugin}, so an instance in a module of L{txupgrade.plugins}
    is discovered by Twisted's plugin system.

    Implementations are shared by every connection: keep per-connection state
    in the protocol that L{buildProtocol} returns.
    """

    name = Attribute("The protocol token, as named in the C{101}; matched case-insensitively (R2).")
    version = Attribute("The protocol version token, or L{None} to accept any version offered.")

    def negotiate(request):
        """
        Decide whether to take C{request}.

        @param request: The original request.
        @type request: L{txupgrade.negotiation.UpgradeRequest}
        @return: L{txupgrade.negotiation.Accept} (optionally with extra C{101}
            headers), L{txupgrade.negotiation.Decline} or
            L{txupgrade.negotiation.Refuse}.
        """

    def buildProtocol(request, site):
        """
        Build the protocol that takes over the connection (R8).

        @param request: The original request; the new protocol answers it.
        @type request: L{txupgrade.negotiation.UpgradeRequest}
        @param site: The L{txupgrade.channel.UpgradeSite} that accepted the
            connection (for protocols that serve its resources, like h2c).
        @return: An L{twisted.internet.interfaces.IProtocol} provider.
        """


class IUpgradeResource(Interface):
    """
    A resource whose path is bound to protocols (a WebSocket endpoint, say).

    When a request for this resource offers one of L{upgradeProtocols}, the
    site negotiates them (with the connection-wide ones) in client preference
    order; otherwise the resource is rendered as usual, typically answering
    C{426 Upgrade Required} (R9).
    """

    upgradeProtocols = Attribute("A sequence of L{IUpgradeProtocol} providers, in server preference order.")


class IDrainable(Interface):
    """
    An upgraded protocol that can wind down gracefully (optional).

    Call order: when the daemon shuts down (C{SIGTERM} or C{SIGINT}), it stops
    accepting connections, then calls L{drain} once on every upgraded
    protocol that provides this interface, right away. The protocol then
    tells its peer (a WebSocket close C{1001}, an HTTP/2 C{GOAWAY}, a
    half-close) and closes its transport once the peer is done. Every
    connection still open when the drain deadline passes is aborted,
    whether or not its protocol provides this interface; a protocol without
    it simply keeps running until then.
    """

    def drain():
        """
        Start closing: stop taking new work, let the peer finish, then close.

        Must not raise; should return quickly (the result is ignored).
        """


class IConnectionOnly(Interface):
    """
    An L{IUpgradeProtocol} that takes over the connection itself rather than
    a byte stream on it (TLS, HTTP/2 by h2c): it is offered on HTTP/1.1
    only, never on an HTTP/2 stream by extended CONNECT (RFC 8441), where
    the connection stays HTTP/2. A marker: it has no methods.
    """
