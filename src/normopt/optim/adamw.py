"""AdamW as a group algorithm: torch's fused kernel where it applies, the moves elsewhere.

A group running AdamW (``Muon``'s ``algorithm="adamw"`` groups) carries its own
``lr``, ``betas``, ``eps`` and ``weight_decay``. Per (device, dtype):

- **fused**: float32/float64 parameters whose gradients share their dtype, on a
  device with torch's fused Adam kernel (CPU, CUDA, ...; and ``meta`` for a float
  ``lr``): ``torch._fused_adamw_`` with the same arguments ``torch.optim.AdamW
  (fused=True)`` passes, so the two agree bit for bit; a skipped step is the
  kernel's own ``found_inf``. Three aten ops per step.
- **moves**: everything else (bf16/fp16 parameters, whose state is kept in
  float32; ``foreach=False``, the per-parameter reference): a flat block and
  :func:`normopt.optim.moves.adam_`, with a per-parameter ``step`` tensor.

Update (Loshchilov & Hutter, arXiv 1711.05101), with ``t`` the parameter's step::

    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
    W <- (1 - lr wd) W - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from normopt import distributed
from normopt.optim import moves
from normopt.optim.base import lr_on
from normopt.optim.moves import Mask

if TYPE_CHECKING:
    from normopt.optim.base import NormOptimizer

__all__ = ["adamw_step", "fused_devices"]


def fused_devices() -> tuple[str, ...]:
    """Device types with torch's fused Adam kernel (plus ``meta``, which has its shape rule)."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        found = tuple(_get_fused_kernels_supported_devices())
    except ImportError:  # a torch without the helper: the two it always had
        found = ("cuda", "cpu")
    return (*found, "meta")


def _fusable(p: Tensor, lr: Any, foreach: bool) -> bool:
    g = cast(Tensor, p.grad)
    return (
        foreach
        and p.dtype in (torch.float32, torch.float64)
        and g.dtype == p.dtype
        and p.device.type in fused_devices()
        and not (isinstance(lr, Tensor) and p.device.type == "meta")  # no meta rule for it
    )


def adamw_step(
    opt: NormOptimizer,
    work: list[tuple[int, dict[str, Any], list[Tensor]]],
    masks: dict[Any, Mask],
) -> None:
    """One AdamW step for ``(group index, group, parameters with gradients)`` of AdamW groups.
    Groups with equal hyperparameters share one fused call per device and dtype."""
    fused: dict[tuple[Any, ...], tuple[dict[str, Any], list[Tensor]]] = {}
    for gi, group, params in work:
        rest: list[Tensor] = []
        for p in params:
            if _fusable(p, group["lr"], group["foreach"]):
                b1, b2 = group["betas"]
                # a tensor lr is keyed by the object (only groups sharing it merge)
                key = (group["lr"], b1, b2, group["eps"], group["weight_decay"], p.device, p.dtype)
                fused.setdefault(key, (group, []))[1].append(p)
            else:
                rest.append(p)
        if rest:
            for block in opt._blocks_for(gi, group, rest):
                _flat(opt, group, block, masks.get(block.device))
    for group, ps in fused.values():
        _fused(opt, group, ps, masks.get(ps[0].device))


def _fused(
    opt: NormOptimizer, group: dict[str, Any], params: list[Tensor], mask: Mask | None
) -> None:
    b1, b2 = group["betas"]
    ms, vs, steps = [], [], []
    # DTensor parameters (FSDP2): the kernel runs on the local shards, state stays DTensors
    local = distributed.local if opt._consensus is not None else _same
    for p in params:
        st = opt.state[p]
        if "step" not in st:  # lazy state, as torch.optim.AdamW creates it
            st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        ms.append(local(st["exp_avg"]))
        vs.append(local(st["exp_avg_sq"]))
        steps.append(st["step"])
    found = None if mask is None else mask.found_inf()
    torch._foreach_add_(steps, 1)
    torch._fused_adamw_(
        [local(p) for p in params],
        [local(cast(Tensor, p.grad)) for p in params],
        ms,
        vs,
        [],
        steps,
        amsgrad=False,
        lr=lr_on(group["lr"], local(params[0]).device),
        beta1=b1,
        beta2=b2,
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=False,
        grad_scale=None,
        found_inf=found,
    )
    if found is not None:  # the kernel skipped the step: so does the count (as torch does)
        torch._foreach_sub_(steps, [found] * len(steps))


def _same(t: Tensor) -> Tensor:
    return t


def _flat(opt: NormOptimizer, group: dict[str, Any], block: Any, mask: Mask | None) -> None:
    b1, b2 = group["betas"]
    G = block.grad
    torch._foreach_copy_(block.grad_views, block.grads())
    if mask is not None:
        G.masked_fill_(mask.bad, 0.0)
    step = opt._counter(block)  # (B,), the rows are state[p]["step"]
    step.add_(1.0 if mask is None else mask.ok(step.dtype))
    m = opt._state(block, "exp_avg")
    v = opt._state(block, "exp_avg_sq")
    moves.adam_(m, v, G, b1, b2, mask)
    # t >= 1: a skipped first step leaves t = 0, whose bias correction 1 - b^0 = 0 would give
    # 0 / 0 in a direction that the mask then multiplies by 0 (NaN * 0 is NaN)
    t = step.to(block.dtype).clamp_min_(1.0)
    bc1 = block.per_param(1.0 - torch.pow(b1, t))  # 1 - b1^t per entry
    bc2 = block.per_param(1.0 - torch.pow(b2, t))
    denom = (v / bc2).sqrt_().add_(group["eps"])
    D = (m / bc1).div_(denom)
    lr = lr_on(group["lr"], block.device, block.dtype)
    opt._decoupled_step(block, D, lr, group["weight_decay"], 1.0, mask)
