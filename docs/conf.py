"""Sphinx configuration for normopt's documentation.

Build (warnings are errors, nitpicky: every cross-reference must resolve; as in CI):

    python3 -m sphinx -E -n -W --keep-going -b html docs docs/_build/html
    python3 docs/check_site.py docs/_build/html   # math served locally, no broken link

The site works offline: MathJax is served from the built site (``_static/mathjax/``), not
from a CDN (see ``mathjax_path`` below).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

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
    # MathJax 3.2.2, shipped by the PyPI package sphinx-mathjax-offline 0.0.2 (installed by
    # the docs and dev extras, so by scripts/setup.sh): it copies MathJax's files into the
    # built site's _static/mathjax/, and the pages load it from there, not from a CDN.
    "sphinx-mathjax-offline",
]
mathjax_path = "mathjax/tex-chtml.js"  # relative: under _static/ of the built site

# Nitpicky (-n in CI): every reference to a normopt object must resolve. References into
# torch and the standard library are not linked: their inventories (intersphinx) cannot be
# fetched offline, so they are listed here instead of warned about. So are type variables
# and private names (a leading underscore: not part of the documented API).
nitpicky = True
nitpick_ignore_regex = [
    ("py:.*", r"torch(\..+)?"),
    ("py:class", r"Tensor"),  # torch.Tensor, as the signatures annotate it
    ("py:meth", r"state_dict"),  # torch.optim.Optimizer.state_dict, which optimizers inherit
    ("py:.*", r"(collections\.abc|typing|types|numbers|pathlib|enum)\..+"),
    ("py:class", r"normopt\..*\.[A-Z]"),  # a TypeVar (normopt.norms.base.N)
    ("py:.*", r"(.*\.)?_[A-Za-z]\w*"),  # private
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


# ----------------------------------------------------------------------------- cross-references


def _documented(name: str) -> bool:
    """The class is exported by its normopt subpackage (``normopt.norms``, ...) or by
    ``normopt`` itself, so the API reference documents it."""
    parts = name.split(".")
    for package in ("normopt", ".".join(parts[:2])):
        module = importlib.import_module(package)
        if getattr(module, parts[-1], None) is not None:
            return True
    return False


def _public_bases(app: Any, name: str, obj: Any, options: Any, bases: list[type]) -> None:
    """Show a class's nearest documented ancestors: a private or undocumented normopt base
    (``_SliceL2``, ``PolarNorm``) is replaced by its own bases, so that no base names a
    class the reference does not have."""
    out: list[type] = []
    todo = list(bases)
    while todo:
        base = todo.pop(0)
        module = getattr(base, "__module__", "")
        if module.startswith("normopt.") and not (
            not base.__name__.startswith("_") and _documented(f"{module}.{base.__name__}")
        ):
            todo[:0] = [b for b in base.__bases__ if b is not object]
            continue
        if base not in out:
            out.append(base)
    bases[:] = out or [object]


def _resolve_short_names(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """A Python reference written with a short name (``describe``, ``Norm.rho``,
    ``SCHEDULES``) that Sphinx could not resolve from the current module: link it when
    exactly one documented normopt object has that name (or all candidates are one object
    under several names)."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target or target.startswith(("normopt.", "torch.", "_")):
        return None
    domain = env.get_domain("py")
    matches = [
        (full, obj)
        for full, obj in domain.objects.items()
        if full.startswith("normopt.") and (full == target or full.endswith("." + target))
    ]
    canonical = {obj.docname + "#" + obj.node_id for _, obj in matches}
    if len(canonical) != 1:
        return None
    full, obj = matches[0]
    from sphinx.util.nodes import make_refnode

    return make_refnode(app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, full)


def _viewcode_anchors(app: Any, doctree: Any, docname: str) -> None:
    """Fix viewcode's ``[docs]`` links. viewcode links every object of one source module to
    ``<page>#<prefix>.<name>``, with the module prefix under which the *first* object of that
    source module was documented: the functions of ``optim/routing.py`` are documented as
    ``normopt.describe`` but its ``Route`` as ``normopt.optim.routing.Route``, so the link to
    ``Route`` pointed at ``#normopt.Route``, which does not exist. Each documented object
    also gets the anchor that viewcode will link to."""
    from sphinx import addnodes

    modules = getattr(app.env, "_viewcode_modules", {})
    for sig in doctree.findall(addnodes.desc_signature):
        module, fullname = sig.get("module"), sig.get("fullname")
        if not module or not fullname or not module.startswith("normopt"):
            continue
        try:
            obj: Any = importlib.import_module(module)
            for part in fullname.split("."):
                obj = getattr(obj, part)
            source = inspect.getmodule(obj)
        except (AttributeError, ImportError):
            continue
        entry = modules.get(source.__name__) if source else None
        if not entry:
            continue
        anchor = f"{entry[3]}.{fullname}"
        if anchor not in sig["ids"]:
            sig["ids"].append(anchor)


def setup(app: Any) -> None:
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("missing-reference", _resolve_short_names)
    app.connect("doctree-resolved", _viewcode_anchors)
