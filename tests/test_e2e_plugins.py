"""
Plugins end to end: a third-party plugin module found through the
C{txupgrade.plugins} namespace and served over a real socket; a broken one
skipped and logged; and C{twistd txupgrade} run as a real process.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import textwrap
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.logger import formatEvent, globalLogPublisher
from twisted.plugin import pluginPackagePaths
from twisted.trial.unittest import TestCase

import txupgrade.plugins
from tests.support.http import Hello, normalize, request, switching, upgrade
from tests.support.net import TIMEOUT, RawClient, TrackingSite, connectClient, listen, withTimeout
from tests.support.processes import ServingProcess, spawnPython
from txupgrade.daemon.demo import demoRoot
from txupgrade.registry import ProtocolRegistry

GOOD_PLUGIN = '''
"""A third-party upgrade protocol, shipped as a txupgrade.plugins module."""

from twisted.internet.protocol import Protocol
from zope.interface import implementer

from txupgrade.interfaces import IUpgradeProtocol
from txupgrade.negotiation import Accept


class Shout(Protocol):
    def __init__(self, target):
        self.target = target

    def connectionMade(self):
        self.transport.write(b"[shouting at " + self.target + b"]")

    def dataReceived(self, data):
        self.transport.write(data.upper())


@implementer(IUpgradeProtocol)
class MyTestProto:
    """Shouts back."""

    name = "mytestproto"
    version = "1"

    def negotiate(self, request):
        return Accept(headers=((b"X-Plugin", b"mytestproto"),))

    def buildProtocol(self, request, site):
        return Shout(request.target)


mytestproto = MyTestProto()
'''

BROKEN_PLUGIN = """
raise ImportError("brokenproto is broken on purpose")
"""

INVALID_PLUGIN = '''
from zope.interface import implementer

from txupgrade.interfaces import IUpgradeProtocol


@implementer(IUpgradeProtocol)
class Incomplete:
    """Claims the interface, has no negotiate nor buildProtocol."""

    name = "incomplete"
    version = None


incomplete = Incomplete()
'''

SHOUT_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: mytestproto/1\r\n"
    b"Connection: Upgrade\r\nX-Plugin: mytestproto\r\n\r\n"
)


class ThirdPartyPluginTests(TestCase):
    """Plugin modules in a C{txupgrade/plugins/} directory of another path entry."""

    def setUp(self) -> None:
        self.root = tempfile.mkdtemp(prefix="txupgrade-plugins-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.pluginDir = os.path.join(self.root, "txupgrade", "plugins")
        os.makedirs(self.pluginDir)

    def install(self, **modules: str) -> None:
        """
        Write C{modules} (no C{__init__.py} anywhere), then put the directory on
        C{sys.path} and extend the namespace as C{pluginPackagePaths} does at
        import; undo all of it, and the modules imported, at cleanup.
        """
        for name, source in modules.items():
            with open(os.path.join(self.pluginDir, name + ".py"), "w") as f:
                f.write(textwrap.dedent(source))
        savedPath = list(sys.path)
        savedPackagePath = list(txupgrade.plugins.__path__)
        sys.path.insert(0, self.root)
        txupgrade.plugins.__path__.extend(
            p for p in pluginPackagePaths(txupgrade.plugins.__name__) if p not in savedPackagePath
        )
        self.assertIn(self.pluginDir, txupgrade.plugins.__path__)

        def restore() -> None:
            sys.path[:] = savedPath
            txupgrade.plugins.__path__[:] = savedPackagePath
            for name in modules:
                sys.modules.pop(f"txupgrade.plugins.{name}", None)
            cache = os.path.join(self.pluginDir, "dropin.cache")
            if os.path.exists(cache):
                os.remove(cache)

        self.addCleanup(restore)

    @inlineCallbacks
    def serveAndShout(self, registry: ProtocolRegistry) -> Any:
        """Serve C{registry}; check a switch to the plugin over a real socket."""
        site = TrackingSite(Hello(), registry)
        port = listen(self, site)
        client = yield connectClient(self, port)
        client.send(upgrade(b"nope, mytestproto/1", b"/loud") + b"quiet")
        expected = SHOUT_101 + b"[shouting at /loud]QUIET"
        yield client.waitForBytes(len(expected))
        self.assertEqual(client.data, expected)
        client.send(b"more")
        yield client.waitForBytes(len(expected) + 4)
        self.assertEqual(client.data[len(expected) :], b"MORE")
        return client

    @inlineCallbacks
    def test_discoveredAndServed(self) -> Any:
        """A plugin module in the namespace is found beside the built-ins, and switches."""
        self.install(mytestproto=GOOD_PLUGIN)
        registry = ProtocolRegistry.fromPlugins()
        self.assertEqual(registry.names(), ["echo", "h2c", "mytestproto/1"])
        yield self.serveAndShout(registry)
        # A second scan reads the cache the first one wrote, and agrees.
        self.assertTrue(os.path.exists(os.path.join(self.pluginDir, "dropin.cache")))
        self.assertEqual(ProtocolRegistry.fromPlugins().names(), ["echo", "h2c", "mytestproto/1"])

    @inlineCallbacks
    def test_echoStillServed(self) -> Any:
        """With a third-party plugin present, the built-in C{echo} still switches."""
        self.install(mytestproto=GOOD_PLUGIN)
        site = TrackingSite(Hello(), ProtocolRegistry.fromPlugins())
        port = listen(self, site)
        client = yield connectClient(self, port)
        client.send(upgrade(b"echo") + b"hi")
        yield client.waitForBytes(len(switching()) + 2)
        self.assertEqual(client.data, switching() + b"hi")

    def test_notFoundWithoutNamespace(self) -> None:
        """Control: without the namespace extension, the module is not found."""
        with open(os.path.join(self.pluginDir, "mytestproto.py"), "w") as f:
            f.write(GOOD_PLUGIN)
        self.assertEqual(ProtocolRegistry.fromPlugins().names(), ["echo", "h2c"])
        self.assertFalse(os.path.exists(os.path.join(self.pluginDir, "dropin.cache")))

    def scanLogged(self) -> tuple[ProtocolRegistry, list[str]]:
        """Scan the plugins; return the registry and the text of every event logged meanwhile."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        try:
            registry = ProtocolRegistry.fromPlugins()
        finally:
            globalLogPublisher.removeObserver(events.append)
        return registry, [formatEvent(e) for e in events]

    @inlineCallbacks
    def test_brokenModuleSkipped(self) -> Any:
        """A module that fails to import: one line naming it and its error, skipped; the others served."""
        self.install(mytestproto=GOOD_PLUGIN, brokenproto=BROKEN_PLUGIN)
        for _scan in range(2):
            registry, logged = self.scanLogged()
            self.assertEqual(
                logged,
                [
                    "Plugin module txupgrade.plugins.brokenproto failed to import "
                    "(ImportError: brokenproto is broken on purpose); skipped"
                ],
            )
            self.assertEqual(self.flushLoggedErrors(), [])
            self.assertEqual(registry.names(), ["echo", "h2c", "mytestproto/1"])
            self.assertEqual(registry.skipped, logged)
        yield self.serveAndShout(registry)

    @inlineCallbacks
    def test_invalidPluginSkipped(self) -> Any:
        """A plugin object that does not verify is one line, skipped; the others are served."""
        self.install(mytestproto=GOOD_PLUGIN, incomplete=INVALID_PLUGIN)
        registry, logged = self.scanLogged()
        self.assertEqual(len(logged), 1, logged)
        self.assertIn("in txupgrade.plugins.incomplete is not a valid upgrade protocol (", logged[0])
        self.assertIn("negotiate", logged[0])
        self.assertTrue(logged[0].endswith("); skipped"), logged[0])
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(registry.names(), ["echo", "h2c", "mytestproto/1"])
        self.assertEqual(registry.moduleOf(list(registry)[2]), "txupgrade.plugins.mytestproto")
        yield self.serveAndShout(registry)


