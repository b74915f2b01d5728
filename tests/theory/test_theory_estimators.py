"""Estimators of L, sigma and rho recover planted values (SPEC A4, item 8)."""

import math

import pytest
import torch

from normopt import norms as N
from normopt.linalg import polar
from normopt.theory import (
    effective_rho,
    estimate_noise,
    estimate_smoothness,
    smoothness_of_step,
)

M, K = 6, 10


def _quadratic(Lf=3.0, shape=(M, K)):
    """f = (Lf/2) ||X - X*||_F^2 on a float64 leaf tensor."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(shape, dtype=torch.float64, generator=g).requires_grad_()
    Xs = torch.randn(shape, dtype=torch.float64, generator=g)
    return X, Xs, (lambda: 0.5 * Lf * (X - Xs).pow(2).sum())


@pytest.mark.parametrize(
    "norm,rho2",
    [(N.Spectral(), min(M, K)), (N.MaxEntry(), M * K), (N.Frobenius(), 1),
     (N.RMSToRMS(), (M / K) * min(M, K)), (N.LInf(), M * K)],
)  # fmt: skip
def test_dualized_directions_recover_L_on_the_quadratic(norm, rho2):
    # On (Lf/2)||X - X*||^2 the smoothness in a norm is exactly Lf rho^2 (kovalev.py docstring),
    # attained at the extreme points of the ball: the "dualized" displacements.
    X, _, f = _quadratic(Lf=3.0)
    before = X.detach().clone()
    est = estimate_smoothness({"X": X}, f, norm, n_directions=2)
    assert float(est.L) == pytest.approx(3.0 * rho2, rel=1e-9)
    assert est.layer_L()["X"] == pytest.approx(3.0 * rho2, rel=1e-9)
    assert torch.equal(X.detach(), before)  # parameters restored


def test_random_directions_are_a_lower_bound():
    X, _, f = _quadratic(Lf=3.0)
    gen = torch.Generator().manual_seed(0)
    est = estimate_smoothness({"X": X}, f, N.Spectral(), directions="random", generator=gen)
    # ||Z||_nuc / ||Z||_2 lies strictly between 1 and min(m, n) for a Gaussian Z
    assert all(3.0 < r < 3.0 * min(M, K) for r in est.per_layer["X"])


def test_gradient_direction_and_given_displacements():
    X, Xs, f = _quadratic(Lf=2.0)
    est = estimate_smoothness({"X": X}, f, N.Spectral(), directions="gradient", radius=0.1)
    assert len(est.model) == 1 and float(est.L) == pytest.approx(2.0 * min(M, K), rel=1e-9)
    D = torch.zeros(M, K, dtype=torch.float64)
    D[0, 0] = 0.3  # a rank-one displacement: ||D||_nuc = ||D||_2
    est = estimate_smoothness({"X": X}, f, N.Spectral(), directions=[{"X": D}])
    assert est.directions == "given" and float(est.L) == pytest.approx(2.0, rel=1e-9)
    with pytest.raises(ValueError, match="lacks"):
        estimate_smoothness({"X": X}, f, N.Spectral(), directions=[{"Y": D}])


def test_per_layer_model_and_isolated():
    # Two blocks with their own curvature and norm; no coupling.
    g = torch.Generator().manual_seed(2)
    A = torch.randn(4, 8, dtype=torch.float64, generator=g).requires_grad_()
    b = torch.randn(5, dtype=torch.float64, generator=g).requires_grad_()
    # Lf = 4 and 1
    f = lambda: 2.0 * A.pow(2).sum() + 0.5 * b.pow(2).sum()  # noqa: E731
    norms = {"A": N.Spectral(), "b": N.LInf()}
    est = estimate_smoothness({"A": A, "b": b}, f, norms, relative=False, radius=0.01)
    assert est.layer_L()["A"] == pytest.approx(4.0 * 4, rel=1e-9)
    assert est.layer_L()["b"] == pytest.approx(1.0 * 5, rel=1e-9)
    # modular norm with unit scales: (sum of dual norms) / (max of norms), equal radii
    assert float(est.L) == pytest.approx(16.0 + 5.0, rel=1e-9)
    iso = estimate_smoothness({"A": A, "b": b}, f, norms, isolated=True)
    assert iso.model == [] and math.isnan(iso.L)
    assert iso.layer_L() == pytest.approx(est.layer_L(), rel=1e-9)
    assert {r["param"] for r in est.rows()} == {"A", "b", "<model>"}


def test_coupling_shows_in_joint_but_not_isolated():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(3, 3, dtype=torch.float64, generator=g).requires_grad_()
    B = torch.randn(3, 3, dtype=torch.float64, generator=g).requires_grad_()
    # the Hessian couples A and B
    f = lambda: 0.5 * (A + B).pow(2).sum()  # noqa: E731
    iso = estimate_smoothness({"A": A, "B": B}, f, N.Frobenius(), isolated=True)
    assert iso.layer_L()["A"] == pytest.approx(1.0, rel=1e-9)
    joint = estimate_smoothness({"A": A, "B": B}, f, N.Frobenius(), relative=False, n_directions=8)
    assert max(joint.per_layer["A"]) > 1.05  # sees B's displacement too


def test_smoothness_of_a_trust_region_step():
    # Kovalev's step x <- x - eta U V^T measures exactly Lf min(m, n) on the quadratic.
    X, _, f = _quadratic(Lf=1.5)

    def step():
        with torch.no_grad():
            X.sub_(0.05 * polar(X.grad, "svd"))

    X.grad = torch.autograd.grad(f(), X)[0]
    est = smoothness_of_step({"X": X}, f, step, N.Spectral())
    assert float(est.L) == pytest.approx(1.5 * min(M, K), rel=1e-9)


def test_float32_module_is_restored_and_finite():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    before = [p.detach().clone() for p in model.parameters()]
    loss_fn = lambda: torch.nn.functional.mse_loss(model(x), y)  # noqa: E731
    est = estimate_smoothness(model, loss_fn, n_directions=2, radius=1e-2)
    assert all(torch.equal(a, p.detach()) for a, p in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())  # never touched
    assert set(est.per_layer) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert all(math.isfinite(v) and v > 0 for v in est.layer_L().values())
    only = estimate_smoothness(model, loss_fn, {"0.weight": N.Spectral()})
    assert set(only.per_layer) == {"0.weight"}
    with pytest.raises(ValueError, match="^directions:"):
        estimate_smoothness(model, loss_fn, directions="sideways")
    with pytest.raises(ValueError, match="^radius:"):
        estimate_smoothness(model, loss_fn, radius=0.0)


def _noisy_quadratic(s, shape=(8, 12), Lf=1.0):
    """Gradient = Lf (X - X*) + xi with E||xi||_F^2 = s^2 (xi is the batch)."""
    X, Xs, f = _quadratic(Lf=Lf, shape=shape)
    per_entry = s / math.sqrt(shape[0] * shape[1])
    gen = torch.Generator().manual_seed(5)
    batches = [
        per_entry * torch.randn(shape, dtype=torch.float64, generator=gen) for _ in range(400)
    ]
    return X, f, (lambda xi: f() + (X * xi).sum()), batches


@pytest.mark.parametrize("use_full", [True, False])
def test_noise_recovers_planted_sigma(use_full):
    X, f, loss_fn, batches = _noisy_quadratic(s=0.7)
    full = f if use_full else None
    est = estimate_noise({"X": X}, loss_fn, batches, N.Frobenius(), full_loss_fn=full)
    assert est.n == 400 and est.reference == ("full" if use_full else "mean")
    # relative std of the estimate: sqrt(2 / (96 * 400)) ~ 0.7%
    assert est.sigma2 == pytest.approx(0.49, rel=0.04)
    assert est.per_layer_sigma2["X"] == est.sigma2
    # E||xi||_F = sigma (1 - O(1/d)): the Frobenius rho of the noise is ~1
    assert est.rho_eff()["X"] == pytest.approx(1.0, rel=0.02)


def test_noise_dual_norm_under_max_entry():
    # Gaussian noise under Adam's norm: E||xi||_1 = sqrt(2/pi) sqrt(mn) sigma, not sqrt(mn) sigma.
    X, f, loss_fn, batches = _noisy_quadratic(s=2.0)
    est = estimate_noise({"X": X}, loss_fn, batches, N.MaxEntry(), full_loss_fn=f, max_batches=200)
    assert est.n == 200
    assert est.rho_eff()["X"] == pytest.approx(math.sqrt(2 / math.pi) * math.sqrt(96), rel=0.02)
    assert est.rows()[-1]["param"] == "<model>"


def test_noise_validates():
    X, f, loss_fn, batches = _noisy_quadratic(s=1.0)
    with pytest.raises(ValueError, match="at least 2"):
        estimate_noise({"X": X}, loss_fn, batches[:1])
    with pytest.raises(ValueError, match="^max_batches:"):
        estimate_noise({"X": X}, loss_fn, batches, max_batches=0)


def test_effective_rho_extremes():
    W = torch.zeros(6, 10, dtype=torch.float64, requires_grad=True)
    U, _, Vh = torch.linalg.svd(torch.randn(6, 10, dtype=torch.float64), full_matrices=False)
    flat = U @ Vh  # equal singular values: the spectral worst case
    est = effective_rho({"W": W}, N.Spectral(), grads={"W": flat})
    assert est.per_layer["W"] == pytest.approx(math.sqrt(6), rel=1e-12)
    assert est.rho_max["W"] == pytest.approx(math.sqrt(6))
    rank1 = torch.outer(torch.randn(6, dtype=torch.float64), torch.randn(10, dtype=torch.float64))
    W.grad = rank1
    assert effective_rho({"W": W}, N.Spectral()).per_layer["W"] == pytest.approx(1.0, rel=1e-12)
    signs = torch.randn(6, 10, dtype=torch.float64).sign()
    est = effective_rho({"W": W}, N.MaxEntry(), grads={"W": signs})
    assert est.per_layer["W"] == pytest.approx(math.sqrt(60), rel=1e-12)
    assert est.rows()[0]["fraction"] == pytest.approx(1.0)


def test_effective_rho_on_a_model():
    model = torch.nn.Linear(5, 3)
    with pytest.raises(ValueError, match="no .grad"):
        effective_rho(model)
    x = torch.randn(7, 5)
    est = effective_rho(model, loss_fn=lambda: model(x).pow(2).mean())
    assert set(est.per_layer) == {"weight", "bias"}
    # weight: spectral, rho <= sqrt(3); bias: l2, rho = 1
    assert 1.0 - 1e-6 <= est.per_layer["weight"] <= math.sqrt(3) + 1e-6
    assert est.per_layer["bias"] == pytest.approx(1.0)
    assert est.model_rho_max == pytest.approx(math.sqrt(3 + 1))


def test_norm_selection():
    model = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    loss_fn = lambda: model(x).sum()  # noqa: E731
    by_tensor = effective_rho(model, {model.weight: N.Frobenius()}, loss_fn=loss_fn)
    assert set(by_tensor.per_layer) == {"weight"}
    by_fn = effective_rho(model, lambda n, p: N.LInf() if p.ndim == 1 else None, loss_fn=loss_fn)
    assert set(by_fn.per_layer) == {"bias"}
    one = effective_rho(model, N.Spectral(), loss_fn=loss_fn)  # skips the bias it cannot carry
    assert set(one.per_layer) == {"weight"}
    with pytest.raises(ValueError, match="^norms: no parameter"):
        effective_rho(model, {}, loss_fn=loss_fn)
    with pytest.raises(ValueError, match="matrix norm"):
        effective_rho(model, {"bias": N.Spectral()}, loss_fn=loss_fn)
    with pytest.raises(TypeError, match="^params:"):
        effective_rho(torch.zeros(3), loss_fn=loss_fn)
