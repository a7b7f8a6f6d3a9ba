"""
Unit tests for the daemon's settings (L{txupgrade.daemon.config}), the options of
C{twistd txupgrade} (L{txupgrade.tap}) and what they load (L{txupgrade.daemon.service}),
in memory (a L{MemoryReactor}; no socket is opened).
"""

from __future__ import annotations

import inspect
import os
import tempfile
import textwrap
from typing import Any

import twisted.plugin
from twisted.internet.testing import MemoryReactorClock
from twisted.python import log as legacyLog
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from txupgrade.daemon import config
from txupgrade.daemon.config import ConfigError
from txupgrade.daemon.demo import MAX_FRAME_PAYLOAD, MAX_MESSAGE_PAYLOAD, webSocketEchoFactory
from txupgrade.daemon.service import (
    DaemonError,
    buildRoot,
    loadResource,
    loadTLSOptions,
    loadWebSocketFactory,
    tlsDescriptions,
)
from txupgrade.daemon.workerplan import workerArguments
from txupgrade.daemon.workers import _NOT_PASSED_ON
from txupgrade.protocols.websocket import WebSocketEndpoint
from txupgrade.registry import ProtocolRegistry
from txupgrade.tap import Options, buildService


def _write(test: SynchronousTestCase, text: str, name: str = "txupgrade.toml") -> str:
    directory = tempfile.mkdtemp(prefix="txupgrade-config-")
    test.addCleanup(lambda: [os.remove(os.path.join(directory, n)) for n in os.listdir(directory)])
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


def _parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class ReadConfigTests(SynchronousTestCase):
    """L{config.readConfig}: the TOML file."""

    def test_values(self) -> None:
        """Every kind of setting is read and converted; C{_} stands for C{-}."""
        path = _write(
            self,
            """\
            listen = "tcp:0"
            websocket = { "/chat" = "pkg.factory" }
            websocket-origin = ["https://a.example"]
            max_upgrade_body = 10
            drain-timeout = 2.5
            no-advertise = true
            policy = "server"
            """,
        )
        self.assertEqual(
            config.readConfig(path),
            {
                "listen": ["tcp:0"],
                "websocket": ["/chat=pkg.factory"],
                "websocket-origin": ["https://a.example"],
                "max-upgrade-body": 10,
                "drain-timeout": 2.5,
                "no-advertise": True,
                "policy": "server",
            },
        )

    def test_errors(self) -> None:
        """Each mistake is a one-line L{ConfigError} naming the file and the setting."""
        cases = {
            "listen = [": "is not valid TOML",
            "listn = []": "unknown setting 'listn'",
            "listen = 3": "listen: expected a list of strings, not 3",
            "listen = [3]": "bad listen 3",
            "timeout = -1": "bad timeout -1: must not be negative",
            "timeout = true": "bad timeout True",
            "policy = 'nobody'": "bad policy 'nobody': must be one of client, server",
            "no-advertise = 1": "expected true or false, not 1",
            "resource = ['a']": "expected one value",
        }
        for text, expected in cases.items():
            path = _write(self, text + "\n")
            error = self.assertRaises(ConfigError, config.readConfig, path)
            self.assertIn(expected, str(error), text)
            self.assertIn(path, str(error))
            self.assertEqual(len(str(error).splitlines()), 1)
        error = self.assertRaises(ConfigError, config.readConfig, "/nonexistent/txupgrade.toml")
        self.assertEqual(
            str(error), "cannot read config file /nonexistent/txupgrade.toml: No such file or directory"
        )


