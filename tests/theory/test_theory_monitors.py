"""Monitors agree with an exact SVD; the constraint ratio follows SPEC A9."""

import math

import pytest
import torch

from normopt import norms as N
from normopt.linalg import newton_schulz, polar
from normopt.theory import (
    ConstraintMonitor,
    SpectralNormMonitor,
    UpdateMonitor,
    rows_of,
)


def _planted(m, n, svals, seed=0):
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    r = len(svals)
    return U[:, :r] @ torch.diag(torch.tensor(svals, dtype=torch.float64)) @ V[:, :r].T


def _exact(W):
    return float(torch.linalg.matrix_norm(W.detach().double().reshape(W.shape[0], -1), ord=2))


def test_spectral_monitor_tracks_a_drifting_matrix():
    W = _planted(12, 20, [3.0, 2.0, 1.0, 0.5]).float().requires_grad_()
    conv = torch.randn(8, 3, 3, 3, requires_grad=True)  # read as (8, 27)
    bias = torch.randn(5, requires_grad=True)  # not a matrix: skipped
    mon = SpectralNormMonitor({"W": W, "conv": conv, "bias": bias}, iters=2)
    g = torch.Generator().manual_seed(1)
    for step in range(20):
        rows = {r["param"]: r["spectral_norm"] for r in mon(step)}
        assert set(rows) == {"W", "conv"}
        assert rows["W"] == pytest.approx(_exact(W), rel=1e-5)
        with torch.no_grad():  # a slow drift, as between training steps
            W.add_(1e-3 * torch.randn(W.shape, generator=g))
    # the conv kernel did not move: warm-started power iteration converged to s_1
    assert mon.latest()["conv"]["spectral_norm"] == pytest.approx(_exact(conv), rel=1e-4)
    steps, vals = mon.series("W", "spectral_norm")
    assert steps == list(range(20)) and len(vals) == 20


def test_spectral_monitor_exact_and_every():
    W = torch.randn(7, 9, requires_grad=True)
    mon = SpectralNormMonitor({"W": W}, exact=True, every=3)
    for _ in range(7):
        mon()
    assert [r["step"] for r in mon.rows] == [0, 3, 6]
    assert mon.rows[0]["spectral_norm"] == pytest.approx(_exact(W), rel=1e-12)
    assert mon.to_rows() == mon.rows and mon.to_rows() is not mon.rows
    with pytest.raises(ValueError, match="^every:"):
        SpectralNormMonitor({"W": W}, every=0)
    with pytest.raises(ValueError, match="no matrix"):
        SpectralNormMonitor({"b": torch.zeros(3)})


@pytest.mark.parametrize("power_iters", [None, 3])
def test_constraint_ratio_matches_svd(power_iters):
    lin = torch.nn.Linear(10, 6)
    mon = ConstraintMonitor(lin, weight_decay=0.1, scale=0.5, power_iters=power_iters)
    (row,) = mon(0)  # the bias has no spectral norm
    assert row["param"] == "weight" and row["limit"] == pytest.approx(5.0)
    assert row["ratio"] == pytest.approx(_exact(lin.weight) * 0.1 / 0.5, rel=1e-6)


def test_constraint_reads_optimizer_and_other_norms():
    model = torch.nn.Linear(4, 8)
    groups = [{"params": [model.weight], "weight_decay": 0.2}, {"params": [model.bias]}]
    opt = _OrthStep(groups, lr=0.1, weight_decay=0.0)  # a built-in optimizer costs 3 s to import
    rows = {r["param"]: r for r in ConstraintMonitor(model, norm=N.LInf(), optimizer=opt)(0)}
    assert rows["weight"]["ratio"] == pytest.approx(float(model.weight.detach().abs().max()) * 0.2)
    assert rows["bias"]["ratio"] == 0.0 and rows["bias"]["limit"] == math.inf
    # RMS->RMS by power iteration, with a shape-dependent scale
    W = model.weight
    mon = ConstraintMonitor(
        model, norm=N.RMSToRMS(), weight_decay=0.1, scale=lambda s: s[0] / s[1], power_iters=4
    )
    want = _exact(W) * math.sqrt(4 / 8) * 0.1 / 2.0
    assert mon(0)[0]["ratio"] == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="^weight_decay:"):
        ConstraintMonitor(model)
    with pytest.raises(ValueError, match="^power_iters:"):
        ConstraintMonitor(model, weight_decay=0.1, norm=N.Frobenius(), power_iters=2)
    for bad in (0, "3", 2.0):
        with pytest.raises(ValueError, match="^power_iters: expected an integer >= 1"):
            ConstraintMonitor(model, weight_decay=0.1, power_iters=bad)


