"""Norms built from other norms: a matrix norm read transposed, and the product (modular)
norm over several tensors and its dual (SPEC A2, arXiv 2409.20325 Prop. 7), which have the
interface of :class:`~normopt.norms.base.ProductNorm`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from normopt.norms.base import Norm, ProductNorm, from_spec, register
from normopt.norms.numerics import (
    as_shape,
)

__all__ = ["Transposed", "Modular", "ModularSum"]


@register
class Transposed(Norm):
    """``||W|| = ||W^T||_inner``: a matrix norm read in the other layout.

    ``nn.Embedding`` stores ``(vocab, dim)`` where modular duality writes
    ``(d_out, d_in) = (dim, vocab)``; ``Transposed(ColumnRMS())`` is the
    embedding norm on the stored layout.
    """

    name = "transposed"
    ndim = 2

    def __init__(self, inner: Norm | str | dict[str, Any]) -> None:
        built = from_spec(inner)
        if not isinstance(built, Norm) or built.ndim != 2:
            raise ValueError(f"inner: Transposed needs a matrix norm (ndim 2), got {built!r}")
        self.inner = built

    def _kwargs(self) -> dict[str, Any]:
        return {"inner": self.inner.spec()}

    def __repr__(self) -> str:
        return f"Transposed({self.inner!r})"

    def norm(self, x: Tensor) -> Tensor:
        self._reduce_dims(x)
        return self.inner.norm(x.mT)

    def dual_norm(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        return self.inner.dual_norm(g.mT)

    def dualize(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        return self.inner.dualize(g.mT).mT

    def dual(self) -> Norm:
        return Transposed(self.inner.dual())

    def rho(self, shape: Sequence[int]) -> float:
        m, n = as_shape(shape)[-2:]
        return self.inner.rho((n, m))


@register
class Modular(ProductNorm):
    """Product (modular) norm ``max_l s_l ||W_l||_l`` over blocks (SPEC A2, arXiv 2409.20325 Prop. 7).

    Dual: ``sum_l ||G_l||_{l,dual} / s_l``. ``dualize`` returns the blocks
    ``dualize_l(G_l) / s_l``, so the modular steepest-descent step with
    sharpness ``lambda`` is ``D_l = -(eta / s_l) dualize_l(G_l)`` with
    ``eta = dual_norm(G) / lambda``. Acts on sequences of tensors, one per block.
    """

    name = "modular"

    def norm(self, xs: Sequence[Tensor]) -> Tensor:
        self._check(xs)
        vals = [s * n.norm(x) for n, s, x in zip(self.norms, self.scales, xs)]
        return torch.stack(torch.broadcast_tensors(*vals)).amax(dim=0)

    def dual_norm(self, gs: Sequence[Tensor]) -> Tensor:
        self._check(gs)
        vals = [n.dual_norm(g) / s for n, s, g in zip(self.norms, self.scales, gs)]
        return torch.stack(torch.broadcast_tensors(*vals)).sum(dim=0)

    def dualize(self, gs: Sequence[Tensor]) -> list[Tensor]:
        self._check(gs)
        return [n.dualize(g) / s for n, s, g in zip(self.norms, self.scales, gs)]

    def dual(self) -> ProductNorm:
        return ModularSum([n.dual() for n in self.norms], [1.0 / s for s in self.scales])

    def rho(self, shapes: Sequence[Sequence[int]]) -> float:
        return math.sqrt(
            sum((n.rho(tuple(sh)) / s) ** 2 for n, s, sh in zip(self.norms, self.scales, shapes))
        )


@register
class ModularSum(ProductNorm):
    """``sum_l w_l ||W_l||_l`` over blocks: the dual of :class:`Modular`.

    Dual: ``max_l ||G_l||_{l,dual} / w_l``; ``dualize`` puts
    ``dualize_l(G_l) / w_l`` on the block that attains the max, zero elsewhere.
    """

    name = "modular_sum"

    def norm(self, xs: Sequence[Tensor]) -> Tensor:
        self._check(xs)
        vals = [w * n.norm(x) for n, w, x in zip(self.norms, self.scales, xs)]
        return torch.stack(torch.broadcast_tensors(*vals)).sum(dim=0)

    def dual_norm(self, gs: Sequence[Tensor]) -> Tensor:
        self._check(gs)
        vals = [n.dual_norm(g) / w for n, w, g in zip(self.norms, self.scales, gs)]
        return torch.stack(torch.broadcast_tensors(*vals)).amax(dim=0)

    def dualize(self, gs: Sequence[Tensor]) -> list[Tensor]:
        self._check(gs)
        vals = [n.dual_norm(g) / w for n, w, g in zip(self.norms, self.scales, gs)]
        # one winner per batch entry (leading dims), the first block on ties
        best = torch.stack(torch.broadcast_tensors(*vals)).argmax(dim=0)  # batch shape
        out = []
        for i, (n, w, g) in enumerate(zip(self.norms, self.scales, gs)):
            d = n.dualize(g) / w
            mask = (best == i).reshape(*best.shape, *([1] * n.ndim)).to(d.dtype)
            out.append(d * mask)
        return out

    def dual(self) -> ProductNorm:
        return Modular([n.dual() for n in self.norms], [1.0 / w for w in self.scales])

    def rho(self, shapes: Sequence[Sequence[int]]) -> float:
        return max(n.rho(tuple(sh)) / w for n, w, sh in zip(self.norms, self.scales, shapes))
