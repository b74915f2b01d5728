"""The polar factor U V^T of a matrix (or a batch of them), exact and approximate.

Every approximate method here has the exact SVD reference beside it
(``method="svd"``); the tests compare them with a singular-value band written
down per method and dtype (``tests/linalg/test_polar.py``).

Methods (SPEC A5):

- ``"svd"``: the exact reduced polar factor from a float64 SVD. Singular
  values below ``max(m, n) * eps64 * s_max`` count as zero, so a rank-deficient
  input gives a partial isometry (its null directions stay null) and a zero
  matrix gives zeros.
- ``"newton_schulz"``: K. Jordan's quintic iteration with the fixed
  coefficients ``(3.4445, -4.7750, 2.0315)``; it deliberately does not
  converge, singular values land in about [0.68, 1.2024].
- ``"polar_express"``: the same quintic form with a different optimal
  coefficient triple per step (Amsel et al., arXiv 2505.16932).
- ``"gram_newton_schulz"``: the polar-express iteration run on the small Gram
  matrix ``R = X X^T`` (Dao-AILab/gram-newton-schulz): every step costs
  ``O(m^3)`` instead of ``O(m^2 n)`` and the long side is touched only at the
  start, after the restart and at the end.

Named coefficient schedules (:data:`SCHEDULES`, passed as ``coefficients=``): ``"jordan"``,
``"polar_express"``, ``"classical"``, ``"cans_cubic"`` (CANS, arXiv 2506.10935, degree 3),
``"deepseek_v4"`` (the reported 8 + 2 step hybrid, unverified) and ``"turbo_muon"``
(AOL preconditioning, arXiv 2512.04632). Their measured bands are in
``tests/linalg/test_polar.py`` (``SCHEDULE_BANDS``).

Input is never modified; the output has the input's dtype and shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from normopt._checks import (
    POLAR_METHODS,
    at_least_float32,
    check_int,
    check_optional_int,
    check_polar_method,
    check_real_tensor,
)

__all__ = [
    "DEFAULT_SCHEDULE",
    "DEFAULT_STEPS",
    "POLAR_METHODS",
    "SCHEDULES",
    "CoefficientSchedule",
    "get_schedule",
    "newton_schulz",
    "gram_newton_schulz",
    "default_compute_dtype",
    "normalize_frobenius",
    "polar",
    "polar_svd",
    "polar_flops",
    "check_matrix",
]


@dataclass(frozen=True)
class CoefficientSchedule:
    """Coefficients ``(a, b, c)`` of the odd quintic ``p(x) = a x + b x^3 + c x^5``, per step.

    Step ``i`` uses ``coefficients[i]``; steps past the end repeat the last
    triple. ``norm_scale`` multiplies the Frobenius norm used to bring all
    singular values under 1 before the first step (a margin against round-off).
    ``precondition`` is how the input is scaled before the first step:
    ``"frobenius"`` (``X_0 = G / (||G||_F norm_scale)``) or ``"aol"`` (Turbo-Muon's
    almost-orthogonal-layer rescaling, ``X_0 = D G`` with
    ``D = diag(sum_j |(G G^T)_ij|)^(-1/2)`` for a wide ``G``, which bounds
    ``||X_0||_2 <= 1``; then the output is no longer a function of ``G``'s singular
    values alone, since ``polar(D G) != polar(G)`` in general).
    """

    name: str
    coefficients: tuple[tuple[float, float, float], ...]
    norm_scale: float = 1.0
    source: str = ""
    precondition: str = "frobenius"

    def at(self, step: int) -> tuple[float, float, float]:
        return self.coefficients[min(step, len(self.coefficients) - 1)]


def _with_safety(
    coefficients: list[tuple[float, float, float]], factor: float
) -> tuple[tuple[float, float, float], ...]:
    # Polar Express's safety factor: p(x / f) scaled back, i.e. (a/f, b/f^3, c/f^5), on
    # every step but the last, so round-off that pushes a singular value past the upper
    # end of an interval cannot be amplified (arXiv 2505.16932, section on finite precision).
    out = [(a / factor, b / factor**3, c / factor**5) for a, b, c in coefficients[:-1]]
    return (*out, coefficients[-1])


# Polar Express, degree 5, lower bound l = 1e-3: the published per-step triples
# (arXiv 2505.16932, Algorithm 1 / its code listing; copied into SPEC.md A5).
_POLAR_EXPRESS_RAW = [
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
]


def _cans_cubic(lower: float, steps: int) -> tuple[tuple[float, float, float], ...]:
    """CANS of degree 3 (arXiv 2506.10935, the cubic case of section 3): per step, the odd cubic
    ``p(x) = alpha x + beta x^3`` closest to 1 in the max norm on the current interval
    ``[a, b]``, then the next interval is ``p([a, b]) = [p(a), p(e)]``. Computed here from the
    equioscillation (alternance) conditions ``1 - p(a) = p(e) - 1 = 1 - p(b)`` with ``e`` the
    maximum of ``p``: ``p(a) = p(b)`` gives ``alpha = -3 beta e^2``, ``e^2 = (a^2 + ab + b^2) / 3``,
    and ``p(a) + p(e) = 2`` gives ``beta = 2 / (a^3 - 3 e^2 a - 2 e^3)``. The paper's own tables
    were not available here; these numbers are this derivation's, not copied."""
    out = []
    a, b = lower, 1.0
    for _ in range(steps):
        e2 = (a * a + a * b + b * b) / 3.0
        e = e2**0.5
        beta = 2.0 / (a**3 - 3.0 * e2 * a - 2.0 * e**3)
        alpha = -3.0 * beta * e2
        out.append((alpha, beta, 0.0))
        a, b = alpha * a + beta * a**3, alpha * e + beta * e**3
    return tuple(out)


