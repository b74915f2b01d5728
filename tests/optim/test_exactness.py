"""The update equations of SPEC section 2, checked against hand-written references (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import normopt
from normopt import norms as N
from normopt.linalg import polar


def _steps(opt, params, grads):
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()


def _grads(shape, n, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [[scale * torch.randn(shape, dtype=torch.float64, generator=g)] for _ in range(n)]


def test_lion_matches_reference_and_lionk_l1_exactly():
    W0 = torch.randn(7, 5, dtype=torch.float64)
    lr, (b1, b2), wd = 1e-2, (0.9, 0.99), 0.3
    grads = _grads((7, 5), 6)
    # reference, SPEC A7
    x, m = W0.clone(), torch.zeros_like(W0)
    for (g,) in grads:
        c = b1 * m + (1 - b1) * g
        x = x - lr * (torch.sign(c) + wd * x)
        m = b2 * m + (1 - b2) * g
    a, b = nn.Parameter(W0.clone()), nn.Parameter(W0.clone())
    _steps(normopt.Lion([a], lr=lr, betas=(b1, b2), weight_decay=wd), [a], grads)
    _steps(normopt.LionK([b], K=N.L1(), lr=lr, betas=(b1, b2), weight_decay=wd), [b], grads)
    assert torch.equal(a, b)
    torch.testing.assert_close(a.detach(), x, rtol=0, atol=1e-14)


@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_exact_polar_equals_lionk_nuclear(nesterov):
    """SPEC item 4: betas (beta^2, beta) under Nesterov, (beta, beta) without."""
    beta, lr, wd = 0.9, 0.02, 0.1
    W0 = torch.randn(6, 9, dtype=torch.float64)
    grads = _grads((6, 9), 8, seed=3)
    a, b = nn.Parameter(W0.clone()), nn.Parameter(W0.clone())
    muon = normopt.Muon(
        [a], lr=lr, momentum=beta, nesterov=nesterov, weight_decay=wd, polar="svd", adjust_lr="none"
    )
    betas = (beta * beta, beta) if nesterov else (beta, beta)
    lionk = normopt.LionK([b], K=N.Nuclear(), lr=lr, betas=betas, weight_decay=wd)
    _steps(muon, [a], grads)
    _steps(lionk, [b], grads)
    torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-13)


def test_muon_matches_reference_equations():
    """SPEC A6, with exact polar and Jordan's shape scale."""
    beta, lr, wd = 0.95, 0.02, 0.05
    W0 = torch.randn(12, 4, dtype=torch.float64)
    grads = _grads((12, 4), 5, seed=4)
    W, B = W0.clone(), torch.zeros_like(W0)
    for (g,) in grads:
        B = beta * B + (1 - beta) * g
        M = (1 - beta) * g + beta * B
        W = (1 - lr * wd) * W - lr * math.sqrt(max(1, 12 / 4)) * polar(M, "svd")
    p = nn.Parameter(W0.clone())
    _steps(normopt.Muon([p], lr=lr, momentum=beta, weight_decay=wd, polar="svd"), [p], grads)
    torch.testing.assert_close(p.detach(), W, rtol=0, atol=1e-13)


@pytest.mark.parametrize(
    "rule,factor",
    [
        ("original", math.sqrt(3)),
        ("match_rms_adamw", 0.2 * math.sqrt(12)),
        ("rms_to_rms", math.sqrt(3)),
        ("none", 1.0),
    ],
)
def test_muon_shape_scales(rule, factor):
    p = nn.Parameter(torch.zeros(12, 4, dtype=torch.float64))
    g = torch.randn(12, 4, dtype=torch.float64)
    opt = normopt.Muon([p], lr=1.0, momentum=0.0, nesterov=False, polar="svd", adjust_lr=rule)
    p.grad = g
    opt.step()
    torch.testing.assert_close(p.detach(), -factor * polar(g, "svd"))


def test_muon_matches_torch_optim_muon():
    """Side by side with torch.optim.Muon (same coefficients, bf16 iteration, scale rule)."""
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch.optim.Muon needs torch >= 2.9")
    torch.manual_seed(0)
    shapes = [(64, 32), (32, 96), (48, 48)]
    ours = [nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [nn.Parameter(p.detach().clone()) for p in ours]
    o1 = normopt.Muon(ours, lr=0.02, weight_decay=0.01, polar_dtype="bfloat16")
    o2 = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.01)
    for _ in range(6):
        for a, b in zip(ours, theirs):
            g = torch.randn(a.shape)
            a.grad, b.grad = g.clone(), g.clone()
        o1.step()
        o2.step()
    for a, b in zip(ours, theirs):
        # Six steps of lr * scale * O, entries of O about 1/sqrt(n); both iterate in bf16 and
        # round differently, so agree to bf16's relative precision of the total move (~1e-2).
        diff = (b.detach() - a.detach()).abs().max()
        assert diff < 6 * 0.02 * math.sqrt(3) * 0.02, f"max difference {float(diff):.2e}"


