"""Constants rho and L, and Kovalev's step-size schedule and bound (SPEC A4).

The napkin math of the seed: a norm with ``||x||_dual <= rho ||x||_F`` also has
``||x||_F <= rho ||x||`` (the two suprema are the same number, by duality), so
Frobenius smoothness ``||grad f(X) - grad f(X')||_F <= Lf ||X - X'||_F`` gives
smoothness ``L = Lf * rho^2`` in the chosen norm. The bound is attained by the
quadratic ``f = (Lf / 2) ||X - X*||_F^2`` along the extreme points of the unit
ball (``U V^T`` for the spectral norm, ``sign`` matrices for the max-entry norm).

Kovalev's Theorem 2 and Lemma 3 (arXiv 2503.12645, Algorithm 1) are
implemented as stated in SPEC A4 (the seed's statement; the paper's own text
was not checked here, so treat the constants as unverified). Two checks were
done instead: (1) the schedule makes the right-hand side at most
``(31/32) eps`` for every input (worked out in :func:`kovalev_schedule`, tested
as a property); (2) the form of the bound follows from the descent lemma
``f(x_{k+1}) <= f(x_k) - eta ||grad f(x_k)||_dual + 2 eta ||m_{k+1} - grad f(x_k)||_dual
+ L eta^2 / 2`` summed over k and combined with Lemma 3, up to the constant of
the ``L eta`` term (``L eta / 2`` plus the index shift between ``m_{k+1}`` and
``x_k``, ``L eta``, gives the stated ``3 L eta / 2``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from normopt._checks import check_int, check_number
from normopt.norms import Norm, get

__all__ = [
    "Constants",
    "KovalevSchedule",
    "constants",
    "kovalev_schedule",
    "kovalev_bound",
    "kovalev_bound_terms",
    "lemma3_bound",
]


# ---------------------------------------------------------------------------------
# rho and L
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Constants:
    """``rho`` and the napkin-math smoothness ``L = Lf * rho^2`` of one norm on one shape."""

    norm: str
    shape: tuple[int, ...]
    rho: float
    Lf: float
    L: float


def constants(norm: Norm | str, shape: Sequence[int], Lf: float = 1.0) -> Constants:
    """``rho`` of ``norm`` on a parameter of ``shape``, and ``L = Lf * rho^2``.

    ``rho`` is the smallest constant with ``||x||_dual <= rho ||x||_F``
    (:meth:`Norm.rho` on ``norm.fit(shape)``, so a vector norm sees the
    flattened tensor). If ``f`` is ``Lf``-smooth in the Frobenius norm, it is
    ``Lf * rho^2``-smooth in ``norm``; for a quadratic with Hessian ``Lf I``
    this is exact.

    Args:
        norm: a :class:`~normopt.norms.Norm` or a registry name.
        shape: the parameter's shape, e.g. ``(768, 3072)``.
        Lf: Frobenius smoothness constant (> 0).

    Example:
        >>> from normopt.theory import constants
        >>> c = constants("spectral", (768, 3072))
        >>> round(c.L, 6)
        768.0
        >>> constants("max_entry", (768, 3072)).L
        2359296.0
    """
    built = get(norm) if isinstance(norm, str) else norm
    if not isinstance(built, Norm):
        raise TypeError(f"norm: expected a Norm or a norm name, got {type(built).__name__}")
    Lf = check_number("Lf", Lf, low_open=True)
    dims = tuple(int(s) for s in shape)
    if not dims or any(s < 1 for s in dims):
        raise ValueError(f"shape: expected positive sizes, got {tuple(shape)}")
    rho = float(built.rho(built.fit(dims)))
    return Constants(norm=repr(built), shape=dims, rho=rho, Lf=Lf, L=Lf * rho * rho)


# ---------------------------------------------------------------------------------
# Theorem 2: schedule and bound
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KovalevSchedule:
    """``eta``, ``alpha``, ``K`` of SPEC A4 for a target ``eps``, with the inputs.

    ``K_terms`` holds the four candidates whose maximum (rounded up) is ``K``;
    ``K_reason`` names the largest, i.e. which regime sets the iteration count.
    """

    eta: float
    alpha: float
    K: int
    eps: float
    L: float
    rho: float
    sigma: float
    delta0: float
    K_terms: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def K_reason(self) -> str:
        return max(self.K_terms, key=self.K_terms.__getitem__) if self.K_terms else ""

    def bound(self) -> float:
        """The right-hand side of Theorem 2 at this ``(eta, alpha, K)``; at most ``eps``."""
        return kovalev_bound(
            self.eta, self.alpha, self.K, self.L, self.rho, self.sigma, self.delta0
        )


def kovalev_schedule(
    eps: float, L: float, rho: float, sigma: float, delta0: float
) -> KovalevSchedule:
    """Step size, momentum and iteration count that make Theorem 2's bound ``<= eps`` (SPEC A4).

    ::

        eta   = min(eps / (16 L), eps^3 / (256 rho^2 sigma^2 L))
        alpha = min(1, eps^2 / (16 rho^2 sigma^2))
        K     = ceil(max(2048 L D0 rho^2 sigma^2 / eps^4, 256 rho^3 sigma^3 / eps^3,
                         128 L D0 / eps^2, 16 rho sigma / eps))

    Why the bound is ``<= eps`` (write ``s = rho sigma``): if ``s >= eps / 4``,
    ``alpha = eps^2 / (16 s^2)`` and ``eta = alpha eps / (16 L)``, so the five
    terms are at most ``eps/8, eps/8, eps/2, 3 alpha eps/32, eps/8``; if
    ``s < eps / 4``, ``alpha = 1``, ``eta = eps / (16 L)`` and the terms are at
    most ``eps/8, eps/8, eps/2, 3 eps/32, eps/8``. Either way the sum is at
    most ``31 eps / 32``.

    ``sigma = 0`` (exact gradients) gives ``alpha = 1`` (no momentum needed),
    ``eta = eps / (16 L)`` and ``K = ceil(128 L D0 / eps^2)``. ``K`` is at least
    1 (the formula gives 0 when ``sigma = D0 = 0``).

    Args:
        eps: target for ``E[min_k ||grad f(x_k)||_dual]`` (> 0).
        L: smoothness in the chosen norm (> 0).
        rho: ``||x||_dual <= rho ||x||_2`` (> 0).
        sigma: gradient noise, ``E||g - grad f||_2^2 <= sigma^2`` (>= 0).
        delta0: ``D0 = f(x_0) - inf f`` (>= 0).

    Example:
        >>> from normopt.theory import kovalev_schedule
        >>> s = kovalev_schedule(eps=1.0, L=16.0, rho=4.0, sigma=1.0, delta0=1.0)
        >>> s.alpha, s.K, s.bound() <= 1.0
        (0.00390625, 524288, True)

    Raises:
        ValueError: for a non-finite or out-of-range argument, or when ``K``
            overflows (``eps`` far too small).
    """
    eps = check_number("eps", eps, low_open=True)
    L = check_number("L", L, low_open=True)
    rho = check_number("rho", rho, low_open=True)
    sigma = check_number("sigma", sigma)
    delta0 = check_number("delta0", delta0)
    s2 = (rho * sigma) ** 2
    try:
        if s2 > 0:
            eta = min(eps / (16 * L), eps**3 / (256 * s2 * L))
            alpha = min(1.0, eps**2 / (16 * s2))
        else:  # exact gradients: the noise terms vanish
            eta, alpha = eps / (16 * L), 1.0
        terms = {
            "noise x D0 (2048 L D0 rho^2 sigma^2 / eps^4)": 2048 * L * delta0 * s2 / eps**4,
            "momentum warm-up (256 rho^3 sigma^3 / eps^3)": 256 * (rho * sigma) ** 3 / eps**3,
            "deterministic (128 L D0 / eps^2)": 128 * L * delta0 / eps**2,
            "noise (16 rho sigma / eps)": 16 * rho * sigma / eps,
        }
    except (ZeroDivisionError, OverflowError):
        terms = {"": math.inf}
        eta = alpha = 0.0
    k_real = max(terms.values())
    if not math.isfinite(k_real) or not (eta > 0 and alpha > 0):
        raise ValueError(
            f"eps: {eps!r} is too small for these constants: the schedule over- or underflows"
        )
    K = max(1, math.ceil(k_real))
    return KovalevSchedule(
        eta=eta, alpha=alpha, K=K, eps=eps, L=L, rho=rho, sigma=sigma, delta0=delta0,
        K_terms=terms,
    )  # fmt: skip


def _check_eta_alpha_K(eta: float, alpha: float, K: int) -> tuple[float, float, int]:
    eta = check_number("eta", eta, low_open=True)
    alpha = check_number("alpha", alpha, 0.0, 1.0, low_open=True)
    return eta, alpha, check_int("K", K, 1)


def kovalev_bound_terms(
    eta: float, alpha: float, K: int, L: float, rho: float, sigma: float, delta0: float
) -> dict[str, float]:
    """The five terms of Theorem 2's right-hand side, by name (their sum is :func:`kovalev_bound`)."""
    eta, alpha, K = _check_eta_alpha_K(eta, alpha, K)
    L = check_number("L", L, low_open=True)
    rho = check_number("rho", rho, low_open=True)
    sigma = check_number("sigma", sigma)
    delta0 = check_number("delta0", delta0)
    return {
        "D0/(eta K)": delta0 / (eta * K),
        "2 rho sigma/(alpha K)": 2 * rho * sigma / (alpha * K),
        "2 sqrt(alpha) rho sigma": 2 * math.sqrt(alpha) * rho * sigma,
        "3 L eta/2": 1.5 * L * eta,
        "2 L eta/alpha": 2 * L * eta / alpha,
    }


