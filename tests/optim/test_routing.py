"""normopt.Muon(model) and normopt.describe(model) on real architectures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import normopt
from normopt import norms as N


class TinyGPT(nn.Module):
    def __init__(self, vocab=40, d=32, heads=4, layers=2, ctx=16):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            self.blocks.append(
                nn.ModuleDict(
                    dict(
                        ln1=nn.LayerNorm(d),
                        attn=nn.MultiheadAttention(d, heads, batch_first=True),
                        ln2=nn.LayerNorm(d),
                        fc=nn.Linear(d, 4 * d),
                        proj=nn.Linear(4 * d, d),
                    )
                )
            )
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.tok.weight  # tied

    def forward(self, idx):
        T = idx.shape[1]
        h = self.tok(idx) + self.pos(torch.arange(T))
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
        for b in self.blocks:
            x = b["ln1"](h)
            h = h + b["attn"](x, x, x, attn_mask=mask, need_weights=False)[0]
            h = h + b["proj"](torch.relu(b["fc"](b["ln2"](h))))
        return self.lm_head(self.ln_f(h))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 32)
        self.classifier = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.bn(self.conv1(x))), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.classifier(torch.relu(self.fc(x.flatten(1))))


def _roles(model, **kw):
    return {r.name: r.role for r in normopt.classify(model, **kw)}


def test_transformer_roles():
    roles = _roles(TinyGPT())
    assert roles["tok.weight"] == "embedding"
    assert roles["pos.weight"] == "embedding"
    assert "lm_head.weight" not in roles  # tied: listed once, under the embedding
    assert roles["blocks.0.attn.in_proj_weight"] == "qkv"
    assert roles["blocks.0.attn.out_proj.weight"] == "hidden"
    assert roles["blocks.0.fc.weight"] == "hidden"
    assert roles["blocks.0.ln1.weight"] == "gain"
    assert roles["blocks.0.fc.bias"] == "bias"
    routes = {r.name: r for r in normopt.classify(TinyGPT())}
    assert routes["tok.weight"].tied == ["lm_head.weight"]
    assert routes["blocks.0.attn.in_proj_weight"].split == 3


def test_untied_head_and_cnn_roles():
    m = TinyGPT()
    m.lm_head.weight = nn.Parameter(torch.randn(40, 32))
    assert _roles(m)["lm_head.weight"] == "head"
    roles = _roles(SmallCNN())
    assert roles["conv1.weight"] == "conv"
    assert roles["fc.weight"] == "hidden"
    assert roles["classifier.weight"] == "head"
    assert roles["bn.weight"] == "gain"


def test_experts_split_rules_overrides_and_frozen():
    class MoE(nn.Module):
        def __init__(self):
            super().__init__()
            self.experts = nn.Parameter(torch.randn(4, 16, 8))
            self.qkv = nn.Linear(8, 24)
            self.out = nn.Linear(8, 3)
            self.frozen = nn.Linear(8, 8)
            self.frozen.requires_grad_(False)

    m = MoE()
    routes = {r.name: r for r in normopt.classify(m, split_rules={r"^qkv\.weight$": 3})}
    assert routes["experts"].role == "experts" and routes["experts"].batch_dims == 1
    assert routes["qkv.weight"].role == "qkv" and routes["qkv.weight"].split == 3
    assert "frozen.weight" not in routes
    assert _roles(m, overrides={r"^out\.weight$": "hidden"})["out.weight"] == "hidden"
    with pytest.raises(ValueError, match="split_rules"):
        normopt.classify(m, split_rules={r"^qkv\.weight$": 5})
    with pytest.raises(ValueError, match="overrides"):
        normopt.classify(m, overrides={"x": "nonsense"})
    with pytest.raises(ValueError, match="head"):
        normopt.classify(m, head="nope")


@pytest.mark.parametrize("preset", ["muon", "modular"])
def test_muon_and_modular_train_a_transformer(preset):
    torch.manual_seed(0)
    model = TinyGPT()
    if preset == "muon":
        opt = normopt.Muon(model, lr=0.02, adamw_lr=3e-3)
    else:
        opt = normopt.SteepestDescent(
            normopt.param_groups(model, preset="modular"), norm=N.L2(), lr=0.02, normalized=True
        )
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 40, (8, 17), generator=g)
    data[:, 1::2] = data[:, 0::2][:, : data[:, 1::2].shape[1]]  # learnable: repeat tokens
    losses = []
    for _ in range(30):
        opt.zero_grad()
        logits = model(data[:, :-1])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), data[:, 1:].flatten())
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_muon_on_a_cnn():
    torch.manual_seed(0)
    model = SmallCNN()
    opt = normopt.Muon(model, lr=0.02, adamw_lr=3e-3)
    x = torch.randn(16, 1, 16, 16)
    y = torch.randint(0, 10, (16,))
    first = None
    for _ in range(20):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss.detach())
    assert float(loss.detach()) < 0.5 * first
    kinds = {g["role"]: g["use_muon"] for g in opt.param_groups}
    assert kinds == {"conv": True, "hidden": True, "head": False, "bias": False, "gain": False}


def test_describe_explains_the_routing():
    text = normopt.describe(TinyGPT())
    assert "tied: lm_head.weight" in text
    assert "split into 3" in text
    for word in ("embedding", "qkv", "hidden", "gain", "bias", "muon", "adamw"):
        assert word in text
    modular = normopt.describe(TinyGPT(), preset="modular")
    assert "Transposed(ColumnRMS())" in modular and "RMSToRMS" in modular
    with pytest.raises(ValueError, match="preset"):
        normopt.describe(TinyGPT(), preset="nope")


def test_expert_stacks_are_orthogonalized_per_expert():
    E = nn.Parameter(torch.zeros(3, 6, 4, dtype=torch.float64))
    opt = normopt.Muon(
        [{"params": [E], "use_muon": True, "batch_dims": 1}],
        lr=1.0,
        momentum=0.0,
        nesterov=False,
        polar="svd",
        adjust_lr="none",
    )
    g = torch.randn(3, 6, 4, dtype=torch.float64)
    E.grad = g
    opt.step()
    for i in range(3):
        s = torch.linalg.svdvals(E.detach()[i])
        torch.testing.assert_close(s, torch.ones(4, dtype=torch.float64))


def test_describe_reports_the_scale_the_optimizer_uses():
    """With the optimizer, describe() asks it (Moonlight's 0.2 sqrt(max(d_out, d_in)) here),
    instead of recomputing Jordan's rule from the routing preset."""
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8), nn.Linear(8, 2))
    opt = normopt.Muon(model, adjust_lr="match_rms_adamw")
    rows = {
        line.split()[0]: line.split()
        for line in normopt.describe(model, optimizer=opt).splitlines()[2:]
        if line.strip() and not line.startswith("\n")
    }
    # columns: name shape role optimizer norm... lr-scale decay (no notes on these rows)
    assert rows["0.weight"][3] == "muon" and float(rows["0.weight"][-2]) == pytest.approx(0.8)
    assert float(rows["2.weight"][-2]) == pytest.approx(0.8)
    assert rows["0.bias"][3] == "adamw" and float(rows["0.bias"][-2]) == 1.0
    assert opt.lr_scale(model[0].weight) == pytest.approx(0.2 * 4)
    # without it, the preset's rule (Jordan's)
    plain = normopt.describe(model).splitlines()
    assert float(next(r for r in plain if r.startswith("0.weight")).split()[-2]) == 2.0


