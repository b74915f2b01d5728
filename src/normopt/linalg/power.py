"""Power iteration for the top singular triple: a cheap spectral norm for monitors."""

from __future__ import annotations

import torch
from torch import Tensor

from normopt._checks import at_least_float32


def power_iteration(
    W: Tensor, iters: int = 20, v0: Tensor | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Estimate the top singular triple ``(s_1, u_1, v_1)`` of ``W`` (or a batch).

    Runs ``iters`` rounds of ``v <- W^T W v / ||.||`` in at least float32.
    ``v0`` (shape ``(..., n)``) warm-starts the iteration, which makes repeated
    monitoring of a slowly changing matrix cheap. Returns ``s`` with the batch
    shape, ``u`` ``(..., m)``, ``v`` ``(..., n)``. The estimate never exceeds
    the true ``s_1`` (up to round-off) and converges to it.
    """
    if W.ndim < 2:
        raise ValueError(f"W: expected ndim >= 2, got shape {tuple(W.shape)}")
    if iters < 1:
        raise ValueError(f"iters: expected >= 1, got {iters}")
    X = W.detach().to(at_least_float32(W.dtype))
    if v0 is None:
        v = torch.randn(
            (*X.shape[:-2], X.shape[-1]), dtype=X.dtype, device=X.device, generator=generator
        )
    else:
        v = v0.to(dtype=X.dtype, device=X.device).clone()
    tiny = torch.finfo(X.dtype).tiny
    v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(tiny)
    u = torch.zeros((*X.shape[:-2], X.shape[-2]), dtype=X.dtype, device=X.device)
    for _ in range(iters):
        u = (X @ v.unsqueeze(-1)).squeeze(-1)
        u = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True).clamp_min(tiny)
        v = (X.mT @ u.unsqueeze(-1)).squeeze(-1)
        v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(tiny)
    s = (u.unsqueeze(-2) @ X @ v.unsqueeze(-1)).squeeze(-1).squeeze(-1)
    return s, u, v


def spectral_norm(W: Tensor, iters: int = 20, exact: bool = False) -> Tensor:
    """Spectral norm ``s_1`` of a matrix or batch: power iteration, or exact when asked."""
    if exact:
        return torch.linalg.matrix_norm(W.detach().double(), ord=2).to(
            W.dtype if W.is_floating_point() else torch.float64
        )
    return power_iteration(W, iters)[0]
