"""
C{twistd txupgrade}: options and the service they build.

The settings are listed in L{txupgrade.daemon.config.SETTINGS}; each is a long
option here and a key of the C{--config} TOML file (the command line wins).
A setting that cannot be used stops the start with one line on standard
error and exit status 1 (twistd itself prints its whole usage text only for
an option it does not know).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from txupgrade.channel import UpgradeSite
from txupgrade.daemon import config
from txupgrade.daemon.config import SETTINGS, ConfigError
from txupgrade.registry import ProtocolRegistry

__all__ = ["Options", "makeService"]

DEFAULT_LISTEN = config.DEFAULT_LISTEN


def _help(setting: config.Setting) -> str:
    default = setting.default
    if isinstance(default, list):
        default = ", ".join(default) or None
    return setting.help + (f" [default: {default}]" if default not in (None, False) else "")


def _webSocketAvailable() -> bool:
    try:
        import autobahn  # noqa: F401
    except ImportError:
        return False
    return True


def protocolChoices(registry: ProtocolRegistry) -> list[tuple[str, str]]:
    """Every protocol name C{--enable}/C{--disable} know, with the module it came from."""
    choices = [(name, registry.moduleOf(p)) for name, p in zip(registry.names(), registry, strict=True)]
    if _webSocketAvailable():
        choices.append(("websocket", "txupgrade.protocols.websocket (path-bound: /ws, --websocket mounts)"))
    choices.append(("TLS", "txupgrade.protocols.tls (RFC 2817; offered with --tls-certificate)"))
    return choices


class Options(usage.Options):
    """Command-line options of C{twistd txupgrade}."""

    synopsis = "[options]"
    longdesc = (
        "Serve a site (the demo by default) on one or more endpoints; every connection "
        "can switch to a discovered upgrade protocol (see txupgrade.plugins). Every "
        "option can also be set in a TOML file given with --config (same names; the "
        "command line wins). SIGTERM or SIGINT drains the connections, then exits."
    )
    optParameters = [
        [s.name, None, None, _help(s), None] for s in SETTINGS if s.kind == "value" and s.name != "policy"
    ] + [
        ["policy", None, None, "Whose preference picks the protocol: client or server [default: client]"],
        ["config", "c", None, "Read settings from this TOML file (the command line wins)."],
    ]
    optFlags = [[s.name, None, _help(s)] for s in SETTINGS if s.kind == "flag"] + [
        ["list-protocols", None, "Print the upgrade protocols found, with their modules, and exit."]
    ]

    def __init__(self) -> None:
        super().__init__()
        for setting in SETTINGS:
            if setting.kind == "list":
                self[setting.name] = []
        self.protocols: ProtocolRegistry | None = None

    def postOptions(self) -> None:
        """Merge the config file, check everything; one line and exit 1 on a problem."""
        if self["list-protocols"]:
            registry = ProtocolRegistry.fromPlugins()
            for name, module in protocolChoices(registry):
                print(f"{name:<24} {module}")
            for line in registry.skipped + registry.moved:
                print(line, file=sys.stderr)
            raise SystemExit(0)
        try:
            self.settings = self.merged()
        except ConfigError as error:
            raise SystemExit(f"txupgrade: {error}") from None

    def merged(self) -> dict[str, Any]:
        """
        The settings: the command line over the config file over the defaults,
        with the upgrade protocols resolved (L{protocols}).

        @raise ConfigError: a setting that cannot be used.
        """
        fromFile = config.readConfig(self["config"]) if self["config"] else {}
        fromCommandLine = {s.name: self.get(s.name) for s in SETTINGS}
        settings = config.merge(fromFile, fromCommandLine)
        for mount in settings["websocket"]:
            config.parseMount(mount)
        if settings["websocket-max-frame"] > settings["websocket-max-message"]:
            raise ConfigError(
                f"websocket-max-frame {settings['websocket-max-frame']} is larger than "
                f"websocket-max-message {settings['websocket-max-message']}: a frame is part of a message"
            )
        registry = ProtocolRegistry.fromPlugins()
        names = [name for name, _module in protocolChoices(registry)]
        chosen = config.selectProtocols(names, settings["enable"], settings["disable"])
        from txupgrade.daemon.service import loadTLSOptions, tlsDescriptions

        self.protocols = ProtocolRegistry(
            p for n, p in zip(registry.names(), registry, strict=True) if n in chosen
        )
        settings["protocols"] = [n for n in chosen if n != "TLS" or settings["tls-certificate"] is not None]
        settings["tls-options"] = None
        if settings["tls-certificate"] is not None:
            settings["tls-options"] = loadTLSOptions(settings["tls-certificate"])
        settings["listen"] = tlsDescriptions(settings["listen"], settings["tls-certificate"])
        # The old dict-style keys, for code that reads Options directly.
        self.update({k: v for k, v in settings.items() if k != "protocols"})
        return settings


def _appender(name: str, doc: str) -> Callable[[Options, str], None]:
    """An C{opt_} method for the repeatable option C{name}: each use adds one value."""

    def opt(self: Options, value: str) -> None:
        self[name].append(value)

    opt.__doc__ = doc
    return opt


for _setting in SETTINGS:
    if _setting.kind == "list":
        setattr(Options, "opt_" + _setting.name.replace("-", "_"), _appender(_setting.name, _help(_setting)))


def makeSite(settings: dict[str, Any], protocols: ProtocolRegistry | None = None) -> UpgradeSite:
    """The site the settings describe, with C{protocols} (every discovered one by default)."""
    from txupgrade.daemon.service import buildRoot

    if protocols is None:
        protocols = ProtocolRegistry.fromPlugins()
    webSocket = "websocket" in settings.get("protocols", ["websocket"]) and _webSocketAvailable()
    tlsOptions = settings.get("tls-options")
    if tlsOptions is not None and "TLS" in settings.get("protocols", ["TLS"]):
        from txupgrade.protocols.tls import TLSUpgrade, offerALPN

        # After an RFC 2817 upgrade the connection goes on as HTTP/1.1.
        offerALPN(tlsOptions, lambda: [b"http/1.1"])
        protocols = ProtocolRegistry([*protocols, TLSUpgrade(tlsOptions)])
    site = UpgradeSite(
        buildRoot(settings, protocols, webSocket),
        protocols,
        policy=settings["policy"],
        advertise=not settings["no-advertise"],
        maxUpgradeBodySize=settings["max-upgrade-body"],
        maxUpgradeOffers=settings["max-upgrade-offers"],
        allowedHosts=settings.get("allowed-host") or "auto",
        timeout=settings["timeout"],
        logPath=settings["access-log"],
        priorKnowledge=not settings.get("no-prior-knowledge", False),
        alpnH2=not settings.get("no-alpn-h2", False),
        extendedConnect=not settings.get("no-extended-connect", False),
    )
    if settings.get("no-access-log"):
        site.quietAccessLog = True
        site.log = _noAccessLog  # type: ignore[method-assign]
    return site


def _noAccessLog(request: Any) -> None:
    """C{--no-access-log}: the site's access log, off."""