class MergeTests(SynchronousTestCase):
    """L{config.merge}: the command line wins."""

    def test_precedence(self) -> None:
        """Command line, then the file, then the default."""
        merged = config.merge(
            {"timeout": 5.0, "listen": ["tcp:1"], "policy": "server"},
            {"timeout": "7", "listen": [], "policy": None, "no-advertise": 0},
        )
        self.assertEqual(merged["timeout"], 7.0)
        self.assertEqual(merged["listen"], ["tcp:1"])
        self.assertEqual(merged["policy"], "server")
        self.assertEqual(merged["drain-timeout"], 10.0)
        self.assertEqual(merged["websocket"], [])
        self.assertIs(merged["no-advertise"], False)
        self.assertEqual(config.merge({}, {"listen": ["tcp:2"]})["listen"], ["tcp:2"])
        self.assertEqual(config.merge({}, {})["listen"], [config.DEFAULT_LISTEN])

    def test_enableUndoesFileDisable(self) -> None:
        """C{--enable X} takes X out of the file's C{disable}; C{--disable} replaces it."""
        merged = config.merge({"disable": ["echo", "websocket"]}, {"enable": ["Echo"]})
        self.assertEqual(merged["disable"], ["websocket"])
        merged = config.merge({"disable": ["echo"]}, {"enable": ["echo"], "disable": ["websocket"]})
        self.assertEqual(merged["disable"], ["websocket"])


class SelectProtocolsTests(SynchronousTestCase):
    """L{config.selectProtocols}."""

    names = ["echo", "shout/1", "websocket"]

    def test_select(self) -> None:
        """Enable lists, disable removes, names match without version and case."""
        select = config.selectProtocols
        self.assertEqual(select(self.names, [], []), self.names)
        self.assertEqual(select(self.names, [], ["SHOUT"]), ["echo", "websocket"])
        self.assertEqual(select(self.names, ["shout/1", "echo"], []), ["echo", "shout/1"])
        self.assertEqual(select(self.names, ["shout", "echo"], ["echo"]), ["shout/1"])

    def test_unknown(self) -> None:
        """An unknown name, or a version not available, is an error listing what is."""
        error = self.assertRaises(ConfigError, config.selectProtocols, self.names, ["h2c"], [])
        self.assertEqual(str(error), "--enable: unknown protocol 'h2c' (available: echo, shout/1, websocket)")
        error = self.assertRaises(ConfigError, config.selectProtocols, self.names, [], ["shout/2"])
        self.assertIn("--disable: unknown protocol 'shout/2'", str(error))

    def test_parseMount(self) -> None:
        """C{PATH=NAME}, with a path under the root."""
        self.assertEqual(config.parseMount("/a/b = x.y"), ("/a/b", "x.y"))
        for bad in ("x.y", "a=x.y", "/=x.y", "/a="):
            self.assertRaises(ConfigError, config.parseMount, bad)


