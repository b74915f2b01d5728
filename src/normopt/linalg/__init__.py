"""Polar factors and friends: the exact SVD reference and its fast approximations."""

from normopt.linalg.polar import (
    POLAR_METHODS,
    SCHEDULES,
    CoefficientSchedule,
    get_schedule,
    gram_newton_schulz,
    newton_schulz,
    polar,
    polar_flops,
    polar_svd,
)
from normopt.linalg.power import power_iteration, spectral_norm

__all__ = [
    "POLAR_METHODS",
    "SCHEDULES",
    "CoefficientSchedule",
    "get_schedule",
    "gram_newton_schulz",
    "newton_schulz",
    "polar",
    "polar_flops",
    "polar_svd",
    "power_iteration",
    "spectral_norm",
]
