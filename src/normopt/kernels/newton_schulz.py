"""Fast paths for the quintic Newton-Schulz polar iteration (SPEC A5), each beside its reference.

All four compute the same map as :func:`normopt.linalg.newton_schulz` with a
given per-step coefficient list ``[(a, b, c), ...]``: cast to the compute dtype,
transpose if tall, ``X <- X / max(||X||_F * norm_scale, eps)``
(:func:`normopt.linalg.polar.normalize_frobenius`), then per step
``A = X X^T; X <- a X + (b A + c A^2) X``.

- :func:`quintic_reference`: plain torch ops in the order of
  :func:`normopt.linalg.newton_schulz` (bitwise equal to it; the tests check).
- :func:`quintic_fused`: the same steps with the scalars moved into the GEMMs:
  ``B = baddbmm(A, A, A, beta=b, alpha=c)`` and ``X = baddbmm(X, B, X, beta=a)``.
  Three GEMMs and no elementwise pass per step (the reference has five
  elementwise passes, two of them over the long side); each result is rounded
  once, from the GEMM's float32 accumulator, so in bf16 it is, if anything,
  more accurate. The normalization runs in the input's precision (>= float32)
  before the cast.
- :func:`quintic_compiled`: :func:`quintic_fused` (normalization included) under
  ``torch.compile(dynamic=False, fullgraph=True)``, one compiled function per
  (shape, dtype, device, coefficients); falls back to :func:`quintic_fused`, with
  one warning, if compiling fails.
- ``quintic_triton`` (:mod:`normopt.kernels.triton_sym`): the symmetric products
  ``X X^T`` and ``b A + c A A`` computed on one triangle of tiles only.

:func:`quintic_polar` dispatches on :func:`normopt.kernels.select_backend`.
"""

from __future__ import annotations

import itertools
import os
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from normopt.kernels.coefficients import Coefficients, check_coefficients, quintic_start
from normopt.kernels.dispatch import BACKENDS, select_backend
from normopt.linalg.polar import (
    CoefficientSchedule,
    default_compute_dtype,
    newton_schulz,
)

__all__ = [
    "Coefficients",
    "clear_compiled",
    "compiled_cache_size",
    "default_compute_dtype",
    "quintic_compiled",
    "quintic_fused",
    "quintic_polar",
    "quintic_reference",
]


# -- the reference ---------------------------------------------------------------------------
def quintic_reference(
    G: Tensor,
    coefficients: Coefficients,
    norm_scale: float = 1.0,
    eps: float = 1e-7,
    compute_dtype: torch.dtype | None = None,
) -> Tensor:
    """The quintic iteration in plain torch ops, one step per coefficient triple (the reference):
    :func:`normopt.linalg.newton_schulz` itself, with these coefficients."""
    coeffs = check_coefficients(G, coefficients)
    schedule = CoefficientSchedule("custom", coeffs, norm_scale=norm_scale)
    return newton_schulz(G, len(coeffs), schedule, compute_dtype, eps)


# -- fused: the scalars ride in the GEMM epilogues -----------------------------------------------
def _fused_body(
    G: Tensor,
    coeffs: tuple[tuple[float, float, float], ...],
    norm_scale: float,
    eps: float,
    compute_dtype: torch.dtype,
) -> Tensor:
    X, transposed = quintic_start(G, norm_scale, eps, compute_dtype)  # (B, m, n), m <= n
    for a, b, c in coeffs:
        A = torch.bmm(X, X.mT)  # (B, m, m)
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b A + c A A
        X = torch.baddbmm(X, B, X, beta=a)  # a X + B X, (B, m, n)
    if transposed:
        X = X.mT
    return X.to(G.dtype)


def quintic_fused(
    G: Tensor,
    coefficients: Coefficients,
    norm_scale: float = 1.0,
    eps: float = 1e-7,
    compute_dtype: torch.dtype | None = None,
) -> Tensor:
    """The quintic iteration with ``baddbmm``: three GEMMs, no elementwise pass, per step."""
    coeffs = check_coefficients(G, coefficients)
    if G.numel() == 0:
        return torch.zeros_like(G)
    G3 = G if G.ndim == 3 else G.reshape(-1, *G.shape[-2:])  # (B, r, c)
    out = _fused_body(G3, coeffs, norm_scale, eps, default_compute_dtype(G, compute_dtype))
    return out if G.ndim == 3 else out.reshape(G.shape)


# -- compiled -------------------------------------------------------------------------------------
_compiled: dict[tuple[Any, ...], Callable[[Tensor], Tensor]] = {}
_failed: set[tuple[Any, ...]] = set()
_serial = itertools.count()


def clear_compiled() -> None:
    """Drop every compiled function (and the record of failed compiles)."""
    _compiled.clear()
    _failed.clear()


def compiled_cache_size() -> int:
    """How many compiled functions are cached (one per shape, dtype, device, coefficients)."""
    return len(_compiled)


