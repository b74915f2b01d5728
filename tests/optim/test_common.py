"""Common checks over every optimizer: one row per optimizer (the optim_db idea).

Adding an optimizer adds a row to ``CASES``; every check below then runs on it.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

import normopt
from normopt import norms as N


@dataclass
class Case:
    name: str
    make: Callable[[Any], torch.optim.Optimizer]  # params (list or model) -> optimizer
    takes_model: bool = False  # whether make() wants the model itself
    needs_closure: bool = False
    matrices_only: bool = False  # the optimizer cannot carry 1-D tensors


def _heads_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Per-head Muon (2 heads) on the matrices with an even row count, the rest as routed."""
    named = list(model.named_parameters())
    heads = [(n, p) for n, p in named if p.ndim >= 2 and p.shape[0] % 2 == 0]
    rest = [(n, p) for n, p in named if all(p is not q for _, q in heads)]
    groups = [{"params": heads, "num_heads": 2}, {"params": rest}]
    return [g for g in groups if g["params"]]


CASES = [
    Case("muon", lambda m: normopt.Muon(m, lr=0.02, adamw_lr=1e-2), takes_model=True),
    Case(
        "muon-wd",
        lambda m: normopt.Muon(m, lr=0.02, weight_decay=0.1, adamw_lr=1e-2),
        takes_model=True,
    ),
    Case(
        "muon-polar-express",
        lambda m: normopt.Muon(m, lr=0.02, polar="polar_express", adamw_lr=1e-2),
        takes_model=True,
    ),
    Case(
        "muon-gram",
        lambda m: normopt.Muon(m, lr=0.02, polar="gram_newton_schulz", adamw_lr=1e-2),
        takes_model=True,
    ),
    Case(
        "muon-fanion2",
        lambda m: normopt.Muon(m, lr=0.02, variant="fanion", variant_k=2, adamw_lr=1e-2),
        takes_model=True,
    ),
    Case(
        "muon-f",
        lambda m: normopt.Muon(m, lr=0.02, variant="f_muon", adamw_lr=1e-2),
        takes_model=True,
    ),
    Case(
        "muon-s",
        lambda m: normopt.Muon(m, lr=0.02, variant="s_muon", adamw_lr=1e-2),
        takes_model=True,
    ),
    Case(
        "muon-mvr2",
        lambda m: normopt.MuonMVR2(m, lr=0.02, adamw_lr=1e-2),
        takes_model=True,
        needs_closure=True,
    ),
    Case("normuon", lambda m: normopt.NorMuon(m, lr=0.02, adamw_lr=1e-2), takes_model=True),
    Case(
        "normuon-plain",
        lambda p: normopt.NorMuon(p, lr=0.02, weight_decay=0.01),
        matrices_only=True,
    ),
    Case("adamuon", lambda m: normopt.AdaMuon(m, lr=0.05, adamw_lr=1e-2), takes_model=True),
    Case("adamuon-plain", lambda p: normopt.AdaMuon(p, lr=0.05), matrices_only=True),
    Case("muon-heads", lambda m: normopt.Muon(_heads_groups(m), lr=0.02), takes_model=True),
    Case(
        "muon-turbo",
        lambda m: normopt.Muon(m, lr=0.02, ns_steps=4, ns_coefficients="turbo_muon", adamw_lr=1e-2),
        takes_model=True,
    ),
    Case("lion", lambda p: normopt.Lion(p, lr=3e-3)),
    Case("lionk-nuclear", lambda p: normopt.LionK(p, K=N.Nuclear(), lr=2e-2), matrices_only=True),
    Case(
        "lionk-huber",
        lambda p: normopt.LionK(p, K=normopt.HuberNuclear(0.01), lr=2e-2),
        matrices_only=True,
    ),
    Case("sd-l2", lambda p: normopt.SteepestDescent(p, norm=N.L2(), lr=0.05, momentum=0.9)),
    Case(
        "sd-linf-normalized",
        lambda p: normopt.SteepestDescent(p, norm=N.LInf(), lr=3e-3, normalized=True),
    ),
    Case(
        "sd-spectral-nesterov",
        lambda p: normopt.SteepestDescent(
            p, norm=N.Spectral(), lr=0.02, momentum=0.9, nesterov=True, normalized=True
        ),
        matrices_only=True,
    ),
    Case(
        "sd-frank-wolfe",
        lambda p: normopt.SteepestDescent(p, norm=N.RMSToRMS(), lr=0.05, radius=3.0, momentum=0.5),
        matrices_only=True,
    ),
    Case(
        "sd-modular",
        lambda m: normopt.SteepestDescent(
            normopt.param_groups(m, preset="modular"), norm=N.L2(), lr=0.01, modular=True
        ),
        takes_model=True,
    ),
    Case(
        "trust-region-frobenius",
        lambda p: normopt.TrustRegion(p, norm=N.Frobenius(), lr=0.02, alpha=0.3),
        matrices_only=True,
    ),
    Case("trust-region-linf", lambda p: normopt.TrustRegion(p, norm=N.LInf(), lr=3e-3, alpha=0.3)),
]
IDS = [c.name for c in CASES]


