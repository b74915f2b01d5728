"""Routing on real architectures: Hugging Face models built from tiny configs (random
init, nothing downloaded) and torchvision/timm-style models written here.

For every tensor that matters: its role (``normopt.classify``), the algorithm and the
split/orientation keys of the group ``normopt.Muon(model)`` puts it in, and the shape
scale that optimizer really applies (``opt.lr_scale``); then one step runs, skips nothing
and moves every Muon matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import hf_tiny  # tests/optim: the tiny configs, shared with docs/gen_routing.py
import pytest
import torch
from torch import nn

import normopt

pytestmark = pytest.mark.integration  # Hugging Face models built from configs

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

S2 = math.sqrt(2.0)

# name suffix -> (role, algorithm, split, transposed, lr scale); the first name that
# ends with the suffix is checked
Expect = dict[str, tuple[str, str, int, bool, float]]


def _lm_batch(model: nn.Module) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "labels": ids}


def _gpt_oss() -> nn.Module:
    if not hasattr(transformers, "GptOssConfig"):
        pytest.skip("this transformers has no GPT-OSS")
    return hf_tiny.tiny(
        "GptOssForCausalLM",
        "GptOssConfig",
        **hf_tiny.GQA,
        head_dim=8,
        num_local_experts=4,
        num_experts_per_tok=2,
    )()


def _cls_batch(model: nn.Module) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "labels": torch.tensor([0, 2])}


def _image_batch(model: nn.Module) -> dict[str, torch.Tensor]:
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return {"pixel_values": x, "labels": torch.tensor([0, 2])}


HF: dict[str, tuple[Callable[[], nn.Module], Callable[[nn.Module], dict[str, Any]], Expect]] = {
    "gpt2": (
        hf_tiny.gpt2,
        _lm_batch,
        {
            "wte.weight": ("embedding", "adamw", 1, False, 1.0),  # tied to lm_head
            "attn.c_attn.weight": ("qkv", "muon", 3, True, 1.0),  # (d, 3d): q|k|v along dim 1
            "attn.c_proj.weight": ("hidden", "muon", 1, True, 1.0),
            "mlp.c_fc.weight": ("hidden", "muon", 1, True, 2.0),  # (d, 4d) is d_out = 4d
            "mlp.c_proj.weight": ("hidden", "muon", 1, True, 1.0),  # (4d, d) is d_out = d
            "ln_1.weight": ("gain", "adamw", 1, False, 1.0),
            "c_attn.bias": ("bias", "adamw", 1, False, 1.0),
        },
    ),
    "llama": (
        hf_tiny.llama,
        _lm_batch,
        {
            "embed_tokens.weight": ("embedding", "adamw", 1, False, 1.0),
            "q_proj.weight": ("hidden", "muon", 1, False, 1.0),
            "k_proj.weight": ("hidden", "muon", 1, False, 1.0),
            "gate_proj.weight": ("hidden", "muon", 1, False, S2),
            "down_proj.weight": ("hidden", "muon", 1, False, 1.0),
            "input_layernorm.weight": ("gain", "adamw", 1, False, 1.0),
            "lm_head.weight": ("head", "adamw", 1, False, 1.0),
        },
    ),
    "bert": (
        hf_tiny.bert,
        _cls_batch,
        {
            "word_embeddings.weight": ("embedding", "adamw", 1, False, 1.0),
            "attention.self.query.weight": ("hidden", "muon", 1, False, 1.0),
            "intermediate.dense.weight": ("hidden", "muon", 1, False, S2),
            "pooler.dense.weight": ("hidden", "muon", 1, False, 1.0),
            "classifier.weight": ("head", "adamw", 1, False, 1.0),
            "embeddings.LayerNorm.weight": ("gain", "adamw", 1, False, 1.0),
        },
    ),
    "vit": (
        hf_tiny.vit,
        _image_batch,
        {
            "cls_token": ("token", "adamw", 1, False, 1.0),  # (1, 1, d): not an expert stack
            "embeddings.position_embeddings": ("token", "adamw", 1, False, 1.0),
            "patch_embeddings.projection.weight": ("conv", "muon", 1, False, 1.0),
            "fc1.weight": ("hidden", "muon", 1, False, S2),
            "classifier.weight": ("head", "adamw", 1, False, 1.0),
        },
    ),
    "t5": (
        hf_tiny.t5,
        _lm_batch,
        {
            "shared.weight": ("embedding", "adamw", 1, False, 1.0),
            "relative_attention_bias.weight": ("embedding", "adamw", 1, False, 1.0),
            "SelfAttention.q.weight": ("hidden", "muon", 1, False, 1.0),
            "DenseReluDense.wi.weight": ("hidden", "muon", 1, False, S2),
            "layer.0.layer_norm.weight": ("gain", "adamw", 1, False, 1.0),
        },
    ),
    "mixtral": (
        hf_tiny.mixtral,
        _lm_batch,
        {
            "mlp.gate.weight": ("router", "adamw", 1, False, 1.0),
            "experts.gate_up_proj": ("experts", "muon", 1, False, 2.0),  # (E, 2I, d)
            "experts.down_proj": ("experts", "muon", 1, False, 1.0),  # (E, d, I)
            "lm_head.weight": ("head", "adamw", 1, False, 1.0),
        },
    ),
    "qwen2_moe": (
        hf_tiny.qwen2_moe,
        _lm_batch,
        {
            "mlp.gate.weight": ("router", "adamw", 1, False, 1.0),
            "shared_expert_gate.weight": ("router", "adamw", 1, False, 1.0),  # (1, d)
            "experts.gate_up_proj": ("experts", "muon", 1, False, 1.0),  # (E, 2 * 16, 32)
            "experts.down_proj": ("experts", "muon", 1, False, S2),  # (E, 32, 16)
            "shared_expert.gate_proj.weight": ("hidden", "muon", 1, False, math.sqrt(1.5)),
            "q_proj.bias": ("bias", "adamw", 1, False, 1.0),
        },
    ),
    "gpt_oss": (
        _gpt_oss,
        _lm_batch,
        {
            "self_attn.sinks": ("bias", "adamw", 1, False, 1.0),
            "mlp.router.weight": ("router", "adamw", 1, False, 1.0),
            "experts.gate_up_proj": ("experts", "muon", 1, True, 2.0),  # (E, d, 2I)
            "experts.gate_up_proj_bias": ("bias", "adamw", 1, False, 1.0),  # (E, 2I)
            "experts.down_proj": ("experts", "muon", 1, True, 1.0),  # (E, I, d)
            "experts.down_proj_bias": ("bias", "adamw", 1, False, 1.0),
        },
    ),
    "gpt_neox": (
        hf_tiny.gpt_neox,
        _lm_batch,
        {
            # rows interleaved per head (q_h, k_h, v_h): one piece per head's q, k, v
            "query_key_value.weight": ("qkv", "muon", 12, False, 1.0),
            "dense_h_to_4h.weight": ("hidden", "muon", 1, False, S2),
            "embed_in.weight": ("embedding", "adamw", 1, False, 1.0),
        },
    ),
    "phi3": (
        hf_tiny.phi3,
        _lm_batch,
        {
            # q (4 heads) | k (2) | v (2) of head_dim 8: unequal, so one piece per head
            "qkv_proj.weight": ("qkv", "muon", 8, False, 1.0),
            "gate_up_proj.weight": ("hidden", "muon", 1, False, 2.0),
        },
    ),
}


# -- torchvision/timm-style models, written here ----------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    """torchvision's ResNet layout: 7x7 stem, blocks, global pool, one Linear ``fc``."""

    def __init__(self, c: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, c, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.layer1 = nn.Sequential(BasicBlock(c))
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


class MobileNetBlock(nn.Module):
    """Depthwise 3x3 then pointwise 1x1 (MobileNet), and a grouped 3x3 (ResNeXt)."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.pw = nn.Conv2d(c, 2 * c, 1, bias=False)
        self.grouped = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2, bias=False)
        self.bn = nn.BatchNorm2d(2 * c)
        self.classifier = nn.Linear(2 * c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.grouped(self.pw(self.dw(self.stem(x))))))
        return self.classifier(x.mean((2, 3)))


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pwconv1 = nn.Linear(c, 4 * c)
        self.pwconv2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pwconv2(torch.nn.functional.gelu(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Head(nn.Module):
    def __init__(self, c: int, classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c)
        self.fc = nn.Linear(c, classes)


class ConvNeXt(nn.Module):
    """timm's ConvNeXt layout: patchify stem (4x4 stride 4), blocks, ``head.fc``."""

    def __init__(self, c: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 4, stride=4)
        self.stages = nn.Sequential(ConvNeXtBlock(c))
        self.head = Head(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x)).mean((2, 3))
        return self.head.fc(self.head.norm(x))


