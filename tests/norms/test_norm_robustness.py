"""Robustness of every dualize map (tracker issue 7): degenerate shapes and ranks, extreme
magnitudes, every floating dtype, unsupported tensors, wrong ndims and bad arguments, and a
hypothesis fuzz test over all of them."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from norm_cases import (
    CASE_IDS,
    CASES,
    KINDS,
    NormCase,
    all_finite,
    blocks,
    cast,
    elem_ndims,
    fro,
    inner,
    is_block,
    max_abs_diff,
    random_elem,
    scale,
    unblocks,
)

from normopt import norms as N

by_case = pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
shared = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])

# Degenerate element shapes per element ndim: single entries, one row or column, and a long
# 1 x 65536 row (the vector of 65536 for vector norms).
DEGENERATE_SHAPES = {
    1: [(1,), (2,), (65536,)],
    2: [(1, 1), (1, 7), (7, 1), (1, 65536)],
    4: [(1, 1, 1, 1), (1, 7, 1, 1), (7, 1, 2, 2), (1, 65536, 1, 1)],
}


def _degenerate_blocks(ndim: int, gen: torch.Generator) -> list[tuple[str, torch.Tensor]]:
    """(label, tensor) pairs: zero, rank one, rank deficient, and the degenerate shapes."""
    base = {1: (6,), 2: (5, 4), 4: (3, 4, 2, 2)}[ndim]
    f64 = torch.float64
    out = [("zero", torch.zeros(base, dtype=f64))]
    x = torch.randn(base, generator=gen, dtype=f64)
    if ndim == 1:
        out.append(
            ("one_nonzero", torch.zeros(base, dtype=f64).index_fill_(0, torch.tensor([2]), -3.0))
        )
        out.append(("ties", torch.tensor([1.0, -1.0, 1.0, 0.0, -1.0, 1.0], dtype=f64)))
    else:
        u = torch.randn(*base[:-1], 1, generator=gen, dtype=f64)
        v = torch.randn(*base[:-2], 1, base[-1], generator=gen, dtype=f64)
        out.append(("rank1", u * v))
        w = torch.randn(*base[:-2], base[-2], 2, generator=gen, dtype=f64)
        z = torch.randn(*base[:-2], 2, base[-1], generator=gen, dtype=f64)
        out.append(("rank2", w @ z))
        one_col = torch.zeros(base, dtype=f64)
        one_col[..., :, 1] = x[..., :, 1]
        out.append(("one_column", one_col))
    for shape in DEGENERATE_SHAPES[ndim]:
        out.append((f"shape{shape}", torch.randn(shape, generator=gen, dtype=f64)))
    return out


def degenerate_inputs(case: NormCase):
    """Every degenerate input for one row: for block norms, each degenerate block beside
    Gaussian blocks, plus all blocks zero."""
    norm = case.make()
    gen = torch.Generator().manual_seed(0)
    if not is_block(norm):
        yield from _degenerate_blocks(norm.ndim, gen)
        return
    shape = case.shapes[0]
    base = blocks(norm, random_elem(norm, shape, (), "gauss", seed=1))
    for i, k in enumerate(elem_ndims(norm)):
        for label, x in _degenerate_blocks(k, gen):
            if label.startswith("shape") and math.prod(x.shape) > 4096:
                continue  # the long shapes are covered by the single-norm rows
            xs = list(base)
            xs[i] = x
            yield f"block{i}_{label}", xs
    yield "all_zero", [torch.zeros_like(x) for x in base]


@by_case
def test_degenerate_inputs(case):
    """Finite, same shape, zero for zero, and still a unit maximizer (float64)."""
    norm = case.make()
    for label, g in degenerate_inputs(case):
        g_el = unblocks(norm, blocks(norm, g))
        d = norm.dualize(g_el)
        assert all_finite(norm, d), label
        for x, y in zip(blocks(norm, d), blocks(norm, g_el)):
            assert x.shape == y.shape and x.dtype == y.dtype, label
        nonzero = float(fro(norm, g_el)) > 0
        assert float(norm.norm(d)) == pytest.approx(1.0 if nonzero else 0.0, rel=1e-9, abs=1e-12), (
            label
        )
        dual = float(norm.dual_norm(g_el))
        assert float(inner(norm, g_el, d)) == pytest.approx(dual, rel=1e-9, abs=1e-12), label


@by_case
@pytest.mark.parametrize("magnitude", [1e30, 1e-30])
def test_extreme_magnitudes_in_float32(case, magnitude):
    """Entries of 1e30 and 1e-30 in float32: dualize is finite and points where the float64
    dualize of the unscaled input points; norm and dual_norm neither overflow nor underflow."""
    norm = case.make()
    for k, shape in enumerate(case.shapes):
        g = random_elem(norm, shape, (2,), "gauss", seed=k)
        x = cast(norm, scale(norm, g, magnitude), torch.float32)
        d = norm.dualize(x)
        assert all_finite(norm, d)
        assert all(t.dtype == torch.float32 for t in blocks(norm, d))
        assert max_abs_diff(norm, d, norm.dualize(g)) < 1e-4
        for fn in ("norm", "dual_norm"):
            got = getattr(norm, fn)(x).double()
            want = magnitude * getattr(norm, fn)(g)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=0, msg=f"{fn} at {magnitude}")


# Largest entry error against the float64 dualize of the same (rounded) input, relative to the
# largest entry: the output is rounded once to the input's dtype.
DTYPE_TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@by_case
@pytest.mark.parametrize("dtype", list(DTYPE_TOL), ids=str)
def test_every_floating_dtype(case, dtype):
    norm = case.make()
    for k, shape in enumerate(case.shapes):
        x = cast(norm, random_elem(norm, shape, (2,), "gauss", seed=k), dtype)
        d = norm.dualize(x)
        assert all(t.dtype == dtype for t in blocks(norm, d))
        assert all_finite(norm, d)
        ref = norm.dualize(cast(norm, x, torch.float64))
        size = max(float(t.abs().max()) for t in blocks(norm, ref))
        assert max_abs_diff(norm, d, ref) <= DTYPE_TOL[dtype] * size
        assert norm.norm(x).dtype in (torch.float32, torch.float64)


def _bad(norm, case: NormCase, make_bad):
    """The element of ``case`` with block 0 replaced by ``make_bad(block 0)``."""
    xs = blocks(norm, random_elem(norm, case.shapes[0], (), "gauss", seed=0))
    xs[0] = make_bad(xs[0])
    return unblocks(norm, xs)


@by_case
@pytest.mark.parametrize(
    "make_bad",
    [
        lambda x: x.to(torch.complex64),
        lambda x: x.to_sparse(),
        lambda x: x.round().to(torch.int64),
    ],
    ids=["complex", "sparse", "int64"],
)
def test_unsupported_tensors_raise_type_error(case, make_bad):
    norm = case.make()
    x = _bad(norm, case, make_bad)
    for fn in ("dualize", "norm", "dual_norm"):
        with pytest.raises(TypeError, match="complex|sparse|floating"):
            getattr(norm, fn)(x)


ARG = re.compile(r"^(x|g|G): ")


@by_case
def test_wrong_ndim_raises_value_error_naming_the_argument(case):
    norm = case.make()
    if is_block(norm):
        with pytest.raises(ValueError, match="sequence of"):
            norm.dualize(torch.zeros(3, 3))
        with pytest.raises(ValueError, match="one per block"):
            norm.dualize([torch.zeros(3)] * (len(norm.norms) + 1))  # type: ignore[attr-defined]
        return
    for ndim in range(norm.ndim):
        x = torch.ones((2,) * ndim)
        for fn in ("dualize", "norm", "dual_norm"):
            with pytest.raises(ValueError) as info:
                getattr(norm, fn)(x)
            msg = str(info.value)
            assert ARG.match(msg), msg
            assert str(tuple(x.shape)) in msg, msg


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: N.Schatten(1), r"^p: .*1 < p < inf.*Nuclear"),
        (lambda: N.Schatten(math.inf), r"^p: "),
        (lambda: N.Schatten(0.5), r"^p: "),
        (lambda: N.Schatten(True), r"^p: "),
        (lambda: N.Schatten("3"), r"^p: "),
        (lambda: N.KyFan(0), r"^k: expected an integer >= 1"),
        (lambda: N.KyFan(1.5), r"^k: "),
        (lambda: N.KyFan(True), r"^k: "),
        (lambda: N.KyFanDual(-1), r"^k: "),
        (lambda: N.Spectral(polar="qr"), r"^polar: unknown polar method 'qr'.*newton_schulz"),
        (lambda: N.Spectral("svd", steps=5), r"^steps: "),
        (lambda: N.Spectral("newton_schulz", steps=0), r"^steps: "),
        (lambda: N.Spectral("newton_schulz", steps=True), r"^steps: "),
        (lambda: N.RMSToRMS(polar="bogus"), r"^polar: "),
        (lambda: N.ConvSpectral(polar="bogus"), r"^polar: "),
        (lambda: N.Transposed(N.L2()), r"^inner: .*matrix norm"),
        (lambda: N.Modular([]), r"^norms: "),
        (lambda: N.Modular(N.L2()), r"^norms: "),
        (lambda: N.Modular([N.L2()], scales=[0.0]), r"^scales: "),
        (lambda: N.Modular([N.L2()], scales=[math.nan]), r"^scales: "),
        (lambda: N.ModularSum([N.L2(), N.L1()], scales=[1.0]), r"^scales: expected 2"),
    ],
)
def test_bad_constructor_arguments_raise_value_error(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


# -- fuzz --------------------------------------------------------------------------------------
FUZZ_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
# identity tolerances per dtype, relative: the output is rounded to the input's dtype once
FUZZ_TOL = {torch.float64: 1e-9, torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2}


@st.composite
def fuzz_inputs(draw, case: NormCase):
    norm = case.make()
    shapes = [
        tuple(draw(st.lists(st.integers(1, 6), min_size=k, max_size=k))) for k in elem_ndims(norm)
    ]
    shape = tuple(shapes) if is_block(norm) else shapes[0]
    batch = draw(st.sampled_from([(), (2,)]))
    dtype = draw(st.sampled_from(FUZZ_DTYPES))
    # fp16 holds 6e-8 .. 65504; the others span 1e-30 .. 1e30 comfortably
    exp = draw(st.integers(-3, 3) if dtype == torch.float16 else st.integers(-30, 30))
    kind = draw(st.sampled_from((*KINDS, "zero")))
    seed = draw(st.integers(0, 2**31 - 1))
    g = random_elem(norm, shape, batch, "gauss" if kind == "zero" else kind, seed)
    g = scale(norm, g, 0.0 if kind == "zero" else 10.0**exp)
    return norm, cast(norm, g, dtype), dtype


@by_case
@shared
@given(data=st.data())
def test_fuzz_dualize(case, data):
    """Every norm x {fp64, fp32, fp16, bf16} x shapes with sides 1..6 x magnitudes 1e-30..1e30
    (fp16: 1e-3..1e3) x input kinds. 25 examples per norm row in the "ci" profile (30 rows:
    750 cases), 500 per row (15000) under NORMOPT_HYPOTHESIS=thorough. Checks: finite, dtype
    and shape kept, zero for zero, and the unit-maximizer identities on the input as received."""
    norm, g, dtype = data.draw(fuzz_inputs(case))
    d = norm.dualize(g)
    assert all_finite(norm, d)
    for x, y in zip(blocks(norm, d), blocks(norm, g)):
        assert x.shape == y.shape and x.dtype == dtype
    g64, d64 = cast(norm, g, torch.float64), cast(norm, d, torch.float64)
    nonzero = fro(norm, g64) > 0
    tol = FUZZ_TOL[dtype]
    n_d = norm.norm(d64)
    assert bool(((n_d - nonzero.double()).abs() <= tol).all()), f"norm(dualize(g)) = {n_d.tolist()}"
    dual = norm.dual_norm(g64)
    gap = (inner(norm, g64, d64) - dual).abs()
    assert bool((gap <= tol * dual + 1e-300).all()), (
        f"<g, d> - dual = {gap.tolist()}, dual {dual.tolist()}"
    )
