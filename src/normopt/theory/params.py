"""What every theory tool takes: named parameters, the norm of each, the loss, gradients.

The estimators (:mod:`~normopt.theory.smoothness`, :mod:`~normopt.theory.noise`,
:mod:`~normopt.theory.rho`) take the parameters (:data:`Params`: a model, a
``{name: tensor}`` mapping or ``(name, tensor)`` pairs), a loss callable (:data:`LossFn`)
that returns a scalar loss tensor at the current parameters *without* calling ``backward``
(gradients come from ``torch.autograd.grad``, so ``p.grad`` is never touched), and
``norms`` (:data:`NormSpec`); parameters without a norm are left alone, and norms are
evaluated in float64. For the whole model, layers are combined in the modular norm with
unit scales (SPEC A2): ``||x|| = max_l ||x_l||_l``, dual ``sum_l ||g_l||_l,dual``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from normopt.norms import L2, Norm, Spectral

Params = nn.Module | Mapping[str, Tensor] | Iterable[tuple[str, Tensor]]
"""A model, a ``{name: tensor}`` mapping, or ``(name, tensor)`` pairs."""

LossFn = Callable[[], Tensor]
"""A loss at the current parameters, as a scalar tensor, without ``backward`` called."""

NormSpec = Norm | Mapping[str | Tensor, Norm] | Callable[[str, Tensor], Norm | None] | None
"""How to pick a norm per parameter: one norm for all, a mapping keyed by name or by the
tensor itself, a function ``(name, tensor) -> Norm or None``, or None for the default
(:func:`default_norm`)."""


def named_tensors(params: Params, *, trainable_only: bool = True) -> dict[str, Tensor]:
    """``{name: tensor}`` from a model, a mapping or ``(name, tensor)`` pairs."""
    if isinstance(params, nn.Module):
        return {n: p for n, p in params.named_parameters() if p.requires_grad or not trainable_only}
    if isinstance(params, Tensor):
        raise TypeError(
            "params: expected a model, a {name: tensor} mapping or (name, tensor) pairs"
        )
    if isinstance(params, Mapping):
        items = list(params.items())
    else:
        items = list(params)
        if items and not all(isinstance(it, tuple) and len(it) == 2 for it in items):
            raise TypeError("params: expected (name, tensor) pairs")
    out: dict[str, Tensor] = {}
    for name, t in items:
        if not isinstance(t, Tensor):
            raise TypeError(f"params: {name!r} is a {type(t).__name__}, not a tensor")
        out[str(name)] = t
    if not out:
        raise ValueError("params: no parameters given")
    return out


def normed_tensors(params: Params, norms: NormSpec) -> tuple[dict[str, Tensor], dict[str, Norm]]:
    """``(tensors, norm_of)``: the parameters that have a norm under ``norms``
    (:func:`named_tensors`, then :func:`resolve_norms`) and that norm, keyed alike."""
    tensors = named_tensors(params)
    norm_of = resolve_norms(tensors, norms)
    return {n: tensors[n] for n in norm_of}, norm_of


def norm_labels(norm_of: Mapping[str, Norm]) -> dict[str, str]:
    """``{name: repr(norm)}``: how an estimate records the norm of each parameter."""
    return {n: repr(v) for n, v in norm_of.items()}


def default_norm(name: str, p: Tensor) -> Norm:
    """Spectral norm for matrices (conv kernels read as ``(d_out, -1)``), l2 for the rest."""
    return Spectral() if p.ndim >= 2 else L2()


def _fits(norm: Norm, p: Tensor) -> bool:
    try:
        norm.fit(p.shape)
    except ValueError:
        return False
    return True


def resolve_norms(tensors: Mapping[str, Tensor], norms: NormSpec) -> dict[str, Norm]:
    """The norm of each parameter under ``norms`` (see :data:`NormSpec`); parameters
    without one are left out. A single norm is applied where it fits the shape."""
    out: dict[str, Norm] = {}
    for name, p in tensors.items():
        if norms is None:
            n: Norm | None = default_norm(name, p)
        elif isinstance(norms, Norm):
            n = norms if _fits(norms, p) else None
        elif isinstance(norms, Mapping):
            n = norms.get(name)
            if n is None:
                n = next((v for k, v in norms.items() if isinstance(k, Tensor) and k is p), None)
        elif callable(norms):
            n = norms(name, p)
        else:
            raise TypeError(
                f"norms: expected a Norm, a mapping, a function or None, got {type(norms).__name__}"
            )
        if n is None:
            continue
        if not isinstance(n, Norm):
            raise TypeError(f"norms: the norm for {name!r} is a {type(n).__name__}, not a Norm")
        n.fit(p.shape)  # raises a ValueError naming the shape if the norm cannot carry it
        out[name] = n
    if not out:
        raise ValueError("norms: no parameter has a norm")
    return out


def as_element(norm: Norm, t: Tensor) -> Tensor:
    """``t`` reshaped to the element shape ``norm`` acts on (``norm.fit``)."""
    return t.reshape(norm.fit(t.shape))


def fnorm(norm: Norm, t: Tensor) -> float:
    return float(norm.norm(as_element(norm, t.double())))


def fdual(norm: Norm, t: Tensor) -> float:
    return float(norm.dual_norm(as_element(norm, t.double())))


def gradients(tensors: Mapping[str, Tensor], loss: Tensor) -> dict[str, Tensor]:
    """``d loss / d p`` for each tensor (zeros where unused), without touching ``p.grad``."""
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError("loss_fn: expected a scalar loss tensor")
    names = list(tensors)
    grads = torch.autograd.grad(loss, [tensors[n] for n in names], allow_unused=True)
    return {
        n: (g.detach() if g is not None else torch.zeros_like(tensors[n]))
        for n, g in zip(names, grads)
    }
