"""Muon-MVR2: Muon with second-order variance reduction (SPEC A12, arXiv 2509.15816)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from normopt.optim.base import NonFiniteGradientError
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

    def _accumulate(
        self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> Tensor:
        if self._kind(group) == "adamw":
            return super()._accumulate(p, grad, state, group)
        beta = group["momentum"]
        g = grad.to(self._buffer(state, "momentum_buffer", p).dtype)
        prev = self._prev_grads.get(p)
        if prev is None:  # first step: M_0 = G(X_0; xi_0)
            state["momentum_buffer"].copy_(g)
        else:
            buf = state["momentum_buffer"]
            buf.lerp_(g, 1.0 - beta).add_(g - prev.to(buf.dtype), alpha=beta)
        buf = state["momentum_buffer"]
        return g.lerp(buf, beta) if group["nesterov"] else buf

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        if closure is None:
            raise ValueError(
                "closure: MuonMVR2 needs a closure that recomputes the loss and gradients on "
                "the current batch; it is called twice per step"
            )
        with torch.enable_grad():
            loss = closure()
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        have_prev = [p for p in params if "prev_param" in self.state[p]]
        self._prev_grads = {}
        if have_prev:
            current = [(p, p.detach().clone(), p.grad) for p in params]
            for p in params:
                p.grad = None
                if "prev_param" in self.state[p]:
                    p.copy_(self.state[p]["prev_param"])
            with torch.enable_grad():
                closure()  # G(X_{t-1}; xi_t)
            for p, value, grad in current:
                if p.grad is not None:
                    self._prev_grads[p] = p.grad
                p.copy_(value)
                p.grad = grad
            bad = [p for p, g in self._prev_grads.items() if not bool(torch.isfinite(g).all())]
            if bad:
                self._prev_grads = {}
                group = next(g for g in self.param_groups if any(q is bad[0] for q in g["params"]))
                if group["nonfinite"] == "raise":
                    raise NonFiniteGradientError(
                        f"non-finite gradient at the previous iterate in {self._param_name(group, bad[0])}"
                    )
                return loss
        if not self._gradients_finite():  # policy "skip": nothing moves, X_{t-1} stays
            self._prev_grads = {}
            return loss
        snapshot = {p: p.detach().clone() for p in params}  # X_t, the next step's X_{t-1}
        super().step()
        for p in params:
            self.state[p]["prev_param"] = snapshot[p]
        self._prev_grads = {}
        return loss
