"""The optimizer registry of the harness: name -> factory(model, lr, cfg).

A factory returns one optimizer or a list of them; the training loop steps them all,
so a hybrid (Muon on hidden matrices plus AdamW on the rest) is one entry. Add your own::

    from normopt.experiments.optimizers import register_optimizer, split_params

    @register_optimizer("muon-sgd", lr=0.02, summary="torch Muon + SGD on the rest")
    def _muon_sgd(model, lr, cfg):
        hidden, other = split_params(model, max_ndim=2)
        return [torch.optim.Muon(hidden, lr=lr), torch.optim.SGD(other, lr=0.1)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim import Optimizer


class TrainConfig(Protocol):
    """What a factory reads of the run's :class:`normopt.experiments.config.TrainConfig`.

    A protocol, not an import: config imports this registry to check optimizer names, so
    the registry does not import config.
    """

    @property
    def weight_decay(self) -> float: ...

    @property
    def adamw_lr(self) -> float | None: ...


Factory = Callable[[nn.Module, float, "TrainConfig"], "Optimizer | Sequence[Optimizer]"]

# AdamW's betas everywhere in the harness (also for the AdamW half of hybrids):
# (0.9, 0.95) as in nanoGPT and Jordan's Muon reference.
ADAMW_BETAS = (0.9, 0.95)


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    factory: Factory
    lr: float  # fallback learning rate for tasks without a tuned one
    summary: str


OPTIMIZERS: dict[str, OptimizerSpec] = {}


def register_optimizer(name: str, *, lr: float, summary: str) -> Callable[[Factory], Factory]:
    """Decorator: add ``factory(model, lr, cfg) -> Optimizer | list[Optimizer]`` as ``name``."""

    def deco(factory: Factory) -> Factory:
        OPTIMIZERS[name] = OptimizerSpec(name, factory, lr, summary)
        return factory

    return deco


def check_optimizer(name: str) -> None:
    """ValueError unless ``name`` is registered."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


def build_optimizers(name: str, model: nn.Module, lr: float, cfg: TrainConfig) -> list[Optimizer]:
    check_optimizer(name)
    out = OPTIMIZERS[name].factory(model, lr, cfg)
    return [out] if isinstance(out, Optimizer) else list(out)


# ----------------------------------------------------------------------------- routing


