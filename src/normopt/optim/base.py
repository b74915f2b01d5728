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
from collections.abc import Callable, Iterable
from typing import Any, cast

import torch
from torch import Tensor
from torch.optim import Optimizer

from normopt import kernels
from normopt.norms import Norm, from_spec

__all__ = [
    "NormOptimizer",
    "NonFiniteGradientError",
    "NonFiniteUpdateError",
    "NONFINITE_POLICIES",
    "check_number",
    "check_betas",
    "check_bool",
    "resolve_norm",
    "split_view",
]

NONFINITE_POLICIES = ("raise", "skip")

# One param group's share of a step: (group, params, buffers, directions).
Plan = tuple[dict[str, Any], list[Tensor], list[Tensor], list[Tensor]]


class NonFiniteGradientError(FloatingPointError):
    """A gradient held NaN or Inf and the optimizer's policy is ``nonfinite="raise"``."""


class NonFiniteUpdateError(NonFiniteGradientError):
    """Finite gradients gave NaN or Inf in the new weights or optimizer state (an overflow,
    e.g. AdamW's ``g * g`` for ``|g| > 1.8e19`` in float32) and the policy is ``"raise"``.
    The step was undone. A subclass of :class:`NonFiniteGradientError`, so one ``except``
    catches both."""


def check_number(
    name: str,
    value: Any,
    low: float = 0.0,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Validate a real, finite hyperparameter, raising ``ValueError`` that names it."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name}: expected a number, got a tensor of shape {tuple(value.shape)}"
            )
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    if math.isinf(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
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


def check_bool(name: str, value: Any) -> bool:
    """Validate a flag: ``True`` or ``False`` (not a string such as ``"no"``, which is truthy)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return value


def resolve_norm(name: str, spec: Any) -> Norm:
    """``from_spec(spec)``, with errors that name the argument ``name`` (``norm``, ``K``)."""
    try:
        return from_spec(spec)
    except (ValueError, TypeError) as e:
        msg = str(e)
        msg = msg[len("name: ") :] if msg.startswith("name: ") else msg
        raise type(e)(f"{name}: {msg}") from None


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
        defaults = self._as_specs(defaults)
        # Every optimizer reads a parameter as ``split_view(shape, batch_dims, split)``.
        defaults.setdefault("batch_dims", 0)
        defaults.setdefault("split", 1)
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
        if not isinstance(params, Iterable):
            raise TypeError(
                "params: expected an iterable of tensors, param groups or (name, tensor) pairs, "
                f"got {type(params).__name__}"
            )
        params = list(params)
        if not params:
            raise ValueError(
                "params: empty parameter list; nothing to optimize (a model whose parameters "
                "are all frozen has none)"
            )
        self._norm_cache: dict[str, Norm] = {}
        super().__init__(params, defaults)

    # -- groups and norms ---------------------------------------------------------------
    @staticmethod
    def _as_specs(options: dict[str, Any]) -> dict[str, Any]:
        """Norms (and Lion-K's convex maps) stored by registry name and arguments, so that the
        state dict stays plain data that torch.load(weights_only=True) reads."""
        for key in ("norm", "K"):
            value = options.get(key)
            if isinstance(value, Norm | str):
                options = {**options, key: resolve_norm(key, value).spec()}
            elif value is not None and hasattr(value, "spec") and not isinstance(value, dict):
                options = {**options, key: value.spec()}
        return options

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        param_group = self._as_specs(param_group)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            for p in group["params"]:
                if p.is_complex():
                    raise TypeError(
                        f"params: complex parameters are not supported (dtype {p.dtype})"
                    )
                if not p.is_floating_point():
                    raise TypeError(
                        f"params: expected floating-point parameters, got dtype {p.dtype}"
                    )
            self._check_group(group)
        except (TypeError, ValueError):
            self.param_groups.pop()  # a rejected group must not stay behind half-added
            raise

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

    def _precheck(self, extra: Iterable[tuple[dict[str, Any], Tensor, Tensor]] = ()) -> str:
        """One pass over the gradients before anything moves; returns ``"skip"``, ``"guard"``
        or ``"fast"``.

        Raises ``TypeError`` for sparse or complex gradients and applies the non-finite
        policy. A step is *guarded* (weights and state saved, checked after, restored on
        overflow) when it could overflow: float16 parameters (range 65504), or a gradient
        with ``max |g| > sqrt(finfo(state dtype).max / (64 n))``, ``n`` the number of
        entries stepped. Below that bound no optimizer here can overflow: momentum is a
        combination of gradients, AdamW squares them (``g^2 <= max / 64 n``), and dual norms
        sum at most ``n`` entries or squares. ``extra``: more ``(group, param, gradient)``
        triples to include (MuonMVR2's second gradients).
        """
        entries: list[tuple[dict[str, Any], Tensor, Tensor]] = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    entries.append((group, p, self._grad(p, group)))  # raises on sparse/complex
        entries.extend(extra)
        if not entries:
            return "fast"
        n = max(1, sum(p.numel() for _, p, _ in entries))
        guard = any(p.dtype == torch.float16 for _, p, _ in entries)
        owners, finite, large = [], [], []
        for group, p, g in entries:
            if g.numel() == 0:
                continue
            amax = torch.linalg.vector_norm(g, math.inf)  # NaN or Inf when g holds one
            bound = math.sqrt(torch.finfo(_state_dtype(p)).max / (64 * n))
            owners.append((group, p))
            finite.append(torch.isfinite(amax))
            large.append(amax > bound)
        if not owners:
            return "guard" if guard else "fast"
        dev = finite[0].device
        flags = torch.stack(
            [torch.stack([f.to(dev) for f in finite]), torch.stack([b.to(dev) for b in large])]
        ).cpu()  # one sync
        ok, big = flags[0], flags[1]
        if not bool(ok.all()):
            bad_group, bad_p = owners[int((~ok).nonzero()[0, 0])]
            if any(g.get("nonfinite", "raise") == "raise" for g, _ in owners):
                raise NonFiniteGradientError(
                    f"non-finite gradient (NaN or Inf) in {self._param_name(bad_group, bad_p)}; "
                    "the step was not taken. Pass nonfinite='skip' to skip such steps instead."
                )
            return "skip"
        return "guard" if guard or bool(big.any()) else "fast"

    def _snapshot(self) -> list[tuple[dict[str, Any], Tensor, Tensor, dict[str, Any] | None]]:
        """Copies of every parameter that has a gradient and of its state (a guarded step)."""
        saved = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state.get(p)
                copy = (
                    None
                    if st is None
                    else {k: v.clone() if isinstance(v, Tensor) else v for k, v in st.items()}
                )
                saved.append((group, p, p.detach().clone(), copy))
        return saved

    def _commit(
        self, saved: list[tuple[dict[str, Any], Tensor, Tensor, dict[str, Any] | None]]
    ) -> bool:
        """After a guarded step: keep it if every new weight and state tensor is finite,
        otherwise restore the snapshot bit for bit and apply the non-finite policy. (A tensor
        that was not finite before the step, say weights set to Inf by the user, is not
        blamed on the update.)"""

        def finite(new: Tensor, old: Tensor | None) -> Tensor:
            ok = torch.isfinite(new).all()
            return ok if old is None else ok | ~torch.isfinite(old).all()

        flags: list[Tensor] = []
        where: list[tuple[int, str]] = []
        for i, (_, p, value, st) in enumerate(saved):
            if p.numel():
                flags.append(finite(p, value))
                where.append((i, "the new weights"))
            for k, v in self.state.get(p, {}).items():
                if isinstance(v, Tensor) and v.is_floating_point() and v.numel():
                    old = (st or {}).get(k)
                    flags.append(finite(v, old if isinstance(old, Tensor) else None))
                    where.append((i, f"the optimizer state {k!r}"))
        if not flags:
            return True
        dev = flags[0].device
        ok = torch.stack([f.to(dev) for f in flags]).cpu()
        if bool(ok.all()):
            return True
        i, what = where[int((~ok).nonzero()[0, 0])]
        bad_group, bad_p = saved[i][0], saved[i][1]
        for _, p, value, st in saved:
            p.copy_(value)
            if st is None:
                self.state.pop(p, None)
            else:
                self.state[p] = st
        if any(g.get("nonfinite", "raise") == "raise" for g, _, _, _ in saved):
            raise NonFiniteUpdateError(
                f"non-finite update: finite gradients gave NaN or Inf in {what} of "
                f"{self._param_name(bad_group, bad_p)} ({bad_p.dtype} overflow); the step was "
                "undone. Lower the learning rate or the loss scale, or pass nonfinite='skip' "
                "to skip such steps."
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

    def _merge_transposed(self, group: dict[str, Any], params: list[Tensor]) -> list[bool]:
        """Per parameter, whether a tall element may join the stack of its transpose (only
        sound for a transpose-equivariant direction map, such as the polar factor)."""
        return [False] * len(params)

    def _directions(
        self, group: dict[str, Any], params: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        buffers = [self._accumulate(p, self._grad(p, group), self.state[p], group) for p in params]
        # Stacks: buffers of equal element shape, dtype and device, mapped as one batch.
        shapes = [self._element_shape(p, group) for p in params]
        keys = [(b.dtype, b.device) for b in buffers]
        merge = self._merge_transposed(group, params)
        directions: list[Tensor] = [buffers[0]] * len(params)
        for plan in kernels.plan_stacks(shapes, keys, merge):
            out = self._direct(kernels.gather(buffers, plan), group)  # (B, *plan.shape)
            for j, i in enumerate(plan.indices):
                directions[i] = kernels.scatter_one(out, j, plan, tuple(params[i].shape))
        return buffers, directions

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Take one step; ``closure`` (optional) re-evaluates the model and returns the loss."""
        return self._step(closure)

    def _step(self, closure: Callable[[], Any] | None = None) -> Any:
        # The body of step(). torch wraps each class's step() with the step hooks, so a
        # subclass that overrides step() calls this, not super().step(), to run them once.
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._update()
        return loss

    def _update(self, extra: Iterable[tuple[dict[str, Any], Tensor, Tensor]] = ()) -> bool:
        """One step on the current gradients; False when the policy skipped it. ``extra`` as
        in :meth:`_precheck`."""
        mode = self._precheck(extra)
        if mode == "skip":
            return False
        saved = self._snapshot() if mode == "guard" else None
        plan: list[Plan] = []
        for group in self.param_groups:
            # an empty tensor has nothing to update (and norms cannot reduce over it)
            params = [p for p in group["params"] if p.grad is not None and p.numel() > 0]
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
        return True if saved is None else self._commit(saved)

    # -- state dicts ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["normopt_optimizer"] = type(self).__name__
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict saved by :meth:`state_dict` of the same optimizer class, on
        parameters of the same layout; anything else is a ``ValueError``, never a silent
        mismatch. State keeps the dtype a step would give it (float32 for bf16/fp16
        parameters: torch's loader would cast it to the parameter's dtype) and is copied,
        not shared with ``state_dict``."""
        if not isinstance(state_dict, dict) or "param_groups" not in state_dict:
            raise ValueError("state_dict: expected an optimizer state dict (with 'param_groups')")
        kind = state_dict.get("normopt_optimizer")
        if kind is None:
            raise ValueError(
                f"state_dict: not saved by a normopt optimizer (no 'normopt_optimizer' key); "
                f"cannot be loaded into {type(self).__name__}"
            )
        if kind != type(self).__name__:
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
            # The saved hyperparameters replace ours: they must be valid for our tensors
            # (a norm that does not fit a shape, a tampered learning rate).
            candidate = {**self.defaults, **saved, "params": mine["params"]}
            try:
                self._check_group(candidate)
            except (ValueError, TypeError, KeyError) as e:
                raise ValueError(f"state_dict: group {gi} does not fit this optimizer: {e}") from e
        # Per-parameter buffers must match the parameters' shapes (a different model layout
        # with the same parameter counts would otherwise load silently).
        index = {
            pid: p
            for g_saved, g in zip(groups, self.param_groups)
            for pid, p in zip(g_saved["params"], g["params"])
        }
        saved_state = state_dict.get("state", {})
        for pid, st in saved_state.items():
            p = index.get(pid)
            if p is None:
                continue
            for key, value in st.items():
                if (
                    isinstance(value, Tensor)
                    and key in self._per_param_keys()
                    and tuple(value.shape) != tuple(p.shape)
                ):
                    raise ValueError(
                        f"state_dict: buffer {key!r} of parameter {pid} has shape "
                        f"{tuple(value.shape)}, the parameter has shape {tuple(p.shape)}"
                    )
        sd = {k: v for k, v in state_dict.items() if k != "normopt_optimizer"}
        # a key missing from a saved group (added in a later version) takes its default
        sd["param_groups"] = [{**self.defaults, **g} for g in groups]
        super().load_state_dict(sd)
        # torch casts floating state to the parameter's dtype (and may share the tensors
        # with state_dict): put back the saved values, copied, in the dtype a step uses.
        for pid, st in saved_state.items():
            p = index.get(pid)
            if p is None:
                continue
            mine = self.state[p]
            for key, value in st.items():
                if isinstance(value, Tensor):
                    dtype = self._state_value_dtype(key, p) if value.is_floating_point() else None
                    mine[key] = value.to(device=p.device, dtype=dtype, copy=True)

    def _state_value_dtype(self, key: str, p: Tensor) -> torch.dtype:
        """The dtype of a floating state tensor ``key`` of ``p`` (see :func:`_state_dtype`)."""
        return _state_dtype(p)

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