class Conv1D(nn.Module):
    """Hugging Face's Conv1D (transformers.pytorch_utils), rebuilt: weight (d_in, d_out)."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return torch.addmm(self.bias, x.view(-1, x.shape[-1]), self.weight).view(
            *x.shape[:-1], self.nf
        )


def test_layouts_without_transformers():
    """Conv1D is read transposed (c_attn split along its last dim), a lone Linear after
    convs is the head, a lone Linear model is not, raw (1, n, d) tables are tokens, and
    experts without is_transposed are oriented by their module's hidden size."""

    class Attn(nn.Module):
        def __init__(self, d=8):
            super().__init__()
            self.embed_dim = d
            self.c_attn, self.c_fc = Conv1D(3 * d, d), Conv1D(4 * d, d)

    class Experts(nn.Module):
        def __init__(self, E=3, d=8, inner=16):
            super().__init__()
            self.hidden_size = d
            self.gate_up_proj = nn.Parameter(torch.randn(E, d, 2 * inner))  # (E, d_in, d_out)
            self.down_proj = nn.Parameter(torch.randn(E, inner, d))
            self.down_proj_bias = nn.Parameter(torch.zeros(E, d))

    class Router(nn.Module):  # a module named like a router (Mixtral's MixtralTopKRouter)
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(3, 8))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
            self.attn, self.experts, self.router = Attn(), Experts(), Router()

    routes = {r.name: r for r in normopt.classify(Model())}
    c_attn = routes["attn.c_attn.weight"]
    assert (c_attn.role, c_attn.split, c_attn.transposed, c_attn.matrix) == ("qkv", 3, True, (8, 8))
    assert routes["attn.c_fc.weight"].matrix == (32, 8)
    assert routes["cls_token"].role == "token"
    gate_up, down = routes["experts.gate_up_proj"], routes["experts.down_proj"]
    assert (gate_up.role, gate_up.transposed, gate_up.matrix) == ("experts", True, (32, 8))
    assert (down.transposed, down.matrix) == (True, (8, 16))
    assert routes["experts.down_proj_bias"].role == "bias"
    assert routes["router.weight"].role == "router"
    opt = normopt.Muon(Model())
    scales = {
        n: opt.lr_scale(p) for g in opt.param_groups for n, p in zip(g["param_names"], g["params"])
    }
    assert scales["attn.c_fc.weight"] == 2.0 and scales["experts.gate_up_proj"] == 2.0

    resnet = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    assert _roles(resnet)["2.weight"] == "head"
    assert _roles(nn.Sequential(nn.Linear(4, 8)))["0.weight"] == "hidden"