class Attention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, T, d))


class TimmViT(nn.Module):
    """timm's VisionTransformer layout: patch_embed.proj, cls_token, pos_embed, attn.qkv."""

    def __init__(self, d: int = 16, heads: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, d, 8, stride=8)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.randn(1, 5, d) * 0.02)
        self.norm1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (B, 4, d)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        x = x + self.attn(self.norm1(x))
        return self.head(self.norm(x)[:, 0])


def _images(model: nn.Module) -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


CNN: dict[str, tuple[Callable[[], nn.Module], Expect]] = {
    "resnet": (
        ResNet,
        {
            "conv1.weight": ("conv", "muon", 1, False, 1.0),  # the stem: Muon (dense input)
            "layer1.0.conv1.weight": ("conv", "muon", 1, False, 1.0),
            "bn1.weight": ("gain", "adamw", 1, False, 1.0),
            "fc.weight": ("head", "adamw", 1, False, 1.0),  # the only Linear is the head
        },
    ),
    "mobilenet": (
        MobileNetBlock,
        {
            "dw.weight": ("conv", "adamw", 1, False, 1.0),  # depthwise: 8 vectors (AdamW)
            "pw.weight": ("conv", "muon", 1, False, S2),  # (16, 8)
            "grouped.weight": ("conv", "muon", 2, False, 1.0),  # 2 x (8, 8 * 9)
            "classifier.weight": ("head", "adamw", 1, False, 1.0),
        },
    ),
    "convnext": (
        ConvNeXt,
        {
            "stem.weight": ("conv", "muon", 1, False, 1.0),
            "dwconv.weight": ("conv", "adamw", 1, False, 1.0),  # depthwise
            "pwconv1.weight": ("hidden", "muon", 1, False, 2.0),
            "gamma": ("bias", "adamw", 1, False, 1.0),
            "head.fc.weight": ("head", "adamw", 1, False, 1.0),
        },
    ),
    "timm_vit": (
        TimmViT,
        {
            "patch_embed.proj.weight": ("conv", "muon", 1, False, 1.0),
            "cls_token": ("token", "adamw", 1, False, 1.0),
            "pos_embed": ("token", "adamw", 1, False, 1.0),
            "attn.qkv.weight": ("qkv", "muon", 3, False, 1.0),
            "attn.proj.weight": ("hidden", "muon", 1, False, 1.0),
            "head.weight": ("head", "adamw", 1, False, 1.0),
        },
    ),
}


