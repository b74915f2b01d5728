"""The two interfaces of the catalog and the registry that maps names to their classes.

- :class:`Norm`: a norm on one parameter tensor (batched over leading dims).
- :class:`ProductNorm`: a norm on a sequence of tensors, one per block, built from one norm
  per block (the modular norm over a model's layers, SPEC A2). Its methods take and return
  sequences where :class:`Norm`'s take tensors, and it has no ``fit``: no single parameter
  carries it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from normopt._checks import check_number

__all__ = ["Norm", "DualOf", "ProductNorm", "AnyNorm", "register", "get", "names", "from_spec"]


class Norm:
    """A norm on one parameter tensor (an *element*), batched over leading dims.

    A norm acts on the last :attr:`ndim` dimensions of its argument (1 for a
    vector norm, 2 for a matrix norm, 4 for a conv kernel); any leading
    dimensions are batch dimensions, and reductions return one value per batch
    entry.

    Subclasses implement :meth:`norm`, :meth:`dual_norm`, :meth:`dualize`,
    :meth:`dual` and :meth:`rho`. ``dualize(g)`` is the maximizer of
    ``<g, t>`` over ``||t|| <= 1`` (zero for ``g = 0``), so that
    ``<g, dualize(g)> = dual_norm(g)`` and ``norm(dualize(g)) = 1``.
    """

    name: ClassVar[str] = ""
    ndim: ClassVar[int] = 1
    # dualize acts entry by entry (sign): optimizers may move such tensors as one flat block
    entrywise: ClassVar[bool] = False
    # dualize(G^T) = dualize(G)^T (and the dual norm agrees): optimizers may then stack a tall
    # matrix transposed with the wide ones (normopt.kernels.stacking)
    transpose_equivariant: ClassVar[bool] = False

    # -- the interface -------------------------------------------------------------
    def norm(self, x: Tensor) -> Tensor:
        """``||x||``, one value per batch entry (the leading dims of ``x``)."""
        raise NotImplementedError

    def dual_norm(self, g: Tensor) -> Tensor:
        """``||g||_* = max <g, t>`` over ``||t|| <= 1``, one value per batch entry."""
        raise NotImplementedError

    def dualize(self, g: Tensor) -> Tensor:
        """The unit-norm ``t`` that maximizes ``<g, t>`` (zero for ``g = 0``), shaped like ``g``."""
        raise NotImplementedError

    def dual(self) -> Norm:
        """The dual norm, as a :class:`Norm` (its own dual is this norm again)."""
        raise NotImplementedError

    def rho(self, shape: Sequence[int]) -> float:
        """Smallest ``rho`` with ``dual_norm(x) <= rho * ||x||_F`` on elements of ``shape``."""
        raise NotImplementedError

    # -- shared helpers --------------------------------------------------------------
    def fit(self, shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
        """The element shape this norm sees for a parameter of ``shape``.

        Vector norms flatten; matrix norms keep a matrix and flatten the
        trailing dimensions of a higher-order tensor into columns (the
        ``(d_out, -1)`` reshape Muon uses for conv kernels). Raises
        ``ValueError`` when the shape cannot carry this norm.
        """
        shape = tuple(int(s) for s in shape)
        if self.ndim == 1:
            return (math.prod(shape),)
        if self.ndim == 2:
            if len(shape) < 2:
                raise ValueError(
                    f"norm: {self!r} is a matrix norm and needs a tensor with ndim >= 2, "
                    f"got shape {shape}"
                )
            return (shape[0], math.prod(shape[1:]))
        if len(shape) != self.ndim:
            raise ValueError(
                f"norm: {self!r} needs a tensor with ndim == {self.ndim}, got shape {shape}"
            )
        return shape

    def spec(self) -> dict[str, Any]:
        """A plain-Python description ``{"name": ..., **kwargs}`` for state dicts and configs."""
        return {"name": self.name, **self._kwargs()}

    def _kwargs(self) -> dict[str, Any]:
        return {}

    def _reduce_dims(self, x: Tensor) -> tuple[int, ...]:
        if x.ndim < self.ndim:
            raise ValueError(
                f"x: {self!r} acts on the last {self.ndim} dims, got shape {tuple(x.shape)}"
            )
        return tuple(range(-self.ndim, 0))

    def __repr__(self) -> str:
        kw = ", ".join(f"{k}={v!r}" for k, v in self._kwargs().items())
        return f"{type(self).__name__}({kw})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._kwargs() == other._kwargs()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        # kwargs may hold a nested spec (a dict): Transposed
        return hash((type(self).__name__, _freeze(self._kwargs())))


class DualOf(Norm):
    """A norm written as the dual of another, its :meth:`dual`: ``norm`` is that norm's
    ``dual_norm`` and ``dual_norm`` its ``norm``; a subclass gives ``dual`` and ``dualize``."""

    def norm(self, x: Tensor) -> Tensor:
        return self.dual().dual_norm(x)

    def dual_norm(self, g: Tensor) -> Tensor:
        return self.dual().norm(g)


class ProductNorm:
    """A norm on a sequence of tensors, one per block: ``norms[l]`` measures block ``l``,
    weighted by ``scales[l] > 0`` (SPEC A2, arXiv 2409.20325 Prop. 7).

    Subclasses implement ``norm(xs)``, ``dual_norm(gs)``, ``dualize(gs)`` (a list, one
    tensor per block), ``dual()`` and ``rho(shapes)`` (one shape per block), with the
    identities of :class:`Norm`.
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        norms: Sequence[Norm | str | dict[str, Any]],
        scales: Sequence[float] | None = None,
    ) -> None:
        if isinstance(norms, Norm | ProductNorm | str | dict) or len(norms) == 0:
            raise ValueError("norms: expected a non-empty sequence of norms, one per block")
        self.norms: list[Norm] = []
        for i, spec in enumerate(norms):
            block = from_spec(spec)
            if not isinstance(block, Norm):
                raise ValueError(
                    f"norms: block {i} is {block!r}, a product norm; each block is one tensor "
                    "and takes a Norm"
                )
            self.norms.append(block)
        if scales is None:
            scales = [1.0] * len(self.norms)
        scales = [float(s) for s in scales]
        if len(scales) != len(self.norms):
            raise ValueError(
                f"scales: expected {len(self.norms)} scales (one per block), got {len(scales)}"
            )
        self.scales = [check_number("scales", s, 0.0, low_open=True) for s in scales]

    # -- the interface -------------------------------------------------------------
    def norm(self, xs: Sequence[Tensor]) -> Tensor:
        """The norm of the blocks ``xs`` together (one tensor per block)."""
        raise NotImplementedError

    def dual_norm(self, gs: Sequence[Tensor]) -> Tensor:
        """The dual norm of the blocks ``gs`` together."""
        raise NotImplementedError

    def dualize(self, gs: Sequence[Tensor]) -> list[Tensor]:
        """The unit-norm blocks that maximize ``sum <g_l, t_l>``, one per block of ``gs``."""
        raise NotImplementedError

    def dual(self) -> ProductNorm:
        """The dual product norm."""
        raise NotImplementedError

    def rho(self, shapes: Sequence[Sequence[int]]) -> float:
        """Smallest ``rho`` with ``dual_norm(x) <= rho * ||x||_F`` (all blocks together)."""
        raise NotImplementedError

    # -- shared helpers --------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """``{"name": ..., "norms": [spec, ...], "scales": [...]}``: plain Python."""
        return {"name": self.name, **self._kwargs()}

    def _kwargs(self) -> dict[str, Any]:
        return {"norms": [n.spec() for n in self.norms], "scales": list(self.scales)}

    def _check(self, xs: Sequence[Tensor]) -> None:
        if isinstance(xs, Tensor) or len(xs) != len(self.norms):
            raise ValueError(
                f"x: {type(self).__name__} acts on a sequence of {len(self.norms)} tensors, one per block"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.norms!r}, scales={self.scales!r})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._kwargs() == other._kwargs()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(map(repr, self.norms)), tuple(self.scales)))