# Jordan's triple, shared by the schedules built on it.
_JORDAN = (3.4445, -4.7750, 2.0315)

SCHEDULES: dict[str, CoefficientSchedule] = {
    # K. Jordan's Muon (github.com/KellerJordan/Muon, "zeropower_via_newtonschulz5").
    "jordan": CoefficientSchedule(
        name="jordan",
        coefficients=((3.4445, -4.7750, 2.0315),),
        norm_scale=1.0,
        source="K. Jordan, Muon (2024)",
    ),
    # Amsel, Persson, Musco, Gower, "The Polar Express" (arXiv 2505.16932), safety 1.01.
    "polar_express": CoefficientSchedule(
        name="polar_express",
        coefficients=_with_safety(_POLAR_EXPRESS_RAW, 1.01),
        norm_scale=1.01,
        source="arXiv 2505.16932",
    ),
    # The classical cubic-free quintic Newton-Schulz, p(x) = (15x - 10x^3 + 3x^5) / 8: it
    # converges (slowly from small singular values) to exactly 1.
    "classical": CoefficientSchedule(
        name="classical",
        coefficients=((1.875, -1.25, 0.375),),
        norm_scale=1.0,
        source="Higham, Functions of Matrices (2008), ch. 8",
    ),
    # Grishina, Smirnov, Rakhuba, CANS (arXiv 2506.10935): Chebyshev-optimal cubic steps from
    # the lower bound 1e-3 (Polar Express's), derived here (see _cans_cubic); c = 0, so a step
    # is one product fewer in exact arithmetic (the quintic loop still forms A^2: no saving here).
    # With Polar Express's safety factor 1.01 (our choice): without it, bf16 round-off put
    # values past the cubic's root sqrt(-alpha/beta) ~ 1.0005 and flipped their sign.
    "cans_cubic": CoefficientSchedule(
        name="cans_cubic",
        coefficients=_with_safety(list(_cans_cubic(1e-3, 12)), 1.01),
        norm_scale=1.01,
        source="arXiv 2506.10935 (degree 3; coefficients derived here, not the paper's tables)",
    ),
    # The 10-step hybrid reported for DeepSeek-V4: 8 steps of Jordan's triple to lift small
    # singular values fast, then 2 of (2, -1.5, 0.5) (p(1) = 1, p'(1) = 0) to settle them near
    # 1. UNVERIFIED: from secondary reports, not from a DeepSeek paper or code read here.
    "deepseek_v4": CoefficientSchedule(
        name="deepseek_v4",
        coefficients=(_JORDAN,) * 8 + ((2.0, -1.5, 0.5),) * 2,
        norm_scale=1.0,
        source="reported DeepSeek-V4 hybrid Newton-Schulz (unverified)",
    ),
    # Turbo-Muon (arXiv 2512.04632; modded-nanogpt record 2025-11-11, thib-s/flash-newton-schulz): AOL
    # rescaling instead of the Frobenius normalization, and Polar Express's schedule without
    # its first step (the record's README: "drop the first iteration of the usual newton
    # schulz coefficients"), so 4 steps do the work of 5.
    "turbo_muon": CoefficientSchedule(
        name="turbo_muon",
        coefficients=_with_safety(_POLAR_EXPRESS_RAW, 1.01)[1:],
        norm_scale=1.0,
        source="arXiv 2512.04632 (AOL preconditioning; Polar Express from its 2nd step)",
        precondition="aol",
    ),
}