def kovalev_bound(
    eta: float, alpha: float, K: int, L: float, rho: float, sigma: float, delta0: float
) -> float:
    """Right-hand side of Kovalev's Theorem 2 (SPEC A4): a bound on ``E[min_k ||grad f(x_k)||_dual]``.

    ::

        D0/(eta K) + 2 rho sigma/(alpha K) + 2 sqrt(alpha) rho sigma + 3 L eta/2 + 2 L eta/alpha

    for Algorithm 1 (``m_{k+1} = (1 - alpha) m_k + alpha g(x_k)``,
    ``x_{k+1} = x_k - eta dualize(m_{k+1})``, ``m_0 = g(x_0)``), the minimum
    taken over ``k = 0..K-1``. ``D0 = f(x_0) - inf f``: the seed writes
    "grad f(x_0) - inf f", a typo (the term comes from telescoping
    ``f(x_k) - f(x_{k+1})``, so it is a function-value gap).

    Assumptions: unbiased gradients with ``E||g - grad f||_2^2 <= sigma^2``;
    ``||grad f(x) - grad f(x')||_dual <= L ||x - x'||``;
    ``||x||_dual <= rho ||x||_2``.

    Example:
        >>> from normopt.theory import kovalev_bound
        >>> kovalev_bound(eta=0.01, alpha=1.0, K=100, L=1.0, rho=1.0, sigma=0.0, delta0=1.0)
        1.035
    """
    return math.fsum(kovalev_bound_terms(eta, alpha, K, L, rho, sigma, delta0).values())


