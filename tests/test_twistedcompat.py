"""
Tests for L{txupgrade._twistedcompat}: the private Twisted names it relies on.

These fail loudly, naming what is missing, when an installed Twisted renames
or changes any of the private attributes the protocol swap needs
(docs/internals.md, "Where the bytes are"); fix C{txupgrade/_twistedcompat.py}
then, not the channel.
"""

from __future__ import annotations

import ast
import inspect

from twisted.copyright import version as twistedVersion
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http
from twisted.web.http import HTTPChannel

from txupgrade import _twistedcompat
from txupgrade.channel import UpgradeChannel, UpgradeSite
from txupgrade.resource import DirectoryResource

#: Every private name L{txupgrade._twistedcompat} reads or writes, and where.
PRIVATE_NAMES = {
    "_GenericHTTPChannelProtocol": "twisted.web.http",
    "_channel": "_GenericHTTPChannelProtocol",
    "_negotiatedProtocol": "_GenericHTTPChannelProtocol",
    "_dataBuffer": "HTTPChannel",
    "_networkProducer": "HTTPChannel",
    "_handlingRequest": "HTTPChannel",
    "_savedTimeOut": "HTTPChannel",
    "_waitingForTransport": "HTTPChannel",
    "_abortingCall": "HTTPChannel",
    "_version": "HTTPChannel",
    "_site": "_GenericHTTPChannelProtocol",
    "_handleStar": "twisted.web.server.Request",
    "_HTTPChannel__first_line": "HTTPChannel",
    "_receivedHeaderSize": "HTTPChannel",
    "_sslContextFactory": "SSL4ServerEndpoint",
    "_WrapperServerEndpoint": "twisted.internet.endpoints",
    "_wrappedEndpoint": "_WrapperServerEndpoint",
    "_wrapperFactory": "_WrapperServerEndpoint",
    "_disconnected": "Request",
    "_command": "HTTPChannel",
    "_path": "HTTPChannel",
    "_escape": "twisted.web.http",
    "_XForwardedForAddress": "twisted.web.http",
    "_parse": "twisted.internet.endpoints",
    "_rawHeaders": "twisted.web.http_headers.Headers",
    "_buffer": "twisted.protocols.basic.LineReceiver",
}

#: txupgrade's own attribute, set by L{_twistedcompat.wrapChannel}.
OWN_NAMES = {"_txupgradeWrapper", "_sniffed", "_becomeH2"}


def connectedChannel(clock: Clock | None = None) -> tuple[HTTPChannel, StringTransport]:
    """A plain L{HTTPChannel} connected to a L{StringTransport}, on a fake clock."""
    channel = HTTPChannel()
    channel.callLater = (clock or Clock()).callLater  # type: ignore[assignment]
    channel.timeOut = 60
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


