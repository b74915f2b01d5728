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


def _check_site():
    spec = importlib.util.spec_from_file_location("check_site", DOCS / "check_site.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_site_check_catches_a_cdn_and_a_broken_anchor(tmp_path) -> None:
    """docs/check_site.py (run on the built site in .ci/run) fails a page that loads MathJax
    from a CDN and a link to an anchor that does not exist."""
    check = _check_site()
    mathjax = tmp_path / "_static" / "mathjax"
    (mathjax / "output" / "chtml" / "fonts" / "woff-v2").mkdir(parents=True)
    for name in ("tex-chtml.js", "startup.js"):
        (mathjax / name).write_text("")
    page = '<span class="math">\\(x\\)</span><script src="{src}"></script><a href="#{a}">x</a>'
    (tmp_path / "index.html").write_text(
        page.format(src="_static/mathjax/tex-chtml.js", a="top") + '<p id="top"></p>'
    )
    assert check.check_math(tmp_path) == ([], 1)
    assert check.check_links(tmp_path) == ([], 1)
    (tmp_path / "guide.html").write_text(
        page.format(src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js", a="gone")
    )
    problems, _ = check.check_math(tmp_path)
    assert len(problems) == 1 and "cdn.jsdelivr.net" in problems[0]
    problems, _ = check.check_links(tmp_path)
    assert len(problems) == 1 and problems[0].startswith("guide.html") and "#gone" in problems[0]
