"""
The one place that touches private Twisted attributes.

The swap of a connection's protocol needs state Twisted keeps private: the
C{_GenericHTTPChannelProtocol} wrapper that L{twisted.web.server.Site} puts
around each channel (and its C{_channel}), the channel's network producer,
and the two buffers where bytes that follow a request wait
(C{docs/internals.md}, "Where the bytes are"). Everything is named here, and
C{tests/test_twistedcompat.py} fails loudly when a supported Twisted version
renames any of it.
"""

from __future__ import annotations

import functools
import operator
import weakref
from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import SSL4ServerEndpoint, _WrapperServerEndpoint
from twisted.internet.interfaces import IProtocol, ISSLTransport
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory
from twisted.web import http, server
from twisted.web.http import HTTPChannel, Request, _GenericHTTPChannelProtocol

from txupgrade._h2rules import PREFACE
from txupgrade.wrappers import ForwardingProtocol, TransparentFactory, TransparentWrapper

__all__ = [
    "ACCESS_LOG_HOST_ADDRESSES",
    "ChannelWrapper",
    "accessLogEscape",
    "answerStar",
    "channelWrapper",
    "currentProtocol",
    "endpointArguments",
    "endpointLayers",
    "feedTLS",
    "headBytesReceived",
    "headerFields",
    "hideNothing",
    "http2Available",
    "injectRequest",
    "lineBuffer",
    "proxyEndpoint",
    "readingRequestLine",
    "releaseChannel",
    "requestGone",
    "requestMethod",
    "requestVersion",
    "resumeChannel",
    "sslContextFactory",
    "swapProtocol",
    "takeTrailingData",
    "wrapChannel",
]


#: The client addresses whose host twisted.web's access line names
#: (C{combinedLogFormatter}); any other is C{-}.
ACCESS_LOG_HOST_ADDRESSES = (IPv4Address, IPv6Address, http._XForwardedForAddress)

#: twisted.web's access-log escaping (a C{repr} as if in double quotes).
accessLogEscape = http._escape


def wrapChannel(channel: HTTPChannel, wrapperClass: type[ChannelWrapper] | None = None) -> ChannelWrapper:
    """
    Wrap C{channel} the way L{twisted.web.server.Site} does, in a
    L{ChannelWrapper} (or C{wrapperClass}), remembering the wrapper on it.

    The wrapper is what the transport calls; pointing its C{_channel} at
    another protocol is the in-tree way to switch (as ALPN C{h2} does).
    """
    wrapper = (wrapperClass or ChannelWrapper)(channel)
    # Weakly: the wrapper holds the channel, and a cycle between them would
    # leave every closed connection to the cyclic garbage collector.
    channel._txupgradeWrapper = weakref.ref(wrapper)  # type: ignore[attr-defined]
    return wrapper


def channelWrapper(channel: HTTPChannel) -> ChannelWrapper:
    """The wrapper L{wrapChannel} put around C{channel} (until L{swapProtocol})."""
    return channel._txupgradeWrapper()  # type: ignore[attr-defined]


def requestVersion(channel: HTTPChannel) -> bytes:
    """The HTTP version of the request whose headers were just read."""
    return channel._version


def requestMethod(channel: HTTPChannel) -> bytes | None:
    """The method of the request whose head is being read; L{None} before its request line."""
    return getattr(channel, "_command", None)


def readingRequestLine(channel: HTTPChannel) -> bool:
    """Whether the next line the channel parses is a request line (not a header)."""
    return channel._HTTPChannel__first_line != 0  # type: ignore[attr-defined]


#: How many bytes of the current request's head (line and headers) a
#: channel read: C{headBytesReceived(channel)}, read on every line (an
#: C{attrgetter}: no Python call).
headBytesReceived: Callable[[HTTPChannel], int] = operator.attrgetter("_receivedHeaderSize")


#: The bytes a L{twisted.protocols.basic.LineReceiver} (the channel) holds
#: of a line not yet complete (an C{attrgetter}: no Python call).
lineBuffer: Callable[[Any], bytes] = operator.attrgetter("_buffer")

#: The header fields of a L{twisted.web.http_headers.Headers} as it keeps
#: them: a dict of value lists by canonical name (C{b"Host"},
#: C{b"Transfer-Encoding"}); an absent field has no key (or an empty list).
#: Read where every request reads several fields: C{headerFields(headers).get(b"Host")}
#: costs no Python call, where C{getRawHeaders} costs two.
headerFields: Callable[[Any], dict[bytes, list[bytes]]] = operator.attrgetter("_rawHeaders")


def requestGone(request: Request) -> bool:
    """Whether the client of C{request} disconnected before it was finished."""
    return bool(request._disconnected)


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
    wrapper = channel._txupgradeWrapper()  # type: ignore[attr-defined]
    if wrapper._negotiatedProtocol is None:
        wrapper._negotiatedProtocol = b"http/1.1"
    wrapper._channel = protocol
    transport = channel.transport
    del channel._txupgradeWrapper  # type: ignore[attr-defined]
    return transport


@functools.cache
def http2Available() -> bool:
    """Whether txupgrade's HTTP/2 connection can be built (the C{h2c} extra is installed)."""
    try:
        import txupgrade._h2connection  # noqa: F401
    except ImportError:
        return False
    return True


