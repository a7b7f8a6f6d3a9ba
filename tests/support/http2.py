"""
Helpers for the HTTP/2 tests: an h2-library client that records every
stream's answer, the bytes of h2c upgrades, and a site to serve; h2 as the
client of an in-memory connection keeping h2's events (L{H2EventClient}),
extended CONNECT headers, and an upgrade that records what it was offered.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from tests.support.http import SimpleUpgrade, request, switching
from txupgrade.channel import UpgradeSite
from txupgrade.interfaces import IUpgradeProtocol
from txupgrade.negotiation import Accept, UpgradeRequest
from txupgrade.protocols.echo import EchoResource
from txupgrade.protocols.h2c import H2cUpgrade
from txupgrade.resource import BytesResource, DirectoryResource, UpgradeRequiredResource
from txupgrade.testing import MemoryConnection, RecordingProtocol

#: The page served at C{/} by L{h2Site}.
PAGE = b"<html>the same site over HTTP/1.1 and HTTP/2</html>\n"


class Dynamic(Resource):
    """A dynamic leaf: answers with the method, the path and the body length."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        assert request.content is not None
        body = request.content.read()
        request.setHeader(b"Content-Type", b"text/plain")
        request.setHeader(b"X-Proto", request.clientproto)
        return b"%s %s %d\n" % (request.method, request.uri, len(body))


def later(clock: Any) -> Resource:
    """A leaf answered a second later on C{clock} (a deferred answer); cancelled if the client goes."""

    def render(request: Request) -> int:
        def answer() -> None:
            request.write(b"later\n")
            request.finish()

        call = clock.callLater(1, answer)
        request.notifyFinish().addErrback(lambda reason: call.cancel())
        return NOT_DONE_YET

    leaf = Resource()
    leaf.isLeaf = True
    leaf.render_GET = render  # type: ignore[attr-defined]
    return leaf


def h2Site(clock: Any = None, **kwargs: Any) -> UpgradeSite:
    """A site with static and dynamic paths, a 426 path, C{h2c} and C{echo}."""
    clock = clock if clock is not None else Clock()
    root = DirectoryResource()
    root.putChild(b"", BytesResource(PAGE, "text/html"))
    root.putChild(b"echo", EchoResource())
    root.putChild(b"dyn", Dynamic())
    root.putChild(b"later", later(clock))
    root.putChild(
        b"ws", UpgradeRequiredResource([SimpleUpgrade("websocket")], [(b"Sec-WebSocket-Version", b"13")])
    )
    kwargs.setdefault("reactor", clock)
    protocols = kwargs.pop("protocols", [H2cUpgrade(), SimpleUpgrade("echo")])
    site = UpgradeSite(root, protocols, **kwargs)
    site.log = lambda request: None  # type: ignore[method-assign]
    return site


@dataclass
class Answer:
    """What one stream got back."""

    status: bytes | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    ended: bool = False
    reset: int | None = None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class H2Client:
    """
    An h2 client that parses what a server sends and records each stream.

    It can send what RFC 9113 forbids (no outbound validation), to test
    that the server refuses it.
    """

    def __init__(self, upgrade: bool = False) -> None:
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.answers: dict[int, Answer] = {}
        self.goaway: Any = None
        self.settingsHeader = b""
        if upgrade:
            self.settingsHeader = self.conn.initiate_upgrade_connection() or b""
        else:
            self.conn.initiate_connection()

    def preface(self) -> bytes:
        """The client preface and SETTINGS (and anything else queued)."""
        return self.conn.data_to_send()

    def request(
        self,
        streamID: int,
        path: bytes = b"/",
        method: bytes = b"GET",
        extra: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        authority: bytes = b"127.0.0.1",
    ) -> bytes:
        """Queue one request on C{streamID}; return every byte to send."""
        headers = [(b":method", method), (b":scheme", b"http"), (b":path", path), (b":authority", authority)]
        headers.extend(extra or [])
        self.conn.send_headers(streamID, headers, end_stream=body is None)
        if body is not None:
            self.conn.send_data(streamID, body, end_stream=True)
        return self.conn.data_to_send()

    def receive(self, data: bytes) -> bytes:
        """Feed bytes from the server; return what the client answers (ACKs, WINDOW_UPDATEs)."""
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                answer = self.answers.setdefault(event.stream_id, Answer())
                answer.headers = list(event.headers)
                answer.status = dict(event.headers)[b":status"]
            elif isinstance(event, h2.events.DataReceived):
                self.answers.setdefault(event.stream_id, Answer()).body += event.data
                if event.flow_controlled_length:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.answers.setdefault(event.stream_id, Answer()).ended = True
            elif isinstance(event, h2.events.StreamReset):
                self.answers.setdefault(event.stream_id, Answer()).reset = int(event.error_code)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event
        return self.conn.data_to_send()