def test_frank_wolfe_keeps_iterates_in_the_ball():
    R = 2.0
    p = nn.Parameter(torch.randn(10, 6, dtype=torch.float64) * 0.1)
    opt = normopt.SteepestDescent([p], norm=N.Spectral(), lr=0.3, radius=R, momentum=0.5)
    for (g,) in _grads((10, 6), 40, seed=5, scale=10.0):
        p.grad = g
        opt.step()
        assert float(torch.linalg.matrix_norm(p.detach(), 2)) <= R * (1 + 1e-12)


@pytest.mark.parametrize(
    "make,norm,s",
    [
        (lambda p, lr, wd: normopt.Lion([p], lr=lr, weight_decay=wd), N.LInf(), 1.0),
        (
            lambda p, lr, wd: normopt.Muon(
                [p], lr=lr, weight_decay=wd, polar="svd", adjust_lr="none"
            ),
            N.Spectral(),
            1.0,
        ),
        (
            lambda p, lr, wd: normopt.Muon(
                [p], lr=lr, weight_decay=wd, polar="svd", adjust_lr="original"
            ),
            N.Spectral(),
            math.sqrt(12 / 5),
        ),
        # quintic Newton-Schulz: singular values at most 1.2024 (SPEC A5, A9)
        (
            lambda p, lr, wd: normopt.Muon([p], lr=lr, weight_decay=wd, adjust_lr="none"),
            N.Spectral(),
            1.2024,
        ),
        (
            lambda p, lr, wd: normopt.LionK([p], K=N.KyFan(2), lr=lr, weight_decay=wd),
            N.KyFanDual(2),
            1.0,
        ),
    ],
    ids=["lion-linf", "muon-svd", "muon-svd-scaled", "muon-ns", "lionk-kyfan"],
)
def test_weight_decay_bound_holds_every_step(make, norm, s):
    """SPEC item 6 (A9): ||X_t|| <= s/wd + prod(1 - lr wd) max(0, ||X_0|| - s/wd), adversarial grads."""
    torch.manual_seed(0)
    lr, wd = 0.05, 0.5
    p = nn.Parameter(5.0 * torch.randn(12, 5, dtype=torch.float64))
    opt = make(p, lr, wd)
    size = lambda: float(norm.norm(p.detach().reshape(norm.fit(p.shape))))  # noqa: E731
    excess0 = max(0.0, size() - s / wd)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 1.0 + 0.9 * math.sin(t)
    )  # any schedule
    decay = 1.0
    for t in range(60):
        # adversarial: push along the current weights, with random sign flips and scales
        g = (
            -p.detach() * (1 + 10 * torch.rand(()))
            + torch.randn(12, 5, dtype=torch.float64) * 10 ** torch.randint(-3, 3, ()).item()
        )
        p.grad = g
        decay *= 1 - opt.param_groups[0]["lr"] * wd
        opt.step()
        sched.step()
        bound = s / wd + decay * excess0
        assert size() <= bound * (1 + 1e-9), f"step {t}"


@pytest.mark.parametrize("norm", [N.Frobenius(), N.LInf(), N.Spectral(), N.Schatten(3.0)], ids=repr)
def test_trust_region_step_length_and_alignment(norm):
    """SPEC item 7: ||x_{k+1} - x_k|| = eta and <m, x_{k+1} - x_k> = -eta ||m||_dual."""
    eta, alpha = 0.07, 0.3
    p = nn.Parameter(torch.randn(5, 4, dtype=torch.float64))
    opt = normopt.TrustRegion([p], norm=norm, lr=eta, alpha=alpha)
    m = None
    for (g,) in _grads((5, 4), 5, seed=6):
        m = g.clone() if m is None else (1 - alpha) * m + alpha * g
        before = p.detach().clone()
        p.grad = g
        opt.step()
        step = (p.detach() - before).reshape(norm.fit(p.shape))
        mm = m.reshape(norm.fit(p.shape))
        torch.testing.assert_close(norm.norm(step), torch.tensor(eta, dtype=torch.float64))
        torch.testing.assert_close((mm * step).sum(), -eta * norm.dual_norm(mm))


