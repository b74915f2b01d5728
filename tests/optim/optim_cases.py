"""The optimizer table every optimizer test reads: one row per optimizer configuration (the
optim_db idea). Adding an optimizer adds a row here; the common checks (test_common), the
robustness checks (test_robustness), the step-engine checks (test_step_engine) and the
checkpoint checks (test_checkpoint) then run on it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def _norm_groups(params: nn.Module | list[nn.Parameter], norm: N.Norm) -> list[dict[str, Any]]:
    """The matrices under ``norm``, the vectors under the optimizer's default (named
    parameters for a model, so that errors can name them)."""
    named = list(params.named_parameters()) if isinstance(params, nn.Module) else None
    items: list[Any] = named if named is not None else list(params)
    ndim = (lambda it: it[1].ndim) if named is not None else (lambda it: it.ndim)
    mats = [it for it in items if ndim(it) >= 2]
    vecs = [it for it in items if ndim(it) < 2]
    return [g for g in ({"params": mats, "norm": norm}, {"params": vecs}) if g["params"]]


def _muon(name: str, **kwargs: Any) -> Case:
    """``normopt.Muon(model, lr=0.02, adamw_lr=1e-2, **kwargs)``: Muon routing the model."""
    return Case(name, lambda m: normopt.Muon(m, lr=0.02, adamw_lr=1e-2, **kwargs), takes_model=True)


CASES = [
    _muon("muon"),
    _muon("muon-wd", weight_decay=0.1),
    _muon("muon-polar-express", polar="polar_express"),
    _muon("muon-gram", polar="gram_newton_schulz"),
    _muon("muon-fanion2", variant="fanion", variant_k=2),
    _muon("muon-f", variant="f_muon"),
    _muon("muon-s", variant="s_muon"),
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
    _muon("muon-turbo", ns_steps=4, ns_coefficients="turbo_muon"),
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
    # a norm per param group: spectral on the matrices, the default (l-inf) on the rest
    Case(
        "sd-spectral-groups",
        lambda m: normopt.SteepestDescent(
            _norm_groups(m, N.Spectral()), norm=N.LInf(), lr=3e-3, momentum=0.9, normalized=True
        ),
        takes_model=True,
    ),
    Case(
        "trust-region-spectral-groups",
        lambda m: normopt.TrustRegion(
            _norm_groups(m, N.Spectral()), norm=N.LInf(), lr=3e-3, alpha=0.3
        ),
        takes_model=True,
    ),
]
IDS = [c.name for c in CASES]


def make_mlp(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)
    ).to(dtype)


def mlp_data(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 6, generator=g)
    y = torch.sin(x[:, :3]) + 0.5 * x[:, 3:]
    return x.to(dtype), y.to(dtype)


def build_optimizer(case: Case, model: nn.Module) -> torch.optim.Optimizer:
    if case.takes_model:
        return case.make(model)
    params = [p for p in model.parameters() if not case.matrices_only or p.ndim >= 2]
    if case.matrices_only:
        for p in model.parameters():
            if p.ndim < 2:
                p.requires_grad_(False)
    return case.make(params)


def train_steps(
    case: Case, model: nn.Module, opt: torch.optim.Optimizer, steps: int, sched=None
) -> list[float]:
    x, y = mlp_data(next(model.parameters()).dtype)
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


def check_resume(
    case: Case,
    before: int,
    after: int,
    dtype: torch.dtype = torch.float32,
    check_loaded: Callable[[torch.optim.Optimizer], None] | None = None,
) -> None:
    """Train ``before`` steps, save the model and the optimizer (``torch.save``), train
    ``after`` more; a fresh model and optimizer loaded from the save (``weights_only=True``:
    plain data only, no pickled norm objects) and trained ``after`` steps end bit for bit
    where the uninterrupted run did. ``check_loaded`` sees the loaded optimizer first."""
    model = make_mlp(dtype)
    opt = build_optimizer(case, model)
    train_steps(case, model, opt, before)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    train_steps(case, model, opt, after)
    final = [p.detach().clone() for p in model.parameters()]

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model2 = make_mlp(dtype)
    model2.load_state_dict(saved["model"])
    opt2 = build_optimizer(case, model2)
    opt2.load_state_dict(saved["opt"])
    if check_loaded is not None:
        check_loaded(opt2)
    train_steps(case, model2, opt2, after)
    for a, b in zip(final, model2.parameters()):
        assert torch.equal(a, b)


BY_NAME = {c.name: c for c in CASES}