class OptionsTests(SynchronousTestCase):
    """L{Options}: the command line, the config file, and the service they build."""

    def test_sameService(self) -> None:
        """A config file and the same command line build the same service."""
        argv = [
            "--listen=tcp:0:interface=127.0.0.1",
            "--listen=unix:/tmp/txupgrade-test.sock",
            "--resource=tests.daemon_sample.root",
            "--websocket=/chat=tests.daemon_sample.chatFactory",
            "--websocket-origin=https://*.example.com:*",
            "--disable=echo",
            "--timeout=9",
            "--max-upgrade-body=77",
            "--max-upgrade-offers=4",
            "--policy=server",
            "--no-advertise",
            "--drain-timeout=4",
            "--allowed-host=example.com",
            "--allowed-host=*.example.net",
        ]
        path = _write(
            self,
            """\
            listen = ["tcp:0:interface=127.0.0.1", "unix:/tmp/txupgrade-test.sock"]
            resource = "tests.daemon_sample.root"
            websocket = ["/chat=tests.daemon_sample.chatFactory"]
            websocket-origin = ["https://*.example.com:*"]
            disable = ["echo"]
            timeout = 9
            max-upgrade-body = 77
            max-upgrade-offers = 4
            policy = "server"
            no-advertise = true
            drain-timeout = 4
            allowed-host = ["example.com", "*.example.net"]
            """,
        )
        fromArgs, fromFile = _parse(*argv), _parse("--config", path)
        self.assertEqual(fromArgs.settings, fromFile.settings)
        services = [
            buildService(o.settings, o.protocols, MemoryReactorClock())  # type: ignore[arg-type]
            for o in (fromArgs, fromFile)
        ]
        shapes = [self.shape(s) for s in services]
        self.assertEqual(shapes[0], shapes[1])
        self.assertEqual(shapes[0]["protocols"], ["h2c"])
        self.assertEqual(shapes[0]["children"], [b"chat", b"hello"])
        self.assertEqual(shapes[0]["origins"], ["https://*.example.com:*"])
        self.assertEqual(shapes[0]["allowedHosts"], frozenset({"example.com", "*.example.net"}))
        self.assertEqual(shapes[0]["maxOffers"], 4)

    @staticmethod
    def shape(service: Any) -> dict[str, Any]:
        site = service.site
        chat = site.resource.children[b"chat"]
        return {
            "listen": service.descriptions,
            "protocols": site.protocols.names(),
            "children": sorted(site.resource.children),
            "origins": chat.upgrade.allowedOrigins,
            "policy": site.policy,
            "allowedHosts": site.allowedHosts,
            "advertise": site.advertise,
            "maxBody": site.maxUpgradeBodySize,
            "maxOffers": site.maxUpgradeOffers,
            "timeout": site.timeOut,
            "drain": service.drainTimeout,
            "ports": [(type(p).__name__, getattr(p, "port", None)) for p in service.ports],
        }

    def test_commandLineWins(self) -> None:
        """Over the file: values, lists, and C{--enable} over the file's C{disable}."""
        path = _write(self, 'timeout = 9\nlisten = ["tcp:1"]\ndisable = ["echo"]\n')
        options = _parse("--config", path, "--timeout", "3", "--listen", "tcp:2", "--enable", "echo")
        self.assertEqual(options.settings["timeout"], 3.0)
        self.assertEqual(options.settings["listen"], ["tcp:2"])
        self.assertEqual(options.settings["protocols"], ["echo"])
        self.assertEqual(options["timeout"], 3.0)

    def test_defaults(self) -> None:
        """No option: the demo on 127.0.0.1:8080 with every protocol."""
        options = _parse()
        self.assertEqual(options.settings["listen"], ["tcp:8080:interface=127.0.0.1"])
        self.assertEqual(options.settings["protocols"], ["echo", "h2c", "websocket"])
        service = buildService(options.settings, options.protocols, MemoryReactorClock())  # type: ignore[arg-type]
        self.assertEqual(sorted(service.site.resource.children), [b"", b"demo", b"echo", b"ws"])
        self.assertEqual(service.site.allowedHosts, "auto")
        [port] = service.reactor.tcpServers
        self.assertEqual((port[0], port[3]), (8080, "127.0.0.1"))

    def test_oneLineExit(self) -> None:
        """A bad setting exits with one line naming it."""
        error = self.assertRaises(SystemExit, _parse, "--enable", "gopher")
        self.assertEqual(
            error.code,
            "txupgrade: --enable: unknown protocol 'gopher' (available: echo, h2c, websocket, TLS)",
        )


