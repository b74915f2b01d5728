"""The moves of every optimizer, written once for a stack, a list or a single tensor.

A move is a small function of tensors. Each one runs unchanged on

- a **stack** or a **flat block** (one tensor holding the buffers of many
  parameters, see :class:`normopt.optim.base.Block`): one aten op per line;
- a **list** of tensors: the same lines become ``torch._foreach_*`` ops;
- a **single** tensor: the plain per-parameter reference (``foreach=False``).

The helpers :func:`mul_`, :func:`add_`, ... pick the form; the moves below are
the only place the update rules are written.

**Skipped steps without a host read.** A step whose gradients are not all
finite is *masked* on the device, GradScaler-style: the base class zeroes the
gradients of such a step and hands the moves a :class:`Mask`; every weight a
move uses is then ``0`` (for ``lerp``) or ``1`` (for a decay) on a skipped
step, so buffers keep their values bit for bit, and the final update is
multiplied by ``ok = 0``. ``mask=None`` means the step is known to be good
(the ``nonfinite="raise"`` path has checked it on the host).
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

__all__ = [
    "Mask",
    "TensorOrList",
    "adam_",
    "adamuon_",
    "ema_",
    "kovalev_",
    "lion_",
    "normuon_",
]

TensorOrList = Union[Tensor, list[Tensor]]  # noqa: UP007 (runtime alias on python 3.10)
Scalar = Union[float, Tensor]  # noqa: UP007


class Mask:
    """The skip decision of one step on one device, as tensors: nothing is read back.

    ``bad`` is a 0-d bool tensor, True when the step must leave weights and state
    untouched. :meth:`ok` (1 or 0), :meth:`scaled` (``c`` or 0) and :meth:`decay`
    (``c`` or 1) give exact 0-d tensors of a dtype, computed once per step.
    """

    def __init__(self, bad: Tensor) -> None:
        self.bad = bad
        self._cache: dict[tuple[object, ...], Tensor] = {}

    def ok(self, dtype: torch.dtype) -> Tensor:
        key = ("ok", dtype)
        t = self._cache.get(key)
        if t is None:
            if dtype == torch.float32:
                t = 1.0 - self.found_inf()
            else:
                t = torch.logical_not(self.bad).to(dtype)
            self._cache[key] = t
        return t

    def found_inf(self) -> Tensor:
        """``1.0`` (float32) on a skipped step, else ``0.0``: torch's fused kernels' ``found_inf``."""
        t = self._cache.get(("found_inf",))
        if t is None:
            t = self._cache[("found_inf",)] = self.bad.to(torch.float32)
        return t

    def scaled(self, c: Scalar, dtype: torch.dtype) -> Tensor:
        """``c`` on a good step, ``0`` on a skipped one (``ok * c``: exact, ``ok`` is 0 or 1)."""
        if isinstance(c, Tensor):  # not cached: a tensor's id may be reused within a step
            return self.ok(dtype) * c
        key = ("scaled", c, dtype)
        t = self._cache.get(key)
        if t is None:
            t = self._cache[key] = self.ok(dtype) * c
        return t

    def decay(self, c: Scalar, dtype: torch.dtype) -> Tensor:
        """``c`` on a good step, ``1`` on a skipped one."""
        one = self._cache.get(("one", dtype))
        if one is None:
            one = self._cache[("one", dtype)] = torch.ones((), dtype=dtype, device=self.bad.device)
        if isinstance(c, Tensor):
            return torch.where(self.bad, one, c.to(dtype))
        key = ("decay", c, dtype)
        t = self._cache.get(key)
        if t is None:
            t = self._cache[key] = torch.where(self.bad, one, c)
        return t


def _w(mask: Mask | None, c: float, x: TensorOrList) -> Scalar:
    """The weight ``c`` of a lerp, or its masked tensor (0 on a skipped step)."""
    if mask is None:
        return c
    dtype = x.dtype if isinstance(x, Tensor) else x[0].dtype
    return mask.scaled(c, dtype)


def _d(mask: Mask | None, c: float, x: TensorOrList) -> Scalar:
    """The decay ``c`` of a ``mul_``, or its masked tensor (1 on a skipped step)."""
    if mask is None:
        return c
    dtype = x.dtype if isinstance(x, Tensor) else x[0].dtype
    return mask.decay(c, dtype)


# -- the forms: one line of a move on a stack, a list or a single tensor --------------------
def lerp_(x: TensorOrList, y: TensorOrList, w: Scalar) -> TensorOrList:
    """``x <- x + w (y - x)``."""
    if isinstance(x, Tensor):
        return x.lerp_(y, w)  # type: ignore[arg-type]
    if isinstance(w, Tensor):  # foreach lerp takes no tensor weight: x + w (y - x)
        diff = torch._foreach_sub(y, x)  # type: ignore[arg-type]
        torch._foreach_mul_(diff, w)
        torch._foreach_add_(x, diff)
        return x
    torch._foreach_lerp_(x, y, w)  # type: ignore[arg-type]
    return x


def lerp(x: TensorOrList, y: TensorOrList, w: float) -> TensorOrList:
    """``x + w (y - x)``, out of place."""
    if isinstance(x, Tensor):
        return x.lerp(y, w)  # type: ignore[arg-type]
    return list(torch._foreach_lerp(x, y, w))  # type: ignore[arg-type]


def mul_(x: TensorOrList, s: Scalar) -> TensorOrList:
    if isinstance(x, Tensor):
        return x.mul_(s)
    torch._foreach_mul_(x, s)
    return x


def add_(x: TensorOrList, y: TensorOrList, alpha: float = 1.0) -> TensorOrList:
    if isinstance(x, Tensor):
        return x.add_(y, alpha=alpha)  # type: ignore[arg-type]
    torch._foreach_add_(x, y, alpha=alpha)  # type: ignore[arg-type]
    return x


def addcmul_(x: TensorOrList, a: TensorOrList, b: TensorOrList, value: float) -> TensorOrList:
    if isinstance(x, Tensor):
        return x.addcmul_(a, b, value=value)  # type: ignore[arg-type]
    torch._foreach_addcmul_(x, a, b, value=value)  # type: ignore[arg-type]
    return x


# -- the moves ----------------------------------------------------------------------------
def ema_(buf: TensorOrList, g: TensorOrList, beta: float, nesterov: bool, mask: Mask | None):
    """EMA momentum (Muon, steepest descent): ``B <- beta B + (1 - beta) G``; returns ``B``,
    or Nesterov's ``(1 - beta) G + beta B`` (a new tensor)."""
    lerp_(buf, g, _w(mask, 1.0 - beta, buf))
    return lerp(g, buf, beta) if nesterov else buf


