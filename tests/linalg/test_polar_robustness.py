"""Robustness of every polar method (tracker issue 7): degenerate shapes and ranks, extreme
magnitudes, every floating dtype, unsupported tensors, wrong ndims, bad arguments, and a
hypothesis fuzz test."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from linalg_helpers import F64, scalar_map

from normopt.linalg import POLAR_METHODS, SCHEDULES, gram_newton_schulz, newton_schulz, polar

SCHEDULE_OF = {
    "newton_schulz": "jordan",
    "polar_express": "polar_express",
    "gram_newton_schulz": "polar_express",
}
# Largest singular value of the output at the default 5 steps over any input (SPEC A5; the exact
# maximum of the scalar map on (0, 1]), and 1 for the exact method.
TOP = {"svd": 1.0, "newton_schulz": 1.2024, "polar_express": 1.1236, "gram_newton_schulz": 1.1236}
by_method = pytest.mark.parametrize("method", POLAR_METHODS)
shared = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def _p1(method: str) -> float:
    """What a method puts on a rank-one input's single direction: p(1 / norm_scale)."""
    if method == "svd":
        return 1.0
    sched = SCHEDULES[SCHEDULE_OF[method]]
    return float(scalar_map(torch.tensor(1.0 / sched.norm_scale, dtype=F64), sched, 5))


@by_method
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (1, 65536), (65536, 1), (3, 1, 9)])
def test_one_row_or_column(method, shape):
    """A single row or column g: the polar factor is g / ||g|| (times p(1 / norm_scale))."""
    G = torch.randn(shape, dtype=F64)
    O = polar(G, method)
    expected = _p1(method) * G / torch.linalg.matrix_norm(G, keepdim=True)
    torch.testing.assert_close(O, expected, rtol=0, atol=1e-12)


@by_method
@pytest.mark.parametrize("shape", [(5, 7), (7, 5), (6, 6)])
def test_rank_one(method, shape):
    u = torch.randn(shape[0], 1, dtype=F64)
    v = torch.randn(1, shape[1], dtype=F64)
    O = polar(u * v, method)
    expected = _p1(method) * (u / u.norm()) * (v / v.norm())
    torch.testing.assert_close(O, expected, rtol=0, atol=1e-12)


@by_method
def test_empty_matrices(method):
    for shape in [(0, 3), (3, 0), (2, 0, 4)]:
        G = torch.zeros(shape)
        assert polar(G, method).shape == G.shape


@by_method
@pytest.mark.parametrize("magnitude", [1e30, 1e-30])
@pytest.mark.parametrize("shape", [(4, 6), (6, 4), (1, 9)])
def test_extreme_magnitudes_in_float32(method, magnitude, shape):
    """Entries of 1e30 or 1e-30 in float32: finite, and the same direction as the float64
    result of the same method on the unscaled matrix."""
    G = torch.randn(shape, dtype=F64)
    x = (G * magnitude).float()
    O = polar(x, method)
    assert O.dtype == torch.float32 and bool(torch.isfinite(O).all())
    ref = polar(x.double() / magnitude, method)
    torch.testing.assert_close(O.double(), ref, rtol=0, atol=1e-5)


# Largest entry error against the same method on the float64 copy of the (rounded) input.
DTYPE_TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


@by_method
@pytest.mark.parametrize("dtype", list(DTYPE_TOL), ids=str)
def test_every_floating_dtype(method, dtype):
    G = torch.randn(2, 6, 9).to(dtype)
    O = polar(G, method)
    assert O.dtype == dtype and bool(torch.isfinite(O).all())
    ref = polar(G.double(), method)
    assert float((O.double() - ref).abs().max()) <= DTYPE_TOL[dtype]


@by_method
@pytest.mark.parametrize(
    "bad",
    [
        lambda: torch.randn(3, 4, dtype=torch.complex64),
        lambda: torch.randn(3, 4).to_sparse(),
        lambda: torch.randint(0, 3, (3, 4)),
        lambda: torch.ones(3, 4, dtype=torch.bool),
        lambda: [[1.0, 2.0], [3.0, 4.0]],
    ],
    ids=["complex", "sparse", "int64", "bool", "list"],
)
def test_unsupported_inputs_raise_type_error(method, bad):
    with pytest.raises(TypeError, match=r"^G: "):
        polar(bad(), method)


