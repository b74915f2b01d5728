"""The norm table shared by the tests in this folder: one row per norm; adding a norm adds a row.

A row gives a factory, the element shapes to test on (for the block norms
:class:`Modular` and :class:`ModularSum`, one shape per block), and a
constructor of an *extremal* element ``x`` with ``dual_norm(x) = rho(shape) ||x||_F``
(the proof that ``rho`` is tight). The helpers below treat a single tensor and
a list of blocks alike, so every test is written once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from normopt import norms as N

Elem = Tensor | list[Tensor]  # one tensor, or one tensor per block
Shape = tuple[Any, ...]  # a tensor shape, or one tensor shape per block

VEC: tuple[Shape, ...] = ((4,), (1,), (7,))
MAT: tuple[Shape, ...] = ((2, 3), (3, 3), (4, 2), (1, 3), (3, 1))
CONV: tuple[Shape, ...] = ((2, 3, 1, 2), (3, 2, 2, 2), (1, 1, 3, 1))


def is_block(norm: N.AnyNorm) -> bool:
    return isinstance(norm, N.ProductNorm)


def elem_ndims(norm: N.Norm) -> list[int]:
    """The element ndim of each block (a single tensor is one block)."""
    return [n.ndim for n in norm.norms] if is_block(norm) else [norm.ndim]  # type: ignore[attr-defined]


def blocks(norm: N.Norm, x: Elem) -> list[Tensor]:
    return list(x) if is_block(norm) else [x]  # type: ignore[list-item]


def unblocks(norm: N.Norm, xs: Sequence[Tensor]) -> Elem:
    return list(xs) if is_block(norm) else xs[0]


def shapes_of(norm: N.Norm, shape: Shape) -> list[tuple[int, ...]]:
    return [tuple(s) for s in shape] if is_block(norm) else [tuple(shape)]


# -- element arithmetic (batched over leading dims) --------------------------------------
def _expand(c: Tensor | float, ndim: int) -> Tensor | float:
    return c.reshape(*c.shape, *([1] * ndim)) if isinstance(c, Tensor) else c


def inner(norm: N.Norm, a: Elem, b: Elem) -> Tensor:
    """``<a, b>`` per batch entry (the sum over every block's element dims)."""
    out: Tensor | float = 0.0
    for k, x, y in zip(elem_ndims(norm), blocks(norm, a), blocks(norm, b)):
        prod = x.double() * y.double()
        out = out + prod.sum(dim=tuple(range(-k, 0)))
    assert isinstance(out, Tensor)
    return out


def fro(norm: N.Norm, a: Elem) -> Tensor:
    return inner(norm, a, a).sqrt()


def scale(norm: N.Norm, a: Elem, c: Tensor | float) -> Elem:
    """``c * a`` with ``c`` a number or a batch-shaped tensor."""
    return unblocks(norm, [_expand(c, k) * x for k, x in zip(elem_ndims(norm), blocks(norm, a))])


def add(norm: N.Norm, a: Elem, b: Elem) -> Elem:
    return unblocks(norm, [x + y for x, y in zip(blocks(norm, a), blocks(norm, b))])


def cast(norm: N.Norm, a: Elem, dtype: torch.dtype) -> Elem:
    return unblocks(norm, [x.to(dtype) for x in blocks(norm, a)])


def entry(norm: N.Norm, a: Elem, i: int) -> Elem:
    """Batch entry ``i`` (first batch dim)."""
    return unblocks(norm, [x[i] for x in blocks(norm, a)])


def entry_range(norm: N.Norm, a: Elem, n: int) -> Elem:
    """The first n batch entries."""
    return unblocks(norm, [x[:n] for x in blocks(norm, a)])


def stack(norm: N.Norm, items: Sequence[Elem]) -> Elem:
    per_block = zip(*[blocks(norm, it) for it in items])
    return unblocks(norm, [torch.stack(list(xs)) for xs in per_block])


def max_abs_diff(norm: N.Norm, a: Elem, b: Elem) -> float:
    return max(
        float((x.double() - y.double()).abs().max())
        for x, y in zip(blocks(norm, a), blocks(norm, b))
    )


def all_finite(norm: N.Norm, a: Elem) -> bool:
    return all(bool(torch.isfinite(x).all()) for x in blocks(norm, a))


def is_zero(norm: N.Norm, a: Elem) -> Tensor:
    """Per batch entry: is the whole element zero?"""
    return fro(norm, a) == 0


# -- element generators ---------------------------------------------------------------------
KINDS = ("gauss", "ints", "sparse", "rank1", "flat", "tiny_block")


def _one(shape: tuple[int, ...], batch: tuple[int, ...], kind: str, gen: torch.Generator) -> Tensor:
    full = (*batch, *shape)
    if kind == "ints":  # many ties and zeros
        return torch.randint(-2, 3, full, generator=gen).double()
    if kind == "sparse":
        mask = torch.rand(full, generator=gen, dtype=torch.float64) < 0.3
        return torch.randn(full, generator=gen, dtype=torch.float64) * mask
    if kind == "rank1" and len(shape) >= 2:
        u = torch.randn((*full[:-1], 1), generator=gen, dtype=torch.float64)
        v = torch.randn((*full[:-2], 1, full[-1]), generator=gen, dtype=torch.float64)
        return u * v
    if kind == "flat" and len(shape) == 2:  # all singular values equal: ties in every spectral norm
        return 2.0 * _partial_isometry(shape, batch, gen)
    return torch.randn(full, generator=gen, dtype=torch.float64)


def random_elem(
    norm: N.Norm,
    shape: Shape,
    batch: tuple[int, ...] = (),
    kind: str = "gauss",
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Elem:
    """A random element of the given kind; ``tiny_block`` makes one block 1e-6 times the rest."""
    gen = torch.Generator().manual_seed(seed)
    shapes = shapes_of(norm, shape)
    xs = [_one(s, batch, "gauss" if kind == "tiny_block" else kind, gen) for s in shapes]
    if kind == "tiny_block":
        xs[0] = xs[0] * 1e-6
    return cast(norm, unblocks(norm, xs), dtype)


def zeros_elem(
    norm: N.Norm, shape: Shape, batch: tuple[int, ...] = (), dtype: torch.dtype = torch.float64
) -> Elem:
    return unblocks(norm, [torch.zeros((*batch, *s), dtype=dtype) for s in shapes_of(norm, shape)])


def _partial_isometry(
    shape: tuple[int, ...], batch: tuple[int, ...] = (), gen: torch.Generator | None = None
) -> Tensor:
    """A random ``m x n`` matrix with all ``min(m, n)`` singular values 1."""
    # U V^T from an SVD (torch.linalg.qr is ~1000x slower than svd on tiny matrices when
    # torch has 2 threads on a busy machine).
    g = torch.randn((*batch, *shape), generator=gen, dtype=torch.float64)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    return u @ vh


# -- extremal elements: dual_norm(x) = rho * ||x||_F --------------------------------------
def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def ext_any(norm: N.Norm, shape: Shape) -> Elem:
    return torch.randn(shape, generator=_gen(), dtype=torch.float64)


def ext_ones(norm: N.Norm, shape: Shape) -> Elem:
    return torch.ones(shape, dtype=torch.float64)


def ext_onehot(norm: N.Norm, shape: Shape) -> Elem:
    x = torch.zeros(shape, dtype=torch.float64)
    x.view(-1)[0] = 1.0
    return x


def ext_flat(norm: N.Norm, shape: Shape) -> Elem:
    """All min(m, n) singular values equal: the nuclear/Frobenius ratio is sqrt(r)."""
    return _partial_isometry(tuple(shape), gen=_gen())


def ext_rank1(norm: N.Norm, shape: Shape) -> Elem:
    gen = _gen()
    m, n = shape
    u = torch.randn(m, 1, generator=gen, dtype=torch.float64)
    v = torch.randn(1, n, generator=gen, dtype=torch.float64)
    return u * v


def ext_flat_k(k: int) -> Callable[[N.Norm, Shape], Elem]:
    """min(k, r) equal singular values and zeros: Ky Fan-k over Frobenius is sqrt(min(k, r))."""

    def make(norm: N.Norm, shape: Shape) -> Elem:
        m, n = shape
        j = min(k, m, n)
        p = _partial_isometry((m, n), gen=_gen())
        u, _, vh = torch.linalg.svd(p, full_matrices=False)
        return u[:, :j] @ vh[:j, :]

    return make


def ext_schatten(norm: N.Norm, shape: Shape) -> Elem:
    q = norm.q  # type: ignore[attr-defined]
    return ext_flat(norm, shape) if 1.0 / q > 0.5 else ext_rank1(norm, shape)


def ext_ky_fan(norm: N.Norm, shape: Shape) -> Elem:
    m, n = shape
    return ext_flat(norm, shape) if math.sqrt(min(m, n)) > norm.k else ext_rank1(norm, shape)  # type: ignore[attr-defined]


def ext_conv_flat(norm: N.Norm, shape: Shape) -> Elem:
    """Every kernel slice the same flat partial isometry."""
    d_out, d_in, kh, kw = shape
    p = _partial_isometry((d_out, d_in), gen=_gen())
    return p[:, :, None, None].expand(d_out, d_in, kh, kw).contiguous()


def ext_conv_single(norm: N.Norm, shape: Shape) -> Elem:
    """One kernel slice rank one, the others zero."""
    d_out, d_in, kh, kw = shape
    x = torch.zeros(shape, dtype=torch.float64)
    x[:, :, 0, 0] = ext_rank1(norm, (d_out, d_in))  # type: ignore[assignment]
    return x


def ext_transposed(norm: N.Norm, shape: Shape) -> Elem:
    inner_norm = norm.inner  # type: ignore[attr-defined]
    m, n = shape
    return extremal_for(inner_norm)(inner_norm, (n, m)).mT  # type: ignore[union-attr]


def ext_modular(norm: N.Norm, shape: Shape) -> Elem:
    """Cauchy-Schwarz equality: block l extremal, with ||x_l||_F proportional to rho_l / s_l."""
    out = []
    for n, s, sh in zip(norm.norms, norm.scales, shape):  # type: ignore[attr-defined]
        x = extremal_for(n)(n, sh)
        assert isinstance(x, Tensor)
        out.append(x / x.norm() * (n.rho(sh) / s))
    return out


def ext_modular_sum(norm: N.Norm, shape: Shape) -> Elem:
    """All mass on the block with the largest rho_l / w_l."""
    ratios = [n.rho(sh) / w for n, w, sh in zip(norm.norms, norm.scales, shape)]  # type: ignore[attr-defined]
    best = max(range(len(ratios)), key=ratios.__getitem__)
    out = []
    for i, (n, sh) in enumerate(zip(norm.norms, shape)):  # type: ignore[attr-defined]
        x = extremal_for(n)(n, sh)
        assert isinstance(x, Tensor)
        out.append(x if i == best else torch.zeros_like(x))
    return out


_EXTREMAL: dict[type, Callable[[N.Norm, Shape], Elem]] = {
    N.L1: ext_onehot,
    N.L2: ext_any,
    N.LInf: ext_ones,
    N.Frobenius: ext_any,
    N.Spectral: ext_flat,
    N.Nuclear: ext_rank1,
    N.Schatten: ext_schatten,
    N.KyFan: ext_ky_fan,
    N.MaxEntry: ext_ones,
    N.EntrywiseL1: ext_onehot,
    N.RMSToRMS: ext_flat,
    N.RMSToRMSDual: ext_rank1,
    N.ColumnRMS: ext_ones,
    N.ColumnRMSDual: ext_onehot,
    N.RowRMS: ext_ones,
    N.RowRMSDual: ext_onehot,
    N.ConvSpectral: ext_conv_flat,
    N.ConvSpectralDual: ext_conv_single,
    N.Transposed: ext_transposed,
    N.Modular: ext_modular,
    N.ModularSum: ext_modular_sum,
}


def extremal_for(norm: N.Norm) -> Callable[[N.Norm, Shape], Elem]:
    if isinstance(norm, N.KyFanDual):
        return ext_flat_k(norm.k)
    return _EXTREMAL[type(norm)]


# -- the table ------------------------------------------------------------------------------
@dataclass(frozen=True)
class NormCase:
    id: str
    make: Callable[[], N.Norm]
    shapes: tuple[Shape, ...]
    small: tuple[Shape, ...] = ()  # shapes for the brute-force maximizer (few entries)

    def __repr__(self) -> str:
        return self.id


_MOD_SHAPES: tuple[Shape, ...] = (((3, 4), (2, 5), (6,)), ((1, 3), (3, 1), (1,)))
_MOD_SMALL: tuple[Shape, ...] = (((2, 2), (2, 1), (2,)),)

CASES: list[NormCase] = [
    NormCase("l1", N.L1, VEC, small=((4,),)),
    NormCase("l2", N.L2, VEC, small=((4,),)),
    NormCase("linf", N.LInf, VEC, small=((4,),)),
    NormCase("frobenius", N.Frobenius, MAT, small=((2, 3),)),
    NormCase("spectral", N.Spectral, MAT, small=((2, 3), (3, 3))),
    NormCase("nuclear", N.Nuclear, MAT, small=((2, 3), (3, 3))),
    NormCase("schatten_p3", lambda: N.Schatten(3), MAT, small=((2, 3),)),
    NormCase("schatten_p1.5", lambda: N.Schatten(1.5), MAT, small=((2, 3),)),
    NormCase("ky_fan_k1", lambda: N.KyFan(1), MAT, small=((3, 3),)),
    NormCase("ky_fan_k2", lambda: N.KyFan(2), (*MAT, (4, 4), (4, 5)), small=((2, 3), (3, 3))),
    NormCase("ky_fan_k3", lambda: N.KyFan(3), ((3, 3), (4, 5), (2, 3)), small=((3, 3),)),
    NormCase("ky_fan_dual_k1", lambda: N.KyFanDual(1), MAT, small=((3, 3),)),
    NormCase(
        "ky_fan_dual_k2", lambda: N.KyFanDual(2), (*MAT, (4, 4), (4, 5)), small=((2, 3), (3, 3))
    ),
    NormCase("ky_fan_dual_k3", lambda: N.KyFanDual(3), ((3, 3), (4, 5), (2, 3)), small=((3, 3),)),
    NormCase("max_entry", N.MaxEntry, MAT, small=((2, 3),)),
    NormCase("entrywise_l1", N.EntrywiseL1, MAT, small=((2, 3),)),
    NormCase("rms_to_rms", N.RMSToRMS, MAT, small=((2, 3),)),
    NormCase("rms_to_rms_dual", N.RMSToRMSDual, MAT, small=((2, 3),)),
    NormCase("column_rms", N.ColumnRMS, MAT, small=((2, 3),)),
    NormCase("column_rms_dual", N.ColumnRMSDual, MAT, small=((2, 3),)),
    NormCase("row_rms", N.RowRMS, MAT, small=((2, 3),)),
    NormCase("row_rms_dual", N.RowRMSDual, MAT, small=((2, 3),)),
    NormCase("conv_spectral", N.ConvSpectral, CONV, small=((2, 2, 1, 2),)),
    NormCase("conv_spectral_dual", N.ConvSpectralDual, CONV, small=((2, 2, 1, 2),)),
    NormCase("transposed_column_rms", lambda: N.Transposed(N.ColumnRMS()), MAT, small=((2, 3),)),
    NormCase("transposed_row_rms_dual", lambda: N.Transposed(N.RowRMSDual()), MAT),
    NormCase("transposed_ky_fan_k2", lambda: N.Transposed(N.KyFan(2)), MAT),
    NormCase(
        "modular",
        lambda: N.Modular([N.Spectral(), N.ColumnRMS(), N.L2()], [1.0, 2.0, 0.5]),
        _MOD_SHAPES,
        small=_MOD_SMALL,
    ),
    NormCase(
        "modular_conv",
        lambda: N.Modular([N.ConvSpectral(), N.Transposed(N.ColumnRMS())], [3.0, 1.0]),
        (((2, 3, 2, 1), (5, 2)),),
    ),
    NormCase(
        "modular_sum",
        lambda: N.ModularSum([N.Nuclear(), N.LInf(), N.RMSToRMS()], [0.5, 1.0, 3.0]),
        (((3, 4), (6,), (2, 5)), ((2, 2), (3,), (3, 1))),
        small=(((2, 2), (2,), (2, 1)),),
    ),
]

CASE_IDS = [c.id for c in CASES]
SMALL_CASES = [c for c in CASES if c.small]


def batched_shape(norm: N.Norm, shape: Shape, batch: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [(*batch, *s) for s in shapes_of(norm, shape)]
