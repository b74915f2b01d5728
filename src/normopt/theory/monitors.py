"""Monitors: cheap per-layer measurements to call from any training loop.

Each monitor is called once per step, ``monitor(step)`` (or
``monitor.update(step)``), records one row per parameter into
``monitor.rows`` (a list of plain dicts with a ``"step"`` and a ``"param"``
key, ready for ``pandas.DataFrame(monitor.rows)`` or ``json.dump``), and
returns the rows of that step. ``every=k`` records every k-th step only.

- :class:`SpectralNormMonitor`: ``||W||_2`` by power iteration warm-started
  from the previous step's singular vector (one or two matrix-vector products
  per step once converged).
- :class:`ConstraintMonitor`: SPEC A9's ratio ``||W|| wd / s``; under
  decoupled weight decay with updates of norm at most ``s`` it is driven to
  ``<= 1`` (``||W|| <= s / wd``).
- :class:`UpdateMonitor`: the RMS of the update ``W_{t+1} - W_t`` and the
  singular values of the direction ``O`` in ``W_{t+1} = (1 - lr wd) W_t - lr O``
  (for Muon, the orthogonalized momentum: its spread shows how far the
  Newton-Schulz iteration is from ``U V^T``). Hooks ``optimizer.step`` or
  compares successive calls.

Parameters are a model (its trainable parameters), a ``{name: tensor}``
mapping or ``(name, tensor)`` pairs. Matrix measurements read a tensor of
ndim > 2 as ``(shape[0], -1)``, as Muon does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from normopt._checks import check_int, check_number
from normopt.linalg import power_iteration
from normopt.norms import Norm, RMSToRMS, Spectral
from normopt.theory.params import Params, as_element, named_tensors, resolve_norms

__all__ = ["Monitor", "SpectralNormMonitor", "ConstraintMonitor", "UpdateMonitor"]


def _matrix(t: Tensor) -> Tensor:
    return t.detach().reshape(t.shape[0], -1)


class Monitor:
    """Base class: ``monitor(step)`` measures, appends rows to ``self.rows`` and returns them."""

    def __init__(self, every: int = 1) -> None:
        self.every = check_int("every", every, 1)
        self.rows: list[dict[str, Any]] = []
        self._calls = 0

    def _measure(self, step: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    def __call__(self, step: int | None = None) -> list[dict[str, Any]]:
        step = self._calls if step is None else int(step)
        self._calls += 1
        if step % self.every:
            return []
        new = self._measure(step)
        self.rows.extend(new)
        return new

    def update(self, step: int | None = None) -> list[dict[str, Any]]:
        """Same as calling the monitor."""
        return self(step)

    def to_rows(self) -> list[dict[str, Any]]:
        """A copy of every row recorded so far."""
        return [dict(r) for r in self.rows]

    def series(self, param: str, key: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of one column for one parameter."""
        rows = [r for r in self.rows if r["param"] == param and key in r]
        return [r["step"] for r in rows], [r[key] for r in rows]

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last row of each parameter."""
        return {r["param"]: r for r in self.rows}


class _PowerTracker:
    """Top singular value per matrix by power iteration, warm-started from the last ``v``."""

    def __init__(self, iters: int, init_iters: int, seed: int) -> None:
        self.iters = check_int("iters", iters, 1)
        self.init_iters = check_int("init_iters", init_iters, 1)
        self._v: dict[str, Tensor] = {}
        self._gen = torch.Generator().manual_seed(seed)

    def __call__(self, name: str, W: Tensor) -> float:
        v0 = self._v.get(name)
        iters = self.iters
        if v0 is None or v0.shape[-1] != W.shape[-1]:
            v0 = torch.randn(W.shape[-1], generator=self._gen, dtype=torch.float64).to(W.device)
            iters = self.init_iters
        s, _, v = power_iteration(W, iters, v0=v0)
        self._v[name] = v
        return float(s)


class SpectralNormMonitor(Monitor):
    """Per-layer spectral norm ``s_1(W)`` by warm-started power iteration.

    The first call runs ``init_iters`` rounds from a random vector; later
    calls run ``iters`` rounds from the previous right singular vector, which
    is cheap and accurate while the weights change slowly between calls (the
    estimate is a lower bound of ``s_1`` that converges at the rate
    ``(s_2 / s_1)^(2 iters)``). ``exact=True`` uses an SVD instead.

    Rows: ``{"step", "param", "spectral_norm"}``.

    Example:
        >>> import torch
        >>> from normopt.theory import SpectralNormMonitor
        >>> model = torch.nn.Linear(16, 8)
        >>> mon = SpectralNormMonitor(model)
        >>> rows = mon(0)
        >>> [r["param"] for r in rows]
        ['weight']
    """

    def __init__(
        self,
        params: Params,
        *,
        iters: int = 2,
        init_iters: int = 30,
        exact: bool = False,
        every: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(every)
        self.tensors = {n: t for n, t in named_tensors(params).items() if t.ndim >= 2}
        if not self.tensors:
            raise ValueError("params: no matrix (ndim >= 2) to monitor")
        self.exact = bool(exact)
        self._power = _PowerTracker(iters, init_iters, seed)

    def _measure(self, step: int) -> list[dict[str, Any]]:
        rows = []
        for name, t in self.tensors.items():
            W = _matrix(t)
            if self.exact:
                s = float(torch.linalg.matrix_norm(W.double(), ord=2))
            else:
                s = self._power(name, W)
            rows.append({"step": step, "param": name, "spectral_norm": s})
        return rows


Scale = float | Callable[[tuple[int, ...]], float]


class ConstraintMonitor(Monitor):
    """SPEC A9's constraint ratio ``||W|| * wd / s`` per parameter.

    For updates ``W <- (1 - lr wd) W + lr D`` with ``||D|| <= s``,
    ``||W_t|| <= s / wd + prod(1 - lr wd) max(0, ||W_0|| - s / wd)``: the ratio
    decays to at most 1 whatever the gradients. Muon with an exact polar
    factor: spectral norm, ``s`` = its shape scale (times 1.2024 with quintic
    Newton-Schulz); Lion: ``LInf()``, ``s = 1``.

    Args:
        params: a model, a mapping or pairs; parameters ``norm`` cannot carry
            are skipped (a matrix norm skips biases).
        weight_decay: ``wd``; if None, read from each parameter's group in
            ``optimizer`` (key ``"weight_decay"``).
        scale: ``s``, a number or a function of the parameter's shape.
        norm: the norm (default spectral).
        optimizer: only to read ``weight_decay``.
        power_iters: for the spectral and RMS->RMS norms, use warm-started
            power iteration with this many rounds per call instead of an SVD.

    Rows: ``{"step", "param", "norm", "limit", "ratio"}`` with
    ``limit = s / wd`` (inf when ``wd = 0``, and then ``ratio = 0``).

    Example:
        >>> import torch
        >>> from normopt.theory import ConstraintMonitor
        >>> lin = torch.nn.Linear(4, 4, bias=False)
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(3 * torch.eye(4))
        >>> round(ConstraintMonitor(lin, weight_decay=0.1, scale=0.5)(0)[0]["ratio"], 12)
        0.6
    """

    def __init__(
        self,
        params: Params,
        *,
        weight_decay: float | None = None,
        scale: Scale = 1.0,
        norm: Norm | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        power_iters: int | None = None,
        every: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(every)
        self.norm = Spectral() if norm is None else norm
        if not isinstance(self.norm, Norm):
            raise TypeError(f"norm: expected a Norm, got {type(self.norm).__name__}")
        tensors = named_tensors(params)
        fits = resolve_norms(tensors, self.norm)
        self.tensors = {n: tensors[n] for n in fits}
        if weight_decay is None:
            if optimizer is None:
                raise ValueError("weight_decay: give a number or an optimizer to read it from")
            by_id = {id(p): g for g in optimizer.param_groups for p in g["params"]}
            self._wd = {}
            for n, t in self.tensors.items():
                if id(t) not in by_id:
                    raise ValueError(f"optimizer: parameter {n!r} is not in the optimizer")
                self._wd[n] = float(by_id[id(t)].get("weight_decay", 0.0))
        else:
            wd = check_number("weight_decay", weight_decay)
            self._wd = {n: wd for n in self.tensors}
        self._scale: dict[str, float] = {}
        for n, t in self.tensors.items():
            s = float(scale(tuple(t.shape)) if callable(scale) else scale)
            self._scale[n] = check_number(f"scale for {n!r}", s, low_open=True)
        self._power = None
        if power_iters is not None:
            if not isinstance(self.norm, Spectral | RMSToRMS):
                raise ValueError(
                    f"power_iters: power iteration serves the spectral and RMS->RMS norms, not {self.norm!r}"
                )
            check_int("power_iters", power_iters, 1)
            self._power = _PowerTracker(power_iters, max(30, power_iters), seed)

    def _value(self, name: str, t: Tensor) -> float:
        if self._power is None:
            return float(self.norm.norm(as_element(self.norm, t.detach().double())))
        W = _matrix(t)
        s = self._power(name, W)
        if isinstance(self.norm, RMSToRMS):
            s *= math.sqrt(W.shape[1] / W.shape[0])
        return s

    def _measure(self, step: int) -> list[dict[str, Any]]:
        rows = []
        for n, t in self.tensors.items():
            v, wd, s = self._value(n, t), self._wd[n], self._scale[n]
            rows.append(
                {"step": step, "param": n, "norm": v,
                 "limit": s / wd if wd > 0 else math.inf, "ratio": v * wd / s}
            )  # fmt: skip
        return rows


class UpdateMonitor(Monitor):
    """RMS of each update and the singular values of the step direction.

    For an optimizer with decoupled weight decay,
    ``W_{t+1} = (1 - lr wd) W_t - lr O_t``; the monitor recovers
    ``O_t = ((1 - lr wd) W_t - W_{t+1}) / lr`` and records, per parameter:
    ``update_rms = ||W_{t+1} - W_t||_F / sqrt(numel)``,
    ``relative = ||W_{t+1} - W_t||_F / ||W_t||_F``, and for matrices the largest
    and smallest singular values of ``O_t`` (``s_max``, ``s_min``, the
    ``min(m, n)``-th) and ``spread = s_min / s_max`` (exact SVD, float64).
    For Muon with scale ``c``: ``s_max = s_min = c`` with an exact polar
    factor, about ``[0.68, 1.2] c`` with Jordan's quintic.

    Two ways to use it:

    - ``UpdateMonitor(model, optimizer)``: registers step pre- and post-hooks
      on ``optimizer`` (``register_step_pre_hook``/``register_step_post_hook``)
      that copy the weights before each recorded step; ``lr`` and ``wd`` are
      read from each parameter's group (keys ``"lr"``, ``"weight_decay"``)
      unless given. Call :meth:`remove` (or use ``with``) to unhook.
    - ``UpdateMonitor(model, lr=..., weight_decay=...)`` and ``monitor(step)``
      after each step: the update is the change since the previous call (the
      first call only takes a copy). Without ``lr`` the singular values are
      those of ``W_t - W_{t+1}`` (``weight_decay`` must then be 0).

    The copy costs one extra set of the monitored weights in memory (taken
    only on recorded steps with hooks). Rows:
    ``{"step", "param", "update_rms", "relative"[, "s_max", "s_min", "spread"]}``.

    Example:
        >>> import torch
        >>> from normopt.theory import UpdateMonitor
        >>> model = torch.nn.Linear(8, 4)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> mon = UpdateMonitor(model, opt)
        >>> model(torch.randn(3, 8)).sum().backward(); opt.step()
        >>> sorted(r["param"] for r in mon.rows)
        ['bias', 'weight']
        >>> mon.remove()
    """

    def __init__(
        self,
        params: Params,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        lr: float | None = None,
        weight_decay: float | None = None,
        spectrum: bool = True,
        every: int = 1,
    ) -> None:
        super().__init__(every)
        self.tensors = named_tensors(params)
        self.spectrum = bool(spectrum)
        if lr is not None:
            lr = check_number("lr", lr, low_open=True)
        if weight_decay is not None:
            weight_decay = check_number("weight_decay", weight_decay)
        self.optimizer = optimizer
        self._lr: dict[str, float | None] = {n: lr for n in self.tensors}
        self._wd: dict[str, float] = {n: float(weight_decay or 0.0) for n in self.tensors}
        if optimizer is not None:
            by_id = {id(p): g for g in optimizer.param_groups for p in g["params"]}
            missing = [n for n, t in self.tensors.items() if id(t) not in by_id]
            if missing:
                raise ValueError(f"optimizer: parameters {missing} are not in the optimizer")
            self._group = {n: by_id[id(t)] for n, t in self.tensors.items()}
            self._lr_fixed, self._wd_fixed = lr, weight_decay
            self._handles = [
                optimizer.register_step_pre_hook(self._pre_hook),
                optimizer.register_step_post_hook(self._post_hook),
            ]
        else:
            if (weight_decay or 0.0) > 0 and lr is None:
                raise ValueError("lr: needed to separate weight decay from the step direction")
            self._handles = []
        self._prev: dict[str, Tensor] | None = None

    # -- hooks ---------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Tensor]:
        return {n: t.detach().clone() for n, t in self.tensors.items()}

    def _pre_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._calls % self.every == 0:
            self._prev = self._snapshot()
            for n, g in self._group.items():  # read at step time: schedules change lr
                self._lr[n] = self._lr_fixed if self._lr_fixed is not None else float(g["lr"])
                self._wd[n] = (
                    self._wd_fixed
                    if self._wd_fixed is not None
                    else float(g.get("weight_decay", 0.0))
                )

    def _post_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        step = self._calls
        self._calls += 1
        if self._prev is not None:
            self.rows.extend(self._rows(step, self._prev))
            self._prev = None

    def remove(self) -> None:
        """Unhook from the optimizer (no-op without one)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> UpdateMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # -- manual use ------------------------------------------------------------------------
    def __call__(self, step: int | None = None) -> list[dict[str, Any]]:
        if self.optimizer is not None:
            raise RuntimeError(
                "UpdateMonitor: hooked to an optimizer, it records by itself; read .rows"
            )
        step = self._calls if step is None else int(step)
        self._calls += 1
        new: list[dict[str, Any]] = []
        if self._prev is not None and step % self.every == 0:
            new = self._rows(step, self._prev)
            self.rows.extend(new)
        self._prev = self._snapshot()
        return new

    def _rows(self, step: int, prev: Mapping[str, Tensor]) -> list[dict[str, Any]]:
        rows = []
        for n, t in self.tensors.items():
            old, new = prev[n].double(), t.detach().double()
            dW = new - old
            fro_old = float(torch.linalg.vector_norm(old))
            fro = float(torch.linalg.vector_norm(dW))
            row: dict[str, Any] = {
                "step": step,
                "param": n,
                "update_rms": fro / math.sqrt(max(1, dW.numel())),
                "relative": fro / fro_old if fro_old > 0 else math.inf,
            }
            if self.spectrum and t.ndim >= 2:
                lr, wd = self._lr[n], self._wd[n]
                O = ((1 - lr * wd) * old - new) / lr if lr else -dW
                s = torch.linalg.svdvals(O.reshape(O.shape[0], -1))
                s_max, s_min = float(s[0]), float(s[-1])
                row.update(
                    s_max=s_max, s_min=s_min, spread=s_min / s_max if s_max > 0 else math.nan
                )
            rows.append(row)
        return rows


def rows_of(monitors: Sequence[Monitor]) -> list[dict[str, Any]]:
    """All rows of several monitors, each tagged with ``"monitor"`` (its class name)."""
    return [{"monitor": type(m).__name__, **r} for m in monitors for r in m.rows]
