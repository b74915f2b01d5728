"""The newer Muon family against plain float64 per-tensor references of the papers' updates.

NorMuon (arXiv 2510.05491), AdaMuon (arXiv 2507.11005), per-head orthogonalization; each
reference below is written from the update in the class docstring, one tensor at a time,
and compared with the optimizer step by step (exact polar factor, float64).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import normopt
from normopt.linalg import polar

F64 = torch.float64
SHAPES = [(6, 9), (12, 4), (6, 9), (2, 3, 3)]  # two of one shape (one stack), a tall, a conv


def _grads(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, dtype=F64, generator=g) for s in SHAPES] for _ in range(n)]


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, dtype=F64, generator=g)) for s in SHAPES]


def _run(opt, params, grads):
    traj = []
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        traj.append([p.detach().clone() for p in params])
    return traj


def _momentum(B, g, beta, nesterov):
    B = beta * B + (1 - beta) * g
    return B, ((1 - beta) * g + beta * B) if nesterov else B


def _jordan(m, n):
    return math.sqrt(max(1.0, m / n))


def normuon_reference(W0, grads, lr, beta, beta2, eps, wd, nesterov, method="svd"):
    """arXiv 2510.05491 / the authors' normuon_update, for one matrix-like tensor."""
    W = W0.clone()
    m = W.shape[0]
    n = W[0].numel()
    B = torch.zeros_like(W)
    v = torch.zeros(m, 1, dtype=F64)
    out = []
    for g in grads:
        B, M = _momentum(B, g, beta, nesterov)
        O = polar(M.reshape(m, n), method)
        v = beta2 * v + (1 - beta2) * (O * O).mean(dim=1, keepdim=True)
        N = O / (v.sqrt() + eps)
        N = N * (torch.linalg.norm(O) / (torch.linalg.norm(N) + eps))
        W = (1 - lr * wd) * W - lr * _jordan(m, n) * N.reshape(W.shape)
        out.append(W.clone())
    return out


def adamuon_reference(W0, grads, lr, beta, beta2, eps, wd, nesterov, method="svd"):
    """arXiv 2507.11005 / the authors' adamuon.py, for one matrix-like tensor."""
    W = W0.clone()
    m = W.shape[0]
    n = W[0].numel()
    B = torch.zeros_like(W)
    v = torch.zeros(m, n, dtype=F64)
    out = []
    for t, g in enumerate(grads, start=1):
        B, M = _momentum(B, g, beta, nesterov)
        O = polar(M.reshape(m, n), method)
        v = beta2 * v + (1 - beta2) * O * O
        N = O / ((v / (1 - beta2**t)).sqrt() + eps)
        N = N * math.sqrt(min(m, n)) / (torch.linalg.norm(N) + eps)
        W = (1 - lr * wd) * W - lr * 0.2 * math.sqrt(max(m, n)) * N.reshape(W.shape)
        out.append(W.clone())
    return out


def _matches_reference(cls, reference, beta2, eps, seed, nesterov, foreach, method):
    """Six steps of ``cls`` on :func:`_params` equal ``reference``'s, step by step; the
    optimizer and its parameters come back for the test's own check of the state."""
    lr, beta, wd = 0.02, 0.9, 0.1
    params, grads = _params(), _grads(6, seed=seed)
    W0 = [p.detach().clone() for p in params]
    opt = cls(
        params, lr=lr, momentum=beta, beta2=beta2, eps=eps, weight_decay=wd,
        nesterov=nesterov, polar=method, foreach=foreach,
    )  # fmt: skip
    traj = _run(opt, params, grads)
    for i, w0 in enumerate(W0):
        gi = [gs[i] for gs in grads]
        ref = reference(w0, gi, lr, beta, beta2, eps, wd, nesterov, method)
        for step, (a, b) in enumerate(zip(traj, ref)):
            torch.testing.assert_close(a[i], b, rtol=0, atol=1e-11, msg=f"param {i} step {step}")
    return opt, params


# the exact polar factor of a wide matrix has rows of equal norm (NorMuon's per-row scale is
# then uniform): Newton-Schulz (float64, 5 steps) makes every shape count
reference_cases = pytest.mark.parametrize(
    "nesterov, foreach, method",
    [
        (nesterov, foreach, method)
        for nesterov in (True, False)
        for foreach in (True, False)
        for method in ("svd", "newton_schulz")
    ],
)


@reference_cases
def test_normuon_matches_reference(nesterov, foreach, method):
    opt, params = _matches_reference(
        normopt.NorMuon, normuon_reference, 0.8, 1e-10, 1, nesterov, foreach, method
    )
    assert opt.state[params[0]]["second_momentum_buffer"].shape == (6, 1)


@reference_cases
def test_adamuon_matches_reference(nesterov, foreach, method):
    opt, params = _matches_reference(
        normopt.AdaMuon, adamuon_reference, 0.99, 1e-8, 2, nesterov, foreach, method
    )
    assert int(opt.state[params[0]]["step"]) == 6


