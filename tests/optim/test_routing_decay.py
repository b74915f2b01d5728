"""Weight decay by role: gains and biases are not decayed unless asked (issue 13, item 3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import normopt


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Embedding(10, 8), nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 10)
    )


def _decay_by_name(opt: torch.optim.Optimizer, model: nn.Module) -> dict[str, float]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["weight_decay"] for g in opt.param_groups for p in g["params"]}


def _column(table: str, name: str) -> dict[str, str]:
    """``{tensor name: cell}`` of one column of describe's fixed-width table."""
    lines = table.splitlines()
    start = lines[0].index(name)
    width = len(lines[1][start:].split()[0])  # the dashes under the header
    return {
        line.split()[0]: line[start : start + width].strip()
        for line in lines[2:]
        if line.strip() and not line.startswith(" ") and "tensors;" not in line
    }


def test_muon_of_a_model_leaves_gains_and_biases_undecayed():
    model = _model()
    opt = normopt.Muon(model, weight_decay=0.1, adamw_weight_decay=0.05)
    wd = _decay_by_name(opt, model)
    assert wd == {
        "0.weight": 0.05,  # embedding: AdamW, decayed
        "1.weight": 0.1,  # hidden: Muon
        "1.bias": 0.0,
        "2.weight": 0.0,  # LayerNorm gain
        "2.bias": 0.0,
        "4.weight": 0.05,  # head: AdamW, decayed
        "4.bias": 0.0,
    }


def test_a_step_leaves_an_undecayed_gain_where_its_gradient_is_zero():
    torch.manual_seed(0)
    model = _model()
    with torch.no_grad():
        model[2].weight.fill_(2.0)
    opt = normopt.Muon(model, weight_decay=0.5, adamw_weight_decay=0.5, adamw_lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    after = dict(model.named_parameters())
    torch.testing.assert_close(after["2.weight"], before["2.weight"], rtol=0, atol=0)
    torch.testing.assert_close(after["1.bias"], before["1.bias"], rtol=0, atol=0)
    # the head is decayed: W <- (1 - lr wd) W with a zero gradient
    torch.testing.assert_close(after["4.weight"], before["4.weight"] * (1 - 0.1 * 0.5))


def test_no_decay_empty_decays_every_tensor_and_describe_says_so():
    model = _model()
    groups = normopt.param_groups(model, no_decay=())
    assert all("weight_decay" not in g for g in groups)
    opt = normopt.Muon(groups, weight_decay=0.1, adamw_weight_decay=0.05)
    assert _decay_by_name(opt, model)["2.weight"] == 0.05
    decay = _column(normopt.describe(model, optimizer=opt), "decay")
    assert decay["2.weight"] == "0.05" and decay["1.weight"] == "0.1"


def test_describe_shows_the_preset_decay_column():
    decay = _column(normopt.describe(_model()), "decay")
    assert [decay[n] for n in ("0.weight", "1.weight", "1.bias", "2.weight", "4.weight")] == [
        "yes",
        "yes",
        "no",
        "no",
        "yes",
    ]


def test_the_modular_preset_leaves_gains_undecayed_too():
    groups = normopt.param_groups(_model(), preset="modular")
    by_role = {g["role"]: g.get("weight_decay") for g in groups}
    assert by_role["gain"] == 0.0 and by_role["bias"] == 0.0 and by_role["hidden"] is None


@pytest.mark.parametrize("bad", ["gain", ("gain", "weights"), 3])
def test_no_decay_names_the_argument(bad):
    with pytest.raises(ValueError, match="no_decay"):
        normopt.param_groups(_model(), no_decay=bad)
    with pytest.raises(ValueError, match="no_decay"):
        normopt.describe(_model(), no_decay=bad)
