"""
Sans-IO checks of a WebSocket opening handshake (RFC 6455 §4.2.1, §4.2.2).

Theory of operation
===================
L{checkHandshake} takes a request twisted.web has already parsed (method,
target, header lines) and the server's policy (origins, allowed hosts), and
returns a L{Handshake}: the fields of an accepted handshake, as autobahn's
own parser would have presented them, plus the C{Sec-WebSocket-Accept}
value. Every refusal raises L{HandshakeError}, which carries the HTTP status,
headers and reason to answer with; nothing else escapes. This module does no
I/O and imports neither C{twisted.internet} nor autobahn: filling in an
autobahn protocol from a L{Handshake} is L{txupgrade.protocols.websocket}'s job.

The rules, checked in this order (the first that fails decides):

  - W1: the method is C{GET} (§4.1), else C{405} with C{Allow: GET};
  - W2: exactly one C{Host} line, else C{400};
  - W3: exactly one C{Sec-WebSocket-Version} line, whose value is C{13},
    else C{426} with C{Upgrade}, C{Connection} and
    C{Sec-WebSocket-Version: 13} (§4.4);
  - W4: exactly one C{Sec-WebSocket-Key} line, the base64 of 16 bytes, else
    C{400};
  - W5: an C{Origin}, when present, is allowed by the policy (see
    L{originAllowed}), else C{403};
  - W6: C{Sec-WebSocket-Protocol} lists tokens, none twice, else C{400};
  - W7: C{Sec-WebSocket-Extensions} is a list of C{token *(";" param)}
    where a parameter is C{token ["=" (token | quoted token)]} (§9.1),
    else C{400}.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Union
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "VERSION_HEADERS",
    "Handshake",
    "HandshakeError",
    "acceptKey",
    "checkHandshake",
    "originAllowed",
    "originTuple",
    "wildcardPatterns",
]

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

#: The header a C{426} for WebSocket names the version with (RFC 6455 §4.4).
VERSION_HEADERS = ((b"Sec-WebSocket-Version", b"13"),)
_VERSION_REFUSAL_HEADERS = ((b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"), *VERSION_HEADERS)

#: One parsed extension offer: its lower-cased name, and each parameter's
#: values in order (C{True} for a parameter without a value), as autobahn
#: presents them.
ExtensionOffer = tuple[str, dict[str, list[Union[str, bool]]]]  # noqa: UP007 - a runtime alias on 3.10
#: An origin as (scheme, host, port), or C{"null"}.
Origin = Union[tuple[str, str, Union[int, None]], str]  # noqa: UP007


class HandshakeError(Exception):
    """
    The handshake is refused: answer with C{status}, C{headers} and C{reason}.

    @ivar status: The HTTP status (400, 403, 405 or 426).
    @ivar headers: Headers the answer must carry (C{Allow} for 405, the
        upgrade and version headers for 426).
    @ivar reason: A one-line explanation, for the body and the log.
    """

    def __init__(self, status: int, reason: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


class Handshake(NamedTuple):
    """
    An accepted handshake's fields.

    @ivar headers: The request's headers as autobahn presents them: names
        lower-cased, the values of repeated lines joined with C{", "}.
    @ivar key: The client's C{Sec-WebSocket-Key}, stripped.
    @ivar accept: The C{Sec-WebSocket-Accept} value for L{key}.
    @ivar host: The C{Host} value; L{hostName} is it without its port.
    @ivar origin: The C{Origin} value, or C{""} when there was none.
    @ivar protocols: The subprotocols offered, in the client's order.
    @ivar extensions: The extension offers, in the client's order.
    @ivar target: The request target as text; L{path} and L{params} are its
        path and its parsed query (C{parse_qs}).
    """

    headers: dict[str, str]
    key: bytes
    accept: bytes
    host: str
    hostName: str
    origin: str
    protocols: tuple[str, ...]
    extensions: tuple[ExtensionOffer, ...]
    target: str
    path: str
    params: dict[str, list[str]]


def acceptKey(key: bytes) -> bytes:
    """C{Sec-WebSocket-Accept} for a client's C{Sec-WebSocket-Key} (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())


