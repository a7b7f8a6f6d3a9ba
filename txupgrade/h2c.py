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

import binascii
import re
import struct
from base64 import urlsafe_b64decode
from typing import Any

from zope.interface import implementer

from txupgrade.interfaces import IUpgradeProtocol
from txupgrade.negotiation import Accept, Decision, Decline, UpgradeRequest, parseConnectionOptions

__all__ = [
    "PREFACE",
    "H2SettingsError",
    "H2cUpgrade",
    "h2Available",
    "parseSettingsHeader",
    "stream1Headers",
]

#: The client connection preface (RFC 9113 §3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# RFC 9113 §6.5.2: identifiers whose values are bounded.
_ENABLE_PUSH = 0x2
_INITIAL_WINDOW_SIZE = 0x4
_MAX_FRAME_SIZE = 0x5
_ENABLE_CONNECT_PROTOCOL = 0x8
_BASE64URL = re.compile(rb"[A-Za-z0-9_-]+={0,2}")
#: Most settings one header may carry: a client has no reason to send more
#: than one of each of the few defined identifiers.
MAX_SETTINGS = 32

# Request header fields that do not cross into HTTP/2 (RFC 9113 §8.2.2), plus
# the fields of the upgrade itself and those stream 1 carries as
# pseudo-headers or already satisfied (Expect: the body is read).
_NOT_ON_STREAM_1 = frozenset(
    {
        b"connection",
        b"upgrade",
        b"http2-settings",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"host",
        b"expect",
        b"content-length",
        b"te",
    }
)


class H2SettingsError(ValueError):
    """An C{HTTP2-Settings} value that is not a valid SETTINGS payload."""


def parseSettingsHeader(value: bytes) -> list[tuple[int, int]]:
    """
    Decode an C{HTTP2-Settings} value (RFC 7540 §3.2.1) into its settings.

    @return: The C{(identifier, value)} pairs, in order.
    @raise H2SettingsError: On bad base64url, a payload whose length is not
        a multiple of 6, more than L{MAX_SETTINGS} settings, or a value
        RFC 9113 §6.5.2 forbids (which h2 would raise on after the C{101}).
    """
    value = value.strip(b" \t")
    if not _BASE64URL.fullmatch(value):
        raise H2SettingsError("HTTP2-Settings is not base64url")
    try:
        payload = urlsafe_b64decode(value.rstrip(b"=") + b"=" * (-len(value.rstrip(b"=")) % 4))
    except (binascii.Error, ValueError) as error:
        raise H2SettingsError(f"HTTP2-Settings does not decode: {error}") from None
    if len(payload) % 6:
        raise H2SettingsError("HTTP2-Settings payload is not a whole number of settings")
    if len(payload) // 6 > MAX_SETTINGS:
        raise H2SettingsError("HTTP2-Settings carries too many settings")
    settings = list(struct.iter_unpack("!HL", payload))
    for identifier, setting in settings:
        if identifier in (_ENABLE_PUSH, _ENABLE_CONNECT_PROTOCOL) and setting > 1:
            raise H2SettingsError(f"setting {identifier:#x} must be 0 or 1")
        if identifier == _INITIAL_WINDOW_SIZE and setting > 0x7FFFFFFF:
            raise H2SettingsError("SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
        if identifier == _MAX_FRAME_SIZE and not (1 << 14) <= setting <= (1 << 24) - 1:
            raise H2SettingsError("SETTINGS_MAX_FRAME_SIZE out of range")
    return settings


def stream1Headers(request: UpgradeRequest) -> list[tuple[bytes, bytes]]:
    """
    The HTTP/2 header list of the upgraded request, as stream 1 carries it.

    Pseudo-headers first (C{:authority} from C{Host}), then every other
    field, names lower-cased, without the connection-specific ones (RFC 9113
    §8.2.2) and the upgrade's own; C{Content-Length} is the length of the
    body as read (a chunked body included).
    """
    host = request.getHeader(b"host")
    headers = [(b":method", request.method), (b":scheme", b"http"), (b":path", request.target)]
    if host is not None:
        headers.append((b":authority", host))
    te = [v for v in request.getHeaders(b"te") if v.strip().lower() == b"trailers"]
    headers.extend((name, value) for name, value in request.headers if name not in _NOT_ON_STREAM_1)
    if te:
        headers.append((b"te", b"trailers"))
    if request.announcesBody:
        headers.append((b"content-length", b"%d" % len(request.body)))
    return headers


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


@implementer(IUpgradeProtocol)
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