def buildService(settings: dict[str, Any], protocols: ProtocolRegistry, reactor: Any = None) -> Any:
    """
    The L{txupgrade.daemon.service.DaemonService} the settings describe, bound.

    @raise ConfigError: a setting that cannot be used, or a listener that cannot bind.
    """
    from txupgrade.daemon import workers
    from txupgrade.daemon.limits import Limits
    from txupgrade.daemon.service import DaemonService

    site = makeSite(settings, protocols)
    if settings.get("workers") or workers.isWorker():
        service: Any = workers.buildService(settings, site, reactor)
        if settings.get("metrics"):
            _addMetrics(service, settings["metrics"])
        return service
    service = DaemonService(
        site,
        settings["listen"],
        drainTimeout=settings["drain-timeout"],
        protocolNames=settings.get("protocols", protocols.names()),
        limits=Limits.fromSettings(settings),
        reactor=reactor,
    )
    service.listen()
    if settings.get("metrics"):
        _addMetrics(service, settings["metrics"])
    return service


def _addMetrics(service: Any, description: str) -> None:
    """
    C{--metrics}: a process serving the site counts (a worker answers its
    supervisor); the supervisor or the single process serves the page.
    """
    from txupgrade.daemon import workers
    from txupgrade.daemon.service import DaemonError

    try:
        from txupgrade.daemon.metrics import DaemonMetrics, SupervisorMetrics
    except ImportError:
        raise DaemonError("--metrics needs prometheus_client (pip install 'txupgrade[metrics]')") from None
    if isinstance(service, workers.Supervisor):
        service.addListener(description, SupervisorMetrics(service).site(), "metrics")
        return
    service.metrics = DaemonMetrics(service.tracker)
    if not isinstance(service, workers.WorkerService):
        service.addListener(description, service.metrics.site(), "metrics")


def makeService(options: Options) -> IService:
    """The daemon's service; a setting that cannot be used exits with one line."""
    settings = getattr(options, "settings", None)
    if settings is None:
        settings = options.merged()
    protocols = options.protocols if options.protocols is not None else ProtocolRegistry.fromPlugins()
    try:
        service = buildService(settings, protocols)
    except ConfigError as error:
        print(f"txupgrade: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    from txupgrade.daemon.workers import Supervisor

    if isinstance(service, Supervisor):
        from txupgrade.daemon.logs import logOutput

        # The workers format their own lines; the supervisor appends them.
        service.logTo(logOutput(options), settings["log-format"])
    else:
        from txupgrade.daemon.logs import fileLogging
        from txupgrade.daemon.workers import WorkerService

        # A worker's lines go to its supervisor through its own observer.
        fileLogging(service, options, settings["log-format"], lineLog=not isinstance(service, WorkerService))
    from twisted.internet import reactor

    from txupgrade.daemon.service import keepOutOfCollections

    reactor.callWhenRunning(keepOutOfCollections)
    return service
