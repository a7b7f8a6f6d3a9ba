"""
The sans-IO rules of HTTP/2 on the cleartext port, shared by the C{h2c}
upgrade (L{txupgrade.protocols.h2c}) and the HTTP/2 connection
(L{txupgrade._h2connection}): the connection preface, the C{HTTP2-Settings}
header, and the request as stream 1 carries it. Both import this module, and
neither the other's (no cycle).
"""

from __future__ import annotations

import binascii
import re
import struct
from base64 import urlsafe_b64decode

from txupgrade.negotiation import UpgradeRequest

__all__ = [
    "CONNECTION_SPECIFIC",
    "MAX_SETTINGS",
    "PREFACE",
    "H2SettingsError",
    "parseSettingsHeader",
    "stream1Headers",
]

#: Response fields that have no meaning in HTTP/2 (RFC 9113 §8.2.2).
CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"upgrade", b"keep-alive", b"proxy-connection", b"transfer-encoding"}
)

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