def get_schedule(name: str | CoefficientSchedule) -> CoefficientSchedule:
    """Look up a coefficient schedule by name (or pass one through)."""
    if isinstance(name, CoefficientSchedule):
        return name
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ValueError(
            f"coefficients: unknown schedule {name!r}; expected one of {sorted(SCHEDULES)}"
        ) from None


# Each method's default number of steps and coefficient schedule (kernels.polar reads them).
DEFAULT_STEPS = {"newton_schulz": 5, "polar_express": 5, "gram_newton_schulz": 5}
DEFAULT_SCHEDULE = {
    "newton_schulz": "jordan",
    "polar_express": "polar_express",
    "gram_newton_schulz": "polar_express",
}


def check_matrix(G: object, name: str = "G") -> Tensor:
    """``G`` if it is a dense real floating-point matrix or batch of matrices, else the error
    naming ``name``."""
    G = check_real_tensor(name, G)
    if G.ndim < 2:
        raise ValueError(
            f"{name}: expected a matrix or a batch of matrices (ndim >= 2), got shape {tuple(G.shape)}"
        )
    return G


def polar_svd(G: Tensor) -> Tensor:
    """Exact reduced polar factor ``U V^T`` from a float64 SVD (the reference).

    Singular values within the rounding noise of the input count as zero, and
    their singular vectors are dropped: for float64 input those at or below
    ``max(m, n) * eps64 * s_max``; for lower precision those at or below
    ``eps(dtype) * ||G||_F``, the largest spectral norm that rounding each entry
    to ``dtype`` can add (so the polar factor of a float32 rank-one matrix is
    rank one, not a rank-one part plus orthogonalized round-off).
    """
    G = check_matrix(G)
    if G.numel() == 0:
        return torch.zeros_like(G)
    X = G.to(torch.float64)
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    tol = (
        max(X.shape[-2], X.shape[-1])
        * torch.finfo(torch.float64).eps
        * S.amax(dim=-1, keepdim=True)
    )
    if G.dtype != torch.float64:
        fro = torch.linalg.vector_norm(S, dim=-1, keepdim=True)  # ||G||_F
        tol = torch.maximum(tol, torch.finfo(G.dtype).eps * fro)
    keep = tol < S
    out = (U * keep.unsqueeze(-2).to(U.dtype)) @ Vh
    return out.to(G.dtype)


def default_compute_dtype(G: Tensor, compute_dtype: torch.dtype | None = None) -> torch.dtype:
    """The dtype the iterations run in: ``compute_dtype`` if given, else bf16 on CUDA and at
    least float32 elsewhere (float64 stays float64)."""
    if compute_dtype is not None:
        return compute_dtype
    if G.device.type == "cuda":
        return torch.bfloat16
    # On the CPU, low-precision matmuls are slow and buy nothing: use at least float32.
    return at_least_float32(G.dtype)


def normalize_frobenius(X: Tensor, scale: float = 1.0, eps: float = 1e-7) -> Tensor:
    """``X / max(||X||_F * scale, eps)`` per matrix, the norm taken on ``X / max|X_ij|``.

    The first step of every Newton-Schulz iteration here: it puts the singular values in
    ``(0, 1 / scale]``. A zero matrix stays zero.
    """
    # Divide by the max entry first so that ||X||_F cannot overflow (1e30 entries in
    # float32) or underflow (1e-30 entries); a zero matrix stays zero.
    amax = X.abs().amax(dim=(-2, -1), keepdim=True)
    X = X / amax.clamp_min(torch.finfo(X.dtype).tiny)
    fro = torch.linalg.matrix_norm(X, ord="fro", keepdim=True)
    # Now ||X||_F >= 1 unless X = 0, so eps only guards 0 / 0. Adding it instead would
    # divide G by ||G||_F * scale + eps * max|G_ij|, which breaks NS(Q1 G Q2) = Q1 NS(G) Q2
    # at the 1e-8 level (max|G_ij| is not orthogonally invariant).
    return X / (fro * scale).clamp_min(eps)


