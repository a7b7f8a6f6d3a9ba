"""
Extended CONNECT (RFC 8441) on txupgrade's HTTP/2 connection: the stream a
C{CONNECT} with C{:protocol} opens, negotiated like an C{Upgrade} offer and then
the switched protocol's transport, and when a site offers it at all.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import h2.errors
import h2.exceptions
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.python.failure import Failure
from twisted.web import _http2

from txupgrade import negotiation
from txupgrade._h2rules import CONNECTION_SPECIFIC
from txupgrade.interfaces import IConnectionOnly, IUpgradeResource
from txupgrade.negotiation import UpgradeError
from txupgrade.offer import OfferNegotiation
from txupgrade.reporting import pluginFailed

__all__ = ["ConnectStream", "extendedConnectProtocol", "offersExtendedConnect"]

_END = _http2._END_STREAM_SENTINEL
_NO_ERROR = h2.errors.ErrorCodes.NO_ERROR


class _StreamBytes:
    """
    Stands in for a switched stream's request: what Twisted's stream hands
    its request (body chunks, the end of the body, a loss) goes to the
    protocol now on the stream instead.
    """

    def __init__(self, stream: ConnectStream, protocol: Any) -> None:
        self.stream = stream
        self.protocol = protocol
        self.lost = False

    def handleContentChunk(self, data: bytes) -> None:
        if not self.lost:
            self.protocol.dataReceived(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """The client's END_STREAM: a half-close for a protocol that takes one, else the end."""
        if self.lost:
            return
        if IHalfCloseableProtocol.providedBy(self.protocol):
            self.protocol.readConnectionLost()
        else:
            self.stream.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connectionLost(reason)


