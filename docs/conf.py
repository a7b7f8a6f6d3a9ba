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
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _inventory import writeInventories  # noqa: E402

project = "txupgrade"
author = "the txupgrade authors"
copyright = "the txupgrade authors"  # noqa: A001 - Sphinx's name

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

_inventories = pathlib.Path(tempfile.mkdtemp(prefix="txupgrade-docs-inv-"))
pydoctor_args = [
    "--project-name=txupgrade",
    f"--project-base-dir={ROOT}",
    "--docformat=epytext",
    "--html-output={outdir}/api",
    *writeInventories(ROOT / "txupgrade", _inventories),
    str(ROOT / "txupgrade"),
]
pydoctor_url_path = "api/"
