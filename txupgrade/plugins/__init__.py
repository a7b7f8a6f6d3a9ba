"""
txupgrade's plugin namespace: modules here provide L{IUpgradeProtocol} objects.

Third-party distributions ship a module in their own C{txupgrade/plugins/}
directory (never an C{__init__.py}); the path extension below makes Twisted's
plugin system find it.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__: list[str] = []
