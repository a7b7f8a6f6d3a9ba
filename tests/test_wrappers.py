"""
The daemon's wrappers hide nothing (C{txupgrade.wrappers}): for every kind
of listener C{twistd txupgrade} serves, the factory and the per-connection
protocol stack it really builds are walked layer by layer, and each layer
must offer the optional interfaces Twisted asks of it and pass them on to
the site and the protocol on the connection.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    IProtocolNegotiationFactory,
)
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.support.net import RecordingProducer, reactor
from tests.support.tls import certificateFiles
from txupgrade import _twistedcompat
from txupgrade.daemon.workerplan import SharedListener
from txupgrade.daemon.workers import workerEndpoint
from txupgrade.registry import ProtocolRegistry
from txupgrade.tap import Options, buildService
from txupgrade.wrappers import innermostTransport

#: Every optional interface Twisted asks of the protocol it holds.
PROTOCOL_INTERFACES = (IHandshakeListener, IHalfCloseableProtocol)

#: The listener kinds the daemon serves (C{unix:} is added with a path).
LISTENERS = (
    "tcp:0:interface=127.0.0.1",
    "ssl:0:interface=127.0.0.1",
    "haproxy:tcp:0:interface=127.0.0.1",
    "haproxy:ssl:0:interface=127.0.0.1",
)


def _recorded(name: str) -> Any:
    """A method that records its own C{name} in C{self.events}."""

    def method(self: Recorder) -> None:
        self.events.append(name)

    method.__name__ = name
    return method


@implementer(IHandshakeListener, IHalfCloseableProtocol)
class Recorder(Protocol):
    """Stands in for the protocol on the connection: records what reaches it."""

    def __init__(self) -> None:
        self.events: list[str] = []

    handshakeCompleted = _recorded("handshakeCompleted")
    readConnectionLost = _recorded("readConnectionLost")
    writeConnectionLost = _recorded("writeConnectionLost")


def factoryLayers(factory: Any) -> list[Any]:
    """The factory a port holds and each factory it wraps, outermost first."""
    layers = [factory]
    while getattr(layers[-1], "wrappedFactory", None) is not None:
        layers.append(layers[-1].wrappedFactory)
    return layers


def protocolLayers(protocol: Any) -> list[Any]:
    """The protocol a transport holds and each one it wraps, down to the site's channel wrapper."""
    layers = [protocol]
    while getattr(layers[-1], "wrappedProtocol", None) is not None:
        layers.append(layers[-1].wrappedProtocol)
    return layers


class StackTests(TestCase):
    """The stack of every listener of a daemon built as C{twistd txupgrade} builds it."""

    def setUp(self) -> None:
        self.pem = certificateFiles()[1]
        self.unixPath = str(Path(tempfile.mkdtemp()) / "s.sock")

    def daemon(self, *args: str) -> Any:
        options = Options()
        listen = [a for listener in (*LISTENERS, f"unix:{self.unixPath}") for a in ("--listen", listener)]
        options.parseOptions(["--tls-certificate", str(self.pem), *listen, *args])
        service = buildService(options.settings, ProtocolRegistry(), reactor)
        self.addCleanup(lambda: [port.stopListening() for port in service.ports])
        return service

    def assertStackHidesNothing(self, factory: Any, site: Any, kinds: str) -> None:
        """C{factory} (what a port holds) and the protocols it builds pass everything on."""
        wanted = site.acceptableProtocols()
        factories = factoryLayers(factory)
        self.assertIs(factories[-1], site, kinds)
        for layer in factories:
            if isinstance(layer, TLSMemoryBIOFactory):
                continue
            self.assertTrue(IProtocolNegotiationFactory.providedBy(layer), f"{kinds}: {layer!r}")
            self.assertEqual(list(IProtocolNegotiationFactory(layer).acceptableProtocols()), wanted)
        # The connection's layers, under the TLS one (Twisted's, which asks them).
        top = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        layers = [p for p in protocolLayers(top) if not isinstance(p, TLSMemoryBIOProtocol)]
        self.assertIsInstance(layers[-1], _twistedcompat.ChannelWrapper, kinds)
        for layer in layers:
            for interface in PROTOCOL_INTERFACES:
                self.assertTrue(interface.providedBy(layer), f"{kinds}: {layer!r} hides {interface.__name__}")
        outer = layers[0]
        transport = StringTransport()
        outer.makeConnection(transport)
        # The channel registered itself as the producer, through every layer.
        channel = layers[-1]._channel
        # Code that checks a transport's class (autobahn's TLS details) finds the real one.
        self.assertIs(innermostTransport(channel.transport), transport, kinds)
        self.assertIsNotNone(transport.producer, kinds)
        channel.transport.unregisterProducer()
        self.assertIsNone(transport.producer, kinds)
        producer = RecordingProducer()
        channel.transport.registerProducer(producer, True)
        self.assertIs(transport.producer, producer, kinds)
        recorder = Recorder()
        layers[-1]._channel = recorder
        outer.handshakeCompleted()
        outer.readConnectionLost()
        outer.writeConnectionLost()
        self.assertEqual(
            recorder.events, ["handshakeCompleted", "readConnectionLost", "writeConnectionLost"], kinds
        )
        layers[-1]._channel = channel
        outer.connectionLost(Failure(ConnectionDone()))

    def test_daemonListeners(self) -> None:
        """Every listener of the single-process daemon: tcp, ssl, haproxy over both, unix."""
        service = self.daemon()
        self.assertEqual(len(service.ports), len(LISTENERS) + 1)
        for description, port in zip(service.descriptions, service.ports, strict=True):
            self.assertStackHidesNothing(port.factory, service.site, description)

    def test_workerListeners(self) -> None:
        """A worker's endpoints (inherited sockets, TLS and PROXY re-applied) hide nothing either."""
        service = self.daemon()
        for description in service.descriptions[: len(LISTENERS)]:
            server = socket.socket()
            server.bind(("127.0.0.1", 0))
            server.listen()
            # The endpoint adopts the socket (and closes this descriptor), as a worker's does.
            endpoint = workerEndpoint(reactor, SharedListener(server.detach(), "INET", description))
            ports: list[Any] = []
            endpoint.listen(service.site).addCallback(ports.append)
            self.addCleanup(ports[0].stopListening)
            self.assertStackHidesNothing(ports[0].factory, service.site, f"worker {description}")

    def test_noHTTP2(self) -> None:
        """With C{--no-alpn-h2} every layer offers ALPN C{http/1.1} only."""
        service = self.daemon("--no-alpn-h2")
        self.assertEqual(service.site.acceptableProtocols(), [b"http/1.1"])
        for description, port in zip(service.descriptions, service.ports, strict=True):
            self.assertStackHidesNothing(port.factory, service.site, description)
