"""Norms of conv kernels: the per-slice rule of modular duality (arXiv 2410.21265)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from normopt.norms.base import DualOf, Norm, register
from normopt.norms.numerics import (
    as_shape,
    work_tensor,
)
from normopt.norms.operator import RMSToRMS, RMSToRMSDual
from normopt.norms.spectral import PolarNorm

__all__ = ["ConvSpectral", "ConvSpectralDual"]


def _kernel_slices(x: Tensor) -> Tensor:
    """``(..., d_out, d_in, kh, kw)`` -> ``(..., kh, kw, d_out, d_in)``: one matrix per position."""
    return x.movedim((-2, -1), (-4, -3))


def _from_slices(x: Tensor) -> Tensor:
    return x.movedim((-4, -3), (-2, -1))


@register
class ConvSpectral(PolarNorm):
    """Conv2d kernel norm, the per-slice rule of modular duality (arXiv 2410.21265).

    For a kernel ``(d_out, d_in, kh, kw)`` with ``k^2 = kh kw`` positions:
    ``norm = k^2 max_p ||W_p||_{RMS->RMS}`` over the slices ``W_p = W[:, :, i, j]``;
    ``dualize`` maps each slice to ``(1/k^2) sqrt(d_out/d_in) U_p V_p^T``.
    Dual: ``(1/k^2) sum_p ||G_p||_{RMS->RMS,dual}``;
    ``rho = sqrt(d_out/d_in) sqrt(min(d_out, d_in)) / k``. The common
    alternative (reshape to ``(d_out, d_in k^2)`` and orthogonalize) is
    :class:`Spectral` or :class:`RMSToRMS` on a 4-D tensor, through ``fit``.
    """

    name = "conv_spectral"
    ndim = 4

    def __init__(self, polar: str = "svd", steps: int | None = None) -> None:
        super().__init__(polar, steps)
        self._slice = RMSToRMS(polar, steps)

    @staticmethod
    def _k2(x: Tensor) -> int:
        return int(x.shape[-2] * x.shape[-1])

    def norm(self, x: Tensor) -> Tensor:
        self._reduce_dims(x)
        return self._k2(x) * self._slice.norm(_kernel_slices(x)).amax(dim=(-2, -1))

    def dual_norm(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        return self._slice.dual_norm(_kernel_slices(g)).sum(dim=(-2, -1)) / self._k2(g)

    def dualize(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        return _from_slices(self._slice.dualize(_kernel_slices(g))) / self._k2(g)

    def dual(self) -> Norm:
        return ConvSpectralDual()

    def rho(self, shape: Sequence[int]) -> float:
        d_out, d_in, kh, kw = as_shape(shape)[-4:]
        return math.sqrt(d_out / d_in) * math.sqrt(min(d_out, d_in)) / math.sqrt(kh * kw)


@register
class ConvSpectralDual(DualOf):
    """``(1/k^2) sum_p sqrt(d_out/d_in) ||W_p||_nuc``, the dual of :class:`ConvSpectral`.

    ``dualize`` puts ``k^2 sqrt(d_in/d_out) u_1 v_1^T`` on the slice with the
    largest spectral norm and zero elsewhere; ``rho = k^2 sqrt(d_in/d_out)``.
    """

    name = "conv_spectral_dual"
    ndim = 4

    def dualize(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        slices = _kernel_slices(work_tensor(g))  # (..., kh, kw, d_out, d_in)
        s1 = torch.linalg.matrix_norm(slices, ord=2).flatten(start_dim=-2)  # (..., k^2)
        mask = torch.zeros_like(s1)
        mask.scatter_(-1, s1.argmax(dim=-1, keepdim=True), 1.0)
        mask = mask.reshape(*slices.shape[:-2], 1, 1)
        top = RMSToRMSDual().dualize(slices) * mask * ConvSpectral._k2(g)
        return _from_slices(top).to(g.dtype)

    def dual(self) -> Norm:
        return ConvSpectral()

    def rho(self, shape: Sequence[int]) -> float:
        d_out, d_in, kh, kw = as_shape(shape)[-4:]
        return kh * kw * math.sqrt(d_in / d_out)
