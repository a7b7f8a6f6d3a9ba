"""
Every connection of the daemon's site, tracked: bytes, upgrades, close events
and the graceful drain at shutdown.

A L{ConnectionTracker} is given the site (C{site.tracker}); the site then
builds each connection as a L{TrackedConnection}: the site's own
per-connection wrapper (L{txupgrade._twistedcompat.wrapChannel}), which the
transport calls, with the counting added, so tracking adds no layer of its
own. It counts the bytes read in C{dataReceived}, and the bytes written
through the one transport it gives the channel and any protocol after it
(L{CountingTransport}); the channel tells it of a switch
(L{TrackedConnection.protocolSwitched}) with the protocol's name and the
bytes that came behind the request, which are the new protocol's. When an
upgraded connection closes it logs one C{txupgrade.connection} line with the
protocol, peer, duration and bytes in and out (preformatted by the
daemon's L{txupgrade.daemon.logs.LineLog} when the log is text).

L{ConnectionTracker.drain} winds every connection down: an idle HTTP
connection is closed, one with a request in flight closes once its response
is done (C{Connection: close}), an upgraded protocol providing
L{IDrainable} is asked to drain, and whatever is still open at the deadline
is aborted.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ISSLTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from zope.interface import implementer, providedBy

from txupgrade import _twistedcompat as _compat
from txupgrade.daemon.limits import LimitLog, Limits, refusal
from txupgrade.daemon.logs import LineLog, LogRateLimit
from txupgrade.interfaces import IDrainable

__all__ = [
    "ConnectionTracker",
    "CountingTransport",
    "Switched",
    "TrackedConnection",
    "connectionOf",
    "peerText",
    "tlsOf",
]

_log = Logger(namespace="txupgrade.connection")
_drainLog = Logger(namespace="txupgrade.drain")

#: The text of a closed upgraded connection's line (and its event's format).
_CLOSED = (
    "{protocol} connection from {peer} closed after {duration:.3f} s, "
    "{bytesIn} bytes in, {bytesOut} bytes out"
)


def peerText(address: IAddress | None) -> str:
    """C{host:port} (C{[v6]:port}) for an IP address, the path for a UNIX one."""
    host = getattr(address, "host", None)
    if host is not None:
        port = getattr(address, "port", "")
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    name = getattr(address, "name", None)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return f"unix:{name}" if name else str(address)


class Switched(NamedTuple):
    """
    One switch as the server saw it: which protocol, over which HTTP version
    and transport, on which connection (and HTTP/2 stream).

    @ivar protocol: The protocol's name (as in the C{101}, or C{:protocol}).
    @ivar http: C{"1.1"} (an C{Upgrade}) or C{"2"} (an extended CONNECT stream).
    @ivar tls: Whether the connection is TLS.
    @ivar alpn: The ALPN protocol TLS negotiated (C{"h2"}, C{"http/1.1"}), or L{None}.
    @ivar stream: The HTTP/2 stream's id, or L{None} for a whole connection.
    @ivar connection: The connection's number (L{TrackedConnection.serial}).
    @ivar peer: The client's address, as in the logs.
    @ivar at: When, in the tracker's clock's seconds.
    """

    protocol: str
    http: str
    tls: bool
    alpn: str | None
    stream: int | None
    connection: int
    peer: str
    at: float


#: What the channel and the protocols read of the transport most (on each
#: request line, each request, each switch): read through by class-level
#: C{attrgetter}s, with no Python call and nothing kept per connection.
_READ_THROUGH = (
    "disconnecting",
    "getPeer",
    "getHost",
    "registerProducer",
    "unregisterProducer",
    "pauseProducing",
    "resumeProducing",
    "stopProducing",
    "loseConnection",
    "abortConnection",
    "negotiatedProtocol",
    "setTcpNoDelay",
)

#: The L{CountingTransport} subclass for each set of transport interfaces.
_COUNTING: dict[Any, type[CountingTransport]] = {}


class CountingTransport:
    """
    A connection's transport as its channel and every protocol after a
    switch see it: the transport itself (every attribute and interface),
    counting the bytes written into the connection's L{TrackedConnection}.
    """

    #: Not an adapter: C{IPushProducer(transport)} finds the transport's interfaces.
    __conform__ = None

    wrappedTransport: Any
    _connection: TrackedConnection

    def __new__(cls, transport: Any, connection: TrackedConnection) -> CountingTransport:
        # The transport's interfaces: a subclass per set of them declares them
        # once (declaring them on each instance costs a few µs a connection).
        # zope shares one specification among the transports that provide
        # the same (a class's, or Provides for a TLS or PROXY wrapper's).
        provided = providedBy(transport)
        counting = _COUNTING.get(provided)
        if counting is None:
            counting = _COUNTING[provided] = implementer(provided)(
                type(f"Counting{type(transport).__name__}", (cls,), {"__module__": __name__})
            )
        self = super().__new__(counting)
        self.wrappedTransport = transport
        self._connection = connection
        return self

    def write(self, data: bytes) -> None:
        self._connection.bytesOut += len(data)
        self.wrappedTransport.write(data)

    def writeSequence(self, data: Any) -> None:
        data = list(data)
        self._connection.bytesOut += sum(map(len, data))
        self.wrappedTransport.writeSequence(data)

    def streamSwitched(self, name: str, streamID: int) -> None:
        """An HTTP/2 stream switched to C{name}: see L{TrackedConnection.streamSwitched}."""
        if self._connection is not None:
            self._connection.streamSwitched(name, streamID)

    def closed(self) -> None:
        """
        The connection is over: a late write goes straight to the transport
        (it counts nowhere), and nothing here holds the connection any more,
        so no reference cycle is left for the garbage collector to find.
        """
        self._connection = None  # type: ignore[assignment]
        self.write = self.wrappedTransport.write  # type: ignore[method-assign]
        self.writeSequence = self.wrappedTransport.writeSequence  # type: ignore[method-assign]

    def watchActivity(self) -> None:
        """From now on, each write also marks the connection active (its protocol has an idle timeout)."""
        self.write = self._writeActive  # type: ignore[method-assign]
        self.writeSequence = self._writeSequenceActive  # type: ignore[method-assign]

    def _writeActive(self, data: bytes) -> None:
        connection = self._connection
        connection._lastActive = connection.tracker.clock.seconds()
        CountingTransport.write(self, data)

    def _writeSequenceActive(self, data: Any) -> None:
        connection = self._connection
        connection._lastActive = connection.tracker.clock.seconds()
        CountingTransport.writeSequence(self, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrappedTransport, name)


# A missing one (negotiatedProtocol on TCP) raises AttributeError, as on the transport.
for _name in _READ_THROUGH:
    setattr(CountingTransport, _name, property(operator.attrgetter(f"wrappedTransport.{_name}")))
del _name


class TrackedConnection(_compat.ChannelWrapper):
    """
    One connection of the site, tracked: the site's channel wrapper, counting.

    @ivar protocol: C{"http"} until a switch, then the upgraded protocol's
        name (as in the C{101}'s C{Upgrade}).
    @ivar bytesIn: Bytes received since the switch (or the start).
    @ivar bytesOut: Bytes sent since the switch (or the start).
    @ivar transport: The transport that calls this connection.
    @ivar serial: The connection's number: 1 for the tracker's first, and so on.
    """

    tracker: ConnectionTracker
    transport: Any = None
    protocol = "http"
    serial = 0
    peer = ""
    started = 0.0
    bytesIn = 0
    bytesOut = 0
    clientHost: str | None = None
    disconnecting = False
    _requestStarted: float | None = None
    _draining = False
    _headTimed = False
    _headTail = b""
    _idleTimer: IDelayedCall | None = None
    _idleTimeout = 0.0
    _lastActive = 0.0
    _handshaken = False
    _counting: CountingTransport

    def makeConnection(self, transport: Any) -> None:
        tracker = self.tracker
        self.transport = transport
        self.started = tracker.clock.seconds()
        tracker.opened += 1
        self.serial = tracker.opened
        tracker.registerProtocol(self)
        if tracker.limits.requestHeadTimeout:
            tracker.timeHead(self)
        self._counting = CountingTransport(transport, self)
        super().makeConnection(self._counting)

    def _switchedDataReceived(self, data: bytes) -> None:
        """After a switch (L{protocolSwitched}): count, and hand the bytes on."""
        self.bytesIn += len(data)
        self._channel.dataReceived(data)

    def _switchedActiveDataReceived(self, data: bytes) -> None:
        """After a switch to a protocol with an idle timeout: count, mark active, hand on."""
        self.bytesIn += len(data)
        self._lastActive = self.tracker.clock.seconds()
        self._channel.dataReceived(data)

    def dataReceived(self, data: bytes) -> None:
        self.bytesIn += len(data)
        channel = self._channel
        if self._requestStarted is None or (isinstance(channel, HTTPChannel) and not channel.requests):
            # The first byte of a request: a switch's latency counts from it.
            self._requestStarted = self.tracker.clock.seconds()
        if self.tracker.limits.requestHeadTimeout:
            self._watchHead(data)
        super().dataReceived(data)

    def _watchHead(self, data: bytes) -> None:
        """
        Time the request head (L{Limits.requestHeadTimeout}): from a
        connection's start, or from the first byte of a request that comes
        while the channel is between requests, to its blank line.
        """
        if not self._headTimed:
            current = self._channel
            if not isinstance(current, HTTPChannel) or current.requests:
                return
            search = data
        else:
            search = self._headTail + data
        if b"\r\n\r\n" in search or b"\n\n" in search:
            self._headTail = b""
            self.tracker.headRead(self)
            return
        self._headTail = search[-3:]
        if not self._headTimed:
            self.tracker.timeHead(self)

    def _headTimedOut(self) -> None:
        """
        The head did not come in time: C{408} and close; a TLS handshake
        still unfinished (the deadline runs from accept) is aborted.
        """
        self._headTimed = False
        transport = self.transport
        if self.protocol != "http" or transport is None or transport.disconnecting:
            return
        inHandshake = ISSLTransport.providedBy(transport) and not self._handshaken
        self.tracker.limitLog.hit(
            "request-head-timeout",
            peerText(self.getPeer()),
            seconds=self.tracker.limits.requestHeadTimeout,
            **({"during": "the TLS handshake"} if inHandshake else {}),
        )
        if inHandshake:
            transport.abortConnection()
            return
        transport.write(refusal("request-head-timeout"))
        transport.loseConnection()

    def handshakeCompleted(self) -> None:
        """The TLS handshake (of an C{ssl:} listener or an RFC 2817 upgrade) is done."""
        self._handshaken = True
        super().handshakeCompleted()

    def _idleCheck(self) -> None:
        """Close an upgraded connection silent for its protocol's idle timeout."""
        self._idleTimer = None
        idle = self.tracker.clock.seconds() - self._lastActive
        if idle < self._idleTimeout:
            self._idleTimer = self.tracker.clock.callLater(self._idleTimeout - idle, self._idleCheck)
            return
        if self.transport is not None and not self.transport.disconnecting:
            self.tracker.limitLog.hit(
                "idle-timeout", self.peer, protocol=self.protocol, seconds=self._idleTimeout
            )
            self.transport.loseConnection()

    def protocolSwitched(self, name: str, trailing: int) -> None:
        """
        The channel switched to the protocol C{name}, its C{101} written:
        from now on, the bytes are the new protocol's, from the C{trailing}
        bytes that came behind the request on.
        """
        tracker = self.tracker
        now = tracker.clock.seconds()
        self.protocol = name
        self.peer = peerText(self.transport.getPeer())
        latency = now - self._requestStarted if self._requestStarted is not None else 0.0
        tracker.addBytes("http", self.bytesIn - trailing, self.bytesOut)
        self.started, self.bytesIn, self.bytesOut = now, trailing, 0
        tracker.headRead(self)
        idleTimeout = tracker.idleTimeouts.get(name)
        if idleTimeout is None:
            idleTimeout = tracker.idleTimeouts[name] = tracker.limits.idleTimeoutFor(name)
        self._idleTimeout = idleTimeout
        # The switched protocol's bytes take the lean paths (no HTTP checks).
        self.dataReceived = self._switchedDataReceived  # type: ignore[method-assign]
        if self._idleTimeout:
            self._lastActive = now
            self._idleTimer = tracker.clock.callLater(self._idleTimeout, self._idleCheck)
            self.dataReceived = self._switchedActiveDataReceived  # type: ignore[method-assign]
            self._counting.watchActivity()
        tracker.switched(self, name, None, now, latency)

    def streamSwitched(self, name: str, streamID: int) -> None:
        """
        An HTTP/2 stream of this connection switched to the protocol C{name}
        (extended CONNECT, RFC 8441): counted by transport (the connection
        itself stays HTTP/2, its bytes and close are the connection's).
        """
        if not self.peer:
            self.peer = peerText(self.transport.getPeer())
        tracker = self.tracker
        tracker.switched(self, name, streamID, tracker.clock.seconds())

    @property
    def tls(self) -> bool:
        """Whether the connection is TLS (an C{ssl:} listener, or after an RFC 2817 upgrade)."""
        return ISSLTransport.providedBy(self.transport)

    def getPeer(self) -> IAddress:
        """The client's address (after the PROXY protocol, the proxied one)."""
        return self.transport.getPeer()

    def current(self) -> Any:
        """The protocol now speaking on this connection (the HTTP channel, or the upgraded one)."""
        return self._channel

    def loseConnection(self) -> None:
        """Close the connection once what is written is sent."""
        self.transport.loseConnection()

    def abortConnection(self) -> None:
        """Close the connection now."""
        self.transport.abortConnection()

    def drain(self) -> bool:
        """
        Start closing gracefully: see the module docstring. Called once.

        @return: C{False} if the protocol's own drain failed (the connection
            is then aborted).
        """
        if self._draining:
            return True
        self._draining = True
        current = self._channel
        if isinstance(current, HTTPChannel):
            requests = current.requests
            if not requests:
                current.loseConnection()
                return True
            current.persistent = False
            for request in requests:
                if not request.startedWriting:
                    request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        elif IDrainable.providedBy(current):
            try:
                current.drain()
            except Exception:  # noqa: BLE001 - a protocol's bug must not stop the drain
                _drainLog.failure(
                    "{protocol} failed to drain the connection from {peer}; aborting it",
                    protocol=self.protocol,
                    peer=self.peer,
                )
                self.abortConnection()
                return False
        return True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        tracker = self.tracker
        tracker.headRead(self)
        if self._idleTimer is not None:
            if self._idleTimer.active():
                self._idleTimer.cancel()
            self._idleTimer = None
        tracker.addBytes(self.protocol, self.bytesIn, self.bytesOut)
        if not self._handshaken and _isTLSError(reason):
            tracker.tlsFailed(self, reason)
        if self.protocol != "http":
            duration = tracker.clock.seconds() - self.started
            tracker.logClosed(self, duration)
            if tracker.onClose:
                tracker.closed(self, duration)
        tracker.unregisterProtocol(self)
        # The cycles (the counting transport, the lean dataReceived bound
        # here) are broken: freed at once, not by the cyclic collector, whose
        # runs cost more per connection than all of the counting.
        self._counting.closed()
        self.__dict__.pop("dataReceived", None)
        super().connectionLost(reason)


def tlsOf(transport: Any) -> tuple[bool, str | None]:
    """Whether C{transport} is TLS, and the ALPN protocol it negotiated (L{None}: none, or not yet)."""
    if not ISSLTransport.providedBy(transport):
        return False, None
    negotiated = getattr(transport, "negotiatedProtocol", None)
    return True, negotiated.decode("ascii", "replace") if isinstance(negotiated, bytes) else None


def connectionOf(transport: Any) -> TrackedConnection | None:
    """The tracked connection whose transport (as its protocols see it) is C{transport}, if any."""
    return transport._connection if isinstance(transport, CountingTransport) else None


def _isTLSError(reason: Failure) -> bool:
    """Whether a connection ended on a TLS error (pyOpenSSL's; not imported when no TLS was used)."""
    ssl = sys.modules.get("OpenSSL.SSL")
    return ssl is not None and isinstance(getattr(reason, "value", reason), ssl.Error)


def tlsErrorText(reason: Failure) -> str:
    """The OpenSSL reason of a TLS error, short (C{wrong version number}), else its message."""
    for entry in getattr(reason.value, "args", [[]])[0] or ():
        if isinstance(entry, tuple) and len(entry) == 3 and entry[2]:
            return str(entry[2])
    return reason.getErrorMessage()


class _Refusal(Protocol):
    """
    Answers a connection over a limit: the response, a half-close, and the
    request ignored until the client closes (or, after a few seconds, aborted):
    closing at once, with the request unread, would reset the connection and
    could lose the answer.
    """

    linger = 3.0

    def __init__(self, response: bytes, clock: IReactorTime) -> None:
        self.response = response
        self.clock = clock
        self._abort: IDelayedCall | None = None

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(self.response)
        loseWrite = getattr(transport, "loseWriteConnection", None)
        if loseWrite is None:
            transport.loseConnection()
            return
        loseWrite()
        self._abort = self.clock.callLater(self.linger, transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        """The request is not read."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._abort is not None and self._abort.active():
            self._abort.cancel()


class ConnectionTracker:
    """
    The daemon's site, tracked: given a site, it has it build each
    connection as a L{TrackedConnection} (C{site.tracker}), and keeps them.

    @ivar site: The tracked site.
    @ivar connections: The open connections.
    @ivar onUpgrade: Called with C{(connection, handshakeSeconds)} on each switch.
    @ivar onClose: Called with C{(connection, seconds)} when an upgraded connection closes.
    @ivar lineLog: Where the connection lines go preformatted (text logs);
        L{None}: as C{twisted.logger} events.
    """

    lineLog: LineLog | None = None

    def __init__(self, site: Any, clock: IReactorTime | None = None, limits: Limits | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.site = site
        self.clock: IReactorTime = clock  # type: ignore[assignment]
        self.limits = limits if limits is not None else Limits(requestHeadTimeout=0)
        self.limitLog = LimitLog(self.clock.seconds)
        # The site's own limits (the Upgrade list) count and log here too.
        site.limitLog = self.limitLog
        site.tracker = self
        site.connectionClass = TrackedConnection
        self._perClient: dict[str, int] = {}
        self.connections: set[TrackedConnection] = set()
        self.onUpgrade: list[Callable[[TrackedConnection, float], None]] = []
        self.onClose: list[Callable[[TrackedConnection, float], None]] = []
        self.onDrained: list[Callable[[dict[str, int]], None]] = []
        #: Bytes of connections (or parts of connections) that are over, by protocol.
        self.bytesIn: dict[str, int] = {}
        self.bytesOut: dict[str, int] = {}
        #: TLS handshakes that failed, by OpenSSL's reason.
        self.tlsFailures: dict[str, int] = {}
        #: Switches by C{(protocol, http, tls)}: C{http} C{"1.1"} or C{"2"}, C{tls} C{"yes"} or C{"no"}.
        self.switches: dict[tuple[str, str, str], int] = {}
        #: The latest switch to each protocol (a bounded set: the site's protocols).
        self.lastSwitch: dict[str, Switched] = {}
        #: Connections opened so far (each one's L{TrackedConnection.serial}).
        self.opened = 0
        self._tlsRate = LogRateLimit(self.clock.seconds)
        self._emptied: list[Deferred[None]] = []
        #: The connections whose request head is being timed, by deadline
        #: (one timeout for all: the oldest first), and the one timer, for the oldest.
        self._heads: dict[TrackedConnection, float] = {}
        self._headCall: IDelayedCall | None = None
        #: Each switched protocol's idle timeout (L{Limits.idleTimeoutFor}),
        #: once asked: a bounded set, the site's protocols.
        self.idleTimeouts: dict[str, float] = {}

    def buildProtocol(self, addr: Any) -> Any:
        """What the site builds for a connection from C{addr} (see L{admit})."""
        return self.site.buildProtocol(addr)

    def admit(self, addr: Any, build: Callable[[Any], Any]) -> Any:
        """
        A tracked connection from C{addr}, by the site's C{build}; or, over a
        connection limit, a protocol that answers C{503} and closes.
        """
        limits = self.limits
        if limits.maxConnections and len(self.connections) >= limits.maxConnections:
            return self._refuse("max-connections", addr, limits.maxConnections)
        host = getattr(addr, "host", None)
        if (
            limits.maxConnectionsPerClient
            and host is not None
            and self._perClient.get(host, 0) >= limits.maxConnectionsPerClient
        ):
            return self._refuse("max-connections-per-client", addr, limits.maxConnectionsPerClient)
        connection = build(addr)
        connection.tracker = self
        if limits.maxConnectionsPerClient:
            # Counted by client only when there is a limit to count for.
            connection.clientHost = host
        return connection

    def _refuse(self, limit: str, addr: Any, value: int) -> Protocol:
        self.limitLog.hit(limit, peerText(addr), limitValue=value)
        return _Refusal(refusal(limit), self.clock)

    def registerProtocol(self, p: TrackedConnection) -> None:
        self.connections.add(p)
        if p.clientHost is not None:
            self._perClient[p.clientHost] = self._perClient.get(p.clientHost, 0) + 1

    def unregisterProtocol(self, p: TrackedConnection) -> None:
        self.connections.discard(p)
        if p.clientHost is not None:
            left = self._perClient.get(p.clientHost, 1) - 1
            if left:
                self._perClient[p.clientHost] = left
            else:
                self._perClient.pop(p.clientHost, None)
        if not self.connections:
            if self._headCall is not None:
                self._headCall.cancel()
                self._headCall = None
            waiting, self._emptied = self._emptied, []
            for d in waiting:
                d.callback(None)

    def timeHead(self, connection: TrackedConnection) -> None:
        """
        Time C{connection}'s request head from now (L{Limits.requestHeadTimeout}):
        one timer for every connection, not one each.
        """
        timeout = self.limits.requestHeadTimeout
        connection._headTimed = True
        self._heads[connection] = self.clock.seconds() + timeout
        if self._headCall is None:
            self._headCall = self.clock.callLater(timeout, self._headsDue)

    def headRead(self, connection: TrackedConnection) -> None:
        """C{connection}'s head is read (or it switched, or closed): no longer timed, if it was."""
        if not connection._headTimed:
            return
        connection._headTimed = False
        # The timer stays, even with no head left to time: under load the next
        # connection's head comes at once (a timer each time costs more than
        # one that finds nothing due); it goes when the last connection does.
        self._heads.pop(connection, None)

    def _headsDue(self) -> None:
        """The oldest deadline: every connection past its own times out; the timer moves to the next."""
        self._headCall = None
        heads = self._heads
        now = self.clock.seconds()
        while heads:
            connection = next(iter(heads))
            deadline = heads[connection]
            if deadline > now:
                self._headCall = self.clock.callLater(deadline - now, self._headsDue)
                return
            del heads[connection]
            connection._headTimedOut()

    def logClosed(self, connection: TrackedConnection, duration: float) -> None:
        """The line of an upgraded connection that closed."""
        lineLog = self.lineLog
        if lineLog is not None:
            # _CLOSED's text, formatted at once (as LineLog.line would write it).
            stamp, _ = lineLog.stamps()
            lineLog.output.write(
                f"{stamp} [txupgrade.connection#info] {connection.protocol} connection from "
                f"{connection.peer} closed after {duration:.3f} s, "
                f"{connection.bytesIn} bytes in, {connection.bytesOut} bytes out\n"
            )
            return
        # The event (a JSON log's record) also says how it switched; the text does not change.
        _log.info(
            _CLOSED,
            connectionEvent="closed",
            http="1.1",
            tls=connection.tls,
            protocol=connection.protocol,
            peer=connection.peer,
            duration=duration,
            bytesIn=connection.bytesIn,
            bytesOut=connection.bytesOut,
        )

    def addBytes(self, protocol: str, received: int, sent: int) -> None:
        """Count the bytes of a connection's part that is over."""
        self.bytesIn[protocol] = self.bytesIn.get(protocol, 0) + received
        self.bytesOut[protocol] = self.bytesOut.get(protocol, 0) + sent

    def tlsFailed(self, connection: TrackedConnection, reason: Failure) -> None:
        """
        A TLS handshake failed: count it by OpenSSL's reason (a bounded
        set), log it (at most one line per reason per interval).
        """
        text = tlsErrorText(reason)
        self.tlsFailures[text] = self.tlsFailures.get(text, 0) + 1
        more = self._tlsRate.due(text)
        if more is None:
            return
        offered = getattr(reason.value, "offered", None)
        _log.info(
            "TLS handshake with {peer} failed: {reason}{detail}{more}",
            peer=peerText(connection.getPeer()),
            reason=text,
            detail=f" (ALPN offered: {offered})" if offered is not None else "",
            more=f" (and {more} more since the last line)" if more else "",
            connectionEvent="tls-failed",
            unlogged=more,
        )

    def switched(
        self,
        connection: TrackedConnection,
        name: str,
        streamID: int | None,
        now: float,
        latency: float | None = None,
    ) -> None:
        """
        A connection (C{streamID} L{None}) or one of its HTTP/2 streams
        switched to C{name} at C{now}: count it by transport (L{switches}),
        keep it as the protocol's L{lastSwitch}; a connection's switch, its
        request C{latency} seconds old, goes to the L{onUpgrade} observers.
        """
        transport = connection.transport
        # (Most connections are TCP: tlsOf is asked only of TLS ones.)
        tls, alpn = tlsOf(transport) if ISSLTransport.providedBy(transport) else (False, None)
        http = "1.1" if streamID is None else "2"
        key = (name, http, "yes" if tls else "no")
        self.switches[key] = self.switches.get(key, 0) + 1
        self.lastSwitch[name] = Switched(
            name, http, tls, alpn, streamID, connection.serial, connection.peer, now
        )
        if latency is not None:
            for observer in self.onUpgrade:
                observer(connection, latency)

    def closed(self, connection: TrackedConnection, duration: float) -> None:
        """An upgraded connection closed."""
        for observer in self.onClose:
            observer(connection, duration)

    def whenEmpty(self) -> Deferred[None]:
        """Fires once no connection is open."""
        if not self.connections:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._emptied.append(d)
        return d

    def drain(self, timeout: float) -> Deferred[dict[str, int]]:
        """
        Drain every open connection; abort those still open after C{timeout}.

        @return: Fires, once every connection is closed, with counts: how
            many were open (C{"open"}), how many had to be aborted at the
            deadline (C{"aborted"}) and whose protocol failed to drain
            (C{"failed"}, aborted at once).
        """
        connections = list(self.connections)
        counts = {"open": len(connections), "aborted": 0}
        counts["failed"] = sum(not connection.drain() for connection in connections)
        result: Deferred[dict[str, int]] = Deferred()
        emptied = self.whenEmpty()

        def deadline() -> None:
            remaining = list(self.connections)
            counts["aborted"] = len(remaining)
            byProtocol: dict[str, int] = {}
            for connection in remaining:
                byProtocol[connection.protocol] = byProtocol.get(connection.protocol, 0) + 1
            _drainLog.warn(
                "Drain deadline ({timeout} s) passed: aborting {aborted} connection(s) ({detail})",
                timeout=timeout,
                aborted=len(remaining),
                detail=", ".join(f"{n} {p}" for p, n in sorted(byProtocol.items())),
                drainOutcome="aborted",
            )
            for connection in remaining:
                connection.abortConnection()

        call = self.clock.callLater(timeout, deadline)

        def done(_: object) -> None:
            if call.active():
                call.cancel()
            if counts["aborted"] == 0 and counts["failed"] == 0:
                _drainLog.info(
                    "Drained {open} connection(s) gracefully",
                    open=counts["open"],
                    drainOutcome="drained",
                )
            elif counts["aborted"] == 0:
                _drainLog.warn(
                    "Drained {open} connection(s); {failed} protocol drain(s) failed and were aborted",
                    open=counts["open"],
                    failed=counts["failed"],
                    drainOutcome="failed",
                )
            for observer in self.onDrained:
                observer(counts)
            result.callback(counts)

        emptied.addCallback(done)
        return result
