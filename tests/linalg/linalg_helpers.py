"""Test matrices with prescribed spectra, and the scalar map that a quintic iteration applies
to each singular value."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from normopt.linalg.polar import SCHEDULES, CoefficientSchedule

F64 = torch.float64


def random_orthogonal(n: int, gen: torch.Generator) -> Tensor:
    """A random n x n orthogonal matrix (U of an SVD: torch.linalg.qr is very slow on tiny
    matrices when torch runs two threads on a loaded machine)."""
    u, _, _ = torch.linalg.svd(torch.randn(n, n, generator=gen, dtype=F64))
    return u


def with_spectrum(s: Tensor, m: int, n: int, gen: torch.Generator) -> Tensor:
    """U diag(s) V^T with random orthonormal U (m x r) and V (n x r), r = len(s)."""
    r = len(s)
    u = random_orthogonal(m, gen)[:, :r]
    v = random_orthogonal(n, gen)[:, :r]
    return (u * s.to(F64)) @ v.T


def log_spectrum(r: int, t: float) -> Tensor:
    """r log-spaced singular values, the smallest exactly t * ||s||_2 (bisection on the span)."""
    if r == 1:
        return torch.ones(1, dtype=F64)
    lo, hi = -15.0, 0.0
    for _ in range(80):
        mid = (lo + hi) / 2
        s = torch.logspace(0, mid, r, dtype=F64)
        if float(s[-1] / s.norm()) < t:
            lo = mid
        else:
            hi = mid
    s = torch.logspace(0, hi, r, dtype=F64)
    assert float(s[-1] / s.norm()) >= t * (1 - 1e-9)
    return s


def conditioned(m: int, n: int, t: float, gen: torch.Generator) -> Tensor:
    """A matrix whose singular values are log-spaced down to exactly t * ||G||_F."""
    return with_spectrum(log_spectrum(min(m, n), t), m, n, gen)


def scalar_map(x: Tensor, schedule: str | CoefficientSchedule, steps: int) -> Tensor:
    """The odd quintic p_K o ... o p_1 applied to each normalized singular value x."""
    sched = SCHEDULES[schedule] if isinstance(schedule, str) else schedule
    for i in range(steps):
        a, b, c = sched.at(i)
        x = a * x + b * x**3 + c * x**5
    return x


def map_extremes(
    schedule: str, steps: int, t: float, points: int = 200_001
) -> tuple[float, float, float]:
    """(min over s_i/||G||_F in [t, 1], max over that range, max over (0, 1]) of the scalar map,
    in float64 on a log grid (the band in exact arithmetic)."""
    scale = SCHEDULES[schedule].norm_scale
    x = torch.logspace(math.log10(t), 0, points, dtype=F64) / scale
    y = scalar_map(x, schedule, steps)
    x_all = torch.logspace(-8, 0, points, dtype=F64) / scale
    return float(y.min()), float(y.max()), float(scalar_map(x_all, schedule, steps).max())