@by_method
@pytest.mark.parametrize("shape", [(), (5,)])
def test_wrong_ndim_raises_value_error_naming_the_argument(method, shape):
    with pytest.raises(ValueError, match=r"^G: expected a matrix .* got shape"):
        polar(torch.ones(shape), method)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda G: polar(G, "qr"), r"^method: unknown polar method 'qr'; expected one of \['svd'"),
        (lambda G: polar(G, "svd", 5), r"^steps: the 'svd' method is exact"),
        (lambda G: polar(G, "newton_schulz", 0), r"^steps: expected an integer >= 1"),
        (lambda G: polar(G, "polar_express", -2), r"^steps: "),
        (lambda G: polar(G, "gram_newton_schulz", 2.5), r"^steps: "),  # type: ignore[arg-type]
        (lambda G: polar(G, "newton_schulz", True), r"^steps: "),  # type: ignore[arg-type]
        (lambda G: polar(G, "newton_schulz", coefficients="bogus"), r"^coefficients: unknown"),
        (lambda G: gram_newton_schulz(G, restart_after=0), r"^restart_after: "),
        (lambda G: gram_newton_schulz(G, restart_after=True), r"^restart_after: "),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_raise_value_error(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(torch.randn(3, 4))


def test_other_schedules():
    """The classical (1.875, -1.25, 0.375) iteration converges to U V^T; a schedule object
    passes through; steps past a schedule's end repeat its last triple."""
    G = torch.randn(4, 7, dtype=F64)
    exact = polar(G, "svd")
    torch.testing.assert_close(polar(G, "newton_schulz", 40, coefficients="classical"), exact)
    pe = SCHEDULES["polar_express"]
    torch.testing.assert_close(
        newton_schulz(G, 12, coefficients=pe), newton_schulz(G, 12, "polar_express")
    )
    torch.testing.assert_close(polar(G, "polar_express", 30), exact, rtol=0, atol=1e-12)


# -- fuzz ------------------------------------------------------------------------------------
FUZZ_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
# slack on TOP: the rounding of the output (and of the iteration, for a bf16 iteration)
TOP_SLACK = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 3e-3, torch.bfloat16: 1.5e-2}
BF16_ITERATION_SLACK = 0.03


@st.composite
def polar_inputs(draw, method: str):
    batch = draw(st.sampled_from([(), (2,)]))
    m, n = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    dtype = draw(st.sampled_from(FUZZ_DTYPES))
    exp = draw(st.integers(-3, 3) if dtype == torch.float16 else st.integers(-30, 30))
    kind = draw(st.sampled_from(["gauss", "zero", "rank1", "ints", "sparse", "one_column"]))
    seed = draw(st.integers(0, 2**31 - 1))
    bf16_iteration = method != "svd" and draw(st.booleans())
    gen = torch.Generator().manual_seed(seed)
    shape = (*batch, m, n)
    G = torch.randn(shape, generator=gen, dtype=F64)
    if kind == "zero":
        G = G * 0
    elif kind == "rank1":
        G = G[..., :, :1] * G[..., :1, :]
    elif kind == "ints":
        G = torch.randint(-2, 3, shape, generator=gen).double()
    elif kind == "sparse":
        G = G * (torch.rand(shape, generator=gen, dtype=F64) < 0.3)
    elif kind == "one_column":
        G = G * (torch.arange(n) == n // 2)
    return (G * 10.0**exp).to(dtype), kind, bf16_iteration


@by_method
@shared
@given(data=st.data())
def test_fuzz_polar(method, data):
    """Every method x {fp64, fp32, fp16, bf16} x shapes up to (2, 8, 8) x magnitudes 1e-30..1e30
    (fp16: 1e-3..1e3) x input kinds x (default or bf16 iteration): 25 examples per method in the
    "ci" profile (4 methods: 100 cases), 500 per method under NORMOPT_HYPOTHESIS=thorough.
    Checks: finite, dtype and shape kept, zero for zero, singular values at most the method's
    bound, a single nonzero column stays a single column, and NS(G^T) = NS(G)^T."""
    G, kind, bf16_iteration = data.draw(polar_inputs(method))
    compute = torch.bfloat16 if bf16_iteration else None
    O = polar(G, method, compute_dtype=compute)
    assert O.dtype == G.dtype and O.shape == G.shape
    assert bool(torch.isfinite(O).all())
    zero = (G == 0).flatten(-2).all(-1)
    assert bool((O[zero] == 0).all())
    O64 = O.double()
    slack = BF16_ITERATION_SLACK if bf16_iteration else TOP_SLACK[G.dtype]
    top = float(torch.linalg.svdvals(O64).max())
    assert top <= TOP[method] + slack, f"max singular value {top}"
    if kind == "one_column" and G.shape[-1] > 1:  # G's row space is one axis, and so is O's
        others = torch.arange(G.shape[-1]) != G.shape[-1] // 2
        assert float(O64[..., others].abs().max()) <= 1e-6
    if not bf16_iteration and G.dtype in (torch.float64, torch.float32):
        Ot = polar(G.mT, method)
        tol = 1e-10 if G.dtype == torch.float64 else 1e-3
        assert float((Ot.mT.double() - O64).abs().max()) <= tol
