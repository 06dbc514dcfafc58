"""Sequential Monte Carlo / annealed importance sampling with MCMC moves, as a method.

Geometric annealing (Neal 2001, "Annealed importance sampling"; Del Moral,
Doucet & Jasra 2006, "Sequential Monte Carlo samplers") from a normalized
Gaussian base q₀ = N(0, σ₀² I) to the target p̃ = exp(−E):

    π_β(x) ∝ q₀(x)^(1−β) p̃(x)^β,   E_β = (1 − β) E₀ + β E,
    E₀(x) = |x|² / (2σ₀²) + (d/2) log(2π σ₀²)   (so Z₀ = 1),

over 0 = β₀ < β₁ < … < β_T = 1 (T = ``n_temps``; the ``"linear"`` or
``"geometric"`` schedules of :func:`~boltzbench.mcmc.annealing.beta_schedule`).
The engine is :func:`boltzbench.mcmc.annealing.anneal` along its
:func:`~boltzbench.mcmc.annealing.gaussian_path`: at each temperature it
reweights, accumulates log Ẑ, resamples (systematic; Kitagawa 1996) when the
normalized ESS drops below ``ess_threshold``, and moves every particle by
``n_moves`` MALA or HMC steps with one step size, adapted by Robbins–Monro
towards ``target_accept`` (see :mod:`boltzbench.mcmc.annealing`). This module
holds the method: its settings, its budget plan and its sample set.

Since Z₀ = 1, Ẑ estimates Z = ∫ exp(−E) (unbiased for Z, not for log Z). The
returned ``log_weight`` is log W_i + log Ẑ + log n with W the final normalized
weights, so that logmeanexp(log_weight) = log Ẑ and the normalized weights
are right; ``attrs["log_Z_hat"]`` holds log Ẑ. Cost: each particle takes one
energy-and-gradient evaluation at the start and one per MALA step
(``n_leapfrog`` per HMC step), all through the target passed.
"""

from __future__ import annotations

import math

import torch

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import (
    BudgetPlan,
    SampleSet,
    remaining_budget,
    resolve_dtype,
    shortfall_note,
    start_location,
)
from boltzbench.estimators import normalized_kish_ess
from boltzbench.mcmc.annealing import (
    Annealed,
    Annealing,
    anneal,
    gaussian_path,
    normalize_log_weights,
)
from boltzbench.mcmc.compiling import Switch, check
from boltzbench.methods.base import Method
from boltzbench.targets.base import ShiftedTarget, Target

__all__ = ["SMC"]