def test_mvr2_tracks_the_exact_gradient():
    """SPEC item 10: exact gradients and M_0 = grad f(X_0) give M_t = grad f(X_t) at every step."""
    torch.manual_seed(0)
    A = torch.randn(6, 6, dtype=torch.float64)
    H = A @ A.T / 6 + torch.eye(6, dtype=torch.float64)
    W = nn.Parameter(torch.randn(6, 4, dtype=torch.float64))
    opt = normopt.MuonMVR2([W], lr=0.05, momentum=0.9, polar="svd")

    def closure():
        opt.zero_grad()
        f = 0.5 * (W * (H @ W)).sum()
        f.backward()
        return f

    for _ in range(6):
        opt.step(closure)
        # the buffer used at this step equals the gradient at the iterate it was taken at
        X_prev = opt.state[W]["prev_param"]
        torch.testing.assert_close(opt.state[W]["momentum_buffer"], H @ X_prev, rtol=0, atol=1e-12)


def test_mvr2_needs_a_closure():
    W = nn.Parameter(torch.randn(3, 3))
    W.grad = torch.randn(3, 3)
    with pytest.raises(ValueError, match="closure"):
        normopt.MuonMVR2([W]).step()


def test_steepest_descent_unnormalized_is_A1():
    """A1: the step is -lr ||g||_dual dualize(g); l2 gives plain SGD."""
    g = torch.randn(5, 3, dtype=torch.float64)
    for norm in (N.L2(), N.LInf(), N.Spectral(), N.Nuclear()):
        p = nn.Parameter(torch.zeros(5, 3, dtype=torch.float64))
        opt = normopt.SteepestDescent([p], norm=norm, lr=0.1)
        p.grad = g
        opt.step()
        gv = g.reshape(norm.fit(g.shape))
        expect = -0.1 * norm.dual_norm(gv) * norm.dualize(gv)
        torch.testing.assert_close(p.detach(), expect.reshape(5, 3))


def test_modular_steepest_descent_is_A2():
    """A2: eta = lr sum_k ||G_k||_dual / s_k and s_l ||D_l||_l = lr eta for every block."""
    torch.manual_seed(1)
    blocks = [
        torch.randn(6, 4, dtype=torch.float64),
        torch.randn(4, 4, dtype=torch.float64),
        torch.randn(4, dtype=torch.float64),
    ]
    norms = [N.RMSToRMS(), N.Spectral(), N.LInf()]
    scales = [1.0, 2.0, 0.5]
    params = [nn.Parameter(torch.zeros_like(b)) for b in blocks]
    groups = [{"params": [p], "norm": n, "scale": s} for p, n, s in zip(params, norms, scales)]
    lr = 0.1
    opt = normopt.SteepestDescent(groups, norm=N.L2(), lr=lr, modular=True)
    for p, g in zip(params, blocks):
        p.grad = g
    opt.step()
    modular = N.Modular(norms, scales)
    eta = float(modular.dual_norm([g.reshape(n.fit(g.shape)) for g, n in zip(blocks, norms)]))
    for p, n, s in zip(params, norms, scales):
        torch.testing.assert_close(
            s * n.norm(p.detach().reshape(n.fit(p.shape))),
            torch.tensor(lr * eta, dtype=torch.float64),
        )
    # and the step is the Modular norm's dualize, scaled
    expect = modular.dualize([g.reshape(n.fit(g.shape)) for g, n in zip(blocks, norms)])
    for p, e in zip(params, expect):
        torch.testing.assert_close(p.detach().reshape(e.shape), -lr * eta * e)
    with pytest.raises(ValueError, match="modular"):
        normopt.SteepestDescent(
            [{"params": [params[0]], "modular": False}], norm=N.L2(), lr=lr, modular=True
        )


def test_same_shape_matrices_are_one_stack():
    calls = []
    from normopt import kernels

    real = kernels.polar

    def spy(stack, *a, **k):
        calls.append(tuple(stack.shape))
        return real(stack, *a, **k)

    kernels.polar = spy
    try:
        ps = [nn.Parameter(torch.randn(8, 4)) for _ in range(3)] + [nn.Parameter(torch.randn(4, 8))]
        opt = normopt.Muon(ps)
        for p in ps:
            p.grad = torch.randn_like(p)
        opt.step()
    finally:
        kernels.polar = real
    # (8, 4) matrices enter their transpose's stack (kernels.set_merge_transposed, on by default)
    assert calls == [(4, 4, 8)]
    calls.clear()
    kernels.set_merge_transposed(False)
    kernels.polar = spy
    try:
        opt = normopt.Muon(ps)
        opt.step()
    finally:
        kernels.polar = real
        kernels.set_merge_transposed(None)
    assert sorted(calls) == sorted([(3, 8, 4), (1, 4, 8)])


def test_fanion_and_mixtures():
    g = torch.randn(6, 5, dtype=torch.float64)
    U, S, Vh = torch.linalg.svd(g, full_matrices=False)
    for variant, expect in [
        ("fanion", U[:, :2] @ Vh[:2]),
        ("f_muon", 0.3 * polar(g, "svd") + 0.7 * g / g.norm()),
        ("s_muon", 0.3 * polar(g, "svd") + 0.7 * torch.sign(g)),
    ]:
        p = nn.Parameter(torch.zeros(6, 5, dtype=torch.float64))
        opt = normopt.Muon(
            [p],
            lr=1.0,
            momentum=0.0,
            nesterov=False,
            polar="svd",
            adjust_lr="none",
            variant=variant,
            variant_k=2,
            variant_a=0.3,
        )
        p.grad = g
        opt.step()
        torch.testing.assert_close(p.detach(), -expect)


