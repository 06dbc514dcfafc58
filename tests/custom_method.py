"""A user-defined method that lives outside boltzbench (used by the tests).

It is named in a config as ``callable: "custom_method:GaussianIS"`` with this
directory on ``PYTHONPATH``, and must go through the whole pipeline like a
built-in method: written only against boltzbench's public method interface.
"""

from __future__ import annotations

import math

import torch

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import batch_sizes
from boltzbench.methods import Method, SampleSet
from boltzbench.targets import Target


class GaussianIS(Method):
    """Self-normalized importance sampling from the proposal q = N(loc·1, scale² I).

    Each sample costs one energy evaluation of the target it is given (the
    pipeline's counting target, which counts it and refuses calls past the
    budget), and carries log w = −E(x) − log q(x). Under a budget it draws
    only the samples the budget affords.
    """

    weighted = True

    def __init__(self, scale: float = 1.0, loc: float | None = None, batch_size: int = 256):
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale, self.loc, self.batch_size = scale, loc, batch_size

    def _center(self, target: Target) -> torch.Tensor:
        if self.loc is not None:
            return torch.full((target.dim,), float(self.loc), dtype=torch.float64)
        base = target.base_location()
        return torch.zeros(target.dim, dtype=torch.float64) if base is None else base.double()

    def _draw(self, target: Target, m: int, generator: torch.Generator):
        """m proposals: (x, log q(x), E(x)), each of the m energy rows counted."""
        eps = torch.randn(m, target.dim, generator=generator, dtype=torch.float64)
        x = self._center(target) + self.scale * eps
        norm = target.dim * (math.log(self.scale) + 0.5 * math.log(2 * math.pi))
        log_q = -0.5 * eps.pow(2).sum(-1) - norm
        with torch.no_grad():
            energy = target.energy(x).double()
        return x, log_q, energy

    def sample(
        self,
        target: Target,
        n: int,
        generator: torch.Generator,
        checkpoint: Checkpoint = NO_CHECKPOINT,
    ) -> SampleSet:
        draws = [self._draw(target, m, generator) for m in batch_sizes(target, n, self.batch_size)]
        x, log_q, energy = (torch.cat(parts) for parts in zip(*draws))
        return SampleSet(
            x=x,
            energy=energy,
            log_weight=-energy - log_q,
            log_q=log_q,
            attrs={"proposal_scale": self.scale},
        )


def make_gaussian_is(scale: float = 1.0, loc: float | None = None) -> Method:
    """A factory function, as a user may write one instead of naming the class."""
    return GaussianIS(scale=scale, loc=loc)


def not_a_method(scale: float = 1.0):
    return "not a method"


NOT_CALLABLE = 3