def _check(model: nn.Module, expect: Expect) -> normopt.Muon:
    routes = {r.name: r for r in normopt.classify(model)}
    opt = normopt.Muon(model)
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    for suffix, (role, algorithm, split, transposed, scale) in expect.items():
        name = next((n for n in routes if n.endswith(suffix)), None)
        assert name is not None, f"no parameter ends with {suffix!r}: {sorted(routes)}"
        r, g = routes[name], group_of[id(params[name])]
        got = (r.role, g["algorithm"], g.get("split", 1), g.get("transposed", False))
        assert got == (role, algorithm, split, transposed), name
        assert opt.lr_scale(params[name]) == pytest.approx(scale), name
    return opt


def _step(model: nn.Module, opt: Any, loss_fn: Callable[[], torch.Tensor]) -> None:
    # the matrices a Muon group (or a steepest-descent group: no algorithm key) moves
    muon = [
        p for g in opt.param_groups if g.get("algorithm", "muon") == "muon" for p in g["params"]
    ]
    before = [p.detach().clone() for p in muon]
    loss_fn().backward()
    opt.step()
    assert int(opt.skipped_steps) == 0
    moved = [not torch.equal(b, p.detach()) for b, p in zip(before, muon) if p.grad is not None]
    assert moved and all(moved)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("arch", list(HF))
