"""Convex maps that are not norms, for Lion-K's ``K`` (arXiv 2310.05898).

A map here gives ``grad(v)`` (the direction Lion-K steps along), ``fit(shape)`` and
``spec()``; for a norm ``K`` Lion-K uses the dualize map of ``K``'s dual instead
(:func:`normopt.optim.lion.gradient_of_K`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from normopt._checks import at_least_float32, check_number
from normopt.norms.spectral import Nuclear

__all__ = ["HuberNuclear"]


class HuberNuclear:
    r"""The Huber-smoothed nuclear norm ``K(X) = sum_i h(s_i)``, ``h'(s) = min(s / delta, 1)``.

    ``grad K(X) = U diag(min(s / delta, 1)) V^T``: Muon's polar factor with the
    small singular values left proportional instead of blown up to 1. As
    ``delta -> 0`` it becomes the nuclear norm (Lion-K = Muon). A spectral
    function, so its gradient comes from one SVD (exact, at least float32).
    """

    name = "huber_nuclear"
    ndim = 2

    def __init__(self, delta: float) -> None:
        self.delta = check_number("delta", delta, 0.0, float("inf"), low_open=True)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "delta": self.delta}

    def __repr__(self) -> str:
        return f"HuberNuclear(delta={self.delta!r})"

    def fit(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The element shape for a parameter of ``shape``: a matrix, as :class:`Nuclear` sees it."""
        return Nuclear().fit(shape)

    def grad(self, v: Tensor) -> Tensor:
        x = v.to(at_least_float32(v.dtype))
        U, S, Vh = torch.linalg.svd(x, full_matrices=False)
        w = torch.clamp(S / self.delta, max=1.0)
        return ((U * w.unsqueeze(-2)) @ Vh).to(v.dtype)