class ConnectStream(_http2.H2Stream):
    """
    A stream opened by an extended CONNECT (RFC 8441 §4): its request is
    negotiated at once, by the same L{txupgrade.offer} rules as an
    C{Upgrade} offer, with C{:protocol} as the offer; on a switch it answers
    C{200} and becomes the protocol's transport (its DATA frames the bytes
    both ways, flow control the backpressure, END_STREAM the half-close, a
    reset the loss). A refusal is an ordinary response on the stream.
    """

    disconnecting = False
    _bytes: _StreamBytes | None = None
    _remoteEnded = False
    _inbound: deque[Any] | None = None

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        # Never used by twisted.web: an idle stream need not hold it.
        del self._buffer

    # A stream holds the deque of DATA it could not yet deliver (its protocol
    # paused) only once there is some: an idle WebSocket holds none.

    @property
    def _inboundDataBuffer(self) -> deque[Any]:
        if self._inbound is None:
            self._inbound = deque()
        return self._inbound

    @_inboundDataBuffer.setter
    def _inboundDataBuffer(self, value: deque[Any]) -> None:
        self._inbound = value or None

    def startNegotiation(self, protocolValue: bytes) -> None:
        """Negotiate C{:protocol}'s value as the stream's request's offer, now."""
        request = self._request
        site = self.site
        finder = getattr(site, "allowedHostsFor", None)
        allowed = finder(self.getHost()) if finder is not None else None
        try:
            names = negotiation.parseProtocolList([protocolValue], maxOffered=1)
        except UpgradeError as error:
            request.upgrade = OfferNegotiation(error=error, allowedHosts=allowed)
        else:
            request.upgrade = OfferNegotiation(negotiation.Offer(names), allowedHosts=allowed)
        request.content.seek(0)
        request.requestReceived(self.command, self.path, b"HTTP/2")

    def switchStream(self, request: Any, outcome: Any) -> None:
        """Answer C{200} (with the plugin's headers) and give the stream to C{outcome.protocol}."""
        headers = [(b":status", b"200")]
        headers.extend((n.lower(), v) for n, v in outcome.headers if n.lower() not in CONNECTION_SPECIFIC)
        connection = self._conn
        try:
            connection.conn.send_headers(self.streamID, headers)
        except h2.exceptions.StreamClosedError:
            return
        request.code, request.code_message, request.sentLength = 200, b"OK", 0
        # Logged once, as any request (the access log shows the CONNECT and its 200).
        self.factory.log(request)
        # The daemon's tracking hears of it through the connection's transport.
        streamSwitched = getattr(connection.transport, "streamSwitched", None)
        if streamSwitched is not None:
            streamSwitched(outcome.name, self.streamID)
        protocol = outcome.protocol
        self._bytes = self._request = _StreamBytes(self, protocol)
        connection._tryToWriteControlData()
        early = b""
        if request.content is not None:
            request.content.seek(0)
            early = request.content.read()
        try:
            protocol.makeConnection(self)
            # DATA that came while a plugin's negotiate was pending is the protocol's.
            if early and not self.disconnecting:
                self._bytes.handleContentChunk(early)
            if self._remoteEnded:
                self._bytes.requestReceived(b"CONNECT", self.path or b"", b"HTTP/2")
        except Exception:  # noqa: BLE001 - the new protocol's bug must not reach the connection
            pluginFailed(
                self.site,
                connection._log,
                outcome.name,
                "start",
                Failure(),
                "Protocol {protocol} failed to start on an HTTP/2 stream from {peer}",
                peer=connection._peer(),
            )
            self.abortConnection()

    def receiveDataChunk(self, data: bytes, flowControlledLength: int) -> None:
        """Before a switch, the request's body; once answered otherwise, dropped (the window given back)."""
        if self._bytes is None and self._request.content is None:
            self._conn.conn.acknowledge_received_data(flowControlledLength, self.streamID)
            return
        super().receiveDataChunk(data, flowControlledLength)

    def requestComplete(self) -> None:
        """The client's END_STREAM: the protocol's half-close, or (before a switch) kept for it."""
        if self._bytes is None:
            self._remoteEnded = True
            return
        super().requestComplete()

    def loseConnection(self) -> None:
        self.disconnecting = True
        super().loseConnection()

    def streamFinished(self) -> None:
        """Both ends are done (or ours, and the rest is reset): the protocol's connection is lost."""
        self.disconnecting = True
        if self._bytes is not None:
            self._bytes.connectionLost(Failure(ConnectionDone("The stream ended")))
            # Nothing here holds the protocol's side any more (nor, once
            # registered by it, the stream itself as its producer): freed at
            # once, not left to the cyclic garbage collector.
            self._bytes = self._request = self.producer = None


def extendedConnectProtocol(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """C{:protocol}'s value when the request is an extended CONNECT (RFC 8441 §4), else L{None}."""
    method = value = None
    for name, field in headers:
        if not name.startswith(b":"):
            break
        if name == b":method":
            method = field
        elif name == b":protocol":
            value = field
    return value if method == b"CONNECT" else None


#: How many resources of a site's tree L{offersExtendedConnect} looks at, at most.
TREE_LIMIT = 1000


def offersExtendedConnect(site: Any) -> bool:
    """
    Whether C{site} offers extended CONNECT: it says so, and a protocol that
    can live on a stream is offered, by the site or by an L{IUpgradeResource}
    among the static children of its tree (read once, at the site's first
    HTTP/2 connection, up to L{TREE_LIMIT} resources).
    """
    if not getattr(site, "extendedConnect", False):
        return False
    if any(not IConnectionOnly.providedBy(p) for p in getattr(site, "protocols", ())):
        return True
    known = site.__dict__.get("_streamResources")
    if known is None:
        known = site._streamResources = _treeOffersStreams(getattr(site, "resource", None))
    return known


def _treeOffersStreams(root: Any) -> bool:
    """Whether a resource under C{root} (its static children) offers a protocol that can live on a stream."""
    pending, seen = [root], 0
    while pending and seen < TREE_LIMIT:
        resource = pending.pop()
        seen += 1
        if IUpgradeResource.providedBy(resource) and any(
            not IConnectionOnly.providedBy(p) for p in resource.upgradeProtocols
        ):
            return True
        pending.extend(getattr(resource, "children", {}).values())
    return False
