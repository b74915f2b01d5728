"""The documentation's generated pieces stay in step with the code.

``docs/routing_table.md`` is written by ``docs/gen_routing.py`` from ``normopt.classify``,
``normopt.Muon(model)`` and ``normopt.param_groups(model, preset="modular")`` on Hugging
Face models built from tiny configs; the committed table must equal what the generator
produces now, so a change to the routing shows up as a failing test until the table is
regenerated (``python3 docs/gen_routing.py``). The Sphinx build itself runs in ``.ci/run``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # Hugging Face models built from configs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_routing", DOCS / "gen_routing.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_routing_table_is_current() -> None:
    pytest.importorskip("transformers")
    committed = (DOCS / "routing_table.md").read_text()
    assert committed == _generator().render(), (
        "docs/routing_table.md is stale: run python3 docs/gen_routing.py and commit it"
    )


def test_routing_table_covers_the_models() -> None:
    text = (DOCS / "routing_table.md").read_text()
    for model in ("GPT-2", "Llama", "BERT", "ViT", "T5", "Mixtral"):
        assert f"\n## {model}\n" in text
    # the layouts the routing must get right on them, as they appear in the table
    assert "| `transformer.h.0.attn.c_attn.weight` | 32 x 96 | qkv | muon | 3 x (32 x 32) |" in text
    assert "| experts | muon |" in text  # Mixtral's expert stacks get Muon, per expert
    assert "| router | adamw |" in text  # and its router AdamW


def test_figures_and_pages_exist() -> None:
    for png in ("digits_loss_vs_step.png", "digits_loss_vs_time.png", "digits_sweep.png"):
        assert (DOCS / "_static" / png).stat().st_size > 0, png
    guide = (DOCS / "guide.md").read_text()
    for png in ("digits_loss_vs_step.png", "digits_loss_vs_time.png", "digits_sweep.png"):
        assert f"_static/{png}" in guide