def split_params(
    model: nn.Module, max_ndim: int = 4
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(hidden matrices, everything else) for Muon-style hybrids, by normopt's own routing.

    Hidden matrices: the tensors :func:`normopt.classify` gives a matrix role (hidden,
    qkv, conv, experts) with at most ``max_ndim`` dimensions. Gains, biases, embeddings
    and the output head (a head tied to an embedding is one tensor) go to the other
    optimizer. torch.optim.Muon takes only 2-D tensors: ``max_ndim=2`` sends conv kernels
    to the other optimizer too.
    """
    import normopt

    params = dict(model.named_parameters())
    hidden: list[nn.Parameter] = []
    other: list[nn.Parameter] = []
    for route in normopt.classify(model):
        p = params[route.name]
        is_matrix = route.role in ("hidden", "qkv", "conv", "experts")
        (hidden if is_matrix and p.ndim <= max_ndim else other).append(p)
    return hidden, other


def decay_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """Two param groups: weight decay on matrices, none on gains and biases."""
    params = list(params)
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def _adamw_lr(cfg: TrainConfig) -> float:
    if cfg.adamw_lr is None:
        raise ValueError("adamw_lr is unset: pass the config through config.resolve()")
    return cfg.adamw_lr


# ----------------------------------------------------------------------------- entries


@register_optimizer(
    "adamw", lr=1e-3, summary="torch.optim.AdamW on every tensor, betas (0.9, 0.95)"
)
def _adamw(model: nn.Module, lr: float, cfg: TrainConfig) -> Optimizer:
    return torch.optim.AdamW(
        decay_groups(model.parameters(), cfg.weight_decay), lr=lr, betas=ADAMW_BETAS
    )


@register_optimizer(
    "torch-muon",
    lr=0.02,
    summary="torch.optim.Muon on 2-D hidden matrices + AdamW (adamw_lr) on the rest",
)
def _torch_muon(model: nn.Module, lr: float, cfg: TrainConfig) -> list[Optimizer]:
    hidden, other = split_params(model, max_ndim=2)
    return [
        torch.optim.Muon(hidden, lr=lr, weight_decay=cfg.weight_decay),
        torch.optim.AdamW(
            decay_groups(other, cfg.weight_decay), lr=_adamw_lr(cfg), betas=ADAMW_BETAS
        ),
    ]


@register_optimizer("sgd", lr=0.1, summary="torch.optim.SGD, Nesterov momentum 0.9, every tensor")
def _sgd(model: nn.Module, lr: float, cfg: TrainConfig) -> Optimizer:
    return torch.optim.SGD(
        decay_groups(model.parameters(), cfg.weight_decay), lr=lr, momentum=0.9, nesterov=True
    )


def _normopt_muon(cls_name: str, params: Any, lr: float, cfg: TrainConfig) -> Optimizer:
    """``normopt.<cls_name>(params)`` with the run's weight decay and the AdamW part at adamw_lr."""
    import normopt

    cls = getattr(normopt, cls_name)
    return cls(params, lr=lr, weight_decay=cfg.weight_decay, adamw_lr=_adamw_lr(cfg))


def _routed(cls_name: str) -> Factory:
    def factory(model: nn.Module, lr: float, cfg: TrainConfig) -> Optimizer:
        return _normopt_muon(cls_name, model, lr, cfg)

    return factory


# The Muon family on the whole model: (entry, class, summary).
for _name, _cls, _summary in (
    ("muon", "Muon", "normopt.Muon(model): routes every tensor itself (AdamW part at adamw_lr)"),
    (
        "normuon",
        "NorMuon",
        "normopt.NorMuon(model): Muon + neuron-wise second moment, beta2 0.95 (arXiv 2510.05491)",
    ),
    (
        "adamuon",
        "AdaMuon",
        "normopt.AdaMuon(model): Muon + entrywise second moment, update RMS 0.2 lr "
        "(arXiv 2507.11005)",
    ),
):
    register_optimizer(_name, lr=0.02, summary=_summary)(_routed(_cls))


def _head_count(model: nn.Module) -> int | None:
    """The number of attention heads of a model (modules' ``n_head`` or ``num_heads``), None
    without attention; a model whose layers differ is refused."""
    counts = {
        int(getattr(m, a))
        for m in model.modules()
        for a in ("n_head", "num_heads")
        if hasattr(m, a)
    }
    if len(counts) > 1:
        raise ValueError(f"muon-heads: layers with different head counts {sorted(counts)}")
    return counts.pop() if counts else None


@register_optimizer(
    "muon-heads",
    lr=0.02,
    summary="normopt.Muon with per-head orthogonalization of fused qkv weights (num_heads), "
    "the rest as muon",
)
def _muon_heads(model: nn.Module, lr: float, cfg: TrainConfig) -> Optimizer:
    import normopt

    # a fused ``qkv`` Linear (the harness's GPT) is 3 matrices; nn.MultiheadAttention's
    # in_proj_weight is split by the routing itself
    groups = normopt.param_groups(model, split_rules={r"(^|\.)qkv\.weight$": 3})
    heads = _head_count(model)
    for g in groups:
        if g["role"] == "qkv" and heads is not None:
            g["num_heads"] = heads
    return _normopt_muon("Muon", groups, lr, cfg)


@register_optimizer("lion", lr=1e-4, summary="normopt.Lion on every tensor, betas (0.9, 0.99)")
def _lion(model: nn.Module, lr: float, cfg: TrainConfig) -> Optimizer:
    import normopt

    return normopt.Lion(  # type: ignore[attr-defined]
        decay_groups(model.parameters(), cfg.weight_decay), lr=lr
    )


@register_optimizer(
    "sign",
    lr=1e-3,
    summary="normopt.SteepestDescent under l-inf, normalized: sign of Nesterov momentum 0.9",
)
def _sign(model: nn.Module, lr: float, cfg: TrainConfig) -> Optimizer:
    import normopt

    return normopt.SteepestDescent(
        decay_groups(model.parameters(), cfg.weight_decay),
        norm=normopt.norms.LInf(),
        lr=lr,
        momentum=0.9,
        nesterov=True,
        normalized=True,
    )