def _mlp(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)
    ).to(dtype)


def _data(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 6, generator=g)
    y = torch.sin(x[:, :3]) + 0.5 * x[:, 3:]
    return x.to(dtype), y.to(dtype)


def _build(case: Case, model: nn.Module) -> torch.optim.Optimizer:
    if case.takes_model:
        return case.make(model)
    params = [p for p in model.parameters() if not case.matrices_only or p.ndim >= 2]
    if case.matrices_only:
        for p in model.parameters():
            if p.ndim < 2:
                p.requires_grad_(False)
    return case.make(params)


def _train(
    case: Case, model: nn.Module, opt: torch.optim.Optimizer, steps: int, sched=None
) -> list[float]:
    x, y = _data(next(model.parameters()).dtype)
    losses = []
    for _ in range(steps):

        def closure():
            opt.zero_grad()
            loss = (model(x) - y).square().mean()
            loss.backward()
            return loss

        if case.needs_closure:
            loss = opt.step(closure)
        else:
            loss = closure()
            opt.step()
        if sched is not None:
            sched.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_decreases_mlp_loss(case):
    model = _mlp()
    opt = _build(case, model)
    losses = _train(case, model, opt, 40)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-5:]) < 0.7 * losses[0], f"{case.name}: {losses[0]:.4f} -> {losses[-1]:.4f}"


@pytest.mark.parametrize("case", [c for c in CASES if not c.takes_model], ids=lambda c: c.name)
def test_decreases_convex_quadratic(case):
    torch.manual_seed(0)
    A = torch.randn(8, 8)
    H = A @ A.T / 8 + 0.5 * torch.eye(8)  # a positive definite Hessian
    target = 0.2 * torch.randn(8, 5)  # reachable by sign-type steps of 3e-3 in 80 steps
    W = nn.Parameter(torch.zeros(8, 5))
    opt = case.make([W])
    f0 = None
    for _ in range(80):
        opt.zero_grad()
        f = 0.5 * ((W - target) * (H @ (W - target))).sum()
        f.backward()
        f0 = f0 if f0 is not None else float(f.detach())
        opt.step()
    final = float(0.5 * ((W - target) * (H @ (W - target))).sum().detach())
    assert final < 0.5 * f0


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_round_trip_bit_for_bit(case):
    model = _mlp()
    opt = _build(case, model)
    _train(case, model, opt, 3)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    _train(case, model, opt, 4)
    after = [p.detach().clone() for p in model.parameters()]

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)  # plain data only: no pickled norm objects
    model2 = _mlp()
    model2.load_state_dict(saved["model"])
    opt2 = _build(case, model2)
    opt2.load_state_dict(saved["opt"])
    _train(case, model2, opt2, 4)
    for a, b in zip(after, model2.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_deepcopy_can_step(case):
    model = _mlp()
    opt = _build(case, model)
    _train(case, model, opt, 2)
    opt2 = copy.deepcopy(opt)  # holds copies of the parameters, in its own param groups
    copies = [p for g in opt2.param_groups for p in g["params"]]
    before = [p.detach().clone() for p in copies]
    for p in copies:
        p.grad = torch.ones_like(p)
    if case.needs_closure:
        opt2.step(lambda: None)
    else:
        opt2.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, copies))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_scheduler_changes_lr(case):
    model = _mlp()
    opt = _build(case, model)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    lr0 = [g["lr"] for g in opt.param_groups]
    _train(case, model, opt, 4, sched)
    assert [g["lr"] for g in opt.param_groups] == [lr / 4 for lr in lr0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_dtypes(case, dtype):
    model = _mlp(dtype)
    opt = _build(case, model)
    losses = _train(case, model, opt, 15)
    assert all(p.dtype == dtype for p in model.parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    for state in opt.state.values():
        for k, v in state.items():
            if (
                k != "prev_param"
                and isinstance(v, torch.Tensor)
                and v.is_floating_point()
                and v.ndim > 0
            ):
                assert v.dtype == torch.float32, "state is kept in float32"
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grad_not_modified_and_lazy_state(case):
    model = _mlp()
    opt = _build(case, model)
    assert len(opt.state) == 0, "no state before the first step"
    x, y = _data()
    opt.zero_grad()
    (model(x) - y).square().mean().backward()
    grads = {p: p.grad.clone() for p in model.parameters() if p.grad is not None}
    if case.needs_closure:

        def closure():
            return None  # gradients already computed; MVR2's first step uses them as they are

        opt.step(closure)
    else:
        opt.step()
    for p, g in grads.items():
        assert torch.equal(p.grad, g), "p.grad must never be modified"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_step_returns_closure_loss_and_hooks_run(case):
    model = _mlp()
    opt = _build(case, model)
    x, y = _data()
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))

    def closure():
        opt.zero_grad()
        loss = (model(x) - y).square().mean()
        loss.backward()
        return loss

    out = opt.step(closure)
    assert isinstance(out, torch.Tensor) and torch.isfinite(out)
    assert calls == ["pre", "post"]


