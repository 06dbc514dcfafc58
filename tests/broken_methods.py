"""Methods that break the contract on purpose, each in one way: check_method must
fail on every one of them with a message that says why (tests/test_testing.py)."""

from __future__ import annotations

import torch
from readme_method import RandomWalkMetropolis

from boltzbench.methods import SampleSet


class IgnoresBudget(RandomWalkMetropolis):
    """Asks for every step it planned, budget or not (BudgetExceeded escapes)."""

    def sample(self, target, n, generator, checkpoint=None):
        x = torch.randn(n, target.dim, generator=generator, dtype=torch.float64)
        for _ in range(self.n_steps):
            target.energy(x)
        return SampleSet(x=x, energy=target.energy(x))


class UncountedEnergy(RandomWalkMetropolis):
    """Evaluates its final energies on the target behind the counting one."""

    def sample(self, target, n, generator, checkpoint=None):
        s = super().sample(target, n, generator, checkpoint)
        raw = getattr(target, "target", target)
        return SampleSet(x=s.x, energy=raw.energy(s.x))


class HalfEnergy(RandomWalkMetropolis):
    """Reports E / 2 (another convention, LJ's factor of ½) instead of E."""

    def sample(self, target, n, generator, checkpoint=None):
        s = super().sample(target, n, generator, checkpoint)
        return SampleSet(x=s.x, energy=0.5 * s.energy)


class GlobalRandom(RandomWalkMetropolis):
    """Draws its starting points from torch's global generator, not the one it is given."""

    def sample(self, target, n, generator, checkpoint=None):
        s = super().sample(target, n, generator, checkpoint)
        x = s.x + 0.1 * torch.randn(s.x.shape, dtype=s.x.dtype)  # unseeded
        return SampleSet(x=x, energy=target.energy(x))