def _fresh_function(
    coeffs: tuple[tuple[float, float, float], ...],
    norm_scale: float,
    eps: float,
    compute_dtype: torch.dtype,
) -> Callable[[Tensor], Tensor]:
    def body(G3: Tensor) -> Tensor:
        return _fused_body(G3, coeffs, norm_scale, eps, compute_dtype)

    # torch.compile keeps its cache, and its recompile limit (8 by default), on the code
    # object: give every (shape, ...) its own code object, so that a model with many shapes
    # never hits the limit and silently falls back to eager.
    code = body.__code__.replace(co_name=f"normopt_quintic_{next(_serial)}")
    return types.FunctionType(code, body.__globals__, code.co_name, None, body.__closure__)


def quintic_compiled(
    G: Tensor,
    coefficients: Coefficients,
    norm_scale: float = 1.0,
    eps: float = 1e-7,
    compute_dtype: torch.dtype | None = None,
    *,
    compile_backend: str | Callable[..., Any] = "inductor",
    mode: str | None = None,
) -> Tensor:
    """:func:`quintic_fused` under ``torch.compile(dynamic=False, fullgraph=True)``.

    One compiled function per (shape, dtype, device, coefficients, compute dtype),
    built on first use. ``mode`` defaults to ``NORMOPT_COMPILE_MODE`` (unset: torch's
    default mode; ``"max-autotune-no-cudagraphs"`` lets inductor tune its own GEMMs).
    If compiling or the compiled call fails, the eager :func:`quintic_fused` runs
    instead (one warning per key, and that key is never compiled again).
    """
    coeffs = check_coefficients(G, coefficients)
    if G.numel() == 0:
        return torch.zeros_like(G)
    cdtype = default_compute_dtype(G, compute_dtype)
    G3 = G.reshape(-1, *G.shape[-2:])  # (B, r, c)
    if mode is None:
        mode = os.environ.get("NORMOPT_COMPILE_MODE") or None
    key = (
        tuple(G3.shape),
        G3.dtype,
        G3.device,
        coeffs,
        float(norm_scale),
        float(eps),
        cdtype,
        compile_backend,
        mode,
    )
    if key in _failed:
        return _fused_body(G3, coeffs, norm_scale, eps, cdtype).reshape(G.shape)
    fn = _compiled.get(key)
    if fn is None:
        body = _fresh_function(coeffs, float(norm_scale), float(eps), cdtype)
        fn = _compiled[key] = torch.compile(
            body, dynamic=False, fullgraph=True, backend=compile_backend, mode=mode
        )
    try:
        out = fn(G3)
    except Exception as exc:  # compile errors surface on the first call
        _failed.add(key)
        _compiled.pop(key, None)
        warnings.warn(
            f"normopt.kernels: torch.compile of the Newton-Schulz iteration failed for shape "
            f"{tuple(G3.shape)} ({type(exc).__name__}: {exc}); running it eagerly",
            RuntimeWarning,
            stacklevel=2,
        )
        out = _fused_body(G3, coeffs, norm_scale, eps, cdtype)
    return out.reshape(G.shape)


# -- dispatch -------------------------------------------------------------------------------------
def quintic_polar(
    G: Tensor,
    coefficients: Coefficients,
    norm_scale: float = 1.0,
    eps: float = 1e-7,
    compute_dtype: torch.dtype | None = None,
    backend: str | None = None,
) -> Tensor:
    """The quintic polar iteration on the backend chosen for ``G``'s device.

    Args:
        G: a matrix ``(m, n)`` or a batch ``(..., m, n)``.
        coefficients: one ``(a, b, c)`` per step (e.g. ``get_schedule(name).at(i)``
            for ``i < steps``).
        norm_scale, eps: the normalization ``X / max(||X||_F * norm_scale, eps)``.
        compute_dtype: the iteration's dtype (default bf16 on CUDA, else float32).
        backend: one of :data:`normopt.kernels.BACKENDS`, or ``None``/``"auto"``
            for :func:`normopt.kernels.select_backend`.
    """
    name = select_backend(G.device) if backend in (None, "auto") else str(backend)
    if name not in BACKENDS:
        raise ValueError(f"backend: unknown backend {name!r}; expected one of {list(BACKENDS)}")
    if name == "compiled" and torch.compiler.is_compiling():
        name = "fused"  # inside a user's torch.compile: that compile fuses it already
    if name == "reference":
        return quintic_reference(G, coefficients, norm_scale, eps, compute_dtype)
    if name == "compiled":
        return quintic_compiled(G, coefficients, norm_scale, eps, compute_dtype)
    if name == "triton":
        from normopt.kernels import triton_sym

        if triton_sym.usable(G.device):
            return triton_sym.quintic_triton(G, coefficients, norm_scale, eps, compute_dtype)
        triton_sym.warn_unusable(G.device)
    return quintic_fused(G, coefficients, norm_scale, eps, compute_dtype)
