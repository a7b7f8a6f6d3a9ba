"""
Twisted's HTTP/2 connection, adapted to serve an L{UpgradeSite}.

Theory of operation
===================
L{H2Connection} subclasses C{twisted.web._http2.H2Connection} (private API,
Twisted's own ALPN C{h2} server) for four reasons:

  1. B{h2c}: after the C{101}, stream 1 is the upgraded request. The
     connection starts with C{initiate_upgrade_connection} and the request,
     already read by HTTP/1.1, becomes stream 1 (L{txupgrade.protocols.h2c.stream1Headers})
     answered by the site like any other stream.
  2. B{Malformed requests are stream errors} (RFC 9113 §8.1.1, §8.2.2): h2
     would end the whole connection on a request carrying C{Upgrade},
     C{Connection}, C{Keep-Alive}, C{Transfer-Encoding} or any other
     connection-specific field. Here h2 is told not to validate inbound
     headers; this class validates each request with h2's own validator and
     resets just that stream with C{PROTOCOL_ERROR}: other streams go on, and
     such a request never reaches the site, let alone an upgrade protocol.
     A second header block without END_STREAM on a request, and any on a
     switched CONNECT stream, are malformed the same way (L{_ServerState});
     a plain CONNECT (a tunnel, RFC 9113 §8.5) is answered C{501}.
     Resets the server sends count, like the client's, against Twisted's
     reset budget (CVE-2023-44487 and its server-provoked variant).
     Responses never carry connection-specific fields (a resource that
     answers C{426} with C{Upgrade} under HTTP/1.1 answers without it here).
  3. B{Graceful drain} (L{IDrainable}, RFC 9113 §6.8): h2 ends its state
     machine on the first C{GOAWAY} it sends (it would refuse every later
     frame), so the drain's two C{GOAWAY} frames are written beside it:
     first one that allows every stream with a C{PING}, then, when the
     C{PING} comes back (one round trip: streams the client opened
     meanwhile are in), one naming the last stream; the streams up to it
     are answered, later ones refused, and the connection closed when the
     last answer is out.
  4. B{Speed}: Twisted sends each DATA frame from its own reactor turn, in
     the order of a C{priority.PriorityTree} that rebuilds a heap whenever a
     stream ends. Priority signals are deprecated (RFC 9113 §5.3.2); streams
     here are served round-robin, every frame the windows allow is sent at
     once, a response's last DATA frame carries C{END_STREAM}, and frames
     produced while a read is processed are written once, at its end.

Every private Twisted name this module overrides or reads is listed in
C{tests/test_h2compat.py}, which fails loudly when a Twisted release changes
them; the supported range is pinned in C{setup.cfg}.
"""

from __future__ import annotations

from collections import deque
from typing import Any, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from h2.utilities import HeaderValidationFlags, validate_headers
from hyperframe.frame import GoAwayFrame
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import _http2
from zope.interface import implementer

from txupgrade._h2connect import ConnectStream, extendedConnectProtocol, offersExtendedConnect
from txupgrade._h2rules import CONNECTION_SPECIFIC, PREFACE, stream1Headers
from txupgrade.interfaces import IDrainable
from txupgrade.negotiation import UpgradeRequest, hostAllowed

__all__ = ["H2Connection", "buildH2Connection", "streamConnection"]

_REQUEST = HeaderValidationFlags(
    is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False
)
_TRAILERS = HeaderValidationFlags(
    is_client=False, is_trailer=True, is_response_header=False, is_push_promise=False
)
_END = _http2._END_STREAM_SENTINEL


