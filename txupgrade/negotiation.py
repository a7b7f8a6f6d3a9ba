"""
Sans-IO rules of the HTTP/1.1 C{Upgrade} mechanism (RFC 9110 §7.8).

Theory of operation
===================
Rule 1: everything that decides *whether* and *to what* a connection switches
lives here, and nothing here does I/O: this module imports nothing from
C{twisted.internet}. The Twisted glue (L{txupgrade.channel}) hands us parsed
header lines and gets back a decision plus the exact bytes to write.

Rule 2: every failure raises L{UpgradeError}, which carries the HTTP status
the caller should answer with (C{statusHint}). Nothing else escapes.

Rule 3: an C{Upgrade} offer exists only on an HTTP/1.1 request whose
C{Connection} field lists the C{upgrade} option (R3, R4); otherwise the
C{Upgrade} field is ignored as if absent, and is not even validated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal, Union

__all__ = [
    "LOOPBACK_HOSTS",
    "MAX_OFFERED",
    "MAX_UPGRADE_FIELD",
    "UPGRADE_BYTES_PER_OFFER",
    "Accept",
    "Decision",
    "Decline",
    "Offer",
    "ProtocolName",
    "Refuse",
    "UpgradeError",
    "UpgradeRequest",
    "checkFraming",
    "formatProtocols",
    "hostAllowed",
    "hostName",
    "matches",
    "offerFromHeaders",
    "parseConnectionOptions",
    "parseProtocolList",
    "reasonPhrase",
    "selectionOrder",
    "simpleResponse",
    "switchingResponse",
    "upgradeRequiredHeaders",
    "upgradeRequiredResponse",
    "upgradedName",
    "validateHeaders",
]

#: Most protocols one C{Upgrade} offer may list, by default (R15).
MAX_OFFERED = 16
#: Bytes of C{Upgrade} field value allowed per protocol the offer may list.
UPGRADE_BYTES_PER_OFFER = 64
#: Largest combined C{Upgrade} field value we parse by default, in bytes (R15).
MAX_UPGRADE_FIELD = MAX_OFFERED * UPGRADE_BYTES_PER_OFFER

# RFC 9110 §5.6.2: token = 1*tchar
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN)
_PROTOCOL_RE = re.compile(rb"(" + _TOKEN + rb")(?:/(" + _TOKEN + rb"))?")
# RFC 9110 §5.5: field-value = *field-content; no CR, LF or NUL.
_FIELD_VALUE_RE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_OWS = b" \t"

# Reason phrases, including the one Twisted lacks (426).
_REASONS = {
    100: b"Continue",
    101: b"Switching Protocols",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    426: b"Upgrade Required",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    503: b"Service Unavailable",
}

Headers = tuple[tuple[bytes, bytes], ...]


class UpgradeError(Exception):
    """
    The request or a plugin's answer breaks the rules; answer C{statusHint}.

    @ivar statusHint: The HTTP status the caller should send (400 for a bad
        request, 413 for an oversized body, 500 for a faulty plugin).
    @ivar limit: The name of the configurable limit the request went past
        (C{"max-upgrade-offers"}), or L{None}.
    """

    def __init__(self, message: str, statusHint: int = 400, limit: str | None = None) -> None:
        super().__init__(message)
        self.statusHint = statusHint
        self.limit = limit


@dataclass(frozen=True, order=True)
class ProtocolName:
    """
    One C{protocol-name ["/" protocol-version]} element of an C{Upgrade} list.

    C{name} is kept as sent; comparisons use L{key}, since names are
    case-insensitive (R2).
    """

    name: str
    version: str | None = None

    @property
    def key(self) -> str:
        """The case-folded name used for matching."""
        return self.name.lower()

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}/{self.version}"


@dataclass(frozen=True)
class Offer:
    """
    A client's valid upgrade invitation: the protocols in descending preference.
    """

    protocols: tuple[ProtocolName, ...]


@dataclass(frozen=True)
class UpgradeRequest:
    """
    The original request, as the new protocol receives it (R8, R11).

    @ivar method: The request method, e.g. C{b"GET"}.
    @ivar target: The request target as sent, e.g. C{b"/chat?room=1"}.
    @ivar version: The HTTP version, e.g. C{b"HTTP/1.1"}.
    @ivar headers: Every header line, names lower-cased; lines of one name
        keep their order, names come in order of first arrival.
    @ivar body: The whole decoded request body (R11).
    @ivar offer: The client's parsed offer.
    @ivar peer: The client's address (an C{IAddress}), when known.
    @ivar host: The server's address (an C{IAddress}), when known.
    @ivar secure: Whether the connection is already TLS.
    @ivar allowedHosts: The host names (lower-case, no port) the site
        answers to, or L{None} for any; a same-origin check compares with
        these rather than with the request's own C{Host} (DNS rebinding).
    """

    method: bytes
    target: bytes
    version: bytes
    headers: Headers
    body: bytes = b""
    offer: Offer = field(default_factory=lambda: Offer(()))
    peer: Any = None
    host: Any = None
    secure: bool = False
    allowedHosts: frozenset[str] | None = None

    def getHeader(self, name: bytes) -> bytes | None:
        """The first value of header C{name} (any case), or L{None}."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def getHeaders(self, name: bytes) -> list[bytes]:
        """Every value of header C{name} (any case), in arrival order."""
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    @property
    def announcesBody(self) -> bool:
        """Whether the request had a body or framing that announced one (perhaps empty)."""
        return (
            bool(self.body)
            or self.getHeader(b"content-length") is not None
            or bool(self.getHeader(b"transfer-encoding"))
        )

    @property
    def path(self) -> bytes:
        """The target without its query string."""
        return self.target.split(b"?", 1)[0]


