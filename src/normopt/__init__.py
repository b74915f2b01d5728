"""normopt: norm-based optimizers for PyTorch.

Choose a norm per layer, dualize the gradient, step: sign descent, Muon,
Lion-K, Kovalev's trust region and modular steepest descent are all instances.
"""

from normopt import linalg, norms

__version__ = "0.1.0"

__all__ = ["__version__", "linalg", "norms"]