def test_constraint_ratio_follows_spec_a9():
    # SPEC item 6 as seen by the monitor: ||W_t|| <= s/wd + prod(1 - lr wd) (||W_0|| - s/wd).
    g = torch.Generator().manual_seed(0)
    W = (5 * torch.randn(8, 12, generator=g, dtype=torch.float64)).requires_grad_()
    lr, wd, s = 0.05, 0.5, 1.0
    mon = ConstraintMonitor({"W": W}, weight_decay=wd, scale=s)
    excess = mon(0)[0]["ratio"] - 1.0
    assert excess > 0
    for t in range(1, 120):
        G = torch.randn(8, 12, generator=g, dtype=torch.float64)
        with torch.no_grad():
            W.mul_(1 - lr * wd).sub_(lr * s * polar(G, "svd"))
        excess = (1 - lr * wd) * max(excess, 0.0)
        assert mon(t)[0]["ratio"] <= 1.0 + excess + 1e-9


class _OrthStep(torch.optim.Optimizer):
    """W <- (1 - lr wd) W - lr scale NS(grad): Muon without momentum, for the test."""

    def __init__(self, params, lr, weight_decay, scale=1.0):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "scale": scale})
        self.directions = {}

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                O = group["scale"] * newton_schulz(p.grad.double(), 5).to(p.dtype)
                self.directions[p] = O
                p.mul_(1 - group["lr"] * group["weight_decay"]).sub_(group["lr"] * O)


def test_update_monitor_hooks_and_agrees_with_svd():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 10, generator=g, dtype=torch.float64, requires_grad=True)
    opt = _OrthStep([W], lr=0.02, weight_decay=0.1, scale=0.7)
    with UpdateMonitor({"W": W}, opt) as mon:
        for _ in range(3):
            before = W.detach().clone()
            W.grad = torch.randn(6, 10, generator=g, dtype=torch.float64)
            opt.step()
            row = mon.rows[-1]
            s = torch.linalg.svdvals(opt.directions[W])  # the exact spectrum of the direction
            assert row["s_max"] == pytest.approx(float(s[0]), rel=1e-9)
            assert row["s_min"] == pytest.approx(float(s[-1]), rel=1e-9)
            assert row["spread"] == pytest.approx(float(s[-1] / s[0]), rel=1e-9)
            dW = W.detach() - before
            assert row["update_rms"] == pytest.approx(float(dW.norm()) / math.sqrt(60), rel=1e-12)
            assert row["relative"] == pytest.approx(float(dW.norm() / before.norm()), rel=1e-12)
        # quintic Newton-Schulz: singular values in about [0.68, 1.2] times the scale
        assert 0.6 * 0.7 < row["s_min"] <= row["s_max"] < 1.21 * 0.7
    assert [r["step"] for r in mon.rows] == [0, 1, 2]
    W.grad = torch.randn(6, 10, generator=g, dtype=torch.float64)
    opt.step()
    assert len(mon.rows) == 3  # unhooked
    with pytest.raises(RuntimeError, match="hooked"):
        UpdateMonitor({"W": W}, opt)(0)


def test_update_monitor_every_and_manual_mode():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    opt = _OrthStep([W], lr=0.1, weight_decay=0.0)
    mon = UpdateMonitor({"W": W}, opt, every=2)
    for _ in range(5):
        W.grad = torch.randn(5, 7, generator=g, dtype=torch.float64)
        opt.step()
    assert [r["step"] for r in mon.rows] == [0, 2, 4]
    mon.remove()
    # manual: exact polar step of scale 1 with decoupled weight decay, lr and wd given
    lr, wd = 0.05, 0.2
    man = UpdateMonitor({"W": W, "b": b}, lr=lr, weight_decay=wd)
    assert man(0) == []  # first call: copy only
    for t in range(1, 3):
        with torch.no_grad():
            W.mul_(1 - lr * wd).sub_(lr * polar(torch.randn(5, 7, dtype=torch.float64), "svd"))
            b.add_(0.01)
        rows = {r["param"]: r for r in man(t)}
        assert rows["W"]["s_max"] == pytest.approx(1.0, rel=1e-9)
        assert rows["W"]["s_min"] == pytest.approx(1.0, rel=1e-9)
        assert "s_max" not in rows["b"] and rows["b"]["update_rms"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="^lr:"):
        UpdateMonitor({"W": W}, weight_decay=0.1)
    assert {r["monitor"] for r in rows_of([man, mon])} == {"UpdateMonitor"}