@dataclass(frozen=True)
class Accept:
    """
    A plugin takes the request: send C{101} and switch.

    @ivar headers: Extra headers for the C{101} (e.g. C{Sec-WebSocket-Accept}).
    @ivar upgrade: The protocols to name in the C{101}'s C{Upgrade} field,
        in layer-ascending order (R7, e.g. C{("TLS/1.2", "HTTP/1.1")});
        by default the protocol as the plugin names it.
    @ivar protocol: The protocol to take over the connection, when
        negotiating had to build it already (to consult it, as autobahn's
        C{onConnect} is); then C{buildProtocol} is not called.
    """

    headers: Headers = ()
    upgrade: tuple[str, ...] | None = None
    protocol: Any = None


@dataclass(frozen=True)
class Decline:
    """A plugin cannot serve this request; try the client's next preference."""

    reason: str = ""


@dataclass(frozen=True)
class Refuse:
    """
    A plugin rejects the request outright with an HTTP error.

    @ivar status: The HTTP status, 4xx or 5xx.
    @ivar headers: Headers of the error response.
    @ivar body: The error response's body.
    """

    status: int
    headers: Headers = ()
    body: bytes = b""
    reason: str = ""


Decision = Union[Accept, Decline, Refuse]  # noqa: UP007 - a runtime alias on 3.10


def _splitList(values: Iterable[bytes]) -> list[bytes]:
    """Split #list field lines on commas, drop OWS and empty elements (R1)."""
    elements = []
    for value in values:
        for element in value.split(b","):
            element = element.strip(_OWS)
            if element:
                elements.append(element)
    return elements


