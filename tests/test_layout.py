"""
The package layout (docs/internals.md): the public names, the module paths
from before the layout (each still the very module at its new path, with a
warning), and a third-party plugin written for the old paths, loaded by a
real C{twistd txupgrade} that says in one line what moved and serves it.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import textwrap
import warnings

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource

import txupgrade
from tests.support.daemon import LOCAL, runToEnd, startDaemon
from tests.support.http import Response, parseHead, parseResponses, request, switching, upgrade
from tests.support.net import connectClient
from txupgrade import BytesResource, DirectoryResource, UpgradeSite, _moved
from txupgrade.protocols.echo import EchoResource
from txupgrade.testing import MemoryConnection

OLD_STYLE_PLUGIN = '''
"""A plugin written before the layout: it imports the old paths."""

from twisted.internet.protocol import Factory, Protocol

from txupgrade.stream import StreamUpgrade
import txupgrade.negotiation


class Upper(Protocol):
    def dataReceived(self, data):
        self.transport.write(data.upper())


upper = StreamUpgrade("upper", Factory.forProtocol(Upper))
'''


class PublicNamesTests(SynchronousTestCase):
    """C{from txupgrade import ...} keeps every public name, at its new home."""

    def test_names(self) -> None:
        from txupgrade.channel import UpgradeSite
        from txupgrade.negotiation import Accept
        from txupgrade.protocols.stream import StreamUpgrade

        self.assertIs(txupgrade.UpgradeSite, UpgradeSite)
        self.assertIs(txupgrade.Accept, Accept)
        self.assertIs(txupgrade.StreamUpgrade, StreamUpgrade)
        for name in txupgrade.__all__:
            self.assertTrue(hasattr(txupgrade, name), name)


class OldPathTests(SynchronousTestCase):
    """Every module path that moved still imports, as the module at its new path."""

    def test_everyOldPath(self) -> None:
        """The old path is the new module (same classes), and a DeprecationWarning names the new path."""
        for old, new in _moved.MOVED.items():
            sys.modules.pop(old, None)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                module = importlib.import_module(old)
            self.assertIs(module, importlib.import_module(new), old)
            self.assertEqual(module.__name__, new)
            messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
            self.assertIn(f"{old} moved to {new}", " ".join(messages), old)

    def test_fromImport(self) -> None:
        """C{from txupgrade.stream import StreamUpgrade} is the public class."""
        sys.modules.pop("txupgrade.stream", None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from txupgrade.stream import StreamUpgrade
        self.assertIs(StreamUpgrade, txupgrade.StreamUpgrade)

    def test_oldDaemonNames(self) -> None:
        """The names of the old C{txupgrade.daemon} module are the service's."""
        from txupgrade.daemon import DaemonService
        from txupgrade.daemon.service import DaemonService as new

        self.assertIs(DaemonService, new)
        with self.assertRaises(AttributeError):
            txupgrade.daemon.noSuchName  # type: ignore[attr-defined]  # noqa: B018

    def test_oldImportsFound(self) -> None:
        """The registry's reading of a plugin's source finds each old path, and nothing else."""
        self.assertEqual(
            _moved.oldImports(OLD_STYLE_PLUGIN + "from txupgrade import tls, UpgradeSite\n"),
            [
                ("txupgrade.stream", "txupgrade.protocols.stream"),
                ("txupgrade.tls", "txupgrade.protocols.tls"),
            ],
        )
        self.assertEqual(_moved.oldImports("from txupgrade import UpgradeSite\n"), [])
        self.assertEqual(_moved.oldImports("this is not python ("), [])


class OldStylePluginTests(TestCase):
    """A real C{twistd txupgrade} with a third-party plugin that imports old paths."""

    def setUp(self) -> None:
        root = tempfile.mkdtemp(prefix="txupgrade-oldplugin-")
        self.addCleanup(shutil.rmtree, root, True)
        plugins = os.path.join(root, "txupgrade", "plugins")
        os.makedirs(plugins)
        with open(os.path.join(plugins, "oldstyle.py"), "w") as f:
            f.write(textwrap.dedent(OLD_STYLE_PLUGIN))
        self.env = {"PYTHONPATH": os.pathsep.join([root, *sys.path])}
        self.line = (
            "Plugin module txupgrade.plugins.oldstyle imports txupgrade.stream, "
            "which moved to txupgrade.protocols.stream; loaded through the old path"
        )

    @inlineCallbacks
    def test_listProtocols(self) -> None:
        """C{--list-protocols} lists the plugin and prints the one line."""
        daemon = yield runToEnd(self, ["--list-protocols"], env=self.env)
        self.assertEqual(daemon.exitCode, 0, daemon.output)
        text = daemon.output.decode()
        self.assertRegex(text, r"upper\s+txupgrade\.plugins\.oldstyle")
        self.assertEqual(text.count(self.line), 1, text)

    @inlineCallbacks
    def test_servesIt(self) -> None:
        """The daemon logs the line at start, offers the plugin and switches to it over a real socket."""
        daemon = yield startDaemon(self, ["--listen", LOCAL], env=self.env)
        text = daemon.output.decode()
        self.assertEqual(text.count(self.line), 1, text)
        self.assertRegex(text, r"upgrade protocols: [^\n]*\bupper\b")
        client = yield connectClient(self, daemon.ports[0])
        client.transport.write(upgrade(b"upper") + b"shout")
        data = yield client.waitForSuffix(b"SHOUT")
        self.assertEqual(data, switching(b"upper") + b"SHOUT")


class PlainResourceTests(SynchronousTestCase):
    """
    txupgrade's resources answer a wrong method as twisted.web does, with no
    deprecated error page (and so no warning): C{405} with C{Allow}, C{501},
    C{HEAD} from C{render_GET}.
    """

    def received(self, method: bytes, resource: Resource) -> bytes:
        """What a client gets for C{method} on C{resource} (a warning fails the test)."""
        root = DirectoryResource()
        root.putChild(b"r", resource)
        conn = MemoryConnection(UpgradeSite(root, reactor=Clock()))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            conn.send(request(method, b"/r", [(b"Content-Length", b"0")]))
        return conn.received

    def answer(self, method: bytes, resource: Resource) -> Response:
        [response], _ = parseResponses(self.received(method, resource))
        return response

    def test_notAllowed(self) -> None:
        """A method twisted.web knows (GET, HEAD, POST) that the resource lacks: 405, with Allow."""
        response = self.answer(b"POST", BytesResource(b"x", "text/plain"))
        self.assertEqual(response.code, 405)
        [allow] = response.header(b"allow")
        self.assertEqual(sorted(allow.split(b", ")), [b"GET", b"HEAD"])

    def test_notImplemented(self) -> None:
        """Any other method: 501."""
        for method in (b"PUT", b"BREW"):
            response = self.answer(method, EchoResource())
            self.assertEqual(response.code, 501)
            self.assertIn(method, response.body)

    def test_headFromGet(self) -> None:
        parsed = parseHead(self.received(b"HEAD", BytesResource(b"hello", "text/plain")))
        assert parsed is not None
        head, rest = parsed
        self.assertEqual((head.code, head.header(b"content-length"), rest), (200, [b"5"], b""))
        response = self.answer(b"GET", BytesResource(b"hello", "text/plain"))
        self.assertEqual((response.code, response.body), (200, b"hello"))
        self.assertEqual(response.header(b"content-type"), [b"text/plain"])
