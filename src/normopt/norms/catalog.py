"""The norm catalog: one small class per norm (SPEC section 1).

Every class gives ``norm``, ``dual_norm``, ``dualize`` (the unit-norm
direction best aligned with the argument), ``dual()`` and ``rho(shape)``.
Leading dimensions are batch dimensions. Sources: Bernstein & Newhouse, "Old
Optimizer, New Norm" (arXiv 2409.20325) and "Modular Duality in Deep Learning"
(arXiv 2410.21265); F. L. Cesista's post on Schatten-p steepest descent. The
Ky Fan rows were derived here and are tested against brute force.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from normopt._checks import (
    at_least_float32,
    check_int,
    check_number,
    check_optional_int,
    check_polar_method,
)
from normopt.kernels.entry import polar
from normopt.norms.base import Norm, register, safe_div

__all__ = [
    "L1",
    "L2",
    "LInf",
    "Frobenius",
    "Spectral",
    "Nuclear",
    "Schatten",
    "KyFan",
    "KyFanDual",
    "MaxEntry",
    "EntrywiseL1",
    "RMSToRMS",
    "RMSToRMSDual",
    "ColumnRMS",
    "ColumnRMSDual",
    "RowRMS",
    "RowRMSDual",
    "ConvSpectral",
    "ConvSpectralDual",
    "Transposed",
    "Modular",
    "ModularSum",
]


def _work(x: Tensor) -> Tensor:
    """At least float32 for reductions and factorizations (bf16/fp16 in, float32 out)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"complex tensors are not supported (dtype {x.dtype})")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got dtype {x.dtype}")
    if x.layout != torch.strided:
        raise TypeError(
            f"sparse tensors are not supported (layout {x.layout}); call .to_dense() first"
        )
    return x.to(at_least_float32(x.dtype))


