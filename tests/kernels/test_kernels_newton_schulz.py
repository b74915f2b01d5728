"""The quintic fast paths beside their reference (normopt.linalg.newton_schulz)."""

import warnings

import pytest
import torch
from kernel_bands import (
    FUSED_TOL,
    SLACK,
    assert_in_band,
    coefficients,
    spectrum_matrix,
    textbook_quintic,
)

from normopt import kernels
from normopt.kernels import newton_schulz as kns
from normopt.linalg import newton_schulz

SHAPES = [(24, 40), (40, 24), (2, 3, 12, 20)]


@pytest.mark.parametrize("name", ["jordan", "polar_express"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reference_is_the_textbook_iteration_and_linalg_bit_for_bit(name, shape, dtype):
    """The reference against the iteration written out in the test (not against itself), and
    bitwise against linalg's named schedule (the coefficients read back from it)."""
    G = torch.randn(shape, dtype=dtype)
    co, scale = coefficients(name)
    ref = kernels.quintic_reference(G, co, scale)
    assert torch.equal(ref, newton_schulz(G, 5, name))
    textbook = textbook_quintic(G, co, scale)
    err = float((ref.double() - textbook).abs().max() / textbook.abs().max())
    assert err <= FUSED_TOL[dtype], f"relative error {err:.2e} against the textbook iteration"


@pytest.mark.parametrize("name", ["jordan", "polar_express"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cdtype", [torch.float64, torch.float32, torch.bfloat16])
def test_fused_matches_float64_reference(name, shape, cdtype):
    G = torch.randn(shape, dtype=torch.float64)
    co, scale = coefficients(name)
    ref = newton_schulz(G, 5, name)  # float64 throughout
    out = kernels.quintic_fused(G, co, scale, compute_dtype=cdtype)
    assert out.dtype == G.dtype and out.shape == G.shape
    err = float((out - ref).abs().max() / ref.abs().max())
    assert err <= FUSED_TOL[cdtype], f"relative error {err:.2e}"


@pytest.mark.parametrize("name", ["jordan", "polar_express"])
@pytest.mark.parametrize("cdtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 32, 80), (2, 48, 48)])
def test_fused_stays_in_the_band(name, cdtype, shape):
    G = spectrum_matrix(*shape, seed=1)
    co, scale = coefficients(name)
    assert_in_band(G, kernels.quintic_fused(G, co, scale, compute_dtype=cdtype), name, cdtype)


def test_reference_band_sanity():
    # The band helper accepts the reference itself and rejects a scaled copy.
    G = spectrum_matrix(1, 32, 64)
    co, scale = coefficients("jordan")
    O = newton_schulz(G, 5, "jordan")
    assert_in_band(G, O, "jordan", torch.float64)
    with pytest.raises(AssertionError):
        assert_in_band(G, 1.3 * O, "jordan", torch.float64)
    with pytest.raises(AssertionError):
        assert_in_band(G, 0.5 * O, "jordan", torch.float64)


@pytest.mark.parametrize(
    "fn", [kernels.quintic_reference, kernels.quintic_fused], ids=["reference", "fused"]
)
def test_edge_cases(fn):
    co, scale = coefficients("jordan")
    Z = torch.zeros(2, 5, 7)
    assert torch.equal(fn(Z, co, scale), Z)
    E = torch.zeros(0, 5, 7)
    assert fn(E, co, scale).shape == E.shape
    G = torch.randn(9, 6)
    before = G.clone()
    fn(G, co, scale)
    assert torch.equal(G, before)  # input untouched
    Gt = torch.randn(6, 9).mT  # non-contiguous
    assert torch.allclose(fn(Gt, co, scale), newton_schulz(Gt.contiguous(), 5), atol=1e-5)
    big = torch.randn(4, 6) * 1e30  # no overflow in ||X||_F
    assert torch.isfinite(fn(big, co, scale)).all()
    with pytest.raises(ValueError, match="coefficients"):
        fn(G, [], scale)
    with pytest.raises(TypeError):
        fn(torch.ones(3, dtype=torch.int64), co, scale)


def test_fused_transpose_equivariant():
    G = torch.randn(3, 20, 36, dtype=torch.float64)
    co, scale = coefficients("polar_express")
    a = kernels.quintic_fused(G, co, scale)
    # Same memory, other orientation: the same GEMMs run, bit for bit.
    assert torch.equal(a, kernels.quintic_fused(G.mT, co, scale).mT)
    # A transposed copy changes the operands' layout, so BLAS may block the sums differently:
    # equal to float64 round-off only.
    b = kernels.quintic_fused(G.mT.contiguous(), co, scale).mT
    assert float((a - b).abs().max()) <= 1e-13


def test_dispatch_on_cpu_is_fused_and_the_reference_when_forced():
    G = torch.randn(12, 30)
    co, scale = coefficients("jordan")
    assert torch.equal(kernels.quintic_polar(G, co, scale), kernels.quintic_fused(G, co, scale))
    with kernels.backend("reference"):
        assert torch.equal(kernels.quintic_polar(G, co, scale), newton_schulz(G, 5))
    with kernels.backend("fused"):
        assert torch.equal(kernels.quintic_polar(G, co, scale), kernels.quintic_fused(G, co, scale))
    with pytest.raises(ValueError, match="backend"):
        kernels.quintic_polar(G, co, scale, backend="cublas")


# -- compiled: the wrapper logic, with backends that need no C++ compiler -----------------------
class CountingBackend:
    """A torch.compile backend that counts compilations and runs the captured graph eagerly."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


@pytest.mark.integration  # torch.compile / dynamo traces
def test_compiled_equals_fused_and_caches_per_shape():
    kernels.clear_compiled()
    counter = CountingBackend()
    co, scale = coefficients("jordan", steps=1)  # one step: quick to trace
    shapes = [(1, 4 + i, 12) for i in range(9)]  # more shapes than dynamo's recompile limit (8)
    for _ in range(2):
        for s in shapes:
            G = torch.randn(s, dtype=torch.float64)
            out = kernels.quintic_compiled(G, co, scale, compile_backend=counter)
            assert torch.equal(out, kernels.quintic_fused(G, co, scale))
    assert counter.graphs == len(shapes)  # one graph per shape, none recompiled
    assert kernels.compiled_cache_size() == len(shapes)
    # Tall and 2-D inputs, and a second compute dtype, are keys of their own.
    G = torch.randn(30, 10, dtype=torch.float64)
    assert torch.equal(
        kernels.quintic_compiled(G, co, scale, compile_backend=counter),
        kernels.quintic_fused(G, co, scale),
    )
    kernels.clear_compiled()
    assert kernels.compiled_cache_size() == 0


def test_compiled_falls_back_to_eager_when_compiling_fails():
    kernels.clear_compiled()

    def broken(gm, example_inputs):
        raise RuntimeError("no compiler here")

    co, scale = coefficients("jordan")
    G = torch.randn(2, 6, 10)
    with pytest.warns(RuntimeWarning, match="running it eagerly"):
        out = kernels.quintic_compiled(G, co, scale, compile_backend=broken)
    assert torch.equal(out, kernels.quintic_fused(G, co, scale))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per key, then silently eager
        out = kernels.quintic_compiled(G, co, scale, compile_backend=broken)
    assert torch.equal(out, kernels.quintic_fused(G, co, scale))
    assert kernels.compiled_cache_size() == 0
    kernels.clear_compiled()


def test_each_compiled_function_has_its_own_code_object():
    co, scale = coefficients("jordan")
    f1 = kns._fresh_function(tuple(co), scale, 1e-7, torch.float32)
    f2 = kns._fresh_function(tuple(co), scale, 1e-7, torch.float32)
    assert f1.__code__ is not f2.__code__
    G = torch.randn(4, 9)
    assert torch.equal(f1(G.unsqueeze(0))[0], kernels.quintic_fused(G, co, scale))


@pytest.mark.slow
@pytest.mark.parametrize("cdtype", [torch.float32, torch.bfloat16])
def test_compiled_with_inductor_on_cpu(cdtype):
    """The real inductor (C++ on the CPU): slow to compile, so not in the default run."""
    kernels.clear_compiled()
    co, scale = coefficients("polar_express")
    G = spectrum_matrix(2, 24, 56, seed=3, dtype=torch.float32)
    out = kernels.quintic_compiled(G, co, scale, compute_dtype=cdtype)
    assert kernels.compiled_cache_size() == 1  # compiled, not fallen back to eager
    ref = kernels.quintic_fused(G, co, scale, compute_dtype=cdtype)
    tol = SLACK[cdtype] if cdtype == torch.bfloat16 else 1e-4
    assert float((out - ref).abs().max()) <= tol * float(ref.abs().max()) * 10
    assert_in_band(G, out, "polar_express", cdtype)
    kernels.clear_compiled()
