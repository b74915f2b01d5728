"""Robustness of every optimizer (issue 7): whatever users feed normopt, weights are never
silently corrupted and every error says what was wrong.

Every check runs on every row of ``test_common.CASES``: non-finite gradients under both
policies, huge-but-finite gradients (overflow of the update), degenerate inputs, every
dtype, aliasing between gradients and state, bad arguments, and a hypothesis fuzz.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from optim_cases import BY_NAME, CASES, IDS, Case, build_optimizer, make_mlp, train_steps
from torch import Tensor, nn

import normopt
from normopt import norms as N
from normopt.optim import NonFiniteGradientError, NonFiniteUpdateError

# Rows whose step moves the weights even for a zero gradient (decoupled decay, Frank-Wolfe).
DECAYING = {"muon-wd", "sd-frank-wolfe", "normuon-plain"}
# Rows whose step does not depend on the gradient's scale (normalized directions) on
# matrices: all but the unnormalized steepest descent (step ~ ||g||) and Huber's smoothed
# nuclear norm (small singular values stay proportional).
NOT_SCALE_FREE = {"sd-l2", "sd-modular", "lionk-huber"}
# Rows that keep no state (steepest descent without momentum).
STATELESS = {"sd-linf-normalized", "sd-modular"}


# -- helpers -------------------------------------------------------------------------------
class _Holder(nn.Module):
    """A module holding loose tensors, for rows that want a model (routing sees roles by ndim)."""

    def __init__(self, tensors: list[nn.Parameter]) -> None:
        super().__init__()
        for i, t in enumerate(tensors):
            self.register_parameter(f"p{i}", t)


def _make(case: Case, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return case.make(_Holder(params)) if case.takes_model else case.make(params)


def _policy(opt: torch.optim.Optimizer, policy: str) -> None:
    for g in opt.param_groups:
        g["nonfinite"] = policy


def _snap(opt: torch.optim.Optimizer) -> list[tuple[Tensor, dict[str, Any] | None]]:
    """Copies of every parameter and its state, in param-group order."""
    out = []
    for g in opt.param_groups:
        for p in g["params"]:
            st_ = opt.state.get(p)  # .get: looking must not create a state entry
            copy = (
                None
                if st_ is None
                else {k: v.clone() if isinstance(v, Tensor) else v for k, v in st_.items()}
            )
            out.append((p.detach().clone(), copy))
    return out


def _assert_same(a: list, b: list) -> None:
    """Bit for bit: weights, state keys, state values."""
    assert len(a) == len(b)
    for (pa, sa), (pb, sb) in zip(a, b):
        assert torch.equal(pa, pb), "weights changed"
        assert (sa is None) == (sb is None), "state created or dropped"
        if sa is not None:
            assert sa.keys() == sb.keys()
            for k in sa:
                if isinstance(sa[k], Tensor):
                    assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
                else:
                    assert sa[k] == sb[k], k


def _all_finite(opt: torch.optim.Optimizer) -> bool:
    for p, st_ in _snap(opt):
        if not bool(torch.isfinite(p).all()):
            return False
        for v in (st_ or {}).values():
            if (
                isinstance(v, Tensor)
                and v.is_floating_point()
                and not bool(torch.isfinite(v).all())
            ):
                return False
    return True


def _grads(params: list[Tensor], scale: float = 1.0, seed: int = 0) -> list[Tensor | None]:
    """Random gradients of magnitude in [scale/2, scale] (so they stay in range), None for
    parameters that do not require a gradient."""
    gen = torch.Generator().manual_seed(seed)
    out: list[Tensor | None] = []
    for p in params:
        if not p.requires_grad:
            out.append(None)
            continue
        u = torch.rand(p.shape, generator=gen, dtype=torch.float64)
        sign = torch.randint(0, 2, p.shape, generator=gen, dtype=torch.float64) * 2 - 1
        out.append((sign * (0.5 + 0.5 * u) * scale).to(p.dtype))
    return out


def _step(case: Case, opt: torch.optim.Optimizer, params: list, grads: list) -> None:
    """One step with the given gradients (MuonMVR2's closure sets the same ones each call)."""

    def closure():
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.clone()
        return torch.zeros(())

    if case.needs_closure:
        opt.step(closure)
    else:
        closure()
        opt.step()


def _names(case: Case, model: nn.Module) -> list[str]:
    """How a message names each parameter: by name when the optimizer got names."""
    if case.takes_model:
        return [re.escape(repr(n)) for n, _ in model.named_parameters()]
    return [r"param \d+ of group \d+" for _ in model.parameters()]


# -- non-finite gradients ------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_nonfinite_gradient_raise_or_skip_leaves_weights_and_state_untouched(case):
    model = make_mlp()
    opt = build_optimizer(case, model)
    params = list(model.parameters())
    names = _names(case, model)
    train_steps(case, model, opt, 2)  # some state to protect
    trainable = [i for i, p in enumerate(params) if p.requires_grad]
    # a matrix (Muon's part) and the last tensor (the head's bias: AdamW's part of Muon)
    first, last = trainable[0], trainable[-1]
    for target, bad, policy in [
        (first, math.nan, "raise"),
        (first, math.inf, "skip"),
        (last, -math.inf, "raise"),
        (last, math.nan, "skip"),
    ]:
        _policy(opt, policy)
        before = _snap(opt)
        grads = _grads(params, seed=target)
        grads[target].view(-1)[1] = bad
        if policy == "raise":
            with pytest.raises(NonFiniteGradientError, match=names[target]):
                _step(case, opt, params, grads)
        else:
            _step(case, opt, params, grads)
        _assert_same(before, _snap(opt))
    _policy(opt, "raise")
    before = _snap(opt)
    _step(case, opt, params, _grads(params))  # still steps normally afterwards
    assert _all_finite(opt)
    assert any(not torch.equal(a, p) for (a, _), p in zip(before, params))


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_mvr2_nonfinite_second_gradient(policy):
    """MuonMVR2's second gradient (at the previous iterate, same batch) is checked too."""
    case = BY_NAME["muon-mvr2"]
    model = make_mlp()
    opt = build_optimizer(case, model)
    train_steps(case, model, opt, 2)
    _policy(opt, policy)
    params = list(model.parameters())
    calls = []

    def closure():
        calls.append(1)
        for i, (p, g) in enumerate(zip(params, _grads(params, seed=3))):
            if i == 2 and len(calls) == 2:
                g = g.clone()
                g[0, 0] = math.nan  # NaN only at X_{t-1}
            p.grad = g
        return torch.zeros(())

    before = _snap(opt)
    if policy == "raise":
        with pytest.raises(NonFiniteGradientError, match=r"previous iterate.*'2\.weight'"):
            opt.step(closure)
    else:
        opt.step(closure)
    assert len(calls) == 2
    _assert_same(before, _snap(opt))


def test_nonfinite_gradient_is_named_when_params_come_with_names():
    model = make_mlp()
    for opt in (
        normopt.Lion(model.named_parameters(), lr=1e-3, nonfinite="raise"),
        normopt.SteepestDescent(
            list(model.named_parameters()), norm=N.LInf(), lr=1e-3, nonfinite="raise"
        ),
        normopt.Muon(list(model.named_parameters()), nonfinite="raise"),
    ):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        model[2].bias.grad = torch.full_like(model[2].bias, math.inf)
        with pytest.raises(NonFiniteGradientError, match=r"'2\.bias'"):
            opt.step()


# -- huge but finite gradients: the update may overflow ------------------------------------
HUGE = [(torch.float32, 1e30), (torch.float32, 3e38), (torch.bfloat16, 1e38), (torch.float16, 6e4)]


@pytest.mark.parametrize("dtype,scale", HUGE, ids=[f"{d}-{s:g}"[6:] for d, s in HUGE])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_huge_finite_gradients_never_give_nonfinite_weights_or_state(case, dtype, scale):
    model = make_mlp(dtype)
    opt = build_optimizer(case, model)
    params = list(model.parameters())
    _step(case, opt, params, _grads(params))  # some state to protect
    for policy in ("raise", "skip"):
        _policy(opt, policy)
        before = _snap(opt)
        try:
            _step(case, opt, params, _grads(params, scale, seed=7))
            raised = False
        except NonFiniteUpdateError:
            raised = True
        assert _all_finite(opt), f"{case.name}: NaN/Inf written at |g| = {scale:g}"
        if raised:  # an overflow is undone bit for bit
            _assert_same(before, _snap(opt))
        assert all(p.dtype == dtype for p in params)


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_overflowing_update_is_undone_and_skipping_it_is_as_if_it_never_came(policy):
    """AdamW's g*g overflows float32 at |g| = 1e30: the base class undoes the step; under
    "skip" the trajectory equals one that never saw that gradient, bit for bit."""
    case = BY_NAME["muon"]

    def run(huge_step: bool) -> list[Tensor]:
        model = make_mlp()
        opt = build_optimizer(case, model)
        _policy(opt, policy)
        params = list(model.parameters())
        for t in range(4):
            if huge_step and t == 2:
                before = _snap(opt)
                grads = _grads(params, seed=100)
                grads[-1] = torch.full_like(params[-1], 1e30)  # the head's bias: AdamW
                if policy == "raise":
                    with pytest.raises(NonFiniteUpdateError, match=r"'exp_avg_sq' of '4\.bias'"):
                        _step(case, opt, params, grads)
                else:
                    _step(case, opt, params, grads)
                _assert_same(before, _snap(opt))
            _step(case, opt, params, _grads(params, seed=t))
        return [p.detach().clone() for p in params]

    for a, b in zip(run(True), run(False)):
        assert torch.equal(a, b)


def test_update_errors_are_gradient_errors_and_normal_steps_are_not_guarded():
    assert issubclass(NonFiniteUpdateError, NonFiniteGradientError)
    model = make_mlp()
    opt = normopt.Muon(model)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e6
    assert opt._precheck() == "fast"  # no snapshot on ordinary steps
    model[0].weight.grad.fill_(1e30)
    assert opt._precheck() == "guard"
    opt16 = normopt.Lion(make_mlp(torch.float16).parameters())
    for g in opt16.param_groups:
        for p in g["params"]:
            p.grad = torch.zeros_like(p)
    assert opt16._precheck() == "guard"  # float16's range is 65504: always checked


def test_weights_that_were_already_infinite_are_not_blamed_on_the_update():
    w = nn.Parameter(torch.tensor([[math.inf, 1.0], [2.0, 3.0]], dtype=torch.float16))
    opt = normopt.Lion([w], lr=0.5)  # float16: every step is guarded
    w.grad = torch.ones_like(w)
    opt.step()  # the Inf was there before: no NonFiniteUpdateError, the rest moves
    assert float(w[0, 0].detach()) == math.inf and float(w[1, 0].detach()) == 1.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "case", [c for c in CASES if c.name not in NOT_SCALE_FREE], ids=lambda c: c.name
)
def test_tiny_and_huge_gradients_step_like_unit_ones_where_the_step_is_scale_free(case, dtype):
    """On matrices every row but three normalizes its direction, so gradients of 1e-30 and
    1e30 must give the step of the same gradient at scale 1 (no underflow, no overflow)."""

    def run(scale: float) -> list[Tensor]:
        torch.manual_seed(0)
        params = [nn.Parameter(torch.randn(s).to(dtype)) for s in [(8, 5), (5, 8), (1, 6)]]
        # routing a model sends the (1, 6) vector in disguise to AdamW (not scale-free: eps),
        # so a model-taking optimizer gets the tensors themselves: its algorithm on all three
        # (muon-heads reads named parameters, not routes: the holder module is that already)
        opt = _make(case, params) if case.name == "muon-heads" else case.make(params)
        for t in range(2):
            _step(case, opt, params, _grads(params, scale, seed=t))
        return [p.detach().float() for p in params]

    ref = run(1.0)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for scale in (1e-30, 1e30):
        for a, b in zip(run(scale), ref):
            assert torch.allclose(a, b, atol=tol, rtol=0), f"{case.name} at scale {scale:g}"