@pytest.mark.parametrize("merge", [None, False])
@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize(
    "shape, batch_dims, split",
    [((12, 4), 0, 1), ((4, 12), 0, 1), ((12, 4), 0, 3), ((3, 8, 4), 1, 1), ((3, 8, 4), 1, 2)],
)
def test_transposed_group_is_the_transpose_of_the_plain_step(
    shape, batch_dims, split, foreach, merge
):
    """A group with transposed=True (tensors stored (d_in, d_out): HF's Conv1D, GPT-OSS's
    experts) steps exactly as the (d_out, d_in) tensor would, transposed: same momentum,
    same polar factor, same shape scale and weight decay, state in the parameter's shape."""
    from normopt import kernels

    kernels.set_merge_transposed(merge)
    try:
        g = torch.Generator().manual_seed(0)
        W = torch.randn(*shape, dtype=torch.float64, generator=g)  # (.., d_out, d_in)
        a, b = nn.Parameter(W.clone()), nn.Parameter(W.mT.clone())
        kw = dict(lr=0.1, momentum=0.9, polar="svd", weight_decay=0.1, foreach=foreach)
        group = {"algorithm": "muon", "batch_dims": batch_dims, "split": split}
        plain = normopt.Muon([{**group, "params": [a]}], **kw)
        flipped = normopt.Muon([{**group, "params": [b], "transposed": True}], **kw)
        for _ in range(2):
            G = torch.randn(*shape, dtype=torch.float64, generator=g)
            a.grad, b.grad = G.clone(), G.mT.clone()
            plain.step()
            flipped.step()
        torch.testing.assert_close(b.detach().mT, a.detach(), rtol=1e-12, atol=1e-12)
        buf = flipped.state[b]["momentum_buffer"]
        assert buf.shape == b.shape
        torch.testing.assert_close(buf.mT, plain.state[a]["momentum_buffer"])
        assert flipped.lr_scale(b) == plain.lr_scale(a)
    finally:
        kernels.set_merge_transposed(None)


def test_transposed_needs_a_matrix_and_splits_the_output_dim():
    conv = nn.Parameter(torch.randn(4, 3, 2, 2))
    with pytest.raises(ValueError, match="transposed"):
        normopt.Muon([{"params": [conv], "algorithm": "muon", "transposed": True}])
    w = nn.Parameter(torch.randn(4, 9))  # (d_in, d_out): the output dim 9 splits in 3
    normopt.Muon([{"params": [w], "algorithm": "muon", "transposed": True, "split": 3}])
    with pytest.raises(ValueError, match="split"):
        normopt.Muon([{"params": [w], "algorithm": "muon", "transposed": True, "split": 2}])


@pytest.mark.parametrize(
    "make,merged",
    [
        (
            lambda ps: normopt.SteepestDescent(
                ps, norm=N.Spectral(polar="newton_schulz"), lr=0.1, normalized=True
            ),
            True,
        ),
        (lambda ps: normopt.TrustRegion(ps, norm=N.Frobenius(), lr=0.1, alpha=0.5), True),
        (lambda ps: normopt.LionK(ps, K=N.Nuclear(), polar="newton_schulz", ns_steps=5), True),
        (lambda ps: normopt.SteepestDescent(ps, norm=N.RMSToRMS(), lr=0.1, normalized=True), False),
    ],
)
def test_transpose_equivariant_directions_merge_tall_matrices(make, merged):
    """Issue 11: merged transposed stacks wherever the direction commutes with transposition
    (not RMS->RMS, whose scale sqrt(d_out/d_in) does not); the steps equal the unmerged ones."""
    from normopt import kernels

    def run(merge: bool):
        torch.manual_seed(0)
        ps = [
            nn.Parameter(torch.randn(8, 4, dtype=torch.float64)),
            nn.Parameter(torch.randn(4, 8, dtype=torch.float64)),
        ]
        kernels.set_merge_transposed(merge)
        try:
            opt = make(ps)
            for _ in range(2):
                for p in ps:
                    p.grad = torch.randn_like(p)
                opt.step()
        finally:
            kernels.set_merge_transposed(None)
        return ps, [len(blocks) for _, blocks in opt._blocks.values()]

    a, blocks_merged = run(True)
    b, blocks_plain = run(False)
    assert blocks_merged == ([1] if merged else [2]) and blocks_plain == [2]
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=1e-12, rtol=0)
