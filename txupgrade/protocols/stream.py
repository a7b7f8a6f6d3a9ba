"""
Raw-stream handoff: any Twisted protocol factory behind an C{Upgrade} token.

Theory of operation
===================
L{StreamUpgrade} is an L{IUpgradeProtocol} made of a name, a version, an
L{IProtocolFactory} and an optional request check. After the C{101} the
channel gets a L{_StreamProtocol}, which builds the factory's protocol, sets
its C{upgradeRequest} attribute to the original
L{txupgrade.negotiation.UpgradeRequest} and connects it, so the protocol sees
the connection as if it had been accepted by a port of its own:

  - Backpressure: while the transport's write buffer is full, reading from
    the peer pauses (a streaming producer that pauses and resumes the
    transport's reading), unless the protocol registers a producer of its
    own; that one then replaces the default until it is unregistered.
  - Half-close: a protocol providing C{IHalfCloseableProtocol} gets
    C{readConnectionLost} when the client shuts down its side, and may call
    C{transport.loseWriteConnection()} itself (over plain TCP).
  - Errors: an exception from the protocol is logged and the connection is
    aborted; C{connectionLost} still reaches the protocol, once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from txupgrade.interfaces import IUpgradeProtocol
from txupgrade.negotiation import Accept, Decision, Decline, Refuse, UpgradeRequest
from txupgrade.reporting import pluginFailed

__all__ = ["StreamUpgrade"]

_log = Logger(namespace="txupgrade.stream")

#: What a request check may return: a decision, or C{True}/C{None} to accept.
Check = Callable[[UpgradeRequest], "Decision | bool | None"]


@implementer(IUpgradeProtocol)
class StreamUpgrade:
    """
    Serve C{factory}'s protocol on the connection after C{Upgrade: name[/version]}.

    Example (a complete plugin module)::

        reverse = StreamUpgrade("reverse", Factory.forProtocol(Reverse), version="1")

    The built protocol has an attribute C{upgradeRequest} (the original
    L{UpgradeRequest}) from before C{makeConnection}, so C{connectionMade}
    can answer it.

    @ivar name: The token, as in L{IUpgradeProtocol}.
    @ivar version: The version token, or L{None} to accept any.
    @ivar factory: The L{IProtocolFactory} whose C{buildProtocol(peer)} makes
        each connection's protocol.
    @ivar check: Called with the request before the switch; returns
        L{Accept}, L{Decline} or L{Refuse} (or C{True}/L{None} to accept,
        C{False} to decline).
    @ivar headers: Extra headers for every C{101}.
    """

    def __init__(
        self,
        name: str,
        factory: IProtocolFactory,
        *,
        version: str | None = None,
        check: Check | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        if not IProtocolFactory.providedBy(factory):
            raise TypeError(f"{factory!r} does not provide IProtocolFactory")
        self.name = name
        self.version = version
        self.factory = factory
        self.check = check
        self.headers = headers
        self._accept = Accept(headers=headers)

    def __repr__(self) -> str:
        token = self.name if self.version is None else f"{self.name}/{self.version}"
        return f"<StreamUpgrade {token} {self.factory!r}>"

    def negotiate(self, request: UpgradeRequest) -> Decision:
        """Ask L{check}, if any; accept by default."""
        if self.check is None:
            return self._accept
        decision = self.check(request)
        if decision is None or decision is True:
            return self._accept
        if decision is False:
            return Decline("the request check declined")
        if isinstance(decision, (Accept, Decline, Refuse)):
            return decision
        raise TypeError(f"request check returned {decision!r}")

    def buildProtocol(self, request: UpgradeRequest, site: object) -> IProtocol | None:
        """The factory's protocol for this connection, behind L{_StreamProtocol}."""
        inner = self.factory.buildProtocol(request.peer)
        if inner is None:
            return None
        inner.upgradeRequest = request  # type: ignore[attr-defined]
        if IHalfCloseableProtocol.providedBy(inner):
            return _HalfCloseableStreamProtocol(inner, self.name, site)
        return _StreamProtocol(inner, self.name, site)


