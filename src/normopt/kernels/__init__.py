"""Fast paths for the polar iteration and Muon's stacks, each beside its reference.

:func:`polar` is the one entry point for ``U V^T``: it takes the arguments of
:func:`normopt.linalg.polar` and runs the quintic methods on the backend chosen
for the tensor's device (:mod:`normopt.kernels.entry`). Every norm that needs
``U V^T`` reaches the fast paths through it, and so should every optimizer.

No fast path is needed for correctness: every function has a plain-torch
reference (:func:`quintic_reference`, the unmerged stack plan,
:func:`normopt.kernels.triton_sym.sym_product_reference`), and
:func:`select_backend` picks a fast path only on CUDA. See
:mod:`normopt.kernels.dispatch` for the rules and the switches
(``NORMOPT_DISABLE_COMPILE``, ``NORMOPT_POLAR_BACKEND``, ``NORMOPT_MERGE_TRANSPOSED``).

Layering: ``linalg < kernels < norms < optim``. This layer imports
:mod:`normopt.linalg` (the references, the coefficient schedules) and never a
layer above it.
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
from normopt.kernels.entry import QUINTIC_METHODS, polar
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
    "QUINTIC_METHODS",
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
    "polar",
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
