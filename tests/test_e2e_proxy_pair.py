"""
Two txupgrade instances behind one real proxy (nginx, HAProxy), balanced
round robin, as docs/operators.md ("Behind nginx and HAProxy") deploys
them: WebSocket (the C{websockets} client) and the C{echo} upgrade through
the proxy reach both instances, and the peer the protocols and the logs see
is the proxy's, or, with HAProxy's C{send-proxy} / C{send-proxy-v2} to
txupgrade's C{haproxy:} listeners, the real client's.

Each instance is a site in the test's reactor on its own loopback port (the
daemon's C{--listen haproxy:tcp:...} builds the same listener); the
proxies run from their Debian binaries (L{tests.support.proxies}).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as wsConnect
from websockets.typing import Origin

from tests.support.http import parseHead, upgrade
from tests.support.net import (
    RawClient,
    TrackingSite,
    connectClient,
    inThread,
    listen,
    stopAtCleanup,
    wait,
    withTimeout,
)
from tests.support.proxies import haproxyPairConfig, nginxPairConfig, startProxy
from tests.support.websocket import RecordingServerFactory
from txupgrade.daemon.demo import demoRoot
from txupgrade.protocols.echo import EchoUpgrade
from txupgrade.protocols.websocket import WebSocketEndpoint
from txupgrade.registry import ProtocolRegistry
from txupgrade.tap import Options, makeSite

CLIENT_TIMEOUT = 5.0

#: How many clients each test sends through the proxy (round robin: half to each instance).
CLIENTS = 4


def _webSocketRound(url: str, count: int) -> list[tuple[int, str]]:
    """
    With the C{websockets} client, C{count} times one after the other: open
    C{url}, echo a text, close. Return each client's local port and echo.
    """
    seen = []
    for i in range(count):
        with wsConnect(url, open_timeout=CLIENT_TIMEOUT, close_timeout=CLIENT_TIMEOUT) as conn:
            conn.send(f"hello {i}")
            answer = conn.recv(timeout=CLIENT_TIMEOUT)
            seen.append((conn.local_address[1], str(answer)))
    return seen


def _peerPort(peer: str) -> int:
    """The port of an autobahn peer text (C{tcp4:127.0.0.1:5000}) or a log's (C{127.0.0.1:5000})."""
    return int(peer.rsplit(":", 1)[1])