@pytest.mark.parametrize("name", sorted(NOT_SCALE_FREE))
def test_tiny_and_huge_gradients_where_the_step_scales_with_them(name):
    case = BY_NAME[name]
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(8, 5)), nn.Parameter(torch.randn(5, 8))]
    opt = _make(case, params)
    before = [p.detach().clone() for p in params]
    _step(case, opt, params, _grads(params, 1e-30))
    for a, p in zip(before, params):  # a step of ~1e-30 leaves O(1) weights as they were
        assert torch.isfinite(p).all() and torch.allclose(a, p, atol=1e-6, rtol=0)
    _policy(opt, "skip")
    _step(case, opt, params, _grads(params, 1e30))
    assert _all_finite(opt)  # taken where representable, skipped where it overflowed


# -- degenerate inputs -----------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_zero_gradients_from_zero_grad_set_to_none_false(case):
    model = make_mlp()
    opt = build_optimizer(case, model)
    params = list(model.parameters())
    x = torch.randn(4, 6)
    model(x).square().mean().backward()
    opt.zero_grad(set_to_none=False)  # gradients are zero tensors, not None
    before = [p.detach().clone() for p in params]
    if case.needs_closure:
        opt.step(lambda: None)
    else:
        opt.step()
    assert _all_finite(opt)
    if case.name not in DECAYING:
        for a, p in zip(before, params):
            assert torch.equal(a, p), "a zero gradient from a fresh state must not move weights"


