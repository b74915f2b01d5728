"""Muon-MVR2: Muon with second-order variance reduction (SPEC A12, arXiv 2509.15816)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from normopt.optim import moves
from normopt.optim.base import Block, NonFiniteGradientError
from normopt.optim.moves import Mask
from normopt.optim.muon import Muon

__all__ = ["MuonMVR2"]


class MuonMVR2(Muon):
    r"""Muon with MVR2 momentum: two gradients per step on one batch.

    For Muon's matrices (``G(X; xi)`` the gradient at ``X`` on batch ``xi``)::

        M_t = beta M_{t-1} + (1 - beta) G(X_t; xi_t) + beta (G(X_t; xi_t) - G(X_{t-1}; xi_t))
        X_{t+1} = (1 - lr wd) X_t - lr scale polar(M_t)

    with ``M_0 = G(X_0; xi_0)``. With exact gradients the momentum equals the
    gradient at every step (SPEC item 10). ``step(closure)`` is required: the
    closure zeroes nothing itself, computes the loss on *its* batch and calls
    ``backward``; it is called twice per step, at ``X_t`` and at ``X_{t-1}``, so it
    must use the same batch both times. The other tensors get AdamW on
    ``G(X_t; xi_t)`` as in :class:`Muon`. Memory: a copy of the previous
    parameters. Defaults as :class:`Muon` but ``nesterov=False``.

    Example:
        >>> import torch, normopt
        >>> model = torch.nn.Linear(4, 3)
        >>> opt = normopt.MuonMVR2(model, lr=0.02)
        >>> x = torch.randn(8, 4)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = model(x).square().mean()
        ...     loss.backward()
        ...     return loss
        >>> loss = opt.step(closure)
    """

    def __init__(
        self, params_or_model: Any, lr: float = 0.02, momentum: float = 0.95, **kwargs: Any
    ) -> None:
        kwargs.setdefault("nesterov", False)
        super().__init__(params_or_model, lr=lr, momentum=momentum, **kwargs)
        self._prev_grads: dict[Tensor, Tensor] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_prev_grads", {})

    def _sharding_supported(self, group: dict[str, Any]) -> bool:
        return False  # the second gradients are kept per parameter, not per shard

    def _accumulate(
        self, group: dict[str, Any], block: Block, G: Tensor, mask: Mask | None
    ) -> Tensor:
        beta = group["momentum"]
        buf = self._state(block, "momentum_buffer")
        prev = [self._prev_grads.get(p) for p in block.params]
        have = [q is not None for q in prev]
        if not any(have):  # first step: M_0 = G(X_0; xi_0) (lerp with weight 1 is exact)
            moves.lerp_(buf, G, 1.0 if mask is None else mask.ok(buf.dtype))
        else:
            P = block.extras.get("prev_grad")
            if P is None:
                P = block.extras["prev_grad"] = torch.zeros_like(block.grad)
                block.extras["prev_grad_views"] = block.rows(P)
            views = block.extras["prev_grad_views"]
            pairs = [(v, q) for v, q in zip(views, prev) if q is not None]
            if not all(have):
                P.zero_()
            torch._foreach_copy_([v for v, _ in pairs], [q for _, q in pairs])
            if mask is not None:
                P.masked_fill_(mask.bad, 0.0)
            if all(have):
                w: Any = 1.0 - beta
                corr: Any = beta
            else:  # rows without a previous gradient start at M_0 = G
                dt, dev = buf.dtype, block.device
                w = [1.0 - beta if h else 1.0 for h in have]
                c = [beta if h else 0.0 for h in have]
                w = block.per_param(torch.tensor(w, dtype=dt, device=dev))
                corr = block.per_param(torch.tensor(c, dtype=dt, device=dev))
            if mask is not None:
                w = mask.ok(buf.dtype) * w
            buf.lerp_(G, w).add_((G - P) * corr)  # zero on a skipped step
        return G.lerp(buf, beta) if group["nesterov"] else buf

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        if closure is None:
            # torch.distributed.checkpoint initializes an optimizer's state with one step of
            # zero gradients at lr 0 (and no closure): that one step is taken, nothing moves
            if not (self._fresh() and all(_is_zero(g["lr"]) for g in self.param_groups)):
                raise ValueError(
                    "closure: MuonMVR2 needs a closure that recomputes the loss and gradients on "
                    "the current batch; it is called twice per step"
                )
            loss = None
        else:
            with torch.enable_grad():
                loss = closure()
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        # .get: looking a parameter up must not create an empty state entry (lazy state)
        have_prev = [p for p in params if "prev_param" in self.state.get(p, {})]
        self._prev_grads = {}
        if have_prev and closure is not None:  # (a fresh optimizer has no previous iterate)
            current = [(p, p.detach().clone(), p.grad) for p in params]
            try:
                for p in params:
                    p.grad = None
                for p in have_prev:
                    p.copy_(self.state[p]["prev_param"])
                with torch.enable_grad():
                    closure()  # G(X_{t-1}; xi_t)
                for p in have_prev:
                    if p.grad is not None:
                        self._prev_grads[p] = p.grad
            finally:  # X_t and its gradients come back even when the closure raises
                for p, value, grad in current:
                    p.copy_(value)
                    p.grad = grad
            # "raise" checks the second gradients on the host (it syncs anyway); "skip" masks
            # them on the device with the first ones (the extra entries below)
            bad = [
                p
                for p, g in self._prev_grads.items()
                if self._policy(p) == "raise" and not bool(torch.isfinite(g).all())
            ]
            if bad:
                self._prev_grads = {}
                group = next(g for g in self.param_groups if any(q is bad[0] for q in g["params"]))
                if group["nonfinite"] == "raise":
                    raise NonFiniteGradientError(
                        f"non-finite gradient at the previous iterate in {self._param_name(group, bad[0])}"
                    )
                return loss
        snapshot = {p: p.detach().clone() for p in params}  # X_t, the next step's X_{t-1}
        groups = {p: g for g in self.param_groups for p in g["params"]}
        extra = [(groups[p], p, g) for p, g in self._prev_grads.items()]
        try:
            if self._update(extra):  # the second gradients count for the overflow guard too
                masks = self._last_masks  # empty when the host-side path ran
                for p in params:
                    old = self.state[p].get("prev_param")
                    mask = masks.get(p.device)
                    if old is None or mask is None:
                        self.state[p]["prev_param"] = snapshot[p]
                    else:  # a skipped step keeps X_{t-1}, decided on the device
                        torch.where(mask.bad, old, snapshot[p], out=old)
            # else (host-side policy): nothing moved, X_{t-1} stays
        finally:
            self._prev_grads = {}
        return loss

    def _fresh(self) -> bool:
        return not any(self.state.get(p) for g in self.param_groups for p in g["params"])

    def _policy(self, p: Tensor) -> str:
        for g in self.param_groups:
            if any(q is p for q in g["params"]):
                return str(g.get("nonfinite", "skip"))
        return "skip"

    def _state_value_dtype(self, key: str, p: Tensor) -> torch.dtype:
        return p.dtype if key == "prev_param" else super()._state_value_dtype(key, p)


def _is_zero(lr: Any) -> bool:
    # a tensor lr is read here only on this initialization path, never on a training step
    return bool(lr == 0)
