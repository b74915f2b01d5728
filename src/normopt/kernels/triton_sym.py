"""A Triton kernel for the symmetric products of Newton-Schulz, with its torch reference beside it.

Two of the three GEMMs of a quintic step have a symmetric result: ``A = X X^T``
and ``B = b A + c A A`` (``A`` is symmetric, so ``A A = A A^T``). The kernel
:func:`sym_product` computes ``alpha X X^T + beta D`` (``D`` symmetric, or none)
on the tiles of one triangle only and writes each tile and its mirror image,
so a quintic step costs about ``3 m^2 n + m^3`` FLOPs instead of
``4 m^2 n + 2 m^3`` (SPEC A5). The result is exactly symmetric. The third
product ``a X + B X`` stays a cuBLAS ``baddbmm``.

Reference: :func:`sym_product_reference` (``alpha X X^T + beta D`` in torch).
The tests run the kernel's math on the CPU under Triton's interpreter
(``TRITON_INTERPRET=1``); on CUDA it is compiled as usual. It is never chosen
automatically (:func:`normopt.kernels.select_backend`): only
``set_backend("triton")`` or ``NORMOPT_POLAR_BACKEND=triton`` runs it, until a
benchmark on a GPU shows it faster than cuBLAS for the shapes that matter. The
tile sizes are untuned first guesses for Hopper (``BLOCK=128, BLOCK_K=64``).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Any

import torch
from torch import Tensor

from normopt.kernels.coefficients import Coefficients, check_coefficients, quintic_start
from normopt.linalg.polar import default_compute_dtype

__all__ = [
    "available",
    "interpreting",
    "quintic_triton",
    "sym_product",
    "sym_product_reference",
    "usable",
]

_kernels: dict[bool, Any] = {}
_warned: set[str] = set()


def available() -> bool:
    """Whether the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether Triton's CPU interpreter is switched on (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on")


def usable(device: torch.device) -> bool:
    """Whether the kernel can run on ``device``: CUDA, or the CPU under the interpreter."""
    if not available():
        return False
    return device.type == "cuda" or (device.type == "cpu" and interpreting())


def warn_unusable(device: torch.device) -> None:
    key = device.type
    if key not in _warned:
        _warned.add(key)
        why = "triton is not installed" if not available() else f"no Triton on {key}"
        warnings.warn(
            f"normopt.kernels: the 'triton' backend was asked for but {why}; "
            "using the fused eager backend",
            RuntimeWarning,
            stacklevel=3,
        )


def _kernel() -> Any:
    # Imported on first use (not with normopt): triton.jit reads TRITON_INTERPRET when it
    # decorates, so the module is reloaded when that switch changed since its import.
    import importlib

    key = interpreting()
    if key not in _kernels:
        module = importlib.import_module("normopt.kernels._triton_kernels")
        if _kernels:
            module = importlib.reload(module)
        _kernels[key] = module.sym_kernel
    return _kernels[key]


def sym_product_reference(
    X: Tensor, D: Tensor | None = None, alpha: float = 1.0, beta: float = 0.0
) -> Tensor:
    """``alpha X X^T + beta D`` in torch (the reference of :func:`sym_product`)."""
    out = alpha * (X @ X.mT)
    return out if D is None else out + beta * D


def sym_product(
    X: Tensor,
    D: Tensor | None = None,
    alpha: float = 1.0,
    beta: float = 0.0,
    *,
    block: int | None = None,
    block_k: int | None = None,
    num_warps: int = 8,
    num_stages: int = 3,
) -> Tensor:
    """``alpha X X^T + beta D`` for ``X`` of shape ``(B, m, k)``, computing one triangle of tiles.

    ``D`` (``(B, m, m)``) must be symmetric: only its upper-triangle tiles are read.
    Accumulates in float32; the result has ``X``'s dtype and is exactly symmetric.
    ``block``/``block_k`` default to 128/64 on CUDA and 16/16 under the interpreter.
    """
    if X.ndim != 3:
        raise ValueError(f"X: expected (B, m, k), got shape {tuple(X.shape)}")
    if X.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"X: the Triton kernel takes fp16, bf16 or fp32, got {X.dtype}")
    nb, m, k = X.shape
    if D is not None and tuple(D.shape) != (nb, m, m):
        raise ValueError(f"D: expected shape {(nb, m, m)}, got {tuple(D.shape)}")
    small = interpreting()
    block = block or (16 if small else 128)
    block_k = block_k or (16 if small else 64)
    C = torch.empty(nb, m, m, dtype=X.dtype, device=X.device)
    if nb == 0 or m == 0:
        return C
    Dt = C if D is None else D
    tiles = triton_cdiv(m, block)
    grid = (tiles, tiles, nb)
    kwargs: dict[str, Any] = {}
    if not small:
        kwargs = {"num_warps": num_warps, "num_stages": num_stages}
    _kernel()[grid](
        X,
        Dt,
        C,
        m,
        k,
        X.stride(0),
        X.stride(1),
        X.stride(2),
        Dt.stride(0),
        Dt.stride(1),
        Dt.stride(2),
        C.stride(0),
        C.stride(1),
        C.stride(2),
        float(alpha),
        float(beta),
        HAS_D=D is not None,
        IEEE=X.dtype == torch.float32,
        UPCAST=small and X.dtype != torch.float32,
        BLOCK=block,
        BLOCK_K=block_k,
        **kwargs,
    )
    return C


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def quintic_triton(
    G: Tensor,
    coefficients: Coefficients,
    norm_scale: float = 1.0,
    eps: float = 1e-7,
    compute_dtype: torch.dtype | None = None,
    **kernel_options: Any,
) -> Tensor:
    """The quintic iteration with :func:`sym_product` for ``X X^T`` and ``b A + c A A``.

    Same map as :func:`normopt.kernels.quintic_fused` (normalization in the input's
    precision, then the compute dtype, which must be fp16, bf16 or fp32).
    """
    coeffs = check_coefficients(G, coefficients)
    if G.numel() == 0:
        return torch.zeros_like(G)
    cdtype = default_compute_dtype(G, compute_dtype)
    G3 = G.reshape(-1, *G.shape[-2:])  # (B, r, c)
    X, transposed = quintic_start(G3, norm_scale, eps, cdtype)
    X = X.contiguous()  # (B, m, n), m <= n
    for a, b, c in coeffs:
        A = sym_product(X, **kernel_options)  # X X^T, (B, m, m)
        B = sym_product(A, A, alpha=c, beta=b, **kernel_options)  # b A + c A A
        X = torch.baddbmm(X, B, X, beta=a)  # a X + B X, (B, m, n)
    if transposed:
        X = X.mT
    return X.to(G.dtype).reshape(G.shape)
