"""The one polar entry point: :func:`normopt.linalg.polar`, with the fast paths behind it.

Every norm and optimizer that needs ``U V^T`` calls :func:`polar` here. It has
the signature, defaults and errors of :func:`normopt.linalg.polar` plus a
``backend``. The quintic methods (``"newton_schulz"``, ``"polar_express"``, or any
coefficient schedule) run on the backend :func:`normopt.kernels.select_backend`
picks for the tensor's device; ``"svd"`` and ``"gram_newton_schulz"`` have no
fast path and always run :func:`normopt.linalg.polar`. On the ``"reference"``
backend (the CPU's default) the result is :func:`normopt.linalg.polar`'s, bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normopt._checks import check_int
from normopt.kernels.dispatch import BACKENDS, select_backend
from normopt.kernels.newton_schulz import quintic_polar
from normopt.linalg.polar import (
    DEFAULT_SCHEDULE,
    DEFAULT_STEPS,
    CoefficientSchedule,
    check_matrix,
    get_schedule,
)
from normopt.linalg.polar import polar as polar_reference

__all__ = ["QUINTIC_METHODS", "polar"]

# The polar methods that are one quintic iteration with a coefficient schedule, i.e. the ones
# normopt.kernels has fast paths for. Their default schedules and step counts are linalg's.
QUINTIC_METHODS = ("newton_schulz", "polar_express")


def polar(
    G: Tensor,
    method: str = "newton_schulz",
    steps: int | None = None,
    *,
    coefficients: str | CoefficientSchedule | None = None,
    compute_dtype: torch.dtype | None = None,
    backend: str | None = None,
) -> Tensor:
    """The polar factor ``U V^T`` of ``G`` (or an approximation), on the fastest backend.

    ``G = U diag(s) V^T``; for the quintic methods, with ``(a_i, b_i, c_i)`` the
    schedule's step ``i`` (SPEC A5)::

        X_0 = G / (||G||_F * norm_scale),   A = X_i X_i^T,
        X_{i+1} = a_i X_i + (b_i A + c_i A^2) X_i,   i < steps.

    Args:
        G: a matrix ``(m, n)`` or a batch ``(..., m, n)``; tall and wide both work.
        method: one of :data:`normopt.linalg.POLAR_METHODS` (default ``"newton_schulz"``).
        steps: iteration count (default 5); must be ``None`` for ``"svd"``.
        coefficients: override the method's coefficient schedule (a name from
            :data:`normopt.linalg.SCHEDULES` or a :class:`~normopt.linalg.CoefficientSchedule`).
        compute_dtype: dtype of the iteration (default: bf16 on CUDA, else
            float32, float64 kept).
        backend: one of :data:`normopt.kernels.BACKENDS`, or ``None``/``"auto"`` for
            :func:`normopt.kernels.select_backend` (which a forced backend overrides).
            Used by the quintic methods only.

    Returns:
        A tensor of ``G``'s shape and dtype, as :func:`normopt.linalg.polar` returns.

    Example:
        >>> import torch
        >>> from normopt import kernels, linalg
        >>> G = torch.randn(4, 6)
        >>> # fixed on branch i20-kernels (the CPU default changes there)
        >>> torch.equal(kernels.polar(G), linalg.polar(G))  # doctest: +SKIP
        True
    """
    if backend not in (None, "auto") and backend not in BACKENDS:
        raise ValueError(f"backend: unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    if method not in QUINTIC_METHODS:  # no fast path (or not a method): linalg decides
        return polar_reference(
            G, method, steps, coefficients=coefficients, compute_dtype=compute_dtype
        )
    G = check_matrix(G)
    name = select_backend(G.device) if backend in (None, "auto") else str(backend)
    if name == "reference":
        return polar_reference(
            G, method, steps, coefficients=coefficients, compute_dtype=compute_dtype
        )
    # The checks of normopt.linalg.newton_schulz, in its order, so that errors match.
    n_steps = DEFAULT_STEPS[method] if steps is None else steps
    check_int("steps", n_steps, 1)
    sched = get_schedule(DEFAULT_SCHEDULE[method] if coefficients is None else coefficients)
    if sched.precondition != "frobenius":  # the fast paths normalize by ||G||_F only
        return polar_reference(
            G, method, steps, coefficients=coefficients, compute_dtype=compute_dtype
        )
    coeffs = [sched.at(i) for i in range(n_steps)]  # plain floats: no device reads
    return quintic_polar(G, coeffs, sched.norm_scale, compute_dtype=compute_dtype, backend=name)
