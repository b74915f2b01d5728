"""The norm catalog: norms with exact dual norms and dualize maps (SPEC section 1).

One module per family: :mod:`~normopt.norms.vector` (l1, l2, l-inf and the entrywise matrix
norms), :mod:`~normopt.norms.spectral` (spectral, nuclear, Schatten, Ky Fan),
:mod:`~normopt.norms.operator` (operator norms of layers, modular duality),
:mod:`~normopt.norms.conv` (conv kernels), :mod:`~normopt.norms.combinators` (transposed and
product norms) and :mod:`~normopt.norms.convex` (convex maps that are not norms, for Lion-K).
:mod:`~normopt.norms.base` holds the :class:`Norm` interface and the registry.

Pass norms as objects (``Spectral()``, ``Schatten(4)``); strings enter through
:func:`get` (``get("schatten", p=4)``), whose error lists the valid names.
"""

from normopt.norms.base import AnyNorm, Norm, ProductNorm, from_spec, get, names, register
from normopt.norms.combinators import Modular, ModularSum, Transposed
from normopt.norms.conv import ConvSpectral, ConvSpectralDual
from normopt.norms.convex import HuberNuclear
from normopt.norms.operator import (
    ColumnRMS,
    ColumnRMSDual,
    RMSToRMS,
    RMSToRMSDual,
    RowRMS,
    RowRMSDual,
)
from normopt.norms.spectral import KyFan, KyFanDual, Nuclear, Schatten, Spectral
from normopt.norms.vector import L1, L2, EntrywiseL1, Frobenius, LInf, MaxEntry

__all__ = [
    "Norm",
    "ProductNorm",
    "AnyNorm",
    "from_spec",
    "get",
    "names",
    "register",
    "L1",
    "L2",
    "LInf",
    "Frobenius",
    "Spectral",
    "Nuclear",
    "Schatten",
    "KyFan",
    "KyFanDual",
    "MaxEntry",
    "EntrywiseL1",
    "RMSToRMS",
    "RMSToRMSDual",
    "ColumnRMS",
    "ColumnRMSDual",
    "RowRMS",
    "RowRMSDual",
    "ConvSpectral",
    "ConvSpectralDual",
    "Transposed",
    "Modular",
    "ModularSum",
    "HuberNuclear",
]
