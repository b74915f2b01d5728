"""Muon (K. Jordan), its shape-scaling rules and its newer variants, with AdamW beside it.

One ``Muon`` object optimizes a whole model. Each param group runs one
algorithm (its ``algorithm`` key): ``"muon"`` (orthogonalized momentum),
``"adamw"`` (with the group's own ``lr``, ``betas``, ``eps``, ``weight_decay``,
so schedulers reach it) or ``"norm"`` (normalized steepest descent under the
group's ``norm``). Given an ``nn.Module`` it routes every tensor itself
(:func:`normopt.param_groups`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from normopt import kernels
from normopt._checks import (
    check_betas,
    check_bool,
    check_dtype_name,
    check_int,
    check_number,
    check_polar_method,
)
from normopt.linalg import SCHEDULES
from normopt.norms import Frobenius, KyFanDual
from normopt.optim import moves
from normopt.optim.adamw import adamw_step
from normopt.optim.base import Block, NormOptimizer, split_view
from normopt.optim.moves import Mask

__all__ = ["Muon", "ADJUST_LR", "ALGORITHMS", "adjust_lr_factor"]


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
ALGORITHMS = ("muon", "adamw", "norm")
# What an "adamw" group takes from the constructor's adamw_* arguments when it does not say.
_ADAMW_KEYS = {
    "lr": "adamw_lr",
    "betas": "adamw_betas",
    "eps": "adamw_eps",
    "weight_decay": "adamw_weight_decay",
}


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
    ``batch_dims`` (leading dims that are a batch: 3-D expert stacks),
    ``split`` (a fused QKV weight split into ``split`` matrices along its output dim),
    ``transposed=True`` (tensors stored ``(*batch, d_in, d_out)``, as Hugging Face's
    ``Conv1D`` and GPT-OSS's experts: the polar factor is the same, the shape scale
    uses the true ``d_out`` and ``d_in``), and ``num_heads`` (per-head
    orthogonalization of attention projections: the rows of each matrix, after
    ``split``, are ``num_heads`` blocks of ``rows / num_heads`` rows, the heads of a
    q, k or v projection, each orthogonalized and shape-scaled as a matrix of its
    own; the per-block updates of dion's ``split_sizes`` and of torchtitan's per-head
    Muon, here with equal blocks). An output projection, whose heads are blocks of
    columns, is not covered by ``num_heads``.
    Matrices of one group with equal shapes are orthogonalized together as one
    batched stack, and their momentum is kept as one stacked tensor.

    **One algorithm per param group** (key ``algorithm``; KellerJordan's ``use_muon``
    is accepted too):

    - ``"muon"``: the update above;
    - ``"adamw"``: AdamW with the group's own ``lr``, ``betas``, ``eps`` and
      ``weight_decay`` (defaults from the ``adamw_*`` arguments), torch's fused
      kernel where the device has one (bit for bit ``torch.optim.AdamW(fused=True)``);
      embeddings, the output head, gains and biases get it. Routed from a model, gains
      and biases get ``weight_decay=0`` (:func:`normopt.param_groups`' ``no_decay``;
      ``normopt.Muon(normopt.param_groups(model, no_decay=()))`` decays them too). Every scheduler and
      framework that edits ``group["lr"]`` reaches these groups;
    - ``"norm"``: normalized steepest descent with Muon's momentum under the group's
      ``norm`` (``W <- (1 - lr wd) W - lr dualize(M)``).

    A ``"muon"`` group with a ``norm`` uses that norm's dualize in place of the polar
    factor. A group given without ``algorithm`` (also through :meth:`add_param_group`
    on a model-built Muon) gets ``"muon"`` if every tensor has ``ndim >= 2``,
    ``"adamw"`` if none has, and a mix is split into one group of each.

    Args:
        params_or_model: an ``nn.Module`` (routed by :func:`normopt.param_groups`),
            or params / param groups (keys ``algorithm``, ``norm``, ``batch_dims``,
            ``split``, ``transposed`` and any hyperparameter below).
        lr: Muon's learning rate (0.02); a float or a tensor.
        momentum: ``beta`` (0.95).
        nesterov: Nesterov momentum (True).
        weight_decay: decoupled, ``W <- (1 - lr wd) W`` (0).
        polar: polar method name (``"newton_schulz"``; see :func:`normopt.linalg.polar`).
        ns_steps: iterations of the polar method (5).
        ns_coefficients: a schedule of :data:`normopt.linalg.SCHEDULES` by name for the
            quintic methods (default ``None``: the method's own; e.g. ``"deepseek_v4"`` with
            ``ns_steps=10``, ``"turbo_muon"`` with 4, ``"cans_cubic"`` with 10).
        polar_dtype: dtype name of the iteration (``"bfloat16"``, ``"float32"``, ...);
            default ``None``: bf16 on CUDA, float32 on the CPU (as :func:`normopt.linalg.polar`).
        adjust_lr: shape scale rule: ``"original"`` (Jordan,
            ``sqrt(max(1, d_out/d_in))``), ``"match_rms_adamw"`` (Moonlight,
            ``0.2 sqrt(max(d_out, d_in))``), ``"rms_to_rms"`` (``sqrt(d_out/d_in)``)
            or ``"none"``.
        variant: ``None`` (Muon), ``"fanion"`` (step along ``sum_{i<=k} u_i v_i^T``,
            exact SVD; Fanion-1 is rank one), ``"f_muon"`` (``a U V^T + (1-a) M/||M||_F``)
            or ``"s_muon"`` (``a U V^T + (1-a) sign(M)``); arXiv 2512.09678.
        variant_k: ``k`` of Fanion-k (1).
        variant_a: ``a`` of F-/S-Muon (0.5; the paper's default was not verified here).
        num_heads: per-head orthogonalization (1: whole matrices); usually set per group,
            e.g. ``{"params": [q.weight, k.weight, v.weight], "num_heads": 8}``, or with
            ``split=3`` for a fused QKV weight.
        adamw_lr: the default ``lr`` of the ``"adamw"`` groups (3e-3, from sweeps of 3e-4
            ... 1e-2: the best on the harness's character GPT, 0.02 to 0.04 nats behind 1e-2
            on an MLP and a 200-step HF GPT-2, where 3e-4 was 0.08 to 0.55 nats behind;
            BENCHMARKS.md, "Muon's AdamW part: lr and decay").
        adamw_betas: their default ``betas`` ((0.9, 0.95)).
        adamw_eps: their default ``eps`` (1e-10).
        adamw_weight_decay: their default ``weight_decay`` (0).
        nonfinite: ``"skip"`` or ``"raise"`` (see :class:`NormOptimizer`).
        foreach: stacks and foreach lists (True) or the per-parameter reference (False).
        process_group: for replicated parameters (DDP), e.g.
            ``torch.distributed.group.WORLD``: each matrix is orthogonalized on one owner
            rank and the results are all-gathered. ``None`` (default): every rank computes
            everything. FSDP2 (DTensor) parameters need none.

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
        lr: float | Tensor = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        polar: str = "newton_schulz",
        ns_steps: int | None = 5,
        ns_coefficients: str | None = None,
        polar_dtype: str | None = None,
        adjust_lr: str | None = "original",
        variant: str | None = None,
        variant_k: int = 1,
        variant_a: float = 0.5,
        num_heads: int = 1,
        adamw_lr: float | Tensor = 3e-3,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-10,
        adamw_weight_decay: float = 0.0,
        nonfinite: str = "skip",
        foreach: bool = True,
        process_group: Any = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            polar=polar,
            ns_steps=ns_steps,
            ns_coefficients=ns_coefficients,
            polar_dtype=polar_dtype,
            adjust_lr=adjust_lr,
            variant=variant,
            variant_k=variant_k,
            variant_a=variant_a,
            num_heads=num_heads,
            adamw_lr=adamw_lr,
            adamw_betas=tuple(adamw_betas)
            if isinstance(adamw_betas, tuple | list)
            else adamw_betas,
            adamw_eps=adamw_eps,
            adamw_weight_decay=adamw_weight_decay,
            nonfinite=nonfinite,
            foreach=foreach,
        )
        # hyperparameters of a subclass's extra move (NorMuon's beta2, ...), set before this
        # call so that the groups added below are checked with them
        defaults.update(getattr(self, "_family_defaults", {}))
        # the adamw_* arguments are defaults of groups that may not exist yet: check them now
        check_number("adamw_lr", adamw_lr)
        check_betas("adamw_betas", adamw_betas)
        check_number("adamw_eps", adamw_eps, 0.0, math.inf, low_open=True)
        check_number("adamw_weight_decay", adamw_weight_decay)
        super().__init__(_muon_groups(params_or_model), defaults, process_group)

    def _grad_bound(self, group: dict[str, Any], dtype: torch.dtype, n: int) -> float:
        if group["algorithm"] == "adamw":  # g^2 must stay finite
            return math.sqrt(torch.finfo(dtype).max / (64 * n))
        return super()._grad_bound(group, dtype, n)

    # -- groups ------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; see the class docstring for the algorithm a group without one gets.
        On an optimizer built from a model (named parameters), plain tensors get names
        ``"group{i}.{j}"``."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group: expected a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        items = (
            [params] if isinstance(params, Tensor) else list(params if params is not None else [])
        )
        if self.param_groups and items:
            named = "param_names" in self.param_groups[0]
            if named and not any(isinstance(x, tuple) for x in items):
                items = [(f"group{len(self.param_groups)}.{j}", t) for j, t in enumerate(items)]
        group["params"] = items
        algo = group.get("algorithm")
        if algo is None and "use_muon" not in group:
            tensors = [x[1] if isinstance(x, tuple) else x for x in items]
            mats = [isinstance(t, Tensor) and t.ndim >= 2 for t in tensors]
            if any(mats) and not all(mats):  # split: one group of each
                self.add_param_group(
                    {**group, "params": [x for x, m in zip(items, mats) if m], "algorithm": "muon"}
                )
                self.add_param_group(
                    {
                        **group,
                        "params": [x for x, m in zip(items, mats) if not m],
                        "algorithm": "adamw",
                    }
                )
                return
            algo = "muon" if all(mats) else "adamw"
        elif algo is None:
            use = check_bool("use_muon", group["use_muon"])
            algo = "muon" if use else ("norm" if group.get("norm") is not None else "adamw")
        if algo not in ALGORITHMS:
            raise ValueError(f"algorithm: expected one of {list(ALGORITHMS)}, got {algo!r}")
        if "use_muon" in group and group["use_muon"] != (algo == "muon"):
            raise ValueError(f"use_muon: {group['use_muon']!r} contradicts algorithm={algo!r}")
        group["algorithm"] = algo
        group["use_muon"] = algo == "muon"
        if algo == "adamw":
            for key, source in _ADAMW_KEYS.items():
                group.setdefault(key, self.defaults[source])
        super().add_param_group(group)
        # the adamw_* arguments are the "adamw" groups' defaults, not keys of any group
        for key in _ADAMW_KEYS.values():
            self.param_groups[-1].pop(key, None)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # the base fills keys missing from a saved group from ``defaults``, which hold the
        # adamw_* arguments too: those are no group's keys (as in add_param_group)
        for group in self.param_groups:
            for key in _ADAMW_KEYS.values():
                group.pop(key, None)

    def _upgrade(
        self, groups: list[dict[str, Any]], state: dict[Any, dict[str, Any]]
    ) -> list[dict[str, Any]]:
        # normopt <= 0.1: AdamW groups carried an unused lr and read adamw_*; the step count
        # was a Python int.
        for g in groups:
            if "algorithm" not in g:
                use = g.get("use_muon", True)
                g["algorithm"] = (
                    "muon" if use else ("norm" if g.get("norm") is not None else "adamw")
                )
                if g["algorithm"] == "adamw":
                    for key, source in _ADAMW_KEYS.items():
                        if source in g:
                            g[key] = g[source]
            for key in _ADAMW_KEYS.values():
                g.pop(key, None)
            if g["algorithm"] == "adamw":
                for key, source in _ADAMW_KEYS.items():
                    g.setdefault(key, self.defaults[source])
                for pid in g["params"]:
                    st = state.get(pid)
                    if st is not None and "step" in st and not isinstance(st["step"], Tensor):
                        st["step"] = torch.tensor(float(st["step"]), dtype=torch.float32)
        return super()._upgrade(groups, state)

    # -- validation ------------------------------------------------------------------------
    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        algo = group.get("algorithm", "muon")
        if algo not in ALGORITHMS:
            raise ValueError(f"algorithm: expected one of {list(ALGORITHMS)}, got {algo!r}")
        if algo == "adamw":
            check_betas("betas", group["betas"])
            # eps > 0: with eps = 0 a zero gradient gives 0 / 0 and a tiny one (g^2 underflows) Inf
            check_number("eps", group["eps"], 0.0, math.inf, low_open=True)
            check_number("weight_decay", group["weight_decay"])
            return
        check_number("momentum", group["momentum"], 0.0, 1.0, high_open=True)
        check_bool("nesterov", group["nesterov"])
        check_number("weight_decay", group["weight_decay"])
        check_polar_method("polar", group["polar"])
        if group["polar"] == "svd":
            group["ns_steps"] = None
        else:
            check_int("ns_steps", group["ns_steps"], 1)
        coefficients = group.get("ns_coefficients")
        if coefficients is not None:
            # a registry name only: the state dict stays plain data
            if not isinstance(coefficients, str) or coefficients not in SCHEDULES:
                raise ValueError(
                    f"ns_coefficients: expected one of {sorted(SCHEDULES)} or None, got "
                    f"{coefficients!r}"
                )
            if group["polar"] == "svd":
                raise ValueError("ns_coefficients: the 'svd' polar method takes no schedule")
        adjust_lr_factor(group["adjust_lr"], 1, 1)
        check_dtype_name("polar_dtype", group["polar_dtype"])
        if group["variant"] not in VARIANTS:
            raise ValueError(f"variant: expected one of {list(VARIANTS)}, got {group['variant']!r}")
        check_int("variant_k", group["variant_k"], 1)
        check_number("variant_a", group["variant_a"], 0.0, 1.0)
        check_int("num_heads", group.get("num_heads", 1), 1)
        if group.get("num_heads", 1) > 1 and (algo != "muon" or group.get("norm") is not None):
            raise ValueError(
                "num_heads: per-head orthogonalization is for 'muon' groups without a norm"
            )
        for p in group["params"]:
            self._element_shape(p, group)  # raises on a shape the group cannot carry

    # -- the three moves -------------------------------------------------------------------
    def _element_shape(self, p: Tensor, group: dict[str, Any]) -> tuple[int, ...]:
        if group["algorithm"] == "adamw":
            return tuple(p.shape)
        lead, rest = split_view(
            tuple(p.shape), group["batch_dims"], group["split"], group.get("transposed", False)
        )
        if group.get("norm") is not None:
            return lead + self._norm(group).fit(rest)
        if len(rest) < 2:
            raise ValueError(
                f"params: Muon needs matrices (ndim >= 2 after the batch dims), got shape "
                f"{tuple(p.shape)}; route it to AdamW with algorithm='adamw'"
            )
        heads = group.get("num_heads", 1)
        if heads > 1:
            # per-head orthogonalization: the rows of each matrix are num_heads blocks (the
            # heads of a q/k/v projection), each its own element of the stack; the element
            # (..., heads, rows / heads, cols) is a view of the parameter, so the blocks'
            # rows stay views and nothing per tensor is added to the step
            if rest[0] % heads:
                raise ValueError(
                    f"num_heads: {heads} does not divide the {rest[0]} rows of shape "
                    f"{tuple(p.shape)}"
                )
            return (*lead, heads, rest[0] // heads, math.prod(rest[1:]))
        return (*lead, rest[0], math.prod(rest[1:]))

    def _entrywise(self, group: dict[str, Any]) -> bool:
        return group.get("norm") is not None and self._norm(group).entrywise

    def _local_direction(self, group: dict[str, Any]) -> bool:
        return group["algorithm"] == "adamw" or super()._local_direction(group)

    def _run_groups(
        self,
        work: list[tuple[int, dict[str, Any], list[Tensor]]],
        masks: dict[Any, Mask],
        plan: Any,
    ) -> None:
        # AdamW groups go together: one fused call per set of equal hyperparameters
        adamw = [w for w in work if w[1]["algorithm"] == "adamw"]
        if adamw:
            adamw_step(self, adamw, masks)
        super()._run_groups([w for w in work if w[1]["algorithm"] != "adamw"], masks, plan)

    def _accumulate(
        self, group: dict[str, Any], block: Block, G: Tensor, mask: Mask | None
    ) -> Tensor:
        buf = self._state(block, "momentum_buffer")
        return moves.ema_(buf, G, group["momentum"], group["nesterov"], mask)

    def _orthogonalize(self, stack: Tensor, group: dict[str, Any]) -> Tensor:
        # normopt.kernels.polar: the fast path its dispatch picks for the device (CUDA), the
        # reference normopt.linalg.polar elsewhere
        dtype = check_dtype_name("polar_dtype", group["polar_dtype"])
        return kernels.polar(
            stack,
            group["polar"],
            group["ns_steps"],
            coefficients=group.get("ns_coefficients"),
            compute_dtype=dtype,
        )

    def _transposed(self, group: dict[str, Any]) -> bool:
        return group["algorithm"] != "adamw" and super()._transposed(group)

    def _merge_transposed(self, group: dict[str, Any], params: list[Tensor]) -> list[bool]:
        # Merged stacks (normopt.kernels.stacking): the polar factor and its variants commute
        # with transposition, so a tall matrix may join the stack of its transpose (a group
        # with its own norm: where that norm's dualize commutes too). On by default
        # (normopt.kernels.set_merge_transposed).
        if group.get("norm") is not None:
            return super()._merge_transposed(group, params)
        if group["algorithm"] != "muon":
            return [False] * len(params)
        return [kernels.merge_transposed_enabled(p.device) for p in params]

    def _direct(self, stack: Tensor, group: dict[str, Any]) -> Tensor:
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

    def lr_scale(self, p: Tensor) -> float:
        """The factor this optimizer multiplies ``lr`` by for parameter ``p`` (Muon's shape
        scale under the group's ``adjust_lr`` rule; 1 for other algorithms)."""
        for group in self.param_groups:
            if any(q is p for q in group["params"]):
                if group["algorithm"] != "muon" or group.get("norm") is not None:
                    return 1.0
                shape = self._element_shape(p, group)
                return adjust_lr_factor(group["adjust_lr"], shape[-2], shape[-1])
        return super().lr_scale(p)

    def _scale(self, group: dict[str, Any], block: Block) -> float | Tensor:
        """The shape scale of each row of ``block`` (a float when all rows share it)."""
        scale = block.extras.get("scale")
        if scale is None or block.extras.get("scale_rule") != group["adjust_lr"]:
            if group["algorithm"] != "muon" or group.get("norm") is not None:
                scale = 1.0
            else:
                rows = []
                for p in block.params:
                    shape = self._element_shape(p, group)
                    rows.append(adjust_lr_factor(group["adjust_lr"], shape[-2], shape[-1]))
                scale = rows[0]
                if any(r != rows[0] for r in rows):
                    scale = block.per_param(
                        torch.tensor(rows, dtype=block.dtype, device=block.device)
                    )
            block.extras["scale"], block.extras["scale_rule"] = scale, group["adjust_lr"]
        return scale

    def _apply(self, group: dict[str, Any], block: Block, D: Tensor, mask: Mask | None) -> None:
        self._decoupled_step(
            block,
            D,
            group["lr"],
            group["weight_decay"],
            self._scale(group, block),
            mask,
            protected=tuple(block.buffers.values()) + (block.grad,),
        )


def _muon_groups(params_or_model: Any) -> Any:
    """A model is routed; everything else goes to :meth:`Muon.add_param_group`, which splits
    plain tensors by ndim."""
    if isinstance(params_or_model, nn.Module):
        from normopt.optim.routing import param_groups

        return param_groups(params_or_model, preset="muon")
    return params_or_model
