"""Steepest descent under any norm (SPEC A1, A2, A10) and Kovalev's trust region (SPEC A3)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from normopt._checks import check_bool, check_number
from normopt.norms import Norm
from normopt.optim import moves
from normopt.optim.base import Block, NormOptimizer, Plan, fitted_element, lr_on
from normopt.optim.moves import Mask

__all__ = ["SteepestDescent", "TrustRegion"]


class _UnderNorm(NormOptimizer):
    """What both optimizers here share: each parameter is read as the element its group's
    ``norm`` fits (:func:`~normopt.optim.base.fitted_element`)."""

    def _element_shape(self, p: Tensor, group: dict[str, Any]) -> tuple[int, ...]:
        return fitted_element(p, group, self._norm(group).fit)

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        self._check_hyperparameters(group)
        for p in group["params"]:  # last: the norm must fit every tensor of the group
            self._element_shape(p, group)  # raises when the norm does not fit the tensor

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        """The optimizer's own checks of a group, after the base's and before the fit."""


class SteepestDescent(_UnderNorm):
    r"""Steepest descent under a chosen norm, per parameter or across layers.

    With momentum ``m = beta m + (1 - beta) g`` (``m = g`` when ``momentum=0``;
    Nesterov uses ``(1 - beta) g + beta m``), the step on each tensor is

    - ``normalized=False`` (SPEC A1, sharpness ``lambda = 1/lr``):
      ``W <- (1 - lr wd) W - lr ||m||_dual dualize(m)``. For l2 this is SGD, for
      l-inf ``lr ||m||_1 sign(m)``, for the spectral norm ``lr tr(S) U V^T``:
      ``SteepestDescent(params, norm=Spectral(), lr=lr, normalized=False)`` is
      **PolarGrad** (Lau, Long, Su, arXiv 2505.21799), ``-(||G||_nuc / lambda) U V^T``
      with ``lr = 1 / lambda`` (and its momentum form with ``momentum=beta``).
    - ``normalized=True`` (the LMO form): ``W <- (1 - lr wd) W - lr dualize(m)``.
    - ``radius=R`` (Frank-Wolfe / Scion's constrained form, SPEC A10):
      ``W <- (1 - lr) W - lr R dualize(m)``: the iterate stays in the ball of radius
      ``R``. Scion's unconstrained form is ``normalized=True`` with ``lr = gamma R``.
    - ``modular=True`` (SPEC A2, arXiv 2409.20325 Prop. 7): every parameter is a block
      with its group's ``norm`` and ``scale`` ``s_l``; the global step
      ``eta = lr sum_k ||m_k||_dual / s_k`` is shared and each block moves
      ``-(eta / s_l) dualize(m_l)``, so ``s_l ||D_l|| = eta`` for every block.

    The norm is an object of :mod:`normopt.norms` (per group, key ``norm``); it
    sees each parameter through ``norm.fit(shape)`` (vector norms flatten, matrix
    norms reshape to ``(d_out, -1)``); ``batch_dims`` marks leading batch dims.

    Example:
        >>> import torch, normopt
        >>> w = torch.nn.Parameter(torch.randn(8, 4))
        >>> opt = normopt.SteepestDescent([w], norm=normopt.norms.Spectral(), lr=0.1, normalized=True)
        >>> w.square().sum().backward(); opt.step()
    """

    def __init__(
        self,
        params: Any,
        norm: Norm | str | dict[str, Any],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        normalized: bool = False,
        modular: bool = False,
        scale: float = 1.0,
        radius: float | None = None,
        nonfinite: str = "skip",
        foreach: bool = True,
        process_group: Any = None,
    ) -> None:
        self._global_combine = bool(modular)
        defaults = dict(
            norm=norm,
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            normalized=normalized,
            modular=bool(modular),
            scale=scale,
            radius=radius,
            nonfinite=nonfinite,
            foreach=foreach,
        )
        super().__init__(params, defaults, process_group)

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        check_number("momentum", group["momentum"], 0.0, 1.0, high_open=True)
        check_number("weight_decay", group["weight_decay"])
        check_number("scale", group["scale"], 0.0, math.inf, low_open=True)
        if group["radius"] is not None:
            check_number("radius", group["radius"], 0.0, math.inf, low_open=True)
            check_number("lr", group["lr"], 0.0, 1.0)  # (1 - lr) W stays a convex combination
            if group["modular"]:
                raise ValueError("radius: the constrained form and modular=True do not combine")
        check_bool("nesterov", group["nesterov"])
        check_bool("normalized", group["normalized"])
        if group["nesterov"] and group["momentum"] == 0:
            raise ValueError("nesterov: needs momentum > 0")
        if bool(group["modular"]) != self._global_combine:
            raise ValueError("modular: must be the same for every param group")

    def _sharding_supported(self, group: dict[str, Any], layouts: list[Any]) -> bool:
        return not group["modular"]  # eta sums dual norms over every block

    def _entrywise(self, group: dict[str, Any]) -> bool:
        # sign is entrywise; the unnormalized step multiplies it by a per-tensor dual norm
        normalized = group["normalized"] or group["radius"] is not None
        return normalized and not group["modular"] and self._norm(group).entrywise

    def _accumulate(
        self, group: dict[str, Any], block: Block, G: Tensor, mask: Mask | None
    ) -> Tensor:
        beta = group["momentum"]
        if beta == 0:
            return G  # m = g (the block's copy of the gradients; zero on a skipped step)
        buf = self._state(block, "momentum_buffer")
        return moves.ema_(buf, G, beta, group["nesterov"], mask)

    def _direct(self, stack: Tensor, group: dict[str, Any]) -> Tensor:
        norm = self._norm(group)
        d = norm.dualize(stack)  # (B, *element)
        if group["normalized"] or group["radius"] is not None or group["modular"]:
            return d  # the modular step scales it in _combine
        dual = norm.dual_norm(stack)  # (B, *batch): one ||m||_dual per element
        return d * dual.reshape(*dual.shape, *([1] * (d.ndim - dual.ndim)))

    def _combine(self, plan: list[Plan]) -> None:
        # SPEC A2: eta = sum_k ||m_k||_dual / s_k over every block of every group (lr is
        # applied in _apply); block l moves -(lr eta / s_l) dualize(m_l). eta stays a device
        # tensor: nothing is read back.
        parts = []
        for group, _, M, _ in plan:
            if not group["normalized"]:
                parts.append(self._norm(group).dual_norm(M).sum() / group["scale"])
        eta = None
        if parts:
            first = parts[0].device
            eta = torch.stack([t.to(first) for t in parts]).sum()
        for i, (group, block, M, D) in enumerate(plan):
            if group["normalized"] or eta is None:
                factor: Any = 1.0 / group["scale"]
            else:
                factor = eta.to(D.device, D.dtype) / group["scale"]
            plan[i] = (group, block, M, D * factor)

    def _apply(self, group: dict[str, Any], block: Block, D: Tensor, mask: Mask | None) -> None:
        lr, radius = group["lr"], group["radius"]
        if radius is not None:  # Frank-Wolfe: W <- (1 - lr) W - lr R D
            self._frank_wolfe(block, D, lr, radius, mask)
            return
        self._decoupled_step(
            block, D, lr, group["weight_decay"], 1.0, mask, protected=(block.grad,)
        )

    def _frank_wolfe(
        self, block: Block, D: Tensor, lr: Any, radius: float, mask: Mask | None
    ) -> None:
        lr = lr_on(lr, block.device, block.dtype)
        decay = 1.0 - lr
        if mask is not None:
            decay = mask.decay(decay, block.dtype)
        torch._foreach_mul_(block.targets, decay)
        coef: Any = -lr * radius
        if mask is None and not isinstance(lr, Tensor):
            self._add_rows(block, D, alpha=coef)
            return
        if mask is not None:
            coef = mask.scaled(coef, block.dtype)
        self._add_rows(block, D * coef)


class TrustRegion(_UnderNorm):
    r"""Kovalev's non-Euclidean trust region with momentum (arXiv 2503.12645, Algorithm 1).

    For every tensor, with ``m_0 = g_0`` (the first gradient)::

        m_{k+1} = (1 - alpha) m_k + alpha g_k          (momentum first: his Lemma 3)
        x_{k+1} = argmin <m_{k+1}, x>  s.t.  ||x - c_k|| <= lr
                = c_k - lr dualize(m_{k+1}),   c_k = (1 - weight_decay) x_k

    ``weight_decay = 0`` is the paper's Algorithm 1; a positive value is the
    variant with the ball centred at ``(1 - lambda) x_k`` (later versions of the
    paper; not verified against its text here). Note ``weight_decay`` is *not*
    multiplied by ``lr`` here, unlike AdamW-style decoupled decay. The Frobenius
    norm gives normalized SGD with momentum, l-inf signSGD with momentum, the
    spectral norm Muon. ``lr`` is the trust-region radius ``eta``; pair it with
    :func:`normopt.theory.kovalev_schedule` to set ``eta``, ``alpha`` and the
    step count from the constants of the norm.

    Example:
        >>> import torch, normopt
        >>> w = torch.nn.Parameter(torch.randn(6, 3))
        >>> opt = normopt.TrustRegion([w], norm=normopt.norms.Spectral(), lr=0.05, alpha=0.1)
        >>> w.square().sum().backward(); opt.step()
    """

    def __init__(
        self,
        params: Any,
        norm: Norm | str | dict[str, Any],
        lr: float,
        alpha: float,
        weight_decay: float = 0.0,
        nonfinite: str = "skip",
        foreach: bool = True,
        process_group: Any = None,
    ) -> None:
        defaults = dict(
            norm=norm,
            lr=lr,
            alpha=alpha,
            weight_decay=weight_decay,
            nonfinite=nonfinite,
            foreach=foreach,
        )
        super().__init__(params, defaults, process_group)

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        check_number("alpha", group["alpha"], 0.0, 1.0, low_open=True)
        check_number("weight_decay", group["weight_decay"], 0.0, 1.0)

    def _entrywise(self, group: dict[str, Any]) -> bool:
        return self._norm(group).entrywise

    def _accumulate(
        self, group: dict[str, Any], block: Block, G: Tensor, mask: Mask | None
    ) -> Tensor:
        # m_0 = g(x_0): a parameter's first step (its step count is 0) takes alpha = 1
        step = self._counter(block)  # (B,), the rows are state[p]["step"]
        alpha = torch.full(step.shape, group["alpha"], dtype=block.dtype, device=block.device)
        alpha = block.per_param(alpha.masked_fill_(step == 0, 1.0))  # exact in the state dtype
        buf = self._state(block, "momentum_buffer")
        moves.kovalev_(buf, G, alpha, mask)
        step.add_(1.0 if mask is None else mask.ok(step.dtype))
        return buf

    def _direct(self, stack: Tensor, group: dict[str, Any]) -> Tensor:
        return self._norm(group).dualize(stack)

    def _apply(self, group: dict[str, Any], block: Block, D: Tensor, mask: Mask | None) -> None:
        # x <- (1 - wd) x - lr D (wd is not multiplied by lr here): the decoupled step with
        # lr * wd' = wd, i.e. wd' = wd / lr
        wd = group["weight_decay"]
        if wd != 0:
            decay = 1.0 - wd
            torch._foreach_mul_(
                block.targets, decay if mask is None else mask.decay(decay, block.dtype)
            )
        self._decoupled_step(block, D, group["lr"], 0.0, 1.0, mask)
