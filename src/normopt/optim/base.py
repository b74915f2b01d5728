"""The shared base of every normopt optimizer: the one loop over parameters.

Every optimizer is three moves per parameter tensor (DESIGN.md):

1. **accumulate** (``_accumulate``): a momentum rule turns the gradient into a
   buffer, per parameter; state is created lazily here.
2. **direct** (``_direct``): a direction map turns buffers into update
   directions. It runs on a **stack**: the buffers of one param group that
   share their element shape, dtype and device are stacked into one batched
   tensor ``(B, *element)``, mapped once, and scattered back.
3. **step** (``_apply``): learning rate, shape scaling, decoupled weight decay
   or a constraint, per parameter.

Subclasses choose the three moves; the loop, the stacking, the non-finite
gradient policy and the state-dict checks live here only.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, cast

import torch
from torch import Tensor
from torch.optim import Optimizer

from normopt.norms import Norm, from_spec

__all__ = [
    "NormOptimizer",
    "NonFiniteGradientError",
    "NONFINITE_POLICIES",
    "check_number",
    "check_betas",
    "split_view",
]

NONFINITE_POLICIES = ("raise", "skip")

# One param group's share of a step: (group, params, buffers, directions).
Plan = tuple[dict[str, Any], list[Tensor], list[Tensor], list[Tensor]]


class NonFiniteGradientError(FloatingPointError):
    """A gradient held NaN or Inf and the optimizer's policy is ``nonfinite="raise"``."""


def check_number(
    name: str,
    value: Any,
    low: float = 0.0,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Validate a real hyperparameter, raising ``ValueError`` that names it."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name}: expected a number, got a tensor of shape {tuple(value.shape)}"
            )
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    lo_ok = value > low if low_open else value >= low
    hi_ok = value < high if high_open else value <= high
    if not (lo_ok and hi_ok):
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        raise ValueError(f"{name}: expected a value in {lb}{low}, {high}{hb}, got {value!r}")
    return float(value)


def check_betas(name: str, betas: Any) -> tuple[float, float]:
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        raise ValueError(f"{name}: expected a pair (beta1, beta2), got {betas!r}")
    b1 = check_number(f"{name}[0]", betas[0], 0.0, 1.0, high_open=True)
    b2 = check_number(f"{name}[1]", betas[1], 0.0, 1.0, high_open=True)
    return (b1, b2)


