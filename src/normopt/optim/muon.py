"""Muon (K. Jordan), its shape-scaling rules and its newer variants, with AdamW beside it.

One ``Muon`` object optimizes a whole model: its param groups carry
``use_muon`` (orthogonalized momentum) or not (AdamW, or normalized steepest
descent under a group's ``norm``). Given an ``nn.Module`` it routes every
tensor itself (:func:`normopt.param_groups`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from normopt.linalg import POLAR_METHODS, polar
from normopt.norms import Frobenius, KyFanDual
from normopt.optim.base import NormOptimizer, check_betas, check_number, split_view

__all__ = ["Muon", "ADJUST_LR", "adjust_lr_factor"]


def _original(d_out: int, d_in: int) -> float:
    # K. Jordan's Muon: sqrt(max(1, d_out / d_in)).
    return math.sqrt(max(1.0, d_out / d_in))


def _match_rms_adamw(d_out: int, d_in: int) -> float:
    # Moonlight (arXiv 2502.16982): 0.2 sqrt(max(d_out, d_in)) gives the update the RMS of
    # a typical AdamW update, so AdamW's learning rate and weight decay carry over.
    return 0.2 * math.sqrt(max(d_out, d_in))


def _rms_to_rms(d_out: int, d_in: int) -> float:
    # The RMS -> RMS dual (arXiv 2410.21265): every singular value of the step is sqrt(d_out/d_in).
    return math.sqrt(d_out / d_in)


ADJUST_LR: dict[str, Callable[[int, int], float]] = {
    "original": _original,
    "match_rms_adamw": _match_rms_adamw,
    "rms_to_rms": _rms_to_rms,
    "none": lambda d_out, d_in: 1.0,
}
_ADJUST_ALIASES = {"jordan": "original", "moonlight": "match_rms_adamw", None: "none"}

VARIANTS = (None, "fanion", "f_muon", "s_muon")


def adjust_lr_factor(rule: str | None, d_out: int, d_in: int) -> float:
    """The shape scale of Muon's step for a ``(d_out, d_in)`` matrix under a named rule."""
    name = _ADJUST_ALIASES.get(rule, rule)
    fn = ADJUST_LR.get(name) if isinstance(name, str) else None
    if fn is None:
        raise ValueError(
            f"adjust_lr: unknown rule {rule!r}; expected one of "
            f"{sorted(ADJUST_LR) + sorted(k for k in _ADJUST_ALIASES if k)}"
        )
    return fn(d_out, d_in)


