"""Which fast path runs where: the switches, the one-time inductor probe, the choice.

Every fast path in :mod:`normopt.kernels` is optional. The rules:

- On the CPU (and any device that is not CUDA) ``"fused"`` runs: eager ``bmm`` and
  ``baddbmm`` with the scalars in the GEMM epilogue. It is faster than the reference
  on the CPU too (10-45% on Muon-sized stacks, BENCHMARKS.md) and dispatches 3 aten
  ops per step instead of about 15, which is what a step's launch overhead is made of.
  The reference (:func:`normopt.linalg.newton_schulz`) stays beside it, forced with
  ``"reference"``, and the tests compare the two per dtype.
- On CUDA the quintic iteration runs ``"compiled"`` (``torch.compile``, inductor)
  when compiling is enabled and a one-time probe found a working inductor on
  torch >= 2.6; otherwise ``"fused"`` (eager, ``baddbmm`` with the scalars in
  the GEMM epilogue). ``"triton"`` (symmetric products) is never chosen by
  itself: it runs only when forced, until a benchmark on a GPU shows it faster.
- Merging transposed shapes into one stack (:mod:`normopt.kernels.stacking`) is
  on by default on every device (the result is bit for bit the transpose of the
  unmerged one; fewer stacks, fewer launches).

Switches, strongest first:

- :func:`set_backend` (or the :func:`backend` context manager) with one of
  ``reference | fused | compiled | triton``: forces a backend everywhere
  (``None`` or ``"auto"``: the rules above).
- ``NORMOPT_POLAR_BACKEND``: the same from the environment, when no backend was
  set from code.
- ``NORMOPT_DISABLE_COMPILE=1`` or :func:`set_compile_enabled` ``(False)``: never
  compile (``"auto"`` then picks ``"fused"`` on CUDA).
- ``NORMOPT_MERGE_TRANSPOSED=0|1`` or :func:`set_merge_transposed`: merging off/on
  on every device.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = [
    "BACKENDS",
    "backend",
    "compile_available",
    "compile_enabled",
    "merge_transposed_enabled",
    "reset_probe",
    "select_backend",
    "set_backend",
    "set_compile_enabled",
    "set_merge_transposed",
    "torch_at_least",
]

BACKENDS = ("reference", "fused", "compiled", "triton")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

_forced_backend: str | None = None
_compile_switch: bool = True
_merge_switch: bool | None = None
_probe_results: dict[str, bool] = {}


def torch_at_least(major: int, minor: int, version: str | None = None) -> bool:
    """Whether torch's version (or ``version``) is at least ``major.minor``."""
    text = torch.__version__ if version is None else version
    parts = text.split("+")[0].split(".")
    try:
        have = (int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0))
    except (IndexError, ValueError):
        return False
    return have >= (major, minor)


def _check_backend(name: str, where: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{where}: unknown backend {name!r}; expected one of {list(BACKENDS)}")
    return name


def set_backend(name: str | None) -> None:
    """Force the polar backend everywhere (``None`` or ``"auto"``: choose per device)."""
    global _forced_backend
    _forced_backend = None if name in (None, "auto") else _check_backend(str(name), "set_backend")


@contextmanager
def backend(name: str | None) -> Iterator[None]:
    """Context manager form of :func:`set_backend`; restores the previous choice."""
    global _forced_backend
    previous = _forced_backend
    set_backend(name)
    try:
        yield
    finally:
        _forced_backend = previous


def set_compile_enabled(enabled: bool) -> None:
    """Allow (default) or forbid ``torch.compile`` in the automatic choice."""
    global _compile_switch
    _compile_switch = bool(enabled)


def compile_enabled() -> bool:
    """False when ``NORMOPT_DISABLE_COMPILE`` is set to a true value or compiling was switched off."""
    env = os.environ.get("NORMOPT_DISABLE_COMPILE", "").strip().lower()
    return _compile_switch and env not in _TRUE


def set_merge_transposed(enabled: bool | None) -> None:
    """Merge transposed shapes into one Muon stack: True, False, or None (the default: on)."""
    global _merge_switch
    _merge_switch = None if enabled is None else bool(enabled)


def merge_transposed_enabled(device: torch.device) -> bool:
    """Whether Muon merges ``(m, n)`` and ``(n, m)`` matrices into one stack on ``device``."""
    if _merge_switch is not None:
        return _merge_switch
    env = os.environ.get("NORMOPT_MERGE_TRANSPOSED", "").strip().lower()
    return env not in _FALSE  # on by default: one stack instead of two, fewer launches


def reset_probe() -> None:
    """Forget the inductor probe's results (tests; after changing the environment)."""
    _probe_results.clear()


def _probe_inductor(device: torch.device) -> bool:
    # Compile one tiny function with inductor on the device and compare it with eager.
    # Anything going wrong (no triton, an old GPU, no C++ compiler) means "no".
    if not torch_at_least(2, 6):
        return False
    try:
        if device.type == "cuda":
            from torch.utils._triton import has_triton

            if not has_triton():
                return False

        def tiny(x: torch.Tensor) -> torch.Tensor:
            return 2.0 * x + (x @ x.mT) @ x

        x = torch.randn(2, 16, 32, device=device)
        fn = torch.compile(tiny, dynamic=False, fullgraph=True)
        ok = bool(torch.allclose(fn(x), tiny(x), rtol=1e-2, atol=1e-2))
    except Exception as exc:  # any failure means: no compiled path
        warnings.warn(
            f"normopt.kernels: torch.compile does not work on {device.type} here "
            f"({type(exc).__name__}: {exc}); using the eager fast path",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return ok


def compile_available(device: torch.device) -> bool:
    """Whether inductor works on ``device``'s type (probed once per device type)."""
    key = device.type
    if key not in _probe_results:
        _probe_results[key] = _probe_inductor(device)
    return _probe_results[key]


def select_backend(device: torch.device) -> str:
    """The backend the quintic iteration uses for tensors on ``device`` (see the module doc)."""
    if _forced_backend is not None:
        return _forced_backend
    env = os.environ.get("NORMOPT_POLAR_BACKEND", "").strip().lower()
    if env and env != "auto":
        return _check_backend(env, "NORMOPT_POLAR_BACKEND")
    if device.type != "cuda":
        return "fused"
    if compile_enabled() and compile_available(device):
        return "compiled"
    return "fused"
