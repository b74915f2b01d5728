"""Common checks over every optimizer: each runs on every row of ``optim_cases.CASES``."""

from __future__ import annotations

import copy

import pytest
import torch
from optim_cases import CASES, IDS, build_optimizer, check_resume, make_mlp, mlp_data, train_steps
from torch import nn

import normopt
from normopt import norms as N


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_decreases_mlp_loss(case):
    model = make_mlp()
    opt = build_optimizer(case, model)
    losses = train_steps(case, model, opt, 40)
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
    check_resume(case, before=3, after=4)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_deepcopy_can_step(case):
    model = make_mlp()
    opt = build_optimizer(case, model)
    train_steps(case, model, opt, 2)
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
    model = make_mlp()
    opt = build_optimizer(case, model)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    lr0 = [g["lr"] for g in opt.param_groups]
    train_steps(case, model, opt, 4, sched)
    assert [g["lr"] for g in opt.param_groups] == [lr / 4 for lr in lr0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_dtypes(case, dtype):
    model = make_mlp(dtype)
    opt = build_optimizer(case, model)
    losses = train_steps(case, model, opt, 15)
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
    model = make_mlp()
    opt = build_optimizer(case, model)
    assert len(opt.state) == 0, "no state before the first step"
    x, y = mlp_data()
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
    model = make_mlp()
    opt = build_optimizer(case, model)
    x, y = mlp_data()
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
    model = make_mlp()
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
