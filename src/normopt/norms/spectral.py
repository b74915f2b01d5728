"""Matrix norms of the singular values: spectral, nuclear, Schatten-p, Ky Fan-k and its dual.

SPEC section 1; F. L. Cesista's post on Schatten-p steepest descent. The Ky Fan rows were
derived here and are tested against brute force.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from normopt._checks import check_int
from normopt.kernels.entry import polar
from normopt.norms.base import DualOf, Norm, register
from normopt.norms.numerics import (
    as_shape,
    check_polar,
    safe_div,
    svd,
    svdvals,
    top_pair,
    vector_norm,
    work_tensor,
)

__all__ = ["PolarNorm", "Spectral", "Nuclear", "Schatten", "KyFan", "KyFanDual"]


class PolarNorm(Norm):
    """A norm whose ``dualize`` takes a polar factor: it keeps the method ``polar`` of
    :func:`normopt.linalg.polar` and its ``steps`` count, checked here, and its spec records
    both (:class:`Spectral`, and the layer norms built on it)."""

    def __init__(self, polar: str = "svd", steps: int | None = None) -> None:
        check_polar(polar, steps)
        if polar == "svd" and steps is not None:
            raise ValueError("steps: the 'svd' polar method takes no step count")
        self.polar = polar
        self.steps = steps

    def _kwargs(self) -> dict[str, Any]:
        return {"polar": self.polar, "steps": self.steps}


@register
class Spectral(PolarNorm):
    """Spectral norm ``s_1`` (l2 -> l2). Dual: nuclear. ``dualize(G) = U V^T``.

    ``rho = sqrt(min(m, n))``. ``polar`` picks the method of
    :func:`normopt.linalg.polar` (default ``"svd"``: exact, so that this object
    is the mathematics; optimizers pass a fast method), ``steps`` its count.
    ``dualize`` runs it through :func:`normopt.kernels.polar`, so a quintic method
    takes the fast path chosen for the tensor's device.
    """

    name = "spectral"
    transpose_equivariant = True
    ndim = 2

    def norm(self, x: Tensor) -> Tensor:
        self._reduce_dims(x)
        return torch.linalg.matrix_norm(work_tensor(x), ord=2)

    def dual_norm(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        return svdvals(g).sum(dim=-1)

    def dualize(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        return polar(g, self.polar, self.steps)

    def dual(self) -> Norm:
        return Nuclear()

    def rho(self, shape: Sequence[int]) -> float:
        m, n = as_shape(shape)[-2:]
        return math.sqrt(min(m, n))


@register
class Nuclear(Norm):
    """Nuclear norm ``sum_i s_i``. Dual: spectral. ``dualize(G) = u_1 v_1^T``; ``rho = 1``."""

    name = "nuclear"
    transpose_equivariant = True
    ndim = 2

    def norm(self, x: Tensor) -> Tensor:
        self._reduce_dims(x)
        return svdvals(x).sum(dim=-1)

    def dual_norm(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        return torch.linalg.matrix_norm(work_tensor(g), ord=2)

    def dualize(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        return top_pair(g).to(g.dtype)

    def dual(self) -> Norm:
        return Spectral()

    def rho(self, shape: Sequence[int]) -> float:
        return 1.0


@register
class Schatten(Norm):
    """Schatten-p norm ``||s||_p`` for ``1 < p < inf``. Dual: Schatten-q, ``1/p + 1/q = 1``.

    ``dualize(G) = U diag(s^(q-1)) V^T / ||s||_q^(q-1)``;
    ``rho = r^max(0, 1/q - 1/2)`` with ``r = min(m, n)``. The endpoints are
    :class:`Nuclear` (p = 1), :class:`Frobenius` (p = 2) and :class:`Spectral`
    (p = inf).
    """

    name = "schatten"
    transpose_equivariant = True
    ndim = 2

    def __init__(self, p: float) -> None:
        if isinstance(p, bool) or not isinstance(p, int | float) or not (1 < p < math.inf):
            raise ValueError(
                f"p: expected a number with 1 < p < inf, got {p!r} "
                "(use Nuclear for p = 1 and Spectral for p = inf)"
            )
        self.p = float(p)
        self.q = self.p / (self.p - 1.0)

    def _kwargs(self) -> dict[str, Any]:
        return {"p": self.p}

    @staticmethod
    def _pnorm(s: Tensor, p: float) -> Tensor:
        return vector_norm(s, ord=p, dim=-1)

    def norm(self, x: Tensor) -> Tensor:
        self._reduce_dims(x)
        return self._pnorm(svdvals(x), self.p)

    def dual_norm(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        return self._pnorm(svdvals(g), self.q)

    def dualize(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        U, S, Vh = svd(g)
        S = safe_div(S, S.amax(dim=-1, keepdim=True))  # scale-free: s / s_1
        w = S.pow(self.q - 1.0)
        w = safe_div(w, self._pnorm(S, self.q).pow(self.q - 1.0).unsqueeze(-1))
        return ((U * w.unsqueeze(-2)) @ Vh).to(g.dtype)

    def dual(self) -> Norm:
        return Schatten(self.q)

    def rho(self, shape: Sequence[int]) -> float:
        m, n = as_shape(shape)[-2:]
        return float(min(m, n) ** max(0.0, 1.0 / self.q - 0.5))


class _TopK(Norm):
    """The part the Ky Fan norm and its dual share: the number ``k`` of singular values."""

    transpose_equivariant = True
    ndim = 2

    def __init__(self, k: int) -> None:
        self.k = check_int("k", k, 1)

    def _kwargs(self) -> dict[str, Any]:
        return {"k": self.k}


@register
class KyFan(_TopK):
    """Ky Fan k-norm: the sum of the ``k`` largest singular values.

    Dual: ``max(s_1, ||G||_nuc / k)`` (:class:`KyFanDual`). ``dualize(G)`` is
    ``u_1 v_1^T`` when ``s_1 >= ||G||_nuc / k``, else ``U V^T / k``;
    ``rho = max(1, sqrt(r) / k)``. Derived here, checked by brute force in the
    tests. ``k = 1`` is the spectral norm, ``k >= min(m, n)`` the nuclear norm.
    """

    name = "ky_fan"

    def norm(self, x: Tensor) -> Tensor:
        self._reduce_dims(x)
        return svdvals(x)[..., : self.k].sum(dim=-1)

    def dual_norm(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        s = svdvals(g)
        return torch.maximum(s[..., 0], s.sum(dim=-1) / self.k)

    def dualize(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        U, S, Vh = svd(g)
        tol = max(g.shape[-2:]) * torch.finfo(S.dtype).eps * S[..., :1]
        keep = (tol < S).to(S.dtype)
        top = U[..., :, :1] @ Vh[..., :1, :] * keep[..., :1].unsqueeze(-1)
        spread = (U * keep.unsqueeze(-2)) @ Vh / self.k
        use_top = (S[..., 0] >= S.sum(dim=-1) / self.k)[..., None, None]
        return torch.where(use_top, top, spread).to(g.dtype)

    def dual(self) -> Norm:
        return KyFanDual(self.k)

    def rho(self, shape: Sequence[int]) -> float:
        m, n = as_shape(shape)[-2:]
        return max(1.0, math.sqrt(min(m, n)) / self.k)


@register
class KyFanDual(DualOf, _TopK):
    """The dual of the Ky Fan k-norm: ``max(s_1, ||G||_nuc / k)``.

    Dual: Ky Fan k. ``dualize(G) = sum_{i <= k} u_i v_i^T`` (over the nonzero
    singular values); ``rho = sqrt(k)`` (capped at ``sqrt(r)``).
    """

    name = "ky_fan_dual"

    def dualize(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        U, S, Vh = svd(g)
        k = min(self.k, S.shape[-1])
        tol = max(g.shape[-2:]) * torch.finfo(S.dtype).eps * S[..., :1]
        keep = (S[..., :k] > tol).to(S.dtype)
        return ((U[..., :, :k] * keep.unsqueeze(-2)) @ Vh[..., :k, :]).to(g.dtype)

    def dual(self) -> Norm:
        return KyFan(self.k)

    def rho(self, shape: Sequence[int]) -> float:
        m, n = as_shape(shape)[-2:]
        return math.sqrt(min(self.k, m, n))
