"""An upgraded HTTP/2 stream as its protocol's transport (the client side of RFC 8441)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IProtocol,
    IPushProducer,
    ITransport,
)
from twisted.python.failure import Failure
from zope.interface import implementer


@implementer(ITransport, IConsumer, IPushProducer)
class _StreamTransport:
    """
    An upgraded stream, as its protocol's transport: writes are DATA frames
    sent as the flow-control windows allow (the rest buffered, a registered
    producer paused meanwhile), L{loseConnection} is END_STREAM, and
    L{pauseProducing} withholds the window the server needs to send more.

    @ivar streamID: The HTTP/2 stream.
    @ivar disconnecting: Whether L{loseConnection} was called.
    """

    disconnecting = False
    # The stream's state, as class defaults until it changes.
    _paused = _endWanted = _localEnded = _remoteEnded = _endDelivered = False
    _finished = _streaming = _producerPaused = _pulling = _writeLostWanted = False
    _producer: Any = None

    def __init__(self, connection: Any, streamID: int, protocol: IProtocol) -> None:
        # The HTTP2Connection (not imported: it imports this module).
        self.connection = connection
        self.streamID = streamID
        self.protocol = protocol
        self._out = bytearray()
        self._inbound: list[tuple[bytes, int]] = []

    # -- ITransport --------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send C{data} as DATA frames, as the windows allow; buffer the rest."""
        if self._finished or self._endWanted or not data:
            return
        self._out += data
        self._pump()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """L{write} of the chunks joined."""
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """
        END_STREAM once the buffered bytes are sent; the protocol still reads
        until the server ends its side too, then gets C{connectionLost}.
        """
        if self._finished or self._endWanted:
            return
        self.disconnecting = True
        self._endWanted = True
        self._pump()

    def loseWriteConnection(self) -> None:
        """
        The half-close: END_STREAM after the buffered bytes, as
        L{loseConnection}; an C{IHalfCloseableProtocol} then hears
        C{writeConnectionLost}.
        """
        self._writeLostWanted = True
        self.loseConnection()

    def abortConnection(self) -> None:
        """Reset the stream with C{CANCEL} now; the buffered bytes are dropped."""
        if self._finished:
            return
        self.disconnecting = True
        self.connection._resetStream(self.streamID)
        self._finish(Failure(ConnectionAborted("The stream was reset (CANCEL)")))

    def getPeer(self) -> Any:
        """The connection's peer."""
        return self.connection.transport.getPeer()

    def getHost(self) -> Any:
        """The connection's local address."""
        return self.connection.transport.getHost()

    # -- IConsumer -----------------------------------------------------------

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """Pause a push C{producer} while bytes wait for window; pull a pull one when they are sent."""
        if self._producer is not None:
            raise RuntimeError(f"Cannot register producer {producer!r}: {self._producer!r} is registered")
        if self._finished:
            producer.stopProducing()
            return
        self._producer, self._streaming, self._producerPaused = producer, streaming, False
        if streaming:
            self._steerProducer()
        else:
            self._pull()

    def unregisterProducer(self) -> None:
        """Forget the producer."""
        self._producer = None

    # -- IPushProducer: the protocol's reading -------------------------------

    def pauseProducing(self) -> None:
        """Stop delivering DATA, and stop giving the server window back."""
        self._paused = True

    def resumeProducing(self) -> None:
        """Deliver what was held, give its window back, read on."""
        if not self._paused:
            return
        self._paused = False
        self._deliver()
        self.connection._flush()

    def stopProducing(self) -> None:
        """Abort the stream."""
        self.abortConnection()

    # -- from the connection ---------------------------------------------------

    def _dataReceived(self, data: bytes, flowControlled: int) -> None:
        self._inbound.append((data, flowControlled))
        self._deliver()

    def _ended(self) -> None:
        """The server's END_STREAM."""
        self._remoteEnded = True
        self._deliver()

    def _reset(self, errorCode: int) -> None:
        """The server reset the stream: after its END_STREAM with C{NO_ERROR}, a clean end."""
        if self._remoteEnded and errorCode == 0:
            self._localEnded = True
            if self._endDelivered:
                self._finish(Failure(ConnectionDone("The stream ended")))
            else:
                self._deliver()
            return
        self._finish(Failure(ConnectionLost(f"The stream was reset by the server (error code {errorCode})")))

    def _deliver(self) -> None:
        """Hand the held DATA (acknowledged once read), then the server's end, unless paused."""
        while self._inbound and not self._paused and not self._finished:
            data, flowControlled = self._inbound.pop(0)
            self.protocol.dataReceived(data)
            self.connection._acknowledge(self.streamID, flowControlled)
        if self._inbound or self._paused or self._finished or not self._remoteEnded or self._endDelivered:
            return
        self._endDelivered = True
        if IHalfCloseableProtocol.providedBy(self.protocol):
            self.protocol.readConnectionLost()
            if self._localEnded:
                self._finish(Failure(ConnectionDone("The stream ended")))
        elif self._localEnded:
            self._finish(Failure(ConnectionDone("The stream ended")))
        else:
            self.loseConnection()

    def _pump(self) -> None:
        """Send what the windows allow; END_STREAM when asked and all is sent; steer the producer."""
        connection = self.connection
        if self._finished:
            return
        sent = connection._sendData(self.streamID, self._out)
        if sent is None:
            return  # the stream is gone: the connection tells us how
        del self._out[:sent]
        if not self._out and self._endWanted and not self._localEnded:
            self._localEnded = True
            connection._endStream(self.streamID)
            if self._writeLostWanted and IHalfCloseableProtocol.providedBy(self.protocol):
                self.protocol.writeConnectionLost()
            if self._endDelivered:
                self._finish(Failure(ConnectionDone("The stream ended")))
                return
        connection._flush()
        self._steerProducer()
        if not self._out:
            self._pull()

    def _steerProducer(self) -> None:
        producer = self._producer
        if producer is None or not self._streaming:
            return
        if self._out and not self._producerPaused:
            self._producerPaused = True
            producer.pauseProducing()
        elif not self._out and self._producerPaused:
            self._producerPaused = False
            producer.resumeProducing()

    def _pull(self) -> None:
        """A pull producer writes its next chunk once the last one is sent."""
        if self._producer is None or self._streaming or self._pulling or self._finished:
            return
        self._pulling = True
        try:
            while self._producer is not None and not self._out and not self._finished:
                before = len(self._out)
                self._producer.resumeProducing()
                if len(self._out) == before:
                    break  # it wrote nothing this time (it ended, or unregistered)
        finally:
            self._pulling = False

    def _finish(self, reason: Failure) -> None:
        """The stream is over: stop the producer, tell the protocol, once."""
        if self._finished:
            return
        self._finished = self.disconnecting = True
        self._out.clear()
        self._inbound.clear()
        self.connection._streamFinished(self.streamID)
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()
        self.protocol.connectionLost(reason)
