"""A user-defined target that lives outside boltzbench (used by the tests).

It is named in a config as ``callable: "custom_target:make_shifted_gaussian"``
with this directory on ``PYTHONPATH``, and must go through the whole pipeline
like a built-in target.
"""

from __future__ import annotations

import math
import time

import torch

from boltzbench.targets import Target


class ShiftedGaussian(Target):
    """Isotropic N(shift·1, scale² I); E(x) = ‖x − shift‖² / (2 scale²), unnormalized."""

    exact_sampling = True

    def __init__(self, dim: int, shift: float, scale: float):
        super().__init__()
        self.dim, self.shift, self.scale = dim, shift, scale
        self.log_Z = dim * (math.log(scale) + 0.5 * math.log(2 * math.pi))

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x - self.shift) / self.scale).pow(2).sum(-1)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.shift + self.scale * eps


def make_shifted_gaussian(dim: int = 3, shift: float = 2.0, scale: float = 0.5) -> Target:
    return ShiftedGaussian(dim, shift, scale)


def not_a_target(dim: int = 2):
    return "not a target"


class SlowGaussian(ShiftedGaussian):
    """A ShiftedGaussian whose every energy call sleeps ``delay_s`` seconds.

    The delay gives a test time to kill a job midway; it changes no result.
    """

    def __init__(self, dim: int, shift: float, scale: float, delay_s: float):
        super().__init__(dim, shift, scale)
        self.delay_s = delay_s

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay_s)
        return super().energy(x)


def make_slow_gaussian(
    dim: int = 2, shift: float = 1.0, scale: float = 0.5, delay_s: float = 0.005
) -> Target:
    return SlowGaussian(dim, shift, scale, delay_s)
