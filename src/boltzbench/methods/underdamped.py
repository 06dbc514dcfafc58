"""Underdamped Langevin as a benchmark method: OBABO (Metropolis-adjusted) or randomized midpoint.

``n_chains`` chains start from N(loc, init_scale² I) with momenta p ~ N(0, I)
and run a kernel of :mod:`boltzbench.mcmc.underdamped` (friction γ =
``friction``, unit mass) in the three phases of the chain runner
(:mod:`boltzbench.mcmc.runner`):

``kernel="obabo"``
    generalized HMC (Horowitz 1991): partial momentum refresh, one leapfrog
    step with a Metropolis test and a momentum flip on rejection, partial
    refresh. Warm-up adapts each chain's step size towards ``target_accept``
    (0.65 by default) by dual averaging (Hoffman & Gelman 2014) and keeps the
    averaged step size. Exact: no step-size bias.
``kernel="randomized_midpoint"``
    the unadjusted randomized-midpoint method of Shen & Lee 2019. There is no
    acceptance to adapt on: the configured ``step_size`` is kept throughout,
    and the warm-up is more burn-in. Its stationary law carries a step-size
    bias.

Then ``n_burnin`` discarded steps and K = ⌈n / n_chains⌉ kept draws per chain,
one every ``thinning`` steps, returned draw-major (draw 1 of every chain, then
draw 2, …), first n.

**Cost.** With S = n_warmup + n_burnin + K · thinning steps per chain, ``sample``
makes n_chains · (1 + c · S) energy-and-gradient evaluations, all through the
target passed to it, with c = 1 for ``"obabo"`` (the gradient at the current
point is cached; one at the leapfrog end point) and c = 2 for
``"randomized_midpoint"`` (one at the random midpoint, one at the end point);
the 1 is the initial state. Under an evaluation budget the budget decides the
chain length (:func:`~boltzbench.methods.mala.chain_budget_plan`, as for MALA),
and a run stops at the first step the budget cannot pay for (``n_steps`` says
how far it got).

Diagnostics are computed on all n_chains × K kept draws: autocorrelation ESS
and split R̂ per dimension (:mod:`boltzbench.mcmc.diagnostics`), the acceptance
(for the randomized midpoint: the fraction of steps taken, 1 unless a step met
a non-finite energy) and the divergence rate after warm-up.
"""

from __future__ import annotations

import math

import torch

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import BudgetPlan, SampleSet, resolve_dtype, start_location
from boltzbench.mcmc import proposal, runner, underdamped
from boltzbench.mcmc.runner import ChainRun, Draw, Schedule
from boltzbench.methods.base import Method
from boltzbench.methods.mala import chain_budget_plan
from boltzbench.targets.base import Target

__all__ = ["Underdamped"]


