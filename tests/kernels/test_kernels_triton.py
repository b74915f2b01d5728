"""The Triton symmetric-product kernel against its torch reference, on the CPU interpreter.

Runs when the ``triton`` package is installed (it is not a normopt dependency, so CI
skips these); ``TRITON_INTERPRET=1`` runs the kernel's own code with numpy.
"""

import pytest
import torch
from kernel_bands import assert_in_band, coefficients, spectrum_matrix

from normopt import kernels
from normopt.kernels import triton_sym
from normopt.linalg import newton_schulz

pytestmark = pytest.mark.skipif(not triton_sym.available(), reason="triton is not installed")


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 8e-3)])
@pytest.mark.parametrize("shape", [(2, 20, 37), (1, 33, 16)])  # tiles of 16 that do not divide m, k
def test_sym_product_matches_reference(dtype, tol, shape):
    X = torch.randn(shape).to(dtype)
    out = triton_sym.sym_product(X)
    ref = triton_sym.sym_product_reference(X.double())
    assert out.dtype == dtype
    assert torch.equal(out, out.mT)  # exactly symmetric
    assert float((out.double() - ref).abs().max() / ref.abs().max()) <= tol
    # b A + c A A with A symmetric
    A = (X.double() @ X.double().mT / shape[-1]).to(dtype)
    out = triton_sym.sym_product(A, A, alpha=2.0315, beta=-4.775)
    ref = triton_sym.sym_product_reference(A.double(), A.double(), 2.0315, -4.775)
    assert torch.equal(out, out.mT)
    assert float((out.double() - ref).abs().max() / ref.abs().max()) <= tol


def test_sym_product_rejects_bad_input():
    with pytest.raises(ValueError):
        triton_sym.sym_product(torch.randn(4, 5))
    with pytest.raises(TypeError):
        triton_sym.sym_product(torch.randn(1, 4, 5, dtype=torch.float64))
    with pytest.raises(ValueError):
        triton_sym.sym_product(torch.randn(1, 4, 5), torch.randn(1, 5, 5))


def test_quintic_triton_matches_and_stays_in_band():
    G = spectrum_matrix(1, 20, 40, seed=2, dtype=torch.float32)
    co, scale = coefficients("jordan")
    out = triton_sym.quintic_triton(G, co, scale)
    ref = newton_schulz(G.double(), 5, "jordan")
    assert float((out.double() - ref).abs().max() / ref.abs().max()) <= 1e-4
    assert_in_band(G, out, "jordan", torch.float32)
    out = triton_sym.quintic_triton(G, co, scale, compute_dtype=torch.bfloat16)
    assert_in_band(G, out, "jordan", torch.bfloat16)


def test_forced_triton_backend_runs_it_on_the_interpreter():
    G = torch.randn(1, 18, 24)
    co, scale = coefficients("polar_express", steps=2)
    with kernels.backend("triton"):
        out = kernels.quintic_polar(G, co, scale)
    assert torch.allclose(out, triton_sym.quintic_triton(G, co, scale))