@implementer(IPushProducer)
class _ReadThrottle:
    """The default producer: a full write buffer pauses reading from the peer."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.paused = False

    def pauseProducing(self) -> None:
        """Stop reading."""
        self.paused = True
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        """Read again, unless the connection is closing."""
        self.paused = False
        if not self._transport.disconnecting:
            self._transport.resumeProducing()

    def stopProducing(self) -> None:
        """The connection is going away; nothing to stop."""


class _StreamTransport:
    """
    The transport as the stream protocol sees it: the real one (writes go
    straight to it), with producer registration shared with L{_ReadThrottle}.
    """

    def __init__(self, transport: Any) -> None:
        self.wrappedTransport = transport
        self.write = transport.write
        self.writeSequence = transport.writeSequence
        self._throttle: _ReadThrottle | None = None
        self._own = False
        directlyProvides(self, providedBy(transport))
        if hasattr(transport, "pauseProducing"):
            self._throttle = _ReadThrottle(transport)
            transport.registerProducer(self._throttle, True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrappedTransport, name)

    def __repr__(self) -> str:
        return f"<_StreamTransport {self.wrappedTransport!r}>"

    def _dropThrottle(self) -> None:
        """Unregister the default producer, reading again if it had paused."""
        throttle, self._throttle = self._throttle, None
        if throttle is not None:
            self.wrappedTransport.unregisterProducer()
            if throttle.paused and not self.wrappedTransport.disconnecting:
                self.wrappedTransport.resumeProducing()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """Register the protocol's own producer in place of the default one."""
        if self._own:
            raise RuntimeError(f"Cannot register producer {producer!r}: one is already registered")
        self._dropThrottle()
        self._own = True
        self.wrappedTransport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        """Unregister the protocol's producer; the default one is not restored."""
        if self._own:
            self._own = False
            self.wrappedTransport.unregisterProducer()

    def loseConnection(self) -> None:
        """Close after the buffer is written (the default producer must go first)."""
        self._dropThrottle()
        self.wrappedTransport.loseConnection()

    def loseWriteConnection(self) -> None:
        """Half-close our side; nothing more is written, so no more throttling."""
        self._dropThrottle()
        self.wrappedTransport.loseWriteConnection()

    def abortConnection(self) -> None:
        """Close at once."""
        self._dropThrottle()
        self.wrappedTransport.abortConnection()


@implementer(IProtocol)
class _StreamProtocol:
    """
    What the channel switches to: connects the factory's protocol through a
    L{_StreamTransport}, contains its exceptions, and ends it once.
    """

    def __init__(self, inner: IProtocol, name: str = "stream", site: object = None) -> None:
        self.inner = inner
        self.name = name
        self.site = site
        self.transport: _StreamTransport | None = None
        self._lost = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.inner!r}>"

    def makeConnection(self, transport: Any) -> None:
        """Take the transport, then connect the inner protocol."""
        self.transport = _StreamTransport(transport)
        try:
            self.inner.makeConnection(self.transport)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - the protocol's bug closes only its connection
            self._failed(Failure(), "makeConnection")

    def connectionMade(self) -> None:
        """Nothing: L{makeConnection} connects the inner protocol."""

    def dataReceived(self, data: bytes) -> None:
        """Hand C{data} to the inner protocol."""
        try:
            self.inner.dataReceived(data)
        except Exception:  # noqa: BLE001 - see makeConnection
            self._failed(Failure(), "dataReceived")

    def connectionLost(self, reason: Failure) -> None:
        """End the inner protocol, once."""
        if self._lost:
            return
        self._lost = True
        try:
            self.inner.connectionLost(reason)
        except Exception:  # noqa: BLE001 - nothing left to close; log it
            self._report(Failure(), "connectionLost")

    def _failed(self, failure: Failure, where: str) -> None:
        """Log the inner protocol's exception and abort the connection."""
        self._report(failure, where)
        if self.transport is not None:
            self.transport.abortConnection()

    def _report(self, failure: Failure, where: str) -> None:
        """Count and log (rate-limited, through the site) the inner protocol's exception."""
        pluginFailed(
            self.site,
            _log,
            self.name,
            where,
            failure,
            "Stream protocol {protocol} ({inner!r}) raised in {where}",
            inner=self.inner,
            where=where,
        )


@implementer(IHalfCloseableProtocol)
class _HalfCloseableStreamProtocol(_StreamProtocol):
    """A L{_StreamProtocol} whose inner protocol handles half-close."""

    def readConnectionLost(self) -> None:
        """The client shut down its side: tell the inner protocol."""
        try:
            self.inner.readConnectionLost()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - see makeConnection
            self._failed(Failure(), "readConnectionLost")

    def writeConnectionLost(self) -> None:
        """Our side is shut down: tell the inner protocol."""
        try:
            self.inner.writeConnectionLost()  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - see makeConnection
            self._failed(Failure(), "writeConnectionLost")
