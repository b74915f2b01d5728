"""Imports point down the layer list of DESIGN.md, never up, in every form.

The checker reads every module of ``src/normopt`` with :mod:`ast` and resolves each import to
the module it loads: ``import a.b``, ``from a import b`` (``b`` a submodule or a name),
relative imports (``from . import x``, ``from ..kernels import y``), imports inside functions
and under ``TYPE_CHECKING``, and the module names that ``importlib.import_module`` loads
(string literals in the file that calls it, as in ``cli.py``). Every top-level package and
module has a rank; the tests below plant upward imports in a scratch tree to show that the
checker catches each form.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "normopt"

# Lower rank = lower layer; a module may import its own layer and the layers below it.
# DESIGN.md lists the same order top down. "__init__" is the public API (normopt/__init__.py,
# reached by `import normopt` or `from normopt import Muon`): it re-exports linalg, norms,
# optim and theory, and the harness and the commands build on it.
RANK = {
    "_checks": 0,  # argument validation, under every layer (test_checks_is_the_bottom)
    "linalg": 1,  # references: SVD polar, Newton-Schulz schedules, power iteration
    "kernels": 2,  # fast paths of the polar iteration, beside linalg's references
    "norms": 3,  # the catalog; dualize reaches U V^T through kernels.polar
    # the collectives of a step (owners, all-to-all of shards, one skip decision); knows
    # no optimizer, and optim's step calls it (DESIGN.md lists it above optim: see the note)
    "distributed": 4,
    "optim": 5,  # optimizers, the step engine, routing
    "theory": 6,  # constants, estimators, monitors
    "__init__": 7,  # the public API
    "commands": 8,  # `normopt norms`, `normopt theory`
    "experiments": 9,  # the harness
    "cli": 10,  # the `normopt` command: loads commands and the harness by name
}
# Upward imports allowed only inside a function (looked up on use, never at import time):
# none today (optim imports distributed, the layer below it, at the top).
LAZY_UP: set[tuple[str, str]] = set()
MODULE_NAME = re.compile(r"normopt(\.[A-Za-z_][A-Za-z0-9_]*)+")


@dataclass(frozen=True)
class Edge:
    source: str  # dotted module that imports
    target: str  # dotted module it loads
    line: int
    lazy: bool  # inside a function body


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(root: Path, dotted: str) -> bool:
    rel = Path(*dotted.split(".")[1:]) if "." in dotted else Path()
    return (root / rel / "__init__.py").is_file()


def _is_module(root: Path, dotted: str) -> bool:
    if dotted == root.name:
        return True
    if not dotted.startswith(root.name + "."):
        return False
    rel = Path(*dotted.split(".")[1:])
    return (root / rel / "__init__.py").is_file() or (root / rel).with_suffix(".py").is_file()


def _resolve_relative(source: str, is_package: bool, level: int, module: str | None) -> str:
    package = source.split(".") if is_package else source.split(".")[:-1]
    if level > len(package):
        raise ValueError(f"{source}: relative import beyond the top-level package")
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _lazy_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes and calls inside a function body (lazy imports)."""
    lazy: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom | ast.Call):
                    lazy.add(id(inner))
    return lazy


