"""Lion (arXiv 2302.06675) and Lion-K (arXiv 2310.05898): one class, K a convex map."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from normopt import kernels
from normopt._checks import (
    check_betas,
    check_int,
    check_number,
    check_polar_method,
)
from normopt.norms import L1, HuberNuclear, Norm
from normopt.optim import moves
from normopt.optim.base import Block, NormOptimizer, fitted_element, resolve_norm
from normopt.optim.moves import Mask

__all__ = ["LionK", "Lion", "gradient_of_K"]


def _resolve_K(spec: Any) -> Norm | HuberNuclear:
    if isinstance(spec, Norm | HuberNuclear):
        return spec
    if isinstance(spec, dict) and spec.get("name") == HuberNuclear.name:
        return HuberNuclear(spec["delta"])
    if isinstance(spec, str) and spec.replace("-", "_") == HuberNuclear.name:
        raise ValueError("K: 'huber_nuclear' needs delta; pass HuberNuclear(delta)")
    return resolve_norm("K", spec)


def gradient_of_K(K: Norm | HuberNuclear, v: Tensor) -> Tensor:
    """``grad K(v)``: for a norm ``K`` it is the dualize map of the dual norm ``K*``
    (the maximizer of ``<v, t>`` over the ball of ``K*``); ``sign`` for ``K = l1``,
    ``U V^T`` for the nuclear norm."""
    if isinstance(K, HuberNuclear):
        return K.grad(v)
    return K.dual().dualize(v)


class LionK(NormOptimizer):
    r"""Lion-K: Lion with the sign replaced by the gradient of a convex map ``K`` (SPEC A8).

    Per tensor (arXiv 2310.05898, Algorithm 1 with the sign conventions of SPEC A8)::

        x_{t+1} = x_t + lr (grad K(beta1 m_t - (1 - beta1) g_t) - wd x_t)
        m_{t+1} = beta2 m_t - (1 - beta2) g_t

    It solves ``min f(x) + (1/wd) K*(wd x)``; for a norm ``K`` the iterates are
    driven into the dual-norm ball ``||x||_{K*} <= 1/wd``. ``K = L1()`` is Lion
    (``||x||_inf <= 1/wd``); ``K = Nuclear()`` gives ``grad K = U V^T``, i.e. Muon
    without Nesterov's extra term, and ``||X||_2 <= 1/wd`` (Chen, Li and Liu,
    arXiv 2506.15054); ``K = KyFan(k)`` steps along ``U_k V_k^T`` (the top ``k``
    singular pairs); ``HuberNuclear(delta)`` is a smoothed nuclear norm. In
    general ``grad K`` is the dualize map of the norm dual to ``K``.

    For norms whose dual's dualize needs a polar factor (``K = Nuclear()``), the
    polar method is the dual's default (exact SVD); pass ``polar="newton_schulz"``
    to use a fast iteration for ``K = Nuclear()``.

    Example:
        >>> import torch, normopt
        >>> w = torch.nn.Parameter(torch.randn(5, 3))
        >>> opt = normopt.LionK([w], K=normopt.norms.Nuclear(), lr=1e-3, weight_decay=0.1)
        >>> w.square().sum().backward(); opt.step()
    """

    def __init__(
        self,
        params: Any,
        K: Norm | HuberNuclear | str | dict[str, Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        polar: str | None = None,
        ns_steps: int | None = None,
        nonfinite: str = "skip",
        foreach: bool = True,
        process_group: Any = None,
    ) -> None:
        K_obj = _resolve_K(K)
        defaults = dict(
            K=K_obj.spec(),
            lr=lr,
            betas=tuple(betas) if isinstance(betas, tuple | list) else betas,
            weight_decay=weight_decay,
            polar=polar,
            ns_steps=ns_steps,
            nonfinite=nonfinite,
            foreach=foreach,
        )
        super().__init__(params, defaults, process_group)

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        check_betas("betas", group["betas"])
        check_number("weight_decay", group["weight_decay"])
        K = self._K(group)
        if group["polar"] is not None and not (isinstance(K, Norm) and K.name == "nuclear"):
            raise ValueError("polar: only K = Nuclear() uses a polar factor")
        if group["polar"] is not None:
            check_polar_method("polar", group["polar"])
        if group["ns_steps"] is not None:
            if group["polar"] in (None, "svd"):
                raise ValueError("ns_steps: only an iterative polar method takes a step count")
            check_int("ns_steps", group["ns_steps"], 1)
        for p in group["params"]:
            try:
                self._element_shape(p, group)
            except ValueError as e:  # name the argument: K, not the norm's own "norm"
                if not str(e).startswith("norm: "):
                    raise
                raise ValueError("K: " + str(e)[len("norm: ") :]) from None

    def _K(self, group: dict[str, Any]) -> Norm | HuberNuclear:
        key = "K " + repr(group["K"])  # the base class's cache of built specs, keyed apart
        K = self._norm_cache.get(key)
        if K is None:
            K = self._norm_cache[key] = _resolve_K(group["K"])
        return K

    def _element_shape(self, p: Tensor, group: dict[str, Any]) -> tuple[int, ...]:
        return fitted_element(p, group, self._K(group).fit)

    def _entrywise(self, group: dict[str, Any]) -> bool:
        K = self._K(group)
        return group["polar"] is None and isinstance(K, Norm) and K.dual().entrywise

    def _accumulate(
        self, group: dict[str, Any], block: Block, G: Tensor, mask: Mask | None
    ) -> Tensor:
        b1, b2 = group["betas"]
        m = self._state(block, "momentum_buffer")  # m_t (accumulates -g)
        return moves.lion_(m, G, b1, b2, mask)  # beta1 m_t - (1 - beta1) g_t; m moves to m_{t+1}

    def _direction_norm(self, group: dict[str, Any]) -> Norm | None:
        # grad K is the dualize map of K's dual (a polar method: the spectral one)
        K = self._K(group)
        return K.dual() if isinstance(K, Norm) else None

    def _direct(self, stack: Tensor, group: dict[str, Any]) -> Tensor:
        K = self._K(group)
        if group["polar"] is not None:
            return kernels.polar(stack, group["polar"], group["ns_steps"])
        return gradient_of_K(K, stack)

    def _apply(self, group: dict[str, Any], block: Block, D: Tensor, mask: Mask | None) -> None:
        # x <- (1 - lr wd) x + lr grad K(...): the decoupled step with scale -1
        self._decoupled_step(block, D, group["lr"], group["weight_decay"], -1.0, mask)


class Lion(LionK):
    r"""Lion (Chen et al., arXiv 2302.06675): sign descent on an interpolated momentum.

    Per tensor::

        c = beta1 m + (1 - beta1) g
        x <- x - lr (sign(c) + wd x)
        m <- beta2 m + (1 - beta2) g

    Exactly Lion-K with ``K = L1()`` (the momentum is stored with the opposite
    sign, as Lion-K writes it). Defaults lr 1e-4, betas (0.9, 0.99); Lion wants a
    learning rate 3-10x smaller than AdamW's and a weight decay 3-10x larger.

    Example:
        >>> import torch, normopt
        >>> w = torch.nn.Parameter(torch.randn(5))
        >>> opt = normopt.Lion([w], lr=1e-4)
        >>> w.square().sum().backward(); opt.step()
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        nonfinite: str = "skip",
        foreach: bool = True,
    ) -> None:
        super().__init__(
            params,
            K=L1(),
            lr=lr,
            betas=betas,
            weight_decay=weight_decay,
            nonfinite=nonfinite,
            foreach=foreach,
        )