def parseProtocolList(values: Sequence[bytes], maxOffered: int = MAX_OFFERED) -> tuple[ProtocolName, ...]:
    """
    Parse the C{Upgrade} field lines into protocols, in the order sent (R1).

    @param maxOffered: The most protocols the list may name; it may take
        L{UPGRADE_BYTES_PER_OFFER} bytes per protocol (R15).
    @raise UpgradeError: (400) on a non-token name or version, or a list that
        is over those limits (then with C{limit="max-upgrade-offers"}).
    """
    if sum(len(v) for v in values) > maxOffered * UPGRADE_BYTES_PER_OFFER:
        raise UpgradeError("Upgrade field too long", limit="max-upgrade-offers")
    elements = _splitList(values)
    if len(elements) > maxOffered:
        raise UpgradeError("Upgrade field lists too many protocols", limit="max-upgrade-offers")
    protocols = []
    for element in elements:
        match = _PROTOCOL_RE.fullmatch(element)
        if match is None:
            raise UpgradeError(f"malformed protocol in Upgrade: {element.decode('latin-1')!r}")
        name, version = match.group(1), match.group(2)
        protocols.append(
            ProtocolName(name.decode("ascii"), None if version is None else version.decode("ascii"))
        )
    return tuple(protocols)


def parseConnectionOptions(values: Sequence[bytes]) -> frozenset[bytes]:
    """
    The lower-cased options of every C{Connection} line (R3).

    Elements that are not tokens are skipped: they cannot name C{upgrade}.
    """
    return frozenset(e.lower() for e in _splitList(values) if _TOKEN_RE.fullmatch(e))


def offerFromHeaders(
    version: bytes, upgrade: Sequence[bytes], connection: Sequence[bytes], maxOffered: int = MAX_OFFERED
) -> Offer | None:
    """
    The client's offer, or L{None} when the rules say to ignore C{Upgrade}.

    An offer needs HTTP/1.1 (R4), an C{upgrade} option in C{Connection}
    (R3), and at least one listed protocol (and at most C{maxOffered}, see
    L{parseProtocolList}).

    Clients send the same few field values again and again, so answers are
    remembered (a bounded cache of pure results, errors included).

    @raise UpgradeError: (400) when an honoured C{Upgrade} is malformed.
    """
    if not upgrade or version != b"HTTP/1.1":
        return None
    key = (tuple(upgrade), tuple(connection), maxOffered)
    answer = _offerCache.get(key)
    if answer is None:
        try:
            answer = _parseOffer(upgrade, connection, maxOffered)
        except UpgradeError as error:
            answer = error
        if sum(map(len, upgrade)) + sum(map(len, connection)) <= _CACHED_FIELDS_SIZE:
            if len(_offerCache) >= _OFFER_CACHE_SIZE:
                _offerCache.clear()
            _offerCache[key] = answer
    if isinstance(answer, UpgradeError):
        raise UpgradeError(str(answer), answer.statusHint, answer.limit)
    return answer if isinstance(answer, Offer) else None


#: Most remembered offers (and 101 heads, and host names); a cache is emptied when full.
_OFFER_CACHE_SIZE = 512
#: Field values longer than this (bytes, all lines) are parsed every time.
_CACHED_FIELDS_SIZE = 256
_offerCache: dict[tuple[tuple[bytes, ...], tuple[bytes, ...], int], Offer | UpgradeError | bool] = {}


def _parseOffer(upgrade: Sequence[bytes], connection: Sequence[bytes], maxOffered: int) -> Offer | bool:
    """L{offerFromHeaders} without its cache; C{False} for no offer."""
    if b"upgrade" not in parseConnectionOptions(connection):
        return False
    protocols = parseProtocolList(upgrade, maxOffered)
    if not protocols:
        return False
    return Offer(protocols)


def matches(offered: ProtocolName, name: str, version: str | None) -> bool:
    """
    Whether a plugin named C{name}[/C{version}] answers C{offered} (R2).

    Names compare case-insensitively; a version the plugin states must equal
    the offered one.
    """
    if offered.key != name.lower():
        return False
    return version is None or offered.version == version


