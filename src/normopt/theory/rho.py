"""The ``rho`` real gradients see: ``||g||_dual / ||g||_F`` per layer against the worst case
``rho`` of the norm (:func:`effective_rho`).

Its inputs are those of every estimator (:mod:`normopt.theory.params`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from normopt.theory.params import (
    LossFn,
    NormSpec,
    Params,
    fdual,
    gradients,
    norm_labels,
    normed_tensors,
)

__all__ = ["RhoEstimate", "effective_rho"]


@dataclass
class RhoEstimate:
    """``||g||_dual / ||g||_F`` per layer on real gradients, against the worst case ``rho``."""

    per_layer: dict[str, float]
    rho_max: dict[str, float]
    model: float
    model_rho_max: float
    norms: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        out = [
            {"param": n, "shape": self.shapes.get(n), "norm": self.norms.get(n, ""),
             "rho_eff": r, "rho_max": self.rho_max[n], "fraction": r / self.rho_max[n]}
            for n, r in self.per_layer.items()
        ]  # fmt: skip
        out.append(
            {"param": "<model>", "shape": None, "norm": "modular", "rho_eff": self.model,
             "rho_max": self.model_rho_max, "fraction": self.model / self.model_rho_max}
        )  # fmt: skip
        return out


def effective_rho(
    params: Params,
    norms: NormSpec = None,
    *,
    grads: Mapping[str, Tensor] | None = None,
    loss_fn: LossFn | None = None,
) -> RhoEstimate:
    """The ``rho`` real gradients see: ``||g_l||_{l,dual} / ||g_l||_F`` per layer.

    The worst case is ``rho_max = norm.rho(shape)`` (``sqrt(m n)`` for the
    max-entry norm, attained by a gradient whose entries all have one size;
    ``sqrt(min(m, n))`` for the spectral norm, attained by a gradient with
    equal singular values). Real gradients are often near low rank, which
    puts the spectral ``rho_eff`` far below ``rho_max``, while their entries
    are spread, which keeps the max-entry ``rho_eff`` within a constant of
    ``rho_max`` (a Gaussian matrix gives ``sqrt(2 / pi) sqrt(m n)``). For the
    model, ``sum_l ||g_l||_dual / ||g||_F`` against ``sqrt(sum_l rho_l^2)``
    (the modular norm with unit scales).

    Gradients come from ``grads`` (``{name: tensor}``), else from ``loss_fn()``,
    else from each parameter's ``.grad``. The ratio is exact for the gradient
    given; as an estimate of the ``rho`` that matters in Lemma 3 (the ratio on
    the *noise* ``g - grad f``) see :meth:`NoiseEstimate.rho_eff`.
    """
    sub, norm_of = normed_tensors(params, norms)
    if grads is None:
        if loss_fn is not None:
            grads = gradients(sub, loss_fn())
        else:
            missing = [n for n, p in sub.items() if p.grad is None]
            if missing:
                raise ValueError(
                    f"grads: {missing} have no .grad; call backward first or pass grads or loss_fn"
                )
            grads = {n: p.grad for n, p in sub.items() if p.grad is not None}
    per: dict[str, float] = {}
    rmax: dict[str, float] = {}
    dual_sum, fro2 = 0.0, 0.0
    for n, norm in norm_of.items():
        if n not in grads:
            raise ValueError(f"grads: no gradient for {n!r}")
        g = grads[n].detach().double()
        fro = float(torch.linalg.vector_norm(g))
        d = fdual(norm, g)
        rmax[n] = float(norm.rho(norm.fit(g.shape)))
        per[n] = d / fro if fro > 0 else math.nan
        dual_sum += d
        fro2 += fro * fro
    return RhoEstimate(
        per_layer=per,
        rho_max=rmax,
        model=dual_sum / math.sqrt(fro2) if fro2 > 0 else math.nan,
        model_rho_max=math.sqrt(sum(r * r for r in rmax.values())),
        norms=norm_labels(norm_of),
        shapes={n: tuple(sub[n].shape) for n in norm_of},
    )