class Underdamped(Method):
    """Underdamped Langevin chains, OBABO/GHMC or randomized midpoint (module docstring).

    Parameters
    ----------
    kernel
        ``"obabo"`` (Metropolis-adjusted, step size adapted) or
        ``"randomized_midpoint"`` (unadjusted, step size fixed).
    n_chains
        Number of independent chains.
    n_warmup
        Steps of step-size adaptation per chain (OBABO; more burn-in for the
        randomized midpoint), discarded.
    n_burnin
        Further discarded steps.
    thinning
        Steps between kept draws.
    step_size
        h in units of x: the initial step size of OBABO, the step size of the
        randomized midpoint.
    friction
        γ > 0 (units of 1/h): the momentum decays as exp(−γ t).
    target_accept
        OBABO's acceptance aimed at during warm-up (0.65, as for HMC: Beskos et
        al. 2013); unused by the randomized midpoint.
    init_scale
        Chains start from N(loc, init_scale² I), loc the target's base_location (or 0).
    dtype
        "float32" or "float64": the dtype of positions (the target should match).

    Under an evaluation budget, the budget decides ``thinning`` and ``n_burnin``
    (and ``n_warmup`` when it cannot pay for the configured warm-up and burn-in
    and one draw per sample row), as for :class:`~boltzbench.methods.mala.MALA`.
    """

    fast_params = {"n_chains": 8, "n_warmup": 50, "n_burnin": 10, "thinning": 1}
    budget_settings = ("n_warmup", "n_burnin", "thinning")

    def __init__(
        self,
        kernel: str = "obabo",
        n_chains: int = 64,
        n_warmup: int = 500,
        n_burnin: int = 200,
        thinning: int = 5,
        step_size: float = 0.1,
        friction: float = 1.0,
        target_accept: float = 0.65,
        init_scale: float = 1.0,
        dtype: str = "float32",
    ):
        if kernel not in underdamped.KERNELS:
            raise ValueError(f"underdamped: kernel must be one of {sorted(underdamped.KERNELS)}")
        if n_chains < 1 or thinning < 1 or n_warmup < 0 or n_burnin < 0:
            raise ValueError("need n_chains >= 1, thinning >= 1, n_warmup >= 0, n_burnin >= 0")
        if not (step_size > 0 and friction > 0 and 0 < target_accept < 1):
            raise ValueError("need step_size > 0, friction > 0 and 0 < target_accept < 1")
        resolve_dtype(dtype)
        self.kernel, self.n_chains, self.n_warmup, self.n_burnin = (
            kernel,
            n_chains,
            n_warmup,
            n_burnin,
        )
        self.thinning, self.step_size, self.friction = thinning, step_size, friction
        self.target_accept, self.init_scale, self.dtype = target_accept, init_scale, dtype

    @property
    def evaluations_per_step(self) -> int:
        """Energy-and-gradient evaluations per chain per step: 1 (OBABO) or 2 (midpoint)."""
        return underdamped.KERNELS[self.kernel]

    def n_steps(self, n: int) -> int:
        """Kernel steps per chain for ``n`` samples."""
        return self.n_warmup + self.n_burnin + math.ceil(n / self.n_chains) * self.thinning

    def sample_cost(self, n: int) -> int:
        """n_chains · (1 + c · steps), c = :attr:`evaluations_per_step`."""
        return self.n_chains * (1 + self.evaluations_per_step * self.n_steps(n))

    def plan_budget(self, budget: int, n_samples: int) -> BudgetPlan:
        """Chains of ⌊(budget − n_chains) / (c · n_chains)⌋ steps, laid out by
        :func:`~boltzbench.mcmc.runner.plan_chain`.

        ValueError when the budget cannot pay for the start and one step.
        """
        per_step = self.n_chains * self.evaluations_per_step
        return chain_budget_plan(self, budget, n_samples, per_step, self.n_chains)

    def sample(
        self,
        target: Target,
        n: int,
        generator: torch.Generator,
        checkpoint: Checkpoint = NO_CHECKPOINT,
    ) -> SampleSet:
        """Run the chains and return the ``n`` draws (see the module docstring), saving
        the run every ``checkpoint.every`` steps and resuming a saved one."""
        dtype = resolve_dtype(self.dtype)
        potential = proposal.potential_from(target.energy_and_grad)
        x0 = torch.randn(self.n_chains, target.dim, generator=generator, dtype=dtype)
        x0 = start_location(target, dtype) + self.init_scale * x0
        p0 = torch.randn(x0.shape, generator=generator, dtype=dtype).to(x0.device)
        state = underdamped.init(x0, p0, potential)
        chain = self._chain(potential)
        zero = torch.zeros(state.energy.shape, dtype=dtype)
        run = runner.start(chain, state, self.step_size, {"accept": zero, "divergent": zero})
        schedule = Schedule(
            self.n_warmup, self.n_burnin, self.thinning, math.ceil(n / self.n_chains)
        )
        run = runner.run(chain, run, schedule, generator, checkpoint, desc="underdamped")
        samples = self._sample_set(run, runner.stack(runner.draws(chain, run)), n)
        samples.attrs.update(n_steps=run.step, n_steps_planned=schedule.total)
        return samples

    def _chain(self, potential: proposal.Potential) -> runner.Chain:
        """Steps of the kernel on ``potential``; OBABO adapts each chain's step size."""
        kernel, friction = underdamped.build_kernel(self.kernel), self.friction
        adapts = self.kernel == "obabo"
        return runner.Chain(
            step=lambda generator, state, eps: kernel(generator, state, potential, eps, friction),
            record=lambda info: {"accept": info.acceptance_rate, "divergent": info.is_divergent},
            keep=runner.keep_state,
            adapt_on=runner.acceptance_rate if adapts else None,
            target_accept=self.target_accept,
        )

    def _sample_set(self, run: ChainRun, draws: Draw, n: int) -> SampleSet:
        """The first ``n`` draws (fields of shape ``(K, chains, ...)``) with diagnostics."""
        counted = run.step - self.n_warmup
        per_step = {k: v / counted if counted > 0 else v * math.nan for k, v in run.sums.items()}
        samples = runner.chain_samples(draws, n)
        samples.attrs.update(
            kernel=self.kernel,
            friction=self.friction,
            acceptance=float(per_step["accept"].mean()),
            divergence_rate=float(per_step["divergent"].mean()),
            step_size=float(run.step_size.mean()),
            n_chains=self.n_chains,
            n_grad_evaluations=self.n_chains * (1 + self.evaluations_per_step * run.step),
        )
        samples.diagnostics.update(
            acceptance_per_chain=per_step["accept"], step_size_per_chain=run.step_size
        )
        return samples