def _unit_scale(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``x / max|x|`` over ``dims``: dualize maps are scale-free, and this keeps sums of
    squares away from overflow (1e30) and underflow (1e-30)."""
    amax = x.abs().amax(dim=dims, keepdim=True)
    return safe_div(x, amax)


def _vector_norm(x: Tensor, dim: int | tuple[int, ...], ord: float = 2.0) -> Tensor:
    """``torch.linalg.vector_norm`` computed on ``x / max|x|``: the powers neither overflow
    (float32 entries of 1e30 gave inf) nor underflow (entries of 1e-30 gave 0)."""
    amax = x.abs().amax(dim=dim, keepdim=True)
    unit = torch.linalg.vector_norm(safe_div(x, amax), ord=ord, dim=dim, keepdim=True)
    return (unit * amax).squeeze(dim)


def _svd(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    x = _work(x)
    return torch.linalg.svd(x, full_matrices=False)


def _svdvals(x: Tensor) -> Tensor:
    return torch.linalg.svdvals(_work(x))


def _top_pair(g: Tensor) -> Tensor:
    """``u_1 v_1^T`` of each matrix (0 for a zero matrix)."""
    U, S, Vh = _svd(g)
    out = U[..., :, :1] @ Vh[..., :1, :]
    return out * (S[..., :1] > 0).unsqueeze(-1).to(out.dtype)


def _check_polar(polar_method: str, steps: int | None) -> None:
    check_polar_method("polar", polar_method)
    check_optional_int("steps", steps, 1)


def _as_shape(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(s) for s in shape)


# ---------------------------------------------------------------------------------
# Vector norms (act on the last dim; a parameter is flattened by ``fit``)
# ---------------------------------------------------------------------------------


@register
class L2(Norm):
    """Euclidean norm. Self-dual; ``dualize(g) = g / ||g||_2``; ``rho = 1``."""

    name = "l2"
    ndim = 1

    def norm(self, x: Tensor) -> Tensor:
        return _vector_norm(_work(x), dim=self._reduce_dims(x))

    def dual_norm(self, g: Tensor) -> Tensor:
        return self.norm(g)

    def dualize(self, g: Tensor) -> Tensor:
        dims = self._reduce_dims(g)
        y = _unit_scale(_work(g), dims)
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
        return _work(x).abs().amax(dim=self._reduce_dims(x))

    def dual_norm(self, g: Tensor) -> Tensor:
        return _work(g).abs().sum(dim=self._reduce_dims(g))

    def dualize(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        _work(g)  # rejects integer, complex and sparse tensors
        return torch.sign(g)

    def dual(self) -> Norm:
        return L1() if self.ndim == 1 else EntrywiseL1()

    def rho(self, shape: Sequence[int]) -> float:
        return math.sqrt(math.prod(_as_shape(shape)))


@register
class L1(Norm):
    """l1 norm. Dual: max norm. ``dualize(g) = sign(g_i*) e_i*`` at ``i* = argmax |g_i|``; ``rho = 1``."""

    name = "l1"
    ndim = 1

    def norm(self, x: Tensor) -> Tensor:
        return _work(x).abs().sum(dim=self._reduce_dims(x))

    def dual_norm(self, g: Tensor) -> Tensor:
        return _work(g).abs().amax(dim=self._reduce_dims(g))

    def dualize(self, g: Tensor) -> Tensor:
        dims = self._reduce_dims(g)
        _work(g)  # rejects integer, complex and sparse tensors
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


# ---------------------------------------------------------------------------------
# Matrix norms from singular values
# ---------------------------------------------------------------------------------


@register
class Frobenius(L2):
    """Frobenius norm of a matrix. Self-dual; ``dualize(G) = G / ||G||_F``; ``rho = 1``."""

    name = "frobenius"
    transpose_equivariant = True
    ndim = 2


@register
class Spectral(Norm):
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

    def __init__(self, polar: str = "svd", steps: int | None = None) -> None:
        _check_polar(polar, steps)
        if polar == "svd" and steps is not None:
            raise ValueError("steps: the 'svd' polar method takes no step count")
        self.polar = polar
        self.steps = steps

    def _kwargs(self) -> dict[str, Any]:
        return {"polar": self.polar, "steps": self.steps}

    def norm(self, x: Tensor) -> Tensor:
        self._reduce_dims(x)
        return torch.linalg.matrix_norm(_work(x), ord=2)

    def dual_norm(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        return _svdvals(g).sum(dim=-1)

    def dualize(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        return polar(g, self.polar, self.steps)

    def dual(self) -> Norm:
        return Nuclear()

    def rho(self, shape: Sequence[int]) -> float:
        m, n = _as_shape(shape)[-2:]
        return math.sqrt(min(m, n))


@register
class Nuclear(Norm):
    """Nuclear norm ``sum_i s_i``. Dual: spectral. ``dualize(G) = u_1 v_1^T``; ``rho = 1``."""

    name = "nuclear"
    transpose_equivariant = True
    ndim = 2

    def norm(self, x: Tensor) -> Tensor:
        self._reduce_dims(x)
        return _svdvals(x).sum(dim=-1)

    def dual_norm(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        return torch.linalg.matrix_norm(_work(g), ord=2)

    def dualize(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        return _top_pair(g).to(g.dtype)

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
        return _vector_norm(s, ord=p, dim=-1)

    def norm(self, x: Tensor) -> Tensor:
        self._reduce_dims(x)
        return self._pnorm(_svdvals(x), self.p)

    def dual_norm(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        return self._pnorm(_svdvals(g), self.q)

    def dualize(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        U, S, Vh = _svd(g)
        S = safe_div(S, S.amax(dim=-1, keepdim=True))  # scale-free: s / s_1
        w = S.pow(self.q - 1.0)
        w = safe_div(w, self._pnorm(S, self.q).pow(self.q - 1.0).unsqueeze(-1))
        return ((U * w.unsqueeze(-2)) @ Vh).to(g.dtype)

    def dual(self) -> Norm:
        return Schatten(self.q)

    def rho(self, shape: Sequence[int]) -> float:
        m, n = _as_shape(shape)[-2:]
        return float(min(m, n) ** max(0.0, 1.0 / self.q - 0.5))


@register
class KyFan(Norm):
    """Ky Fan k-norm: the sum of the ``k`` largest singular values.

    Dual: ``max(s_1, ||G||_nuc / k)`` (:class:`KyFanDual`). ``dualize(G)`` is
    ``u_1 v_1^T`` when ``s_1 >= ||G||_nuc / k``, else ``U V^T / k``;
    ``rho = max(1, sqrt(r) / k)``. Derived here, checked by brute force in the
    tests. ``k = 1`` is the spectral norm, ``k >= min(m, n)`` the nuclear norm.
    """

    name = "ky_fan"
    transpose_equivariant = True
    ndim = 2

    def __init__(self, k: int) -> None:
        self.k = check_int("k", k, 1)

    def _kwargs(self) -> dict[str, Any]:
        return {"k": self.k}

    def norm(self, x: Tensor) -> Tensor:
        self._reduce_dims(x)
        return _svdvals(x)[..., : self.k].sum(dim=-1)

    def dual_norm(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        s = _svdvals(g)
        return torch.maximum(s[..., 0], s.sum(dim=-1) / self.k)

    def dualize(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        U, S, Vh = _svd(g)
        tol = max(g.shape[-2:]) * torch.finfo(S.dtype).eps * S[..., :1]
        keep = (tol < S).to(S.dtype)
        top = U[..., :, :1] @ Vh[..., :1, :] * keep[..., :1].unsqueeze(-1)
        spread = (U * keep.unsqueeze(-2)) @ Vh / self.k
        use_top = (S[..., 0] >= S.sum(dim=-1) / self.k)[..., None, None]
        return torch.where(use_top, top, spread).to(g.dtype)

    def dual(self) -> Norm:
        return KyFanDual(self.k)

    def rho(self, shape: Sequence[int]) -> float:
        m, n = _as_shape(shape)[-2:]
        return max(1.0, math.sqrt(min(m, n)) / self.k)


@register
class KyFanDual(Norm):
    """The dual of the Ky Fan k-norm: ``max(s_1, ||G||_nuc / k)``.

    Dual: Ky Fan k. ``dualize(G) = sum_{i <= k} u_i v_i^T`` (over the nonzero
    singular values); ``rho = sqrt(k)`` (capped at ``sqrt(r)``).
    """

    name = "ky_fan_dual"
    transpose_equivariant = True
    ndim = 2

    def __init__(self, k: int) -> None:
        self.k = check_int("k", k, 1)

    def _kwargs(self) -> dict[str, Any]:
        return {"k": self.k}

    def norm(self, x: Tensor) -> Tensor:
        return KyFan(self.k).dual_norm(x)

    def dual_norm(self, g: Tensor) -> Tensor:
        return KyFan(self.k).norm(g)

    def dualize(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        U, S, Vh = _svd(g)
        k = min(self.k, S.shape[-1])
        tol = max(g.shape[-2:]) * torch.finfo(S.dtype).eps * S[..., :1]
        keep = (S[..., :k] > tol).to(S.dtype)
        return ((U[..., :, :k] * keep.unsqueeze(-2)) @ Vh[..., :k, :]).to(g.dtype)

    def dual(self) -> Norm:
        return KyFan(self.k)

    def rho(self, shape: Sequence[int]) -> float:
        m, n = _as_shape(shape)[-2:]
        return math.sqrt(min(self.k, m, n))


# ---------------------------------------------------------------------------------
# Operator norms between RMS-normed spaces (modular duality, arXiv 2410.21265)
# ---------------------------------------------------------------------------------


@register
class RMSToRMS(Norm):
    """The RMS -> RMS operator norm ``sqrt(d_in / d_out) s_1`` (the Linear layer's norm).

    Dual: ``sqrt(d_out / d_in) ||G||_nuc``. ``dualize(G) = sqrt(d_out / d_in) U V^T``,
    so every singular value of the step is ``sqrt(d_out / d_in)`` (SPEC item 9).
    ``rho = sqrt(d_out / d_in) sqrt(min(d_out, d_in))``.
    """

    name = "rms_to_rms"
    ndim = 2

    def __init__(self, polar: str = "svd", steps: int | None = None) -> None:
        self._spectral = Spectral(polar, steps)
        self.polar, self.steps = polar, steps

    def _kwargs(self) -> dict[str, Any]:
        return {"polar": self.polar, "steps": self.steps}

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
        m, n = _as_shape(shape)[-2:]
        return math.sqrt(m / n) * math.sqrt(min(m, n))


@register
class RMSToRMSDual(Norm):
    """``sqrt(d_out / d_in) ||G||_nuc``: the dual of :class:`RMSToRMS`.

    ``dualize(G) = sqrt(d_in / d_out) u_1 v_1^T``; ``rho = sqrt(d_in / d_out)``.
    """

    name = "rms_to_rms_dual"
    ndim = 2

    def norm(self, x: Tensor) -> Tensor:
        return RMSToRMS().dual_norm(x)

    def dual_norm(self, g: Tensor) -> Tensor:
        return RMSToRMS().norm(g)

    def dualize(self, g: Tensor) -> Tensor:
        return Nuclear().dualize(g) / RMSToRMS._c(g)

    def dual(self) -> Norm:
        return RMSToRMS()

    def rho(self, shape: Sequence[int]) -> float:
        m, n = _as_shape(shape)[-2:]
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
        return _vector_norm(_work(x), dim=self.axis)  # (..., n) or (..., m)

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
        y = _unit_scale(_work(g), (-2, -1))
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
        m, n = _as_shape(shape)[-2:]
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
        m, _ = _as_shape(shape)[-2:]
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
        m, n = _as_shape(shape)[-2:]
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
        _, n = _as_shape(shape)[-2:]
        return math.sqrt(n)


# ---------------------------------------------------------------------------------
# Convolution kernels: the per-slice rule of arXiv 2410.21265
# ---------------------------------------------------------------------------------


def _kernel_slices(x: Tensor) -> Tensor:
    """``(..., d_out, d_in, kh, kw)`` -> ``(..., kh, kw, d_out, d_in)``: one matrix per position."""
    return x.movedim((-2, -1), (-4, -3))


def _from_slices(x: Tensor) -> Tensor:
    return x.movedim((-4, -3), (-2, -1))


@register
class ConvSpectral(Norm):
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
        self._slice = RMSToRMS(polar, steps)
        self.polar, self.steps = polar, steps

    def _kwargs(self) -> dict[str, Any]:
        return {"polar": self.polar, "steps": self.steps}

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
        d_out, d_in, kh, kw = _as_shape(shape)[-4:]
        return math.sqrt(d_out / d_in) * math.sqrt(min(d_out, d_in)) / math.sqrt(kh * kw)


@register
class ConvSpectralDual(Norm):
    """``(1/k^2) sum_p sqrt(d_out/d_in) ||W_p||_nuc``, the dual of :class:`ConvSpectral`.

    ``dualize`` puts ``k^2 sqrt(d_in/d_out) u_1 v_1^T`` on the slice with the
    largest spectral norm and zero elsewhere; ``rho = k^2 sqrt(d_in/d_out)``.
    """

    name = "conv_spectral_dual"
    ndim = 4

    def norm(self, x: Tensor) -> Tensor:
        return ConvSpectral().dual_norm(x)

    def dual_norm(self, g: Tensor) -> Tensor:
        return ConvSpectral().norm(g)

    def dualize(self, g: Tensor) -> Tensor:
        self._reduce_dims(g)
        slices = _kernel_slices(_work(g))  # (..., kh, kw, d_out, d_in)
        s1 = torch.linalg.matrix_norm(slices, ord=2).flatten(start_dim=-2)  # (..., k^2)
        mask = torch.zeros_like(s1)
        mask.scatter_(-1, s1.argmax(dim=-1, keepdim=True), 1.0)
        mask = mask.reshape(*slices.shape[:-2], 1, 1)
        top = RMSToRMSDual().dualize(slices) * mask * ConvSpectral._k2(g)
        return _from_slices(top).to(g.dtype)

    def dual(self) -> Norm:
        return ConvSpectral()

    def rho(self, shape: Sequence[int]) -> float:
        d_out, d_in, kh, kw = _as_shape(shape)[-4:]
        return kh * kw * math.sqrt(d_in / d_out)


# ---------------------------------------------------------------------------------
# Combinators
# ---------------------------------------------------------------------------------


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
        from normopt.norms.base import from_spec

        inner = from_spec(inner)
        if inner.ndim != 2:
            raise ValueError(f"inner: Transposed needs a matrix norm (ndim 2), got {inner!r}")
        self.inner = inner

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
        m, n = _as_shape(shape)[-2:]
        return self.inner.rho((n, m))


class _Blocks(Norm):
    """Shared parts of the product norms over several tensors (blocks)."""

    ndim = 0

    def __init__(
        self, norms: Sequence[Norm | str | dict[str, Any]], scales: Sequence[float] | None = None
    ) -> None:
        from normopt.norms.base import from_spec

        if isinstance(norms, Norm | str | dict) or len(norms) == 0:
            raise ValueError("norms: expected a non-empty sequence of norms, one per block")
        self.norms = [from_spec(n) for n in norms]
        if scales is None:
            scales = [1.0] * len(self.norms)
        scales = [float(s) for s in scales]
        if len(scales) != len(self.norms):
            raise ValueError(
                f"scales: expected {len(self.norms)} scales (one per block), got {len(scales)}"
            )
        self.scales = [check_number("scales", s, 0.0, low_open=True) for s in scales]

    def _kwargs(self) -> dict[str, Any]:
        return {"norms": [n.spec() for n in self.norms], "scales": list(self.scales)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.norms!r}, scales={self.scales!r})"

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(map(repr, self.norms)), tuple(self.scales)))

    def _check(self, xs: Sequence[Tensor]) -> None:
        if isinstance(xs, Tensor) or len(xs) != len(self.norms):
            raise ValueError(
                f"x: {type(self).__name__} acts on a sequence of {len(self.norms)} tensors, one per block"
            )

    def fit(self, shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
        raise ValueError(
            f"norm: {type(self).__name__} spans several tensors; use SteepestDescent(modular=True) "
            "with one norm per param group"
        )

    def rho(self, shape: Sequence[Sequence[int]]) -> float:  # type: ignore[override]
        """One shape per block: ``sqrt(sum_l (rho_l / s_l)^2)`` for the max form."""
        raise NotImplementedError


@register
class Modular(_Blocks):
    """Product (modular) norm ``max_l s_l ||W_l||_l`` over blocks (SPEC A2, arXiv 2409.20325 Prop. 7).

    Dual: ``sum_l ||G_l||_{l,dual} / s_l``. ``dualize`` returns the blocks
    ``dualize_l(G_l) / s_l``, so the modular steepest-descent step with
    sharpness ``lambda`` is ``D_l = -(eta / s_l) dualize_l(G_l)`` with
    ``eta = dual_norm(G) / lambda``. Acts on sequences of tensors, one per block.
    """

    name = "modular"

    def norm(self, xs: Sequence[Tensor]) -> Tensor:  # type: ignore[override]
        self._check(xs)
        vals = [s * n.norm(x) for n, s, x in zip(self.norms, self.scales, xs)]
        return torch.stack(torch.broadcast_tensors(*vals)).amax(dim=0)

    def dual_norm(self, gs: Sequence[Tensor]) -> Tensor:  # type: ignore[override]
        self._check(gs)
        vals = [n.dual_norm(g) / s for n, s, g in zip(self.norms, self.scales, gs)]
        return torch.stack(torch.broadcast_tensors(*vals)).sum(dim=0)

    def dualize(self, gs: Sequence[Tensor]) -> list[Tensor]:  # type: ignore[override]
        self._check(gs)
        return [n.dualize(g) / s for n, s, g in zip(self.norms, self.scales, gs)]

    def dual(self) -> Norm:
        return ModularSum([n.dual() for n in self.norms], [1.0 / s for s in self.scales])

    def rho(self, shapes: Sequence[Sequence[int]]) -> float:  # type: ignore[override]
        return math.sqrt(
            sum((n.rho(tuple(sh)) / s) ** 2 for n, s, sh in zip(self.norms, self.scales, shapes))
        )


@register
class ModularSum(_Blocks):
    """``sum_l w_l ||W_l||_l`` over blocks: the dual of :class:`Modular`.

    Dual: ``max_l ||G_l||_{l,dual} / w_l``; ``dualize`` puts
    ``dualize_l(G_l) / w_l`` on the block that attains the max, zero elsewhere.
    """

    name = "modular_sum"

    def norm(self, xs: Sequence[Tensor]) -> Tensor:  # type: ignore[override]
        self._check(xs)
        vals = [w * n.norm(x) for n, w, x in zip(self.norms, self.scales, xs)]
        return torch.stack(torch.broadcast_tensors(*vals)).sum(dim=0)

    def dual_norm(self, gs: Sequence[Tensor]) -> Tensor:  # type: ignore[override]
        self._check(gs)
        vals = [n.dual_norm(g) / w for n, w, g in zip(self.norms, self.scales, gs)]
        return torch.stack(torch.broadcast_tensors(*vals)).amax(dim=0)

    def dualize(self, gs: Sequence[Tensor]) -> list[Tensor]:  # type: ignore[override]
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

    def dual(self) -> Norm:
        return Modular([n.dual() for n in self.norms], [1.0 / w for w in self.scales])

    def rho(self, shapes: Sequence[Sequence[int]]) -> float:  # type: ignore[override]
        return max(n.rho(tuple(sh)) / w for n, w, sh in zip(self.norms, self.scales, shapes))