def _calls_import_module(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name in ("import_module", "__import__"):
                return True
    return False


def edges(root: Path, path: Path) -> list[Edge]:
    """Every normopt module that ``path`` loads, with the line and whether it is lazy."""
    top = root.name
    source = module_name(root, path)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    lazy = _lazy_nodes(tree)
    out: list[Edge] = []

    def add(target: str, node: ast.AST) -> None:
        if target == top or target.startswith(top + "."):
            out.append(Edge(source, target, getattr(node, "lineno", 0), id(node) in lazy))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(source, is_pkg, node.level, node.module)
            else:
                base = node.module or ""
            for alias in node.names:
                # `from pkg import sub` loads the submodule; `from pkg import name` loads pkg
                sub = f"{base}.{alias.name}"
                add(sub if _is_module(root, sub) else base, node)
    if _calls_import_module(tree):
        # the names importlib loads: every string literal in this file that is a dotted
        # normopt module name (one that names no module is reported by violations())
        for node in ast.walk(tree):
            literal = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if literal and MODULE_NAME.fullmatch(node.value):
                add(node.value, node)
    return out


def layer_of(dotted: str) -> str:
    parts = dotted.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def violations(root: Path) -> list[str]:
    """Every import in ``root``'s tree that points up or sideways, or reaches an unranked layer."""
    bad: list[str] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        source_layer = (
            "__init__" if rel == Path("__init__.py") else rel.parts[0].removesuffix(".py")
        )
        if source_layer not in RANK:
            bad.append(f"{rel}: layer {source_layer!r} has no rank in RANK")
            continue
        for e in edges(root, path):
            target_layer = layer_of(e.target)
            if not _is_module(root, e.target):
                bad.append(f"{rel}:{e.line} imports {e.target}, which is no module of the tree")
                continue
            if target_layer not in RANK:
                bad.append(f"{rel}:{e.line} imports {e.target}, a layer with no rank")
                continue
            down = target_layer == source_layer or RANK[target_layer] < RANK[source_layer]
            if not down and not (e.lazy and (source_layer, target_layer) in LAZY_UP):
                bad.append(
                    f"{rel}:{e.line} imports {e.target}: {target_layer} (rank "
                    f"{RANK[target_layer]}) is not below {source_layer} (rank {RANK[source_layer]})"
                )
    return bad


def cycles(root: Path) -> list[list[str]]:
    """Import circles between modules, counting lazy imports (a circle hidden in a function
    is still two modules that need each other)."""
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        src = module_name(root, path)
        targets = graph.setdefault(src, set())
        for e in edges(root, path):
            # a package's __init__ re-exports its modules; an edge into a package is the
            # re-export, not a dependency of the modules inside on each other
            if e.target != src and not (
                _is_package(root, e.target) and src.startswith(e.target + ".")
            ):
                targets.add(e.target)
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


# -- the tree as it is -----------------------------------------------------------------


def test_every_layer_is_ranked():
    layers = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    layers |= {p.stem for p in SRC.glob("*.py")}
    assert layers <= set(RANK), sorted(layers - set(RANK))


def test_imports_point_down():
    assert violations(SRC) == []


def test_no_import_cycles():
    assert cycles(SRC) == []


def test_checks_is_the_bottom():
    """_checks imports torch and the standard library only: no normopt, in any form."""
    tree = ast.parse((SRC / "_checks.py").read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, "_checks.py has a relative import"
            roots.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
    assert roots <= {"torch", *sys.stdlib_module_names}, sorted(roots)


def test_cli_loads_what_it_names():
    """The command modules cli.py loads by name are seen by the checker."""
    targets = {e.target for e in edges(SRC, SRC / "cli.py")}
    assert {"normopt.commands.norms", "normopt.experiments.cli"} <= targets


# -- planted imports: the checker fails on each form -----------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "normopt"
    base = {
        "__init__.py": "",
        "_checks.py": "",
        "cli.py": "",
        "linalg/__init__.py": "",
        "kernels/__init__.py": "",
        "norms/__init__.py": "",
        "optim/__init__.py": "",
        "optim/base.py": "",
        "distributed/__init__.py": "",
        "commands/__init__.py": "",
        "commands/norms.py": "",
        "experiments/__init__.py": "",
        "experiments/compare.py": "",
    }
    for rel, text in {**base, **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


UPWARD = {
    "from_import_package": "from normopt import experiments\n",
    "import_dotted": "import normopt.experiments.compare\n",
    "import_root": "import normopt\n",
    "from_root_name": "from normopt import Muon\n",
    "from_module_name": "from normopt.experiments.compare import run\n",
    "relative_package": "from .. import experiments\n",
    "relative_module": "from ..experiments import compare\n",
    "lazy_in_function": "def f():\n    from normopt import commands\n",
    "type_checking": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import normopt.commands\n",
    "theory_at_top": "from normopt.theory import x\n",
    "import_module": "import importlib\ndef f():\n    importlib.import_module('normopt.experiments.compare')\n",
}


@pytest.mark.parametrize("source", sorted(UPWARD))
def test_planted_upward_import_fails(tmp_path, source):
    root = _tree(tmp_path, {"optim/planted.py": UPWARD[source]})
    bad = violations(root)
    assert len(bad) == 1 and bad[0].startswith("optim/planted.py:"), bad


def test_planted_sideways_import_fails(tmp_path):
    """theory and distributed are not one layer: theory may use distributed, not the reverse."""
    root = _tree(
        tmp_path, {"theory/__init__.py": "", "distributed/x.py": "import normopt.theory\n"}
    )
    assert len(violations(root)) == 1


def test_planted_unranked_layer_fails(tmp_path):
    root = _tree(tmp_path, {"extras/__init__.py": "from normopt import optim\n"})
    assert violations(root) == ["extras/__init__.py: layer 'extras' has no rank in RANK"]


def test_cli_strings_are_checked(tmp_path):
    """A module name that cli.py hands to importlib counts as an import of that module."""
    cli = "import importlib\nMODS = ('normopt.commands.norms',)\n"
    cli += "def main():\n    for m in MODS:\n        importlib.import_module(m)\n"
    root = _tree(tmp_path, {"cli.py": cli})
    assert [e.target for e in edges(root, root / "cli.py")] == ["normopt.commands.norms"]
    # and the same line in a lower layer is an upward import
    root = _tree(tmp_path / "low", {"norms/loader.py": cli})
    assert len(violations(root)) == 1


def test_cli_string_naming_no_module_fails(tmp_path):
    cli = "import importlib\nMODS = ('normopt.commands.nrms',)\n"
    cli += "def main():\n    for m in MODS:\n        importlib.import_module(m)\n"
    root = _tree(tmp_path, {"cli.py": cli})
    assert violations(root) == [
        "cli.py:2 imports normopt.commands.nrms, which is no module of the tree"
    ]


def test_downward_and_allowed_lazy_imports_pass(tmp_path):
    files = {
        "optim/base.py": "from normopt import kernels\nfrom . import moves\nimport normopt.norms\n",
        "optim/moves.py": "from normopt._checks import x\n",
        "optim/lazy.py": "def f():\n    from normopt.distributed import owners\n",
        "distributed/owners.py": "from normopt.kernels import x\n",
        "experiments/compare.py": "import normopt\nfrom normopt import Muon\n",
    }
    assert violations(_tree(tmp_path, files)) == []


def test_planted_cycle_is_found(tmp_path):
    files = {
        "kernels/a.py": "from normopt.kernels.b import f\n",
        "kernels/b.py": "def f():\n    from normopt.kernels import a\n",
    }
    assert cycles(_tree(tmp_path, files)) == [
        ["normopt.kernels.a", "normopt.kernels.b", "normopt.kernels.a"]
    ]


@pytest.mark.parametrize(
    "line",
    [
        "from normopt import experiments",
        "import normopt.commands.norms",
        "from .. import theory",
        "def _later():\n    from normopt.experiments import compare",
    ],
)
def test_planted_in_a_copy_of_the_real_tree(tmp_path, line):
    """The real tree, with one upward import added to optim/base.py: exactly that one fails."""
    import shutil

    root = tmp_path / "normopt"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    base = root / "optim" / "base.py"
    base.write_text(base.read_text() + "\n" + line + "\n")
    bad = violations(root)
    assert len(bad) == 1 and bad[0].startswith("optim/base.py:"), bad
