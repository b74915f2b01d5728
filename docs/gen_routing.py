"""Write docs/routing_table.md: how normopt routes the tensors of common models.

Each model is a Hugging Face ``transformers`` architecture built from a tiny config (one
layer, width 32; random init, nothing downloaded). For every trainable tensor the table
gives what ``normopt.classify`` decides (role, the matrix the optimizer sees, splits,
orientation, ties), what ``normopt.Muon(model)`` really does with it (the ``algorithm`` of
its param group and ``opt.lr_scale(p)``), and the norm that the ``"modular"`` preset of
``normopt.param_groups`` gives it. Shapes scale with the config; the roles, splits and
orientations are those of the full-size models.

    python3 docs/gen_routing.py            # rewrite docs/routing_table.md
    python3 docs/gen_routing.py --check    # exit 1 when the committed table is stale

``tests/test_docs.py`` runs the check, so the table cannot drift from the code.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "routing_table.md"
sys.path.insert(0, str(ROOT / "src"))  # this checkout's normopt, whichever pip installed

import normopt  # noqa: E402


def _models() -> dict[str, tuple[str, Callable[[], nn.Module]]]:
    """name -> (transformers class, builder); the configs of tests/optim/test_routing_architectures.py."""
    import transformers

    transformers.logging.set_verbosity_error()
    t = transformers
    small = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4}
    return {
        "GPT-2": (
            "GPT2LMHeadModel",
            lambda: t.GPT2LMHeadModel(
                t.GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=64, n_positions=16)
            ),
        ),
        "Llama": (
            "LlamaForCausalLM",
            lambda: t.LlamaForCausalLM(
                t.LlamaConfig(num_hidden_layers=1, num_key_value_heads=2, vocab_size=64, **small)
            ),
        ),
        "BERT": (
            "BertForSequenceClassification",
            lambda: t.BertForSequenceClassification(
                t.BertConfig(
                    num_hidden_layers=1,
                    vocab_size=64,
                    max_position_embeddings=16,
                    num_labels=3,
                    **small,
                )
            ),
        ),
        "ViT": (
            "ViTForImageClassification",
            lambda: t.ViTForImageClassification(
                t.ViTConfig(num_hidden_layers=1, image_size=16, patch_size=8, num_labels=3, **small)
            ),
        ),
        "T5": (
            "T5ForConditionalGeneration",
            lambda: t.T5ForConditionalGeneration(
                t.T5Config(
                    num_layers=1,
                    num_decoder_layers=1,
                    d_model=32,
                    d_ff=64,
                    num_heads=4,
                    d_kv=8,
                    vocab_size=64,
                    decoder_start_token_id=0,
                    pad_token_id=0,
                )
            ),
        ),
        "Mixtral": (
            "MixtralForCausalLM",
            lambda: t.MixtralForCausalLM(
                t.MixtralConfig(
                    num_hidden_layers=1,
                    num_key_value_heads=2,
                    vocab_size=64,
                    num_local_experts=4,
                    **small,
                )
            ),
        ),
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if text else ""


def model_table(model: nn.Module) -> list[str]:
    """The markdown rows for one model, from the public routing API."""
    routes = normopt.classify(model)
    opt = normopt.Muon(model)
    params = dict(model.named_parameters())
    algorithm = {id(p): g["algorithm"] for g in opt.param_groups for p in g["params"]}
    modular = {
        id(p): g["norm"]
        for g in normopt.param_groups(model, preset="modular")
        for _, p in g["params"]
    }
    rows = [
        "| parameter | shape | role | `Muon(model)` | matrix | lr scale | modular norm | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in routes:
        p = params[r.name]
        m = r.matrix
        count = math.prod(r.shape[: r.batch_dims]) * r.split
        matrix = "" if not m else (f"{count} x " if count > 1 else "") + f"({m[0]} x {m[1]})"
        notes = []
        if r.tied:
            notes.append("tied: " + ", ".join(f"`{n}`" for n in r.tied))
        if r.split > 1:
            axis = r.batch_dims + (1 if r.transposed else 0)
            notes.append(f"split into {r.split} along dim {axis}")
        if r.batch_dims:
            notes.append(f"batch of {r.shape[0]}")
        notes.extend(r.notes)
        cells = [
            f"`{r.name}`",
            " x ".join(map(str, r.shape)),
            r.role,
            algorithm[id(p)],
            matrix,
            f"{opt.lr_scale(p):.3g}",
            f"`{modular[id(p)]!r}`",
            "; ".join(notes),
        ]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return rows


def render() -> str:
    lines = [
        "<!-- Generated by docs/gen_routing.py; do not edit by hand (tests/test_docs.py checks it). -->",
        "",
        "# Routing table for common models",
        "",
        'How `normopt.Muon(model)` and `normopt.param_groups(model, preset="modular")` route',
        "every trainable tensor of common Hugging Face architectures. Each model is built from",
        "a tiny config (one layer, width 32, nothing downloaded), so the shapes are small, but",
        "the roles, splits and orientations are those of the full-size models. Columns:",
        "",
        "- **role**: what `normopt.classify` decided the tensor is (see {doc}`routing`).",
        "- **`Muon(model)`**: the `algorithm` of the param group `normopt.Muon(model)` puts it in.",
        "- **matrix**: the `(d_out x d_in)` of one element as the optimizer sees it, in its true",
        "  orientation, times the number of elements (experts, split parts).",
        "- **lr scale**: what that optimizer multiplies `lr` by (`opt.lr_scale(p)`, Muon's",
        '  default `adjust_lr="original"`: `sqrt(max(1, d_out/d_in))`).',
        '- **modular norm**: the norm of the `"modular"` preset (modular duality).',
        "",
        "Regenerate with `python3 docs/gen_routing.py`; print the same for your own model with",
        "`print(normopt.describe(model))`.",
    ]
    for name, (cls, build) in _models().items():
        torch.manual_seed(0)
        model = build()
        lines += ["", f"## {name}", "", f"`transformers.{cls}`", "", *model_table(model)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the table is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not TABLE.exists() or TABLE.read_text() != text:
            print(f"{TABLE} is stale: run python3 docs/gen_routing.py", file=sys.stderr)
            return 1
        return 0
    TABLE.write_text(text)
    print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
