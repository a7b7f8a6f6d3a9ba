"""
The module paths of txupgrade before its layout into the core,
C{txupgrade.protocols} and C{txupgrade.daemon}: each old path still imports,
as the very module at its new path (so classes, and C{isinstance}, are the
same), with a L{DeprecationWarning} naming the new path.

A plugin written for the old paths (C{from txupgrade.stream import
StreamUpgrade}) so keeps loading; the registry reports each such import in
one line naming the plugin module and the path that moved
(L{oldImports}, read by L{txupgrade.registry.ProtocolRegistry.fromPlugins}).
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Sequence

__all__ = ["MOVED", "install", "oldImports"]

#: Old module path to new.
MOVED = {
    "txupgrade.echo": "txupgrade.protocols.echo",
    "txupgrade.stream": "txupgrade.protocols.stream",
    "txupgrade.h2c": "txupgrade.protocols.h2c",
    "txupgrade.tls": "txupgrade.protocols.tls",
    "txupgrade.websocket": "txupgrade.protocols.websocket",
    "txupgrade._wshandshake": "txupgrade.protocols.websocket._handshake",
    "txupgrade._autobahncompat": "txupgrade.protocols.websocket._autobahncompat",
    "txupgrade.config": "txupgrade.daemon.config",
    "txupgrade.demo": "txupgrade.daemon.demo",
    "txupgrade.limits": "txupgrade.daemon.limits",
    "txupgrade.logs": "txupgrade.daemon.logs",
    "txupgrade.metrics": "txupgrade.daemon.metrics",
    "txupgrade.tracking": "txupgrade.daemon.tracking",
    "txupgrade.workerplan": "txupgrade.daemon.workerplan",
    "txupgrade.workers": "txupgrade.daemon.workers",
}


def oldImports(source: str) -> list[tuple[str, str]]:
    """The old paths that the Python C{source} imports, each with its new path, in order."""
    found: list[tuple[str, str]] = []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return found
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.extend((name, MOVED[name]) for name in names if name in MOVED)
    return found


def _importer() -> types.FrameType | None:
    """The frame of the code whose import statement named the old path."""
    frame: types.FrameType | None = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not (
            name.startswith("importlib") or name == __name__ or frame.f_code.co_filename.startswith("<frozen")
        ):
            return frame
        frame = frame.f_back
    return None


class _Alias(importlib.abc.Loader):
    """Loads an old path as the module at its new path."""

    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        frame = _importer()
        message = f"{spec.name} moved to {self.new}; import it from there (or the public name from txupgrade)"
        if frame is not None:
            warnings.warn_explicit(
                message,
                DeprecationWarning,
                frame.f_code.co_filename,
                frame.f_lineno,
                module=frame.f_globals.get("__name__", "?"),
                registry=frame.f_globals.setdefault("__warningregistry__", {}),
            )
        else:
            warnings.warn(message, DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new)

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing: the module at the new path is already executed."""


class _MovedFinder(importlib.abc.MetaPathFinder):
    """Finds the old paths of L{MOVED}, and nothing else."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    """Make the old paths importable (once per process)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
