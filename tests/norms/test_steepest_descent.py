"""SPEC 3.2 (A1), 3.3 (A2) and 3.9: steepest descent under a norm, modular steepest descent,
and the shapes of the Linear and Embedding updates. float64."""

from __future__ import annotations

import math

import pytest
import torch
from norm_cases import (
    CASE_IDS,
    CASES,
    add,
    blocks,
    fro,
    inner,
    random_elem,
    scale,
    stack,
    unblocks,
)

from normopt import norms as N

LAMBDAS = (0.5, 3.0)


def a1_objective(norm, g, d, lam):
    """<g, D> + (lambda / 2) ||D||^2, per batch entry."""
    return inner(norm, g, d) + 0.5 * lam * norm.norm(d) ** 2


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("lam", LAMBDAS)
def test_a1_closed_form_attains_the_minimum(case, lam):
    """D* = -(||g||_dual / lambda) dualize(g) has value -||g||_dual^2 / (2 lambda); random D,
    rescaled D* and perturbed D* never go lower."""
    norm = case.make()
    for k, shape in enumerate(case.shapes):
        g = random_elem(norm, shape, (), "gauss", seed=k)
        dual = norm.dual_norm(g)
        d_star = scale(norm, norm.dualize(g), -dual / lam)
        value = -(dual**2) / (2 * lam)
        assert float(a1_objective(norm, g, d_star, lam)) == pytest.approx(float(value), rel=1e-10)
        n = 256
        gb = stack(norm, [g] * n)
        t = random_elem(norm, shape, (n,), "gauss", seed=100 + k)
        # random directions at random scales around the optimal step length dual / lambda
        c = torch.logspace(-2, 1, n, dtype=torch.float64) * float(dual) / lam / fro(norm, t)
        others = [
            scale(norm, t, c),
            scale(
                norm, stack(norm, [d_star] * n), torch.linspace(0.5, 1.5, n, dtype=torch.float64)
            ),
            _perturb(norm, d_star, t, 1e-3 * float(dual) / lam),
        ]
        floor = float(value) - 1e-10 * abs(float(value))
        for d in others:
            assert float(a1_objective(norm, gb, d, lam).min()) >= floor


def _perturb(norm, d_star, t, eps):
    """D* plus a random step of Frobenius length eps, per batch entry of t."""
    n = len(norm.norm(t))
    return add(norm, stack(norm, [d_star] * n), scale(norm, t, eps / fro(norm, t)))


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.id in ("linf", "spectral", "ky_fan_k2", "modular")],
    ids=lambda c: c.id,
)
def test_a1_numerical_minimizer_finds_nothing_lower(case):
    """Adam on the A1 objective from random starts: never below the closed form, and within 1e-3."""
    norm = case.make()
    shape = case.small[0]
    lam = 2.0
    g = random_elem(norm, shape, (), "gauss", seed=7)
    value = float(-(norm.dual_norm(g) ** 2) / (2 * lam))
    step = float(norm.dual_norm(g)) / lam  # the optimal step length sets the scale
    starts, iters = 8, 300
    t0 = random_elem(norm, shape, (starts,), "gauss", 8)
    t0 = scale(norm, t0, step / fro(norm, t0))
    params = [x.clone().requires_grad_(True) for x in blocks(norm, t0)]
    opt = torch.optim.Adam(params, lr=0.05 * step)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters, eta_min=1e-4 * step)
    gb = stack(norm, [g] * starts)
    best = math.inf
    for _ in range(iters):
        obj = a1_objective(norm, gb, unblocks(norm, params), lam)
        best = min(best, float(obj.detach().min()))
        opt.zero_grad()
        obj.sum().backward()
        opt.step()
        sched.step()
    assert best >= value - 1e-10 * abs(value)
    assert best <= value * (1 - 1e-3)


def test_a1_named_cases():
    """SPEC A1: l2 gives -g / lambda; l-inf gives -(||g||_1 / lambda) sign(g); spectral gives
    -(trace S / lambda) U V^T."""
    lam = 2.5
    g = torch.randn(6, dtype=torch.float64)
    for norm, expected in [
        (N.L2(), -g / lam),
        (N.LInf(), -(g.abs().sum() / lam) * g.sign()),
    ]:
        d = -(norm.dual_norm(g) / lam) * norm.dualize(g)
        torch.testing.assert_close(d, expected, rtol=1e-12, atol=1e-14)
    G = torch.randn(4, 6, dtype=torch.float64)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    d = -(N.Spectral().dual_norm(G) / lam) * N.Spectral().dualize(G)
    torch.testing.assert_close(d, -(S.sum() / lam) * (U @ Vh), rtol=1e-12, atol=1e-14)


# -- A2: modular steepest descent ---------------------------------------------------------------
A2_NORMS = [N.RMSToRMS(), N.Transposed(N.ColumnRMS()), N.ConvSpectral(), N.L2(), N.Spectral()]
A2_SCALES = [1.0, 0.5, 2.0, 3.0, 0.25]
A2_SHAPES = [(4, 6), (7, 3), (3, 2, 2, 2), (5,), (1, 4)]


