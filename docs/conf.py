"""Sphinx configuration for normopt's documentation.

Build (warnings are errors, as in CI):

    python3 -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # document this checkout, whichever normopt pip installed

import normopt  # noqa: E402

project = "normopt"
author = "the normopt authors"
copyright = "2026, the normopt authors"
release = normopt.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# Markdown: $...$ math, ::: fences, {doc} links, anchors for ## headings.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# The API reference comes from the docstrings (Google style: Args:, Returns:, Example:).
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Subclasses show their own docstrings only (every norm would repeat the interface's).
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"normopt {release}"
html_static_path = ["_static"]
