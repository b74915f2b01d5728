"""The shared base of every normopt optimizer: the one loop, blocks, and the policies.

Every optimizer is three moves (DESIGN.md), run per **block** of a param group:

1. **accumulate** (``_accumulate``): a momentum rule turns gradients into buffers;
2. **direct** (``_direct``): a direction map turns buffers into update directions;
3. **apply** (``_apply``): learning rate, shape scaling, decoupled weight decay or a
   constraint.

A block (:class:`Block`) is a **stack** ``(B, *element)`` of the group's tensors
that share an element shape, dtype and device (the unit of the direction map),
or, where the direction is entrywise, one **flat** block of all of them. State
lives in block tensors whose rows are the per-parameter state, so each move is
one aten op per block; parameters and gradients are reached with
``torch._foreach_*``. The default step reads nothing back from the device: a
step with non-finite gradients is masked there (:class:`normopt.optim.moves.Mask`).

Subclasses choose the moves; the loop, the blocks, the non-finite policy and
the state-dict checks live here only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer

from normopt import distributed, kernels
from normopt._checks import at_least_float32, check_bool, check_int, check_number
from normopt.norms import Norm, from_spec
from normopt.optim.moves import Mask

__all__ = [
    "NormOptimizer",
    "NonFiniteGradientError",
    "NonFiniteUpdateError",
    "NONFINITE_POLICIES",
    "Block",
    "resolve_norm",
    "split_view",
    "fitted_element",
]

NONFINITE_POLICIES = ("skip", "raise")

# One block's share of a coupled step: (group, block, buffer, direction).
Plan = tuple[dict[str, Any], "Block", Tensor, Tensor]


class NonFiniteGradientError(FloatingPointError):
    """A gradient held NaN or Inf and the optimizer's policy is ``nonfinite="raise"``."""


class NonFiniteUpdateError(NonFiniteGradientError):
    """Finite gradients gave NaN or Inf in the new weights or optimizer state (an overflow,
    e.g. AdamW's ``g * g`` for ``|g| > 1.8e19`` in float32) and the policy is ``"raise"``.
    The step was undone. A subclass of :class:`NonFiniteGradientError`, so one ``except``
    catches both."""


def resolve_norm(name: str, spec: Any) -> Norm:
    """``from_spec(spec)``, with errors that name the argument ``name`` (``norm``, ``K``); a
    product norm, which no one parameter carries, is refused."""
    try:
        norm = from_spec(spec)
    except (ValueError, TypeError) as e:
        msg = str(e)
        msg = msg[len("name: ") :] if msg.startswith("name: ") else msg
        raise type(e)(f"{name}: {msg}") from None
    if not isinstance(norm, Norm):
        raise ValueError(
            f"{name}: {type(norm).__name__} spans several tensors; use "
            "SteepestDescent(modular=True) with one norm per param group"
        )
    return norm