def lion_(m: TensorOrList, g: TensorOrList, b1: float, b2: float, mask: Mask | None):
    """Lion-K's two betas (SPEC A8; ``m`` accumulates ``-g``): returns
    ``beta1 m_t - (1 - beta1) g_t`` and sets ``m_{t+1} = beta2 m_t - (1 - beta2) g_t``."""
    if isinstance(m, Tensor):
        v = m * b1 - g * (1.0 - b1)  # type: ignore[operator]
    else:
        v = torch._foreach_mul(m, b1)
        torch._foreach_add_(v, g, alpha=-(1.0 - b1))  # type: ignore[arg-type]
    mul_(m, _d(mask, b2, m))
    add_(m, g, alpha=-(1.0 - b2))  # g is 0 on a skipped step
    return v


def kovalev_(buf: TensorOrList, g: TensorOrList, alpha: Scalar, mask: Mask | None):
    """Kovalev's momentum (SPEC A3): ``m <- (1 - alpha) m + alpha g`` (``alpha`` may be a
    tensor: 1 on a parameter's first step, so that ``m_0 = g_0``)."""
    if mask is not None:
        dtype = buf.dtype if isinstance(buf, Tensor) else buf[0].dtype
        alpha = mask.ok(dtype) * alpha
    return lerp_(buf, g, alpha)


def adam_(
    m: TensorOrList,
    v: TensorOrList,
    g: TensorOrList,
    b1: float,
    b2: float,
    mask: Mask | None,
) -> None:
    """Adam's moments: ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``."""
    lerp_(m, g, _w(mask, 1.0 - b1, m))
    mul_(v, _d(mask, b2, v))
    addcmul_(v, g, g, value=1.0 - b2)  # g is 0 on a skipped step


# -- moves after the direction (the newer Muon family) --------------------------------------
def normuon_(O: Tensor, v: Tensor, beta2: float, eps: float, mask: Mask | None) -> Tensor:
    """NorMuon's neuron-wise normalization of orthogonalized updates ``O`` (..., rows, cols),
    ``v`` (..., rows, 1) their second moment per row (arXiv 2510.05491, Algorithm 1)::

        v <- beta2 v + (1 - beta2) mean_j O_ij^2
        N  = O / (sqrt(v) + eps)
        N <- N ||O||_F / (||N||_F + eps)       (per matrix: the update keeps O's norm)

    Returns ``N`` (a new tensor); ``v`` is updated in place (unchanged on a skipped step)."""
    norm = torch.linalg.vector_norm(O, dim=(-2, -1), keepdim=True)  # (..., 1, 1)
    lerp_(v, (O * O).mean(dim=-1, keepdim=True), _w(mask, 1.0 - beta2, v))
    N = O / (v.sqrt() + eps)
    return N.mul_(norm / (torch.linalg.vector_norm(N, dim=(-2, -1), keepdim=True) + eps))


def adamuon_(
    O: Tensor,
    v: Tensor,
    beta2: float,
    eps: float,
    bias_correction2: Scalar,
    target_norm: float,
    mask: Mask | None,
) -> Tensor:
    """AdaMuon's entrywise second moment on orthogonalized updates ``O`` (..., rows, cols)
    and its norm-aligned rescale (arXiv 2507.11005; the authors' ``adamuon.py``)::

        v <- beta2 v + (1 - beta2) O^2
        N  = O / (sqrt(v / (1 - beta2^t)) + eps)
        N <- N target_norm / (||N||_F + eps)    (per matrix; target_norm = sqrt(min(rows, cols)))

    Returns ``N`` (a new tensor); ``v`` is updated in place (unchanged on a skipped step)."""
    lerp_(v, O * O, _w(mask, 1.0 - beta2, v))
    N = O / ((v / bias_correction2).sqrt_() + eps)
    return N.mul_(target_norm / (torch.linalg.vector_norm(N, dim=(-2, -1), keepdim=True) + eps))
