"""torch.optim optimizers built from the norm catalog, and parameter routing."""

from normopt.norms import HuberNuclear
from normopt.optim.base import NonFiniteGradientError, NonFiniteUpdateError, NormOptimizer
from normopt.optim.family import AdaMuon, NorMuon
from normopt.optim.lion import Lion, LionK, gradient_of_K
from normopt.optim.muon import ADJUST_LR, Muon, adjust_lr_factor
from normopt.optim.mvr import MuonMVR2
from normopt.optim.qk_clip import QKClip, max_logits, qk_clip_
from normopt.optim.routing import Route, classify, describe, param_groups
from normopt.optim.steepest import SteepestDescent, TrustRegion

__all__ = [
    "ADJUST_LR",
    "AdaMuon",
    "HuberNuclear",
    "Lion",
    "LionK",
    "Muon",
    "MuonMVR2",
    "NonFiniteGradientError",
    "NonFiniteUpdateError",
    "NorMuon",
    "NormOptimizer",
    "QKClip",
    "Route",
    "SteepestDescent",
    "TrustRegion",
    "adjust_lr_factor",
    "classify",
    "describe",
    "gradient_of_K",
    "max_logits",
    "param_groups",
    "qk_clip_",
]
