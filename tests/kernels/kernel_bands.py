"""Singular-value bands (SPEC A5) and the inputs that probe them, shared by the kernel tests."""

import torch

from normopt.linalg import get_schedule

# (low, high) after 5 steps, for directions with s_i / ||G||_F >= RELATIVE_FLOOR (SPEC A5, 3.5).
BANDS = {"jordan": (0.679, 1.2024), "polar_express": (0.84, 1.124)}
RELATIVE_FLOOR = 1.5e-3
# Extra room per compute dtype: round-off of the iteration itself.
SLACK = {torch.float64: 1e-9, torch.float32: 2e-3, torch.bfloat16: 2.5e-2}
# Tolerance of the fused path against the float64 reference, per compute dtype: max abs
# difference over max abs entry of the reference (entries of U V^T are about 1/sqrt(n)).
FUSED_TOL = {torch.float64: 1e-12, torch.float32: 1e-4, torch.bfloat16: 4e-2}


def coefficients(name, steps=5):
    sched = get_schedule(name)
    return [sched.at(i) for i in range(steps)], sched.norm_scale


def textbook_quintic(G, coefficients, norm_scale=1.0):
    """The quintic iteration of SPEC A5 written out in float64, independently of normopt:
    ``X_0 = G / (||G||_F * norm_scale)`` (wide), ``X <- a X + (b A + c A^2) X``, ``A = X X^T``."""
    X = G.double()
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = X.mT
    X = X / (torch.linalg.matrix_norm(X, keepdim=True) * norm_scale)
    for a, b, c in coefficients:
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X.mT if tall else X


def spectrum_matrix(batch, m, n, seed=0, dtype=torch.float64):
    """Random singular vectors, singular values log-spaced over three decades."""
    g = torch.Generator().manual_seed(seed)
    r = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(batch, m, r, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(batch, n, r, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -3, r, dtype=torch.float64).expand(batch, r)
    return ((U * s.unsqueeze(-2)) @ V.mT).to(dtype)


def assert_in_band(G, O, name, compute_dtype):
    """O's singular values lie under the band's top, and along each input direction with
    s_i / ||G||_F above the floor, O's response ``u_i^T O v_i`` lies inside the band."""
    low, high = BANDS[name]
    slack = SLACK[compute_dtype]
    Gd, Od = G.double(), O.double()
    assert bool(torch.isfinite(Od).all())
    s_out = torch.linalg.svdvals(Od)
    assert float(s_out.max()) <= high + slack, f"max singular value {float(s_out.max()):.4f}"
    U, S, Vh = torch.linalg.svd(Gd, full_matrices=False)
    response = (U.mT @ Od @ Vh.mT).diagonal(dim1=-2, dim2=-1)  # (..., r): u_i^T O v_i
    rel = S / torch.linalg.matrix_norm(Gd).unsqueeze(-1)
    kept = response[rel >= RELATIVE_FLOOR]
    assert float(kept.min()) >= low - slack, f"min response {float(kept.min()):.4f}"
    assert float(kept.max()) <= high + slack, f"max response {float(kept.max()):.4f}"