AnyNorm = Norm | ProductNorm
"""What the registry builds: a norm on one tensor or a product norm over several."""


def _freeze(value: Any) -> Any:
    """A hashable copy of a spec value: dicts and lists become sorted tuples and tuples."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


_REGISTRY: dict[str, type[Norm] | type[ProductNorm]] = {}
N = TypeVar("N", bound=type[Norm] | type[ProductNorm])


def register(cls: N) -> N:
    """Class decorator: make a norm reachable by its ``name`` through :func:`get`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name to register under")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    """The registered norm names, sorted."""
    return sorted(_REGISTRY)


def get(name: str, **kwargs: Any) -> AnyNorm:
    """Build a norm from its registry name and arguments: ``get("schatten", p=4)``."""
    if isinstance(name, Norm | ProductNorm):
        return name
    if not isinstance(name, str):
        raise TypeError(f"name: expected a norm name (str), got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    cls = _REGISTRY.get(key)
    if cls is None:
        raise ValueError(f"name: unknown norm {name!r}; expected one of {names()}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise TypeError(f"norm {name!r}: {e}") from None


def from_spec(spec: dict[str, Any] | str | AnyNorm) -> AnyNorm:
    """Inverse of :meth:`Norm.spec`; also accepts a bare name or a Norm."""
    if isinstance(spec, Norm | ProductNorm):
        return spec
    if isinstance(spec, str):
        return get(spec)
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"spec: expected a dict with a 'name' key, got {spec!r}")
    # nested specs (Transposed's inner, Modular's norms) are read by those classes themselves
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    return get(spec["name"], **kwargs)