class DaemonTests(TestCase):
    """C{twistd txupgrade} (and C{python -m twisted txupgrade}) as real processes."""

    def spawn(self, argv: list[str], ports: int) -> ServingProcess:
        """Run C{argv}; kill it at cleanup if still running. Ready once it names C{ports} ports."""
        daemon = ServingProcess(rb"starting on (\d+)", ports)
        spawnPython(self, daemon, argv)
        return daemon

    @inlineCallbacks
    def terminate(self, daemon: ServingProcess) -> Any:
        """SIGTERM the daemon; it must shut down cleanly in bounded time."""
        daemon.transport.signalProcess("TERM")  # type: ignore[union-attr]
        yield withTimeout(daemon.ended, TIMEOUT)
        reason = daemon.endReason
        assert reason is not None
        if isinstance(reason.value, ProcessTerminated):
            # twistd re-raises the signal that stopped it, once shut down.
            self.assertEqual(reason.value.signal, signal.SIGTERM, daemon.output)
        else:
            self.assertTrue(reason.check(ProcessDone), daemon.output)
        self.assertIn(b"Received SIGTERM, shutting down.", daemon.output)
        self.assertIn(b"Main loop terminated.", daemon.output)

    @inlineCallbacks
    def exchange(self, port: int, data: bytes, length: int) -> Any:
        """Send C{data} on a new connection; return the first C{length} normalized bytes."""
        client: RawClient = yield connectClient(self, port)
        client.send(data)
        yield client.waitFor(lambda d: len(normalize(d)) >= length)
        yield client.close()
        return normalize(client.data)

    @inlineCallbacks
    def checkServes(self, port: int) -> Any:
        """GET /, GET /echo, POST /echo and an C{echo} switch on C{port}."""
        page = demoRoot(ProtocolRegistry.fromPlugins()).getStaticEntity(b"").body
        expected = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(page), page)
        )
        got = yield self.exchange(port, request(), len(expected))
        self.assertEqual(got, expected)
        self.assertIn(b"<h1>txupgrade</h1>", got)

        hello = b"echo: POST a body and get it back, or Upgrade: echo\n"
        expected = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(hello), hello)
        )
        got = yield self.exchange(port, request(target=b"/echo"), len(expected))
        self.assertEqual(got, expected)

        body = b"a body \x00\xff with bytes"
        expected = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        post = request(b"POST", b"/echo", [(b"Content-Length", b"%d" % len(body))], body)
        got = yield self.exchange(port, post, len(expected))
        self.assertEqual(got, expected)

        expected = switching() + b"switched!"
        got = yield self.exchange(port, upgrade(b"echo", b"/echo") + b"switched!", len(expected))
        self.assertEqual(got, expected)

    @inlineCallbacks
    def test_twistdTwoListeners(self) -> Any:
        """C{twistd -n txupgrade} with two C{--listen}: both serve, SIGTERM stops it."""
        listen = "tcp:0:interface=127.0.0.1"
        argv = ["-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]
        argv += ["--logfile=-", "txupgrade", "--listen", listen, "--listen", listen]
        daemon = self.spawn(argv, 2)
        ports = yield withTimeout(daemon.ready, 30)
        self.assertEqual(len(set(ports)), 2)
        for port in ports:
            yield self.checkServes(port)
        yield self.terminate(daemon)

    @inlineCallbacks
    def test_twist(self) -> Any:
        """C{python -m twisted txupgrade} (the C{twist} runner) serves too."""
        daemon = self.spawn(["-m", "twisted", "txupgrade", "--listen", "tcp:0:interface=127.0.0.1"], 1)
        ports = yield withTimeout(daemon.ready, 30)
        yield self.checkServes(ports[0])
        yield self.terminate(daemon)
