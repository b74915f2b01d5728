"""normopt: norm-based optimizers for PyTorch.

Choose a norm per layer, dualize the gradient, step: sign descent, Muon,
Lion-K, Kovalev's trust region and modular steepest descent are all instances.

>>> import torch, normopt
>>> model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
>>> opt = normopt.Muon(model)          # matrices get Muon, the rest AdamW
>>> print(normopt.describe(model))     # doctest: +SKIP
"""

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

__version__ = "0.1.0"

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
