"""
Sphinx inventories (C{objects.inv}) of the Twisted and Python names that
txupgrade's docstrings link to, made from the installed packages with no
network, so that pydoctor resolves every C{L{...}} and the build can treat an
unresolved link as an error.

The names covered are those of every module txupgrade imports, or names in a
C{L{dotted.name}} of its docstrings; the links point at the published API
docs of Twisted and Python.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import pathlib
import re
import sys
import zlib
from collections.abc import Iterable, Iterator

from zope.interface.interface import InterfaceClass

TWISTED_URL = "https://docs.twisted.org/en/stable/api"
PYTHON_URL = "https://docs.python.org/3"

_LINK = re.compile(r"L\{(?:[^}<]*<)?([A-Za-z_][\w.]*)>?\}")


def _modulesUsed(sources: Iterable[pathlib.Path]) -> set[str]:
    """Every absolute module name imported by, or linked from, C{sources}."""
    names: set[str] = set()
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        names.update(_LINK.findall(text))
    modules = set()
    for name in names:
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in sys.modules or _importable(candidate):
                modules.add(candidate)
                break
    return modules


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - not a module (or one we cannot document)
        return False
    return True


def _isStdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names


def _twistedEntries(moduleName: str) -> Iterator[tuple[str, str, str]]:
    """(name, role, uri) for a Twisted module, laid out as pydoctor publishes it."""
    module = sys.modules[moduleName]
    yield moduleName, "py:module", f"{moduleName}.html"
    for name, obj in vars(module).items():
        if name.startswith("__") or inspect.ismodule(obj):
            continue
        full = f"{moduleName}.{name}"
        if isinstance(obj, InterfaceClass) and obj.__module__.startswith("twisted."):
            page = f"{obj.__module__}.{obj.__name__}.html"
            yield full, "py:class", page
            for member in obj.names(all=True):
                yield f"{full}.{member}", "py:method", f"{page}#{member}"
        elif inspect.isclass(obj) and obj.__module__.startswith("twisted."):
            page = f"{obj.__module__}.{obj.__qualname__}.html"
            yield full, "py:class", page
            for klass in obj.__mro__:
                if not klass.__module__.startswith("twisted."):
                    continue
                owner = f"{klass.__module__}.{klass.__qualname__}.html"
                for member in vars(klass):
                    if not member.startswith("__"):
                        yield f"{full}.{member}", "py:attribute", f"{owner}#{member}"
        elif inspect.isfunction(obj) and obj.__module__.startswith("twisted."):
            yield full, "py:function", f"{obj.__module__}.html#{obj.__qualname__}"
        else:
            yield full, "py:data", f"{moduleName}.html#{name}"


def _pythonEntries(moduleName: str) -> Iterator[tuple[str, str, str]]:
    """(name, role, uri) for a standard library module."""
    module = sys.modules[moduleName]
    page = f"library/{moduleName}.html"
    yield moduleName, "py:module", f"{page}#module-{moduleName}"
    for name, obj in vars(module).items():
        if name.startswith("_") or inspect.ismodule(obj):
            continue
        yield f"{moduleName}.{name}", "py:data", f"{page}#{moduleName}.{name}"


def _builtinEntries() -> Iterator[tuple[str, str, str]]:
    for name, obj in vars(builtins).items():
        if name.startswith("_"):
            continue
        if obj is None or isinstance(obj, bool) or obj is NotImplemented or obj is Ellipsis:
            uri = f"library/constants.html#{name}"
        elif inspect.isclass(obj) and issubclass(obj, BaseException):
            uri = f"library/exceptions.html#{name}"
        else:
            uri = f"library/functions.html#{name}"
        yield name, "py:data", uri
        yield f"builtins.{name}", "py:data", uri


def _write(path: pathlib.Path, project: str, entries: Iterable[tuple[str, str, str]]) -> None:
    """Write an inventory in Sphinx's version 2 format."""
    seen = {}
    for name, role, uri in entries:
        seen.setdefault(name, (role, uri))
    body = "".join(f"{name} {role} 1 {uri} -\n" for name, (role, uri) in sorted(seen.items()))
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        "# Version: \n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    path.write_bytes(header.encode() + zlib.compress(body.encode()))


def writeInventories(package: pathlib.Path, outdir: pathlib.Path) -> None:
    """
    Write C{twisted.inv} and C{python.inv} for C{package}'s sources into
    C{outdir} (for pydoctor's C{--intersphinx-file}, with L{TWISTED_URL} and
    L{PYTHON_URL}).
    """
    outdir.mkdir(parents=True, exist_ok=True)
    modules = _modulesUsed(sorted(package.rglob("*.py")))
    twisted = [m for m in sorted(modules) if m.split(".")[0] == "twisted"]
    python = [m for m in sorted(modules) if _isStdlib(m)]
    twistedInv = outdir / "twisted.inv"
    pythonInv = outdir / "python.inv"
    _write(twistedInv, "Twisted", (e for m in twisted for e in _twistedEntries(m)))
    _write(
        pythonInv,
        "Python",
        [*_builtinEntries(), *(e for m in python for e in _pythonEntries(m))],
    )