@pytest.mark.parametrize("case", [c for c in CASES if not c.takes_model], ids=lambda c: c.name)
def test_params_without_grad_are_left_alone(case):
    a = nn.Parameter(torch.randn(4, 3))
    b = nn.Parameter(torch.randn(4, 3))
    opt = case.make([a, b])
    a.grad = torch.randn(4, 3)
    b_before = b.detach().clone()
    opt.step()
    assert torch.equal(b, b_before)
    assert b not in opt.state


def test_bare_tensor_is_a_type_error():
    with pytest.raises(TypeError):
        normopt.Lion(torch.zeros(3, requires_grad=True))
    with pytest.raises(TypeError):
        normopt.Muon(nn.Parameter(torch.zeros(3, 3)))


def test_named_parameters_are_accepted():
    model = _mlp()
    opt = normopt.Lion(model.named_parameters(), lr=1e-3)
    assert "param_names" in opt.param_groups[0]
    opt2 = normopt.Muon(list(model.named_parameters()))
    assert {g["use_muon"] for g in opt2.param_groups} == {True, False}


BAD_ARGS = [
    (lambda p: normopt.Muon(p, lr=-1.0), "lr"),
    (lambda p: normopt.Muon(p, momentum=1.0), "momentum"),
    (lambda p: normopt.Muon(p, momentum=-0.1), "momentum"),
    (lambda p: normopt.Muon(p, ns_steps=0), "ns_steps"),
    (lambda p: normopt.Muon(p, polar="qr"), "polar"),
    (lambda p: normopt.Muon(p, adjust_lr="bogus"), "adjust_lr"),
    (lambda p: normopt.Muon(p, variant="bogus"), "variant"),
    (lambda p: normopt.Muon(p, weight_decay=-1), "weight_decay"),
    (lambda p: normopt.Muon(p, adamw_betas=(0.9, 1.0)), "adamw_betas"),
    (lambda p: normopt.Muon(p, nonfinite="ignore"), "nonfinite"),
    (lambda p: normopt.Muon(p, polar_dtype="bf17"), "polar_dtype"),
    (lambda p: normopt.Lion(p, betas=(1.2, 0.9)), "betas"),
    (lambda p: normopt.Lion(p, lr=float("nan")), "lr"),
    (lambda p: normopt.LionK(p, K="no_such_norm"), "K"),
    (lambda p: normopt.SteepestDescent(p, norm=N.L2(), lr=0.1, nesterov=True), "nesterov"),
    (lambda p: normopt.SteepestDescent(p, norm=N.L2(), lr=2.0, radius=1.0), "lr"),
    (
        lambda p: (
            normopt.SteepestDescent(p, norm=N.Spectral(), lr=0.1, batch_dims=-1)
            if False
            else normopt.SteepestDescent(
                [{"params": p, "batch_dims": -1}], norm=N.Spectral(), lr=0.1
            )
        ),
        "batch_dims",
    ),
    (lambda p: normopt.TrustRegion(p, norm=N.L2(), lr=0.1, alpha=0.0), "alpha"),
    (lambda p: normopt.TrustRegion(p, norm=N.L2(), lr=0.1, alpha=1.5), "alpha"),
    # issue 7: every optimizer, every kind of bad value (test_robustness.py has the rest)
    (lambda p: normopt.Lion(p, lr=-1e-3), "lr"),
    (lambda p: normopt.Lion(p, lr=float("inf")), "lr"),
    (lambda p: normopt.LionK(p, K=N.L1(), lr=-1e-3), "lr"),
    (lambda p: normopt.SteepestDescent(p, norm=N.L2(), lr=-0.1), "lr"),
    (lambda p: normopt.TrustRegion(p, norm=N.L2(), lr=-0.1, alpha=0.5), "lr"),
    (lambda p: normopt.MuonMVR2(p, lr=-0.02), "lr"),
    (lambda p: normopt.SteepestDescent(p, norm=N.L2(), lr=0.1, momentum=1.0), "momentum"),
    (lambda p: normopt.SteepestDescent(p, norm=N.L2(), lr=0.1, momentum=-0.5), "momentum"),
    (lambda p: normopt.MuonMVR2(p, momentum=1.0), "momentum"),
    (lambda p: normopt.MuonMVR2(p, ns_steps=0), "ns_steps"),
    (lambda p: normopt.Muon(p, ns_steps=2.5), "ns_steps"),
    (lambda p: normopt.LionK(p, K=N.Nuclear(), polar="qr"), "polar"),
    (lambda p: normopt.LionK(p, K=N.Nuclear(), polar="newton_schulz", ns_steps=0), "ns_steps"),
    (lambda p: normopt.LionK(p, K=N.Nuclear(), ns_steps=3), "ns_steps"),
    (lambda p: normopt.Muon(p, adamw_eps=0.0), "adamw_eps"),
    (lambda p: normopt.Muon(p, nesterov="no"), "nesterov"),
    (lambda p: normopt.SteepestDescent(p, norm=N.L2(), lr=0.1, normalized="yes"), "normalized"),
    (lambda p: normopt.SteepestDescent(p, norm="no_such_norm", lr=0.1), "norm"),
    (lambda p: normopt.TrustRegion(p, norm="no_such_norm", lr=0.1, alpha=0.5), "norm"),
    (
        lambda p: normopt.SteepestDescent(p, norm=N.L2(), lr=0.1, weight_decay=float("nan")),
        "weight_decay",
    ),
    (
        lambda p: normopt.TrustRegion(p, norm=N.L2(), lr=0.1, alpha=0.5, weight_decay=1.5),
        "weight_decay",
    ),
    (lambda p: normopt.LionK(p, K=normopt.HuberNuclear(0.0)), "delta"),
    (lambda p: normopt.NorMuon(p, beta2=1.0), "beta2"),
    (lambda p: normopt.NorMuon(p, eps=-1.0), "eps"),
    (lambda p: normopt.AdaMuon(p, beta2=1.5), "beta2"),
    (lambda p: normopt.AdaMuon(p, eps=0.0), "eps"),
    (lambda p: normopt.Muon(p, num_heads=0), "num_heads"),
    (lambda p: normopt.Muon(p, ns_coefficients="bogus"), "ns_coefficients"),
    (lambda p: normopt.Muon([{"params": p, "num_heads": 3}]), "num_heads"),
]


@pytest.mark.parametrize("make,arg", BAD_ARGS, ids=[a for _, a in BAD_ARGS])
def test_bad_arguments_raise_naming_the_argument(make, arg):
    params = [nn.Parameter(torch.randn(4, 3))]
    with pytest.raises(ValueError, match=arg):
        make(params)


def test_norm_that_does_not_fit_the_shape():
    with pytest.raises(ValueError, match="norm"):
        normopt.SteepestDescent([nn.Parameter(torch.randn(5))], norm=N.Spectral(), lr=0.1)
    with pytest.raises(ValueError, match="^norm: Modular spans several tensors"):
        normopt.SteepestDescent([nn.Parameter(torch.randn(5))], norm=N.Modular([N.L2()]), lr=0.1)
    with pytest.raises(ValueError, match="^norm: ModularSum spans several tensors"):
        normopt.SteepestDescent(
            [nn.Parameter(torch.randn(5))], norm={"name": "modular_sum", "norms": ["l2"]}, lr=0.1
        )
    with pytest.raises(ValueError, match="Muon needs matrices"):
        normopt.Muon([{"params": [nn.Parameter(torch.randn(5))], "use_muon": True}])