_RequestReceived = h2.events.RequestReceived
_DataReceived = h2.events.DataReceived
_StreamEnded = h2.events.StreamEnded
_StreamReset = h2.events.StreamReset
_WindowUpdated = h2.events.WindowUpdated
_TrailersReceived = h2.events.TrailersReceived
_ConnectionTerminated = h2.events.ConnectionTerminated
_PingAckReceived = h2.events.PingAckReceived
_PROTOCOL_ERROR = h2.errors.ErrorCodes.PROTOCOL_ERROR
_NO_ERROR = h2.errors.ErrorCodes.NO_ERROR
_REFUSED_STREAM = h2.errors.ErrorCodes.REFUSED_STREAM
_CLOSED = h2.connection.ConnectionState.CLOSED
#: The first drain C{GOAWAY} allows every stream (RFC 9113 §6.8).
_ANY_STREAM = 2**31 - 1
#: The queue of an open stream that has sent nothing yet (L{H2Connection._queue} makes its deque).
_NO_QUEUE: Any = ()
#: The payload of the drain's round-trip C{PING}.
_DRAIN_PING = b"txdrain1"


_H2_OPEN_INBOUND: Any = h2.connection.H2Connection.open_inbound_streams


class _StreamMalformed:
    """
    An event of L{_ServerState}: the stream's request is malformed and h2 has
    already reset it with C{PROTOCOL_ERROR}; the connection forgets it.
    """

    def __init__(self, streamID: int, reason: str) -> None:
        self.stream_id = streamID
        self.reason = reason


class _ServerState(h2.connection.H2Connection):
    """
    h2's connection state, with two stream errors where h2 would end the
    whole connection:

      - a stream past our SETTINGS_MAX_CONCURRENT_STREAMS is refused with
        C{REFUSED_STREAM} (RFC 9113 §5.1.2). It is opened past the limit, so
        that its header block updates the HPACK state and its id counts as
        used, then reset at once; its events are dropped and its id noted
        in L{refused}.
      - a HEADERS frame without END_STREAM on a stream whose request head
        is in (a second header block that cannot be trailers) makes that
        request malformed (RFC 9113 §8.1, §8.1.1): its block is decoded
        (the HPACK state stays right), the stream reset with
        C{PROTOCOL_ERROR}, and a L{_StreamMalformed} event takes the place
        of h2's error.
    """

    _admitting = False

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        self.refused: list[int] = []

    def release(self) -> None:
        """
        The connection is over: h2's table of this state's own bound methods
        is emptied, so the state is freed at once, not left to the cyclic
        garbage collector.
        """
        self._frame_dispatch_table = {}

    @property
    def open_inbound_streams(self) -> int:
        """As h2 counts them, except while a stream is being let in to be refused."""
        if self._admitting:
            return 0
        return int(_H2_OPEN_INBOUND.fget(self))

    def _receive_headers_frame(self, frame: Any) -> Any:
        streamID = frame.stream_id
        state = self.streams.get(streamID)
        if state is not None and state.open and "END_STREAM" not in frame.flags:
            try:
                return super()._receive_headers_frame(frame)
            except h2.exceptions.ProtocolError as error:
                if type(error) is not h2.exceptions.ProtocolError:
                    raise
                self.reset_stream(streamID, error_code=_PROTOCOL_ERROR)
                return [], [_StreamMalformed(streamID, f"a second HEADERS without END_STREAM: {error}")]
        refuse = (
            streamID not in self.streams
            and self.open_inbound_streams >= self.local_settings.max_concurrent_streams
        )
        # Counted once here: h2 would scan every stream again to count them.
        self._admitting = True
        try:
            frames, events = super()._receive_headers_frame(frame)
        finally:
            self._admitting = False
        if not refuse:
            return frames, events
        self.reset_stream(streamID, error_code=_REFUSED_STREAM)
        self.refused.append(streamID)
        return frames, [e for e in events if getattr(e, "stream_id", None) != streamID]


