"""Theory tools: constants rho and L, Kovalev's schedule and bound, estimators, monitors.

- :func:`constants`, :func:`kovalev_schedule`, :func:`kovalev_bound`,
  :func:`lemma3_bound`: the numbers of SPEC A4 for a norm and a shape.
- :func:`estimate_smoothness`, :func:`smoothness_of_step` (:mod:`~normopt.theory.smoothness`),
  :func:`estimate_noise` (:mod:`~normopt.theory.noise`), :func:`effective_rho`
  (:mod:`~normopt.theory.rho`): L, sigma and rho measured on a real model and real data.
- :class:`SpectralNormMonitor`, :class:`ConstraintMonitor`,
  :class:`UpdateMonitor`: per-layer measurements to call in a training loop.
"""

from normopt.theory.kovalev import (
    Constants,
    KovalevSchedule,
    constants,
    kovalev_bound,
    kovalev_bound_terms,
    kovalev_schedule,
    lemma3_bound,
)
from normopt.theory.monitors import (
    ConstraintMonitor,
    Monitor,
    SpectralNormMonitor,
    UpdateMonitor,
    rows_of,
)
from normopt.theory.noise import NoiseEstimate, estimate_noise
from normopt.theory.rho import RhoEstimate, effective_rho
from normopt.theory.smoothness import SmoothnessEstimate, estimate_smoothness, smoothness_of_step

__all__ = [
    "Constants",
    "KovalevSchedule",
    "constants",
    "kovalev_bound",
    "kovalev_bound_terms",
    "kovalev_schedule",
    "lemma3_bound",
    "SmoothnessEstimate",
    "NoiseEstimate",
    "RhoEstimate",
    "estimate_smoothness",
    "smoothness_of_step",
    "estimate_noise",
    "effective_rho",
    "Monitor",
    "SpectralNormMonitor",
    "ConstraintMonitor",
    "UpdateMonitor",
    "rows_of",
]
