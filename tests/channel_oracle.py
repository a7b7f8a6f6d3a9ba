"""
An independent judge of what the channel must do with a byte stream.

Shared by the Hypothesis properties (C{tests/test_fuzz_channel.py}) and the
coverage-guided long mode (C{fuzz/fuzz_channel.py}): L{runStream} drives
bytes through the real L{UpgradeSite} in memory, with a given segmentation,
and L{checkStream} asserts the invariants against a reference reading of the
same bytes (L{parseRequests}, written from RFC 9112, not from Twisted):

 1. no exception escapes and nothing is logged as an error;
 2. no C{101} for a request with a framing problem, and a C{101} only for a
    request that offered a protocol the site serves;
 3. a request with a framing problem is answered C{4xx} (or not at all) and
    the connection is closed, with nothing answered after it;
 4. every complete request is answered or the connection closed, and after
    the idle timeout the connection is closed unless it switched;
 5. after a C{101}, the client gets back (C{echo}) exactly the bytes sent
    after the request, none lost or duplicated;
 6. for a well-formed request whose outcome the rules fix, the outcome
    (switch or not, C{413}) is that one.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.web.resource import Resource
from zope.interface import implementer

from txupgrade.channel import UpgradeSite
from txupgrade.interfaces import IUpgradeProtocol
from txupgrade.negotiation import Accept, Decision, Decline, UpgradeRequest
from txupgrade.protocols.echo import EchoProtocol, EchoResource, EchoUpgrade
from txupgrade.resource import DirectoryResource, UpgradeRequiredResource
from txupgrade.testing import MemoryConnection, RecordingProtocol

CRLF = b"\r\n"
TCHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TOKEN_PATTERN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN = re.compile(_TOKEN_PATTERN)
_PROTOCOL = re.compile(rb"(" + _TOKEN_PATTERN + rb")(?:/(" + _TOKEN_PATTERN + rb"))?")
_HEX = re.compile(rb"[0-9A-Fa-f]+")
#: Bytes a chunk extension may hold (RFC 9112 §7.1.1, as qdtext and token allow).
_CHUNK_EXT = re.compile(rb"[\t !\"#$%&'()*+,\-./0-9:;<=>?@A-Z\[\]^_`a-z{|}~\x80-\xff]*")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: Heads longer than this are not judged (the channel's size limits apply).
MAX_JUDGED_HEAD = 4096
#: The site's idle timeout is advanced past with the clock (seconds).
IDLE_ADVANCE = 13 * 3600 + 1

#: Protocols the test site serves: C{echo} on every path, C{ws} on C{/ws} for GET.
SERVED = ("echo", "ws")


@dataclass
class RefRequest:
    """
    One request as RFC 9112 reads it.

    @ivar problems: Framing or syntax errors that RFC 9112 says to answer
        C{400} (and that make the rest of the stream unreadable).
    @ivar tolerated: Deviations a recipient may accept (other CTLs in a
        value, a non-ASCII target byte, a malformed trailer line).
    @ivar headComplete: Whether the whole head (up to the empty line) is there.
    @ivar end: Offset just past the request (body included), or L{None}
        while incomplete or when it has a problem.
    @ivar persistent: Whether the connection stays open after it; L{None}
        when the C{Connection} field is ambiguous (e.g. C{"a close"}).
    @ivar offer: The offered protocols, C{(lower-cased name, version)}, or
        L{None} (no offer), or C{"error"} (a malformed C{Upgrade} list).
    @ivar bodyLength: The body's decoded length, when known.
    """

    start: int
    method: bytes = b""
    target: bytes = b""
    version: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    tolerated: list[str] = field(default_factory=list)
    headComplete: bool = False
    lineProblem: bool = False
    undetermined: bool = False
    end: int | None = None
    persistent: bool | None = True
    offer: Any = None
    bodyLength: int | None = None

    def values(self, name: bytes) -> list[bytes]:
        """Every value of header C{name} (lower-case)."""
        return [v for k, v in self.headers if k == name]


def _splitList(values: Iterable[bytes]) -> list[bytes]:
    elements = []
    for value in values:
        for element in value.split(b","):
            element = element.strip(b" \t")
            if element:
                elements.append(element)
    return elements


def _offer(req: RefRequest) -> Any:
    """The request's offer, as R1-R4 and R15 read it."""
    upgrade = req.values(b"upgrade")
    if req.version != b"HTTP/1.1" or not upgrade:
        return None
    options = {e.lower() for e in _splitList(req.values(b"connection")) if _TOKEN.fullmatch(e)}
    if b"upgrade" not in options:
        return None
    if sum(len(v) for v in upgrade) > 1024:
        return "error"
    elements = _splitList(upgrade)
    if len(elements) > 16:
        return "error"
    protocols = []
    for element in elements:
        match = _PROTOCOL.fullmatch(element)
        if match is None:
            return "error"
        protocols.append((match.group(1).lower().decode("ascii"), match.group(2)))
    return tuple(protocols) or None