def h2cRequest(
    settings: bytes | None,
    target: bytes = b"/",
    method: bytes = b"GET",
    body: bytes | None = None,
    connection: bytes = b"Upgrade, HTTP2-Settings",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    """The bytes of an HTTP/1.1 request offering C{h2c}."""
    headers = [(b"Connection", connection), (b"Upgrade", b"h2c")]
    if settings is not None:
        headers.append((b"HTTP2-Settings", settings))
    headers.extend(extra or [])
    if body is not None:
        headers.append((b"Content-Length", b"%d" % len(body)))
    return request(method, target, headers, body or b"")


SWITCHING = switching(b"h2c")


def splitSwitch(received: bytes) -> bytes:
    """The HTTP/2 bytes after the C{101}; fails when the answer is not a C{101}."""
    if not received.startswith(SWITCHING):
        raise AssertionError(f"no 101 to h2c: {received[:200]!r}")
    return received[len(SWITCHING) :]


class H2Memory:
    """An in-memory connection to a site, with an L{H2Client} parsing the answers."""

    def __init__(self, site: UpgradeSite, chunkSize: int | None = None, upgrade: bool = False) -> None:
        self.connection = MemoryConnection(site, chunkSize=chunkSize)
        self.client = H2Client(upgrade=upgrade)
        self.seen = 0
        self.upgraded = not upgrade

    def send(self, data: bytes) -> None:
        """Send C{data}, then let the client answer until both sides are quiet."""
        self.connection.send(data)
        self.pump()

    def pump(self) -> None:
        """Feed the client what the server sent, and the server its replies."""
        self.connection.flush()
        for _ in range(1000):
            received = self.connection.received
            if not self.upgraded:
                if len(received) < len(SWITCHING):
                    return
                splitSwitch(received)
                self.seen = len(SWITCHING)
                self.upgraded = True
            fresh = received[self.seen :]
            self.seen = len(received)
            if not fresh:
                return
            reply = self.client.receive(fresh)
            if reply and not self.connection.serverTransport.disconnected:
                self.connection.send(reply)
        raise AssertionError("the peers never went quiet")


def decodeFrames(data: bytes) -> list[Any]:
    """The whole HTTP/2 frames in C{data}, parsed by hyperframe (a client h2 would stop at a GOAWAY)."""
    from hyperframe.frame import Frame

    frames = []
    view = memoryview(data)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        if len(view) < 9 + length:
            break
        frame.parse_body(view[9 : 9 + length])
        frames.append(frame)
        view = view[9 + length :]
    return frames


def pingAck(opaque: bytes) -> bytes:
    """The bytes of a C{PING} acknowledging C{opaque}."""
    from hyperframe.frame import PingFrame

    frame = PingFrame(0, opaque_data=opaque)
    frame.flags.add("ACK")
    return bytes(frame.serialize())


Headers = list[tuple[bytes, bytes]]


def connectHeaders(
    protocol: bytes = b"recording",
    path: bytes = b"/chat",
    drop: Iterable[bytes] = (),
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> Headers:
    """An extended CONNECT's header list (RFC 8441 §4), without the pseudo-headers in C{drop}."""
    headers = [
        (b":method", b"CONNECT"),
        (b":protocol", protocol),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"localhost"),
    ]
    return [h for h in headers if h[0] not in drop] + list(extra)


class H2EventClient:
    """h2 as the client of an in-memory connection to C{site}, by prior knowledge, keeping h2's events."""

    def __init__(self, site: UpgradeSite) -> None:
        self.memory = MemoryConnection(site)
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.h2.initiate_connection()
        self.seen = 0
        self.events: list[Any] = []
        self.flush()

    def flush(self) -> list[Any]:
        """Send what the client has queued; read the server's answer; the new events."""
        new: list[Any] = []
        while True:
            out = self.h2.data_to_send()
            if out:
                self.memory.send(out)
            else:
                self.memory.flush()
            data = self.memory.received
            if len(data) == self.seen:
                break
            new.extend(self.h2.receive_data(data[self.seen :]))
            self.seen = len(data)
        self.events.extend(new)
        return new

    def connect(
        self,
        protocol: bytes,
        streamID: int = 1,
        extra: list[tuple[bytes, bytes]] | None = None,
        path: bytes = b"/chat?room=1",
    ) -> None:
        """An extended CONNECT for C{protocol} on C{streamID} (the stream left open), flushed."""
        self.h2.send_headers(streamID, connectHeaders(protocol, path, extra=extra or ()))
        self.flush()

    def request(self, streamID: int, headers: Headers) -> None:
        """C{headers} (C{:method} first) with C{:scheme} and C{:authority}, the stream left open; flushed."""
        base = [(b":scheme", b"http"), (b":authority", b"localhost")]
        self.h2.send_headers(streamID, headers[:1] + base + headers[1:])
        self.flush()

    def of(self, streamID: int, kind: type) -> list[Any]:
        """The events of type C{kind} on C{streamID}."""
        return [e for e in self.events if isinstance(e, kind) and getattr(e, "stream_id", None) == streamID]

    def status(self, streamID: int) -> bytes | None:
        """The C{:status} of the answer on C{streamID}, if any."""
        for event in self.of(streamID, h2.events.ResponseReceived):
            return dict(event.headers)[b":status"]
        return None

    def body(self, streamID: int) -> bytes:
        """The data received on C{streamID}."""
        return b"".join(e.data for e in self.of(streamID, h2.events.DataReceived))


@implementer(IUpgradeProtocol)
class Recording:
    """An upgrade that records the request it was offered and the protocol it built."""

    name = "recording"
    version = None

    def __init__(self, decision: Any = None, build: Any = RecordingProtocol) -> None:
        self.decision = decision if decision is not None else Accept(headers=((b"X-Recorded", b"yes"),))
        self.build = build
        self.requests: list[UpgradeRequest] = []
        self.protocols: list[Any] = []

    def negotiate(self, request: UpgradeRequest) -> Any:
        self.requests.append(request)
        return self.decision

    def buildProtocol(self, request: UpgradeRequest, site: Any) -> Any:
        protocol = self.build()
        self.protocols.append(protocol)
        return protocol
