"""The statistics of a comparison: spreads over seeds and paired differences with a 95% interval.

Runs of two optimizers with the same seed start from the same weights and see the same
batches, so their difference on that seed is free of the init's and the data order's luck;
the harness compares optimizers by these *paired* differences. With ``n`` seeds the 95%
interval of the mean difference is ``mean ± t(0.975, n - 1) · sd / √n`` (Student's t: the
per-seed differences are taken as independent draws of a normal; with 2 or 3 seeds the
interval is wide, as it should be). The difference is *significant* when the interval
excludes 0, i.e. a two-sided paired t-test at the 5% level.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["paired_difference", "spread", "t_975"]

# Student's t 0.975 quantile for 1..30 degrees of freedom (to 4 decimals; any table, e.g.
# NIST/SEMATECH e-Handbook 1.3.6.7.2, has them).
_T_975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
_Z_975 = 1.959963984540054


def t_975(df: int) -> float:
    """Student's t 0.975 quantile with ``df`` degrees of freedom: the table up to 30, beyond
    it the Cornish-Fisher expansion in 1/df (Abramowitz & Stegun 26.7.5; error below 1e-4)."""
    if df < 1:
        raise ValueError(f"df: expected at least 1, got {df}")
    if df <= len(_T_975):
        return _T_975[df - 1]
    z, v = _Z_975, float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max; inf if any is."""
    vals = list(values)
    if not vals:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    finite = all(math.isfinite(v) for v in vals)
    return {
        "mean": statistics.fmean(vals) if finite else math.inf,
        "std": (statistics.stdev(vals) if len(vals) > 1 else 0.0) if finite else math.nan,
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
    }


def paired_difference(diffs: Sequence[float]) -> dict[str, Any]:
    """Mean of per-seed differences with its 95% t interval (nan with fewer than 2 seeds)
    and whether the interval excludes 0."""
    d = [float(x) for x in diffs]
    n = len(d)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "lo": math.nan, "hi": math.nan,
                "significant": False, "per_seed": d}  # fmt: skip
    mean = statistics.fmean(d)
    if n == 1:
        return {"mean": mean, "std": math.nan, "n": 1, "lo": math.nan, "hi": math.nan,
                "significant": False, "per_seed": d}  # fmt: skip
    sd = statistics.stdev(d)
    half = t_975(n - 1) * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    return {"mean": mean, "std": sd, "n": n, "lo": lo, "hi": hi,
            "significant": lo > 0 or hi < 0, "per_seed": d}  # fmt: skip