def _persistent(req: RefRequest) -> bool | None:
    if req.version != b"HTTP/1.1":
        return False
    connection = req.values(b"connection")
    elements = [e.lower() for e in _splitList(connection)]
    if b"close" in elements:
        return False
    if any(b"close" in e.split() for e in elements):
        return None
    return True


def _parseHead(data: bytes, req: RefRequest, pos: int) -> int | None:
    """Read the request line and fields; the offset after the head, or L{None}."""
    if data.startswith(CRLF, pos):
        pos += 2  # one empty line before a request line may be ignored (§2.2)
    eol = data.find(CRLF, pos)
    if eol == -1:
        return None
    line = data[pos:eol]
    parts = line.split(b" ")
    if len(parts) != 3:
        req.problems.append("request line")
        req.lineProblem = True
        return None
    req.method, req.target, req.version = parts
    if not _TOKEN.fullmatch(req.method):
        req.problems.append("method")
    if not req.target:
        req.problems.append("empty target")
    elif any(c < 0x21 for c in req.target):
        req.problems.append("target")
    elif any(c > 0x7E for c in req.target):
        if any(c > 0xB0 for c in req.target):
            req.problems.append("target")
        else:
            req.tolerated.append("target byte")
    if req.version not in (b"HTTP/1.1", b"HTTP/1.0"):
        req.problems.append("version")
    if req.problems:
        req.lineProblem = True
        return None
    for line, after in _lines(data, eol + 2):
        if not line:
            return after
        if line[:1] in (b" ", b"\t"):
            req.problems.append("obs-fold")
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            req.problems.append("field without colon")
            continue
        if not _TOKEN.fullmatch(name):
            req.problems.append("field name")
            continue
        value = value.strip(b" \t")
        if b"\x00" in value or b"\r" in value or b"\n" in value:
            req.problems.append("CR, LF or NUL in a value")
            continue
        if _CTL.search(value):
            req.tolerated.append("CTL in a value")
        req.headers.append((name.lower(), value))
    return None


def _lines(data: bytes, pos: int) -> Iterator[tuple[bytes, int]]:
    """Each whole line from C{pos} on (without its CRLF), with the offset after it."""
    while (eol := data.find(CRLF, pos)) != -1:
        line, pos = data[pos:eol], eol + 2
        yield line, pos


def _chunkedEnd(data: bytes, req: RefRequest, pos: int) -> int | None:
    """The offset after a chunked body starting at C{pos}, or L{None}."""
    total = 0
    while True:
        eol = data.find(CRLF, pos)
        if eol == -1:
            if len(data) - pos > 1024:
                req.problems.append("chunk size line")
            return None
        if eol - pos >= 1024:
            req.problems.append("chunk size line")
            return None
        size, semi, ext = data[pos:eol].partition(b";")
        # BWS before ";" is allowed by RFC 9112 §7.1.1, but Twisted answers
        # it 400: rejecting is the safe side, so it counts as a problem here.
        if not _HEX.fullmatch(size) or (semi and not _CHUNK_EXT.fullmatch(ext)):
            req.problems.append("chunk size")
            return None
        length = int(size, 16)
        pos = eol + 2
        if length == 0:
            break
        if len(data) < pos + length + 2:
            return None
        if data[pos + length : pos + length + 2] != CRLF:
            req.problems.append("chunk end")
            return None
        pos += length + 2
        total += length
        req.bodyLength = total  # so far: a limit may apply before the end
    req.bodyLength = total
    for line, after in _lines(data, pos):
        if not line:
            return after
        name, colon, _value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            req.tolerated.append("malformed trailer")
    return None


#: What a site on a loopback address answers to by default (a defence
#: against DNS rebinding): any other C{Host} is answered 400.
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
_HOST = re.compile(rb"(?:\[([0-9A-Fa-f:.]+)\]|([^\[\]:]+))(?::[0-9]*)?")