def test_hugging_face_models_are_routed_and_step(arch):
    torch.manual_seed(0)
    make, batch, expect = HF[arch]
    model = make()
    opt = _check(model, expect)
    _step(model, opt, lambda: model(**batch(model)).loss)


@pytest.mark.parametrize("arch", list(CNN))
def test_vision_models_are_routed_and_step(arch):
    torch.manual_seed(0)
    make, expect = CNN[arch]
    model = make()
    opt = _check(model, expect)
    _step(model, opt, lambda: model(_images(model)).square().mean())


def test_depthwise_convs_are_vectors_per_group():
    (dw,) = [r for r in normopt.classify(MobileNetBlock()) if r.name == "dw.weight"]
    assert (dw.split, dw.matrix) == (8, (1, 9))  # 8 groups of one (1 x 3*3) filter each
    text = normopt.describe(MobileNetBlock())
    assert "a vector in disguise" in next(line for line in text.splitlines() if "dw.weight" in line)


def test_harness_gpt_splits_its_fused_qkv():
    from normopt.experiments.models import GPT

    model = GPT(vocab=32, block_size=8, n_layer=1, d=16, n_head=2)
    name = next(n for n, _ in model.named_parameters() if n.endswith("attn.qkv.weight"))
    _check(model, {name: ("qkv", "muon", 3, False, 1.0)})


def test_gpt2_describe_shows_orientation_splits_and_the_real_scale():
    model = hf_tiny.gpt2()
    text = normopt.describe(model, optimizer=normopt.Muon(model))
    row = {line.split()[0]: line for line in text.splitlines()[2:] if line.strip()}
    c_fc = row["transformer.h.0.mlp.c_fc.weight"]
    assert "(128x32)" in c_fc and "stored (d_in, d_out)" in c_fc and " 2 " in c_fc
    c_attn = row["transformer.h.0.attn.c_attn.weight"]
    assert "3x(32x32)" in c_attn and "split into 3 along dim 1" in c_attn
    gate_up = normopt.describe(_gpt_oss())
    assert "4x(128x32)" in gate_up


def test_split_rules_name_the_axis_and_split_each_expert():
    model = hf_tiny.mixtral()
    rules: dict[str, Any] = {r"experts\.gate_up_proj$": 2}  # gate | up, per expert
    r = next(
        r for r in normopt.classify(model, split_rules=rules) if r.name.endswith("gate_up_proj")
    )
    assert (r.role, r.batch_dims, r.split, r.matrix) == ("experts", 1, 2, (64, 32))
    opt = normopt.Muon(normopt.param_groups(model, split_rules=rules))
    _step(model, opt, lambda: model(**_lm_batch(model)).loss)
    with pytest.raises(ValueError, match="expert dim"):
        normopt.classify(model, split_rules={r"experts\.gate_up_proj$": (2, 0)})
    with pytest.raises(ValueError, match="input dim"):
        normopt.classify(model, split_rules={r"experts\.gate_up_proj$": (2, 2)})

    gpt2 = hf_tiny.gpt2()
    ok = normopt.classify(gpt2, split_rules={r"c_attn\.weight$": (3, 1)})
    assert next(r for r in ok if r.name.endswith("c_attn.weight")).split == 3
    with pytest.raises(ValueError, match="input dim"):
        normopt.classify(gpt2, split_rules={r"c_attn\.weight$": (3, 0)})

    class Raw(nn.Module):  # a (d_in, 3 d_out) parameter used as x @ W: the axis says so
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(8, 24))

    (raw,) = normopt.classify(Raw(), split_rules={r"^w$": (3, 1)})
    assert (raw.role, raw.split, raw.transposed, raw.matrix) == ("qkv", 3, True, (8, 8))


def test_modular_preset_honours_orientation():
    model = hf_tiny.gpt2()
    groups = normopt.param_groups(model, preset="modular")
    c_fc = next(g for g in groups if any(n.endswith("c_fc.weight") for n, _ in g["params"]))
    assert c_fc["transposed"] is True
    opt = normopt.SteepestDescent(groups, norm=normopt.norms.L2(), lr=0.01, normalized=True)
    _step(model, opt, lambda: model(**_lm_batch(model)).loss)