def selectionOrder(
    offer: Offer,
    candidates: Sequence[Any],
    nameOf: Callable[[Any], tuple[str, str | None]],
    policy: Literal["client", "server"] = "client",
) -> list[tuple[ProtocolName, Any]]:
    """
    The (offered protocol, candidate) pairs to try, best first (R6).

    Only protocols the client listed ever appear. With the C{"client"} policy
    the client's order decides and the candidates' order breaks ties; with
    C{"server"} the candidates' order decides.
    """
    # Each name read and case-folded once (as L{matches} compares them), not once per pair.
    named = [(name.lower(), version) for name, version in map(nameOf, candidates)]
    pairs = []
    for ci, offered in enumerate(offer.protocols):
        key, offeredVersion = offered.key, offered.version
        for si, (name, version) in enumerate(named):
            if name == key and (version is None or version == offeredVersion):
                rank = (ci, si) if policy == "client" else (si, ci)
                pairs.append((rank, offered, candidates[si]))
    if len(pairs) > 1:
        pairs.sort(key=lambda p: p[0])
    return [(offered, candidate) for _, offered, candidate in pairs]


def validateHeaders(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """
    Check header names are tokens and values hold no CR, LF or NUL.

    @raise UpgradeError: (500) since bad headers here come from a plugin.
    """
    checked = []
    for name, value in headers:
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise UpgradeError("header names and values must be bytes", 500)
        if not _TOKEN_RE.fullmatch(name) or not _FIELD_VALUE_RE.fullmatch(value):
            raise UpgradeError(f"invalid header from plugin: {name!r}", 500)
        checked.append((name, value))
    return tuple(checked)


def formatProtocols(protocols: Iterable[str]) -> bytes:
    """
    Join protocol names into an C{Upgrade} value, checking each is valid.

    @raise UpgradeError: (500) on a name that is not C{token["/"token]}.
    """
    names = []
    for protocol in protocols:
        raw = protocol.encode("ascii", "replace")
        if not _PROTOCOL_RE.fullmatch(raw):
            raise UpgradeError(f"invalid protocol name: {protocol!r}", 500)
        names.append(raw)
    if not names:
        raise UpgradeError("no protocol to name", 500)
    return b", ".join(names)


def reasonPhrase(status: int) -> bytes:
    """The reason phrase txupgrade sends with C{status} (RFC 9110 §15), e.g. C{426 Upgrade Required}."""
    reason = _REASONS.get(status)
    if reason is None:
        try:
            reason = HTTPStatus(status).phrase.encode("ascii")
        except ValueError:
            reason = b"Unknown"
    return reason


def _head(status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (status, reasonPhrase(status))]
    lines.extend(name + b": " + value for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def switchingResponse(upgrade: Sequence[str], extra: Headers = ()) -> bytes:
    """
    The bytes of a C{101 Switching Protocols} (R7).

    @param upgrade: The chosen protocol(s), layer-ascending.
    @param extra: Headers the plugin adds; validated here.
    @raise UpgradeError: (500) when the plugin's names or headers are invalid.
    """
    key = tuple(upgrade)
    start = _switchingStarts.get(key)
    if start is None:
        value = formatProtocols(upgrade)
        start = _head(101, ((b"Upgrade", value), (b"Connection", b"Upgrade")))[:-2]
        if len(_switchingStarts) >= _OFFER_CACHE_SIZE:
            _switchingStarts.clear()
        _switchingStarts[key] = start
    if not extra:
        return start + b"\r\n"
    lines = [start]
    for name, value in validateHeaders(extra):
        if name.lower() not in (b"upgrade", b"connection"):
            lines.append(name + b": " + value + b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


_switchingStarts: dict[tuple[str, ...], bytes] = {}


def upgradeRequiredHeaders(protocols: Sequence[str]) -> Headers:
    """The C{Upgrade} and C{Connection} headers of a C{426} (R9)."""
    return ((b"Upgrade", formatProtocols(protocols)), (b"Connection", b"Upgrade"))


def simpleResponse(
    status: int, headers: Iterable[tuple[bytes, bytes]] = (), body: bytes = b"", close: bool = False
) -> bytes:
    """
    A complete small HTTP/1.1 response with a C{Content-Length}.

    Used where the channel answers by itself (400, 413, a plugin's C{Refuse}).
    """
    allHeaders = list(validateHeaders(headers))
    names = {name.lower() for name, _ in allHeaders}
    if b"content-type" not in names and body:
        allHeaders.append((b"Content-Type", b"text/plain; charset=utf-8"))
    allHeaders = [h for h in allHeaders if h[0].lower() != b"content-length"]
    allHeaders.append((b"Content-Length", b"%d" % len(body)))
    if close:
        allHeaders.append((b"Connection", b"close"))
    return _head(status, allHeaders) + body


def upgradeRequiredResponse(protocols: Sequence[str], body: bytes = b"") -> bytes:
    """A complete C{426 Upgrade Required} naming C{protocols} (R9)."""
    return simpleResponse(426, upgradeRequiredHeaders(protocols), body)


# Request framing (R16): what makes a request ambiguous to an intermediary.


def checkFraming(version: bytes, hosts: Sequence[bytes], transferCodings: Sequence[bytes]) -> None:
    """
    Refuse a request whose framing or target an intermediary could read differently (R16).

    An HTTP/1.1 request needs exactly one C{Host}, any request at most one,
    and its value must be C{uri-host [":" port]} or empty (RFC 9112 §3.2);
    a C{Transfer-Encoding} must be exactly C{chunked} (RFC 9112 §6.1: any
    other coding leaves the body length unknowable to us, and an
    C{identity} beside a C{Content-Length} is how smuggling starts).

    @param hosts: Every C{Host} field line.
    @param transferCodings: Every C{Transfer-Encoding} field line.
    @raise UpgradeError: (400) naming the problem.
    """
    if version == b"HTTP/1.1" and len(hosts) != 1:
        raise UpgradeError("an HTTP/1.1 request needs exactly one Host" if hosts else "no Host header")
    if len(hosts) > 1:
        # Any version (RFC 9112 §3.2): the allow-list reads the first, twisted.web the last.
        raise UpgradeError("a request may carry only one Host")
    if hosts and hosts[0] and hostName(hosts[0]) is None:
        raise UpgradeError("the Host header is not a host name or address with an optional port")
    if transferCodings and (
        len(transferCodings) != 1 or transferCodings[0].strip(_OWS).lower() != b"chunked"
    ):
        raise UpgradeError("Transfer-Encoding must be exactly chunked")


def hostName(host: bytes) -> str | None:
    """
    The lower-case name in a C{Host} value (no port, IPv6 without brackets),
    or L{None} when the value is not C{uri-host [":" port]} (RFC 9110 §7.2).
    """
    if host in _hostNames:
        return _hostNames[host]
    match = _HOST_RE.fullmatch(host)
    name = None if match is None else (match.group(1) or match.group(2)).decode("ascii").lower()
    if len(host) <= _CACHED_FIELDS_SIZE:
        if len(_hostNames) >= _OFFER_CACHE_SIZE:
            _hostNames.clear()
        _hostNames[host] = name
    return name


#: Remembered L{hostName} answers (every request asks twice, and a server hears few hosts).
_hostNames: dict[bytes, str | None] = {}


# reg-name / IPv4 (RFC 3986 unreserved, pct-encoded, sub-delims) or an IP literal, then a port.
_HOST_RE = re.compile(rb"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9\-._~%!$&'()*+,;=]+))(?::[0-9]*)?")


def hostAllowed(host: bytes, allowed: frozenset[str] | None) -> bool:
    """
    Whether a C{Host} value names one of C{allowed} (L{None}: any host).

    An entry C{"*.example.com"} allows every subdomain of C{example.com};
    C{"*"} allows any host.
    """
    if allowed is None or "*" in allowed:
        return True
    name = hostName(host)
    if name is None:
        return False
    if name in allowed:
        return True
    parts = name.split(".")
    return any("*." + ".".join(parts[i:]) in allowed for i in range(1, len(parts)))


#: The names of this machine a loopback listener answers to by default.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def upgradedName(head: bytes) -> str:
    """The first protocol named in the C{Upgrade} line of a C{101} head."""
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade":
            return value.split(b",")[0].strip().decode("latin-1") or "?"
    return "?"
