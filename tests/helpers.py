"""Targets shared by the sampler tests."""

import math

import torch

from boltzbench.methods import METHODS
from boltzbench.targets.base import Target
from boltzbench.targets.gaussian import Gaussian
from boltzbench.testing import typical_points  # noqa: F401 (re-exported for the tests)


def correlated_gaussian() -> Gaussian:
    return Gaussian(dim=4, mean=1.0, scale=1.5, rho=0.7)


class Walled(Target):
    """N(0, I) in 2-D with E = +inf (or NaN) where x₀ > 0.5, so Z = 2π Φ(0.5)."""

    def __init__(self, bad=math.inf):
        super().__init__()
        self.dim, self.bad = 2, bad
        self.log_Z = math.log(2 * math.pi) + math.log(0.5 * math.erfc(-0.5 / math.sqrt(2)))

    def energy(self, x):
        e = 0.5 * (x**2).sum(-1)
        return torch.where(x[:, 0] > 0.5, torch.full_like(e, self.bad), e)


def sampling_methods() -> list[str]:
    """Registered methods that draw their own samples: every one but those whose
    costs are declared (``external`` reads a file; see tests/test_external.py)."""
    return [name for name in METHODS.names() if not METHODS.get(name).declares_costs]
