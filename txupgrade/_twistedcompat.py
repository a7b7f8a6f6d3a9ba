"""
The one place that touches private Twisted attributes.

The swap of a connection's protocol needs state Twisted keeps private: the
C{_GenericHTTPChannelProtocol} wrapper that L{Site} puts around each channel
(and its C{_channel}), the channel's network producer, and the two buffers
where bytes that follow a request wait (TWISTED_NOTES.md, "Where the bytes
are"). Everything is named here, and C{tests/test_twistedcompat.py} fails
loudly when a supported Twisted version renames any of it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IProtocol, ISSLTransport
from twisted.web import server
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol

from txupgrade.h2c import PREFACE

__all__ = [
    "answerStar",
    "releaseChannel",
    "requestVersion",
    "swapProtocol",
    "takeTrailingData",
    "wrapChannel",
]


def wrapChannel(channel: HTTPChannel) -> _GenericHTTPChannelProtocol:
    """
    Wrap C{channel} the way L{Site} does, remembering the wrapper on it.

    The wrapper is what the transport calls; pointing its C{_channel} at
    another protocol is the in-tree way to switch (as ALPN C{h2} does).
    """
    wrapper = _HTTP2Wrapper(channel)
    channel._txupgradeWrapper = wrapper  # type: ignore[attr-defined]
    return wrapper


def requestVersion(channel: HTTPChannel) -> bytes:
    """The HTTP version of the request whose headers were just read."""
    return channel._version


def takeTrailingData(channel: HTTPChannel) -> bytes:
    """
    Remove and return every byte the channel holds after the current request.

    Bytes that followed a request with a body were moved to C{_dataBuffer}
    (C{_finishRequestBody}); bytes that followed one without a body, or that
    arrived re-entrantly, wait in the C{LineReceiver} buffer, which is later
    in the stream. Both end up empty, so the parsing loop still on the stack
    finds nothing more to parse.
    """
    data = b"".join(channel._dataBuffer)
    channel._dataBuffer = []
    return data + channel.clearLineBuffer()


def releaseChannel(channel: HTTPChannel) -> None:
    """
    Detach the HTTP machinery from the connection, leaving it to a new protocol.

    Cancels the idle timeout (and any pending forced abort), unregisters the
    channel as the transport's producer, resumes reading if backpressure had
    paused it, drops the queued requests, and keeps the channel in its
    "handling a request" state so it never parses again.
    """
    channel.setTimeout(None)
    channel._savedTimeOut = None
    aborting = getattr(channel, "_abortingCall", None)
    if aborting is not None and aborting.active():
        aborting.cancel()
    channel._abortingCall = None
    producer = channel._networkProducer
    producer.unregisterProducer()  # type: ignore[attr-defined]
    producer.resumeProducing()
    channel._handlingRequest = True
    channel.requests = []


def swapProtocol(channel: HTTPChannel, protocol: IProtocol) -> Any:
    """
    Point the channel's wrapper at C{protocol}; return the transport.

    From now on the transport's C{dataReceived} and C{connectionLost} reach
    C{protocol}.
    """
    wrapper = channel._txupgradeWrapper  # type: ignore[attr-defined]
    if wrapper._negotiatedProtocol is None:
        wrapper._negotiatedProtocol = b"http/1.1"
    wrapper._channel = protocol
    transport = channel.transport
    del channel._txupgradeWrapper  # type: ignore[attr-defined]
    return transport


class _HTTP2Wrapper(_GenericHTTPChannelProtocol):
    """
    Twisted's channel wrapper, serving HTTP/2 with txupgrade's connection.

    On TLS with ALPN C{h2}, as Twisted does, but with
    L{txupgrade._h2connection.H2Connection}. On cleartext, a connection
    whose first bytes are the HTTP/2 preface is served as HTTP/2 (prior
    knowledge, RFC 9113 §3.3) unless the site's C{priorKnowledge} is off;
    bytes that could still be the preface are held until they tell.
    """

    _sniffed = b""
    _negotiatedProtocol: bytes | None = None  # type: ignore[assignment]

    def dataReceived(self, data: bytes) -> None:
        if self._negotiatedProtocol is None:
            transport = self._channel.transport
            if getattr(transport, "negotiatedProtocol", None) == b"h2":
                self._becomeH2(data)
                return
            if not ISSLTransport.providedBy(transport) and getattr(self._site, "priorKnowledge", False):
                data = self._sniffed + data
                head = data[: len(PREFACE)]
                if PREFACE.startswith(head):
                    if len(head) < len(PREFACE):
                        self._sniffed = data
                        return
                    if self._becomeH2(data):
                        return
                self._sniffed = b""
            self._negotiatedProtocol = b"http/1.1"
        self._channel.dataReceived(data)

    def _becomeH2(self, data: bytes) -> bool:
        """Replace the HTTP/1.1 channel with an HTTP/2 connection, as ALPN does."""
        try:
            from txupgrade._h2connection import buildH2Connection
        except ImportError:
            return False
        channel: Any = self._channel
        producer = channel._networkProducer
        producer.unregisterProducer()
        channel.setTimeout(None)
        transport = channel.transport
        connection = buildH2Connection(self._site)
        self._channel = connection
        self._negotiatedProtocol = b"h2"
        connection.makeConnection(transport)
        producer.registerProducer(connection, True)
        connection.dataReceived(data)
        return True


def answerStar(request: server.Request) -> None:
    """Answer a request for C{*} as twisted.web does: C{200} to C{OPTIONS}, else C{405}."""
    server.Request._handleStar(request)
