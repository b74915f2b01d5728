"""Merged stacks: ``(m, n)`` and ``(n, m)`` matrices orthogonalized as one batch.

The polar factor commutes with transposition, ``polar(G^T) = polar(G)^T``, and
the Newton-Schulz iterations of :mod:`normopt.linalg` compute it literally so
(a tall input is transposed, iterated wide, transposed back), so iterating
``G^T`` in a wide stack gives bit for bit the transpose of iterating ``G``.
A GPT block's ``768 x 3072`` and ``3072 x 768`` weights then become one stack
of 24 instead of two of 12: one set of launches instead of two.

:func:`plan_stacks` only plans (which indices, which of them transposed, the
element shape); :func:`gather` builds the stack and :func:`scatter_one` undoes
the transposition of one result. :class:`normopt.optim.base.NormOptimizer` plans
every stack here; the reference is the unmerged plan (``merge=False`` everywhere), its
default, and an optimizer allows merging only for a transpose-equivariant direction
(Muon's polar factor, on CUDA by default).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["StackPlan", "gather", "plan_stacks", "scatter_one"]


@dataclass(frozen=True)
class StackPlan:
    """One stack: ``indices`` into the buffer list, ``flipped[j]`` when buffer ``indices[j]``
    enters transposed, and the element ``shape`` (``(*lead, m, n)`` with ``m <= n`` for a
    merged stack)."""

    indices: tuple[int, ...]
    flipped: tuple[bool, ...]
    shape: tuple[int, ...]


def plan_stacks(
    shapes: Sequence[tuple[int, ...]],
    keys: Sequence[Hashable],
    merge: Sequence[bool],
) -> list[StackPlan]:
    """Group elements by (element shape, key); with ``merge[i]``, a tall element counts as wide.

    Args:
        shapes: each element's shape ``(*lead, r, c)`` (elements with fewer than two
            dims are never transposed).
        keys: anything else that must match within a stack (dtype, device).
        merge: per element, whether it may enter transposed.

    Returns:
        The stacks in order of first appearance, indices ascending within each.
    """
    if not (len(shapes) == len(keys) == len(merge)):
        raise ValueError("plan_stacks: shapes, keys and merge must have equal lengths")
    order: dict[tuple[tuple[int, ...], Hashable], list[tuple[int, bool]]] = {}
    for i, (shape, key, ok) in enumerate(zip(shapes, keys, merge)):
        shape = tuple(shape)
        flip = bool(ok) and len(shape) >= 2 and shape[-2] > shape[-1]
        canon = (*shape[:-2], shape[-1], shape[-2]) if flip else shape
        order.setdefault((canon, key), []).append((i, flip))
    return [
        StackPlan(
            indices=tuple(i for i, _ in members),
            flipped=tuple(f for _, f in members),
            shape=canon,
        )
        for (canon, _), members in order.items()
    ]


def gather(buffers: Sequence[Tensor], plan: StackPlan) -> Tensor:
    """The stack ``(B, *plan.shape)``: each buffer reshaped to its element shape, transposed
    where ``plan.flipped`` says so."""
    parts = []
    for i, flip in zip(plan.indices, plan.flipped):
        if flip:
            r, c = plan.shape[-1], plan.shape[-2]  # the element's own (tall) orientation
            parts.append(buffers[i].reshape(*plan.shape[:-2], r, c).mT)
        else:
            parts.append(buffers[i].reshape(plan.shape))
    if len(parts) == 1:
        return parts[0].unsqueeze(0)
    return torch.stack(parts)  # (B, *shape)


def scatter_one(out: Tensor, j: int, plan: StackPlan, shape: tuple[int, ...]) -> Tensor:
    """Entry ``j`` of a stack's result, back in its parameter's orientation and ``shape``."""
    o = out[j]
    if plan.flipped[j]:
        o = o.mT
    return o.reshape(shape)
