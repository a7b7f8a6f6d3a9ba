"""
HTTP/2 on the cleartext port: the C{h2c} upgrade and the rules it checks.

Theory of operation
===================
L{H2cUpgrade} is a built-in L{IUpgradeProtocol}, found as a plugin like any
other. It accepts an C{Upgrade: h2c} request (RFC 7540 §3.2, still what
curl and nghttp send; RFC 9113 §3.1 leaves it to HTTP/1.1) only on a
cleartext connection and only with exactly one C{HTTP2-Settings} header that
C{Connection} also lists and that holds a valid base64url SETTINGS payload
(L{parseSettingsHeader}); anything else is declined, so the request is
answered in HTTP/1.1 without a C{101}. The protocol it builds
(L{txupgrade._h2connection}) answers the original request on stream 1 from
the same site, then serves the connection's later streams.

This module is sans-IO and cheap to import: the plugin scan imports it, and
the C{h2} library (extra C{h2c}) is imported only when a connection is
actually upgraded or served as HTTP/2.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from txupgrade._h2rules import MAX_SETTINGS, PREFACE, H2SettingsError, parseSettingsHeader, stream1Headers
from txupgrade.interfaces import IConnectionOnly, IUpgradeProtocol
from txupgrade.negotiation import Accept, Decision, Decline, UpgradeRequest, parseConnectionOptions

__all__ = [
    "MAX_SETTINGS",
    "PREFACE",
    "H2SettingsError",
    "H2cUpgrade",
    "h2Available",
    "parseSettingsHeader",
    "stream1Headers",
]


def h2Available() -> bool:
    """Whether the C{h2} extra (h2 and Twisted's HTTP/2) can be imported."""
    global _h2Available
    if _h2Available is None:
        try:
            import h2.connection  # noqa: F401
            import twisted.web._http2  # noqa: F401
        except ImportError:
            _h2Available = False
        else:
            _h2Available = True
    return _h2Available


_h2Available: bool | None = None


@implementer(IUpgradeProtocol, IConnectionOnly)
class H2cUpgrade:
    """
    The connection-wide C{h2c} protocol: HTTP/2 after an HTTP/1.1 request.

    Declines (the request is then answered in HTTP/1.1) on TLS, without the
    h2 library, or without exactly one valid C{HTTP2-Settings} header that
    C{Connection} lists.
    """

    name = "h2c"
    version = None

    def negotiate(self, request: UpgradeRequest) -> Decision:
        """Check the RFC 7540 §3.2 conditions; accept, or decline."""
        if request.secure:
            return Decline("h2c is for cleartext connections; TLS uses ALPN h2")
        settings = request.getHeaders(b"http2-settings")
        if len(settings) != 1:
            return Decline(f"h2c needs exactly one HTTP2-Settings header, got {len(settings)}")
        if b"http2-settings" not in parseConnectionOptions(request.getHeaders(b"connection")):
            return Decline("Connection does not list HTTP2-Settings")
        try:
            parseSettingsHeader(settings[0])
        except H2SettingsError as error:
            return Decline(str(error))
        if not h2Available():
            return Decline("the h2 library is not installed (extra 'h2c')")
        return Accept()

    def buildProtocol(self, request: UpgradeRequest, site: Any) -> Any:
        """An HTTP/2 connection of C{site} that answers C{request} on stream 1."""
        from txupgrade._h2connection import buildH2Connection

        return buildH2Connection(site, upgradeRequest=request)