def _aol(X: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """AOL rescaling of a wide ``X`` (Prach & Lampert, arXiv 2208.03160; Turbo-Muon):
    ``D = diag(sum_j |A_ij|)^(-1/2)`` with ``A = X X^T``, returns ``(D X, D A D)``, the second
    being the first step's Gram matrix (the product is not formed twice, as Turbo-Muon fuses
    it). ``||D X||_2 <= 1``: the spectral norm of ``D A D`` is at most its largest absolute
    row sum, which is at most 1."""
    amax = X.abs().amax(dim=(-2, -1), keepdim=True)
    X = X / amax.clamp_min(torch.finfo(X.dtype).tiny)  # overflow-safe, as normalize_frobenius
    A = X @ X.mT  # (..., m, m)
    d = A.abs().sum(dim=-1).clamp_min(eps).rsqrt()  # (..., m); a zero row stays zero
    return X * d.unsqueeze(-1), A * d.unsqueeze(-1) * d.unsqueeze(-2)


def newton_schulz(
    G: Tensor,
    steps: int = 5,
    coefficients: str | CoefficientSchedule = "jordan",
    compute_dtype: torch.dtype | None = None,
    eps: float = 1e-7,
) -> Tensor:
    """Quintic Newton-Schulz: ``X <- a X + (b A + c A^2) X``, ``A = X X^T``, per step.

    Wide orientation is used internally (a tall input is transposed), so the
    Gram matrix ``A`` is the small ``min(m, n)`` square.

    Args:
        G: a matrix ``(m, n)`` or a batch ``(..., m, n)``.
        steps: number of quintic steps (>= 1).
        coefficients: a name from :data:`SCHEDULES` or a schedule.
        compute_dtype: dtype of the iteration; default bf16 on CUDA, otherwise
            float32 (float64 stays float64).
        eps: a floor on the divisor ``||X||_F * norm_scale`` of the first normalization
            (:func:`normalize_frobenius`); it only guards a zero matrix.
    """
    G = check_matrix(G)
    check_int("steps", steps, 1)
    sched = get_schedule(coefficients)
    if G.numel() == 0:
        return torch.zeros_like(G)
    X = G.to(default_compute_dtype(G, compute_dtype))
    transposed = X.shape[-2] > X.shape[-1]
    if transposed:
        X = X.mT
    A0 = None
    if sched.precondition == "aol":
        X, A0 = _aol(X, eps)
    else:
        X = normalize_frobenius(X, sched.norm_scale, eps)
    for i in range(steps):
        a, b, c = sched.at(i)
        A = X @ X.mT if A0 is None or i else A0  # (..., m, m), m <= n
        B = b * A + c * (A @ A)  # (..., m, m)
        X = a * X + B @ X  # (..., m, n)
    if transposed:
        X = X.mT
    return X.to(G.dtype)


def gram_newton_schulz(
    G: Tensor,
    steps: int = 5,
    coefficients: str | CoefficientSchedule = "polar_express",
    compute_dtype: torch.dtype | None = None,
    restart_after: int | None = 2,
    eps: float = 1e-7,
) -> Tensor:
    """Quintic Newton-Schulz on the Gram matrix, applied to the long side once.

    With ``X_0`` wide (``m <= n``) and ``R_k = X_k X_k^T``, every step of the
    quintic iteration is ``X_{k+1} = P_k X_k`` with ``P_k = a I + b R_k + c R_k^2``,
    a polynomial in ``R_k``; so ``X_k = Q_k X_0`` with ``Q_{k+1} = P_k Q_k`` and
    ``R_{k+1} = P_k R_k P_k``. Only ``m x m`` products are formed until the
    final ``Q_K X_0``. After ``restart_after`` steps, ``X`` is formed and ``R``
    recomputed from it, so that round-off accumulated in ``Q`` does not grow
    (the restart of Dao-AILab/gram-newton-schulz). The Gram matrices are kept
    in at least float32, whatever ``compute_dtype`` is, and so are the products
    that form ``R`` and apply ``Q``: ``Q`` is a polynomial of high degree in ``R``
    (entries up to ~1e2), so bf16 rounding of ``R`` or ``Q`` is amplified, and
    with it singular values reached 1e6 on ill-conditioned inputs. ``X`` itself
    is stored in ``compute_dtype``.

    Mathematically it equals :func:`newton_schulz` with the same schedule.
    """
    G = check_matrix(G)
    check_int("steps", steps, 1)
    check_optional_int("restart_after", restart_after, 1)
    sched = get_schedule(coefficients)
    if G.numel() == 0:
        return torch.zeros_like(G)
    dtype = default_compute_dtype(G, compute_dtype)
    gram_dtype = at_least_float32(dtype)
    X = G.to(dtype)
    transposed = X.shape[-2] > X.shape[-1]
    if transposed:
        X = X.mT
    if sched.precondition == "aol":
        X, _ = _aol(X, eps)  # R is formed below in the Gram dtype
    else:
        X = normalize_frobenius(X, sched.norm_scale, eps)
    m = X.shape[-2]
    eye = torch.eye(m, dtype=gram_dtype, device=X.device)
    Xg = X.to(gram_dtype)
    R = Xg @ Xg.mT  # (..., m, m)
    Q: Tensor | None = None  # None stands for the identity
    for i in range(steps):
        a, b, c = sched.at(i)
        P = a * eye + b * R + c * (R @ R)  # (..., m, m), a polynomial in R: symmetric
        Q = P if Q is None else P @ Q
        if restart_after is not None and i + 1 == restart_after and i + 1 < steps:
            X = (Q @ X.to(gram_dtype)).to(dtype)  # (..., m, n)
            Xg = X.to(gram_dtype)
            R = Xg @ Xg.mT
            Q = None
        elif i + 1 < steps:
            R = P @ R @ P
    if Q is not None:
        X = (Q @ X.to(gram_dtype)).to(dtype)
    if transposed:
        X = X.mT
    return X.to(G.dtype)


def polar(
    G: Tensor,
    method: str = "newton_schulz",
    steps: int | None = None,
    *,
    coefficients: str | CoefficientSchedule | None = None,
    compute_dtype: torch.dtype | None = None,
) -> Tensor:
    """The polar factor ``U V^T`` of ``G = U diag(s) V^T``, or an approximation of it.

    Args:
        G: a matrix ``(m, n)`` or a batch ``(..., m, n)``; tall and wide both work.
        method: one of :data:`POLAR_METHODS`: ``"svd"`` (exact, float64; the
            reference), ``"newton_schulz"`` (Jordan's quintic, the default),
            ``"polar_express"``, ``"gram_newton_schulz"``.
        steps: iteration count for the iterative methods (default 5); must be
            ``None`` for ``"svd"``.
        coefficients: override the method's coefficient schedule (a name from
            :data:`SCHEDULES` or a :class:`CoefficientSchedule`).
        compute_dtype: dtype of the iteration (default: bf16 on CUDA, else
            float32, float64 kept).

    Returns:
        A tensor of ``G``'s shape and dtype. A zero matrix gives zeros.

    Example:
        >>> import torch, normopt
        >>> G = torch.randn(4, 6, dtype=torch.float64)
        >>> O = normopt.linalg.polar(G, method="svd")
        >>> torch.allclose(O @ O.mT, torch.eye(4, dtype=torch.float64))
        True
    """
    check_polar_method("method", method)
    if method == "svd":
        if steps is not None:
            raise ValueError("steps: the 'svd' method is exact and takes no step count")
        return polar_svd(G)
    n_steps = DEFAULT_STEPS[method] if steps is None else steps
    sched = coefficients if coefficients is not None else DEFAULT_SCHEDULE[method]
    if method == "gram_newton_schulz":
        return gram_newton_schulz(G, n_steps, sched, compute_dtype)
    return newton_schulz(G, n_steps, sched, compute_dtype)


def polar_flops(m: int, n: int, steps: int = 5, method: str = "newton_schulz") -> int:
    """Dense matmul FLOPs of one polar factor of an ``m x n`` matrix (SPEC A5).

    Quintic Newton-Schulz: ``steps * (4 s^2 l + 2 s^3)`` with ``s = min(m, n)``,
    ``l = max(m, n)``. Gram Newton-Schulz (restart after 2): the Gram products
    ``2 s^2 l`` at the start and at the restart, ``2 s^2 l`` for each
    application of ``Q`` to the long side (two), and ``6 s^3`` per step for
    ``R^2``, ``P Q`` and ``P R P`` (two products).
    """
    s, lg = min(m, n), max(m, n)
    if method in ("newton_schulz", "polar_express"):
        return steps * (4 * s * s * lg + 2 * s**3)
    if method == "gram_newton_schulz":
        long_side = 2 * (2 * s * s * lg) + (2 * s * s * lg if steps > 2 else 0)
        return long_side + steps * 8 * s**3
    raise ValueError(f"method: no FLOP count for {method!r}")
