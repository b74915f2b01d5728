"""Merged stacks in Muon: (m, n) and (n, m) matrices orthogonalized as one batch."""

import pytest
import torch
from torch import nn

import normopt
from normopt import kernels
from normopt.kernels import StackPlan, plan_stacks


def test_plan_groups_transposed_shapes():
    shapes = [(8, 4), (4, 8), (4, 8), (5, 5), (2, 8, 4), (2, 4, 8), (7,)]
    f64, f32 = torch.float64, torch.float32
    keys = [f64, f64, f32, f64, f64, f64, f64]
    plans = plan_stacks(shapes, keys, [True] * len(shapes))
    assert plans == [
        StackPlan((0, 1), (True, False), (4, 8)),
        StackPlan((2,), (False,), (4, 8)),  # another dtype: its own stack
        StackPlan((3,), (False,), (5, 5)),
        StackPlan((4, 5), (True, False), (2, 4, 8)),  # leading dims must agree
        StackPlan((6,), (False,), (7,)),  # a vector is never transposed
    ]
    unmerged = plan_stacks(shapes, keys, [False] * len(shapes))
    assert [p.indices for p in unmerged] == [(0,), (1,), (2,), (3,), (4,), (5,), (6,)]
    with pytest.raises(ValueError):
        plan_stacks(shapes, keys[:2], [True])


def test_gather_and_scatter_round_trip():
    bufs = [torch.randn(8, 4), torch.randn(4, 8), torch.randn(8, 2, 2)]
    shapes = [(8, 4), (4, 8), (8, 4)]  # a conv-like kernel, flattened to (d_out, -1)
    (plan,) = plan_stacks(shapes, [None] * 3, [True] * 3)
    stack = kernels.gather(bufs, plan)
    assert stack.shape == (3, 4, 8)
    assert torch.equal(stack[0], bufs[0].mT) and torch.equal(stack[1], bufs[1])
    for j, i in enumerate(plan.indices):
        assert torch.equal(kernels.scatter_one(stack, j, plan, tuple(bufs[i].shape)), bufs[i])


def _model_params(dtype):
    torch.manual_seed(0)
    shapes = [(24, 8), (8, 24), (8, 24), (24, 8), (12, 12), (6, 3, 2, 2), (4, 24)]
    return [nn.Parameter(torch.randn(s, dtype=dtype)) for s in shapes]


def _run(params, merge, steps=3, group=None, **kw):
    kernels.set_merge_transposed(merge)
    arg = params if group is None else [{"params": params, **group}]
    opt = normopt.Muon(arg, lr=0.05, weight_decay=0.01, **kw)
    directs = []
    real = opt._direct

    def spy(stack, group):
        directs.append(tuple(stack.shape))
        return real(stack, group)

    opt._direct = spy
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
        opt.step()
    return [p.detach().clone() for p in params], directs, opt


@pytest.mark.parametrize(
    "kw",
    [
        {"polar": "newton_schulz"},
        {"polar": "polar_express"},
        {"polar": "gram_newton_schulz"},
        {"polar": "svd"},
        {"polar": "newton_schulz", "variant": "f_muon"},
        {"polar": "polar_express", "variant": "s_muon"},
    ],
    ids=lambda kw: "-".join(str(v) for v in kw.values()),
)
def test_merged_equals_unmerged_in_float64(kw):
    base = _model_params(torch.float64)
    a, stacks_a, _ = _run([nn.Parameter(p.detach().clone()) for p in base], False, **kw)
    b, stacks_b, _ = _run([nn.Parameter(p.detach().clone()) for p in base], True, **kw)
    # polar(G^T) = polar(G)^T exactly in exact arithmetic, and the iterations compute it
    # literally so; a merged stack holds the tall matrices as transposed *copies*, whose
    # memory layout lets BLAS block its sums differently: equal to float64 round-off.
    for x, y in zip(a, b):
        assert float((x - y).abs().max()) <= 1e-13
    assert sorted(set(stacks_a)) == [(1, 4, 24), (1, 6, 12), (1, 12, 12), (2, 8, 24), (2, 24, 8)]
    assert sorted(set(stacks_b)) == [(1, 4, 24), (1, 6, 12), (1, 12, 12), (4, 8, 24)]