def wildcardPatterns(wildcards: Iterable[str]) -> list[re.Pattern[str]]:
    """
    Origin patterns from autobahn-style wildcards: C{*} matches anything,
    and the whole origin (C{scheme://host:port}) must match.
    """
    return [re.compile("^" + w.replace(".", r"\.").replace("*", ".*") + "$") for w in wildcards]


def originTuple(origin: str) -> Origin:
    """
    An C{Origin} value as C{(scheme, host, port)}, or C{"null"} for the null
    origin (and for C{file:} pages, as autobahn treats them).

    @raise ValueError: when it names no host.
    """
    if origin.lower() == "null":
        return "null"
    parts = urlsplit(origin)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return "null"
    host = parts.hostname
    port = parts.port
    if port is None:
        port = {"https": 443, "http": 80}.get(scheme)
    if not host:
        raise ValueError(f"no host in Origin {origin!r}")
    return scheme, host, port


def originAllowed(
    origin: str,
    host: str,
    secure: bool,
    patterns: Sequence[re.Pattern[str]] | None = None,
    allowNullOrigin: bool = True,
    allowedHosts: frozenset[str] | None = None,
) -> bool:
    """
    Whether a browser page of C{origin} may open this WebSocket.

    With C{patterns} (see L{wildcardPatterns}), the origin must match one;
    C{Origin: null} then is allowed when C{allowNullOrigin} says so.
    Without, the origin must be this server's: the scheme of the
    connection, the port of the C{Host} header, and as host name one of
    C{allowedHosts} (lower-case names without port) or, when that is
    L{None}, the C{Host} header's own (which a DNS-rebinding page controls).
    C{Origin: null} is then never allowed: any page can send it from a
    sandboxed frame.
    """
    try:
        parsed = originTuple(origin)
    except ValueError:
        return False
    if isinstance(parsed, str):
        return patterns is not None and allowNullOrigin
    scheme, originHost, originPort = parsed
    if patterns is not None:
        text = f"{scheme}://{originHost}:{originPort}"
        return any(pattern.match(text) for pattern in patterns)
    hereScheme = "https" if secure else "http"
    try:
        here = urlsplit(f"{hereScheme}://{host}")
        herePort = here.port or (443 if secure else 80)
    except ValueError:
        return False
    if scheme != hereScheme or originPort != herePort:
        return False
    if allowedHosts is not None:
        return originHost.lower() in allowedHosts
    return originHost.lower() == (here.hostname or "").lower()


def _joinedHeaders(lines: Iterable[tuple[bytes, bytes]]) -> tuple[dict[str, str], dict[str, int]]:
    """
    The headers as autobahn's C{parseHttpHeader} presents them (lower-cased
    names, repeated lines joined with C{", "}), and how many lines each had
    (only names seen more than once are counted).
    """
    headers: dict[str, str] = {}
    repeated: dict[str, int] = {}
    for name, value in lines:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip()
        previous = headers.get(key)
        if previous is None:
            headers[key] = text
        else:
            headers[key] = f"{previous}, {text}"
            repeated[key] = repeated.get(key, 1) + 1
    return headers, repeated


def _parseExtensions(value: str) -> tuple[ExtensionOffer, ...]:
    """
    Parse C{Sec-WebSocket-Extensions} (W7), into autobahn's shape.

    @raise HandshakeError: (400) on an element that breaks the grammar.
    """
    offers: list[ExtensionOffer] = []
    for element in value.split(","):
        element = element.strip()
        if not element:
            continue
        name, *rawParams = (part.strip() for part in element.split(";"))
        if not _TOKEN_RE.fullmatch(name):
            raise HandshakeError(400, f"malformed Sec-WebSocket-Extensions element {element!r}")
        params: dict[str, list[str | bool]] = {}
        for param in rawParams:
            key, equals, raw = (part.strip() for part in param.partition("="))
            parsedValue: str | bool = True
            if equals:
                parsedValue = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
            if not _TOKEN_RE.fullmatch(key) or (equals and not _TOKEN_RE.fullmatch(str(parsedValue))):
                raise HandshakeError(400, f"malformed Sec-WebSocket-Extensions parameter {param!r}")
            params.setdefault(key.lower(), []).append(parsedValue)
        offers.append((name.lower(), params))
    return tuple(offers)


