"""Imports point down the layer list of DESIGN.md, never up."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "normopt"
# Lower index = lower layer. A module may import its own layer and those below.
# linalg < kernels < norms < optim: kernels' references are linalg's own functions, and a
# norm's dualize reaches U V^T through kernels.polar, the one polar entry point (linalg's
# reference behind it, the fast paths beside it). DESIGN.md lists the layers top down.
RANK = {
    "_checks": -1,  # argument validation: a module under every layer (test_checks_is_the_bottom)
    "linalg": 0,
    "kernels": 1,
    "norms": 2,
    # distributed: the collectives of a step (owners, all-to-all of shards, one skip
    # decision); knows no optimizer, and optim's step calls it
    "distributed": 3,
    "optim": 4,
    "theory": 5,
    "experiments": 6,
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("normopt."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("normopt."):
                    out.add(a.name.split(".")[1])
    return out


@pytest.mark.parametrize("layer", [name for name in RANK if (SRC / name).is_dir()])
def test_imports_point_down(layer):
    for path in (SRC / layer).rglob("*.py"):
        for target in _imports(path):
            if target in RANK and target != layer:
                assert RANK[target] < RANK[layer], (
                    f"{path.relative_to(SRC)} imports normopt.{target}, a layer above or beside it"
                )


def test_package_never_imports_experiments():
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if rel.parts[0] in ("experiments", "commands") or rel.name == "cli.py":
            continue
        assert "experiments" not in _imports(path), f"{rel} imports normopt.experiments"


def test_checks_is_the_bottom():
    """_checks imports torch and the standard library only: no normopt, in any form."""
    import sys

    tree = ast.parse((SRC / "_checks.py").read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, "_checks.py has a relative import"
            roots.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
    assert roots <= {"torch", *sys.stdlib_module_names}, sorted(roots)
