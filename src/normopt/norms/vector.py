"""Vector norms (l1, l2, l-inf) and the entrywise matrix norms that are vector norms of the
flattened matrix (Frobenius, max-entry, entrywise l1). SPEC section 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from normopt.norms.base import Norm, register
from normopt.norms.numerics import (
    as_shape,
    safe_div,
    unit_scale,
    vector_norm,
    work_tensor,
)

__all__ = ["L1", "L2", "LInf", "Frobenius", "MaxEntry", "EntrywiseL1"]


@register
class L2(Norm):
    """Euclidean norm. Self-dual; ``dualize(g) = g / ||g||_2``; ``rho = 1``."""

    name = "l2"
    ndim = 1

    def norm(self, x: Tensor) -> Tensor:
        return vector_norm(work_tensor(x), dim=self._reduce_dims(x))

    def dual_norm(self, g: Tensor) -> Tensor:
        return self.norm(g)

    def dualize(self, g: Tensor) -> Tensor:
        dims = self._reduce_dims(g)
        y = unit_scale(work_tensor(g), dims)
        return safe_div(y, torch.linalg.vector_norm(y, dim=dims, keepdim=True)).to(g.dtype)

    def dual(self) -> Norm:
        return type(self)()

    def rho(self, shape: Sequence[int]) -> float:
        return 1.0


@register
class LInf(Norm):
    """Max norm (Adam's and Lion's geometry). Dual: l1. ``dualize(g) = sign(g)``; ``rho = sqrt(n)``."""

    name = "linf"
    ndim = 1
    entrywise = True

    def norm(self, x: Tensor) -> Tensor:
        return work_tensor(x).abs().amax(dim=self._reduce_dims(x))

    def dual_norm(self, g: Tensor) -> Tensor:
        return work_tensor(g).abs().sum(dim=self._reduce_dims(g))

    def dualize(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        work_tensor(g)  # rejects integer, complex and sparse tensors
        return torch.sign(g)

    def dual(self) -> Norm:
        return L1() if self.ndim == 1 else EntrywiseL1()

    def rho(self, shape: Sequence[int]) -> float:
        return math.sqrt(math.prod(as_shape(shape)))


@register
class L1(Norm):
    """l1 norm. Dual: max norm. ``dualize(g) = sign(g_i*) e_i*`` at ``i* = argmax |g_i|``; ``rho = 1``."""

    name = "l1"
    ndim = 1

    def norm(self, x: Tensor) -> Tensor:
        return work_tensor(x).abs().sum(dim=self._reduce_dims(x))

    def dual_norm(self, g: Tensor) -> Tensor:
        return work_tensor(g).abs().amax(dim=self._reduce_dims(g))

    def dualize(self, g: Tensor) -> Tensor:
        dims = self._reduce_dims(g)
        work_tensor(g)  # rejects integer, complex and sparse tensors
        flat = g.flatten(start_dim=g.ndim - len(dims))  # (..., n)
        idx = flat.abs().argmax(dim=-1, keepdim=True)
        out = torch.zeros_like(flat)
        out.scatter_(-1, idx, torch.sign(flat.gather(-1, idx)))
        return out.reshape(g.shape)

    def dual(self) -> Norm:
        return LInf() if self.ndim == 1 else MaxEntry()

    def rho(self, shape: Sequence[int]) -> float:
        return 1.0


@register
class MaxEntry(LInf):
    """The l1 -> l-inf operator norm ``max_ij |W_ij|``: Adam's (sign) geometry on a matrix.

    Dual: entrywise l1. ``dualize(G) = sign(G)``; ``rho = sqrt(m n)``.
    """

    name = "max_entry"
    ndim = 2


@register
class EntrywiseL1(L1):
    """Entrywise l1 norm of a matrix ``sum_ij |W_ij|``: the dual of :class:`MaxEntry`. ``rho = 1``."""

    name = "entrywise_l1"
    ndim = 2


@register
class Frobenius(L2):
    """Frobenius norm of a matrix. Self-dual; ``dualize(G) = G / ||G||_F``; ``rho = 1``."""

    name = "frobenius"
    transpose_equivariant = True
    ndim = 2