class SMC(Method):
    """Annealed SMC sampler from a Gaussian base (Del Moral, Doucet & Jasra 2006).

    The number of particles is the ``n`` asked of :meth:`sample`.

    Parameters
    ----------
    n_temps, schedule, beta_min, kernel, n_moves, n_leapfrog
        The schedule and the moves, as documented on
        :class:`~boltzbench.mcmc.annealing.Annealing` (the settings of the engine).
    step_size, target_accept, adapt_gain
        The initial ε and its Robbins–Monro adaptation (ibid.).
    ess_threshold
        Resample when the normalized ESS falls below this (0: never, 1: always).
    base_scale
        σ₀ of the base N(loc, σ₀² I), loc = the target's base_location (or 0).
    dtype
        "float32" or "float64": the dtype of positions (weights are float64).
    compile
        "false" (default), "auto" or "true" (or a bool): compile the moves and the
        target's energy-and-gradient (:mod:`boltzbench.mcmc.compiling`); the same
        draws and counts as eager, results equal to float rounding.

    Under an evaluation budget, the budget decides ``n_temps`` (its configured
    value is then ignored): the n_samples particles anneal over the most
    temperatures it pays for, n · (1 + n_temps · n_moves · k) ≤ budget (k = 1
    for MALA, ``n_leapfrog`` for HMC); with too little for one temperature, one
    temperature and fewer particles (:meth:`plan_budget`).
    """

    weighted = True
    #: small settings for the conformance suite (CI)
    fast_params = {"n_temps": 8, "n_moves": 2}
    budget_settings = ("n_temps",)

    def __init__(
        self,
        n_temps: int = 100,
        schedule: str = "geometric",
        beta_min: float = 1e-3,
        kernel: str = "mala",
        n_moves: int = 5,
        n_leapfrog: int = 5,
        step_size: float = 0.1,
        target_accept: float | None = None,
        adapt_gain: float = 1.0,
        ess_threshold: float = 0.5,
        base_scale: float = 1.0,
        dtype: str = "float32",
        compile: Switch = False,
    ):
        self.n_temps, self.schedule, self.beta_min = n_temps, schedule, beta_min
        self.kernel, self.n_moves, self.n_leapfrog = kernel, n_moves, n_leapfrog
        self.step_size, self.target_accept, self.adapt_gain = step_size, target_accept, adapt_gain
        self.ess_threshold, self.base_scale, self.dtype = ess_threshold, base_scale, dtype
        self.compile = check(compile)
        self._annealing()  # validates the annealing settings
        resolve_dtype(dtype)
        if base_scale <= 0:
            raise ValueError(f"need base_scale > 0, got {base_scale}")

    def _annealing(self) -> Annealing:
        """The settings of the annealing engine (:mod:`boltzbench.mcmc.annealing`)."""
        return Annealing.of(self)

    def evaluations_per_temperature(self) -> int:
        """Energy-and-gradient evaluations per particle of one temperature's moves."""
        return self._annealing().evaluations_per_temperature()

    def evaluations_per_particle(self) -> int:
        """Energy-and-gradient evaluations per particle in one :meth:`sample` call."""
        return self._annealing().evaluations_per_particle()

    def sample(
        self,
        target: Target,
        n: int,
        generator: torch.Generator,
        checkpoint: Checkpoint = NO_CHECKPOINT,
    ) -> SampleSet:
        """Anneal ``n`` particles from the base to ``target``; weighted samples and log Ẑ.

        SMC cannot stop half-way (its particles are valid only at β = 1), so under
        an evaluation budget it first shortens its ladder to the most temperatures
        the budget pays for (``attrs["n_temps"]``), and with too little even for
        one, anneals fewer particles in one step.
        """
        smc, n = self._within_budget(remaining_budget(target), n)
        if smc is not self:  # shortened by the budget (the store's budget_stop_sample)
            target.exhausted = True
        loc = start_location(target, resolve_dtype(self.dtype))
        samples = smc._anneal(ShiftedTarget(target, loc) if loc.any() else target, n, generator)
        samples.x = samples.x + loc.to(samples.x.dtype)
        return samples

    def sample_cost(self, n: int) -> int:
        return n * self.evaluations_per_particle()

    def plan_budget(self, budget: int, n_samples: int) -> BudgetPlan:
        """The most temperatures ``budget`` pays for with ``n_samples`` particles
        (:meth:`_ladder`); ValueError when it pays for not one particle.

        With ``n_moves = 0`` the ladder costs nothing beyond the start, so the
        configured ``n_temps`` stays and only the n particles' start is spent.
        """
        if self.evaluations_per_temperature() == 0:
            planned = min(n_samples, budget)
            why = "n_moves = 0: temperatures cost no evaluations beyond the particles' start"
            return BudgetPlan(self, {}, planned, shortfall_note(planned, budget, why))
        n_temps, n_fit = self._ladder(budget, n_samples)
        if n_fit < 1:
            raise ValueError(
                f"smc: a budget of {budget} evaluations cannot anneal one particle over one "
                f"temperature ({1 + self.evaluations_per_temperature()} evaluations)"
            )
        plan = type(self)(**{**self.get_params(), "n_temps": n_temps})
        planned = n_fit * plan.evaluations_per_particle()
        why = (
            f"a temperature costs {n_fit * self.evaluations_per_temperature()} evaluations "
            "for all particles; whole temperatures leave the rest"
        )
        return BudgetPlan(plan, {"n_temps": n_temps}, planned, shortfall_note(planned, budget, why))

    def _ladder(self, budget: int, n: int) -> tuple[int, int]:
        """(temperatures, particles) that fit in ``budget``: the most temperatures
        T ≥ 1 with n · (1 + T · per_temperature) ≤ budget, or, when not even one
        fits, one temperature and ⌊budget / (1 + per_temperature)⌋ particles."""
        per_temp = self.evaluations_per_temperature()
        n_temps = (budget // n - 1) // max(per_temp, 1)
        if n_temps >= 1:
            return n_temps, n
        return 1, budget // (1 + per_temp)

    def _within_budget(self, budget: int | None, n: int) -> tuple[SMC, int]:
        """(this SMC or a copy with fewer temperatures, particles) that fit in ``budget``."""
        if budget is None or self.sample_cost(n) <= budget:
            return self, n
        n_temps, n_fit = self._ladder(budget, n)
        if n_fit < 1:
            raise RuntimeError(f"smc: the evaluation budget is spent ({budget} left)")
        return type(self)(**{**self.get_params(), "n_temps": n_temps}), n_fit

    def _anneal(self, target: Target, n: int, generator: torch.Generator) -> SampleSet:
        """SMC from N(0, base_scale² I) to ``target``."""
        x = self.base_scale * torch.randn(
            n, target.dim, generator=generator, dtype=resolve_dtype(self.dtype)
        )
        path = gaussian_path(target, self.base_scale, self.compile)
        return self._sample_set(anneal(self._annealing(), path, x, generator))

    def _sample_set(self, run: Annealed) -> SampleSet:
        """The final particles, their weights (logmeanexp = log Ẑ) and the traces."""
        state, log_w, log_z, trace = run.state, run.log_w, run.log_Z, run.trace
        betas = self._annealing().betas().tolist()
        n = log_w.shape[0]
        log_weight = normalize_log_weights(log_w) + log_z + math.log(n)
        attrs = {
            "log_Z_hat": float(log_z),
            "n_resample": int(sum(trace["resampled"])),
            "ess": normalized_kish_ess(log_w) * n,
            "ess_fraction": normalized_kish_ess(log_w),
            "acceptance": float(torch.tensor(trace["acceptance"]).nanmean()),
            "step_size": trace["step_size"][-1],
            "n_temps": self.n_temps,
            "n_particles": n,
            "n_samples": n,
            "n_evals_per_particle": self.evaluations_per_particle(),
        }
        diagnostics = {"beta": torch.tensor(betas, dtype=torch.float64)}
        for k, v in trace.items():
            diagnostics[f"{k}_per_temp"] = torch.tensor(v, dtype=torch.float64)
        return SampleSet(
            x=state.position,
            energy=state.target_energy.to(state.position.dtype),
            log_weight=log_weight,
            diagnostics=diagnostics,
            attrs=attrs,
        )
