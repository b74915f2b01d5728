"""Operator norms of layers between RMS-normed spaces (modular duality, arXiv 2410.21265):
RMS -> RMS for Linear weights, l1 -> RMS for embeddings, RMS -> l-inf for heads, and duals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from normopt.norms.base import DualOf, Norm, register
from normopt.norms.numerics import (
    as_shape,
    safe_div,
    unit_scale,
    vector_norm,
    work_tensor,
)
from normopt.norms.spectral import Nuclear, PolarNorm, Spectral

__all__ = ["RMSToRMS", "RMSToRMSDual", "ColumnRMS", "ColumnRMSDual", "RowRMS", "RowRMSDual"]


@register
class RMSToRMS(PolarNorm):
    """The RMS -> RMS operator norm ``sqrt(d_in / d_out) s_1`` (the Linear layer's norm).

    Dual: ``sqrt(d_out / d_in) ||G||_nuc``. ``dualize(G) = sqrt(d_out / d_in) U V^T``,
    so every singular value of the step is ``sqrt(d_out / d_in)`` (SPEC item 9).
    ``rho = sqrt(d_out / d_in) sqrt(min(d_out, d_in))``.
    """

    name = "rms_to_rms"
    ndim = 2

    def __init__(self, polar: str = "svd", steps: int | None = None) -> None:
        super().__init__(polar, steps)
        self._spectral = Spectral(polar, steps)

    @staticmethod
    def _c(x: Tensor) -> float:  # sqrt(d_out / d_in)
        return math.sqrt(x.shape[-2] / x.shape[-1])

    def norm(self, x: Tensor) -> Tensor:
        return self._spectral.norm(x) / self._c(x)

    def dual_norm(self, g: Tensor) -> Tensor:
        return self._spectral.dual_norm(g) * self._c(g)

    def dualize(self, g: Tensor) -> Tensor:
        return self._spectral.dualize(g) * self._c(g)

    def dual(self) -> Norm:
        return RMSToRMSDual()

    def rho(self, shape: Sequence[int]) -> float:
        m, n = as_shape(shape)[-2:]
        return math.sqrt(m / n) * math.sqrt(min(m, n))


@register
class RMSToRMSDual(DualOf):
    """``sqrt(d_out / d_in) ||G||_nuc``: the dual of :class:`RMSToRMS`.

    ``dualize(G) = sqrt(d_in / d_out) u_1 v_1^T``; ``rho = sqrt(d_in / d_out)``.
    """

    name = "rms_to_rms_dual"
    ndim = 2

    def dualize(self, g: Tensor) -> Tensor:
        return Nuclear().dualize(g) / RMSToRMS._c(g)

    def dual(self) -> Norm:
        return RMSToRMS()

    def rho(self, shape: Sequence[int]) -> float:
        m, n = as_shape(shape)[-2:]
        return math.sqrt(n / m)


class _SliceL2(Norm):
    """``scale * outer_j ||slice_j||_2`` over the columns (``axis=-2``) or rows (``axis=-1``)
    of a matrix, with ``outer`` max or sum; the max and sum forms are each other's duals."""

    ndim = 2
    axis: int = -2
    outer: str = "max"

    def _scale(self, m: int, n: int) -> float:
        raise NotImplementedError

    def _slices(self, x: Tensor) -> Tensor:
        self._reduce_dims(x)
        return vector_norm(work_tensor(x), dim=self.axis)  # (..., n) or (..., m)

    def _apply(self, lengths: Tensor, outer: str) -> Tensor:
        return lengths.amax(dim=-1) if outer == "max" else lengths.sum(dim=-1)

    def norm(self, x: Tensor) -> Tensor:
        lengths = self._slices(x)  # checks the ndim before the shape is read
        return self._scale(*x.shape[-2:]) * self._apply(lengths, self.outer)

    def dual_norm(self, g: Tensor) -> Tensor:
        other = "sum" if self.outer == "max" else "max"
        return self._apply(self._slices(g), other) / self._scale(*g.shape[-2:])

    def dualize(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        y = unit_scale(work_tensor(g), (-2, -1))
        lengths = torch.linalg.vector_norm(y, dim=self.axis, keepdim=True)
        unit = safe_div(y, lengths)  # every nonzero slice at l2 length 1
        if self.outer == "sum":
            # the dual is a max over slices: all weight on the longest slice
            across = -1 if self.axis == -2 else -2  # the dim that indexes the slices
            mask = torch.zeros_like(lengths)
            mask.scatter_(across, lengths.argmax(dim=across, keepdim=True), 1.0)
            unit = unit * mask
        return (unit / self._scale(*g.shape[-2:])).to(g.dtype)


@register
class ColumnRMS(_SliceL2):
    """The l1 -> RMS operator norm ``max_j ||col_j||_RMS`` (the embedding's norm, SPEC A2).

    Columns are the input side (``d_in``), in the ``(d_out, d_in)`` layout; for
    ``nn.Embedding`` (``(vocab, dim)``, one row per token) use
    ``Transposed(ColumnRMS())``, as the router does. Dual:
    ``sqrt(d_out) sum_j ||col_j||_2``; ``dualize`` scales each column to RMS 1;
    ``rho = sqrt(d_out d_in)``.
    """

    name = "column_rms"
    axis = -2
    outer = "max"

    def _scale(self, m: int, n: int) -> float:
        return 1.0 / math.sqrt(m)

    def dual(self) -> Norm:
        return ColumnRMSDual()

    def rho(self, shape: Sequence[int]) -> float:
        m, n = as_shape(shape)[-2:]
        return math.sqrt(m * n)


@register
class ColumnRMSDual(_SliceL2):
    """``sqrt(d_out) sum_j ||col_j||_2``, the dual of :class:`ColumnRMS`; ``rho = 1 / sqrt(d_out)``."""

    name = "column_rms_dual"
    axis = -2
    outer = "sum"

    def _scale(self, m: int, n: int) -> float:
        return math.sqrt(m)

    def dual(self) -> Norm:
        return ColumnRMS()

    def rho(self, shape: Sequence[int]) -> float:
        m, _ = as_shape(shape)[-2:]
        return 1.0 / math.sqrt(m)


@register
class RowRMS(_SliceL2):
    """The RMS -> l-inf operator norm ``max_i sqrt(d_in) ||row_i||_2`` (for output heads).

    Dual: ``sum_i ||row_i||_2 / sqrt(d_in)``; ``dualize`` maps each row to
    ``row_i / (sqrt(d_in) ||row_i||_2)``; ``rho = sqrt(d_out / d_in)``.
    """

    name = "row_rms"
    axis = -1
    outer = "max"

    def _scale(self, m: int, n: int) -> float:
        return math.sqrt(n)

    def dual(self) -> Norm:
        return RowRMSDual()

    def rho(self, shape: Sequence[int]) -> float:
        m, n = as_shape(shape)[-2:]
        return math.sqrt(m / n)


@register
class RowRMSDual(_SliceL2):
    """``sum_i ||row_i||_2 / sqrt(d_in)``, the dual of :class:`RowRMS`; ``rho = sqrt(d_in)``."""

    name = "row_rms_dual"
    axis = -1
    outer = "sum"

    def _scale(self, m: int, n: int) -> float:
        return 1.0 / math.sqrt(n)

    def dual(self) -> Norm:
        return RowRMS()

    def rho(self, shape: Sequence[int]) -> float:
        _, n = as_shape(shape)[-2:]
        return math.sqrt(n)