def checkHandshake(
    method: bytes,
    target: bytes,
    lines: Iterable[tuple[bytes, bytes]],
    *,
    secure: bool = False,
    originPatterns: Sequence[re.Pattern[str]] | None = None,
    allowNullOrigin: bool = True,
    allowedHosts: frozenset[str] | None = None,
    http2: bool = False,
) -> Handshake:
    """
    Check a WebSocket opening handshake against rules W1-W7.

    With C{http2}, the handshake is an HTTP/2 extended CONNECT (RFC 8441
    §5): C{CONNECT} rather than C{GET}, and no C{Sec-WebSocket-Key} (the
    C{200} carries no C{Sec-WebSocket-Accept}); the rest is checked alike.

    @param lines: The request's header lines, in arrival order.
    @param secure: Whether the connection is TLS (the origin's scheme).
    @param originPatterns: L{None} for the same-origin policy, or the
        allowed origins (see L{originAllowed}).
    @param allowedHosts: The site's host allow-list, or L{None}.
    @raise HandshakeError: The first rule the request breaks.
    """
    if method != (b"CONNECT" if http2 else b"GET"):
        raise HandshakeError(405, "a WebSocket handshake must be a GET", ((b"Allow", b"GET"),))
    headers, repeated = _joinedHeaders(lines)
    host = headers.get("host")
    if host is None or "host" in repeated:
        raise HandshakeError(400, "a WebSocket handshake needs exactly one Host")
    if headers.get("sec-websocket-version") != "13" or "sec-websocket-version" in repeated:
        raise HandshakeError(426, "this server speaks WebSocket version 13", _VERSION_REFUSAL_HEADERS)
    key = b"" if http2 else headers.get("sec-websocket-key", "").encode("latin-1")
    try:
        valid = http2 or (
            "sec-websocket-key" not in repeated and len(base64.b64decode(key, validate=True)) == 16
        )
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise HandshakeError(400, "Sec-WebSocket-Key must be 16 bytes in base64")
    origin = headers.get("origin", "")
    if origin and not originAllowed(origin, host, secure, originPatterns, allowNullOrigin, allowedHosts):
        raise HandshakeError(403, f"origin {origin!r} not allowed")
    offered = headers.get("sec-websocket-protocol")
    protocols: tuple[str, ...] = ()
    if offered:
        protocols = tuple(p.strip() for p in offered.split(",") if p.strip())
        if not all(_TOKEN_RE.fullmatch(p) for p in protocols):
            raise HandshakeError(400, "Sec-WebSocket-Protocol must list tokens")
        if len(set(protocols)) != len(protocols):
            raise HandshakeError(400, "duplicate Sec-WebSocket-Protocol values")
    offeredExtensions = headers.get("sec-websocket-extensions")
    extensions = _parseExtensions(offeredExtensions) if offeredExtensions else ()
    text = target.decode("latin-1")
    if text.startswith("/"):
        path, _, query = text.partition("?")
    else:
        try:
            parts = urlsplit(text)
        except ValueError:
            raise HandshakeError(400, "malformed request target") from None
        path, query = parts.path, parts.query
    hostName = host.rsplit(":", 1)[0] if ":" in host and not host.endswith("]") else host
    return Handshake(
        headers,
        key,
        b"" if http2 else acceptKey(key),
        host,
        hostName,
        origin,
        protocols,
        extensions,
        text,
        path,
        parse_qs(query) if query else {},
    )