def _hostName(value: bytes) -> str | None:
    """The lower-cased host of a C{Host} value (no port, no brackets), or L{None}."""
    match = _HOST.fullmatch(value)
    if match is None:
        return None
    return (match.group(1) or match.group(2)).decode("latin-1").lower()


def _parseOne(data: bytes, start: int) -> RefRequest:
    req = RefRequest(start)
    headEnd = _parseHead(data, req, start)
    if headEnd is None:
        return req
    req.headComplete = True
    if headEnd - start > MAX_JUDGED_HEAD:
        req.undetermined = True
    hosts = req.values(b"host")
    if len(hosts) > 1 or (req.version == b"HTTP/1.1" and not hosts):
        req.problems.append("Host count")
    elif hosts and _hostName(hosts[0]) not in LOOPBACK_NAMES:
        req.problems.append("Host not allowed")
    te = req.values(b"transfer-encoding")
    cl = req.values(b"content-length")
    chunked = False
    if te:
        if cl:
            req.problems.append("Transfer-Encoding with Content-Length")
        elif len(te) != 1 or te[0].lower() != b"chunked":
            req.problems.append("Transfer-Encoding not chunked")
        else:
            chunked = True
            if req.version != b"HTTP/1.1":
                req.tolerated.append("Transfer-Encoding in HTTP/1.0")
    if cl:
        if len(cl) != 1:
            req.problems.append("several Content-Length")
        elif not cl[0].isdigit():
            req.problems.append("Content-Length syntax")
    if req.problems:
        return req
    req.persistent = _persistent(req)
    req.offer = _offer(req)
    if chunked:
        req.end = _chunkedEnd(data, req, headEnd)
        return req
    length = int(cl[0]) if cl else 0
    req.bodyLength = length
    if len(data) >= headEnd + length:
        req.end = headEnd + length
    return req


def parseRequests(data: bytes) -> list[RefRequest]:
    """
    The requests of a stream, in order, as RFC 9112 reads them.

    Stops after a request with a problem, an incomplete one, one after which
    the connection does not persist, or at the end of the data.
    """
    requests: list[RefRequest] = []
    pos = 0
    while pos < len(data):
        req = _parseOne(data, pos)
        requests.append(req)
        if req.end is None or req.problems or req.persistent is not True or req.undetermined:
            break
        pos = req.end
    return requests


@dataclass
class RefResponse:
    """One response the client received."""

    code: int
    head: bytes
    body: bytes


def parseResponses(data: bytes, methods: Sequence[bytes]) -> tuple[list[RefResponse], bytes | None]:
    """
    Split what the client received into final responses (interim ones are
    dropped); stop after a C{101}.

    @param methods: The requests' methods in order (a C{HEAD} response has
        no body).
    @return: The final responses, and the bytes after a C{101} (L{None}
        without one).
    @raise AssertionError: On anything that is not a well-formed response.
    """
    responses: list[RefResponse] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        assert end != -1, f"incomplete response head: {data[pos:]!r}"
        head = data[pos:end]
        pos = end + 4
        status, *lines = head.split(CRLF)
        match = re.fullmatch(rb"HTTP/1\.[01] ([1-5][0-9][0-9]) [^\r\n]*", status)
        assert match is not None, f"bad status line {status!r}"
        code = int(match.group(1))
        fields: dict[bytes, list[bytes]] = {}
        for line in lines:
            name, colon, value = line.partition(b":")
            assert colon and _TOKEN.fullmatch(name), f"bad response field {line!r}"
            fields.setdefault(name.lower(), []).append(value.strip(b" \t"))
        if code == 101:
            responses.append(RefResponse(code, head, b""))
            return responses, data[pos:]
        if code < 200:
            continue
        index = len(responses)
        method = methods[index] if index < len(methods) else b"GET"
        if method == b"HEAD" or code in (204, 304):
            body = b""
        elif b"content-length" in fields:
            (length,) = {int(v) for v in fields[b"content-length"]}
            body = data[pos : pos + length]
            assert len(body) == length, f"short body in {data[pos - len(head) - 4 :]!r}"
            pos += length
        elif [v.lower() for v in fields.get(b"transfer-encoding", [])] == [b"chunked"]:
            chunks = []
            while True:
                eol = data.find(CRLF, pos)
                assert eol != -1, "incomplete chunked response"
                size = int(data[pos:eol].split(b";")[0], 16)
                pos = eol + 2
                if size == 0:
                    assert data[pos : pos + 2] == CRLF, "chunked response trailer"
                    pos += 2
                    break
                chunks.append(data[pos : pos + size])
                pos += size + 2
            body = b"".join(chunks)
        else:
            body, pos = data[pos:], len(data)  # delimited by the close
        responses.append(RefResponse(code, head, body))
    return responses, None