class WebSocketLimitsTests(SynchronousTestCase):
    """C{websocket-max-message} and C{websocket-max-frame}: parsed, checked, given to the demo's C{/ws}."""

    def factoryLimits(self, options: Options) -> tuple[int, int]:
        """The C{(frame, message)} limits of the C{/ws} factory of the service C{options} build."""
        service = buildService(options.settings, options.protocols, MemoryReactorClock())  # type: ignore[arg-type]
        factory = service.site.resource.children[b"ws"].upgrade.factory
        return factory.maxFramePayloadSize, factory.maxMessagePayloadSize

    def test_defaults(self) -> None:
        """1 MiB frames and 4 MiB messages, the demo's constants, when nothing is given."""
        options = _parse()
        self.assertEqual(
            (options.settings["websocket-max-frame"], options.settings["websocket-max-message"]),
            (MAX_FRAME_PAYLOAD, MAX_MESSAGE_PAYLOAD),
        )
        self.assertEqual((MAX_FRAME_PAYLOAD, MAX_MESSAGE_PAYLOAD), (1 << 20, 4 << 20))
        self.assertEqual(self.factoryLimits(options), (1 << 20, 4 << 20))
        factory = webSocketEchoFactory()
        self.assertEqual((factory.maxFramePayloadSize, factory.maxMessagePayloadSize), (1 << 20, 4 << 20))

    def test_commandLineAndFile(self) -> None:
        """The same limits from options and from the file (C{_} for C{-}) reach the factory."""
        fromArgs = _parse("--websocket-max-message", "16777216", "--websocket-max-frame", "65536")
        path = _write(self, "websocket-max-message = 16777216\nwebsocket_max_frame = 65536\n")
        fromFile = _parse("--config", path)
        for options in (fromArgs, fromFile):
            self.assertEqual(options.settings["websocket-max-message"], 16777216)
            self.assertEqual(options.settings["websocket-max-frame"], 65536)
            self.assertEqual(self.factoryLimits(options), (65536, 16777216))
        self.assertEqual(
            _parse("--config", path, "--websocket-max-frame", "7").settings["websocket-max-frame"], 7
        )

    def test_badValues(self) -> None:
        """Zero, negative, non-numbers and booleans are one line naming the setting."""
        for name in ("websocket-max-message", "websocket-max-frame"):
            for value in ("0", "-1", "many", "1.5"):
                error = self.assertRaises(SystemExit, _parse, f"--{name}", value)
                self.assertIn(f"txupgrade: command line: bad {name} {value!r}", str(error.code))
                self.assertEqual(len(str(error.code).splitlines()), 1)
            for value in ("0", "-5", "true", '"x"'):
                path = _write(self, f"{name} = {value}\n")
                error = self.assertRaises(ConfigError, config.readConfig, path)
                self.assertIn(f"{path}: {name}: bad {name}", str(error))
        error = self.assertRaises(SystemExit, _parse, "--websocket-max-frame", "0")
        self.assertIn("must be at least 1", str(error.code))

    def test_frameOverMessage(self) -> None:
        """A frame limit over the message limit is refused, whether the two come from one place or both."""
        error = self.assertRaises(
            SystemExit, _parse, "--websocket-max-message", "1024", "--websocket-max-frame", "2048"
        )
        self.assertEqual(
            error.code,
            "txupgrade: websocket-max-frame 2048 is larger than websocket-max-message 1024: "
            "a frame is part of a message",
        )
        path = _write(self, "websocket-max-message = 1000\n")
        error = self.assertRaises(SystemExit, _parse, "--config", path)
        self.assertIn(
            "websocket-max-frame 1048576 is larger than websocket-max-message 1000", str(error.code)
        )
        equal = _parse("--websocket-max-message", "5", "--websocket-max-frame", "5")
        self.assertEqual(equal.settings["websocket-max-frame"], 5)
        self.assertRaises(ValueError, webSocketEchoFactory, maxFramePayload=2, maxMessagePayload=1)
        self.assertRaises(ValueError, webSocketEchoFactory, maxFramePayload=0, maxMessagePayload=1)

    def test_help(self) -> None:
        """C{--help} lists both, with their defaults."""
        text = str(Options())
        for name, default in (("websocket-max-message", 4194304), ("websocket-max-frame", 1048576)):
            self.assertIn(f"--{name}=", text)
            section = text[text.index(f"--{name}=") :]
            self.assertIn(f"[default: {default}]", " ".join(section.split())[:400])

    def test_workers(self) -> None:
        """A worker is started with both limits on its command line."""
        settings = _parse("--websocket-max-message", "9000000", "--websocket-max-frame", "3000").settings
        arguments = workerArguments(settings, config.SETTINGS, drop=_NOT_PASSED_ON)
        self.assertIn("--websocket-max-message=9000000", arguments)
        self.assertIn("--websocket-max-frame=3000", arguments)
        worker = Options()
        worker.parseOptions(arguments)
        self.assertEqual(
            (worker.settings["websocket-max-message"], worker.settings["websocket-max-frame"]),
            (9000000, 3000),
        )


