"""The norm catalog: norms with exact dual norms and dualize maps (SPEC section 1).

Pass norms as objects (``Spectral()``, ``Schatten(4)``); strings enter through
:func:`get` (``get("schatten", p=4)``), whose error lists the valid names.
"""

from normopt.norms.base import Norm, from_spec, get, names, register
from normopt.norms.catalog import (
    L1,
    L2,
    ColumnRMS,
    ColumnRMSDual,
    ConvSpectral,
    ConvSpectralDual,
    EntrywiseL1,
    Frobenius,
    KyFan,
    KyFanDual,
    LInf,
    MaxEntry,
    Modular,
    ModularSum,
    Nuclear,
    RMSToRMS,
    RMSToRMSDual,
    RowRMS,
    RowRMSDual,
    Schatten,
    Spectral,
    Transposed,
)

__all__ = [
    "Norm",
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
]