# --------------------------------------------------------------------------
# The site under test
# --------------------------------------------------------------------------


class _Show(Resource):
    """Answers C{METHOD path body}: which request was answered is visible."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        body = request.content.read() if request.content is not None else b""
        return request.method + b" " + request.uri + b" " + body


@implementer(IUpgradeProtocol)
class _WsLike:
    """A path-bound protocol (on C{/ws}): accepts C{GET} only, then echoes."""

    name = "ws"
    version = None

    def negotiate(self, request: UpgradeRequest) -> Decision:
        if request.method != b"GET":
            return Decline("GET only")
        return Accept()

    def buildProtocol(self, request: UpgradeRequest, site: object) -> EchoProtocol:
        return EchoProtocol()


class _DynamicRoot(DirectoryResource):
    """A root that finds children in code: the decision is made at render time."""

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        return super().getChildWithDefault(path, request)


def makeSite(clock: Clock, dynamic: bool = False, maxUpgradeBodySize: int | None = None) -> UpgradeSite:
    """The test site: C{/show}, C{/echo}, C{/ws} (C{ws} only), C{echo} everywhere."""
    root = _DynamicRoot() if dynamic else DirectoryResource()
    root.putChild(b"show", _Show())
    root.putChild(b"echo", EchoResource())
    root.putChild(b"ws", UpgradeRequiredResource([_WsLike()]))
    return UpgradeSite(
        root, [EchoUpgrade()], reactor=clock, logPath=None, maxUpgradeBodySize=maxUpgradeBodySize
    )


@implementer(ILogObserver)
class ErrorCollector:
    """Keeps every log event that is an error or carries a failure."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if "log_failure" in event or "failure" in event or level in (LogLevel.error, LogLevel.critical):
            self.errors.append(event)

    def __enter__(self) -> ErrorCollector:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)


@dataclass
class Observation:
    """What one run of a stream through the channel produced."""

    received: bytes
    closedBeforeTimeout: bool
    closedAfterTimeout: bool
    errors: list[dict[str, Any]]
    maxUpgradeBodySize: int


#: Sites are kept between runs (they hold no state between connections).
_sites: dict[tuple[bool, int | None], tuple[Clock, UpgradeSite]] = {}

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
HOST = IPv4Address("TCP", "127.0.0.1", 8080)


def runStream(
    pieces: Sequence[bytes],
    *,
    dynamic: bool = False,
    chunkSize: int | None = None,
    maxUpgradeBodySize: int | None = None,
) -> Observation:
    """
    Send C{pieces} (one write each, delivered in C{chunkSize} reads) to a
    fresh test site in memory; then let the idle timeout pass, then hang up.
    """
    key = (dynamic, maxUpgradeBodySize)
    if key not in _sites:
        clock = Clock()
        _sites[key] = (clock, makeSite(clock, dynamic, maxUpgradeBodySize))
    clock, site = _sites[key]
    with ErrorCollector() as collector:
        conn = MemoryConnection(site, chunkSize=chunkSize, peer=PEER, host=HOST)
        for piece in pieces:
            conn.send(piece)
        closedBefore = conn.serverTransport.disconnecting
        clock.advance(IDLE_ADVANCE)
        conn.flush()
        clock.advance(IDLE_ADVANCE)  # a forced abort after the timeout, if any
        conn.flush()
        closedAfter = conn.serverTransport.disconnecting
        conn.close()
    client = conn.client
    assert isinstance(client, RecordingProtocol)
    return Observation(
        bytes(client.data), closedBefore, closedAfter, collector.errors, site.maxUpgradeBodySize
    )


#: How the first byte's bits 1-2 cut the reads of a fuzzing input.
_CHUNK_SIZES = (None, None, 1, 3)