class Muon(NormOptimizer):
    r"""Muon: momentum orthogonalized by Newton-Schulz, for hidden matrices (SPEC A6).

    For a matrix parameter ``W`` with gradient ``G_t`` (``B`` is the state)::

        B_t = beta B_{t-1} + (1 - beta) G_t
        M   = (1 - beta) G_t + beta B_t          (Nesterov; M = B_t without)
        O   = polar(M) * scale(d_out, d_in)      (U V^T, approximately)
        W  <- (1 - lr wd) W - lr O

    4-D conv kernels are reshaped to ``(d_out, -1)``; a group may instead set
    ``batch_dims`` (leading dims that are a batch: 3-D expert stacks) or
    ``split`` (a fused QKV weight split into ``split`` matrices along dim 0).
    Matrices of one group with equal shapes are orthogonalized together as one
    batched stack.

    Other tensors (``use_muon=False`` groups: embeddings, output head, gains,
    biases) get AdamW with the ``adamw_*`` hyperparameters, or, when the group
    has a ``norm``, normalized steepest descent with Muon's momentum under that
    norm (``W <- (1 - lr wd) W - lr dualize(M)``). A ``use_muon=True`` group
    with a ``norm`` uses that norm's dualize in place of the polar factor.

    Args:
        params_or_model: an ``nn.Module`` (routed by :func:`normopt.param_groups`),
            or params / param groups (keys ``use_muon``, ``norm``, ``batch_dims``,
            ``split`` and any hyperparameter below). Plain tensors with
            ``ndim >= 2`` get Muon, the rest AdamW.
        lr: Muon's learning rate (0.02).
        momentum: ``beta`` (0.95). nesterov: Nesterov momentum (True).
        weight_decay: decoupled, ``W <- (1 - lr wd) W`` (0).
        polar: polar method name (``"newton_schulz"``; see :func:`normopt.linalg.polar`).
        ns_steps: iterations of the polar method (5).
        polar_dtype: dtype name of the iteration (``"bfloat16"``, ``"float32"``, ...);
            default ``None``: bf16 on CUDA, float32 on the CPU (as :func:`normopt.linalg.polar`).
        adjust_lr: shape scale rule: ``"original"`` (Jordan,
            ``sqrt(max(1, d_out/d_in))``), ``"match_rms_adamw"`` (Moonlight,
            ``0.2 sqrt(max(d_out, d_in))``), ``"rms_to_rms"`` (``sqrt(d_out/d_in)``)
            or ``"none"``.
        variant: ``None`` (Muon), ``"fanion"`` (step along ``sum_{i<=k} u_i v_i^T``,
            exact SVD; Fanion-1 is rank one), ``"f_muon"`` (``a U V^T + (1-a) M/||M||_F``)
            or ``"s_muon"`` (``a U V^T + (1-a) sign(M)``); arXiv 2512.09678.
        variant_k: ``k`` of Fanion-k (1). variant_a: ``a`` of F-/S-Muon (0.5; the
            paper's default was not verified here).
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay: AdamW for the rest
            (3e-4, (0.9, 0.95), 1e-10, 0).
        nonfinite: ``"raise"`` or ``"skip"`` (see :class:`NormOptimizer`).

    Example:
        >>> import torch, normopt
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> opt = normopt.Muon(model, lr=0.02)
        >>> model(torch.randn(4, 8)).square().mean().backward()
        >>> opt.step()

    References: K. Jordan, "Muon" (2024); Liu et al., "Muon is Scalable for LLM
    Training" (arXiv 2502.16982); Kravatskiy et al. (arXiv 2512.09678).
    """

    def __init__(
        self,
        params_or_model: Any,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        polar: str = "newton_schulz",
        ns_steps: int | None = 5,
        polar_dtype: str | None = None,
        adjust_lr: str | None = "original",
        variant: str | None = None,
        variant_k: int = 1,
        variant_a: float = 0.5,
        adamw_lr: float = 3e-4,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-10,
        adamw_weight_decay: float = 0.0,
        nonfinite: str = "raise",
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            polar=polar,
            ns_steps=ns_steps,
            polar_dtype=polar_dtype,
            adjust_lr=adjust_lr,
            variant=variant,
            variant_k=variant_k,
            variant_a=variant_a,
            adamw_lr=adamw_lr,
            adamw_betas=tuple(adamw_betas),
            adamw_eps=adamw_eps,
            adamw_weight_decay=adamw_weight_decay,
            nonfinite=nonfinite,
            batch_dims=0,
            split=1,
        )
        super().__init__(_muon_groups(params_or_model), defaults)

    # -- validation ------------------------------------------------------------------------
    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        check_number("momentum", group["momentum"], 0.0, 1.0, high_open=True)
        check_number("weight_decay", group["weight_decay"])
        if group["polar"] not in POLAR_METHODS:
            raise ValueError(
                f"polar: unknown polar method {group['polar']!r}; expected one of {list(POLAR_METHODS)}"
            )
        steps = group["ns_steps"]
        if group["polar"] == "svd":
            group["ns_steps"] = None
        elif isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"ns_steps: expected an integer >= 1, got {steps!r}")
        adjust_lr_factor(group["adjust_lr"], 1, 1)
        pd = group["polar_dtype"]
        if pd is not None and not (
            isinstance(pd, str) and isinstance(getattr(torch, pd, None), torch.dtype)
        ):
            raise ValueError(
                f"polar_dtype: expected None or a dtype name like 'bfloat16', got {pd!r}"
            )
        if group["variant"] not in VARIANTS:
            raise ValueError(f"variant: expected one of {list(VARIANTS)}, got {group['variant']!r}")
        if (
            isinstance(group["variant_k"], bool)
            or not isinstance(group["variant_k"], int)
            or group["variant_k"] < 1
        ):
            raise ValueError(f"variant_k: expected an integer >= 1, got {group['variant_k']!r}")
        check_number("variant_a", group["variant_a"], 0.0, 1.0)
        check_number("adamw_lr", group["adamw_lr"])
        check_betas("adamw_betas", group["adamw_betas"])
        check_number("adamw_eps", group["adamw_eps"])
        check_number("adamw_weight_decay", group["adamw_weight_decay"])
        group.setdefault("use_muon", True)
        kind = self._kind(group)
        if kind in ("muon", "norm"):
            for p in group["params"]:
                self._element_shape(p, group)  # raises on a shape the group cannot carry

    @staticmethod
    def _kind(group: dict[str, Any]) -> str:
        if group["use_muon"]:
            return "muon"
        return "norm" if group.get("norm") is not None else "adamw"

    # -- the three moves -------------------------------------------------------------------
    def _element_shape(self, p: Tensor, group: dict[str, Any]) -> tuple[int, ...]:
        kind = self._kind(group)
        if kind == "adamw":
            return tuple(p.shape)
        lead, rest = split_view(tuple(p.shape), group["batch_dims"], group["split"])
        if group.get("norm") is not None:
            return lead + self._norm(group).fit(rest)
        if len(rest) < 2:
            raise ValueError(
                f"params: Muon needs matrices (ndim >= 2 after the batch dims), got shape "
                f"{tuple(p.shape)}; route it to AdamW with use_muon=False"
            )
        return (*lead, rest[0], math.prod(rest[1:]))

    def _accumulate(
        self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> Tensor:
        if self._kind(group) == "adamw":
            return self._adamw_direction(p, grad, state, group)
        beta = group["momentum"]
        buf = self._buffer(state, "momentum_buffer", p)
        g = grad.to(buf.dtype)
        buf.lerp_(g, 1.0 - beta)  # B = beta B + (1 - beta) G
        return g.lerp(buf, beta) if group["nesterov"] else buf  # (1 - beta) G + beta B

    def _adamw_direction(
        self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> Tensor:
        b1, b2 = group["adamw_betas"]
        m = self._buffer(state, "exp_avg", p)
        v = self._buffer(state, "exp_avg_sq", p)
        step = state["step"] = state.get("step", 0) + 1
        g = grad.to(m.dtype)
        m.lerp_(g, 1.0 - b1)
        v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
        denom = (v / (1.0 - b2**step)).sqrt_().add_(group["adamw_eps"])
        return (m / (1.0 - b1**step)) / denom

    def _orthogonalize(self, stack: Tensor, group: dict[str, Any]) -> Tensor:
        name = group["polar_dtype"]
        dtype = None if name is None else getattr(torch, name)
        return polar(stack, group["polar"], group["ns_steps"], compute_dtype=dtype)

    def _direct(self, stack: Tensor, group: dict[str, Any]) -> Tensor:
        kind = self._kind(group)
        if kind == "adamw":
            return stack
        if group.get("norm") is not None:
            return self._norm(group).dualize(stack)
        variant = group["variant"]
        if variant == "fanion":
            return KyFanDual(group["variant_k"]).dualize(stack)
        O = self._orthogonalize(stack, group)
        if variant is None:
            return O
        a = group["variant_a"]
        other = Frobenius().dualize(stack) if variant == "f_muon" else torch.sign(stack)
        return a * O + (1.0 - a) * other

    def _apply(
        self, p: Tensor, direction: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        kind = self._kind(group)
        if kind == "adamw":
            lr, wd = group["adamw_lr"], group["adamw_weight_decay"]
            scale = 1.0
        else:
            lr, wd = group["lr"], group["weight_decay"]
            scale = 1.0
            if kind == "muon" and group.get("norm") is None:
                shape = self._element_shape(p, group)
                scale = adjust_lr_factor(group["adjust_lr"], shape[-2], shape[-1])
        if wd != 0:
            p.mul_(1.0 - lr * wd)
        p.add_(direction.to(p.dtype), alpha=-lr * scale)


def _muon_groups(params_or_model: Any) -> Any:
    """A model is routed; plain tensors are split by ndim; groups pass through."""
    if isinstance(params_or_model, nn.Module):
        from normopt.optim.routing import param_groups

        return param_groups(params_or_model, preset="muon")
    if isinstance(params_or_model, Tensor):
        return params_or_model  # the base class raises the TypeError
    items = list(params_or_model)
    if not items or isinstance(items[0], dict):
        return items
    if isinstance(items[0], tuple):  # (name, tensor) pairs
        mats = [(n, t) for n, t in items if t.ndim >= 2]
        rest = [(n, t) for n, t in items if t.ndim < 2]
        groups: list[dict[str, Any]] = []
        if mats:
            groups.append({"params": mats, "use_muon": True})
        if rest:
            groups.append({"params": rest, "use_muon": False})
        return groups
    mats_t = [t for t in items if isinstance(t, Tensor) and t.ndim >= 2]
    rest_t = [t for t in items if not (isinstance(t, Tensor) and t.ndim >= 2)]
    out: list[dict[str, Any]] = []
    if mats_t:
        out.append({"params": mats_t, "use_muon": True})
    if rest_t:
        out.append({"params": rest_t, "use_muon": False})
    return out