def _rank(r: int, m: int, n: int, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(m, r, generator=gen) @ torch.randn(r, n, generator=gen)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_degenerate_shapes_and_ranks_give_finite_steps(case):
    shapes = [(8, 6), (6, 8), (1, 7), (7, 1), (0, 3), (2, 3, 2, 2)]
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(s)) for s in shapes]
    opt = _make(case, params)
    grads = [_rank(1, 8, 6), _rank(2, 6, 8), torch.randn(1, 7), torch.randn(7, 1)]
    grads += [torch.zeros(0, 3), _rank(1, 2, 12).reshape(2, 3, 2, 2)]
    empty_before = params[4].detach().clone()
    for _ in range(3):
        _step(case, opt, params, grads)
    assert _all_finite(opt)
    assert params[4].shape == empty_before.shape


SPECTRAL_ROWS = [
    "muon",
    "muon-polar-express",
    "muon-gram",
    "sd-spectral-nesterov",
    "lionk-nuclear",
]


@pytest.mark.parametrize("name", SPECTRAL_ROWS)
def test_spectral_steps_keep_the_rank_of_a_rank_deficient_gradient(name):
    """The polar factor of a rank-r gradient has rank r: a rank-one gradient gives a step
    along -u v^T, and zero singular values stay zero."""
    case = BY_NAME[name]
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(8, 6)), nn.Parameter(torch.randn(6, 8))]
    opt = _make(case, params)
    g1, g2 = _rank(1, 8, 6, seed=1), _rank(2, 6, 8, seed=2)
    before = [p.detach().clone() for p in params]
    _step(case, opt, params, [g1, g2])
    d1, d2 = params[0].detach() - before[0], params[1].detach() - before[1]
    cos = float((d1 * -g1).sum() / (d1.norm() * g1.norm()))
    assert cos > 0.999, f"rank-one step not along -g: cos {cos}"
    s = torch.linalg.svdvals(d2.double())
    assert s[1] > 0.5 * s[0] and s[2:].max() < 1e-3 * s[0], s


