"""What every quintic fast path takes and starts from: the coefficient list, one ``(a, b, c)``
triple per step, and the normalized, wide ``X_0`` (:func:`quintic_start`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from normopt._checks import at_least_float32
from normopt.linalg.polar import normalize_frobenius

__all__ = ["Coefficients", "check_coefficients", "quintic_start"]

Coefficients = Sequence[tuple[float, float, float]]


def check_coefficients(
    G: Tensor, coefficients: Coefficients
) -> tuple[tuple[float, float, float], ...]:
    """Validate the input matrix and return the coefficients as a tuple of float triples."""
    if not isinstance(G, Tensor) or not G.is_floating_point() or G.ndim < 2:
        raise TypeError("G: expected a floating-point tensor with ndim >= 2")
    coeffs = tuple((float(a), float(b), float(c)) for a, b, c in coefficients)
    if not coeffs:
        raise ValueError("coefficients: expected at least one (a, b, c) triple (one per step)")
    return coeffs


def quintic_start(
    G3: Tensor, norm_scale: float, eps: float, compute_dtype: torch.dtype
) -> tuple[Tensor, bool]:
    """``X_0`` of the quintic iteration on a stack ``G3`` ``(B, r, c)``, and whether it is the
    transpose: ``X / max(||X||_F * norm_scale, eps)`` in the input's precision, one rounding to
    ``compute_dtype``, then wide ``(B, m, n)``, ``m <= n`` (a tall stack is transposed)."""
    # Normalize in the input's precision (>= float32): the momentum is float32 anyway, and
    # one rounding to the compute dtype follows.
    work = G3.to(at_least_float32(G3.dtype))
    X = normalize_frobenius(work, norm_scale, eps).to(compute_dtype)
    transposed = X.shape[-2] > X.shape[-1]
    return (X.mT if transposed else X), transposed
