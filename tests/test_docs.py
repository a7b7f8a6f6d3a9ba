"""
The documentation in C{docs/} is true: it builds with warnings as errors,
every example it shows runs and does what the page says, the rules it lists
are every rule the code cites, with tests that exist, and nothing in the
repository points outside it.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import re
import shlex
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import types
import unittest
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource

import txupgrade.plugins
from tests.support.http import normalize, request
from tests.support.net import TIMEOUT, connectClient, listen, reactor, withTimeout
from tests.support.processes import ServingProcess, spawnPython
from txupgrade.resource import DirectoryResource
from txupgrade.tap import Options
from txupgrade.testing import MemoryConnection, upgradeRequest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
SHOUT_DIST = EXAMPLES / "txupgrade-shout"


def _loadModule(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _withShoutDistribution(test: SynchronousTestCase) -> None:
    """
    Make the example distribution importable as if installed: its directory
    on C{sys.path}, its C{txupgrade/plugins} in the namespace; undone at
    cleanup.
    """
    savedPath = list(sys.path)
    savedPackagePath = list(txupgrade.plugins.__path__)
    sys.path.insert(0, str(SHOUT_DIST))
    txupgrade.plugins.__path__.append(str(SHOUT_DIST / "txupgrade" / "plugins"))

    def restore() -> None:
        sys.path[:] = savedPath
        txupgrade.plugins.__path__[:] = savedPackagePath
        sys.modules.pop("txupgrade.plugins.shout", None)

    test.addCleanup(restore)


# -- the build ----------------------------------------------------------------

_built: Path | None = None


def _buildDocs() -> Path:
    """Build the HTML docs once per test run, with warnings as errors."""
    global _built
    if _built is None:
        out = Path(tempfile.mkdtemp(prefix="txupgrade-docs-"))
        atexit.register(shutil.rmtree, out, True)
        result = subprocess.run(
            [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        if result.returncode != 0:
            shutil.rmtree(out, True)
            raise AssertionError(
                f"sphinx-build -W failed:\n{result.stdout}\n{result.stderr}\n"
                "Docstrings are epytext, read by pydoctor: a top-level heading in a"
                " docstring is underlined with '=' ('-' is a subsection), fields"
                " (@param, @ivar...) come last, and L{name} must resolve (use the"
                " full dotted name of a Twisted or Python object, or C{name})."
            )
        _built = out
    return _built


class SphinxBuildTests(SynchronousTestCase):
    """C{sphinx-build -W -b html docs} succeeds and makes every page."""

    def test_pages(self) -> None:
        """Every guide is built, with its examples included."""
        out = _buildDocs()
        for page in ("index", "quickstart", "protocol-authors", "operators", "rules", "internals"):
            self.assertTrue((out / f"{page}.html").is_file(), page)
        guide = (out / "protocol-authors.html").read_text()
        # literalinclude put the example sources into the page.
        self.assertIn("no shouting here", guide)
        self.assertIn("txupgrade.plugins.shout", guide)
        self.assertIn("upgradeRequest", guide)

    def test_apiReference(self) -> None:
        """pydoctor's API reference from the epytext docstrings is under C{api/}."""
        out = _buildDocs()
        index = (out / "api" / "index.html").read_text()
        self.assertIn("pydoctor", index)
        page = (out / "api" / "txupgrade.IUpgradeProtocol.html").read_text()
        self.assertIn("buildProtocol", page)
        # Epytext fields were rendered, not shown raw.
        self.assertNotIn("@param", page)
        # The guides link into it.
        guide = (out / "protocol-authors.html").read_text()
        self.assertIn('href="api/txupgrade.IUpgradeProtocol.html"', guide)

    def test_brokenDocstringFails(self) -> None:
        """Control: a docstring link that resolves nowhere fails the build."""
        work = Path(tempfile.mkdtemp(prefix="txupgrade-docs-bad-"))
        self.addCleanup(shutil.rmtree, work, True)
        shutil.copytree(DOCS, work / "docs", ignore=shutil.ignore_patterns("__pycache__", "_build"))
        shutil.copytree(ROOT / "txupgrade", work / "txupgrade", ignore=shutil.ignore_patterns("__pycache__"))
        with (work / "txupgrade" / "echo.py").open("a") as f:
            f.write('\n\ndef _broken() -> None:\n    """See L{nowhere.at.all}."""\n')
        result = subprocess.run(
            [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(work / "docs"), str(work / "out")],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=work,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("nowhere.at.all", result.stdout + result.stderr)


# -- the rules ------------------------------------------------------------------

_RULE_HEADING = re.compile(r"^## (R\d+): ", re.MULTILINE)
_TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)::(\w+)`")
_CITATION = re.compile(r"\bR(\d{1,2})\b")


def _ruleSections() -> dict[str, str]:
    text = (DOCS / "rules.md").read_text()
    parts = _RULE_HEADING.split(text)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def _citingFiles() -> Iterator[Path]:
    """The code, tests, benchmarks and docs that may cite rules."""
    for top in ("txupgrade", "tests", "benchmarks", "twisted", "docs"):
        for path in sorted((ROOT / top).rglob("*")):
            if "node_modules" in path.parts or "__pycache__" in path.parts:
                continue
            if path.suffix in (".py", ".md") and path.name != "rules.md":
                yield path
    yield ROOT / "README.md"


class RulesTests(SynchronousTestCase):
    """C{docs/rules.md} defines every rule cited, each with tests that exist."""

    def test_everyRuleDefined(self) -> None:
        """R1 to R17 are defined, in order, each with a source."""
        sections = _ruleSections()
        self.assertEqual(list(sections), [f"R{n}" for n in range(1, 18)])
        for rule, text in sections.items():
            self.assertIn("Source:", text, rule)

    def test_citedRulesDefined(self) -> None:
        """Every "R<n>" the code, tests and docs cite is defined in docs/rules.md."""
        defined = set(_ruleSections())
        cited: dict[str, list[str]] = {}
        for path in _citingFiles():
            for number in _CITATION.findall(path.read_text(encoding="utf-8")):
                cited.setdefault(f"R{number}", []).append(str(path.relative_to(ROOT)))
        self.assertTrue(cited)
        undefined = {rule: sorted(set(paths)) for rule, paths in cited.items() if rule not in defined}
        self.assertEqual(undefined, {}, "cited but not defined in docs/rules.md")

    def test_namedTestsExist(self) -> None:
        """Every test named in docs/rules.md exists, and every rule names some."""
        missing = []
        for rule, text in _ruleSections().items():
            refs = _TEST_REF.findall(text)
            self.assertTrue(refs, f"{rule} names no test")
            for path, className, method in refs:
                module = ".".join(Path(path).with_suffix("").parts)
                try:
                    klass = getattr(importlib.import_module(module), className)
                    getattr(klass, method)
                except (ImportError, AttributeError) as error:
                    missing.append(f"{rule}: {path}::{className}::{method} ({error})")
        self.assertEqual(missing, [])


# -- citations --------------------------------------------------------------------

# Spelled in pieces so that this file does not cite them itself.
_OUTSIDE = re.compile(
    "|".join(
        [
            "TWISTED" + "_NOTES",
            r"\.\./" + "shared",
            "/work/" + "shared",
            "SPEC" + r"\.md",
            "CLIENTS" + r"\.md",
        ]
    )
)


class CitationTests(SynchronousTestCase):
    """Nothing in the repository points at material outside it."""

    def test_noOutsideCitations(self) -> None:
        """No file cites the background notes or the shared folder; docs/internals.md says it instead."""
        offenders = []
        for path in sorted(ROOT.rglob("*")):
            parts = set(path.relative_to(ROOT).parts)
            if parts & {".git", "node_modules", "__pycache__", "_build", "build", "dist"}:
                continue
            if not path.is_file() or any(p.endswith(".egg-info") for p in parts):
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            offenders.extend(f"{path.relative_to(ROOT)}: {m}" for m in _OUTSIDE.findall(text))
        self.assertEqual(offenders, [])

    def test_internalsCited(self) -> None:
        """The private-attribute module points to docs/internals.md, which exists."""
        self.assertIn("docs/internals.md", (ROOT / "txupgrade" / "_twistedcompat.py").read_text())
        self.assertIn("## Where the bytes are", (DOCS / "internals.md").read_text())


# -- the README and the quickstart -----------------------------------------------------


def _readmeCommands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.DOTALL)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


class ReadmeTests(SynchronousTestCase):
    """The README's first commands are the quickstart's."""

    def test_twoCommands(self) -> None:
        """The README starts with the two commands, and the quickstart shows them verbatim."""
        commands = _readmeCommands()
        install = [c for c in commands if "twistd -n txupgrade" in c]
        tests = [c for c in commands if "python -m pytest" in c]
        self.assertEqual(len(install), 1, commands)
        self.assertEqual(len(tests), 1, commands)
        self.assertIn(
            "pip install -e '.[websocket,h2c,tls]' --config-settings editable_mode=compat", install[0]
        )
        self.assertIn("bash .ci/install", tests[0])
        quickstart = (DOCS / "quickstart.md").read_text()
        self.assertIn(install[0], quickstart)
        self.assertIn(tests[0], quickstart)

    def test_ciInstallsDocs(self) -> None:
        """.ci/install installs the docs extra, which the build test needs."""
        line = next(line for line in (ROOT / ".ci" / "install").read_text().splitlines() if "-e '.[" in line)
        self.assertIn("docs", line.split("[", 1)[1].split("]", 1)[0].split(","))


def _consoleBlocks(page: Path) -> list[tuple[str, str]]:
    """The (command, output) of every C{console} block of C{page}."""
    blocks = []
    for block in re.findall(r"```console\n(.*?)```", page.read_text(), re.DOTALL):
        first, _, output = block.partition("\n")
        assert first.startswith("$ "), first
        blocks.append((first[2:], output))
    return blocks


def _spawn(
    test: TestCase, argv: list[str], portPattern: bytes, python: str = sys.executable, **env: str
) -> ServingProcess:
    """Run C{python argv} in a temporary directory; kill it at cleanup."""
    process = ServingProcess(portPattern)
    spawnPython(test, process, argv, python, PYTHONDONTWRITEBYTECODE="1", **env)
    return process


_TWISTD = ["-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "--logfile=-"]
_DATE_SERVER = re.compile(r"^(?:Date|Server): .*\n", re.MULTILINE)


class QuickstartTests(TestCase):
    """What the quickstart shows is what a real C{twistd -n txupgrade} answers."""

    timeout = 120

    @inlineCallbacks
    def test_consoleBlocks(self) -> Any:
        """Each console command of the quickstart, run against the demo server, prints what the page shows."""
        daemon = _spawn(
            self, [*_TWISTD, "txupgrade", "--listen", "tcp:0:interface=127.0.0.1"], rb"starting on (\d+)"
        )
        [port, *_] = yield withTimeout(daemon.ready, 60)
        blocks = _consoleBlocks(DOCS / "quickstart.md")
        self.assertGreaterEqual(len(blocks), 4)
        self.assertIn("python docs/examples/echo_client.py 8080", [command for command, _ in blocks])
        for command, expected in blocks:
            argv = shlex.split(command.replace("8080", str(port)))
            self.assertIn(argv[0], ("curl", "python"), command)
            if argv[0] == "python":
                argv[0] = sys.executable
            elif shutil.which("curl") is None:
                self.fail("curl is needed (bash .ci/install installs it)")
            out, err, code = yield withTimeout(
                getProcessOutputAndValue(argv[0], argv[1:], env=dict(os.environ), path=str(ROOT)), 30
            )
            self.assertEqual(code, 0, (command, err))
            got = _DATE_SERVER.sub("", out.decode().replace("\r\n", "\n"))
            self.assertEqual(got.rstrip("\n"), expected.rstrip("\n"), command)
        # The log lines the page shows ("..." for what changes) are in the log.
        yield withTimeout(daemon.waitFor(b" bytes out"), 30)
        log = daemon.output.decode("utf-8", "replace")
        shown = re.findall(r"```text\n(.*?)```", (DOCS / "quickstart.md").read_text(), re.DOTALL)
        lines = [line for block in shown for line in block.splitlines() if line.startswith("... ")]
        self.assertGreaterEqual(len(lines), 6)
        for line in lines:
            pattern = ".*".join(re.escape(part) for part in line.replace("8080", str(port)).split("..."))
            self.assertRegex(log, pattern)


# -- the protocol author's guide --------------------------------------------------------


class ExamplesTests(SynchronousTestCase):
    """Every example file is shown in the docs and run by the tests."""

    def test_shownAndRun(self) -> None:
        """Each C{docs/examples} source is included by a page and named by a test module."""
        pages = "".join(path.read_text() for path in DOCS.glob("*.md"))
        tests = "".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py"))
        examples = sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".py", ".toml"))
        self.assertGreaterEqual(len(examples), 10)
        for path in examples:
            relative = path.relative_to(DOCS).as_posix()
            self.assertIn(f"{{literalinclude}} {relative}", pages, relative)
            self.assertIn(path.stem if path.suffix == ".py" else path.name, tests, relative)


class DocstringMarkupTests(SynchronousTestCase):
    """The docstrings are epytext, as pydoctor renders them."""

    def test_noRestLiterals(self) -> None:
        """No reST double-backquote literal, which epytext shows as is: C{...} instead."""
        found = [
            f"{path.relative_to(ROOT)}:{number}"
            for path in sorted((ROOT / "txupgrade").rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if "``" in line
        ]
        self.assertEqual(found, [])


class ShoutExampleTests(SynchronousTestCase):
    """The shout/1 distribution's own tests, as the guide shows them, pass."""

    def test_distributionTests(self) -> None:
        """docs/examples/txupgrade-shout/tests/test_shout.py runs green."""
        _withShoutDistribution(self)
        module = _loadModule(SHOUT_DIST / "tests" / "test_shout.py", "txupgrade_shout_tests")
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(module.ShoutTests)
        result = unittest.TestResult()
        suite.run(result)
        self.assertEqual(result.testsRun, 5)
        self.assertEqual([str(e) for e in result.errors + result.failures], [])

    def test_pluginIsFound(self) -> None:
        """In the namespace, Twisted's plugin scan finds C{shout/1} beside the built-ins."""
        from txupgrade.registry import ProtocolRegistry

        _withShoutDistribution(self)
        cache = SHOUT_DIST / "txupgrade" / "plugins" / "dropin.cache"
        self.addCleanup(lambda: cache.unlink(missing_ok=True))
        self.assertIn("shout/1", ProtocolRegistry.fromPlugins().names())

    def test_websocketExample(self) -> None:
        """websocket_site.py: a plain GET at /chat is a 426; a handshake asking chat.v1 gets it."""
        module = _loadModule(EXAMPLES / "websocket_site.py", "txupgrade_docs_websocket_site")
        site = module.makeSite()
        site.reactor = Clock()
        factory = site.resource.children[b"chat"].upgrade.factory
        self.assertEqual((factory.maxFramePayloadSize, factory.failByDrop), (1 << 20, False))
        conn = MemoryConnection(site, chunkSize=1)
        conn.send(request(target=b"/chat"))
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 426 Upgrade Required\r\n"), conn.received[:60])
        self.assertIn(b"\r\nUpgrade: websocket\r\n", conn.received)
        conn.close()
        headers = [
            (b"Sec-WebSocket-Version", b"13"),
            (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            (b"Sec-WebSocket-Protocol", b"chat.v1"),
        ]
        conn = MemoryConnection(site, chunkSize=1)
        conn.send(upgradeRequest(["websocket"], b"/chat", headers=headers))
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), conn.received[:60])
        self.assertIn(b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n", conn.received)
        self.assertIn(b"\r\nSec-WebSocket-Protocol: chat.v1\r\n", conn.received)
        conn.close()
        conn = MemoryConnection(site)
        conn.send(upgradeRequest(["websocket"], b"/chat?token=banned", headers=headers))
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 403 "), conn.received[:60])
        conn.close()
        conn = MemoryConnection(site)
        conn.send(
            upgradeRequest(["websocket"], b"/chat", headers=[*headers, (b"Origin", b"https://evil.test")])
        )
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 403 "), conn.received[:60])
        conn.close()

    def test_exampleSiteHasPage(self) -> None:
        """websocket_site.py serves its page at / in plain HTTP."""
        module = _loadModule(EXAMPLES / "websocket_site.py", "txupgrade_docs_websocket_site2")
        site = module.makeSite()
        site.reactor = Clock()
        conn = MemoryConnection(site)
        conn.send(request())
        self.assertTrue(conn.received.endswith(b"\r\n\r\nhello\n"), conn.received)
        self.assertIsInstance(site.resource, Resource)
        conn.close()


class BoundedEchoExampleTests(SynchronousTestCase):
    """bounded_echo.py registers a producer that pauses reading while the write buffer is full."""

    def test_pausesReading(self) -> None:
        """After the switch its producer is registered; pausing it pauses the transport, resuming resumes."""
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        from txupgrade import UpgradeSite
        from txupgrade.daemon.demo import PauseReadingWhileFull

        module = _loadModule(EXAMPLES / "bounded_echo.py", "txupgrade_docs_bounded_echo")
        site = UpgradeSite(DirectoryResource(), [module.boundedEcho], reactor=Clock())
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        protocol = site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer, hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
        protocol.makeConnection(transport)
        protocol.dataReceived(upgradeRequest(["bounded-echo"]) + b"ping")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 Switching Protocols\r\n"))
        self.assertTrue(transport.value().endswith(b"\r\n\r\nping"))
        self.assertIsInstance(transport.producer, PauseReadingWhileFull)
        transport.producer.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        transport.producer.resumeProducing()
        self.assertEqual(transport.producerState, "producing")


class DrainableExampleTests(SynchronousTestCase):
    """drainable.py: the daemon's drain reaches the protocol, which says goodbye and closes."""

    def test_drain(self) -> None:
        """Draining the daemon's connections sends the goodbye, closes, and aborts nothing."""
        from txupgrade import UpgradeSite
        from txupgrade.daemon.tracking import ConnectionTracker

        module = _loadModule(EXAMPLES / "drainable.py", "txupgrade_docs_drainable")
        clock = Clock()
        tracker = ConnectionTracker(UpgradeSite(DirectoryResource(), [module.chat], reactor=clock), clock)
        conn = MemoryConnection(tracker, chunkSize=1)  # type: ignore[arg-type]
        conn.send(upgradeRequest(["chat"]) + b"hi")
        self.assertTrue(conn.received.endswith(b"\r\n\r\nhi"), conn.received)
        drained = tracker.drain(10)
        conn.flush()
        self.assertTrue(conn.received.endswith(b"hiserver going away\n"), conn.received)
        self.assertIsNotNone(conn.client.lostReason)  # type: ignore[attr-defined]
        self.assertEqual(self.successResultOf(drained)["aborted"], 0)


_LOUD = upgradeRequest(["shout/1"], b"/loud", method=b"POST", body=b"hi") + b"abc"


class ServeShoutExampleTests(TestCase):
    """serve_shout.py over real sockets: in-process, and run as the guide says."""

    timeout = 60

    @inlineCallbacks
    def checkServes(self, port: Any) -> Any:
        client = yield connectClient(self, port)
        client.send(request(target=b"/loud"))
        yield client.waitFor(lambda d: d.endswith(b"shout/1\n"))
        self.assertTrue(client.data.startswith(b"HTTP/1.1 426 Upgrade Required\r\n"), client.data)
        self.assertIn(b"\r\nUpgrade: shout/1\r\n", client.data)
        client = yield connectClient(self, port)
        client.send(_LOUD)
        yield client.waitForSuffix(b"YOU SAID: HI\nABC")
        self.assertTrue(client.data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), client.data)

    @inlineCallbacks
    def test_makeSite(self) -> Any:
        """The site it builds: 426 at /loud without shout/1, a switch with it."""
        _withShoutDistribution(self)
        module = _loadModule(EXAMPLES / "serve_shout.py", "txupgrade_docs_serve_shout")
        port = listen(self, module.makeSite())
        yield self.checkServes(port)

    @inlineCallbacks
    def test_script(self) -> Any:
        """C{python serve_shout.py ENDPOINT} listens and serves the same."""
        process = _spawn(
            self,
            [str(EXAMPLES / "serve_shout.py"), "tcp:0:interface=127.0.0.1"],
            rb"listening on (\d+)",
            PYTHONPATH=os.pathsep.join([str(SHOUT_DIST), str(ROOT)]),
        )
        [port, *_] = yield withTimeout(process.ready, 30)
        yield self.checkServes(port)


def _withExamplesOnPath(test: SynchronousTestCase, *modules: str) -> None:
    """C{docs/examples} on C{sys.path} (as running a script there has it), undone at cleanup."""
    saved = list(sys.path)
    sys.path.insert(0, str(EXAMPLES))

    def restore() -> None:
        sys.path[:] = saved
        for name in modules:
            sys.modules.pop(name, None)

    test.addCleanup(restore)


class ClientExampleTests(TestCase):
    """amp_client.py and tls_client.py against the example services, over real sockets."""

    timeout = 60

    def serveAMP(self) -> Any:
        from txupgrade import UpgradeSite

        _withExamplesOnPath(self, "amp_service", "amp_client")
        service = importlib.import_module("amp_service")
        return listen(self, UpgradeSite(DirectoryResource(), [service.amp_]))

    @inlineCallbacks
    def test_ampClient(self) -> Any:
        """callService switches to AMP and gets the sum and the original request's path and header."""
        port = self.serveAMP()
        client = importlib.import_module("amp_client")
        total, who = yield withTimeout(client.callService(reactor, port))
        self.assertEqual(total, 42)
        self.assertEqual(who, {"path": "/rpc", "token": "secret"})

    @inlineCallbacks
    def test_ampClientScript(self) -> Any:
        """C{python amp_client.py PORT} prints the answers."""
        port = self.serveAMP()
        out, err, code = yield withTimeout(
            getProcessOutputAndValue(
                sys.executable,
                [str(EXAMPLES / "amp_client.py"), str(port)],
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
            ),
            30,
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(
            out.decode().splitlines(),
            ["20 + 22 = 42", "the service saw {'path': '/rpc', 'token': 'secret'}"],
        )

    @inlineCallbacks
    def test_ampClientRefused(self) -> Any:
        """Against a server without C{amp}, callService fails with UpgradeFailed, carrying the status."""
        from txupgrade import UpgradeSite
        from txupgrade.client import UpgradeFailed

        _withExamplesOnPath(self, "amp_service", "amp_client")
        port = listen(self, UpgradeSite(DirectoryResource()))
        client = importlib.import_module("amp_client")
        with self.assertRaises(UpgradeFailed) as caught:
            yield withTimeout(client.callService(reactor, port))
        self.assertEqual(caught.exception.status, 404)

    @inlineCallbacks
    def test_tlsSiteAndClient(self) -> Any:
        """/private is a 426 in plain HTTP; through the TLS upgrade it answers, and the connection goes on."""
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        work = Path(tempfile.mkdtemp(prefix="txupgrade-docs-tls-"))
        self.addCleanup(shutil.rmtree, work, True)
        pem = work / "server.pem"
        pem.write_bytes(cert.private_key_and_cert_chain_pem.bytes())
        site = _loadModule(EXAMPLES / "tls_site.py", "txupgrade_docs_tls_site").makeSite(str(pem))
        port = listen(self, site)
        plain = yield connectClient(self, port)
        plain.send(request(target=b"/private"))
        yield plain.waitFor(lambda d: d.endswith(b"TLS/1.2.\n"))
        self.assertTrue(plain.data.startswith(b"HTTP/1.1 426 Upgrade Required\r\n"), plain.data)
        self.assertIn(b"\r\nUpgrade: TLS/1.2, HTTP/1.1\r\n", plain.data)
        client = _loadModule(EXAMPLES / "tls_client.py", "txupgrade_docs_tls_client")
        response, again = yield withTimeout(client.fetchPrivate(reactor, port, ca.cert_pem.bytes()))
        self.assertEqual((response.status, response.body), (200, b"secret\n"))
        self.assertEqual((again.status, again.body), (200, b"public\n"))


def _venvSitePackages(venv: Path) -> Path:
    paths = sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})
    return Path(paths["purelib"])


class PackagingTests(TestCase):
    """
    The example distribution, built as the guide's pyproject.toml says and
    installed (not editable) into a fresh virtual environment, is found by
    C{twistd txupgrade} there and served.
    """

    timeout = 180

    def buildWheel(self, work: Path) -> Path:
        source = work / "txupgrade-shout"
        shutil.copytree(SHOUT_DIST, source, ignore=shutil.ignore_patterns("__pycache__", "dropin.cache"))
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
             "-w", str(work / "dist"), str(source)],
            check=True,
            capture_output=True,
            timeout=120,
        )  # fmt: skip
        (wheel,) = (work / "dist").glob("*.whl")
        return wheel

    @inlineCallbacks
    def test_installedIntoFreshVenv(self) -> Any:
        """Wheel contents; installed in a new venv, twistd txupgrade lists and switches to shout/1."""
        work = Path(tempfile.mkdtemp(prefix="txupgrade-docs-dist-"))
        self.addCleanup(shutil.rmtree, work, True)
        wheel = self.buildWheel(work)
        names = sorted(zipfile.ZipFile(wheel).namelist())
        self.assertIn("txupgrade/plugins/shout.py", names)
        self.assertEqual([n for n in names if n.endswith("__init__.py")], [])
        self.assertEqual([n for n in names if not n.startswith("txupgrade_shout-1.0.0.dist-info/")],
                         ["txupgrade/plugins/shout.py"])  # fmt: skip

        venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        python = str(venv / "bin" / "python")
        # The new environment sees txupgrade and Twisted as installed here
        # (with their own .pth files), after its own site-packages; here may
        # itself be a venv that sees the system's site-packages.
        here = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
        (_venvSitePackages(venv) / "base.pth").write_text(
            "import site; " + "; ".join(f"site.addsitedir({path!r})" for path in dict.fromkeys(here)) + "\n"
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                python,
                "install",
                "-q",
                "--no-deps",
                "--no-index",
                str(wheel),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        installed = _venvSitePackages(venv) / "txupgrade" / "plugins" / "shout.py"
        self.assertTrue(installed.is_file())

        daemon = _spawn(
            self,
            [*_TWISTD, "txupgrade", "--listen", "tcp:0:interface=127.0.0.1"],
            rb"starting on (\d+)",
            python,
        )
        [port, *_] = yield withTimeout(daemon.ready, 60)
        client = yield connectClient(self, port)
        client.send(request())
        yield client.waitFor(lambda d: b"</html>" in d)
        self.assertIn(b"shout/1", client.data)
        client = yield connectClient(self, port)
        client.send(upgradeRequest(["shout/1"], method=b"POST", body=b"packaged") + b"!")
        yield client.waitForSuffix(b"YOU SAID: PACKAGED\n!", TIMEOUT)
        self.assertTrue(normalize(client.data).startswith(b"HTTP/1.1 101 Switching Protocols\r\n"))


# -- the operator's guide ------------------------------------------------------------


class OperatorsGuideTests(SynchronousTestCase):
    """docs/operators.md describes every option of C{twistd txupgrade}."""

    def test_everyOption(self) -> None:
        """Each long option C{Options} accepts appears as C{`--name} in the guide."""
        guide = (DOCS / "operators.md").read_text()
        options = Options()
        names = {long.rstrip("=") for long in options.longOpt} - {"help", "version"}
        self.assertIn("listen", names)
        missing = sorted(name for name in names if f"`--{name}" not in guide)
        self.assertEqual(missing, [], "document these in docs/operators.md")


def _consoleSession(block: str) -> list[tuple[str, str]]:
    """The (command, output) steps of a C{console} block with several C{$} commands."""
    steps: list[tuple[str, str]] = []
    for line in block.splitlines(keepends=True):
        if line.startswith("$ "):
            steps.append((line[2:].rstrip("\n"), ""))
        else:
            command, output = steps[-1]
            steps[-1] = (command, output + line)
    return steps


class TLSGuideTests(TestCase):
    """The TLS commands of docs/operators.md, run as shown against a real C{twistd txupgrade}."""

    timeout = 120

    @inlineCallbacks
    def test_tlsCommands(self) -> Any:
        """The certificate is made, the daemon serves both listeners, and each curl prints what is shown."""
        from tests.support.net import freePort

        for tool in ("openssl", "curl"):
            if shutil.which(tool) is None:
                self.fail(f"{tool} is needed (bash .ci/install installs it)")
        section = (DOCS / "operators.md").read_text().split("\n## TLS\n", 1)[1].split("\n## ", 1)[0]
        (block,) = re.findall(r"```console\n(.*?)```", section, re.DOTALL)
        steps = _consoleSession(block)
        self.assertEqual([command.split()[0] for command, _ in steps[:2]], ["openssl", "twistd"])
        self.assertGreaterEqual(len(steps), 4)
        directory = tempfile.mkdtemp(prefix="txupgrade-docs-tls-")
        self.addCleanup(shutil.rmtree, directory, True)
        subprocess.run(steps[0][0], shell=True, cwd=directory, check=True, capture_output=True, timeout=60)
        ports = {"8080": str(freePort()), "8443": str(freePort())}

        def local(command: str) -> str:
            for shown, port in ports.items():
                command = command.replace(f":{shown}", f":{port}")
            # The files the first command made, wherever a command names them.
            return re.sub(r"(?<![\w/])((?:server|c)\.pem)", lambda m: os.path.join(directory, m[1]), command)

        argv = shlex.split(local(steps[1][0]))[1:]
        daemon = _spawn(self, [*_TWISTD, *argv], rb"txupgrade serving on tcp:127\.0\.0\.1:(\d+)")
        yield withTimeout(daemon.ready, 60)
        for command, expected in steps[2:]:
            args = shlex.split(local(command))
            out, err, code = yield withTimeout(
                getProcessOutputAndValue(args[0], args[1:], env=dict(os.environ)), 30
            )
            self.assertEqual((code, out.decode()), (0, expected), (command, err))
