"""Upgrades on HTTP/2 streams by RFC 8441 extended CONNECT: L{connectHTTP2}, L{upgradeHTTP2}."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IHandshakeListener,
    INegotiated,
    IProtocol,
    IPushProducer,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from txupgrade.client._common import (
    _CLOSED,
    Headers,
    ProtocolFactory,
    UpgradeFailed,
    UpgradeResponse,
    buildClientProtocol,
    connectWithin,
)
from txupgrade.client._stream import _StreamTransport
from txupgrade.negotiation import (
    ProtocolName,
    parseProtocolList,
)

# -- HTTP/2: upgrades on streams by extended CONNECT (RFC 8441) -------------------
#
# Theory of operation: one HTTP2Connection owns h2's client state machine and
# the network transport; each switched stream is a _StreamTransport, the
# ITransport its protocol sees. h2 events are dispatched through one table
# (HTTP2Connection._handlers); everything h2 queues is written once per read
# (or per call from a protocol) by HTTP2Connection._flush. A pending upgrade
# (_Attempt) owns the stream of the protocol it is trying; a 501 moves it to
# the next protocol on a new stream.


class ExtendedConnectUnavailable(UpgradeFailed):
    """
    The connection cannot carry an extended CONNECT: the TLS server did not
    choose ALPN C{h2}, or the server's SETTINGS did not set
    C{SETTINGS_ENABLE_CONNECT_PROTOCOL} to 1 (RFC 8441 §3).
    """


def _h2Modules() -> Any:
    """Import h2 (the C{h2c} extra) when an HTTP/2 connection is first built."""
    try:
        import h2.config
        import h2.connection
        import h2.errors
        import h2.events
        import h2.exceptions
        import h2.settings
    except ImportError as error:  # pragma: no cover - the extra is installed in CI
        raise ImportError("txupgrade's HTTP/2 client needs the h2c extra (h2)") from error
    return h2


@functools.cache
def _clientState() -> Any:
    """
    h2's client connection state, deaf once the server's C{GOAWAY} is in:
    h2 would raise on any later frame of the same read (a drain's C{PING}),
    and the C{GOAWAY}'s own event would be lost with it.
    """
    h2 = _h2Modules()
    closed = h2.connection.ConnectionState.CLOSED
    base: Any = h2.connection.H2Connection

    class _ClientState(base):
        def _receive_frame(self, frame: Any) -> Any:
            if self.state_machine.state is closed:
                return []
            return super()._receive_frame(frame)

    return _ClientState


def _regular(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The headers of an h2 event, without its pseudo-headers."""
    return tuple((bytes(name), bytes(value)) for name, value in headers if not name.startswith(b":"))


class _Attempt:
    """One pending L{HTTP2Connection.upgrade}: its offer, the stream it is on, the answer so far."""

    def __init__(
        self,
        offered: list[ProtocolName],
        factory: ProtocolFactory,
        request: list[tuple[bytes, bytes]],
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self.offered = offered
        self.factory = factory
        self.request = request
        self.headers = headers
        self.result: Deferred[IProtocol] = Deferred(self._cancel)
        self.connection: HTTP2Connection | None = None
        self.streamID = 0
        self.status: int | None = None
        self.responseHeaders: Headers = ()
        self.body: list[bytes] = []

    def _cancel(self, result: Deferred[IProtocol]) -> None:
        """A timeout or the caller's cancel: reset the stream being tried."""
        if self.connection is not None:
            self.connection._abandon(self)


@implementer(IHandshakeListener, IPushProducer)
class HTTP2Connection(Protocol):
    """
    An HTTP/2 client connection that opens upgrades on streams by extended
    CONNECT (RFC 8441): L{upgrade} as often as needed, then L{close}.

    Built by L{connectHTTP2}, which fires once the server's SETTINGS allow
    extended CONNECT. A server C{GOAWAY} fails the pending upgrades and ends
    every stream (h2 accepts no frame after it), as does the connection's loss.

    @ivar authority: The default C{:authority} of L{upgrade}.
    @ivar closeWhenIdle: Close once no stream is open or pending (set by
        L{upgradeHTTP2}, whose connection serves one stream).
    """

    closeWhenIdle = False

    def __init__(self, reactor: Any = None, authority: bytes = b"localhost") -> None:
        h2 = _h2Modules()
        self._h2 = h2
        self._reactor = reactor
        self.authority = authority
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self._conn = _clientState()(config=config)
        codes = h2.settings.SettingCodes
        self._conn.local_settings = h2.settings.Settings(client=True, initial_values={codes.ENABLE_PUSH: 0})
        self._ready: HTTP2Connection | Failure | None = None
        self._readyWaiters: list[Deferred[HTTP2Connection]] = []
        self._streams: dict[int, _StreamTransport] = {}
        self._pending: dict[int, _Attempt] = {}
        self._blocked = False
        self._receiving = False
        self._closing = False
        self._lost: Failure | None = None
        self._why: Failure | None = None
        self._lostWaiters: list[Deferred[None]] = []
        self._alpnChecked = False
        events = h2.events
        self._handlers: dict[type, Callable[[Any], None]] = {
            events.RemoteSettingsChanged: self._settingsChanged,
            events.ResponseReceived: self._responseReceived,
            events.DataReceived: self._dataReceived,
            events.StreamEnded: self._streamEnded,
            events.StreamReset: self._streamReset,
            events.WindowUpdated: self._windowUpdated,
            events.ConnectionTerminated: self._terminated,
        }

    # -- the public face -----------------------------------------------------------

    def upgrade(
        self,
        protocols: Sequence[str],
        protocolFactory: ProtocolFactory,
        *,
        target: bytes = b"/",
        authority: bytes | None = None,
        scheme: bytes | None = None,
        headers: Iterable[tuple[bytes, bytes]] = (),
        timeout: float | None = 30.0,
    ) -> Deferred[IProtocol]:
        """
        Open a stream with an extended CONNECT for the first of C{protocols};
        after a C{501} (not offered there) try the next on a new stream.

        @param protocols: The offer, best first; one C{:protocol} per stream.
        @param protocolFactory: As for L{txupgrade.client.upgrade}; its L{UpgradeResponse}
            has C{version} C{b"HTTP/2"}.
        @param target: The C{:path}.
        @param authority: The C{:authority} (default: L{authority}).
        @param scheme: The C{:scheme} (default: C{https} over TLS, else C{http}).
        @param headers: More request fields (e.g. C{sec-websocket-version}).
        @param timeout: Seconds until the C{200} must have come, or L{None}.
        @return: Fires with the protocol connected to the stream; fails with
            L{UpgradeFailed} (the status, headers and body of the last answer
            when it was not C{2xx}).
        """
        offered = list(parseProtocolList([", ".join(protocols).encode("ascii")]))
        if not offered:
            raise ValueError("offer at least one protocol")
        if scheme is None:
            scheme = b"https" if INegotiated.providedBy(self.transport) else b"http"
        request = [
            (b":method", b"CONNECT"),
            (b":scheme", scheme),
            (b":path", target),
            (b":authority", authority if authority is not None else self.authority),
        ]
        attempt = _Attempt(offered, protocolFactory, request, [(n.lower(), v) for n, v in headers])
        attempt.connection = self
        self._open(attempt)
        if timeout is not None and not attempt.result.called:
            attempt.result.addTimeout(timeout, self._clock())
        return attempt.result

    def whenReady(self) -> Deferred[HTTP2Connection]:
        """
        Fire with this connection once the server's SETTINGS are in and allow
        extended CONNECT; fail with L{ExtendedConnectUnavailable} when they do
        not, or with L{UpgradeFailed} when the connection is lost first.
        """
        d: Deferred[HTTP2Connection] = Deferred()
        if self._ready is None:
            self._readyWaiters.append(d)
        elif isinstance(self._ready, Failure):
            d.errback(self._ready)
        else:
            d.callback(self._ready)
        return d

    def _setReady(self, result: HTTP2Connection | Failure) -> None:
        if self._ready is not None:
            return
        self._ready = result
        waiters, self._readyWaiters = self._readyWaiters, []
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    def close(self) -> Deferred[None]:
        """Send C{GOAWAY} and close; fire once the connection is closed."""
        d: Deferred[None] = Deferred()
        if self._lost is not None:
            d.callback(None)
            return d
        self._lostWaiters.append(d)
        if not self._closing and self.transport is not None:
            self._closing = True
            try:
                self._conn.close_connection()
            except self._h2.exceptions.ProtocolError:
                pass
            self._flush(force=True)
            self._hangUp()
        return d

    # -- IProtocol ---------------------------------------------------------------------

    def connectionMade(self) -> None:
        """Send the preface and our SETTINGS; push-produce for the transport."""
        transport: Any = self.transport
        transport.registerProducer(self, True)
        self._conn.initiate_connection()
        self._flush()

    def handshakeCompleted(self) -> None:
        """C{IHandshakeListener}: TLS is up; the server must have chosen C{h2}."""
        self._checkALPN()

    def dataReceived(self, data: bytes) -> None:
        """Feed h2; dispatch its events; write what they queued, once."""
        if not self._checkALPN() or self._closing or self._lost is not None:
            return
        h2 = self._h2
        self._receiving = True
        try:
            try:
                events = self._conn.receive_data(data)
            except h2.exceptions.ProtocolError as error:
                self._why = Failure(ConnectionLost(f"HTTP/2 protocol error from the server: {error}"))
                self._conn.close_connection(error_code=h2.errors.ErrorCodes.PROTOCOL_ERROR)
                self._failReady(UpgradeFailed(f"not an HTTP/2 server: {error}"))
                self._closeNow()
                return
            for event in events:
                handler = self._handlers.get(type(event))
                if handler is not None:
                    handler(event)
                if self._closing:
                    return
        finally:
            self._receiving = False
        self._flush()

    def connectionLost(self, reason: Failure = _CLOSED) -> None:
        """Fail what is pending, end every stream, fire L{close}'s waiters."""
        if self._lost is not None:
            return
        self._lost = reason
        if self._why is None:
            if self._closing:
                self._why = Failure(ConnectionDone("The HTTP/2 connection was closed"))
            else:
                message = reason.getErrorMessage()
                self._why = Failure(ConnectionLost(f"The HTTP/2 connection was lost: {message}"))
        self._endAll()
        waiters, self._lostWaiters = self._lostWaiters, []
        for d in waiters:
            d.callback(None)

    # -- IPushProducer: the network transport's buffer ---------------------------------

    def pauseProducing(self) -> None:
        """The network buffer is full: hold DATA (the streams' producers pause)."""
        self._blocked = True

    def resumeProducing(self) -> None:
        """The network buffer drained: send held DATA."""
        if self._blocked:
            self._blocked = False
            self._pumpAll()

    def stopProducing(self) -> None:
        """The transport is going away; L{connectionLost} follows."""

    # -- h2 events -----------------------------------------------------------------------

    def _settingsChanged(self, event: Any) -> None:
        if self._ready is not None:
            self._pumpAll()  # an initial window may have grown
            return
        if self._conn.remote_settings.enable_connect_protocol != 1:
            self._failReady(
                ExtendedConnectUnavailable(
                    "the server's SETTINGS do not enable extended CONNECT"
                    " (SETTINGS_ENABLE_CONNECT_PROTOCOL is not 1)"
                )
            )
            self._conn.close_connection()
            self._closeNow()
            return
        self._setReady(self)

    def _responseReceived(self, event: Any) -> None:
        attempt = self._pending.get(event.stream_id)
        if attempt is None:
            return
        status = int(dict(event.headers).get(b":status", b"0"))
        headers = _regular(event.headers)
        if 200 <= status < 300:
            del self._pending[event.stream_id]
            self._switch(attempt, headers)
        else:
            attempt.status, attempt.responseHeaders = status, headers

    def _dataReceived(self, event: Any) -> None:
        streamID = event.stream_id
        stream = self._streams.get(streamID)
        if stream is not None:
            stream._dataReceived(event.data, event.flow_controlled_length)
            return
        attempt = self._pending.get(streamID)
        if attempt is not None:
            attempt.body.append(event.data)
        self._acknowledge(streamID, event.flow_controlled_length)

    def _streamEnded(self, event: Any) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream._ended()
        elif event.stream_id in self._pending:
            self._refused(self._pending.pop(event.stream_id))

    def _streamReset(self, event: Any) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream._reset(int(event.error_code))
            return
        attempt = self._pending.pop(event.stream_id, None)
        if attempt is None:
            return
        if attempt.status is not None:
            self._refused(attempt)
        else:
            self._fail(
                attempt, UpgradeFailed(f"stream reset by the server (error code {int(event.error_code)})")
            )

    def _windowUpdated(self, event: Any) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream._pump()
        elif event.stream_id == 0:
            self._pumpAll()

    def _terminated(self, event: Any) -> None:
        """A server C{GOAWAY}: h2 takes no more frames, so every stream ends here."""
        code = int(event.error_code)
        self._why = Failure(ConnectionLost(f"The server sent GOAWAY (error code {code})"))
        self._failReady(UpgradeFailed(f"the server sent GOAWAY (error code {code})"))
        self._closeNow()

    # -- upgrades ----------------------------------------------------------------------

    def _open(self, attempt: _Attempt) -> None:
        """Send the CONNECT for the attempt's next protocol, on a new stream."""
        if self._ready is not self:
            self._fail(attempt, UpgradeFailed("the HTTP/2 connection is not ready (or closed)"))
            return
        if self._lost is not None or self._closing:
            self._fail(attempt, UpgradeFailed("the HTTP/2 connection is closed"))
            return
        name = attempt.offered[0]
        conn = self._conn
        try:
            streamID = conn.get_next_available_stream_id()
            headers = [attempt.request[0], (b":protocol", str(name).encode("ascii")), *attempt.request[1:]]
            conn.send_headers(streamID, headers + attempt.headers)
        except self._h2.exceptions.ProtocolError as error:
            self._fail(attempt, UpgradeFailed(f"cannot open a stream: {error}"))
            return
        attempt.streamID, attempt.status, attempt.responseHeaders, attempt.body = streamID, None, (), []
        self._pending[streamID] = attempt
        self._flush()

    def _switch(self, attempt: _Attempt, headers: Headers) -> None:
        """The C{200}: build the protocol, connect it to the stream, fire."""
        name = attempt.offered[0]
        response = UpgradeResponse(name, (name,), headers, b"HTTP/2")
        try:
            protocol = buildClientProtocol(attempt.factory, response)
            stream = self._streams[attempt.streamID] = _StreamTransport(self, attempt.streamID, protocol)
            protocol.makeConnection(stream)
        except Exception as error:  # noqa: BLE001 - the caller gets it as the failure
            self._streams.pop(attempt.streamID, None)
            self._resetStream(attempt.streamID)
            self._fail(attempt, error)
            return
        attempt.result.callback(protocol)

    def _refused(self, attempt: _Attempt) -> None:
        """The stream ended without a switch: the next protocol after a C{501}, else the failure."""
        if attempt.status == 501 and len(attempt.offered) > 1:
            attempt.offered.pop(0)
            self._open(attempt)
            return
        if attempt.status is None:
            self._fail(attempt, UpgradeFailed("the stream ended before an answer"))
            return
        self._fail(
            attempt,
            UpgradeFailed(
                f"server did not switch to {attempt.offered[0]}",
                attempt.status,
                attempt.responseHeaders,
                b"".join(attempt.body),
            ),
        )

    def _fail(self, attempt: _Attempt, error: Exception) -> None:
        self._pending.pop(attempt.streamID, None)
        if not attempt.result.called:
            attempt.result.errback(Failure(error))
        self._checkIdle()

    def _abandon(self, attempt: _Attempt) -> None:
        """A cancelled upgrade: reset its stream, forget it."""
        if self._pending.pop(attempt.streamID, None) is not None:
            self._resetStream(attempt.streamID)
        self._checkIdle()

    # -- helpers for the streams ----------------------------------------------------------

    def _sendData(self, streamID: int, data: bytearray) -> int | None:
        """Queue as much of C{data} as the windows allow; how much, or L{None} if the stream is gone."""
        if self._lost is not None or self._closing:
            return None
        conn = self._conn
        sent = 0
        try:
            while sent < len(data) and not self._blocked:
                size = min(conn.local_flow_control_window(streamID), conn.max_outbound_frame_size)
                if size <= 0:
                    break
                chunk = bytes(data[sent : sent + size])
                conn.send_data(streamID, chunk)
                sent += len(chunk)
        except self._h2.exceptions.ProtocolError:
            return None
        return sent

    def _endStream(self, streamID: int) -> None:
        try:
            self._conn.end_stream(streamID)
        except self._h2.exceptions.ProtocolError:
            pass  # already closed by the server (a reset): ended all the same

    def _resetStream(self, streamID: int) -> None:
        try:
            self._conn.reset_stream(streamID, error_code=self._h2.errors.ErrorCodes.CANCEL)
        except self._h2.exceptions.ProtocolError:
            pass
        self._flush()

    def _acknowledge(self, streamID: int, flowControlled: int) -> None:
        """Give the window of consumed DATA back to the server."""
        if flowControlled and self._lost is None:
            try:
                self._conn.acknowledge_received_data(flowControlled, streamID)
            except self._h2.exceptions.ProtocolError:
                pass
            self._flush()

    def _streamFinished(self, streamID: int) -> None:
        self._streams.pop(streamID, None)
        self._checkIdle()

    def _pumpAll(self) -> None:
        for stream in list(self._streams.values()):
            stream._pump()

    def _flush(self, force: bool = False) -> None:
        """Write what h2 queued, except while a read is processed (written once at its end)."""
        if (self._receiving and not force) or self._lost is not None or self.transport is None:
            return
        data = self._conn.data_to_send()
        if data:
            self.transport.write(data)

    def _checkIdle(self) -> None:
        if self.closeWhenIdle and not self._streams and not self._pending and self._ready is not None:
            self.close()

    def _checkALPN(self) -> bool:
        """Over TLS, whether the server chose C{h2}; if not, fail L{whenReady} and abort."""
        if self._alpnChecked:
            return True
        transport: Any = self.transport
        if not INegotiated.providedBy(transport):
            self._alpnChecked = True
            return True
        chosen = transport.negotiatedProtocol
        if chosen == b"h2":
            self._alpnChecked = True
            return True
        self._failReady(
            ExtendedConnectUnavailable(
                f"the TLS server did not choose HTTP/2 by ALPN (it chose {chosen!r});"
                " offer h2 in the TLS options (acceptableProtocols=[b'h2'])"
            )
        )
        self._closeNow()
        return False

    def _failReady(self, error: Exception) -> None:
        self._setReady(Failure(error))

    def _endAll(self) -> None:
        """Fail L{whenReady} and the pending upgrades, and end the streams, with C{_why}."""
        why = self._why
        assert why is not None
        self._failReady(
            UpgradeFailed(f"connection lost before the server's SETTINGS: {why.getErrorMessage()}")
        )
        for attempt in list(self._pending.values()):
            self._fail(attempt, UpgradeFailed(f"no answer: {why.getErrorMessage()}"))
        for stream in list(self._streams.values()):
            stream._finish(why)

    def _closeNow(self) -> None:
        """Write what is queued (a GOAWAY), end everything now, and close the connection."""
        if self._closing:
            return
        self._closing = True
        self._flush(force=True)
        if self._why is None:
            self._why = Failure(ConnectionDone("The HTTP/2 connection was closed"))
        self._endAll()
        self._hangUp()

    def _hangUp(self) -> None:
        """Close the transport; unregistered first, as TLS starts its shutdown only without a producer."""
        transport: Any = self.transport
        if transport is not None:
            transport.unregisterProducer()
            transport.loseConnection()

    def _clock(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor


def connectHTTP2(
    endpoint: IStreamClientEndpoint,
    *,
    authority: bytes = b"localhost",
    timeout: float | None = 30.0,
    reactor: Any = None,
) -> Deferred[HTTP2Connection]:
    """
    Connect an L{HTTP2Connection} to C{endpoint}: HTTP/2 by prior knowledge
    on a plain endpoint; over TLS the endpoint's options must offer ALPN C{h2}.

    @param authority: The default C{:authority} of its upgrades.
    @param timeout: Seconds until the server's SETTINGS must be in, or L{None}.
    @return: Fires with the connection once the server allows extended
        CONNECT; fails with L{ExtendedConnectUnavailable} when it does not (or
        did not choose C{h2}), with L{UpgradeFailed} when the connection is
        lost first.
    """
    connection = HTTP2Connection(reactor, authority)
    return connectWithin(
        endpoint,
        connection,
        lambda _: connection.whenReady(),
        timeout,
        reactor,
        lambda: connection._ready is None,
    )


# The keywords are upgrade()'s, on purpose, but for HTTP/2's own: :authority
# and :scheme where HTTP/1.1 has Host, no method or body (a CONNECT has none).
def upgradeHTTP2(
    endpoint: IStreamClientEndpoint,
    protocols: Sequence[str],
    protocolFactory: ProtocolFactory,
    *,
    target: bytes = b"/",
    authority: bytes = b"localhost",
    scheme: bytes | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
    timeout: float | None = 30.0,
    reactor: Any = None,
) -> Deferred[IProtocol]:
    """
    L{upgrade}, over HTTP/2: L{connectHTTP2}, then one
    L{HTTP2Connection.upgrade}; the connection closes when that stream ends
    (or the upgrade fails).

    @return: Fires with the protocol connected to the stream; fails with
        L{UpgradeFailed} or L{ExtendedConnectUnavailable}.
    """

    def connected(connection: HTTP2Connection) -> Deferred[IProtocol]:
        connection.closeWhenIdle = True
        return connection.upgrade(
            protocols,
            protocolFactory,
            target=target,
            scheme=scheme,
            headers=headers,
            timeout=timeout,
        )

    d = connectHTTP2(endpoint, authority=authority, timeout=timeout, reactor=reactor)
    return d.addCallback(connected)
