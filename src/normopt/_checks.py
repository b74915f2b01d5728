"""Argument validation shared by every layer (DESIGN.md: the bottom of the layer list).

Each check raises ``ValueError`` whose message starts with the argument's name
(``"lr: expected a value in [0.0, inf], got -1"``) and returns the value it
accepted, so a call reads ``lr = check_number("lr", lr)``. This module imports
torch and the standard library only, never ``normopt``: every layer, linalg
included, may import it.

The checks run when arguments are given (constructors, ``_check_group``), not
in a step: :func:`check_number` may call ``.item()`` on a one-element tensor.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "POLAR_METHODS",
    "at_least_float32",
    "check_betas",
    "check_bool",
    "check_dtype_name",
    "check_int",
    "check_number",
    "check_optional_int",
    "check_polar_method",
    "check_real_tensor",
]

# The polar-factor methods of normopt.linalg.polar (documented there). Kept here so that
# every layer validates a method name against one tuple; linalg re-exports it.
POLAR_METHODS = ("svd", "newton_schulz", "polar_express", "gram_newton_schulz")


def check_number(
    name: str,
    value: Any,
    low: float = 0.0,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Validate a real, finite hyperparameter, raising ``ValueError`` that names it."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name}: expected a number, got a tensor of shape {tuple(value.shape)}"
            )
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    if math.isinf(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    lo_ok = value > low if low_open else value >= low
    hi_ok = value < high if high_open else value <= high
    if not (lo_ok and hi_ok):
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        raise ValueError(f"{name}: expected a value in {lb}{low}, {high}{hb}, got {value!r}")
    return float(value)


def check_betas(name: str, betas: Any) -> tuple[float, float]:
    """Validate a pair ``(beta1, beta2)``, each in ``[0, 1)``."""
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        raise ValueError(f"{name}: expected a pair (beta1, beta2), got {betas!r}")
    b1 = check_number(f"{name}[0]", betas[0], 0.0, 1.0, high_open=True)
    b2 = check_number(f"{name}[1]", betas[1], 0.0, 1.0, high_open=True)
    return (b1, b2)


def check_bool(name: str, value: Any) -> bool:
    """Validate a flag: ``True`` or ``False`` (not a string such as ``"no"``, which is truthy)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return value


def check_int(name: str, value: Any, low: int = 0) -> int:
    """Validate an integer ``>= low`` (a ``bool`` is not one, nor is ``2.0``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return value


def check_optional_int(name: str, value: Any, low: int = 0) -> int | None:
    """``None``, or an integer ``>= low`` as in :func:`check_int`."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
        raise ValueError(f"{name}: expected None or an integer >= {low}, got {value!r}")
    return value


def check_polar_method(name: str, method: Any) -> str:
    """Validate a polar-factor method name, one of :data:`POLAR_METHODS`."""
    if method not in POLAR_METHODS:
        raise ValueError(
            f"{name}: unknown polar method {method!r}; expected one of {list(POLAR_METHODS)}"
        )
    return method


def check_dtype_name(name: str, value: Any) -> torch.dtype | None:
    """``None``, or the torch dtype named by ``value`` (``"bfloat16"`` -> ``torch.bfloat16``).

    Names, not dtypes, are what a param group stores: a state dict holds plain values.
    """
    if value is None:
        return None
    dtype = getattr(torch, value, None) if isinstance(value, str) else None
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{name}: expected None or a dtype name like 'bfloat16', got {value!r}")
    return dtype


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """The dtype to compute or keep state in: at least float32.

    float64 and complex dtypes are kept; everything else (bf16, fp16, the float8s, and
    integer dtypes) becomes float32. Reductions, factorizations and momentum run in
    it: a bf16/fp16 buffer loses the small increments ``(1 - beta) g`` momentum is made
    of, and low-precision matmuls on a CPU are slow and buy nothing.
    """
    return dtype if dtype == torch.float64 or dtype.is_complex else torch.float32


def check_real_tensor(name: str, x: Any) -> Tensor:
    """``x`` if it is a dense, real, floating-point tensor; else a ``TypeError`` naming ``name``
    (the kind every norm and polar factor computes on)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{name}: complex tensors are not supported (dtype {x.dtype})")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.layout != torch.strided:
        raise TypeError(
            f"{name}: sparse tensors are not supported (layout {x.layout}); call .to_dense() first"
        )
    return x
