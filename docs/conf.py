"""
Sphinx configuration of txupgrade's documentation.

The guides are Markdown (MyST); the API reference is pydoctor's rendering of
the epytext docstrings, built into C{api/} by pydoctor's Sphinx extension and
linked from the guides through its inventory. C{tests/test_docs.py} builds it
with warnings as errors: a pydoctor warning (a broken docstring, a link that
resolves nowhere) is a Sphinx warning.
"""

from __future__ import annotations

import pathlib
import shutil
import sys
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _inventory import PYTHON_URL, TWISTED_URL, writeInventories  # noqa: E402

project = "txupgrade"
author = "the txupgrade authors"
copyright = "the txupgrade authors"

extensions = [
    "myst_parser",
    "sphinx.ext.intersphinx",
    "pydoctor.sphinx_ext.build_apidocs",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples"]
myst_heading_anchors = 3
# Every cross-reference must resolve (the build runs with -W).
nitpicky = True
intersphinx_mapping: dict[str, object] = {}
html_theme = "alabaster"
html_title = "txupgrade"

pydoctor_args = [
    "--project-name=txupgrade",
    f"--project-base-dir={ROOT}",
    "--docformat=epytext",
    "--html-output={outdir}/api",
    # Written by _writeInventories before pydoctor runs (see docs/_inventory.py).
    f"--intersphinx-file={{outdir}}/_inventories/twisted.inv::{TWISTED_URL}",
    f"--intersphinx-file={{outdir}}/_inventories/python.inv::{PYTHON_URL}",
    str(ROOT / "txupgrade"),
]
pydoctor_url_path = "api/"


def _writeInventories(app: Any) -> None:
    """The Twisted and Python inventories pydoctor links through, in the output directory."""
    if app.builder is not None and app.builder.name == "html":
        writeInventories(ROOT / "txupgrade", pathlib.Path(app.outdir) / "_inventories")


def _removeInventories(app: Any, exception: Exception | None) -> None:
    shutil.rmtree(pathlib.Path(app.outdir) / "_inventories", ignore_errors=True)


def setup(app: Any) -> None:
    # Before pydoctor's extension builds the API reference (priority 490).
    app.connect("builder-inited", _writeInventories, priority=400)
    app.connect("build-finished", _removeInventories)