def test_merged_is_bitwise_when_nothing_needs_transposing():
    base = [nn.Parameter(torch.randn(8, 24, dtype=torch.float64)) for _ in range(3)]
    a, _, _ = _run([nn.Parameter(p.detach().clone()) for p in base], False)
    b, _, _ = _run([nn.Parameter(p.detach().clone()) for p in base], True)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_merge_skips_groups_with_their_own_norm():
    p = [nn.Parameter(torch.randn(8, 4)), nn.Parameter(torch.randn(4, 8))]
    kernels.set_merge_transposed(True)
    opt = normopt.Muon([{"params": p, "norm": normopt.norms.ColumnRMS()}])
    seen = []
    real = opt._direct
    opt._direct = lambda s, g: seen.append(tuple(s.shape)) or real(s, g)
    for q in p:
        q.grad = torch.randn_like(q)
    opt.step()
    assert sorted(seen) == [(1, 4, 8), (1, 8, 4)]


def test_merge_with_expert_batch_dims():
    experts = [
        torch.randn(3, 16, 6, dtype=torch.float64),
        torch.randn(3, 6, 16, dtype=torch.float64),
    ]
    group = {"batch_dims": 1}
    a, stacks_a, _ = _run([nn.Parameter(e.clone()) for e in experts], False, group=group)
    b, stacks_b, _ = _run([nn.Parameter(e.clone()) for e in experts], True, group=group)
    assert set(stacks_a) == {(1, 3, 16, 6), (1, 3, 6, 16)}
    assert set(stacks_b) == {(2, 3, 6, 16)}
    for x, y in zip(a, b):
        assert x.shape == y.shape
        assert float((x - y).abs().max()) <= 1e-13


@pytest.mark.parametrize("method", ["newton_schulz", "polar_express"])
def test_muon_on_the_fused_backend_matches_the_reference(method):
    """Merged stacks on the fused backend against unmerged stacks on the reference backend
    (the CPU's automatic choice is fused too: without forcing it, both sides were fused)."""
    base = _model_params(torch.float32)
    with kernels.backend("reference"):
        a, _, _ = _run([nn.Parameter(p.detach().clone()) for p in base], False, polar=method)
    with kernels.backend("fused"):
        b, _, _ = _run([nn.Parameter(p.detach().clone()) for p in base], True, polar=method)
    for x, y in zip(a, b):
        assert float((x - y).abs().max()) <= 1e-5


def test_muon_hands_the_schedule_to_the_fast_path(monkeypatch):
    calls = []

    def spy(stack, coeffs, norm_scale, compute_dtype=None, backend=None):
        calls.append((tuple(stack.shape), list(coeffs), norm_scale, compute_dtype, backend))
        return torch.zeros_like(stack)

    # Muon reaches the fast paths through normopt.kernels.polar, the one entry point
    from normopt.kernels import entry

    monkeypatch.setattr(entry, "select_backend", lambda device: "compiled")
    monkeypatch.setattr(entry, "quintic_polar", spy)
    p = nn.Parameter(torch.randn(6, 10))
    opt = normopt.Muon([p], polar="polar_express", ns_steps=7, polar_dtype="bfloat16")
    p.grad = torch.randn_like(p)
    opt.step()
    sched = normopt.linalg.get_schedule("polar_express")
    assert calls == [
        ((1, 6, 10), [sched.at(i) for i in range(7)], sched.norm_scale, torch.bfloat16, "compiled")
    ]
    # The svd and Gram methods keep the linalg path whatever the backend.
    calls.clear()
    opt = normopt.Muon([p], polar="gram_newton_schulz")
    opt.step()
    assert calls == []
