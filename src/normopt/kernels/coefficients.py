"""The coefficient list every quintic fast path takes: one ``(a, b, c)`` triple per step."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["Coefficients", "check_coefficients"]

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