class _Instance:
    """One txupgrade instance: its site, its WebSocket factory, its port."""

    def __init__(
        self, test: TestCase, proxied: bool, allowedHosts: Any = "auto", allowedOrigins: Any = None
    ) -> None:
        protocols = ProtocolRegistry([EchoUpgrade()])
        root = demoRoot(protocols)
        self.factory = RecordingServerFactory()
        root.putChild(b"ws", WebSocketEndpoint(self.factory, allowedOrigins))
        self.site = TrackingSite(root, protocols, allowedHosts=allowedHosts)
        # Accepted switches are log events only when asked for (as --metrics does).
        self.site.logSwitches = True
        self.proxied = proxied

    @inlineCallbacks
    def listen(self, test: TestCase) -> Any:
        """Serve on 127.0.0.1 (through C{haproxy:} when proxied); set L{port}."""
        if not self.proxied:
            self.port = listen(test, self.site)
            return
        port = yield serverFromString(_reactor(), "haproxy:tcp:0:interface=127.0.0.1").listen(self.site)
        stopAtCleanup(test, port, self.site.connections)
        self.port = port.getHost().port


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class _PairTests:
    """The scenarios of every proxy set-up; mixed into a L{TestCase} per set-up."""

    kind = ""
    #: HAProxy's server option: C{"send-proxy"}, C{"send-proxy-v2"}, or none.
    sendProxy = ""
    timeout = 60

    instances: list[_Instance]
    proxyPort: int

    @property
    def proxied(self) -> bool:
        """Whether the proxy sends the PROXY protocol (and the instances expect it)."""
        return bool(self.sendProxy)

    @inlineCallbacks
    def serve(self) -> Any:
        """Two instances, and the proxy balancing over them."""
        test: Any = self
        self.instances = [_Instance(test, self.proxied) for _ in range(2)]
        for instance in self.instances:
            yield instance.listen(test)
        ports = [instance.port for instance in self.instances]
        if self.kind == "nginx":
            config = nginxPairConfig(ports)
        else:
            config = haproxyPairConfig(ports, self.sendProxy)
        self.proxyPort = yield startProxy(test, self.kind, ports[0], config=config)
        self.events: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "txupgrade.upgrade":
                self.events.append(event)

        globalLogPublisher.addObserver(observe)
        test.addCleanup(globalLogPublisher.removeObserver, observe)

    def assertPeers(self, peerPorts: list[int], clientPorts: list[int]) -> None:
        """The peers are the clients themselves with the PROXY protocol, else the proxy's connections."""
        test: Any = self
        if self.proxied:
            test.assertEqual(sorted(peerPorts), sorted(clientPorts))
        else:
            test.assertEqual(set(peerPorts) & set(clientPorts), set(), "the proxy's own ports")

    @inlineCallbacks
    def test_webSocketBalanced(self) -> Any:
        """
        Four WebSocket clients in a row, through the proxy: every echo comes
        back, both instances served, and C{onConnect}'s peer is the client's
        address exactly when the PROXY protocol is on.
        """
        test: Any = self
        yield self.serve()
        seen = yield inThread(_webSocketRound, f"ws://127.0.0.1:{self.proxyPort}/ws", CLIENTS)
        test.assertEqual([answer for _port, answer in seen], [f"hello {i}" for i in range(CLIENTS)])
        counts = [len(instance.factory.connections) for instance in self.instances]
        test.assertEqual(sum(counts), CLIENTS)
        test.assertEqual(counts, [CLIENTS // 2, CLIENTS // 2], "round robin over both instances")
        servers = [c for instance in self.instances for c in instance.factory.connections]
        for server in servers:
            yield wait(lambda server=server: server.lost.called)
            test.assertEqual(server.closeInfo[:2], (True, 1000))
        peers = [_peerPort(server.request.peer) for server in servers]
        self.assertPeers(peers, [port for port, _answer in seen])
        if self.kind == "nginx":
            for server in servers:
                test.assertEqual(server.request.headers.get("x-forwarded-for"), "127.0.0.1")
        accepted = [e for e in self.events if e.get("upgradeOutcome") == "accepted"]
        test.assertEqual([e["protocol"] for e in accepted], ["websocket"] * CLIENTS)
        self.assertPeers([_peerPort(e["peer"]) for e in accepted], [port for port, _answer in seen])

    @inlineCallbacks
    def test_echoBalanced(self) -> Any:
        """
        Four C{Upgrade: echo} clients through the proxy: each gets its bytes
        back, both instances switched, and the logged peer is the client's
        exactly when the PROXY protocol is on.
        """
        test: Any = self
        yield self.serve()
        clientPorts = []
        for i in range(CLIENTS):
            client: RawClient = yield connectClient(test, self.proxyPort)
            assert client.transport is not None
            clientPorts.append(client.transport.getHost().port)
            client.send(upgrade(b"echo", target=b"/"))
            data = yield client.waitFor(lambda data: parseHead(data) is not None)
            parsed = parseHead(data)
            assert parsed is not None
            response, rest = parsed
            test.assertEqual((response.status, rest), (b"HTTP/1.1 101 Switching Protocols", b""), data)
            payload = f"bytes of client {i}\r\n".encode()
            client.send(payload)
            yield client.waitForBytes(len(data) + len(payload))
            test.assertEqual(client.data[len(data) :], payload)
            client.transport.loseConnection()
            yield client.waitForClose()
        switched = [len(instance.site.connections) for instance in self.instances]
        test.assertEqual(switched, [CLIENTS // 2, CLIENTS // 2], "round robin over both instances")
        for instance in self.instances:
            yield wait(instance.site.allClosed)
        accepted = [e for e in self.events if e.get("upgradeOutcome") == "accepted"]
        test.assertEqual([e["protocol"] for e in accepted], ["echo"] * CLIENTS)
        self.assertPeers([_peerPort(e["peer"]) for e in accepted], clientPorts)


class NginxPairTests(_PairTests, TestCase):
    """Two instances behind nginx (no PROXY protocol: the client is in C{X-Forwarded-For})."""

    kind = "nginx"


class HAProxyPairTests(_PairTests, TestCase):
    """Two instances behind HAProxy in C{mode http}, without the PROXY protocol."""

    kind = "haproxy"


class HAProxyProxyV1Tests(_PairTests, TestCase):
    """Two C{haproxy:} instances behind HAProxy with C{send-proxy} (PROXY protocol v1, text)."""

    kind = "haproxy"
    sendProxy = "send-proxy"


class HAProxyProxyV2Tests(_PairTests, TestCase):
    """Two C{haproxy:} instances behind HAProxy with C{send-proxy-v2} (PROXY protocol v2, binary)."""

    kind = "haproxy"
    sendProxy = "send-proxy-v2"


def _publicHostHandshake(proxyPort: int, host: str, scheme: str = "http") -> int:
    """A WebSocket handshake through the proxy naming C{host}, from a page of C{scheme://host}: the status."""
    sock = socket.create_connection(("127.0.0.1", proxyPort), timeout=CLIENT_TIMEOUT)
    try:
        with wsConnect(
            f"ws://{host}/ws",
            sock=sock,
            origin=Origin(f"{scheme}://{host}"),
            open_timeout=CLIENT_TIMEOUT,
            close_timeout=CLIENT_TIMEOUT,
        ) as conn:
            assert conn.response is not None
            return conn.response.status_code
    except InvalidStatus as refused:
        return refused.response.status_code


class PublicHostTests(TestCase):
    """
    Instances listening on loopback behind nginx, reached under a public
    name: by default a loopback listener answers only localhost names (the
    DNS-rebinding defence), so the operator names the public host
    (C{--allowed-host}, C{UpgradeSite(allowedHosts=...)}).
    """

    timeout = 60

    @inlineCallbacks
    def serve(self, allowedHosts: Any, allowedOrigins: Any = None) -> Any:
        instance = _Instance(self, proxied=False, allowedHosts=allowedHosts, allowedOrigins=allowedOrigins)
        yield instance.listen(self)
        port = yield startProxy(self, "nginx", instance.port, config=nginxPairConfig([instance.port]))
        return instance, port

    @inlineCallbacks
    def test_refusedByDefault(self) -> Any:
        """A public C{Host} reaching a loopback listener is answered C{400}; nothing switches."""
        instance, port = yield self.serve("auto")
        status = yield inThread(_publicHostHandshake, port, "www.example.com")
        self.assertEqual(status, 400)
        self.assertEqual(instance.factory.connections, [])

    @inlineCallbacks
    def test_allowedHost(self) -> Any:
        """With the public name allowed, the browser-like handshake (same origin) switches."""
        instance, port = yield self.serve(["www.example.com"])
        status = yield inThread(_publicHostHandshake, port, "www.example.com")
        self.assertEqual(status, 101)
        self.assertEqual(len(instance.factory.connections), 1)
        self.assertEqual(instance.factory.connections[0].request.host, "www.example.com")

    @inlineCallbacks
    def test_tlsAtTheProxy(self) -> Any:
        """
        A page served over HTTPS by a proxy that terminates TLS has an
        C{https} origin, while txupgrade sees plain HTTP: not the same origin
        (C{403}) until that origin is allowed (C{--websocket-origin}).
        """
        instance, port = yield self.serve(["www.example.com"])
        status = yield inThread(_publicHostHandshake, port, "www.example.com", "https")
        self.assertEqual(status, 403)
        self.assertEqual(instance.factory.connections, [])
        instance, port = yield self.serve(["www.example.com"], ["https://www.example.com:443"])
        status = yield inThread(_publicHostHandshake, port, "www.example.com", "https")
        self.assertEqual(status, 101)


class AllowedHostOptionTests(SynchronousTestCase):
    """C{--allowed-host} reaches the site."""

    def test_option(self) -> None:
        """Each C{--allowed-host} is a name the site answers; none keeps the default."""
        options = Options()
        options.parseOptions(["--allowed-host", "www.example.com", "--allowed-host", "*.example.org"])
        site = makeSite(options.settings, options.protocols)
        self.assertEqual(site.allowedHosts, frozenset({"www.example.com", "*.example.org"}))
        options = Options()
        options.parseOptions([])
        self.assertEqual(makeSite(options.settings, options.protocols).allowedHosts, "auto")


class ProxyListenerTests(TestCase):
    """What a C{haproxy:} listener does with a client that is not a proxy."""

    @inlineCallbacks
    def test_directClientClosed(self) -> Any:
        """A request without the PROXY header is closed unanswered: only the proxy may connect."""
        instance = _Instance(self, proxied=True)
        yield instance.listen(self)
        client = yield connectClient(self, instance.port)
        client.send(upgrade(b"echo", target=b"/"))
        data = yield withTimeout(client.waitForClose())
        self.assertEqual(data, b"")
        self.assertEqual(instance.factory.connections, [])