@pytest.mark.parametrize("shape", [(1, 65536), (65536, 1)], ids=["1x65536", "65536x1"])
@pytest.mark.parametrize(
    "which", ["muon", "sd-spectral"], ids=["Muon", "SteepestDescent(Spectral)"]
)
def test_extreme_aspect_ratio(which, shape):
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(shape))
    g = torch.randn(shape)
    lr = 0.01
    if which == "muon":
        opt: torch.optim.Optimizer = normopt.Muon([w], lr=lr)
        scale = math.sqrt(max(1.0, shape[0] / shape[1]))  # Jordan's shape scale
        band = (0.68, 1.21)  # quintic Newton-Schulz's singular values (SPEC A5)
    else:
        opt = normopt.SteepestDescent([w], norm=N.Spectral(), lr=lr, normalized=True)
        scale, band = 1.0, (1 - 1e-5, 1 + 1e-5)  # exact polar factor of a vector: g / ||g||
    before = w.detach().clone()
    w.grad = g
    opt.step()
    d = (w.detach() - before).double()
    assert torch.isfinite(d).all()
    cos = float((d * -g.double()).sum() / (d.norm() * g.double().norm()))
    assert cos > 0.9999
    size = float(d.norm()) / (lr * scale)  # the polar factor of a vector has norm 1
    assert band[0] <= size <= band[1], size


