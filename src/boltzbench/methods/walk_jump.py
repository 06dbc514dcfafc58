"""Walk-jump sampling as a chain of log-concave Markov chains, with posterior means from MCMC.

Saremi & Hyvärinen, "Neural empirical Bayes", JMLR 2019 (walk-jump sampling), and
Saremi, Park & Bach, "Chain of log-concave Markov chains", ICLR 2024
(arXiv:2305.19473). Noisy measurements y_k = x + σ ε_k (ε_k ~ N(0, I), one fixed σ)
of x ~ p are accumulated one at a time. With ȳ_k the mean of y_1 … y_k,

    p(x | y_{1:k}) ∝ p(x) N(x; ȳ_k, (σ² / k) I),

and the conditional of the next measurement, p(y_k | y_{1:k−1}) = ∫ p(x | y_{1:k−1})
N(y_k; x, σ² I) dx, grows more log-concave with k (the paper's theorem); its score is

    ∇_{y_k} log p(y_k | y_{1:k−1}) = (E[x | y_{1:k}] − y_k) / σ²,

the posterior mean that :func:`boltzbench.mcmc.denoise.posterior_mean` estimates
(MALA chains on p(x) N(x; ȳ_k, σ²/k I); no training, every evaluation counted).

The sampler, for every one of the n samples (rows):

1. y_1 starts at x₀ + σ ξ, x₀ ~ N(loc, init_scale² I) (loc the target's base
   location, or 0); each later y_k starts at x + σ ξ, x the last position of the
   first inner chain of p(x | y_{1:k−1}) (an exact draw of p(y_k | y_{1:k−1}) when
   that chain is at equilibrium: this start is ours, not the paper's);
2. walk: ``n_walk`` unadjusted Langevin steps on y_k (``n_walk_first`` on y_1,
   whose start is not a draw of p(y_1) = p ∗ N(0, σ² I): the one walk that must
   mix; the paper's Langevin MCMC, unadjusted since the density of y is not
   available), step δ = h σ² with h = ``walk_step``:

       y_k ← y_k + h (E[x | y_{1:k}] − y_k) + σ √(2h) ξ;

3. y_k is kept (ȳ_k updated) and the posterior mean x̂_k = E[x | y_{1:k}] is estimated
   once more at the final y_k; its chains start step 1 of measurement k + 1;
4. jump: after m = ``n_measurements`` measurements the sample is x̂_m
   (``jump="mean"``, the paper's empirical-Bayes estimate; a Gaussian N(μ, Σ) comes
   out with covariance Σ (Σ + σ²/m I)⁻¹ Σ, shrunk by the final noise σ²/m), or the
   last position of the first inner chain (``jump="sample"``: a draw of p(x | y_{1:m}),
   exact when the y's and the chain are).

The inner chains start once from importance sampling (``n_proposals`` proposals
per row) and then continue across walk steps and measurements, since ȳ_k moves
by (Δy)/k. Like rdMC's (:mod:`boltzbench.methods.rdmc`), continued chains do not
cross between well-separated modes, so where p(x | y_{1:k}) spans several modes
(k σ⁻² small) their weights follow the chains' starts.

Costs: every sample costs n_proposals evaluations for the warm start,
(w + 1) · n_chains · (1 + n_burnin + n_draws) per measurement (the posterior
mean at every one of its w walk steps and at the kept y_k; w = n_walk_first for
the first, n_walk after) and one final evaluation for its energy:
sample_cost(n) = n · (1 + n_proposals + (n_walk_first + 1 + (m − 1) (n_walk + 1)) ·
n_chains · (1 + n_burnin + n_draws)). Under an evaluation budget :meth:`WalkJump.plan_budget`
chooses the number of measurements m (the final noise σ/√m shrinks with the
budget); the run stops before a measurement the budget cannot pay for (keeping
the n final evaluations) and jumps from the measurements it has (``n_measurements``
in the attrs says how many; with none, the samples are the starts x₀).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import (
    BudgetPlan,
    SampleSet,
    affordable,
    remaining_budget,
    resolve_dtype,
    shortfall_note,
    start_location,
)
from boltzbench.mcmc.denoise import Inner, posterior_mean
from boltzbench.methods.base import Method
from boltzbench.targets.base import Target

__all__ = ["WalkJump", "walk_step"]

JUMPS = ("mean", "sample")


def walk_step(
    y: Tensor, mean: Tensor, sigma: float, h: float, generator: torch.Generator
) -> Tensor:
    """One unadjusted Langevin step on y with score (mean − y) / σ² and step δ = h σ²:
    y + h (mean − y) + σ √(2h) ξ, ξ ~ N(0, I); shapes ``(rows, dim)``."""
    noise = torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
    return y + h * (mean - y) + sigma * math.sqrt(2 * h) * noise


class WalkJump(Method):
    """Walk-jump sampling by a chain of log-concave Markov chains (Saremi & Hyvärinen
    2019; Saremi, Park & Bach, ICLR 2024), training-free (see the module docstring).

    Parameters
    ----------
    n_measurements
        m, the measurements accumulated; the jump's noise is σ / √m.
    sigma
        σ, the noise of one measurement, in units of x.
    n_walk
        Unadjusted Langevin steps on each measurement after the first (0: every y_k
        is its start, drawn from the inner chains).
    n_walk_first
        Unadjusted Langevin steps on the first measurement y_1 (≥ 1): they must mix
        on p ∗ N(0, σ² I), whose relaxation takes ~(λ_max + σ²) / (h σ²) steps, λ_max
        p's largest variance.
    walk_step
        h: the walk's step is h σ² (h ≤ 1; the walk is exact for h → 0).
    n_chains
        Inner MALA chains per sample.
    n_proposals
        Importance-sampling proposals per sample for the inner chains' warm start
        (0 starts them at ȳ_1).
    n_burnin
        Discarded inner MALA steps per posterior mean.
    n_draws
        Kept inner MALA steps per chain and posterior mean.
    step_size
        Inner MALA step size for p alone, in units of x (the chains use
        (step_size⁻² + k σ⁻²)^{−1/2}).
    init_scale
        x₀ ~ N(loc, init_scale² I) starts the first measurement.
    jump
        "mean": the posterior mean E[x | y_{1:m}] (the paper's jump); "sample": a
        draw of p(x | y_{1:m}) from the first inner chain.
    dtype
        "float32" or "float64".

    Under an evaluation budget, the budget decides ``n_measurements``
    (:meth:`plan_budget`).
    """

    fast_params = {
        "n_measurements": 4,
        "n_walk": 2,
        "n_walk_first": 4,
        "n_chains": 4,
        "n_proposals": 8,
        "n_burnin": 1,
        "n_draws": 2,
    }
    budget_settings = ("n_measurements",)

    def __init__(
        self,
        n_measurements: int = 16,
        sigma: float = 1.0,
        n_walk: int = 2,
        n_walk_first: int = 32,
        walk_step: float = 0.2,
        n_chains: int = 4,
        n_proposals: int = 32,
        n_burnin: int = 2,
        n_draws: int = 2,
        step_size: float = 0.5,
        init_scale: float = 1.0,
        jump: str = "mean",
        dtype: str = "float32",
    ):
        if n_measurements < 1 or n_walk < 0 or n_walk_first < 1:
            raise ValueError("walk_jump: need n_measurements >= 1, n_walk >= 0, n_walk_first >= 1")
        if not sigma > 0 or not init_scale > 0:
            raise ValueError("walk_jump: need sigma > 0 and init_scale > 0")
        if not 0 < walk_step <= 1:
            raise ValueError(f"walk_jump: need 0 < walk_step <= 1, got {walk_step}")
        if jump not in JUMPS:
            raise ValueError(f"walk_jump: jump must be one of {JUMPS}, got {jump!r}")
        resolve_dtype(dtype)
        self.n_measurements, self.sigma = n_measurements, sigma
        self.n_walk, self.n_walk_first = n_walk, n_walk_first
        self.walk_step, self.init_scale, self.jump, self.dtype = walk_step, init_scale, jump, dtype
        self.n_chains, self.n_proposals = n_chains, n_proposals
        self.n_burnin, self.n_draws, self.step_size = n_burnin, n_draws, step_size
        self.inner.check()

    @property
    def inner(self) -> Inner:
        """The inner sampler of p(x | y_{1:k})."""
        return Inner(self.n_chains, self.n_proposals, self.n_burnin, self.n_draws, self.step_size)

    def _measurement_cost(self, k: int) -> int:
        """Evaluations per sample of measurement k: (walk steps + 1) posterior means."""
        walk = self.n_walk_first if k == 1 else self.n_walk
        return (walk + 1) * self.inner.chain_cost() + (self.inner.start_cost() if k == 1 else 0)

    def sample_cost(self, n: int) -> int:
        """n · (1 + n_proposals + (n_walk_first + 1 + (m − 1)(n_walk + 1)) · n_chains ·
        (1 + n_burnin + n_draws))."""
        m = self.n_measurements
        return n * (1 + self._measurement_cost(1) + (m - 1) * self._measurement_cost(2))

    def plan_budget(self, budget: int, n_samples: int) -> BudgetPlan:
        """m = 1 + ⌊(budget − n (1 + n_proposals + (n_walk_first + 1) c)) / (n (n_walk + 1)
        c)⌋ measurements, c = n_chains (1 + n_burnin + n_draws); ValueError when the
        budget cannot pay for the first, the warm start and the final evaluations."""
        per = n_samples * self._measurement_cost(2)
        start = n_samples * (1 + self._measurement_cost(1))
        if budget < start:
            raise ValueError(
                f"WalkJump: a budget of {budget} evaluations cannot pay for the first "
                f"measurement with its warm start and the final energies ({start})"
            )
        m = 1 + (budget - start) // per
        plan = type(self)(**{**self.get_params(), "n_measurements": m})
        planned = plan.sample_cost(n_samples)
        why = f"a measurement costs {per} evaluations; whole measurements leave the rest"
        return BudgetPlan(
            plan, {"n_measurements": m}, planned, shortfall_note(planned, budget, why)
        )

    def sample(
        self,
        target: Target,
        n: int,
        generator: torch.Generator,
        checkpoint: Checkpoint = NO_CHECKPOINT,
    ) -> SampleSet:
        """Accumulate the measurements of ``n`` samples and jump (see the module
        docstring); saves ``{total, chains, x, accept}`` and the generator every
        ``checkpoint.every`` measurements."""
        dtype = resolve_dtype(self.dtype)
        loc = start_location(target, dtype)
        x = loc + self.init_scale * torch.randn(n, target.dim, generator=generator, dtype=dtype)
        k, total, chains, accept = 0, torch.zeros_like(x), None, torch.zeros((), dtype=dtype)
        saved = checkpoint.restore()
        if saved is not None:
            k, s = saved
            total, chains, x, accept = s["total"], s["chains"], s["x"], s["accept"]
            generator.set_state(s["generator"])
        while k < self.n_measurements and self._affordable(target, n, k + 1):
            x, total, chains, acc = self._measure(target, x, total, chains, k + 1, generator)
            k, accept = k + 1, accept + acc
            if checkpoint.due(k) and k < self.n_measurements:
                state = {"total": total, "chains": chains, "x": x, "accept": accept}
                checkpoint.save(k, {**state, "generator": generator.get_state()})
        return self._sample_set(target, x, k, accept)

    def _affordable(self, target: Target, n: int, k: int) -> bool:
        """Whether the budget pays for measurement k and the n final evaluations;
        marks the target exhausted when not."""
        left = remaining_budget(target)
        need = n * (1 + self._measurement_cost(k))
        if left is None or left >= need:
            return True
        target.exhausted = True
        return False

    def _measure(
        self,
        target: Target,
        x: Tensor,
        total: Tensor,
        chains: Tensor | None,
        k: int,
        generator: torch.Generator,
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """Measurement k (1-based): start y_k at x + σ ξ (``x`` the starts x₀ at k = 1,
        else the first inner chain's draw), walk, keep y_k and jump; returns (the jump,
        the sum of y_1 … y_k, the chains, the mean acceptance of the k-th posterior
        means)."""
        n = x.shape[0]
        start = x if chains is None else chains[:n]
        y = start + self.sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(
            x.device
        )
        fns, s = (target.energy, target.energy_and_grad), self.sigma / math.sqrt(k)
        accept = torch.zeros((), dtype=x.dtype)
        walk = self.n_walk_first if k == 1 else self.n_walk
        for i in range(walk + 1):
            mean, acc, chains = posterior_mean(
                *fns, (total + y) / k, s, self.inner, generator, chains
            )
            accept = accept + acc
            if i < walk:
                y = walk_step(y, mean, self.sigma, self.walk_step, generator)
        jump = mean if self.jump == "mean" else chains[:n]
        return jump, total + y, chains, accept / (walk + 1)

    def _sample_set(self, target: Target, x: Tensor, k: int, accept: Tensor) -> SampleSet:
        """The jumps with their energies (as many as the budget pays for)."""
        x = x[: affordable(target, x.shape[0])]
        with torch.no_grad():
            energy = target.energy(x)
        attrs = {
            "n_measurements": k,
            "n_measurements_planned": self.n_measurements,
            "noise_final": self.sigma / math.sqrt(k) if k else math.inf,
            "acceptance": float(accept / k) if k else math.nan,
        }
        return SampleSet(x=x, energy=energy, attrs=attrs)
