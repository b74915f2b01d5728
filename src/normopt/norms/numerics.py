"""The numerics every norm of the catalog shares: safe division, overflow-safe vector norms,
SVDs in at least float32, shapes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from normopt._checks import (
    at_least_float32,
    check_optional_int,
    check_polar_method,
    check_real_tensor,
)

__all__ = [
    "as_shape",
    "check_polar",
    "safe_div",
    "svd",
    "svdvals",
    "top_pair",
    "unit_scale",
    "vector_norm",
    "work_tensor",
]


def safe_div(x: Tensor, d: Tensor) -> Tensor:
    """``x / d`` with 0 where ``d == 0`` (the dualize of a zero gradient is zero)."""
    return torch.where(d > 0, x / torch.where(d > 0, d, torch.ones_like(d)), torch.zeros_like(x))


def work_tensor(x: Tensor) -> Tensor:
    """At least float32 for reductions and factorizations (bf16/fp16 in, float32 out); a
    ``TypeError`` for what is not a dense real floating-point tensor."""
    check_real_tensor("x", x)
    return x.to(at_least_float32(x.dtype))


def unit_scale(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``x / max|x|`` over ``dims``: dualize maps are scale-free, and this keeps sums of
    squares away from overflow (1e30) and underflow (1e-30)."""
    amax = x.abs().amax(dim=dims, keepdim=True)
    return safe_div(x, amax)


def vector_norm(x: Tensor, dim: int | tuple[int, ...], ord: float = 2.0) -> Tensor:
    """``torch.linalg.vector_norm`` computed on ``x / max|x|``: the powers neither overflow
    (float32 entries of 1e30 gave inf) nor underflow (entries of 1e-30 gave 0)."""
    amax = x.abs().amax(dim=dim, keepdim=True)
    unit = torch.linalg.vector_norm(safe_div(x, amax), ord=ord, dim=dim, keepdim=True)
    return (unit * amax).squeeze(dim)


def svd(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    x = work_tensor(x)
    return torch.linalg.svd(x, full_matrices=False)


def svdvals(x: Tensor) -> Tensor:
    return torch.linalg.svdvals(work_tensor(x))


def top_pair(g: Tensor) -> Tensor:
    """``u_1 v_1^T`` of each matrix (0 for a zero matrix)."""
    U, S, Vh = svd(g)
    out = U[..., :, :1] @ Vh[..., :1, :]
    return out * (S[..., :1] > 0).unsqueeze(-1).to(out.dtype)


def check_polar(polar_method: str, steps: int | None) -> None:
    check_polar_method("polar", polar_method)
    check_optional_int("steps", steps, 1)


def as_shape(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(s) for s in shape)