@pytest.mark.parametrize("lam", LAMBDAS)
def test_a2_modular_step(lam):
    """eta = (1/lambda) sum_k ||G_k||_dual,k / s_k; D_l = -(eta / s_l) dualize_l(G_l); then every
    s_l ||D_l||_l = eta and the value is -lambda eta^2 / 2. Modular's dual_norm / dualize give the
    same step, and random or perturbed steps never go lower."""
    gen = torch.Generator().manual_seed(0)
    G = [torch.randn(sh, generator=gen, dtype=torch.float64) for sh in A2_SHAPES]
    eta = sum(float(n.dual_norm(g)) / s for n, s, g in zip(A2_NORMS, A2_SCALES, G)) / lam
    D = [-(eta / s) * n.dualize(g) for n, s, g in zip(A2_NORMS, A2_SCALES, G)]
    for n, s, d in zip(A2_NORMS, A2_SCALES, D):
        assert s * float(n.norm(d)) == pytest.approx(eta, rel=1e-12)

    def value(Ds):
        lin = sum(float((g * d).sum()) for g, d in zip(G, Ds))
        sharp = max(s**2 * float(n.norm(d)) ** 2 for n, s, d in zip(A2_NORMS, A2_SCALES, Ds))
        return lin + 0.5 * lam * sharp

    assert value(D) == pytest.approx(-lam * eta**2 / 2, rel=1e-12)
    assert sum(float((g * d).sum()) for g, d in zip(G, D)) < 0  # a descent step (C.3's sign)

    mod = N.Modular(A2_NORMS, A2_SCALES)
    assert float(mod.dual_norm(G)) / lam == pytest.approx(eta, rel=1e-12)
    for d_mod, d in zip(mod.dualize(G), D):
        torch.testing.assert_close(-eta * d_mod, d, rtol=1e-12, atol=1e-14)
    assert float(mod.norm(D)) == pytest.approx(eta, rel=1e-12)

    floor = -lam * eta**2 / 2 * (1 + 1e-10)
    for _ in range(50):
        c = 10 ** (3 * torch.rand((), generator=gen).item() - 2)
        rand = [c * eta * torch.randn(sh, generator=gen, dtype=torch.float64) for sh in A2_SHAPES]
        assert value(rand) >= floor
        near = [
            d + 1e-3 * eta * torch.randn(sh, generator=gen, dtype=torch.float64)
            for d, sh in zip(D, A2_SHAPES)
        ]
        assert value(near) >= floor
        per_layer = [d * (1 + 0.1 * torch.randn((), generator=gen, dtype=torch.float64)) for d in D]
        assert value(per_layer) >= floor


# -- SPEC 3.9: the Linear and Embedding updates -------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4), (1, 6), (6, 1), (2, 4, 7)])
def test_rms_to_rms_dualize_has_every_singular_value_sqrt_dout_over_din(shape):
    G = torch.randn(shape, dtype=torch.float64)
    d_out, d_in = shape[-2:]
    s = torch.linalg.svdvals(N.RMSToRMS().dualize(G))
    torch.testing.assert_close(s, torch.full_like(s, math.sqrt(d_out / d_in)), rtol=1e-12, atol=0)


def test_rms_to_rms_with_a_converged_polar_is_close():
    """polar_express with 8 steps (converged, SPEC A5) on a well-conditioned 3x5 input."""
    G = torch.tensor(
        [[2.0, 0.3, -0.1, 0.5, 0.0], [0.1, 1.5, 0.2, 0.0, 0.4], [0.0, -0.2, 1.0, 0.3, 0.1]]
    )
    s = torch.linalg.svdvals(N.RMSToRMS("polar_express", 8).dualize(G.double()))
    torch.testing.assert_close(s, torch.full_like(s, math.sqrt(3 / 5)), rtol=1e-6, atol=0)


def test_column_rms_dualize_gives_columns_of_rms_one():
    G = torch.randn(6, 5, dtype=torch.float64)
    G[:, 2] = 0.0  # a zero column stays zero
    D = N.ColumnRMS().dualize(G)
    rms = D.pow(2).mean(dim=0).sqrt()
    torch.testing.assert_close(rms, torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64))
    # each column points along the gradient's column
    cos = (D * G).sum(0) / (D.norm(dim=0) * G.norm(dim=0)).clamp_min(1e-300)
    torch.testing.assert_close(cos[[0, 1, 3, 4]], torch.ones(4, dtype=torch.float64))


def test_transposed_column_rms_on_an_embedding_gives_rows_of_rms_one():
    """nn.Embedding stores (vocab, dim): Transposed(ColumnRMS()) scales each used token's row to
    RMS 1; rows of tokens absent from the batch have zero gradient and stay zero."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 4).double()
    tokens = torch.tensor([[1, 3, 3, 7], [0, 1, 9, 7]])
    emb(tokens).pow(2).sum().backward()
    grad = emb.weight.grad
    assert grad is not None
    norm = N.Transposed(N.ColumnRMS())
    D = norm.dualize(grad)
    rms = D.pow(2).mean(dim=1).sqrt()
    used = torch.zeros(10, dtype=torch.bool)
    used[tokens.unique()] = True
    torch.testing.assert_close(rms[used], torch.ones(int(used.sum()), dtype=torch.float64))
    assert bool((D[~used] == 0).all())
    assert float(norm.norm(D)) == pytest.approx(1.0)  # max over tokens of the row RMS
    torch.testing.assert_close(norm.norm(grad), grad.pow(2).mean(dim=1).sqrt().max())