def split_view(
    shape: tuple[int, ...], batch_dims: int, split: int, transposed: bool = False
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(lead, rest)``: the leading batch dims of a parameter (``batch_dims`` of them, plus
    ``split`` when a fused weight holds ``split`` matrices stacked along its output dim)
    and the shape of one matrix-like element.

    ``transposed``: the parameter is stored ``(*batch, d_in, d_out)`` (Hugging Face's
    ``Conv1D``, GPT-OSS's experts): the element is read from its transpose, so ``rest`` is
    ``(d_out, d_in)`` (split along ``d_out``) and shape scales and norms see the true
    orientation. Only a matrix (two dims after the batch dims) can be transposed."""
    check_int("batch_dims", batch_dims, 0)
    check_int("split", split, 1)
    check_bool("transposed", transposed)
    lead, rest = tuple(shape[:batch_dims]), tuple(shape[batch_dims:])
    if transposed:
        if len(rest) != 2:
            raise ValueError(
                f"transposed: needs a matrix after the batch dims, got shape {tuple(shape)} "
                f"with batch_dims={batch_dims}"
            )
        rest = (rest[1], rest[0])
    if split > 1:
        if not rest or rest[0] % split:
            raise ValueError(
                f"split: {split} does not divide the output dim of shape {tuple(shape)}"
                + (" (stored transposed: its last dim)" if transposed else "")
            )
        lead, rest = (*lead, split), (rest[0] // split, *rest[1:])
    return lead, rest


def fitted_element(
    p: Tensor, group: dict[str, Any], fit: Callable[[tuple[int, ...]], tuple[int, ...]]
) -> tuple[int, ...]:
    """The element shape a group's norm acts on: :func:`split_view` of ``p`` under the
    group's ``batch_dims``, ``split`` and ``transposed``, its matrix part through ``fit``
    (a norm's ``fit``, which raises when the norm cannot carry that shape)."""
    lead, rest = split_view(
        tuple(p.shape), group["batch_dims"], group["split"], group["transposed"]
    )
    return lead + fit(rest)


def _swapped(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with its last two dims exchanged (the shape of ``t.mT``)."""
    return (*shape[:-2], shape[-1], shape[-2]) if len(shape) >= 2 else shape


def _state_dtype(p: Tensor) -> torch.dtype:
    # Optimizer state stays in at least float32: bf16/fp16 momentum loses the small
    # increments (1 - beta) g that momentum is made of.
    return at_least_float32(p.dtype)


@dataclass(eq=False)
class Block:
    """The tensors of one param group that move together: a stack or a flat block.

    A **stack** ``(B, *element)`` holds ``B`` parameters of one element shape (the
    unit of the direction map: one batched polar factor). A **flat** block
    ``(1, N)`` holds every parameter of a group (per device and dtype) whose
    direction is entrywise (sign), end to end. Each parameter's gradient is copied
    into :attr:`grad` with one ``_foreach_copy_`` (the copy is where a skipped
    step's gradients are zeroed; ``p.grad`` itself is never written), and every
    state buffer lives in one tensor of the block's shape whose rows (views of the
    parameter's shape) are what ``optimizer.state[p]`` holds. So a move is one aten
    op per block, whatever the number of parameters, and no per-tensor view is made
    on the hot path: views are made once, when the block is built. The price is one
    gradient-sized buffer per block (it also receives the direction rows of a block
    that is not :attr:`plain`).
    """

    params: list[Tensor]
    shape: tuple[int, ...]  # the block tensor's shape: (B, *element), or (1, N) when flat
    flipped: tuple[bool, ...]  # the row of parameter j is its transpose (merged, or stored
    # (d_in, d_out)): row j is ``t[j]`` read as ``p.mT``
    flat: bool
    dtype: torch.dtype
    device: torch.device
    spans: tuple[tuple[int, int], ...]  # flat blocks: (offset, numel) of each parameter
    # the tensors the moves write: the parameters, or their local shards (DTensors)
    targets: list[Tensor] = field(default_factory=list)
    # a direction computed across ranks (normopt.distributed's OwnerExchange for sharded
    # parameters, ReplicatedExchange for DDP's owners), planned once; None: computed here
    exchange: Any = None
    grad: Tensor = field(init=False)
    sharded: bool = field(init=False)  # targets are local shards of DTensor parameters
    grad_views: list[Tensor] = field(init=False)
    plain: bool = field(init=False)  # rows are the parameters' shapes, none transposed
    buffers: dict[str, Tensor] = field(default_factory=dict)
    views: dict[str, list[Tensor]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.targets:
            self.targets = list(self.params)
        self.sharded = any(t is not p for t, p in zip(self.targets, self.params))
        self.grad = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        self.grad_views = self.rows(self.grad)
        # a plain stack's rows are what D.unbind(0) gives
        self.plain = (
            not self.flat
            and not any(self.flipped)
            and all(tuple(p.shape) == self.shape[1:] for p in self.targets)
        )

    def grads(self) -> list[Tensor]:
        """The gradients of the parameters, as the moves read them (local shards of DTensors)."""
        if self.sharded:
            return [distributed.local(cast(Tensor, p.grad)) for p in self.params]
        return [cast(Tensor, p.grad) for p in self.params]

    def rows(self, t: Tensor) -> list[Tensor]:
        """Views of ``t`` (the block's shape), one per parameter, in the parameter's shape."""
        out = []
        for j, p in enumerate(self.targets):
            if self.flat:
                o, n = self.spans[j]
                out.append(t[0, o : o + n].view(p.shape))
            elif self.flipped[j]:  # the row is the parameter's transpose (read as p.mT)
                out.append(t[j].view(*p.shape[:-2], p.shape[-1], p.shape[-2]).mT)
            else:
                out.append(t[j].view(p.shape))
        return out

    def per_param(self, v: Tensor) -> Tensor:
        """A ``(B,)`` tensor of per-parameter values, broadcast against the block."""
        if self.flat:
            sizes = self.extras.get("sizes")
            if sizes is None:
                sizes = self.extras["sizes"] = torch.tensor(
                    [n for _, n in self.spans], device=self.device
                )
            total = sum(n for _, n in self.spans)
            return torch.repeat_interleave(v, sizes, output_size=total).view(1, -1)
        return v.view(-1, *([1] * (len(self.shape) - 1)))


class NormOptimizer(Optimizer):
    """Base class: the one loop over parameters, stacks, and the shared policies.

    Subclasses set hyperparameters in ``defaults``, validate a group in
    ``_check_group``, and choose the moves (:mod:`normopt.optim.moves`):

    - ``_element_shape(p, group) -> tuple``: the shape of one element of a stack
      (default ``p.shape``);
    - ``_entrywise(group) -> bool``: the direction acts entry by entry (sign), so the
      group's tensors move as one flat block instead of stacks;
    - ``_accumulate(group, block, G, mask) -> Tensor``: the buffer to direct, from the
      block's gradients ``G`` (zeroed on a skipped step); state via :meth:`_state`;
    - ``_direct(stack, group) -> Tensor``: maps a ``(B, *element)`` stack to
      directions of the same shape (default: identity);
    - ``_apply(group, block, D, mask)``: writes the update into the parameters
      (usually through :meth:`_decoupled_step`).

    Common keyword arguments (stored in every group):

    - ``nonfinite``: ``"skip"`` (default) skips a step whose gradients hold NaN or Inf
      (or exceed the overflow bound below), leaving weights and state untouched,
      without reading anything back from the device; :attr:`skipped_steps` counts
      them. ``"raise"`` checks on the host (one sync per step) and raises
      :class:`NonFiniteGradientError` naming the parameter; it also runs the guarded
      step (snapshot, check, undo) when an update could overflow.
    - ``foreach``: ``True`` (default) moves stacks and lists; ``False`` runs the plain
      per-parameter reference loop (the same moves, one tensor at a time).

    **Huge finite gradients.** Below ``max |g| <= sqrt(finfo(state dtype).max / (64 n))``
    (``n`` entries stepped; about ``2e14`` for 1e8 float32 entries) no optimizer here
    can overflow: momentum is a combination of gradients, AdamW squares them and dual
    norms sum at most ``n`` entries or squares. Under ``"skip"`` a step with a larger
    gradient is skipped like a non-finite one (decided on the device); under
    ``"raise"`` it is taken guarded and undone only if it overflowed. Parameters in
    float16 (range 65504; not AMP, whose master weights are float32) always take the
    guarded step, which reads one flag back per step.
    """

    # Set by optimizers whose step couples all groups (modular steepest descent).
    _global_combine: bool = False

    def __init__(self, params: Any, defaults: dict[str, Any], process_group: Any = None) -> None:
        if process_group is not None and not isinstance(process_group, dist.ProcessGroup):
            raise TypeError(
                "process_group: expected a torch.distributed ProcessGroup (e.g. "
                f"torch.distributed.group.WORLD) or None, got {type(process_group).__name__}"
            )
        # DDP: the ranks of process_group share the directions of replicated parameters
        self._process_group = process_group
        self._consensus: Any = None  # the group that agrees on skipped steps (DTensors)
        self._owner_load: dict[int, list[float]] = {}
        defaults = self._as_specs(defaults)
        # Every optimizer reads a parameter as ``split_view(shape, batch_dims, split)``.
        defaults.setdefault("batch_dims", 0)
        defaults.setdefault("split", 1)
        defaults.setdefault("transposed", False)
        defaults.setdefault("foreach", True)
        nonfinite = defaults.setdefault("nonfinite", "skip")
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(
                f"nonfinite: expected one of {list(NONFINITE_POLICIES)}, got {nonfinite!r}"
            )
        params = _param_list(params)
        self._norm_cache: dict[str, Any] = {}  # built from group specs (norms, Lion-K's K)
        self._blocks: dict[int, tuple[tuple[Tensor, ...], list[Block]]] = {}
        self._skipped: Tensor | None = None
        self._last_masks: dict[Any, Mask] = {}
        self._bound_cache: dict[tuple[Any, ...], Tensor] = {}
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
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group: expected a dict, got {type(param_group).__name__}")
        param_group = self._as_specs(param_group)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group["normopt_optimizer"] = type(self).__name__
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
            check_bool("foreach", group["foreach"])
            self._check_group(group)
            everything = [p for g in self.param_groups for p in g["params"]]
            consensus = distributed.consensus_group(everything)
            if consensus is not None and self._process_group is not None:
                raise ValueError(
                    "process_group: is for replicated parameters (DDP); these parameters "
                    "are DTensors (FSDP2), whose device mesh is used instead"
                )
        except (TypeError, ValueError, NotImplementedError):
            self.param_groups.pop()  # a rejected group must not stay behind half-added
            raise
        self._consensus = consensus

    def _check_group(self, group: dict[str, Any]) -> None:
        check_number("lr", group["lr"])
        if group.get("nonfinite", "skip") not in NONFINITE_POLICIES:
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
            norm = self._norm_cache[key] = resolve_norm("norm", spec)
        return norm

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_norm_cache", {})
        self.__dict__.setdefault("_blocks", {})
        self.__dict__.setdefault("_skipped", None)
        self.__dict__.setdefault("_last_masks", {})
        self.__dict__.setdefault("_bound_cache", {})
        self.__dict__.setdefault("_process_group", None)
        self.__dict__.setdefault("_consensus", None)
        self.__dict__.setdefault("_owner_load", {})

    def lr_scale(self, p: Tensor) -> float:
        """The factor this optimizer multiplies ``lr`` by for parameter ``p`` (1 here; Muon
        reports its shape scale). :func:`normopt.describe` shows it."""
        if not any(q is p for g in self.param_groups for q in g["params"]):
            raise ValueError("p: not a parameter of this optimizer")
        return 1.0

    @property
    def skipped_steps(self) -> Tensor:
        """How many steps this optimizer object has skipped (non-finite or over-bound gradients,
        undone overflows): a device tensor, so that counting costs no sync; reading it
        (``int(opt.skipped_steps)``) is one. A diagnostic of this run, not part of the state
        dict."""
        if self._skipped is None:
            return torch.zeros((), dtype=torch.int64)
        return self._skipped

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

    # -- gradients and the non-finite policy ------------------------------------------------
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

    def _entries(
        self, extra: Iterable[tuple[dict[str, Any], Tensor, Tensor]] = ()
    ) -> list[tuple[dict[str, Any], Tensor, Tensor]]:
        """``(group, param, gradient)`` of every parameter that has a gradient, type-checked
        before anything moves (sparse and complex gradients raise ``TypeError``)."""
        entries = [
            (group, p, self._grad(p, group))
            for group in self.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        entries.extend(extra)
        return entries

    @staticmethod
    def _overflow_bound(entries: list[tuple[dict[str, Any], Tensor, Tensor]]) -> float:
        n = max(1, sum(p.numel() for _, p, _ in entries))
        return min(math.sqrt(torch.finfo(_state_dtype(p)).max / (64 * n)) for _, p, _ in entries)

    def _precheck(self, extra: Iterable[tuple[dict[str, Any], Tensor, Tensor]] = ()) -> str:
        """The host-side check of ``nonfinite="raise"`` (and of float16 parameters): one pass
        over the gradients before anything moves, one sync; returns ``"skip"``, ``"guard"`` or
        ``"fast"``. A step is *guarded* (weights and state saved, checked after, restored on
        overflow) when it could overflow: float16 parameters, or a gradient above the bound of
        the class docstring. ``extra``: more ``(group, param, gradient)`` triples to include
        (MuonMVR2's second gradients)."""
        entries = self._entries(extra)
        if not entries:
            return "fast"
        bound = self._overflow_bound(entries)
        guard = any(p.dtype == torch.float16 for _, p, _ in entries)
        sharded = self._consensus is not None
        owners, finite, large = [], [], []
        for group, p, g in entries:
            g = distributed.local(g) if sharded else g
            if g.numel() == 0:
                continue
            amax = torch.linalg.vector_norm(g, math.inf)  # NaN or Inf when g holds one
            owners.append((group, p))
            finite.append(torch.isfinite(amax))
            large.append(amax > bound)
        if sharded:  # every rank the same answer: (any bad, any large), one all_reduce
            dev = distributed.local(entries[0][1]).device
            mine = torch.zeros(2, dtype=torch.bool, device=dev)
            if owners:
                mine[0] = ~torch.stack([f.to(dev) for f in finite]).all()
                mine[1] = torch.stack([b.to(dev) for b in large]).any()
            # this rank's flags and every rank's, read back together: one sync
            here, anywhere = torch.stack([mine, distributed.agree(mine, self._consensus)]).cpu()
            if bool(anywhere[0]) and not bool(here[0]):
                if any(g.get("nonfinite", "skip") == "raise" for g in self.param_groups):
                    raise NonFiniteGradientError(
                        "non-finite gradient (NaN or Inf) on another rank; the step was not "
                        "taken. Pass nonfinite='skip' to skip such steps instead."
                    )
                return "skip"
            if not bool(anywhere[0]):
                return "guard" if guard or bool(anywhere[1]) else "fast"
        if not owners:
            return "guard" if guard else "fast"
        dev = finite[0].device
        flags = torch.stack(
            [torch.stack([f.to(dev) for f in finite]), torch.stack([b.to(dev) for b in large])]
        ).cpu()  # one sync
        ok, big = flags[0], flags[1]
        if not bool(ok.all()):
            bad_group, bad_p = owners[int((~ok).nonzero()[0, 0])]
            if any(g.get("nonfinite", "skip") == "raise" for g, _ in owners):
                raise NonFiniteGradientError(
                    f"non-finite gradient (NaN or Inf) in {self._param_name(bad_group, bad_p)}; "
                    "the step was not taken. Pass nonfinite='skip' to skip such steps instead."
                )
            return "skip"
        return "guard" if guard or bool(big.any()) else "fast"

    def _grad_bound(self, group: dict[str, Any], dtype: torch.dtype, n: int) -> float:
        """The largest ``max |g|`` a step of ``group`` takes without any risk of overflow in
        ``dtype`` (the state dtype), ``n`` entries stepped: the moves here are linear in the
        gradients (momentum: convex combinations; dual norms and singular values: sums of at
        most ``n`` entries), so ``finfo.max / (64 n)``. AdamW, which squares them, overrides."""
        return torch.finfo(dtype).max / (64 * n)

    def _masks(self, entries: list[tuple[dict[str, Any], Tensor, Tensor]]) -> dict[Any, Mask]:
        """The device-side skip decision: one ``_foreach_norm`` per (device, dtype) of
        gradients, each max against its group's bound (:meth:`_grad_bound`), nothing read
        back. Returns one :class:`Mask` per device (the same decision on all of them)."""
        n = max(1, sum(p.numel() for _, p, _ in entries))
        by_key: dict[tuple[torch.device, torch.dtype], list[tuple[Tensor, float]]] = {}
        sharded = self._consensus is not None
        for group, p, g in entries:
            if sharded:
                g = distributed.local(g)  # each rank checks its shards; agree() below
            if g.numel():
                bound = self._grad_bound(group, _state_dtype(p), n)
                by_key.setdefault((g.device, g.dtype), []).append((g, bound))
        if not by_key:
            if not sharded or not entries:
                return {}
            # this rank holds only empty shards: nothing wrong here, but it must still agree
            by_key[(distributed.local(entries[0][1]).device, torch.float32)] = []
        oks = []
        for (device, dtype), items in by_key.items():
            if not items:
                oks.append(torch.ones((), dtype=torch.bool, device=device))
                continue
            # NaN or Inf where a gradient holds one; NaN <= bound is False: bad
            peaks = torch.stack(torch._foreach_norm([g for g, _ in items], math.inf))
            bounds = tuple(b for _, b in items)
            if all(b == bounds[0] for b in bounds):
                oks.append(peaks.amax() <= bounds[0])
            else:
                key = (device, dtype, bounds)
                limit = self._bound_cache.get(key)
                if limit is None:
                    limit = self._bound_cache[key] = torch.tensor(
                        bounds, dtype=dtype, device=device
                    )
                oks.append((peaks <= limit).all())
        first = oks[0].device
        ok = oks[0] if len(oks) == 1 else torch.stack([t.to(first) for t in oks]).all()
        bad = torch.logical_not(ok)
        if sharded:  # one all_reduce: every rank takes the same decision
            bad = distributed.agree(bad, self._consensus)
        self._count_skipped(bad, first)
        devices = {(distributed.local(p) if sharded else p).device for _, p, _ in entries}
        return {d: Mask(bad if d == first else bad.to(d)) for d in devices}

    def _everywhere(self, ok: Tensor) -> Tensor:
        """``ok`` (a 0-d bool tensor) AND-ed over the ranks that hold shards of these
        parameters (one ``all_reduce``); on one process, ``ok`` itself."""
        if self._consensus is None:
            return ok
        return torch.logical_not(distributed.agree(torch.logical_not(ok), self._consensus))

    def _count_skipped(self, bad: Tensor | bool, device: torch.device) -> None:
        if self._skipped is None:
            self._skipped = torch.zeros((), dtype=torch.int64, device=device)
        self._skipped.add_(bad)

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

        local = distributed.local

        def finite(new: Tensor, old: Tensor | None) -> Tensor:
            ok = torch.isfinite(local(new)).all()
            return ok if old is None else ok | ~torch.isfinite(local(old)).all()

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
        if self._consensus is not None:  # undo everywhere or nowhere
            dev = local(saved[0][1]).device if saved else torch.device("cpu")
            mine = (
                ~torch.stack([f.to(dev) for f in flags]).all()
                if flags
                else torch.zeros((), dtype=torch.bool, device=dev)
            )
            if not bool(distributed.agree(mine, self._consensus).cpu()):
                return True
            if not flags or not bool(mine.cpu()):  # the overflow was on another rank
                flags, where = [torch.zeros((), dtype=torch.bool, device=dev)], [(0, "a tensor")]
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
                # write back into the tensors the state holds (they may be rows of a block)
                mine = self.state[p]
                for k, v in st.items():
                    if isinstance(v, Tensor) and isinstance(mine.get(k), Tensor):
                        mine[k].copy_(v)
                    else:
                        mine[k] = v
                for k in [k for k in mine if k not in st]:
                    del mine[k]
        self._count_skipped(True, bad_p.device)
        if any(g.get("nonfinite", "skip") == "raise" for g, _, _, _ in saved):
            raise NonFiniteUpdateError(
                f"non-finite update: finite gradients gave NaN or Inf in {what} of "
                f"{self._param_name(bad_group, bad_p)} ({bad_p.dtype} overflow); the step was "
                "undone. Lower the learning rate or the loss scale, or pass nonfinite='skip' "
                "to skip such steps."
            )
        return False

    # -- blocks -------------------------------------------------------------------------------
    def _element_shape(self, p: Tensor, group: dict[str, Any]) -> tuple[int, ...]:
        return tuple(p.shape)

    def _entrywise(self, group: dict[str, Any]) -> bool:
        return False

    def _transposed(self, group: dict[str, Any]) -> bool:
        """Whether the group's elements are read from the parameters' transposes (its
        ``transposed`` key: tensors stored ``(d_in, d_out)``; see :func:`split_view`)."""
        return bool(group.get("transposed", False)) and not self._entrywise(group)

    def _direction_norm(self, group: dict[str, Any]) -> Norm | None:
        """The norm whose dualize is the group's direction map, where there is one."""
        return self._norm(group) if group.get("norm") is not None else None

    def _merge_transposed(self, group: dict[str, Any], params: list[Tensor]) -> list[bool]:
        """Per parameter, whether a tall element may join the stack of its transpose: sound
        for a transpose-equivariant direction map (the polar factor, the spectral, Frobenius,
        Schatten and Ky Fan dualize maps); on by default (:func:`normopt.kernels
        .set_merge_transposed`)."""
        norm = self._direction_norm(group)
        ok = norm is not None and norm.transpose_equivariant
        return [ok and kernels.merge_transposed_enabled(p.device) for p in params]

    def _local_direction(self, group: dict[str, Any]) -> bool:
        """Whether the group's direction is computed entry by entry (or not at all: AdamW),
        so that shards of a parameter move with no communication."""
        return self._entrywise(group)

    def _sharding_supported(
        self, group: dict[str, Any], layouts: list[distributed.ShardLayout]
    ) -> bool:
        """Whether this optimizer can step the group's parameters sharded as ``layouts`` say:
        true where its moves other than the direction act entry by entry (sharded parameters
        then need only their directions computed whole, see :mod:`normopt.distributed`). A
        move that reduces over a whole tensor after the direction says False where it cannot
        (the modular step's global eta), and DTensor parameters are refused with an error."""
        return True

    def _plan_blocks(self, group: dict[str, Any], params: list[Tensor]) -> list[Block]:
        if self._consensus is not None and any(distributed.is_dtensor(p) for p in params):
            return self._plan_sharded(group, params)
        blocks = self._plan_local(group, params)
        if self._process_group is not None and not self._local_direction(group):
            self._share_owners(blocks)
        return blocks

    def _share_owners(self, blocks: list[Block]) -> None:
        """DDP (``process_group``): every row of every stack gets one owner rank, balanced by
        FLOPs across the optimizer's blocks; only the owner computes its direction."""
        group = self._process_group
        load = self._owner_load.setdefault(-1, [0.0] * dist.get_world_size(group))
        for block in blocks:
            if block.flat:
                continue
            cost = distributed.element_cost(block.shape[1:])
            owners = distributed.assign_owners([cost] * len(block.params), load)
            block.exchange = distributed.ReplicatedExchange(group, owners)

    def _plan_sharded(self, group: dict[str, Any], params: list[Tensor]) -> list[Block]:
        """Blocks of DTensor parameters (FSDP2): flat blocks of their local shards, one per
        (state dtype, device, shard group). Where the direction needs whole matrices, each
        block carries an :class:`normopt.distributed.OwnerExchange`."""
        names = [self._param_name(group, p) for p in params]
        layouts = [distributed.layout_of(p, n) for p, n in zip(params, names)]
        local = self._local_direction(group)
        sharded = any(lay.dim is not None for lay in layouts)
        if not local and sharded and not self._sharding_supported(group, layouts):
            raise NotImplementedError(
                f"{type(self).__name__}: this group's step reduces over whole tensors "
                f"after the direction in a way that sharded (FSDP2) parameters such as "
                f"{names[0]} (placements {getattr(params[0], 'placements', None)}) do not support "
                "yet; see normopt.distributed for what does, or use DDP with "
                "process_group="
            )
        # replicated DTensors whose direction needs whole matrices: stacks, as on one process
        whole = [p for p, lay in zip(params, layouts) if lay.dim is None and not local]
        blocks = self._plan_local(group, whole) if whole else []
        by_key: dict[Any, list[int]] = {}
        for i, (p, lay) in enumerate(zip(params, layouts)):
            if lay.dim is None and not local:
                continue
            key: tuple[Any, ...] = (
                _state_dtype(p),
                distributed.local(p).device,
                None if local else id(lay.group),
            )
            if not group["foreach"]:
                key = (*key, i)  # the reference: every parameter a block of its own
            by_key.setdefault(key, []).append(i)
        for key, idx in by_key.items():
            ps = [params[i] for i in idx]
            block = self._block(group, ps, None)
            if key[2] is not None:
                lays = [layouts[i] for i in idx]
                shapes = [tuple(p.shape) for p in ps]
                costs = [distributed.element_cost(self._element_shape(p, group)) for p in ps]
                load = self._owner_load.setdefault(key[2], [0.0] * lays[0].world)
                owners = distributed.assign_owners(costs, load)
                block.exchange = distributed.OwnerExchange(lays, shapes, owners)
            blocks.append(block)
        return blocks

    def _plan_local(self, group: dict[str, Any], params: list[Tensor]) -> list[Block]:
        dtypes = [_state_dtype(p) for p in params]
        # a group stored (d_in, d_out) reads each element from the parameter's transpose
        t = self._transposed(group)
        if not group["foreach"]:  # the reference: every parameter a block of its own
            return [self._block(group, [p], [t]) for p in params]
        if self._entrywise(group):
            by_key: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
            for p, dt in zip(params, dtypes):
                by_key.setdefault((dt, p.device), []).append(p)
            return [self._block(group, ps, None) for ps in by_key.values()]
        shapes = [self._element_shape(p, group) for p in params]
        keys = [(dt, p.device) for p, dt in zip(params, dtypes)]
        # a tall element may enter transposed only where its element is the parameter itself
        # (or, stored transposed, the parameter's transpose)
        merge = [
            ok and (_swapped(tuple(p.shape)) if t else tuple(p.shape)) == s
            for ok, p, s in zip(self._merge_transposed(group, params), params, shapes)
        ]
        # a row is the parameter's transpose when exactly one of the two says so
        return [
            self._block(
                group, [params[i] for i in plan.indices], [f != t for f in plan.flipped], plan.shape
            )
            for plan in kernels.plan_stacks(shapes, keys, merge)
        ]

    def _block(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        flipped: list[bool] | None,
        element: tuple[int, ...] | None = None,
    ) -> Block:
        p0 = params[0]
        # what the moves write: the parameters, or the local shards of DTensors
        targets = [distributed.local(p) for p in params]
        if flipped is None:  # flat
            spans, o = [], 0
            for t in targets:
                spans.append((o, t.numel()))
                o += t.numel()
            return Block(
                params,
                (1, o),
                (False,) * len(params),
                True,
                _state_dtype(p0),
                targets[0].device,
                tuple(spans),
                targets,
            )
        shape = element if element is not None else self._element_shape(p0, group)
        return Block(
            params,
            (len(params), *shape),
            tuple(flipped),
            False,
            _state_dtype(p0),
            targets[0].device,
            (),
            targets,
        )

    def _blocks_for(self, gi: int, group: dict[str, Any], params: list[Tensor]) -> list[Block]:
        """The blocks of group ``gi`` for the parameters that have gradients this step, built on
        the first step (and again when that set of parameters changes)."""
        cached = self._blocks.get(gi)
        if (
            cached is not None
            and len(cached[0]) == len(params)
            and all(a is b for a, b in zip(cached[0], params))
        ):
            return cached[1]
        blocks = self._plan_blocks(group, params)
        self._blocks[gi] = (tuple(params), blocks)
        return blocks

    def _held(self, block: Block, key: str) -> Tensor | None:
        """The block tensor of state ``key`` if every parameter's state still holds its row."""
        buf, views = block.buffers.get(key), block.views.get(key)
        if buf is None or views is None:
            return None
        if all(self.state[p].get(key) is v for p, v in zip(block.params, views)):
            return buf
        return None

    def _state(self, block: Block, key: str, element: tuple[int, ...] | None = None) -> Tensor:
        """The block tensor of state ``key``, each row of which is ``state[p][key]``. Built on
        first use from what the parameters' state holds (zeros where it holds nothing); rebuilt
        when a parameter's state no longer holds the row (a state dict was loaded).

        ``element``: a per-row shape other than the parameter's (NorMuon's per-neuron second
        moment, ``(rows, 1)``): the block tensor is ``(B, *element)`` and ``state[p][key]`` is
        its row ``j`` in that shape (a stacked block only, none of it transposed)."""
        buf = self._held(block, key)
        if buf is not None:
            return buf
        if element is None:
            buf = torch.zeros(block.shape, dtype=block.dtype, device=block.device)
            views = block.rows(buf)
        else:
            if block.flat or any(block.flipped):
                raise ValueError(f"state {key!r}: a per-row shape needs a plain stacked block")
            buf = torch.zeros((len(block.params), *element), dtype=block.dtype, device=block.device)
            views = list(buf.unbind(0))
            for p in block.params:  # a loaded state dict of another layout: say so
                old = self.state[p].get(key)
                if isinstance(old, Tensor) and tuple(old.shape) != tuple(element):
                    raise ValueError(
                        f"state {key!r}: shape {tuple(old.shape)}, expected {tuple(element)} "
                        f"for {self._param_name(self._group_of(p), p)}"
                    )
        have = [
            (v, self.state[p][key]) for p, v in zip(block.params, views) if key in self.state[p]
        ]
        if have:
            local = distributed.local  # a loaded DTensor state: its shard
            torch._foreach_copy_([v for v, _ in have], [local(o) for _, o in have])
        if block.sharded:  # the state a checkpoint sees: DTensors laid out like the parameters
            views = [distributed.wrap_like(p, v) for p, v in zip(block.params, views)]
        for p, v in zip(block.params, views):
            self.state[p][key] = v
        block.buffers[key], block.views[key] = buf, views
        return buf

    def _group_of(self, p: Tensor) -> dict[str, Any]:
        return next(g for g in self.param_groups if any(q is p for q in g["params"]))

    def _counter(self, block: Block, key: str = "step") -> Tensor:
        """A per-parameter step counter ``(B,)`` (float32, like torch's ``state["step"]``) whose
        entries are ``state[p][key]``."""
        buf = self._held(block, key)
        if buf is not None:
            return buf
        buf = torch.zeros(len(block.params), dtype=torch.float32, device=block.device)
        views = list(buf.unbind(0))
        have = [
            (v, self.state[p][key]) for p, v in zip(block.params, views) if key in self.state[p]
        ]
        for v, old in have:
            v.copy_(old if isinstance(old, Tensor) else torch.tensor(float(old)))
        for p, v in zip(block.params, views):
            self.state[p][key] = v
        block.buffers[key], block.views[key] = buf, views
        return buf

    # -- the moves (subclasses) ------------------------------------------------------------
    def _accumulate(
        self, group: dict[str, Any], block: Block, G: Tensor, mask: Mask | None
    ) -> Tensor:
        raise NotImplementedError

    def _direct(self, stack: Tensor, group: dict[str, Any]) -> Tensor:
        return stack

    def _apply(self, group: dict[str, Any], block: Block, D: Tensor, mask: Mask | None) -> None:
        raise NotImplementedError

    def _combine(self, plan: list[Plan]) -> None:
        """Hook for optimizers that couple groups (``_global_combine = True``): may rescale
        the directions of ``plan`` (one ``(group, block, buffer, direction)`` per block) in
        place before any is applied."""

    def _run_groups(
        self,
        work: list[tuple[int, dict[str, Any], list[Tensor]]],
        masks: dict[Any, Mask],
        plan: list[Plan] | None,
    ) -> None:
        """Every group's step (``(index, group, parameters with gradients)``); a subclass may
        batch groups of one algorithm together (Muon's AdamW groups)."""
        for gi, group, params in work:
            self._run_group(gi, group, params, masks, plan)

    def _run_group(
        self,
        gi: int,
        group: dict[str, Any],
        params: list[Tensor],
        masks: dict[Any, Mask],
        plan: list[Plan] | None,
    ) -> None:
        """One group's step: per block, gradients in, accumulate, direct, apply. A subclass
        whose algorithm needs no blocks overrides this or :meth:`_run_groups`."""
        for block in self._blocks_for(gi, group, params):
            mask = masks.get(block.device)
            G = block.grad
            torch._foreach_copy_(block.grad_views, block.grads())
            if mask is not None:
                G.masked_fill_(mask.bad, 0.0)  # a skipped step moves nothing (see moves.Mask)
            M = self._accumulate(group, block, G, mask)
            D = self._direct(M, group) if block.exchange is None else self._shared(group, block, M)
            if plan is not None:
                plan.append((group, block, M, D))
            else:
                self._apply(group, block, D, mask)

    def _shared(self, group: dict[str, Any], block: Block, M: Tensor) -> Tensor:
        """The direction of a block whose direction is computed across ranks (see
        :mod:`normopt.distributed`)."""
        ex = block.exchange
        if isinstance(ex, distributed.ReplicatedExchange):
            return ex.direct(M, lambda stack: self._direct(stack, group))
        transposed = self._transposed(group)
        params = block.params

        def whole(mats: list[Tensor]) -> list[Tensor]:
            # mats: the whole buffers this rank owns (global shapes), in ex.mine's order; each
            # read as its element (split_view), stacked by element shape, directed
            by_shape: dict[tuple[int, ...], list[int]] = {}
            elements = []
            for k, (j, P) in enumerate(zip(ex.mine, mats)):
                shape = self._element_shape(params[j], group)
                elements.append((P.mT if transposed else P).reshape(shape))
                by_shape.setdefault(shape, []).append(k)
            out: list[Tensor] = [M] * len(mats)
            for ks in by_shape.values():
                D = self._direct(torch.stack([elements[k] for k in ks]), group)
                for k, d in zip(ks, D.unbind(0)):
                    P = mats[k]
                    out[k] = d.reshape(P.mT.shape).mT if transposed else d.reshape(P.shape)
            return out

        shards = ex.direct(block.rows(M), whole)
        D = torch.empty_like(M)
        torch._foreach_copy_(block.rows(D), shards)
        return D

    def _decoupled_step(
        self,
        block: Block,
        D: Tensor,
        lr: Any,
        weight_decay: float,
        scale: float | Tensor,
        mask: Mask | None,
        protected: tuple[Tensor, ...] = (),
    ) -> None:
        """``W <- (1 - lr wd) W - lr scale D`` for every parameter of ``block`` (``scale`` a
        float or a per-row tensor; ``lr`` a float or a tensor). ``D`` is scaled in place unless
        it is one of ``protected`` (buffers that must not change)."""
        params = block.targets
        lr = lr_on(lr, block.device, block.dtype)
        if weight_decay != 0:
            decay = 1.0 - lr * weight_decay
            if mask is not None:
                decay = mask.decay(decay, block.dtype)
            torch._foreach_mul_(params, decay)
        if mask is None and not isinstance(lr, Tensor) and not isinstance(scale, Tensor):
            self._add_rows(block, D, alpha=-lr * scale)
            return
        coef: Any = -lr if isinstance(lr, Tensor) else -float(lr)
        if mask is not None:
            coef = mask.scaled(coef, block.dtype)
        if isinstance(scale, Tensor) or scale != 1.0:
            coef = coef * scale
        if any(D is t for t in protected):
            D = D * coef
        else:
            D.mul_(coef)
        self._add_rows(block, D)

    def _add_rows(self, block: Block, D: Tensor, alpha: float = 1.0) -> None:
        """``p += alpha * row`` for every parameter and its row of ``D`` (the block's shape).
        Rows of a plain stack are ``D.unbind(0)``; otherwise ``D`` is copied into the block's
        gradient copy, free by now, whose per-parameter views were made when it was built."""
        if block.plain and D.shape == block.shape:
            rows: list[Tensor] = list(D.unbind(0))
        else:
            if D is not block.grad:
                block.grad.copy_(D)
            rows = block.grad_views
        if alpha == 1.0:
            torch._foreach_add_(block.targets, rows)
        else:
            torch._foreach_add_(block.targets, rows, alpha=alpha)

    # -- the step ---------------------------------------------------------------------------
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
        """One step on the current gradients. Returns False when the host-side policy skipped
        or undid it (``"raise"`` and float16 paths); the device-side ``"skip"`` path cannot
        know and returns True. ``extra`` as in :meth:`_precheck`."""
        extra = list(extra)
        entries = self._entries(extra)
        host = any(g.get("nonfinite", "skip") == "raise" for g in self.param_groups) or any(
            p.dtype == torch.float16 for _, p, _ in entries
        )
        saved = None
        masks: dict[Any, Mask] = {}
        if host:
            mode = self._precheck(extra)
            if mode == "skip":
                self._count_skipped(True, entries[0][1].device)
                return False
            saved = self._snapshot() if mode == "guard" else None
        else:
            masks = self._masks(entries)
        self._last_masks = masks
        plan: list[Plan] | None = [] if self._global_combine else None
        work = []
        for gi, group in enumerate(self.param_groups):
            # an empty tensor has nothing to update (and norms cannot reduce over it)
            params = [p for p in group["params"] if p.grad is not None and p.numel() > 0]
            if params:
                work.append((gi, group, params))
        self._run_groups(work, masks, plan)
        if plan:
            self._combine(plan)
            for group, block, _, D in plan:
                self._apply(group, block, D, masks.get(block.device))
        return True if saved is None else self._commit(saved)

    # -- state dicts ------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict saved by :meth:`state_dict` of the same optimizer class, on
        parameters of the same layout; anything else is a ``ValueError``, never a silent
        mismatch. The class is read from the groups' ``normopt_optimizer`` key (kept by
        ``torch.distributed.checkpoint``), or from the top-level key of older normopt state
        dicts. State keeps the dtype a step would give it (float32 for bf16/fp16
        parameters: torch's loader would cast it to the parameter's dtype) and is copied,
        not shared with ``state_dict``."""
        if not isinstance(state_dict, dict) or "param_groups" not in state_dict:
            raise ValueError("state_dict: expected an optimizer state dict (with 'param_groups')")
        groups = [dict(g) for g in state_dict["param_groups"]]
        kinds = {g.get("normopt_optimizer") for g in groups} | (
            {state_dict["normopt_optimizer"]} if "normopt_optimizer" in state_dict else set()
        )
        kinds.discard(None)
        if not kinds:
            raise ValueError(
                f"state_dict: not saved by a normopt optimizer (no 'normopt_optimizer' key in "
                f"its param groups); cannot be loaded into {type(self).__name__}"
            )
        if kinds != {type(self).__name__}:
            raise ValueError(
                f"state_dict: saved by {', '.join(sorted(map(str, kinds)))}, cannot be loaded "
                f"into {type(self).__name__}"
            )
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict: has {len(groups)} param groups, this optimizer has "
                f"{len(self.param_groups)}"
            )
        saved_state = {k: dict(v) for k, v in state_dict.get("state", {}).items()}
        groups = self._upgrade(groups, saved_state)
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
        sd = {"state": saved_state, "param_groups": [{**self.defaults, **g} for g in groups]}
        # a key missing from a saved group (added in a later version) takes its default
        super().load_state_dict(sd)
        self._blocks = {}  # state tensors are new: blocks are rebuilt from them on the next step
        # torch casts floating state to the parameter's dtype (and may share the tensors
        # with state_dict): put back the saved values, copied, in the dtype a step uses.
        for pid, st in saved_state.items():
            p = index.get(pid)
            if p is None:
                continue
            mine = self.state[p]
            for key, value in st.items():
                if isinstance(value, Tensor):
                    if key == "step":
                        mine[key] = value.to(device=p.device, dtype=torch.float32, copy=True)
                        continue
                    dtype = self._state_value_dtype(key, p) if value.is_floating_point() else None
                    mine[key] = value.to(device=p.device, dtype=dtype, copy=True)

    def _upgrade(
        self, groups: list[dict[str, Any]], state: dict[Any, dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Bring the groups (and state) of a state dict saved by an older normopt up to date."""
        for g in groups:
            g["normopt_optimizer"] = type(self).__name__
            g.setdefault("foreach", True)
        return groups

    def _state_value_dtype(self, key: str, p: Tensor) -> torch.dtype:
        """The dtype of a floating state tensor ``key`` of ``p`` (see :func:`_state_dtype`)."""
        return _state_dtype(p)

    def _per_param_keys(self) -> tuple[str, ...]:
        """State keys holding one value per parameter entry (checked on load)."""
        return ("momentum_buffer", "exp_avg", "exp_avg_sq", "prev_param")


def lr_on(lr: Any, device: torch.device, dtype: torch.dtype | None = None) -> Any:
    """A learning rate as the moves use it: a float as is; a tensor (0-d or one element, on
    any device) as a 0-d tensor on ``device`` in at least ``dtype`` (the block's state dtype).
    ``_foreach_mul_`` takes only 0-d tensor scalars (a ``(1,)``-shaped lr, as some schedulers
    store it, would raise), and ``1 - lr wd`` of a float32 lr would round the decay of float64
    weights to float32. A host-to-device copy at most, never a read."""
    if not isinstance(lr, Tensor):
        return lr
    if lr.ndim:
        lr = lr.reshape(())
    if dtype is not None and torch.promote_types(lr.dtype, dtype) != lr.dtype:
        lr = lr.to(dtype)
    return lr if lr.device == device else lr.to(device)


def _param_list(params: Any) -> list[Any]:
    """``params`` as a list, with torch's rules made explicit: a bare tensor or a non-iterable
    is a ``TypeError`` naming ``params``; an empty list a ``ValueError``; named and unnamed
    parameters may not be mixed (torch's own error)."""
    if isinstance(params, Tensor):
        raise TypeError(
            "params: expected an iterable of tensors, param groups or (name, tensor) pairs, "
            "got a single tensor"
        )
    if isinstance(params, str | bytes | dict) or not isinstance(params, Iterable):
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
    check_param_items("params", params)
    return params


def check_param_items(name: str, items: list[Any]) -> None:
    """Every item a tensor, or every item a ``(name, tensor)`` pair, or every item a group;
    mixing named and unnamed parameters is refused as torch refuses it."""
    if all(isinstance(x, dict) for x in items):
        for g in items:
            if "params" in g:
                inner = g["params"]
                if isinstance(inner, Tensor):
                    continue
                check_param_items(name, list(inner))
        return
    named = [isinstance(x, tuple) for x in items]
    if any(named) and not all(named):
        raise ValueError(
            "all optimizer params should be with/without names. Some param names are missing"
        )
    for x in items:
        t = x[1] if isinstance(x, tuple) and len(x) == 2 else x
        if isinstance(x, tuple) and len(x) != 2:
            raise TypeError(
                f"{name}: expected (name, tensor) pairs, got a tuple of length {len(x)}"
            )
        if not isinstance(t, Tensor):
            raise TypeError(
                f"{name}: expected tensors, param groups or (name, tensor) pairs, got "
                f"{type(t).__name__}"
            )