@pytest.mark.parametrize(
    "make",
    [
        lambda p: normopt.Muon(p),
        lambda p: normopt.MuonMVR2(p),
        lambda p: normopt.Lion(p),
        lambda p: normopt.LionK(p, K=N.Nuclear()),
        lambda p: normopt.SteepestDescent(p, norm=N.L2(), lr=0.1),
        lambda p: normopt.TrustRegion(p, norm=N.L2(), lr=0.1, alpha=0.5),
    ],
    ids=["Muon", "MuonMVR2", "Lion", "LionK", "SteepestDescent", "TrustRegion"],
)
def test_empty_parameter_list_is_a_clear_value_error(make):
    with pytest.raises(ValueError, match="params: empty parameter list"):
        make([])
    with pytest.raises(ValueError, match="params: empty parameter list"):
        make(iter([]))
    if make.__code__.co_names[-1] in ("Muon", "MuonMVR2"):
        frozen = nn.Linear(3, 3).requires_grad_(False)
        with pytest.raises(ValueError, match="frozen"):
            make(frozen)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parameters_without_a_gradient_are_left_alone(case):
    model = make_mlp()
    opt = build_optimizer(case, model)
    params = list(model.parameters())
    idle = {2, 3}  # the middle layer gets no gradient this step
    before = [p.detach().clone() for p in params]
    grads = [None if i in idle else g for i, g in enumerate(_grads(params))]
    for _ in range(2):
        _step(case, opt, params, grads)
    for i in idle:
        assert torch.equal(params[i], before[i]) and params[i] not in opt.state
    assert any(not torch.equal(params[i], before[i]) for i in range(len(params)) if i not in idle)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_frozen_parameters_stay_frozen(case):
    model = make_mlp()
    model[2].requires_grad_(False)  # frozen before the optimizer is built
    opt = build_optimizer(case, model)
    frozen = [model[2].weight, model[2].bias]
    before = [p.detach().clone() for p in frozen]
    train_steps(case, model, opt, 2)
    for a, p in zip(before, frozen):
        assert torch.equal(a, p) and p not in opt.state and p.grad is None
    assert _all_finite(opt)


# -- dtypes ------------------------------------------------------------------------------------
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp64", "fp32", "bf16", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_dtype_steps_and_keeps_state_in_at_least_float32(case, dtype):
    model = make_mlp(dtype)
    opt = build_optimizer(case, model)
    params = list(model.parameters())
    for t in range(2):
        _step(case, opt, params, _grads(params, seed=t))
    assert all(p.dtype == dtype for p in params)
    assert _all_finite(opt)
    state_dtype = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype
    # rows without momentum keep no state at all (no empty entries, as torch.optim)
    assert opt.state or case.name in STATELESS, "no state after two steps"
    assert all(opt.state[p] for p in opt.state), "an empty state entry"
    for p, st_ in opt.state.items():
        for k, v in st_.items():
            if isinstance(v, Tensor) and v.is_floating_point():
                # the step count is float32 whatever the parameters are (torch's convention)
                want = (
                    p.dtype if k == "prev_param" else torch.float32 if k == "step" else state_dtype
                )
                assert v.dtype == want, f"{k}: {v.dtype}, expected {want}"