def split_view(
    shape: tuple[int, ...], batch_dims: int, split: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(lead, rest)``: the leading batch dims of a parameter (``batch_dims`` of them, plus
    ``split`` when a fused weight holds ``split`` matrices stacked along its first dim)
    and the shape of one matrix-like element."""
    if isinstance(batch_dims, bool) or not isinstance(batch_dims, int) or batch_dims < 0:
        raise ValueError(f"batch_dims: expected an integer >= 0, got {batch_dims!r}")
    if isinstance(split, bool) or not isinstance(split, int) or split < 1:
        raise ValueError(f"split: expected an integer >= 1, got {split!r}")
    lead, rest = tuple(shape[:batch_dims]), tuple(shape[batch_dims:])
    if split > 1:
        if not rest or rest[0] % split:
            raise ValueError(
                f"split: {split} does not divide the first dim of shape {tuple(shape)}"
            )
        lead, rest = (*lead, split), (rest[0] // split, *rest[1:])
    return lead, rest


def _state_dtype(p: Tensor) -> torch.dtype:
    # Optimizer state stays in at least float32: bf16/fp16 momentum loses the small
    # increments (1 - beta) g that momentum is made of.
    return torch.float32 if p.dtype in (torch.bfloat16, torch.float16) else p.dtype


class NormOptimizer(Optimizer):
    """Base class: the one loop over parameters, stacks, and the shared policies.

    Subclasses set hyperparameters in ``defaults``, validate a group in
    ``_check_group``, and implement the three moves:

    - ``_accumulate(p, grad, state, group) -> Tensor``: the buffer to direct;
    - ``_element_shape(p, group) -> tuple``: the shape of one element of a stack
      (default ``p.shape``);
    - ``_direct(stack, group) -> Tensor``: maps a ``(B, *element)`` stack to
      directions of the same shape (default: identity);
    - ``_apply(p, direction, state, group)``: writes the update into ``p``.

    Common keyword arguments (stored in every group):

    - ``nonfinite``: ``"raise"`` (default) raises :class:`NonFiniteGradientError`
      naming the parameter when any gradient holds NaN or Inf; ``"skip"`` skips
      the whole step, leaving weights and state untouched. Either way no NaN is
      ever written into the weights by a non-finite gradient.
    """

    # Set by optimizers whose step couples all groups (modular steepest descent).
    _global_combine: bool = False

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        nonfinite = defaults.setdefault("nonfinite", "raise")
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(
                f"nonfinite: expected one of {list(NONFINITE_POLICIES)}, got {nonfinite!r}"
            )
        if isinstance(params, Tensor):
            raise TypeError(
                "params: expected an iterable of tensors, param groups or (name, tensor) pairs, "
                "got a single tensor"
            )
        self._norm_cache: dict[str, Norm] = {}
        super().__init__(params, defaults)

    # -- groups and norms ---------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "norm" in param_group and isinstance(param_group["norm"], Norm | str):
            param_group = dict(param_group)
            norm = param_group["norm"]
            # Stored by its registry name and arguments, so the state dict stays plain data.
            param_group["norm"] = from_spec(norm).spec()
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for p in group["params"]:
            if p.is_complex():
                raise TypeError(f"params: complex parameters are not supported (dtype {p.dtype})")
        self._check_group(group)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_number("lr", group["lr"])
        if group.get("nonfinite", "raise") not in NONFINITE_POLICIES:
            raise ValueError(
                f"nonfinite: expected one of {list(NONFINITE_POLICIES)}, got {group['nonfinite']!r}"
            )

    def _norm(self, group: dict[str, Any]) -> Norm:
        spec = group["norm"]
        if isinstance(spec, Norm):
            return spec
        key = repr(spec)
        norm = self._norm_cache.get(key)
        if norm is None:
            norm = self._norm_cache[key] = from_spec(spec)
        return norm

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_norm_cache", {})

    # -- names for messages ---------------------------------------------------------------
    def _param_name(self, group: dict[str, Any], p: Tensor) -> str:
        names = group.get("param_names")
        for gi, g in enumerate(self.param_groups):
            if g is group:
                for pi, q in enumerate(g["params"]):
                    if q is p:
                        if names is not None:
                            return f"{names[pi]!r}"
                        return f"param {pi} of group {gi} (shape {tuple(p.shape)})"
        return f"a parameter of shape {tuple(p.shape)}"

    # -- the step ---------------------------------------------------------------------------
    def _grad(self, p: Tensor, group: dict[str, Any]) -> Tensor:
        g = cast(Tensor, p.grad)  # the loop only passes parameters that have a gradient
        if g.is_sparse:
            raise TypeError(
                f"{type(self).__name__} does not support sparse gradients "
                f"({self._param_name(group, p)}); use a dense embedding or torch.optim.SparseAdam"
            )
        if g.is_complex():
            raise TypeError(
                f"{type(self).__name__} does not support complex gradients ({self._param_name(group, p)})"
            )
        return g

    def _gradients_finite(self) -> bool:
        """Apply the non-finite policy; returns False when the step must be skipped."""
        flags: list[Tensor] = []
        owners: list[tuple[dict[str, Any], Tensor]] = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and not p.grad.is_sparse:
                    flags.append(torch.isfinite(p.grad).all())
                    owners.append((group, p))
        if not flags:
            return True
        ok = torch.stack([f.to(flags[0].device) for f in flags])
        if bool(ok.all()):
            return True
        bad_group, bad_p = owners[int((~ok).nonzero()[0, 0])]
        if any(g.get("nonfinite", "raise") == "raise" for g, _ in owners):
            raise NonFiniteGradientError(
                f"non-finite gradient (NaN or Inf) in {self._param_name(bad_group, bad_p)}; "
                "the step was not taken. Pass nonfinite='skip' to skip such steps instead."
            )
        return False

    def _element_shape(self, p: Tensor, group: dict[str, Any]) -> tuple[int, ...]:
        return tuple(p.shape)

    def _accumulate(
        self, p: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> Tensor:
        raise NotImplementedError

    def _direct(self, stack: Tensor, group: dict[str, Any]) -> Tensor:
        return stack

    def _apply(
        self, p: Tensor, direction: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        raise NotImplementedError

    def _combine(self, plan: list[Plan]) -> None:
        """Hook for optimizers that couple groups (``_global_combine = True``): may rescale
        the directions of ``plan`` (one ``(group, params, buffers, directions)`` per group)
        in place before any is applied."""

    def _stacks(
        self, group: dict[str, Any], params: list[Tensor], buffers: list[Tensor]
    ) -> Iterable[tuple[list[int], Tensor]]:
        """Group buffers by (element shape, dtype, device); yield (indices, stack)."""
        by_key: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        shapes = [self._element_shape(p, group) for p in params]
        for i, (b, shape) in enumerate(zip(buffers, shapes)):
            by_key[(shape, b.dtype, b.device)].append(i)
        for (shape, _, _), idx in by_key.items():
            if len(idx) == 1:
                stack = buffers[idx[0]].reshape(1, *shape)
            else:
                stack = torch.stack([buffers[i].reshape(shape) for i in idx])  # (B, *shape)
            yield idx, stack

    def _directions(
        self, group: dict[str, Any], params: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        buffers = [self._accumulate(p, self._grad(p, group), self.state[p], group) for p in params]
        directions: list[Tensor] = [buffers[0]] * len(params)
        for idx, stack in self._stacks(group, params, buffers):
            out = self._direct(stack, group)  # (B, *element)
            for j, i in enumerate(idx):
                directions[i] = out[j].reshape(params[i].shape)
        return buffers, directions

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Take one step; ``closure`` (optional) re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self._gradients_finite():
            return loss
        plan: list[Plan] = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            buffers, directions = self._directions(group, params)
            if self._global_combine:
                plan.append((group, params, buffers, directions))
            else:
                for p, d in zip(params, directions):
                    self._apply(p, d, self.state[p], group)
        if plan:
            self._combine(plan)
            for group, params, _, directions in plan:
                for p, d in zip(params, directions):
                    self._apply(p, d, self.state[p], group)
        return loss

    # -- state dicts ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["normopt_optimizer"] = type(self).__name__
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict, dict) or "param_groups" not in state_dict:
            raise ValueError("state_dict: expected an optimizer state dict (with 'param_groups')")
        kind = state_dict.get("normopt_optimizer")
        if kind is not None and kind != type(self).__name__:
            raise ValueError(
                f"state_dict: saved by {kind}, cannot be loaded into {type(self).__name__}"
            )
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict: has {len(groups)} param groups, this optimizer has "
                f"{len(self.param_groups)}"
            )
        for gi, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(mine["params"]):
                raise ValueError(
                    f"state_dict: group {gi} has {len(saved['params'])} parameters, "
                    f"this optimizer's has {len(mine['params'])}"
                )
        # Per-parameter buffers must match the parameters' shapes (a different model layout
        # with the same parameter counts would otherwise load silently).
        index = {
            pid: p
            for g_saved, g in zip(groups, self.param_groups)
            for pid, p in zip(g_saved["params"], g["params"])
        }
        for pid, st in state_dict.get("state", {}).items():
            p = index.get(pid)
            if p is None:
                continue
            for key, value in st.items():
                if (
                    isinstance(value, Tensor)
                    and value.ndim > 0
                    and key in self._per_param_keys()
                    and value.numel() != p.numel()
                ):
                    raise ValueError(
                        f"state_dict: buffer {key!r} of parameter {pid} has {value.numel()} "
                        f"elements, the parameter has {p.numel()} (shape {tuple(p.shape)})"
                    )
        sd = {k: v for k, v in state_dict.items() if k != "normopt_optimizer"}
        super().load_state_dict(sd)

    def _per_param_keys(self) -> tuple[str, ...]:
        """State keys holding one value per parameter entry (checked on load)."""
        return ("momentum_buffer", "exp_avg", "exp_avg_sq", "prev_param", "prev_grad")

    @staticmethod
    def _buffer(state: dict[str, Any], key: str, p: Tensor) -> Tensor:
        buf = state.get(key)
        if buf is None:
            buf = state[key] = torch.zeros_like(
                p, dtype=_state_dtype(p), memory_format=torch.preserve_format
            )
        return buf