class LoadTests(SynchronousTestCase):
    """What the daemon loads by name or path."""

    def test_resource(self) -> None:
        """A resource, or a callable returning one; anything else is one line."""
        self.assertIsInstance(loadResource("tests.daemon_sample.root"), Resource)
        self.assertIsInstance(loadResource("twisted.web.resource.Resource"), Resource)
        for name, expected in [
            ("tests.daemon_sample.nothing", "cannot be loaded: AttributeError"),
            ("no_such_package.x", "cannot be loaded: ObjectNotFound"),
            ("tests.daemon_sample.NOT_A_RESOURCE", "is int, not a twisted.web resource"),
            ("tests.daemon_sample.chatFactory", "is WebSocketServerFactory, not a twisted.web resource"),
        ]:
            error = self.assertRaises(DaemonError, loadResource, name)
            self.assertIn(expected, str(error))

    def test_webSocketFactory(self) -> None:
        """An autobahn server factory, or a callable returning one."""
        factory = loadWebSocketFactory("tests.daemon_sample.chatFactory")
        self.assertEqual(factory.protocol.__name__, "Chat")
        error = self.assertRaises(DaemonError, loadWebSocketFactory, "tests.daemon_sample.root")
        self.assertIn("is Resource, not an autobahn WebSocketServerFactory", str(error))

    def test_mountNested(self) -> None:
        """C{--websocket /a/b=...} adds a plain C{/a} and the endpoint under it."""
        settings = config.merge({}, {"websocket": ["/a/b=tests.daemon_sample.chatFactory"]})
        root = buildRoot(settings, ProtocolRegistry(), True)
        self.assertIsInstance(root.children[b"a"].children[b"b"], WebSocketEndpoint)  # type: ignore[attr-defined]
        self.assertIn(b"ws", root.children)  # type: ignore[attr-defined]
        root = buildRoot(config.merge({}, {}), ProtocolRegistry(), False)
        self.assertNotIn(b"ws", root.children)  # type: ignore[attr-defined]

    def test_certificate(self) -> None:
        """Key and certificate in one PEM; either missing is one line."""
        import trustme

        cert = trustme.CA().issue_cert("localhost")
        both = _write(self, "", "both.pem")
        cert.private_key_and_cert_chain_pem.write_to_path(both)
        self.assertIsNotNone(loadTLSOptions(both).getContext())
        certOnly = _write(self, "", "cert.pem")
        cert.cert_chain_pems[0].write_to_path(certOnly)
        error = self.assertRaises(DaemonError, loadTLSOptions, certOnly)
        self.assertEqual(str(error).splitlines(), [str(error)])
        self.assertIn("--tls-certificate " + certOnly + ": no private key", str(error))
        keyOnly = _write(self, "", "key.pem")
        cert.private_key_pem.write_to_path(keyOnly)
        self.assertIn("no certificate", str(self.assertRaises(DaemonError, loadTLSOptions, keyOnly)))

    def test_tlsDescriptions(self) -> None:
        """C{ssl:} listeners (also under C{haproxy:}) get the PEM, quoted; others are untouched."""
        self.assertEqual(
            tlsDescriptions(["tcp:1", "ssl:2", "haproxy:ssl:3", "ssl:4:privateKey=k.pem"], "/a:b.pem"),
            [
                "tcp:1",
                "ssl:2:privateKey=/a\\:b.pem",
                "haproxy:ssl:3:privateKey=/a\\:b.pem",
                "ssl:4:privateKey=k.pem",
            ],
        )
        self.assertRaises(DaemonError, tlsDescriptions, ["ssl:2"], None)


class PluginLogGuardTests(SynchronousTestCase):
    """What L{ProtocolRegistry.fromPlugins} relies on in C{twisted.plugin}."""

    def test_pluginModuleLogsThroughLog(self) -> None:
        """C{getCache} logs an import failure with C{log.err}, C{log} being twisted.python.log."""
        self.assertIs(twisted.plugin.log, legacyLog)
        self.assertIn("log.err()", inspect.getsource(twisted.plugin.getCache))