def test_adamuon_update_rms_is_a_fifth_of_lr():
    """With the default shape rule, every AdaMuon update has RMS 0.2 lr (the paper's alignment)."""
    p = nn.Parameter(torch.zeros(16, 24, dtype=F64))
    opt = normopt.AdaMuon([p], lr=0.1, polar="svd")
    p.grad = torch.randn(16, 24, dtype=F64)
    opt.step()
    rms = float(p.detach().square().mean().sqrt())
    assert abs(rms - 0.02) < 1e-9


def test_normuon_keeps_the_update_norm_of_muon():
    # Newton-Schulz: the exact polar factor of a wide matrix has rows of equal norm, which
    # NorMuon's first step leaves as they are
    p, q = (nn.Parameter(torch.zeros(8, 12, dtype=F64)) for _ in range(2))
    g = torch.randn(8, 12, dtype=F64)
    for opt, x in ((normopt.NorMuon([p]), p), (normopt.Muon([q]), q)):
        x.grad = g.clone()
        opt.step()
    torch.testing.assert_close(torch.linalg.norm(p.detach()), torch.linalg.norm(q.detach()))
    assert not torch.allclose(p, q)


# -- per-head orthogonalization -------------------------------------------------------------
def per_head_reference(W0, grads, heads, lr, beta, split=1):
    """Muon on each head's block of rows as its own matrix (Jordan's scale per head)."""
    W, B = W0.clone(), torch.zeros_like(W0)
    out = []
    for g in grads:
        B, M = _momentum(B, g, beta, True)
        blocks = M.reshape(split * heads, -1, M.shape[-1])  # (split * heads, d_head, d_in)
        O = torch.stack([polar(b, "svd") * _jordan(*b.shape) for b in blocks])
        W = W - lr * O.reshape(W.shape)
        out.append(W.clone())
    return out


@pytest.mark.parametrize("split", [1, 3])
@pytest.mark.parametrize("foreach", [True, False])
def test_per_head_orthogonalization_matches_separate_heads(split, foreach):
    heads, d_head, d_in = 4, 3, 10
    gen = torch.Generator().manual_seed(5)
    shape = (split * heads * d_head, d_in)
    params = [nn.Parameter(torch.randn(shape, dtype=F64, generator=gen)) for _ in range(2)]
    grads = [[torch.randn(shape, dtype=F64, generator=gen) for _ in params] for _ in range(4)]
    W0 = [p.detach().clone() for p in params]
    opt = normopt.Muon(
        [{"params": params, "num_heads": heads, "split": split}],
        lr=0.05, momentum=0.9, polar="svd", foreach=foreach,
    )  # fmt: skip
    traj = _run(opt, params, grads)
    for i, w0 in enumerate(W0):
        ref = per_head_reference(w0, [gs[i] for gs in grads], heads, 0.05, 0.9, split)
        for a, b in zip(traj, ref):
            torch.testing.assert_close(a[i], b, rtol=0, atol=1e-12)
    # each head's update is orthogonal on its own rows: its rows are orthonormal
    D = (traj[0][0] - W0[0]).reshape(split * heads, d_head, d_in) / -0.05
    eye = torch.eye(d_head, dtype=F64).expand(split * heads, -1, -1)
    torch.testing.assert_close(D @ D.mT, eye, rtol=0, atol=1e-10)
    assert opt.state[params[0]]["momentum_buffer"].shape == shape


def test_per_head_normuon_is_per_head():
    """NorMuon with num_heads: every head is a matrix (rows and rescale per head)."""
    heads, d_head, d_in = 2, 4, 6
    p = nn.Parameter(torch.zeros(heads * d_head, d_in, dtype=F64))
    g = torch.randn(heads * d_head, d_in, dtype=F64)
    opt = normopt.NorMuon([{"params": [p], "num_heads": heads}], lr=1.0, polar="svd")
    p.grad = g.clone()
    opt.step()
    M = 0.05 * g + 0.95 * 0.05 * g  # Nesterov's first step
    expected = []
    for b in M.reshape(heads, d_head, d_in):
        O = polar(b, "svd")
        v = 0.05 * (O * O).mean(dim=1, keepdim=True)
        N = O / (v.sqrt() + 1e-10)
        expected.append(-N * torch.linalg.norm(O) / (torch.linalg.norm(N) + 1e-10))
    torch.testing.assert_close(p.detach(), torch.cat(expected), rtol=0, atol=1e-12)
    assert opt.state[p]["second_momentum_buffer"].shape == (heads, d_head, 1)


def test_num_heads_must_divide_the_rows():
    with pytest.raises(ValueError, match="num_heads"):
        normopt.Muon([{"params": [nn.Parameter(torch.randn(6, 4))], "num_heads": 4}])
    with pytest.raises(ValueError, match="num_heads"):
        normopt.Muon([nn.Parameter(torch.randn(6, 4))], num_heads=0)


