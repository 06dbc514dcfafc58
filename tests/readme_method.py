import torch

from boltzbench.methods import Method, SampleSet
from boltzbench.targets import BudgetExceeded


class RandomWalkMetropolis(Method):
    """n independent chains of random-walk Metropolis; each returns its last state."""

    def __init__(self, step_size: float = 0.5, n_steps: int = 100):
        self.step_size, self.n_steps = step_size, n_steps

    def sample_cost(self, n):
        return n * (1 + self.n_steps)  # one energy per chain to start, one per step

    def sample(self, target, n, generator, checkpoint=None):
        x = torch.randn(n, target.dim, generator=generator, dtype=torch.float64)
        energy = target.energy(x)
        for _ in range(self.n_steps):
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            proposal = x + self.step_size * noise
            try:
                proposed = target.energy(proposal)  # counted, and refused past a budget
            except BudgetExceeded:
                break  # stop at the budget with the chains as they are
            log_u = torch.rand(n, generator=generator, dtype=x.dtype).log()
            accept = log_u < energy - proposed
            x = torch.where(accept[:, None], proposal, x)
            energy = torch.where(accept, proposed, energy)
        return SampleSet(x=x, energy=energy)