def lemma3_bound(k: int, alpha: float, eta: float, L: float, rho: float, sigma: float) -> float:
    """Kovalev's Lemma 3: ``E||m_k - grad f(x_k)||_dual <= (1-alpha)^k rho sigma + sqrt(alpha) rho sigma + L eta/alpha``.

    The momentum error starts at ``rho sigma`` (``m_0`` is one stochastic
    gradient), decays geometrically, and settles at a floor set by the noise
    that averaging keeps (``sqrt(alpha) rho sigma``) and by the drift of the
    iterates (``L eta / alpha``).

    Example:
        >>> from normopt.theory import lemma3_bound
        >>> lemma3_bound(0, alpha=0.5, eta=0.1, L=1.0, rho=1.0, sigma=1.0) > lemma3_bound(
        ...     50, alpha=0.5, eta=0.1, L=1.0, rho=1.0, sigma=1.0)
        True
    """
    k = check_int("k", k, 0)
    alpha = check_number("alpha", alpha, 0.0, 1.0, low_open=True)
    eta = check_number("eta", eta, low_open=True)
    L = check_number("L", L, low_open=True)
    rho = check_number("rho", rho, low_open=True)
    sigma = check_number("sigma", sigma)
    return (1 - alpha) ** k * rho * sigma + math.sqrt(alpha) * rho * sigma + L * eta / alpha