@implementer(IDrainable)
class H2Connection(_http2.H2Connection):
    """
    One HTTP/2 connection serving a site: by ALPN, prior knowledge or h2c.

    @ivar upgradeRequest: The HTTP/1.1 request to answer on stream 1 (h2c),
        or L{None}.
    """

    _log = Logger(namespace="txupgrade.h2")
    requestFactory: Any = None
    #: Whether this connection offers extended CONNECT (L{buildH2Connection}).
    extendedConnect = False
    #: The reset budget (as Twisted 26.10 sets it; older Twisted has none):
    #: a burst of this many stream resets, then this many per second.
    _resetTokenBurst = 1000
    _resetTokenRate = 33

    def __init__(self, reactor: Any = None, upgradeRequest: UpgradeRequest | None = None) -> None:
        # Not H2Connection.__init__: it builds the priority tree this class
        # does without and schedules a send loop on the reactor.
        config = h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False
        )
        self.conn: _ServerState = _ServerState(config)
        self.streams: dict[int, Any] = {}
        self._consumerBlocked: Any = None
        self._sendingDeferred = None
        self._outboundStreamQueues: dict[int, deque[Any]] = {}
        self._streamCleanupCallbacks: dict[int, Any] = {}
        self._stillProducing = True
        self._maxBufferedControlFrameBytes = 1024 * 17
        self._bufferedControlFrames: deque[bytes] = deque()
        self._bufferedControlFrameBytes = 0
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._resetTokens = self._resetTokenBurst
        self._resetTokenTimestamp = reactor.seconds()
        self.upgradeRequest = upgradeRequest
        # Streams with queued data and (as far as known) window to send it.
        self._ready: dict[int, None] = {}
        self._receiving = False
        self._sending = False
        self._refusedLogged = False
        # The site's host allow-list: None until first needed, False for "any".
        self._allowedHosts: Any = None
        self._stream1Request: UpgradeRequest | None = None
        self._prefaceMissing = len(PREFACE)
        # Draining: the last stream our GOAWAY allows (None: not draining),
        # and whether that GOAWAY is the final one.
        self._goAwayLast: int | None = None
        self._goAwayFinal = False

    # -- connection start and end -----------------------------------------

    def connectionLost(self, reason: Failure = connectionDone, _cancelTimeouts: bool = True) -> None:
        """As Twisted's; at the real end (not a timeout's early call), h2's state lets go of itself."""
        super().connectionLost(reason, _cancelTimeouts)
        if _cancelTimeouts:
            self.conn.release()

    def connectionMade(self) -> None:
        """Send our SETTINGS; for h2c, answer the upgraded request on stream 1."""
        transport = self.transport
        assert transport is not None
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)
        self.setTimeout(self.timeOut)
        if self.extendedConnect:
            local: dict[Any, int] = dict(self.conn.local_settings.items())
            local[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] = 1
            self.conn.local_settings = h2.settings.Settings(client=False, initial_values=local)
        request, self.upgradeRequest = self.upgradeRequest, None
        if request is None:
            self.conn.initiate_connection()
            transport.write(self.conn.data_to_send())
            return
        from base64 import urlsafe_b64encode

        from txupgrade._h2rules import parseSettingsHeader

        # Validated before the 101; re-encoded with padding, as h2 decodes it.
        settings = parseSettingsHeader(request.getHeader(b"http2-settings") or b"")
        payload = b"".join(i.to_bytes(2, "big") + v.to_bytes(4, "big") for i, v in settings)
        self.conn.initiate_upgrade_connection(urlsafe_b64encode(payload))
        transport.write(self.conn.data_to_send())
        # After a switch the transport has no producer (IUpgradeProtocol).
        if IPushProducer.providedBy(transport) and getattr(transport, "producer", None) is None:
            cast(Any, transport).registerProducer(self, True)
        # Stream 1 is answered once the client's preface is in: curl 7.88
        # fails when more than 32 KiB follow the 101 in one read.
        self._stream1Request = request

    def _answerStream1(self) -> None:
        """Serve the upgraded request as stream 1 (RFC 7540 §3.2)."""
        request, self._stream1Request = self._stream1Request, None
        assert request is not None
        stream = self._newStream(1, stream1Headers(request))
        if request.body:
            stream.receiveDataChunk(request.body, 0)
        stream.requestComplete()

    def _newStream(
        self, streamID: int, headers: list[tuple[bytes, bytes]], streamClass: Any = _http2.H2Stream
    ) -> Any:
        stream = streamClass(streamID, self, headers, self.requestFactory, self.site, self.factory)
        self.streams[streamID] = stream
        # Its queue is made with its first write: an idle stream (a WebSocket
        # on an extended CONNECT) holds no deque.
        self._outboundStreamQueues[streamID] = _NO_QUEUE
        return stream

    # -- reading ---------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Process frames; write everything they produced once, at the end."""
        if not self._stillProducing:
            # The connection is being closed (GOAWAY sent): ignore the rest.
            return
        self._receiving = True
        try:
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError as error:
                self._count("protocol-error")
                self._log.info(
                    "HTTP/2 protocol error from {peer}, closing with GOAWAY: {error}",
                    peer=self._peer(),
                    error=str(error) or type(error).__name__,
                )
                if self.conn.state_machine.state is not _CLOSED:
                    # h2 raises on a bad preface before it queues a GOAWAY;
                    # the connection is known to be HTTP/2 (ALPN h2, h2c), so
                    # it is a connection error like any other (RFC 9113 §3.4).
                    self.conn.close_connection(error_code=_PROTOCOL_ERROR)
                self._terminate(Failure())
                return
            self.resetTimeout()
            if self.conn.refused:
                self._refusedStreams()
            event: Any
            for event in events:
                if not self._stillProducing:
                    return
                kind = type(event)
                if kind is _RequestReceived:
                    self._requestReceived(event)
                elif kind is _DataReceived:
                    self._requestDataReceived(event)
                elif kind is _StreamEnded:
                    stream = self.streams.get(event.stream_id)
                    if stream is not None:
                        stream.requestComplete()
                elif kind is _StreamReset:
                    self._requestAborted(event)
                elif kind is _WindowUpdated:
                    self._handleWindowUpdate(event)
                elif kind is _TrailersReceived:
                    self._trailersReceived(event)
                elif kind is _StreamMalformed:
                    self._malformedStream(event.stream_id, event.reason)
                elif kind is _PingAckReceived and event.ping_data == _DRAIN_PING:
                    self._finalGoAway()
                elif kind is _ConnectionTerminated:
                    self._closeTransport()
                    self.connectionLost(
                        Failure(ConnectionLost("Remote peer sent GOAWAY")), _cancelTimeouts=False
                    )
                    return
            if self._stream1Request is not None:
                self._prefaceMissing -= len(data)
                if self._prefaceMissing <= 0:
                    self._answerStream1()
        finally:
            self._receiving = False
        if self._stillProducing:
            self._sendQueued()
            self._tryToWriteControlData()

    def _requestReceived(self, event: Any) -> None:
        """Start a stream for a well-formed request; reset a malformed one."""
        if self._goAwayLast is not None and event.stream_id > self._goAwayLast:
            # Opened after our final GOAWAY: not served (RFC 9113 §6.8).
            self.conn.reset_stream(event.stream_id, error_code=_REFUSED_STREAM)
            self._spendResetToken()
            return
        try:
            headers = list(validate_headers(event.headers, _REQUEST))
        except h2.exceptions.ProtocolError as error:
            self._refuseStream(event.stream_id, str(error))
            return
        if self._allowedHosts is not False and not self._hostAllowed(headers):
            return self._foreignHost(event.stream_id, headers)
        protocolValue = extendedConnectProtocol(headers)
        if protocolValue is None:
            if (b":method", b"CONNECT") in headers:
                return self._plainConnect(event.stream_id)
            self._newStream(event.stream_id, headers)
        elif not self.extendedConnect:
            # :protocol without our SETTINGS_ENABLE_CONNECT_PROTOCOL: malformed (RFC 8441 §4).
            self._refuseStream(event.stream_id, ":protocol without SETTINGS_ENABLE_CONNECT_PROTOCOL")
        else:
            stream = self._newStream(event.stream_id, headers, ConnectStream)
            stream.startNegotiation(protocolValue)

    def _hostAllowed(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether the request names a host the site serves (its allow-list, as HTTP/1.1 checks it)."""
        allowed = self._allowedHosts
        if allowed is None:
            assert self.transport is not None
            finder = getattr(self.site, "allowedHostsFor", None)
            allowed = self._allowedHosts = finder(self.transport.getHost()) if finder is not None else False
            if allowed is None or allowed is False:
                self._allowedHosts = False
                return True
        for name, value in headers:
            if name == b":authority" or name == b"host":
                return hostAllowed(value, allowed)
        return True

    def _foreignHost(self, streamID: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Answer C{400} on the stream, as HTTP/1.1 does for a host not served (DNS rebinding)."""
        self._count("foreign-host")
        self._logRefusal("Answered 400 to an HTTP/2 request from {peer} for a host this site does not serve")
        self._answerNow(streamID, b"400", b"This server does not serve that host.\n")

    def _plainConnect(self, streamID: int) -> None:
        """
        Answer C{501} to a CONNECT without C{:protocol} (RFC 9113 §8.5): this
        is no proxy. Its stream never ends by itself, so the client is asked
        to stop with a C{NO_ERROR} reset after the answer (§8.1).
        """
        self._count("connect-tunnel")
        self._logRefusal("Answered 501 to an HTTP/2 CONNECT (a tunnel, not served) from {peer}")
        self._answerNow(streamID, b"501", b"This server opens no CONNECT tunnels.\n")
        state = self.conn.streams.get(streamID)
        if state is not None and not state.closed:
            self.conn.reset_stream(streamID, error_code=_NO_ERROR)

    def _answerNow(self, streamID: int, status: bytes, body: bytes) -> None:
        """A short plain-text answer on a stream the site never sees."""
        self.conn.send_headers(
            streamID,
            [(b":status", status), (b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        )
        self.conn.send_data(streamID, body, end_stream=True)

    def _trailersReceived(self, event: Any) -> None:
        """
        Reset a stream whose trailers are malformed, or that is a CONNECT
        stream (no HEADERS after the request's, RFC 9113 §8.5); Twisted
        ignores the rest.
        """
        if isinstance(self.streams.get(event.stream_id), ConnectStream):
            self._refuseStream(event.stream_id, "HEADERS on a CONNECT stream")
            self._forgetMalformed(event.stream_id)
            return
        try:
            list(validate_headers(event.headers, _TRAILERS))
        except h2.exceptions.ProtocolError as error:
            self._refuseStream(event.stream_id, str(error))
            self._forgetMalformed(event.stream_id)

    def _malformedStream(self, streamID: int, reason: str) -> None:
        """A stream h2's state (L{_ServerState}) reset as malformed: log, spend the budget, forget it."""
        self._logMalformed(reason)
        self._spendResetToken()
        self._forgetMalformed(streamID)

    def _forgetMalformed(self, streamID: int) -> None:
        """Drop a stream reset as malformed; what was on it hears the loss."""
        stream = self.streams.get(streamID)
        if stream is not None:
            stream.connectionLost(Failure(ConnectionLost("Malformed request")))
            self._requestDone(streamID)

    def _count(self, kind: str, n: int = 1) -> None:
        """Count a refusal of C{kind} in the site's L{UpgradeSite.http2Refusals}."""
        counts = getattr(self.site, "http2Refusals", None)
        if counts is not None:
            counts[kind] = counts.get(kind, 0) + n

    def _logRefusal(self, text: str, **fields: Any) -> None:
        """Log the first stream this connection refuses (C{text}: a format); the rest are like it."""
        if not self._refusedLogged:
            self._refusedLogged = True
            self._log.info(text, peer=self._peer(), **fields)

    def _refuseStream(self, streamID: int, reason: str) -> None:
        """Reset a malformed request's stream with PROTOCOL_ERROR (RFC 9113 §8.1.1)."""
        self._logMalformed(reason)
        self.conn.reset_stream(streamID, error_code=_PROTOCOL_ERROR)
        self._spendResetToken()

    def _logMalformed(self, reason: str) -> None:
        self._count("malformed")
        self._logRefusal(
            "Reset malformed HTTP/2 request(s) from {peer} with PROTOCOL_ERROR, first: {reason}",
            reason=reason,
        )

    def _refusedStreams(self) -> None:
        """Streams h2 refused past the concurrency limit: log once, spend the budget."""
        refused, self.conn.refused = self.conn.refused, []
        self._count("refused-stream", len(refused))
        self._logRefusal(
            "Refused HTTP/2 stream(s) from {peer} past SETTINGS_MAX_CONCURRENT_STREAMS, first: {stream}",
            stream=refused[0],
        )
        for _ in refused:
            if not self._stillProducing:
                return
            self._spendResetToken()

    def _requestDataReceived(self, event: Any) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.receiveDataChunk(event.data, event.flow_controlled_length)
            return
        # A request we refused, or answered before its body ended: give the
        # window back and, for the latter, ask the client to stop (§8.1).
        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        state = self.conn.streams.get(event.stream_id)
        if state is not None and state.open:
            self.conn.reset_stream(event.stream_id, error_code=_NO_ERROR)

    def _requestAborted(self, event: Any) -> None:
        """A reset stream: drop its state, and spend one token of the budget."""
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.connectionLost(Failure(ConnectionLost(f"Stream reset with code {event.error_code}")))
            self._requestDone(event.stream_id)
        self._spendResetToken()

    def _spendResetToken(self) -> None:
        """Twisted's Rapid Reset bucket (CVE-2023-44487), for every reset."""
        now = self._reactor.seconds()
        elapsed = max(0.0, now - self._resetTokenTimestamp)
        self._resetTokens = min(self._resetTokenBurst, self._resetTokens + elapsed * self._resetTokenRate)
        self._resetTokenTimestamp = now
        if self._resetTokens >= 1:
            self._resetTokens -= 1
            return
        self._log.warn(
            "Closing HTTP/2 connection from {peer}: too many stream resets (Rapid Reset, CVE-2023-44487)",
            peer=self._peer(),
        )
        self._count("too-many-resets")
        self.conn.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        self._terminate(Failure(ConnectionLost("Too many stream resets")))

    def _terminate(self, reason: Failure) -> None:
        """Write the queued GOAWAY and close, leaving the timers to bound a peer that never reads."""
        if self._tryToWriteControlData():
            self._closeTransport()
            self.connectionLost(reason, _cancelTimeouts=False)

    def _closeTransport(self) -> None:
        """
        Close the transport after what is written, unregistered first: TLS
        starts its shutdown only once no producer is registered (else the
        connection would stay open until the idle timeout).
        """
        transport = self.transport
        assert transport is not None
        cast(Any, transport).unregisterProducer()
        transport.loseConnection()

    def _handlePriorityUpdate(self, event: Any) -> None:
        """Priority signals are deprecated (RFC 9113 §5.3.2): streams share the connection."""

    # -- writing ---------------------------------------------------------

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: list[tuple[bytes, bytes]], streamID: int
    ) -> None:
        """Send a response's headers, without connection-specific fields."""
        headers = [(b":status", code), *(h for h in headers if h[0].lower() not in CONNECTION_SPECIFIC)]
        try:
            self.conn.send_headers(streamID, headers)
        except h2.exceptions.StreamClosedError:
            return
        if not self._receiving:
            self._tryToWriteControlData()

    def writeDataToStream(self, streamID: int, data: bytes) -> None:
        """Queue response data; send it now unless a read is being processed."""
        if self._queue(streamID, data) and streamID in self.streams:
            if self.remainingOutboundWindow(streamID) <= 0:
                self.streams[streamID].flowControlBlocked()

    def endRequest(self, streamID: int) -> None:
        """The response is complete: send its end after its data."""
        self._queue(streamID, _END)

    def _queue(self, streamID: int, item: Any) -> bool:
        """Queue C{item} (data or the end) on an open stream, sent unless reading; False if it is gone."""
        queues = self._outboundStreamQueues
        queue = queues.get(streamID)
        if queue is None:
            return False
        if queue is _NO_QUEUE:
            queue = queues[streamID] = deque()
        queue.append(item)
        self._ready[streamID] = None
        if not self._receiving:
            self._sendQueued()
        return True

    def _sendQueued(self) -> None:
        """
        Send queued DATA, one frame per ready stream per pass, until the
        windows, the transport or the queues stop it.
        """
        if self._sending or not self._stillProducing:
            return
        self._sending = True
        conn = self.conn
        ready = self._ready
        queues = self._outboundStreamQueues
        try:
            while ready and self._consumerBlocked is None and not self._bufferedControlFrames:
                for streamID in list(ready):
                    queue = queues.get(streamID)
                    if not queue:
                        ready.pop(streamID, None)
                        continue
                    chunk = queue[0]
                    if chunk is _END:
                        conn.end_stream(streamID)
                        ready.pop(streamID, None)
                        self._requestDone(streamID)
                        continue
                    try:
                        window = conn.local_flow_control_window(streamID)
                    except h2.exceptions.StreamClosedError:
                        ready.pop(streamID, None)
                        continue
                    size = min(window, conn.max_outbound_frame_size)
                    if size <= 0:
                        ready.pop(streamID, None)
                        stream = self.streams.get(streamID)
                        if stream is not None:
                            stream.flowControlBlocked()
                        continue
                    if len(chunk) > size:
                        queue[0] = chunk[size:]
                        conn.send_data(streamID, chunk[:size])
                        continue
                    queue.popleft()
                    if queue and queue[0] is _END:
                        conn.send_data(streamID, chunk, end_stream=True)
                        ready.pop(streamID, None)
                        self._requestDone(streamID)
                    else:
                        conn.send_data(streamID, chunk)
                        if not queue:
                            ready.pop(streamID, None)
                toSend = conn.data_to_send()
                if toSend:
                    self.resetTimeout()
                    assert self.transport is not None
                    self.transport.write(toSend)
        finally:
            self._sending = False

    def _sendPrioritisedData(self, *args: object) -> None:
        """Twisted's send loop entry point, kept for its callers: send what is queued."""
        self._sendQueued()

    def _handleWindowUpdate(self, event: Any) -> None:
        """More window: streams with queued data are ready again."""
        streamID = event.stream_id
        if streamID:
            stream = self.streams.get(streamID)
            if stream is None:
                return
            if self._outboundStreamQueues.get(streamID):
                self._ready[streamID] = None
            stream.windowUpdated()
        else:
            for streamID, stream in list(self.streams.items()):
                if self._outboundStreamQueues.get(streamID):
                    self._ready[streamID] = None
                stream.windowUpdated()

    def _requestDone(self, streamID: int) -> None:
        """Forget a finished or reset stream; a switched one's protocol hears the end."""
        self._outboundStreamQueues.pop(streamID, None)
        stream = self.streams.pop(streamID, None)
        self._ready.pop(streamID, None)
        if isinstance(stream, ConnectStream):
            state = self.conn.streams.get(streamID)
            if state is not None and not state.closed and self.conn.state_machine.state is not _CLOSED:
                # Our END_STREAM went first: the client is asked to stop sending (RFC 9113 §8.1).
                self.conn.reset_stream(streamID, error_code=_NO_ERROR)
            stream.streamFinished()
        if self._goAwayFinal and not self.streams:
            # After this turn's writes: the last answer goes out first.
            self._reactor.callLater(0, self._closeIfDrained)

    # -- draining (IDrainable) -----------------------------------------------

    def drain(self) -> None:
        """
        Start a graceful close: the protocols on switched streams are asked
        to drain (L{IDrainable}), then a C{GOAWAY} that still allows every
        stream, and a C{PING} whose answer brings the final C{GOAWAY}.
        """
        if self._goAwayLast is not None or not self._stillProducing or self.transport is None:
            return
        # The protocols on extended CONNECT streams first (a WebSocket's close 1001), then GOAWAY.
        for stream in list(self.streams.values()):
            protocol = stream._bytes.protocol if isinstance(stream, ConnectStream) and stream._bytes else None
            if IDrainable.providedBy(protocol):
                protocol.drain()
        self._goAwayLast = _ANY_STREAM
        self._writeGoAway(_ANY_STREAM)
        self.conn.ping(_DRAIN_PING)
        self._tryToWriteControlData()

    def _finalGoAway(self) -> None:
        """The drain's C{PING} is back: name the last stream served; close once it is answered."""
        if self._goAwayFinal or self._goAwayLast is None:
            return
        self._goAwayFinal = True
        self._goAwayLast = self.conn.highest_inbound_stream_id
        self._writeGoAway(self._goAwayLast)
        self._reactor.callLater(0, self._closeIfDrained)

    def _writeGoAway(self, lastStreamID: int) -> None:
        """Write a C{NO_ERROR} C{GOAWAY} after what h2 has queued, leaving h2's connection open."""
        frame = GoAwayFrame(0, last_stream_id=lastStreamID, error_code=_NO_ERROR).serialize()
        data = self.conn.data_to_send() + frame
        if self._consumerBlocked is None and not self._bufferedControlFrames:
            assert self.transport is not None
            self.transport.write(data)
        else:
            self._bufferedControlFrames.append(data)
            self._bufferedControlFrameBytes += len(data)

    def _closeIfDrained(self) -> None:
        """Close after the final C{GOAWAY} once every stream is answered (h2c's stream 1 included)."""
        if self.streams or self._stream1Request is not None or not self._stillProducing:
            return
        if self._bufferedControlFrames:
            return  # resumeProducing writes them, then comes back here
        if self.transport is not None:
            self._closeTransport()

    def remainingOutboundWindow(self, streamID: int) -> int:
        """The stream's send window minus what is already queued on it."""
        try:
            window = self.conn.local_flow_control_window(streamID)
        except h2.exceptions.StreamClosedError:
            return 0
        queue = self._outboundStreamQueues.get(streamID, ())
        return int(window - sum(len(chunk) for chunk in queue if chunk is not _END))

    # -- IPushProducer -----------------------------------------------------

    def pauseProducing(self) -> None:
        """The transport's buffer is full: stop sending."""
        self._consumerBlocked = True

    def resumeProducing(self) -> None:
        """The transport drained: control frames first, then queued data."""
        if self._consumerBlocked is None:
            return
        self._consumerBlocked = None
        self._flushBufferedControlData()
        self._sendQueued()
        if self._goAwayFinal:
            self._closeIfDrained()

    def _peer(self) -> Any:
        transport = self.transport
        return transport.getPeer() if transport is not None else None


def streamConnection(stream: _http2.H2Stream) -> H2Connection:
    """The HTTP/2 connection C{stream} is on (Twisted keeps it private)."""
    return stream._conn


def buildH2Connection(site: Any, upgradeRequest: UpgradeRequest | None = None) -> H2Connection:
    """An L{H2Connection} serving C{site} with its request factory, timeout and clock."""
    reactor = getattr(site, "reactor", None)
    connection = H2Connection(reactor, upgradeRequest)
    connection.site = site
    connection.factory = site
    connection.requestFactory = site.requestFactory
    connection.timeOut = site.timeOut
    connection.extendedConnect = offersExtendedConnect(site)
    if reactor is not None:
        connection.callLater = reactor.callLater  # type: ignore[method-assign]
    return connection
