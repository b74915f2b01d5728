"""The smoothness constant ``L`` of Kovalev's theorem measured in a chosen norm.

:func:`estimate_smoothness` takes the ratio ``||grad f(x') - grad f(x)||_dual / ||x' - x||``
along chosen displacements (random, extreme points of the norm ball, the steepest-descent
step, or recorded optimizer updates); :func:`smoothness_of_step` measures it along one step
of any optimizer inside a training loop.

Its inputs are those of every estimator (:mod:`normopt.theory.params`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from normopt._checks import check_int, check_number
from normopt.norms import Norm
from normopt.theory.params import (
    LossFn,
    NormSpec,
    Params,
    as_element,
    fdual,
    fnorm,
    gradients,
    norm_labels,
    normed_tensors,
)

__all__ = ["DIRECTIONS", "SmoothnessEstimate", "estimate_smoothness", "smoothness_of_step"]

DIRECTIONS = ("dualized", "random", "gradient")


@dataclass
class SmoothnessEstimate:
    """Ratios ``||delta grad||_dual / ||delta x||``, one per displacement.

    ``per_layer[name]`` lists the layer's ratios, ``model`` the whole-model
    ratios in the modular norm (empty when layers were perturbed one at a
    time). :attr:`L` and :meth:`layer_L` take the maximum over displacements:
    ``L`` is a supremum, so the maximum is the estimate.
    """

    per_layer: dict[str, list[float]]
    model: list[float]
    directions: str
    norms: dict[str, str] = field(default_factory=dict)

    @property
    def L(self) -> float:
        """Whole-model estimate (max over displacements); NaN if not measured."""
        return max(self.model) if self.model else math.nan

    def layer_L(self) -> dict[str, float]:
        return {n: max(v) for n, v in self.per_layer.items() if v}

    def rows(self) -> list[dict[str, Any]]:
        out = [
            {"param": n, "norm": self.norms.get(n, ""), "directions": self.directions, "L": max(v),
             "L_mean": sum(v) / len(v), "n": len(v)}
            for n, v in self.per_layer.items() if v
        ]  # fmt: skip
        if self.model:
            out.append(
                {"param": "<model>", "norm": "modular", "directions": self.directions,
                 "L": self.L, "L_mean": sum(self.model) / len(self.model), "n": len(self.model)}
            )  # fmt: skip
        return out


def _unit_direction(
    kind: str, norm: Norm, p: Tensor, g: Tensor, generator: torch.Generator | None
) -> Tensor:
    """A displacement of norm 1 in ``norm``, shaped like ``p`` (float64)."""
    shape = norm.fit(p.shape)
    if kind == "gradient":
        return -norm.dualize(as_element(norm, g.double())).reshape(p.shape)
    Z = torch.randn(shape, dtype=torch.float64, generator=generator)
    D = norm.dualize(Z) if kind == "dualized" else Z / norm.norm(Z)
    return D.reshape(p.shape)


def _ratios(
    norms: Mapping[str, Norm], D: Mapping[str, Tensor], dg: Mapping[str, Tensor]
) -> tuple[dict[str, float], float]:
    per: dict[str, float] = {}
    dual_sum, step_max = 0.0, 0.0
    for n, norm in norms.items():
        step = fnorm(norm, D[n])
        dual = fdual(norm, dg[n])
        dual_sum += dual
        step_max = max(step_max, step)
        if step > 0:
            per[n] = dual / step
    return per, (dual_sum / step_max if step_max > 0 else math.nan)


def _set(tensors: Mapping[str, Tensor], values: Mapping[str, Tensor]) -> None:
    with torch.no_grad():
        for n, v in values.items():
            tensors[n].copy_(v)


def estimate_smoothness(
    params: Params,
    loss_fn: LossFn,
    norms: NormSpec = None,
    *,
    directions: str | Sequence[Mapping[str, Tensor]] = "dualized",
    n_directions: int = 4,
    radius: float = 1e-2,
    relative: bool = True,
    isolated: bool = False,
    generator: torch.Generator | None = None,
) -> SmoothnessEstimate:
    """Estimate the smoothness ``L`` of ``loss_fn`` per layer and for the whole model.

    At the current parameters ``x``, for each displacement ``D``:
    ``L_l = ||grad_l f(x + D) - grad_l f(x)||_{l,dual} / ||D_l||_l`` per layer and
    ``L = sum_l ||delta grad_l||_{l,dual} / max_l ||D_l||_l`` for the model. The
    parameters are restored afterwards.

    Displacements (``directions``):

    - ``"dualized"`` (default): ``D_l = r_l dualize_l(Z)`` for Gaussian ``Z``:
      the extreme points of the norm ball (``U V^T`` for the spectral norm,
      sign matrices for the max-entry norm), where the worst case
      ``||H D||_dual / ||D||`` of a quadratic is attained.
    - ``"random"``: ``D_l = r_l Z / ||Z||_l``.
    - ``"gradient"``: ``D_l = -r_l dualize_l(grad_l f(x))``, the steepest-descent
      step; one displacement (``n_directions`` is ignored).
    - a sequence of ``{name: displacement}`` mappings, e.g. recorded optimizer
      updates ``x_{t+1} - x_t``; they are used as given (no rescaling).

    ``r_l = radius * ||x_l||_l`` when ``relative`` (``radius`` where
    ``x_l = 0``), else ``radius``.

    What it estimates, and its bias: ``L`` is a supremum over pairs of points,
    so every ratio is a *lower bound* on the smoothness constant of the region
    it probes, and the maximum over a few displacements is biased low. Random
    Gaussian displacements are biased low the most (on ``(Lf/2)||X - X*||_F^2``
    in the spectral norm they give ``Lf ||Z||_nuc / ||Z||_2`` instead of
    ``Lf min(m, n)``); dualized displacements recover ``Lf rho^2`` exactly on
    that quadratic. Along the optimizer's own steps it measures the smoothness
    that enters the descent lemma, which is the constant that matters for the
    step size. A finite displacement measures the average Hessian along the
    segment; ``radius`` too small makes the gradient difference round-off
    (float32 gradients: keep ``||delta grad|| >> 1e-7 ||grad||``). With
    ``isolated=False`` all layers move at once and the per-layer ratios
    include the coupling between layers (off-diagonal Hessian blocks);
    ``isolated=True`` moves one layer at a time (the block-diagonal constant,
    one gradient per layer per displacement; no whole-model ratio).

    Args:
        params: a model, a ``{name: tensor}`` mapping or ``(name, tensor)`` pairs.
        loss_fn: ``() -> loss`` at the current parameters, on a *fixed* batch
            (or the full data set); it must not call ``backward``.
        norms: see the module docstring.
        generator: for the random displacements.

    Example:
        >>> import torch
        >>> from normopt.theory import estimate_smoothness
        >>> X = torch.zeros(4, 6, dtype=torch.float64, requires_grad=True)
        >>> est = estimate_smoothness({"X": X}, lambda: 1.5 * (X - 1).pow(2).sum())
        >>> round(est.L, 6)  # Lf = 3 times rho^2 = min(4, 6) in the spectral norm
        12.0
    """
    if isinstance(directions, str):
        if directions not in DIRECTIONS:
            raise ValueError(
                f"directions: expected one of {DIRECTIONS} or a list, got {directions!r}"
            )
        check_int("n_directions", n_directions, 1)
        radius = check_number("radius", radius, low_open=True)
    sub, norm_of = normed_tensors(params, norms)
    x0 = {n: t.detach().clone() for n, t in sub.items()}
    g0 = gradients(sub, loss_fn())

    if isinstance(directions, str):
        kind = directions
        count = 1 if kind == "gradient" else n_directions
        disp: list[dict[str, Tensor]] = []
        for _ in range(count):
            D = {}
            for n, norm in norm_of.items():
                size = fnorm(norm, x0[n]) if relative else 0.0
                r = radius * size if size > 0 else radius
                D[n] = r * _unit_direction(kind, norm, x0[n], g0[n], generator)
            disp.append(D)
    else:
        kind = "given"
        disp = [dict(d) for d in directions]
        for d in disp:
            missing = [n for n in norm_of if n not in d]
            if missing:
                raise ValueError(f"directions: displacement lacks parameters {missing}")
    if not disp:
        raise ValueError("directions: no displacement given")

    per: dict[str, list[float]] = {n: [] for n in norm_of}
    model: list[float] = []
    try:
        for D in disp:
            groups = [[n] for n in norm_of] if isolated else [list(norm_of)]
            for group in groups:
                _set(sub, {n: x0[n] + D[n].to(x0[n]) for n in group})
                # the displacement actually taken, after rounding to the parameter dtype
                actual = {n: sub[n].detach().double() - x0[n].double() for n in norm_of}
                g1 = gradients(sub, loss_fn())
                dg = {n: g1[n].double() - g0[n].double() for n in norm_of}
                layer, whole = _ratios({n: norm_of[n] for n in group}, actual, dg)
                for n, v in layer.items():
                    per[n].append(v)
                if not isolated:
                    model.append(whole)
                _set(sub, {n: x0[n] for n in group})
    finally:
        _set(sub, x0)
    return SmoothnessEstimate(
        per_layer=per, model=model, directions=kind, norms=norm_labels(norm_of)
    )


def smoothness_of_step(
    params: Params, loss_fn: LossFn, step_fn: Callable[[], Any], norms: NormSpec = None
) -> SmoothnessEstimate:
    """Smoothness along one optimizer step: ``||grad f(x_{t+1}) - grad f(x_t)||_dual / ||x_{t+1} - x_t||``.

    Takes the gradient at ``x_t``, calls ``step_fn()`` (e.g. ``optimizer.step``,
    after the usual ``loss.backward()``), and takes the gradient at
    ``x_{t+1}``, both on the batch of ``loss_fn`` (a fixed batch, so that the
    difference is curvature, not noise). Costs two extra forward-backward
    passes. The step is kept. See :func:`estimate_smoothness` for the bias.

    Example:
        >>> import torch
        >>> from normopt.theory import smoothness_of_step
        >>> X = torch.nn.Parameter(torch.randn(4, 6))
        >>> opt = torch.optim.SGD([X], lr=0.1)
        >>> loss_fn = lambda: 2.0 * X.pow(2).sum()
        >>> loss_fn().backward()
        >>> est = smoothness_of_step({"X": X}, loss_fn, opt.step, norms=None)
        >>> 4.0 <= est.L <= 16.0 + 1e-4  # Lf = 4; rho^2 = 4 at most
        True
    """
    sub, norm_of = normed_tensors(params, norms)
    x0 = {n: t.detach().double().clone() for n, t in sub.items()}
    g0 = gradients(sub, loss_fn())
    step_fn()
    D = {n: sub[n].detach().double() - x0[n] for n in sub}
    g1 = gradients(sub, loss_fn())
    layer, whole = _ratios(norm_of, D, {n: g1[n].double() - g0[n].double() for n in sub})
    return SmoothnessEstimate(
        per_layer={n: [v] for n, v in layer.items()},
        model=[] if math.isnan(whole) else [whole],
        directions="optimizer step",
        norms=norm_labels(norm_of),
    )
