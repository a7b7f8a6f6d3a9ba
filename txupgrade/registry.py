"""
The set of connection-wide upgrade protocols a site offers, and plugin discovery.
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import twisted.plugin
from twisted.logger import Logger
from twisted.plugin import getCache
from twisted.python.modules import getModule
from zope.interface.verify import verifyObject

from txupgrade import _moved
from txupgrade.interfaces import IUpgradeProtocol

_log = Logger(namespace="txupgrade.plugins")


def _oneLine(error: BaseException) -> str:
    """C{Type: message}, on one line (at most 300 characters of message)."""
    text = " ".join(str(error).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _QuietPluginLog:
    """
    Stands in for C{twisted.plugin.log} during a scan: Twisted logs a whole
    traceback for a plugin module that fails to import, on every scan; the
    registry has already logged one line for it (L{_importFailures}).
    """

    def __init__(self, log: Any, registry: ProtocolRegistry, reported: Iterable[str]) -> None:
        self._log = log
        self._registry = registry
        self._reported = set(reported)

    def err(self, *args: Any, **kwargs: Any) -> None:
        error = sys.exc_info()[1]
        if error is not None and _oneLine(error) not in self._reported:
            _skipped(self._registry, "A plugin failed to load ({error}); skipped", error=_oneLine(error))

    def msg(self, *args: Any, **kwargs: Any) -> None:
        self._log.msg(*args, **kwargs)


def _skipped(registry: ProtocolRegistry, text: str, **fields: Any) -> None:
    """Log one line for a skipped plugin, and keep it in C{registry.skipped}."""
    _log.error(text, pluginEvent="skipped", **fields)
    registry.skipped.append(text.format(**fields))


def _importFailures(registry: ProtocolRegistry, package: types.ModuleType) -> dict[str, str]:
    """
    Import every plugin module of C{package} not yet imported; log one line
    for each that fails, and return them (module name to error). Each one
    that imports a path that moved gets its line too (L{_movedImports}).
    """
    failures = {}
    for module in getModule(package.__name__).iterModules():
        if module.name in sys.modules:
            _movedImports(registry, module)
            continue
        try:
            with warnings.catch_warnings():
                # Said once, below, in the plugin's own line.
                warnings.simplefilter("ignore", DeprecationWarning)
                module.load()
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt):
                raise
            failures[module.name] = _oneLine(error)
            _skipped(
                registry,
                "Plugin module {module} failed to import ({error}); skipped",
                module=module.name,
                error=failures[module.name],
            )
            continue
        _movedImports(registry, module)
    return failures


def _movedImports(registry: ProtocolRegistry, module: Any) -> None:
    """One line for each old path (L{txupgrade._moved}) that the plugin C{module} imports."""
    try:
        source = module.filePath.getContent().decode("utf-8")
    except (OSError, UnicodeDecodeError, AttributeError):
        return
    for old, new in _moved.oldImports(source):
        line = f"Plugin module {module.name} imports {old}, which moved to {new}; loaded through the old path"
        _log.warn("{line}", line=line, pluginEvent="moved", module=module.name, old=old, new=new)
        registry.moved.append(line)


def protocolName(protocol: IUpgradeProtocol) -> str:
    """C{name} or C{name/version}, as the protocol names itself in a C{101}."""
    version = protocol.version
    return protocol.name if version is None else f"{protocol.name}/{version}"


class ProtocolRegistry:
    """
    An ordered collection of L{IUpgradeProtocol} providers.

    Order is server preference: it breaks ties between protocols answering the
    same offered name and decides under the C{"server"} selection policy.
    """

    def __init__(self, protocols: Iterable[IUpgradeProtocol] = ()) -> None:
        self._protocols: list[IUpgradeProtocol] = []
        self._modules: dict[int, str] = {}
        #: One line for each plugin skipped by L{fromPlugins}.
        self.skipped: list[str] = []
        #: One line for each import of a path that moved (L{txupgrade._moved})
        #: by a plugin module that L{fromPlugins} loaded: it loads, but says so.
        self.moved: list[str] = []
        for protocol in protocols:
            self.register(protocol)

    def register(self, protocol: IUpgradeProtocol) -> None:
        """
        Add C{protocol}, after checking it provides L{IUpgradeProtocol}.

        @raise zope.interface.exceptions.Invalid: if it does not.
        """
        verifyObject(IUpgradeProtocol, protocol)
        self._protocols.append(protocol)

    def __iter__(self) -> Iterator[IUpgradeProtocol]:
        return iter(self._protocols)

    def __len__(self) -> int:
        return len(self._protocols)

    def names(self) -> list[str]:
        """The protocols' names, in server preference order."""
        return [protocolName(p) for p in self._protocols]

    def moduleOf(self, protocol: IUpgradeProtocol) -> str:
        """The plugin module C{protocol} was found in (else its class's module)."""
        return self._modules.get(id(protocol)) or type(protocol).__module__

    @classmethod
    def fromPlugins(cls, package: types.ModuleType | None = None) -> ProtocolRegistry:
        """
        Discover every L{IUpgradeProtocol} plugin in C{package}.

        @param package: The plugin package; L{txupgrade.plugins} by default.
            A plugin module that fails to import, or a plugin object that does
            not verify, is logged in one line and skipped.
        """
        if package is None:
            import txupgrade.plugins

            package = txupgrade.plugins
        registry = cls()
        failed = _importFailures(registry, package)
        saved = twisted.plugin.log
        quiet = _QuietPluginLog(saved, registry, failed.values())
        twisted.plugin.log = quiet  # type: ignore[assignment]
        try:
            cache = getCache(package)
        finally:
            twisted.plugin.log = saved
        found: list[tuple[IUpgradeProtocol, str]] = []
        for moduleName, dropin in cache.items():
            if moduleName in failed:
                continue
            for cached in dropin.plugins:
                if not any(i.isOrExtends(IUpgradeProtocol) for i in cached.provided):
                    continue
                try:
                    found.append((cached.load(), dropin.moduleName))
                except Exception as error:  # noqa: BLE001 - a plugin module may raise anything
                    _skipped(
                        registry,
                        "Plugin {name} in {module} failed to load ({error}); skipped",
                        name=cached.name,
                        module=dropin.moduleName,
                        error=_oneLine(error),
                    )
        for plugin, moduleName in sorted(found, key=lambda pair: protocolName(pair[0])):
            try:
                registry.register(plugin)
            except Exception as error:  # noqa: BLE001 - skip a broken plugin, keep serving
                _skipped(
                    registry,
                    "Plugin {plugin!r} in {module} is not a valid upgrade protocol ({error}); skipped",
                    plugin=plugin,
                    module=moduleName,
                    error=_oneLine(error),
                )
            else:
                registry._modules[id(plugin)] = moduleName
        return registry