def decodeInput(data: bytes) -> tuple[bytes, list[bytes], dict[str, Any]]:
    """
    A fuzzing input's stream, its writes and the run's options (for
    L{runStream}): the first byte picks the site and the read size, the next
    up to three bytes cut the stream into writes, the rest is the stream.
    """
    if not data:
        return b"", [], {}
    flags = data[0]
    options: dict[str, Any] = {
        "dynamic": bool(flags & 1),
        "chunkSize": _CHUNK_SIZES[(flags >> 1) & 3],
        "maxUpgradeBodySize": 16 if flags & 8 else None,
    }
    cutCount = (flags >> 4) & 3
    cuts, stream = data[1 : 1 + cutCount], data[1 + cutCount :]
    return stream, cut(stream, [c * len(stream) // 255 for c in cuts]), options


def cut(data: bytes, offsets: Iterable[int]) -> list[bytes]:
    """C{data} in pieces, cut at C{offsets} (any order, repeats give empty pieces)."""
    bounds = [0, *sorted(offsets), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _describe(event: dict[str, Any]) -> str:
    failure = event.get("log_failure") or event.get("failure")
    text = str(event.get("log_format"))
    if failure is not None:
        text += "\n" + failure.getTraceback()
    return text


def checkStream(stream: bytes, seen: Observation) -> None:
    """
    Assert the invariants (see the module docstring) of C{stream} and what
    the channel did with it.

    @raise AssertionError: With what broke.
    """
    assert not seen.errors, "errors logged:\n" + "\n".join(_describe(e) for e in seen.errors)
    requests = parseRequests(stream)
    methods = [r.method for r in requests]
    responses, afterSwitch = parseResponses(seen.received, methods)
    codes = [r.code for r in responses]
    switched = afterSwitch is not None
    # At most one final response per request, in order (when the reference
    # read the whole stream: not past an ambiguous Connection or a huge head).
    if not requests or (requests[-1].persistent is not None and not requests[-1].undetermined):
        assert len(responses) <= len(requests), (codes, requests)
    for index, (req, response) in enumerate(zip(requests, responses, strict=False)):
        if response.code == 101:
            assert index == len(responses) - 1
            assert not req.problems, f"101 for a request with problems {req.problems}"
            assert req.end is not None, "101 before the request was complete"
            assert isinstance(req.offer, tuple), f"101 without a valid offer: {req.offer!r}"
            assert any(name in SERVED for name, _version in req.offer), req.offer
            assert afterSwitch == stream[req.end :], (
                f"bytes after the switch: sent {stream[req.end :]!r}, echoed {afterSwitch!r}"
            )
        elif req.problems:
            assert 400 <= response.code < 500, f"{response.code} for a request with {req.problems}"
    # A request with a problem: the connection is closed, nothing after it is answered.
    lastHTTP = len(responses) - 1 if switched else len(requests) - 1
    for index, req in enumerate(requests[: lastHTTP + 1]):
        if req.problems and not req.undetermined:
            assert len(responses) <= index + 1, (codes, req.problems)
            assert not switched, req.problems
            if req.headComplete or req.lineProblem:
                assert seen.closedBeforeTimeout, f"not closed after a request with {req.problems}"
    # Every connection is closed by the idle timeout, unless it switched.
    assert switched or seen.closedAfterTimeout, "still open after the idle timeout"
    # Every complete, well-formed request before the last is answered, unless closed.
    judged = [r for r in requests if not r.undetermined]
    complete = [r for r in judged if r.end is not None and not r.problems]
    if not seen.closedBeforeTimeout and not switched:
        assert len(responses) >= len(complete), (codes, len(complete))
    # Outcomes the rules fix, for well-formed requests.
    for index, req in enumerate(complete):
        if index >= len(responses):
            break
        code = responses[index].code
        expected = _expectedOutcome(req, seen.maxUpgradeBodySize)
        if expected == "switch":
            assert code == 101, f"expected a switch, got {code} for offer {req.offer}"
        elif expected == "too large":
            assert code == 413, f"expected 413, got {code}"
        elif expected == "no switch":
            assert code != 101


def _expectedOutcome(req: RefRequest, limit: int) -> str | None:
    """C{"switch"}, C{"too large"}, C{"no switch"}, or L{None} when the rules leave it open."""
    if req.offer is None or req.offer == "error":
        return "no switch"
    if not req.target.startswith(b"/"):
        return None  # asterisk- or absolute-form: twisted.web's answer decides
    if req.bodyLength is not None and req.bodyLength > limit:
        return "too large"
    for name, _version in req.offer:
        if name == "echo":
            return "switch"
        if name == "ws":
            return None  # depends on the path and method
    return "no switch"
