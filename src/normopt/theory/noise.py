"""The gradient noise ``sigma^2 = E||g_batch - grad f||_2^2`` of Kovalev's theorem, and the
dual-norm size of the noise (:func:`estimate_noise`).

Its inputs are those of every estimator (:mod:`normopt.theory.params`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from normopt._checks import check_optional_int
from normopt.theory.params import (
    LossFn,
    NormSpec,
    Params,
    fdual,
    gradients,
    norm_labels,
    normed_tensors,
)

__all__ = ["NoiseEstimate", "estimate_noise"]


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
    sub, norm_of = normed_tensors(params, norms)
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
        norms=norm_labels(norm_of),
    )
