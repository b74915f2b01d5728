"""normopt: norm-based optimizers for PyTorch.

Choose a norm per layer, dualize the gradient, step: sign descent, Muon,
Lion-K, Kovalev's trust region and modular steepest descent are all instances.

>>> import torch, normopt
>>> model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
>>> opt = normopt.Muon(model)          # matrices get Muon, the rest AdamW
>>> print(normopt.describe(model))     # doctest: +SKIP

The names load on first use (PEP 562): ``import normopt`` alone does not import torch, so
that the ``normopt`` command answers ``--help`` at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# where each public name lives: normopt.optim, unless listed here
_SUBMODULES = ("linalg", "norms", "theory")
_HOME: dict[str, str] = {}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value = importlib.import_module(f"normopt.{name}")
    elif name in __all__:
        value = getattr(importlib.import_module(_HOME.get(name, "normopt.optim")), name)
    else:
        raise AttributeError(f"module 'normopt' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from normopt import linalg, norms, theory
    from normopt.optim import (
        AdaMuon,
        HuberNuclear,
        Lion,
        LionK,
        Muon,
        MuonMVR2,
        NonFiniteGradientError,
        NonFiniteUpdateError,
        NorMuon,
        QKClip,
        SteepestDescent,
        TrustRegion,
        classify,
        describe,
        param_groups,
    )

__all__ = [
    "__version__",
    "linalg",
    "norms",
    "theory",
    "AdaMuon",
    "HuberNuclear",
    "Lion",
    "LionK",
    "Muon",
    "MuonMVR2",
    "NonFiniteGradientError",
    "NonFiniteUpdateError",
    "NorMuon",
    "QKClip",
    "SteepestDescent",
    "TrustRegion",
    "classify",
    "describe",
    "param_groups",
]