class PrivateNamesTests(SynchronousTestCase):
    """
    The private Twisted names exist, with the meaning the adapter assumes.
    """

    def assertHas(self, obj: object, name: str) -> None:
        """C{obj} has attribute C{name}, or the test fails naming it."""
        if not hasattr(obj, name):
            self.fail(
                f"Twisted {twistedVersion}: {obj!r} has no {name!r}; "
                "txupgrade/_twistedcompat.py must be updated for this Twisted"
            )

    def test_adapterUsesOnlyCheckedNames(self) -> None:
        """Every private attribute the adapter touches is checked here."""
        tree = ast.parse(inspect.getsource(_twistedcompat))
        used = {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        }
        # Read by name: operator.attrgetter("_name").
        used |= {
            arg.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "attrgetter"
            for arg in node.args
            if isinstance(arg, ast.Constant) and str(arg.value).startswith("_")
        }
        used |= {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
            if alias.name.startswith("_")
        }
        self.assertEqual(used - OWN_NAMES, set(PRIVATE_NAMES))

    def test_headState(self) -> None:
        """The channel tells a request line from a header line, and counts the head's bytes."""
        channel, _transport = connectedChannel()
        self.assertTrue(_twistedcompat.readingRequestLine(channel))
        self.assertEqual(_twistedcompat.headBytesReceived(channel), 0)
        channel.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertFalse(_twistedcompat.readingRequestLine(channel))
        self.assertEqual(_twistedcompat.headBytesReceived(channel), len(b"GET / HTTP/1.1"))
        channel.dataReceived(b"Host: x\r\n")
        self.assertFalse(_twistedcompat.readingRequestLine(channel))
        self.assertEqual(_twistedcompat.headBytesReceived(channel), len(b"GET / HTTP/1.1Host: x"))

    def test_headerFields(self) -> None:
        """
        A request's fields, as the channel parsed them, are lists by canonical
        name, the same lists C{getRawHeaders} answers; an absent field has no key.
        """
        channel, _transport = connectedChannel()
        channel.dataReceived(
            b"GET / HTTP/1.1\r\nhost: x\r\nUSER-AGENT: a\r\nconnection: a\r\nConnection: b\r\nAccept: */*\r\n"
        )
        headers = channel.requests[-1].requestHeaders
        fields = _twistedcompat.headerFields(headers)
        self.assertEqual(fields.get(b"Host"), [b"x"])
        self.assertEqual(fields.get(b"User-Agent"), [b"a"])
        self.assertEqual(fields.get(b"Connection"), [b"a", b"b"])
        self.assertIs(fields.get(b"Connection"), headers.getRawHeaders(b"connection"))
        self.assertNotIn(b"Upgrade", fields)

    def test_requestMethod(self) -> None:
        """The channel keeps the method of the request whose head it reads, until it is dispatched."""
        channel, _transport = connectedChannel()
        self.assertIsNone(_twistedcompat.requestMethod(channel))
        channel.dataReceived(b"HEAD / HTTP/1.1\r\n")
        self.assertEqual(_twistedcompat.requestMethod(channel), b"HEAD")
        channel.dataReceived(b"Host: x\r\n")
        self.assertEqual(_twistedcompat.requestMethod(channel), b"HEAD")
        channel.dataReceived(b"\r\n")
        self.assertIsNone(_twistedcompat.requestMethod(channel))

    def test_requestGone(self) -> None:
        """A request learns that its client went away."""
        channel, _transport = connectedChannel()
        request = http.Request(channel)
        self.assertFalse(_twistedcompat.requestGone(request))
        request.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(_twistedcompat.requestGone(request))

    def test_genericChannelProtocol(self) -> None:
        """C{_GenericHTTPChannelProtocol} wraps a channel in C{_channel}."""
        self.assertHas(http, "_GenericHTTPChannelProtocol")
        channel = HTTPChannel()
        wrapper = http._GenericHTTPChannelProtocol(channel)
        self.assertHas(wrapper, "_channel")
        self.assertIs(wrapper._channel, channel)
        self.assertHas(wrapper, "_negotiatedProtocol")
        self.assertIsNone(wrapper._negotiatedProtocol)

    def test_wrapperForwardsToChannel(self) -> None:
        """Pointing C{_channel} elsewhere redirects the transport's calls."""
        received = []

        class Other(Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.append(data)

        wrapper = http._GenericHTTPChannelProtocol(HTTPChannel())
        wrapper._channel = Other()  # type: ignore[assignment]
        wrapper.dataReceived(b"bytes")
        self.assertEqual(received, [b"bytes"])

    def test_wrapperSiteAndStar(self) -> None:
        """The wrapper keeps the site in C{_site}; C{Request.process} answers C{*} in C{_handleStar}."""
        from twisted.web import server

        site = UpgradeSite(DirectoryResource(), reactor=Clock())
        wrapper = site.buildProtocol(None)
        self.assertHas(wrapper, "_site")
        self.assertIs(wrapper._site, site)
        self.assertHas(server.Request, "_handleStar")
        self.assertIn("self._handleStar()", inspect.getsource(server.Request.process))

    def test_siteWrapsChannels(self) -> None:
        """L{UpgradeSite} builds the wrapper, around an L{UpgradeChannel}."""
        wrapper = UpgradeSite(DirectoryResource(), reactor=Clock()).buildProtocol(None)
        self.assertIsInstance(wrapper, http._GenericHTTPChannelProtocol)
        self.assertIsInstance(wrapper._channel, UpgradeChannel)

    def test_channelState(self) -> None:
        """A connected channel has the buffers, flags and producer named."""
        channel, transport = connectedChannel()
        for name in ("_dataBuffer", "_networkProducer", "_handlingRequest", "_savedTimeOut", "_abortingCall"):
            self.assertHas(channel, name)
        self.assertEqual(channel._dataBuffer, [])
        self.assertIs(channel._handlingRequest, False)
        self.assertIsNone(channel._savedTimeOut)
        self.assertIsNone(channel._abortingCall)
        self.assertIs(channel._networkProducer, transport)
        self.assertTrue(IPushProducer.providedBy(channel._networkProducer))
        self.assertIs(transport.producer, channel)

    def test_requestLineState(self) -> None:
        """The request line waits in C{_command}, C{_path}, C{_version} until dispatch (injectRequest)."""
        channel, _ = connectedChannel()
        channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: a\r\n")
        self.assertEqual((channel._command, channel._path, channel._version), (b"GET", b"/x", b"HTTP/1.1"))

    def test_clearLineBuffer(self) -> None:
        """C{LineReceiver.clearLineBuffer} returns and empties the buffer."""
        self.assertHas(LineReceiver, "clearLineBuffer")
        receiver = LineReceiver()
        receiver.makeConnection(StringTransport())
        receiver.setRawMode()
        receiver.rawDataReceived = lambda data: receiver.pauseProducing()  # type: ignore[method-assign]
        receiver.dataReceived(b"a\r\nb")
        receiver.dataReceived(b"c")
        self.assertEqual(receiver.clearLineBuffer(), b"c")
        self.assertEqual(receiver.clearLineBuffer(), b"")

    def test_whereTrailingBytesWait(self) -> None:
        """Bytes after a request being handled wait in C{_dataBuffer}."""
        channel, _ = connectedChannel()
        handled: list[http.Request] = []

        def factory(ch: HTTPChannel, queued: object) -> http.Request:
            return _HeldRequest(ch, queued, handled)

        channel.requestFactory = factory  # type: ignore[assignment]
        channel.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiNEXT")
        self.assertTrue(channel._handlingRequest)
        self.assertEqual(len(handled), 1)
        channel.dataReceived(b" MORE")
        self.assertEqual(b"".join(channel._dataBuffer), b"NEXT MORE")
        self.assertTrue(channel._savedTimeOut)

    def test_versionForChannel(self) -> None:
        """C{HTTPChannel._version}, read by the channel, is the request's version."""
        seen = []

        class Channel(HTTPChannel):
            def allHeadersReceived(self) -> None:
                seen.append(self._version)
                super().allHeadersReceived()

        channel = Channel()
        channel.callLater = Clock().callLater  # type: ignore[assignment]
        channel.makeConnection(StringTransport())
        channel.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(seen, [b"HTTP/1.0"])


class _HeldRequest(http.Request):
    """A request that is never answered, keeping its channel busy."""

    def __init__(self, channel: HTTPChannel, queued: object, handled: list[http.Request]) -> None:
        super().__init__(channel, queued)
        self._handled = handled

    def process(self) -> None:
        self._handled.append(self)


class AdapterTests(SynchronousTestCase):
    """
    The adapter's functions do what they say on a real channel.
    """

    def test_takeTrailingData(self) -> None:
        """Both buffers are drained: C{_dataBuffer} first, then the line buffer."""
        channel, _ = connectedChannel()
        channel.dataReceived(b"GET / HT")
        channel._dataBuffer = [b"ab", b"c"]
        self.assertEqual(_twistedcompat.takeTrailingData(channel), b"abcGET / HT")
        self.assertEqual(_twistedcompat.takeTrailingData(channel), b"")

    def test_releaseChannel(self) -> None:
        """Timers cancelled, producer unregistered and resumed, parsing stopped."""
        clock = Clock()
        channel, transport = connectedChannel(clock)
        transport.pauseProducing()
        channel.requests.append(object())
        self.assertTrue(clock.getDelayedCalls())
        _twistedcompat.releaseChannel(channel)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertIsNone(transport.producer)
        self.assertEqual(transport.producerState, "producing")
        self.assertTrue(channel._handlingRequest)
        self.assertEqual(channel.requests, [])

    def test_releaseCancelsAbort(self) -> None:
        """A forced abort scheduled on the channel is cancelled."""
        clock = Clock()
        channel, _ = connectedChannel(clock)
        channel._abortingCall = clock.callLater(channel.abortTimeout, channel.forceAbortClient)
        _twistedcompat.releaseChannel(channel)
        self.assertIsNone(channel._abortingCall)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_swapProtocol(self) -> None:
        """The wrapper forwards to the new protocol; the transport is returned."""
        channel, transport = connectedChannel()
        wrapper = _twistedcompat.wrapChannel(channel)
        self.assertIs(wrapper._channel, channel)
        new = Protocol()
        self.assertIs(_twistedcompat.swapProtocol(channel, new), transport)
        self.assertIs(wrapper._channel, new)
        self.assertEqual(wrapper._negotiatedProtocol, b"http/1.1")
        self.assertFalse(hasattr(channel, "_txupgradeWrapper"))

    def test_waitingForTransport(self) -> None:
        """C{_waitingForTransport} says whether the transport paused the channel's writing."""
        channel, _ = connectedChannel()
        self.assertIs(channel._waitingForTransport, False)
        channel.pauseProducing()
        self.assertIs(channel._waitingForTransport, True)
        channel.resumeProducing()
        self.assertIs(channel._waitingForTransport, False)

    def test_resumeChannel(self) -> None:
        """After release and swap: the wrapper forwards to the channel, its producer; idle timeout back."""
        clock = Clock()
        channel, transport = connectedChannel(clock)
        wrapper = _twistedcompat.wrapChannel(channel)
        channel.pauseProducing()
        _twistedcompat.releaseChannel(channel)
        _twistedcompat.swapProtocol(channel, Protocol())
        _twistedcompat.resumeChannel(channel, wrapper, 45)
        self.assertIs(wrapper._channel, channel)
        self.assertIs(_twistedcompat.channelWrapper(channel), wrapper)
        self.assertIs(transport.producer, channel)
        self.assertIs(channel._waitingForTransport, False)
        self.assertEqual(clock.getDelayedCalls(), [])
        request = http.Request(channel)
        channel.requests = [request]
        request.setResponseCode(200)
        request.finish()
        self.assertEqual([call.getTime() for call in clock.getDelayedCalls()], [45])
        wrapper.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(len(channel.requests), 1)


class SSLServerEndpointTests(SynchronousTestCase):
    """The TLS context of an C{ssl:} server endpoint, which a C{--workers} worker reuses."""

    def test_sslContextFactory(self) -> None:
        """C{serverFromString} keeps the context factory it built in C{_sslContextFactory}."""
        import os
        import shutil
        import tempfile

        import trustme
        from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString

        authority = trustme.CA()
        directory = tempfile.mkdtemp(prefix="txupgrade-compat-")
        self.addCleanup(shutil.rmtree, directory, True)
        pem = os.path.join(directory, "site.pem")
        with open(pem, "wb") as f:
            f.write(authority.issue_cert("localhost").private_key_and_cert_chain_pem.bytes())
        endpoint = serverFromString(Clock(), f"ssl:0:privateKey={pem}")
        self.assertIsInstance(endpoint, SSL4ServerEndpoint)
        if not hasattr(endpoint, "_sslContextFactory"):
            self.fail(
                f"Twisted {twistedVersion}: SSL4ServerEndpoint has no '_sslContextFactory'; "
                "txupgrade/_twistedcompat.py must be updated for this Twisted"
            )
        context = _twistedcompat.sslContextFactory(endpoint)
        self.assertTrue(callable(getattr(context, "getContext", None)), context)
        # Readied as the daemon readies it (its keys as cryptography objects), it builds a context.
        from txupgrade.protocols.tls import offerALPN

        offerALPN(context, lambda: [b"http/1.1"])
        context.getContext()


class WrapperEndpointTests(SynchronousTestCase):
    """The C{haproxy:} wrapper endpoint, whose PROXY factory the daemon swaps for one that hides nothing."""

    def test_layersAndProxyFactory(self) -> None:
        """C{haproxy:tcp:} is a wrapper endpoint around the TCP one; L{hideNothing} swaps its factory."""
        from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString

        endpoint = serverFromString(Clock(), "haproxy:tcp:0:interface=127.0.0.1")
        layers = _twistedcompat.endpointLayers(endpoint)
        self.assertEqual(len(layers), 2)
        self.assertIsInstance(layers[1], TCP4ServerEndpoint)
        self.assertIsNone(_twistedcompat.sslContextFactory(layers[1]))
        _twistedcompat.hideNothing(endpoint)
        self.assertIs(layers[0]._wrapperFactory, _twistedcompat.ProxyWrappingFactory)
