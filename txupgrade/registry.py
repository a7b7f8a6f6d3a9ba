"""
The set of connection-wide upgrade protocols a site offers, and plugin discovery.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Iterator

from twisted.logger import Logger
from twisted.plugin import getPlugins
from zope.interface.verify import verifyObject

from txupgrade.interfaces import IUpgradeProtocol

_log = Logger()


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

    @classmethod
    def fromPlugins(cls, package: types.ModuleType | None = None) -> ProtocolRegistry:
        """
        Discover every L{IUpgradeProtocol} plugin in C{package}.

        @param package: The plugin package; L{txupgrade.plugins} by default.
            A plugin module that fails to import is logged by Twisted's plugin
            system and skipped, as is a plugin object that does not verify.
        """
        if package is None:
            import txupgrade.plugins as package
        registry = cls()
        found = sorted(getPlugins(IUpgradeProtocol, package), key=protocolName)
        for plugin in found:
            try:
                registry.register(plugin)
            except Exception:  # noqa: BLE001 - skip a broken plugin, keep serving
                _log.failure("Skipping invalid upgrade plugin {plugin!r}", plugin=plugin)
        return registry
