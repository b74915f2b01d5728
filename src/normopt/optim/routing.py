"""Parameter routing: which tensor of a model gets which optimizer and which norm.

:func:`classify` gives every parameter of an ``nn.Module`` a *role*:

=================  ======================================================
role               what
=================  ======================================================
``hidden``         a 2-D weight of an inner ``nn.Linear`` (or any 2-D tensor
                   not recognised as something else)
``qkv``            a fused attention input projection (``nn.MultiheadAttention``'s
                   ``in_proj_weight``, or a name matched by ``split_rules``)
``conv``           a conv kernel (ndim >= 3 in an ``nn.ConvNd``)
``experts``        a 3-D stack of expert matrices (a 3-D parameter outside convs)
``embedding``      an ``nn.Embedding`` weight (also when a head is tied to it)
``head``           the output layer: the last ``nn.Linear`` of the model, or a
                   module named ``lm_head``/``head``/``classifier``/``fc_out``/``output``
``gain``           the weight of a norm layer (LayerNorm, RMSNorm, BatchNorm, GroupNorm)
``bias``           any bias, and any other 1-D or 0-D tensor
=================  ======================================================

:func:`param_groups` turns roles into optimizer param groups under a
*preset*: ``"muon"`` (matrices to Muon, the rest to AdamW: K. Jordan's rule)
or ``"modular"`` (a norm per role following modular duality, SPEC A2:
Linear -> RMS->RMS, Embedding -> l1->RMS, conv -> the per-slice rule, head ->
RMS->l-inf, vectors -> sign). :func:`describe` prints the table.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from normopt.norms import (
    ColumnRMS,
    ConvSpectral,
    LInf,
    Norm,
    RMSToRMS,
    RowRMS,
    Transposed,
)

__all__ = ["Route", "classify", "param_groups", "describe", "ROLES", "PRESETS"]

ROLES = ("hidden", "qkv", "conv", "experts", "embedding", "head", "gain", "bias")
PRESETS = ("muon", "modular")

_NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)
if hasattr(nn, "RMSNorm"):
    _NORM_LAYERS = (*_NORM_LAYERS, nn.RMSNorm)

_HEAD_NAMES = re.compile(r"(^|\.)(lm_head|head|classifier|fc_out|output|out_head)$")


@dataclass
class Route:
    """The routing decision for one parameter."""

    name: str
    shape: tuple[int, ...]
    role: str
    optimizer: str = ""  # "muon", "adamw" or "steepest"
    norm: Norm | None = None
    lr_scale: float = 1.0
    tied: list[str] = field(default_factory=list)
    split: int = 1
    batch_dims: int = 0


def _head_module(model: nn.Module, head: str | None) -> str | None:
    if head is not None:
        return head
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    named = [n for n in linears if _HEAD_NAMES.search(n)]
    if named:
        return named[-1]
    return linears[-1] if len(linears) > 1 else None


def classify(
    model: nn.Module,
    head: str | None = None,
    split_rules: dict[str, int] | None = None,
    overrides: dict[str, str] | None = None,
) -> list[Route]:
    """Give every trainable parameter of ``model`` a role (see the module docstring).

    Args:
        model: any ``nn.Module``.
        head: the module name of the output layer, when the default guess (a
            module named like a head, else the last ``nn.Linear``) is wrong.
        split_rules: regular expression on parameter names -> number of
            matrices fused along dim 0 (e.g. ``{r"\\.qkv\\.weight$": 3}``).
        overrides: regular expression on parameter names -> role, applied last.

    Parameters shared between modules (a head tied to the embedding) appear
    once, under their first name, with the other names in ``Route.tied``;
    frozen parameters (``requires_grad=False``) are left out.
    """
    split_rules = dict(split_rules or {})
    overrides = dict(overrides or {})
    for role in overrides.values():
        if role not in ROLES:
            raise ValueError(f"overrides: unknown role {role!r}; expected one of {list(ROLES)}")
    head_name = _head_module(model, head)
    if head is not None and head not in dict(model.named_modules()):
        raise ValueError(f"head: no module named {head!r} in the model")

    owner: dict[int, tuple[str, nn.Module, str]] = {}  # id(param) -> (module name, module, attr)
    aliases: dict[int, list[str]] = {}
    for mod_name, mod in model.named_modules():
        for attr, p in mod.named_parameters(recurse=False):
            if p is None:
                continue
            full = f"{mod_name}.{attr}" if mod_name else attr
            if id(p) in owner:
                aliases[id(p)].append(full)
                continue
            owner[id(p)] = (mod_name, mod, attr)
            aliases[id(p)] = []

    routes: list[Route] = []
    for full, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mod_name, mod, attr = owner[id(p)]
        tied_names = aliases[id(p)]
        role = _role(p, mod, mod_name, attr, head_name, tied_names, model)
        route = Route(name=full, shape=tuple(p.shape), role=role, tied=list(tied_names))
        if role == "qkv" and isinstance(mod, nn.MultiheadAttention):
            route.split = 3
        for pattern, k in split_rules.items():
            if re.search(pattern, full):
                if p.ndim < 2 or p.shape[0] % k:
                    raise ValueError(
                        f"split_rules: {pattern!r} splits {full} (shape {tuple(p.shape)}) into {k}, "
                        "which does not divide its first dim"
                    )
                route.role, route.split = "qkv", k
        for pattern, forced in overrides.items():
            if re.search(pattern, full):
                route.role = forced
        if route.role == "experts":
            route.batch_dims = 1
        routes.append(route)
    return routes


def _role(
    p: Tensor,
    mod: nn.Module,
    mod_name: str,
    attr: str,
    head_name: str | None,
    tied: list[str],
    model: nn.Module,
) -> str:
    if p.ndim <= 1:
        return "gain" if isinstance(mod, _NORM_LAYERS) and attr == "weight" else "bias"
    if isinstance(mod, nn.Embedding | nn.EmbeddingBag):
        return "embedding"
    if isinstance(mod, nn.MultiheadAttention) and attr == "in_proj_weight":
        return "qkv"
    if isinstance(mod, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(mod, nn.Linear):
        tied_to_head = any(n.rsplit(".", 1)[0] == head_name for n in tied)
        if mod_name == head_name or tied_to_head:
            return "head"
        return "hidden"
    if p.ndim == 3:
        return "experts"
    return "hidden" if p.ndim == 2 else "conv"


def _modular_norm(route: Route) -> Norm:
    if route.role in ("hidden", "qkv", "experts"):
        return RMSToRMS()
    if route.role == "embedding":
        return Transposed(ColumnRMS())  # nn.Embedding stores (vocab, dim): one row per token
    if route.role == "head":
        return RowRMS()
    if route.role == "conv":
        return ConvSpectral() if len(route.shape) == 4 else RMSToRMS()
    return LInf()


def _assign(routes: list[Route], preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"preset: unknown preset {preset!r}; expected one of {list(PRESETS)}")
    for r in routes:
        if preset == "muon":
            r.optimizer = "muon" if r.role in ("hidden", "qkv", "conv", "experts") else "adamw"
            if r.optimizer == "muon":
                rest = r.shape[r.batch_dims :]
                d_out, d_in = rest[0] // r.split, math.prod(rest[1:])
                r.lr_scale = math.sqrt(max(1.0, d_out / d_in))
        else:
            r.optimizer = "steepest"
            r.norm = _modular_norm(r)


def param_groups(
    model: nn.Module,
    preset: str = "muon",
    head: str | None = None,
    split_rules: dict[str, int] | None = None,
    overrides: dict[str, str] | None = None,
    **group_options: Any,
) -> list[dict[str, Any]]:
    """Param groups for a model: one group per (optimizer, role, norm, split, batch dims).

    Each group holds ``(name, tensor)`` pairs (so messages can name tensors) and
    the keys the optimizers read: ``use_muon`` (preset ``"muon"``), ``norm``
    (preset ``"modular"``), ``split``, ``batch_dims`` and ``role``.
    ``group_options`` are copied into every group.

    Example:
        >>> import torch, normopt
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
        >>> [g["role"] for g in normopt.param_groups(model)]
        ['hidden', 'bias', 'head']
    """
    routes = classify(model, head=head, split_rules=split_rules, overrides=overrides)
    _assign(routes, preset)
    params = dict(model.named_parameters())
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in routes:
        key = (r.optimizer, r.role, repr(r.norm), r.split, r.batch_dims)
        g = groups.get(key)
        if g is None:
            g = groups[key] = {"params": [], "role": r.role, **group_options}
            if preset == "muon":
                g["use_muon"] = r.optimizer == "muon"
                if r.split > 1:
                    g["split"] = r.split
                if r.batch_dims:
                    g["batch_dims"] = r.batch_dims
            else:
                g["norm"] = r.norm
                if r.batch_dims:
                    g["batch_dims"] = r.batch_dims
        g["params"].append((r.name, params[r.name]))
    return list(groups.values())


def describe(
    model: nn.Module,
    preset: str = "muon",
    head: str | None = None,
    split_rules: dict[str, int] | None = None,
    overrides: dict[str, str] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> str:
    """A table of every trainable parameter: name, shape, role, optimizer, norm, lr scale.

    With ``optimizer`` (a normopt optimizer built on ``model``), the optimizer and lr-scale
    columns say what that optimizer really does: each group's ``algorithm`` and the factor
    its step multiplies ``lr`` by (``optimizer.lr_scale(p)``: Muon's ``adjust_lr`` rule in
    force), not what the routing preset would choose.

    Example:
        >>> import torch, normopt
        >>> print(normopt.describe(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))))  # doctest: +SKIP
    """
    routes = classify(model, head=head, split_rules=split_rules, overrides=overrides)
    _assign(routes, preset)
    if optimizer is not None:
        _from_optimizer(routes, model, optimizer)
    rows = [("name", "shape", "role", "optimizer", "norm", "lr scale", "notes")]
    for r in routes:
        notes = []
        if r.tied:
            notes.append("tied: " + ", ".join(r.tied))
        if r.split > 1:
            notes.append(f"split into {r.split}")
        if r.batch_dims:
            notes.append(f"batch of {r.shape[0]}")
        norm = (
            repr(r.norm)
            if r.norm is not None
            else ("spectral (polar)" if r.optimizer == "muon" else "-")
        )
        rows.append(
            (
                r.name,
                "x".join(map(str, r.shape)),
                r.role,
                r.optimizer,
                norm,
                f"{r.lr_scale:.3g}",
                "; ".join(notes),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    counts: dict[str, int] = {}
    for r in routes:
        counts[r.optimizer] = counts.get(r.optimizer, 0) + math.prod(r.shape)
    total = sum(counts.values()) or 1
    summary = ", ".join(
        f"{k}: {v:,} params ({100 * v / total:.1f}%)" for k, v in sorted(counts.items())
    )
    lines.append(f"\n{len(routes)} tensors; {summary}")
    return "\n".join(lines)


def _from_optimizer(
    routes: list[Route], model: nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    """Overwrite each route's optimizer and lr scale with what ``optimizer`` does to it."""
    params = dict(model.named_parameters())
    owner = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    lr_scale = getattr(optimizer, "lr_scale", None)
    for r in routes:
        p = params[r.name]
        group = owner.get(id(p))
        if group is None:
            r.optimizer, r.lr_scale = "(not in the optimizer)", 0.0
            continue
        r.optimizer = str(group.get("algorithm", type(optimizer).__name__))
        r.lr_scale = float(lr_scale(p)) if callable(lr_scale) else 1.0