@pytest.mark.parametrize(
    "make,arg",
    [
        (lambda p: normopt.NorMuon(p, beta2=1.0), "beta2"),
        (lambda p: normopt.NorMuon(p, eps=0.0), "eps"),
        (lambda p: normopt.AdaMuon(p, beta2=-0.1), "beta2"),
        (lambda p: normopt.AdaMuon(p, eps=float("nan")), "eps"),
        (lambda p: normopt.NorMuon(p, momentum=1.0), "momentum"),
        (lambda p: normopt.AdaMuon(p, lr=-1.0), "lr"),
    ],
)
def test_family_bad_arguments(make, arg):
    with pytest.raises(ValueError, match=arg):
        make([nn.Parameter(torch.randn(4, 3))])


# -- the step engine's promises: skip bit for bit, no host reads, one graph ---------------------
FAMILY = [
    lambda ps: normopt.NorMuon(ps),
    lambda ps: normopt.AdaMuon(ps),
    lambda ps: normopt.Muon([{"params": ps, "num_heads": 2}]),
    lambda ps: normopt.Muon(ps, ns_steps=4, ns_coefficients="turbo_muon"),
]
FAMILY_IDS = ["normuon", "adamuon", "muon-heads", "muon-turbo"]


@pytest.mark.parametrize("make", FAMILY, ids=FAMILY_IDS)
def test_skipped_step_leaves_state_bit_for_bit(make):
    params = [nn.Parameter(torch.randn(8, 6)), nn.Parameter(torch.randn(8, 6))]
    opt = make(params)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    before = [p.detach().clone() for p in params]
    state = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in params}
    params[0].grad = torch.randn_like(params[0])
    params[1].grad = torch.full_like(params[1], float("nan"))
    opt.step()
    assert int(opt.skipped_steps) == 1
    for p, b in zip(params, before):
        assert torch.equal(p, b)
        for k, v in opt.state[p].items():
            assert torch.equal(v, state[id(p)][k]), k


@pytest.mark.parametrize("make", FAMILY, ids=FAMILY_IDS)
def test_meta_device_step_completes(make):
    params = [nn.Parameter(torch.empty(8, 6, device="meta")) for _ in range(2)]
    opt = make(params)
    for p in params:
        p.grad = torch.empty_like(p)
    opt.step()
    opt.step()
    assert all(v.device.type == "meta" for st in opt.state.values() for v in st.values())


@pytest.mark.integration  # torch.compile / dynamo traces
@pytest.mark.parametrize("make", FAMILY, ids=FAMILY_IDS)
def test_no_graph_breaks(make):
    params = [nn.Parameter(torch.randn(8, 6)), nn.Parameter(torch.randn(4, 6))]
    opt = make(params)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()  # state exists: the explained step is a steady-state one
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(opt.step)()
    assert explanation.graph_break_count == 0, explanation.break_reasons


# -- named coefficient schedules in Muon ------------------------------------------------------
@pytest.mark.parametrize("name,steps", [("deepseek_v4", 10), ("turbo_muon", 4), ("cans_cubic", 10)])
def test_muon_takes_a_named_schedule(name, steps):
    W0 = torch.randn(12, 5, dtype=F64)
    grads = [torch.randn(12, 5, dtype=F64) for _ in range(3)]
    p = nn.Parameter(W0.clone())
    opt = normopt.Muon([p], lr=0.02, momentum=0.9, ns_steps=steps, ns_coefficients=name)
    W, B = W0.clone(), torch.zeros_like(W0)
    for g in grads:
        p.grad = g.clone()
        opt.step()
        B, M = _momentum(B, g, 0.9, True)
        O = polar(M, "newton_schulz", steps, coefficients=name)
        W = W - 0.02 * _jordan(12, 5) * O
    torch.testing.assert_close(p.detach(), W, rtol=0, atol=1e-12)
    assert opt.state_dict()["param_groups"][0]["ns_coefficients"] == name


def test_ns_coefficients_must_be_a_schedule_name():
    w = [nn.Parameter(torch.randn(4, 3))]
    with pytest.raises(ValueError, match="ns_coefficients"):
        normopt.Muon(w, ns_coefficients="nope")
    with pytest.raises(ValueError, match="ns_coefficients"):
        normopt.Muon(w, polar="svd", ns_coefficients="jordan")


def test_normuon_state_of_another_layout_is_a_clear_error():
    a = nn.Parameter(torch.randn(6, 4))
    opt = normopt.NorMuon([a])
    a.grad = torch.randn(6, 4)
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["second_momentum_buffer"] = torch.zeros(3, 1)
    b = nn.Parameter(torch.randn(6, 4))
    opt2 = normopt.NorMuon([b])
    opt2.load_state_dict(sd)
    b.grad = torch.randn(6, 4)
    with pytest.raises(ValueError, match="second_momentum_buffer"):
        opt2.step()
