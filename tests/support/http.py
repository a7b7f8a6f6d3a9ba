"""
HTTP/1.1 for the tests: the bytes of requests, the one response parser (h11
reads what a client received), and the small resources and upgrade protocols
the end-to-end sites serve.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import h11
from twisted.internet.protocol import Protocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from txupgrade.interfaces import IUpgradeProtocol
from txupgrade.negotiation import Accept, Decision, UpgradeRequest


def request(
    method: bytes = b"GET",
    target: bytes = b"/",
    headers: Iterable[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    version: bytes = b"HTTP/1.1",
    host: bytes = b"127.0.0.1",
) -> bytes:
    """The raw bytes of one request (add C{Content-Length} yourself)."""
    lines = [method + b" " + target + b" " + version, b"Host: " + host]
    lines.extend(name + b": " + value for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def upgrade(
    protocols: bytes = b"echo",
    target: bytes = b"/",
    connection: bytes = b"Upgrade",
    extra: Iterable[tuple[bytes, bytes]] = (),
    *,
    method: bytes = b"GET",
    body: bytes = b"",
) -> bytes:
    """
    The raw bytes of an upgrade request: C{Connection}, C{Upgrade}, then
    C{extra} (framing the C{body} is C{extra}'s job).
    """
    return request(
        method,
        target,
        [(b"Connection", connection), (b"Upgrade", protocols), *extra],
        body,
    )


def switching(protocol: bytes = b"echo") -> bytes:
    """The exact head of a C{101} switching to C{protocol} (R7)."""
    return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + protocol + b"\r\nConnection: Upgrade\r\n\r\n"


# Only the exact shapes twisted.web writes, so that no other byte is dropped.
_VOLATILE = re.compile(
    rb"^(?:Date: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT"
    rb"|Server: TwistedWeb/[^\r\n]*)\r\n",
    re.MULTILINE,
)


def normalize(data: bytes) -> bytes:
    """C{data} without the C{Date} and C{Server} header lines twisted.web writes."""
    return _VOLATILE.sub(b"", data)


@dataclass(frozen=True)
class Response:
    """
    One parsed HTTP/1.x response.

    @ivar code: The status code.
    @ivar reason: The reason phrase.
    @ivar version: The HTTP version, as in C{b"1.1"}.
    @ivar headers: Every header as sent, C{(name, value)}, names in their case.
    @ivar body: The body, de-chunked; C{b""} for a C{1xx}.
    """

    code: int
    reason: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    @property
    def status(self) -> bytes:
        """The status line, as in C{b"HTTP/1.1 200 OK"}."""
        return b"HTTP/%s %d %s" % (self.version, self.code, self.reason)

    def header(self, name: bytes) -> list[bytes]:
        """Every value of header C{name} (any case), in order."""
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def byName(self) -> dict[bytes, list[bytes]]:
        """C{{lower-case name: [values]}}."""
        found: dict[bytes, list[bytes]] = {}
        for name, value in self.headers:
            found.setdefault(name.lower(), []).append(value)
        return found


def _client() -> h11.Connection:
    """
    An h11 client that has sent one request proposing an upgrade, so that
    it accepts any answer to it, a C{101} included.
    """
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x"), ("Upgrade", "any")]))
    conn.send(h11.EndOfMessage())
    return conn


def _head(event: h11.Response | h11.InformationalResponse) -> Response:
    return Response(event.status_code, event.reason, event.http_version, list(event.headers.raw_items()), b"")


def _next(conn: h11.Connection, data: bytes) -> Any:
    try:
        return conn.next_event()
    except h11.RemoteProtocolError as error:
        raise AssertionError(f"not a valid HTTP response ({error}): {data!r}") from None


def parseHead(data: bytes) -> tuple[Response, bytes] | None:
    """
    The head of the response at the start of C{data} (its body left out),
    and the bytes after the head; L{None} while the head is incomplete.
    """
    if not data:
        return None
    conn = _client()
    conn.receive_data(data)
    event = _next(conn, data)
    if event is h11.NEED_DATA:
        return None
    assert isinstance(event, (h11.Response, h11.InformationalResponse)), event
    return _head(event), conn.trailing_data[0]


def parseResponses(data: bytes) -> tuple[list[Response], bytes]:
    """
    Every response in what a client received, up to and including a C{101}.

    A response framed by the end of the connection ends with C{data}.

    @return: The responses, and the bytes after the C{101} (or C{b""}).
    @raise AssertionError: If C{data} does not end with a whole response.
    """
    if not data:
        return [], b""
    conn = _client()
    conn.receive_data(data)  # (b"" would mean the end of the connection)
    responses: list[Response] = []
    head: Response | None = None
    body = bytearray()
    while True:
        event = _next(conn, data)
        if event is h11.NEED_DATA:
            if head is None and not conn.trailing_data[0]:
                return responses, b""
            if conn.their_state is h11.SEND_BODY and not conn.trailing_data[1]:
                conn.receive_data(b"")  # a body framed by the close ends here
                continue
            raise AssertionError(f"incomplete response at the end of {data!r}")
        if isinstance(event, h11.InformationalResponse):
            responses.append(_head(event))
            if event.status_code == 101:
                return responses, conn.trailing_data[0]
        elif isinstance(event, h11.Response):
            head, body = _head(event), bytearray()
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            responses.append(Response(head.code, head.reason, head.version, head.headers, bytes(body)))
            head = None
            if conn.their_state is not h11.DONE or not conn.trailing_data[0]:
                return responses, b""
            conn.start_next_cycle()
            conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x"), ("Upgrade", "any")]))
            conn.send(h11.EndOfMessage())
        else:
            raise AssertionError(f"unexpected {event!r} in {data!r}")


def parseResponse(data: bytes) -> Response:
    """The one whole response C{data} holds (a C{101} may be followed by other bytes)."""
    responses, _ = parseResponses(data)
    if len(responses) != 1:
        raise AssertionError(f"{len(responses)} responses in {data!r}")
    return responses[0]


class Hello(Resource):
    """A leaf answering C{GET} with C{hello <path>}, C{POST} with the body."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain")
        return b"hello " + request.path

    def render_POST(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain")
        return b"posted " + request.content.read()


def holdsResponses(data: bytes, count: int = 1) -> bool:
    """Whether C{data} holds at least C{count} whole responses (L{False} while one is cut short)."""
    try:
        responses, _ = parseResponses(data)
    except AssertionError:
        return False
    return len(responses) >= count


class Held(Resource):
    """A leaf that never answers a C{GET} by itself: each stays in C{pending} until the test finishes it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Any] = []

    def render_GET(self, request: Any) -> object:
        self.pending.append(request)
        return NOT_DONE_YET


def plainResponse(body: bytes, extra: bytes = b"") -> bytes:
    """The normalized bytes of L{Hello}'s C{200} for C{body}."""
    return (
        b"HTTP/1.1 200 OK\r\n"
        + extra
        + b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )


@implementer(IUpgradeProtocol)
class SimpleUpgrade:
    """
    A configurable test protocol: accepts (or returns C{decision}) and builds
    C{factory(request)}, by default a L{TaggedEcho}.
    """

    def __init__(
        self,
        name: str,
        factory: Callable[[UpgradeRequest], Protocol] | None = None,
        version: str | None = None,
        decision: Callable[[UpgradeRequest], Decision] | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self._factory = factory
        self._decision = decision
        self.requests: list[UpgradeRequest] = []

    def negotiate(self, request: UpgradeRequest) -> Decision:
        self.requests.append(request)
        if self._decision is not None:
            return self._decision(request)
        return Accept()

    def buildProtocol(self, request: UpgradeRequest, site: object) -> Protocol:
        if self._factory is None:
            return TaggedEcho(self.name.encode("ascii"))
        return self._factory(request)


class TaggedEcho(Protocol):
    """Echo every byte, after announcing which protocol took the connection."""

    def __init__(self, tag: bytes) -> None:
        self.tag = tag

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"[" + self.tag + b"]")

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


#: A sample of a C{/metrics} page: its name and its labels.
MetricKey = tuple[str, frozenset[tuple[str, str]]]


def scrapeMetrics(port: int, timeout: float = 10.0) -> dict[MetricKey, float]:
    """Every sample of the C{/metrics} page on C{127.0.0.1:port}, by name and labels (blocking)."""
    import http.client

    from prometheus_client.parser import text_string_to_metric_families

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200, response.status
        text = response.read().decode()
    finally:
        connection.close()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