def _ptrs(t: Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _span(t: Tensor) -> tuple[int, int, int]:
    """(storage, first byte, one past the last byte) that ``t`` can reach."""
    size = t.element_size()
    reach = sum((n - 1) * st for n, st in zip(t.shape, t.stride())) + 1
    start = t.untyped_storage().data_ptr() + t.storage_offset() * size
    return _ptrs(t), start, start + reach * size


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_never_aliases_gradients_or_parameters(case, dtype):
    """torch.optim.Muon once normalized a bf16 gradient in place and so divided its momentum
    buffer: here state tensors own their storage, and mutating p.grad after a step (or
    between the momentum and the direction map) changes nothing."""
    model = make_mlp(dtype)
    opt = build_optimizer(case, model)
    params = list(model.parameters())
    for t in range(2):
        _step(case, opt, params, _grads(params, seed=t))
    taken = {_ptrs(p) for p in params} | {_ptrs(p.grad) for p in params if p.grad is not None}
    state = [
        v for st_ in opt.state.values() for v in st_.values() if isinstance(v, Tensor) and v.numel()
    ]
    # state tensors may be rows of one block tensor (stacked state), but never overlap
    spans = sorted(_span(v)[1:] for v in state)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "two state tensors overlap"
    assert not taken & {_ptrs(v) for v in state}, (
        "a state tensor shares storage with a param or grad"
    )
    before = _snap(opt)
    for p in params:
        if p.grad is not None:
            p.grad.mul_(3).add_(1)
    _assert_same(before, _snap(opt))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_direction_map_and_step_do_not_write_into_their_inputs(case):
    """Same trajectory when the direction map and the step get private copies of their
    inputs: neither writes into the momentum (or any buffer it was handed)."""

    def run(isolate: bool) -> list:
        model = make_mlp(torch.bfloat16)
        opt = build_optimizer(case, model)
        if isolate:
            direct, apply = opt._direct, opt._apply
            opt._direct = lambda stack, group: direct(stack.clone(), group)  # type: ignore[method-assign]
            opt._apply = lambda group, block, d, mask: apply(group, block, d.clone(), mask)  # type: ignore[method-assign]
        params = list(model.parameters())
        for t in range(3):
            _step(case, opt, params, _grads(params, seed=t))
        return _snap(opt)

    _assert_same(run(True), run(False))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_complex_parameters_are_a_type_error(case):
    params = [nn.Parameter(torch.randn(4, 3, dtype=torch.complex64))]
    with pytest.raises(TypeError, match="complex"):
        _make(case, params)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_sparse_gradient_is_a_type_error_before_anything_moves(case):
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(5, 4)), nn.Parameter(torch.randn(6, 4))]
    opt = _make(case, params)
    before = _snap(opt)
    sparse = torch.sparse_coo_tensor(
        torch.tensor([[0, 2], [1, 3]]), torch.ones(2), (6, 4), check_invariants=True
    )
    with pytest.raises(TypeError, match="sparse"):
        _step(case, opt, params, [torch.randn(5, 4), sparse])  # the dense one comes first
    _assert_same(before, _snap(opt))


# -- bad arguments (more rows live in test_common.BAD_ARGS) -----------------------------------
def test_unknown_names_list_the_valid_ones():
    p = [nn.Parameter(torch.randn(4, 3))]
    for make, arg in [
        (lambda: normopt.SteepestDescent(p, norm="bogus", lr=0.1), "norm"),
        (lambda: normopt.TrustRegion(p, norm="bogus", lr=0.1, alpha=0.5), "norm"),
        (lambda: normopt.LionK(p, K="bogus"), "K"),
        (lambda: normopt.Muon([{"params": p, "use_muon": False, "norm": "bogus"}]), "norm"),
    ]:
        with pytest.raises(
            ValueError, match=rf"^{arg}: unknown norm 'bogus'; expected one of.*'spectral'"
        ):
            make()
    for make in (
        lambda: normopt.Muon(p, polar="qr"),
        lambda: normopt.MuonMVR2(p, polar="qr"),
        lambda: normopt.LionK(p, K=N.Nuclear(), polar="qr"),
    ):
        with pytest.raises(ValueError, match=r"^polar: .*expected one of.*'newton_schulz'"):
            make()


