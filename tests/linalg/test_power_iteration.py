"""normopt.linalg.power_iteration and spectral_norm against the exact SVD."""

from __future__ import annotations

import pytest
import torch
from linalg_helpers import F64, with_spectrum

from normopt.linalg import power_iteration, spectral_norm


def _gapped(m: int, n: int, seed: int, ratio: float = 0.5) -> torch.Tensor:
    """s = (3, 3 ratio, ...): power iteration converges like ratio^(2 k)."""
    gen = torch.Generator().manual_seed(seed)
    r = min(m, n)
    s = 3.0 * torch.cat(
        [torch.ones(1, dtype=F64), ratio * torch.linspace(1.0, 0.1, r - 1, dtype=F64)]
    )
    return with_spectrum(s, m, n, gen)


@pytest.mark.parametrize("shape", [(6, 9), (9, 6), (7, 7), (1, 5), (5, 1)])
def test_converges_to_the_top_singular_triple(shape):
    W = _gapped(*shape, seed=0)
    U, S, Vh = torch.linalg.svd(W)
    s, u, v = power_iteration(W, iters=40)
    assert float(s) == pytest.approx(float(S[0]), rel=1e-12)
    assert abs(float(u @ U[:, 0])) == pytest.approx(1.0, abs=1e-10)
    assert abs(float(v @ Vh[0])) == pytest.approx(1.0, abs=1e-10)
    torch.testing.assert_close(W @ v, s * u, rtol=0, atol=1e-10)
    assert float(u.norm()) == pytest.approx(1.0) and float(v.norm()) == pytest.approx(1.0)


def test_never_overestimates_and_improves_with_iterations():
    gen = torch.Generator().manual_seed(3)
    W = torch.randn(16, 8, 12, generator=gen, dtype=F64)
    true = torch.linalg.matrix_norm(W, ord=2)
    errs = []
    for iters in (1, 3, 10, 100):
        torch.manual_seed(0)
        s, _, _ = power_iteration(W, iters=iters)
        assert bool((s <= true * (1 + 1e-12)).all())
        errs.append(float((true - s).max()))
    assert errs == sorted(errs, reverse=True) and errs[-1] < 1e-6 * float(true.max())


def test_batch_matches_loop_and_generator_is_reproducible():
    W = torch.stack([_gapped(5, 8, seed=k) for k in range(4)]).reshape(2, 2, 5, 8)
    gen = torch.Generator().manual_seed(7)
    s, u, v = power_iteration(W, iters=30, generator=gen)
    assert s.shape == (2, 2) and u.shape == (2, 2, 5) and v.shape == (2, 2, 8)
    torch.testing.assert_close(s, torch.linalg.matrix_norm(W, ord=2), rtol=1e-10, atol=0)
    s2, _, _ = power_iteration(W, iters=30, generator=torch.Generator().manual_seed(7))
    assert torch.equal(s, s2)


def test_warm_start():
    W = _gapped(6, 4, seed=1)
    _, _, Vh = torch.linalg.svd(W)
    s, _, v = power_iteration(W, iters=1, v0=Vh[0] * 5.0)  # any scale
    assert float(s) == pytest.approx(float(torch.linalg.matrix_norm(W, ord=2)), rel=1e-12)
    v_in = Vh[0].clone()
    power_iteration(W, iters=2, v0=v_in)
    assert torch.equal(v_in, Vh[0])  # the warm start is not modified


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_inputs_run_in_float32(dtype):
    W = _gapped(6, 9, seed=2).to(dtype)
    s, u, v = power_iteration(W, iters=40)
    assert s.dtype == u.dtype == v.dtype == torch.float32
    assert float(s) == pytest.approx(float(torch.linalg.matrix_norm(W.double(), ord=2)), rel=1e-5)


def test_zero_matrix_and_input_untouched():
    s, u, v = power_iteration(torch.zeros(3, 4))
    assert float(s) == 0.0 and bool(torch.isfinite(u).all() and torch.isfinite(v).all())
    W = torch.randn(4, 5, requires_grad=True)
    before = W.detach().clone()
    s, _, _ = power_iteration(W)
    assert not s.requires_grad and torch.equal(W.detach(), before)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"^W: expected ndim >= 2"):
        power_iteration(torch.ones(5))
    with pytest.raises(ValueError, match=r"^iters: expected >= 1"):
        power_iteration(torch.ones(2, 2), iters=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_spectral_norm(dtype):
    W = torch.stack([_gapped(7, 5, seed=k) for k in range(3)]).to(dtype)
    exact = torch.linalg.matrix_norm(W.double(), ord=2)
    got = spectral_norm(W, exact=True)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), exact.to(dtype).double(), rtol=0, atol=0)
    approx = spectral_norm(W, iters=40)
    torch.testing.assert_close(approx.double(), exact, rtol=1e-5 if dtype != F64 else 1e-12, atol=0)