class ChannelWrapper(ForwardingProtocol, _GenericHTTPChannelProtocol):
    """
    Twisted's channel wrapper, serving HTTP/2 with txupgrade's connection,
    and passing the optional protocol interfaces (a finished TLS handshake,
    a half-close) to the protocol now on the connection.

    On TLS with ALPN C{h2}, as Twisted does, but with
    L{txupgrade._h2connection.H2Connection}. On cleartext, a connection
    whose first bytes are the HTTP/2 preface is served as HTTP/2 (prior
    knowledge, RFC 9113 §3.3) unless the site's C{priorKnowledge} is off;
    bytes that could still be the preface are held until they tell.
    """

    _sniffed = b""
    _negotiatedProtocol: bytes | None = None  # type: ignore[assignment]

    def forwardTo(self) -> Any:
        return self._channel

    def protocolSwitched(self, name: str, trailing: int) -> None:
        """
        The channel switched the connection to the protocol C{name} (its
        C{101} written; C{trailing} bytes read behind the request are the new
        protocol's): nothing here, the daemon's tracking counts from it.
        """

    def dataReceived(self, data: bytes) -> None:
        if self._negotiatedProtocol is None:
            transport = self._channel.transport
            # ALPN is TLS's (asked of TLS only: on TCP the attribute's absence costs an exception).
            if ISSLTransport.providedBy(transport):
                if getattr(transport, "negotiatedProtocol", None) == b"h2":
                    self._becomeH2(data)
                    return
            elif getattr(self._site, "priorKnowledge", False):
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
        if not http2Available():
            return False
        from txupgrade._h2connection import buildH2Connection

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


def resumeChannel(channel: HTTPChannel, wrapper: Any, idleTimeout: float | None) -> None:
    """
    Undo L{releaseChannel} and L{swapProtocol} on a connection that serves
    HTTP/1.1 again (after a TLS upgrade): C{wrapper} forwards to C{channel}
    again, which is the transport's producer again, and which goes on as a
    channel that has just read a request (its C{requests} are for the caller
    to fill), restarting its idle timeout of C{idleTimeout} seconds once that
    request is answered, as C{allContentReceived} would have it.
    """
    wrapper._channel = channel
    channel._txupgradeWrapper = weakref.ref(wrapper)  # type: ignore[attr-defined]
    channel._savedTimeOut = idleTimeout
    channel._waitingForTransport = False
    channel._networkProducer.registerProducer(channel, True)  # type: ignore[attr-defined]


def feedTLS(transport: Any, data: bytes) -> None:
    """
    Hand C{data} (TLS records read before C{startTLS}) to the TLS layer.

    C{startTLS} makes its TLS protocol the transport's C{protocol}; bytes of
    the ClientHello that the HTTP channel had already read must go there,
    ahead of anything the transport reads next.
    """
    transport.protocol.dataReceived(data)


def sslContextFactory(endpoint: Any) -> Any:
    """
    The TLS context factory of an C{ssl:} server endpoint (an
    L{twisted.internet.endpoints.SSL4ServerEndpoint} from C{serverFromString}), with every option of
    its description applied (a worker of C{--workers} serves TLS with it on
    the socket it inherits instead of binding); L{None} for another endpoint.
    """
    return endpoint._sslContextFactory if isinstance(endpoint, SSL4ServerEndpoint) else None


def endpointArguments(description: str) -> dict[str, str]:
    """The C{name=value} arguments of an endpoint description, unescaped as Twisted reads them."""
    from twisted.internet.endpoints import _parse

    return dict(_parse(description)[1])


def endpointLayers(endpoint: Any) -> list[Any]:
    """C{endpoint} and the endpoints it wraps (C{haproxy:ssl:...}), outermost first."""
    layers = [endpoint]
    while isinstance(layers[-1], _WrapperServerEndpoint):
        layers.append(layers[-1]._wrappedEndpoint)
    return layers


class ProxyProtocolWrapper(TransparentWrapper, HAProxyProtocolWrapper):
    """Twisted's PROXY protocol reader (C{haproxy:}), passing everything on."""


class ProxyWrappingFactory(TransparentFactory, HAProxyWrappingFactory):
    """Twisted's C{haproxy:} factory, building L{ProxyProtocolWrapper}s."""

    protocol = ProxyProtocolWrapper  # type: ignore[assignment]


def proxyEndpoint(endpoint: Any) -> Any:
    """C{endpoint} reading the PROXY protocol (as C{haproxy:} does), through L{ProxyWrappingFactory}."""
    return _WrapperServerEndpoint(endpoint, ProxyWrappingFactory)


def hideNothing(endpoint: Any) -> None:
    """Make the C{haproxy:} layers of an endpoint from C{serverFromString} use L{ProxyWrappingFactory}."""
    for layer in endpointLayers(endpoint):
        if isinstance(layer, _WrapperServerEndpoint) and layer._wrapperFactory is HAProxyWrappingFactory:
            layer._wrapperFactory = ProxyWrappingFactory


def injectRequest(
    wrapper: Any,
    method: bytes,
    target: bytes,
    version: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> Any:
    """
    Have the channel behind C{wrapper} (from C{Site.buildProtocol}) receive a
    request that was parsed elsewhere, as if it had read it: the same
    header, body and dispatch steps, without serializing it again.

    Returns the channel's request object.
    """
    channel = wrapper._channel
    req = channel.requestFactory(channel, len(channel.requests))
    channel.requests.append(req)
    channel._command, channel._path, channel._version = method, target, version
    for name, value in headers:
        req.requestHeaders.addRawHeader(name, value)
    channel.length = len(body)
    channel.allHeadersReceived()
    if body:
        req.handleContentChunk(body)
    channel.allContentReceived()
    return req


def currentProtocol(holder: Any) -> Any:
    """
    The protocol speaking on a connection whose transport calls C{holder}:
    the channel or upgraded protocol a L{wrapChannel} wrapper forwards to,
    else C{holder} itself.
    """
    if isinstance(holder, _GenericHTTPChannelProtocol):
        return holder._channel
    return holder