def test_norm_that_does_not_fit_names_the_argument():
    vec, mat = [nn.Parameter(torch.randn(5))], [nn.Parameter(torch.randn(4, 3))]
    for make, arg in [
        (lambda: normopt.SteepestDescent(vec, norm=N.Spectral(), lr=0.1), "norm"),
        (lambda: normopt.SteepestDescent(mat, norm=N.ConvSpectral(), lr=0.1), "norm"),
        (lambda: normopt.TrustRegion(vec, norm=N.Nuclear(), lr=0.1, alpha=0.5), "norm"),
        (lambda: normopt.LionK(vec, K=N.Nuclear()), "K"),
        (lambda: normopt.Muon([{"params": vec, "use_muon": False, "norm": N.Spectral()}]), "norm"),
        (lambda: normopt.Muon([{"params": vec, "use_muon": True}]), "params"),
    ]:
        with pytest.raises(ValueError, match=rf"^{arg}: .*shape \("):
            make()


def test_non_float_and_non_iterable_params_are_type_errors():
    with pytest.raises(TypeError, match="params: expected floating-point"):
        normopt.Lion([torch.zeros(3, dtype=torch.long)])
    with pytest.raises(TypeError, match="params: expected an iterable"):
        normopt.Lion(None)


def test_a_rejected_param_group_is_not_left_behind():
    opt = normopt.Lion([nn.Parameter(torch.randn(3))])
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [nn.Parameter(torch.randn(3))], "lr": -1.0})
    assert len(opt.param_groups) == 1
    with pytest.raises(TypeError, match="complex"):
        opt.add_param_group({"params": [nn.Parameter(torch.randn(3, dtype=torch.complex64))]})
    assert len(opt.param_groups) == 1


# -- fuzzing -------------------------------------------------------------------------------
SHAPES = st.one_of(
    st.tuples(st.integers(1, 9)),  # 1-D
    st.tuples(st.integers(1, 3), st.integers(4, 12)),  # wide
    st.tuples(st.integers(4, 12), st.integers(1, 3)),  # tall
    st.tuples(st.integers(1, 9), st.integers(1, 9)),
    st.tuples(
        st.integers(1, 4), st.integers(1, 3), st.sampled_from([1, 3]), st.sampled_from([1, 3])
    ),
)


@given(
    case=st.sampled_from(CASES),
    shapes=st.lists(SHAPES, min_size=1, max_size=3),
    dtype=st.sampled_from(DTYPES),
    log_scale=st.sampled_from([-30, -8, 0, 8, 30]),
    idle=st.lists(st.booleans(), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_fuzz_steps_keep_weights_finite(case, shapes, dtype, log_scale, idle, seed):
    """Random shapes (1-D, tall, wide, 4-D conv), dtypes, gradient scales and tensors without
    a gradient, on every row: two steps under nonfinite="skip", weights stay finite and
    tensors without a gradient stay as they were. 25 cases in the "ci" profile, 500 with
    NORMOPT_HYPOTHESIS=thorough."""
    if case.matrices_only:
        shapes = [s if len(s) >= 2 else (s[0], 2) for s in shapes]
    # the largest power of ten whose gradients stay finite in this dtype
    scale = min(10.0**log_scale, torch.finfo(dtype).max / 4)
    gen = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in shapes]
    opt = _make(case, params)
    _policy(opt, "skip")
    grads = [None if idle[i] else g for i, g in enumerate(_grads(params, scale, seed))]
    before = [p.detach().clone() for p in params]
    for _ in range(2):
        _step(case, opt, params, grads)
    for p, b, g in zip(params, before, grads):
        assert p.dtype == dtype and p.shape == b.shape
        assert torch.isfinite(p).all()
        if g is None:
            assert torch.equal(p, b) and p not in opt.state
