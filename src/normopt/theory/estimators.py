"""Estimators of the constants of Kovalev's theorem on a real model and real data.

- :func:`estimate_smoothness`: ``L`` in a chosen norm, as the ratio
  ``||grad f(x') - grad f(x)||_dual / ||x' - x||`` along chosen displacements
  (random, extreme points of the norm ball, the steepest-descent step, or
  recorded optimizer updates); :func:`smoothness_of_step` measures it along one
  step of any optimizer inside a training loop.
- :func:`estimate_noise`: ``sigma^2 = E||g_batch - grad f||_2^2`` from
  minibatch gradients, plus the dual-norm size of the noise.
- :func:`effective_rho`: ``||g||_dual / ||g||_F`` on real gradients, against
  the worst case ``rho`` of the norm.

Every function takes the parameters (a model, a ``{name: tensor}`` mapping or
``(name, tensor)`` pairs), a loss callable that returns a scalar loss tensor
at the current parameters *without* calling ``backward`` (gradients are taken
with ``torch.autograd.grad``, so ``p.grad`` is never touched), and ``norms``:
one :class:`~normopt.norms.Norm`, a mapping from parameter name (or tensor)
to norm, a function ``(name, tensor) -> Norm | None``, or None (spectral for
matrices, l2 for vectors). Parameters without a norm are left alone. Norms
are evaluated in float64.

For the whole model, layers are combined in the modular norm with unit
scales (SPEC A2): ``||x|| = max_l ||x_l||_l``, dual ``sum_l ||g_l||_l,dual``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from normopt._checks import check_int, check_number, check_optional_int
from normopt.norms import Norm
from normopt.theory._params import (
    NormSpec,
    Params,
    as_element,
    fdual,
    fnorm,
    gradients,
    named_tensors,
    resolve_norms,
)

__all__ = [
    "SmoothnessEstimate",
    "NoiseEstimate",
    "RhoEstimate",
    "estimate_smoothness",
    "smoothness_of_step",
    "estimate_noise",
    "effective_rho",
]

LossFn = Callable[[], Tensor]
DIRECTIONS = ("dualized", "random", "gradient")


# ---------------------------------------------------------------------------------
# Smoothness L
# ---------------------------------------------------------------------------------


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
    tensors = named_tensors(params)
    norm_of = resolve_norms(tensors, norms)
    sub = {n: tensors[n] for n in norm_of}
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
        per_layer=per, model=model, directions=kind, norms={n: repr(v) for n, v in norm_of.items()}
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
    tensors = named_tensors(params)
    norm_of = resolve_norms(tensors, norms)
    sub = {n: tensors[n] for n in norm_of}
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
        norms={n: repr(v) for n, v in norm_of.items()},
    )


# ---------------------------------------------------------------------------------
# Gradient noise sigma
# ---------------------------------------------------------------------------------


@dataclass
class NoiseEstimate:
    """``sigma^2 = E||g_batch - grad f||_2^2`` and the dual-norm size of the noise.

    ``per_layer_sigma2[name]`` sums to ``sigma2``; ``per_layer_dual[name]`` is
    ``E||g_batch,l - grad_l f||_{l,dual}`` and ``model_dual`` its sum over
    layers (the modular dual norm). ``reference`` says what stood in for
    ``grad f``: ``"full"`` (a given full-data gradient) or ``"mean"`` (the mean
    of the ``n`` batch gradients).
    """

    n: int
    sigma2: float
    per_layer_sigma2: dict[str, float]
    per_layer_dual: dict[str, float]
    model_dual: float
    reference: str
    norms: dict[str, str] = field(default_factory=dict)

    @property
    def sigma(self) -> float:
        return math.sqrt(self.sigma2)

    def rho_eff(self) -> dict[str, float]:
        """``E||noise||_dual / sqrt(E||noise||_2^2)`` per layer: the ``rho`` the noise sees
        (Lemma 3 uses the worst case, ``rho``)."""
        return {
            n: (d / math.sqrt(s2) if s2 > 0 else math.nan)
            for n, (d, s2) in ((n, (self.per_layer_dual[n], self.per_layer_sigma2[n]))
                               for n in self.per_layer_sigma2)
        }  # fmt: skip

    def rows(self) -> list[dict[str, Any]]:
        r = self.rho_eff()
        out = [
            {"param": n, "norm": self.norms.get(n, ""), "sigma2": s2, "sigma": math.sqrt(s2),
             "dual": self.per_layer_dual[n], "rho_eff": r[n], "n": self.n}
            for n, s2 in self.per_layer_sigma2.items()
        ]  # fmt: skip
        out.append(
            {"param": "<model>", "norm": "modular", "sigma2": self.sigma2, "sigma": self.sigma,
             "dual": self.model_dual,
             "rho_eff": self.model_dual / self.sigma if self.sigma > 0 else math.nan, "n": self.n}
        )  # fmt: skip
        return out


def estimate_noise(
    params: Params,
    loss_fn: Callable[[Any], Tensor],
    batches: Iterable[Any],
    norms: NormSpec = None,
    *,
    full_loss_fn: LossFn | None = None,
    max_batches: int | None = None,
) -> NoiseEstimate:
    """Estimate the gradient noise ``sigma^2 = E||g(x; batch) - grad f(x)||_2^2`` at the current ``x``.

    With ``full_loss_fn`` (the loss on the whole data set, or on a batch much
    larger than the others), ``grad f`` is taken from it and
    ``sigma2 = (1/n) sum_i ||g_i - grad f||^2``, streaming over the batches.
    Without it, ``grad f`` is replaced by the mean ``g_bar`` of the ``n``
    batch gradients (kept in memory) and ``sigma2 = (1/(n-1)) sum_i ||g_i - g_bar||^2``.

    What it estimates, and its bias: both forms are unbiased for the variance
    of one batch gradient when the batches are drawn independently (with
    replacement) from the distribution that defines ``f``. Batches drawn
    without replacement from a finite set of ``N`` examples have variance
    smaller by ``(N - b) / (N - 1)`` for batch size ``b``. ``sigma2`` scales
    like ``1 / b``: it is the noise of *this* batch size. ``sigma`` (the square
    root) is biased low (Jensen). Theorem 2 needs a bound over all ``x``; this
    is the value at one ``x``. The dual-norm means use ``g_bar`` in the second
    form and are scaled by ``sqrt(n / (n - 1))`` (exact for the l2 norm, a
    first-order correction for others).

    Args:
        params: a model, a mapping or pairs.
        loss_fn: ``batch -> loss`` at the current parameters (no ``backward``).
        batches: an iterable of batches (at least 2 without ``full_loss_fn``).
        norms: for the dual-norm statistics; also selects the parameters.
        full_loss_fn: ``() -> loss`` on the full data, optional.
        max_batches: use at most this many batches.

    Example:
        >>> import torch
        >>> from normopt.theory import estimate_noise
        >>> X = torch.zeros(8, 8, dtype=torch.float64, requires_grad=True)
        >>> noise = [0.5 * torch.randn(8, 8, dtype=torch.float64) / 8 for _ in range(2000)]
        >>> est = estimate_noise({"X": X}, lambda xi: (X * xi).sum() + X.pow(2).sum(), noise,
        ...                      full_loss_fn=lambda: X.pow(2).sum())
        >>> abs(est.sigma - 0.5) < 0.02
        True
    """
    check_optional_int("max_batches", max_batches, 1)
    tensors = named_tensors(params)
    norm_of = resolve_norms(tensors, norms)
    sub = {n: tensors[n] for n in norm_of}
    sq = {n: 0.0 for n in sub}
    dual = {n: 0.0 for n in sub}
    model_dual = 0.0
    n_seen = 0

    def add(dev: Mapping[str, Tensor]) -> None:
        nonlocal model_dual
        for name, d in dev.items():
            sq[name] += float(d.pow(2).sum())
            v = fdual(norm_of[name], d)
            dual[name] += v
            model_dual += v

    if full_loss_fn is not None:
        g_full = {n: g.double() for n, g in gradients(sub, full_loss_fn()).items()}
        for batch in batches:
            if max_batches is not None and n_seen >= max_batches:
                break
            g = gradients(sub, loss_fn(batch))
            add({n: g[n].double() - g_full[n] for n in sub})
            n_seen += 1
        if n_seen < 1:
            raise ValueError("batches: no batch given")
        denom, dual_scale, ref = n_seen, 1.0, "full"
    else:
        stored: list[dict[str, Tensor]] = []
        for batch in batches:
            if max_batches is not None and len(stored) >= max_batches:
                break
            stored.append(gradients(sub, loss_fn(batch)))
        n_seen = len(stored)
        if n_seen < 2:
            raise ValueError(f"batches: need at least 2 batches without full_loss_fn, got {n_seen}")
        mean = {n: sum(g[n].double() for g in stored) / n_seen for n in sub}
        for g in stored:
            add({n: g[n].double() - mean[n] for n in sub})
        denom, dual_scale, ref = n_seen - 1, math.sqrt(n_seen / (n_seen - 1)), "mean"

    per_s2 = {n: v / denom for n, v in sq.items()}
    return NoiseEstimate(
        n=n_seen,
        sigma2=math.fsum(per_s2.values()),
        per_layer_sigma2=per_s2,
        per_layer_dual={n: dual_scale * v / n_seen for n, v in dual.items()},
        model_dual=dual_scale * model_dual / n_seen,
        reference=ref,
        norms={n: repr(v) for n, v in norm_of.items()},
    )


# ---------------------------------------------------------------------------------
# Effective rho
# ---------------------------------------------------------------------------------


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
    tensors = named_tensors(params)
    norm_of = resolve_norms(tensors, norms)
    sub = {n: tensors[n] for n in norm_of}
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
        norms={n: repr(v) for n, v in norm_of.items()},
        shapes={n: tuple(sub[n].shape) for n in norm_of},
    )
