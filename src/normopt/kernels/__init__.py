"""Optional fast paths for the polar iteration and Muon's stacks, each beside its reference.

Nothing here is needed for correctness: every function has a plain-torch
reference (:func:`quintic_reference`, the unmerged stack plan,
:func:`normopt.kernels.triton_sym.sym_product_reference`), and
:func:`select_backend` picks a fast path only on CUDA. See
:mod:`normopt.kernels.dispatch` for the rules and the switches
(``NORMOPT_DISABLE_COMPILE``, ``NORMOPT_POLAR_BACKEND``, ``NORMOPT_MERGE_TRANSPOSED``).

This layer imports torch only (never :mod:`normopt.linalg`); :class:`normopt.Muon`
passes it the coefficient schedule.
"""

from normopt.kernels.dispatch import (
    BACKENDS,
    backend,
    compile_available,
    compile_enabled,
    merge_transposed_enabled,
    reset_probe,
    select_backend,
    set_backend,
    set_compile_enabled,
    set_merge_transposed,
)
from normopt.kernels.newton_schulz import (
    clear_compiled,
    compiled_cache_size,
    default_compute_dtype,
    quintic_compiled,
    quintic_fused,
    quintic_polar,
    quintic_reference,
)
from normopt.kernels.stacking import StackPlan, gather, plan_stacks, scatter_one

__all__ = [
    "BACKENDS",
    "StackPlan",
    "backend",
    "clear_compiled",
    "compile_available",
    "compile_enabled",
    "compiled_cache_size",
    "default_compute_dtype",
    "gather",
    "merge_transposed_enabled",
    "plan_stacks",
    "quintic_compiled",
    "quintic_fused",
    "quintic_polar",
    "quintic_reference",
    "reset_probe",
    "scatter_one",
    "select_backend",
    "set_backend",
    "set_compile_enabled",
    "set_merge_transposed",
]
