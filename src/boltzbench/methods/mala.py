"""MALA as a benchmark method: parallel chains with warm-up, burn-in and thinning.

``n_chains`` chains start from N(loc, init_scale² I) and run the MALA kernel of
:mod:`boltzbench.mcmc.mala` in the three phases of the chain runner
(:mod:`boltzbench.mcmc.runner`):

1. warm-up, ``n_warmup`` steps: each chain adapts its own step size towards
   ``target_accept`` by dual averaging on log ε (Hoffman & Gelman 2014), and
   keeps the averaged step size ε̄ afterwards;
2. burn-in, ``n_burnin`` steps at the fixed step sizes, discarded;
3. sampling: K = ⌈n / n_chains⌉ kept draws per chain, one every ``thinning``
   steps. The n returned samples are the first n of the draws ordered
   draw-major (draw 1 of every chain, then draw 2, …).

Every step costs one energy-and-gradient evaluation per chain, so a call costs
n_chains · (1 + n_warmup + n_burnin + K · thinning) of each, all through the
target passed to :meth:`MALA.sample` (and so counted by a CountingTarget).

Under an evaluation budget (:meth:`MALA.plan_budget`) the budget decides the
chain length: ``thinning``, ``n_burnin`` and, when the budget is small,
``n_warmup`` are chosen by :func:`~boltzbench.mcmc.runner.plan_chain` so that the
n_chains · (1 + steps) evaluations spend the budget up to less than one step of
every chain. The run
stops at the first step the budget cannot pay for: the draws kept so far are
returned (the chains' current states when it stopped before the first kept
draw), and ``n_steps`` says how far it got.

Diagnostics are computed on all n_chains × K kept draws: ``ess_per_dim`` is the
autocorrelation ESS of Vehtari et al. 2021 (:mod:`boltzbench.mcmc.diagnostics`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import BudgetPlan, SampleSet, resolve_dtype, shortfall_note, start_location
from boltzbench.mcmc import compiling, mala, proposal, runner
from boltzbench.mcmc.runner import Draw, Schedule, plan_chain
from boltzbench.methods.base import Method
from boltzbench.targets.base import Target

__all__ = ["MALA", "chain_budget_plan"]


def chain_budget_plan(
    method: Method, budget: int, n_samples: int, per_step: int, start: int
) -> BudgetPlan:
    """The :class:`BudgetPlan` of a chain method whose run costs ``start`` + steps · ``per_step``.

    ``method`` has ``n_chains``, ``n_warmup``, ``n_burnin`` and ``thinning``;
    steps = ⌊(budget − start) / per_step⌋ are laid out by
    :func:`~boltzbench.mcmc.runner.plan_chain`.
    ValueError when the budget cannot pay for the start and one step.
    """
    name = type(method).__name__
    steps = (budget - start) // per_step
    if steps < 1:
        raise ValueError(
            f"{name}: a budget of {budget} evaluations cannot pay for the chains' start "
            f"({start}) and one step ({per_step})"
        )
    n_draws = math.ceil(n_samples / method.n_chains)
    settings = plan_chain(steps, method.n_warmup, method.n_burnin, n_draws)
    schedule = Schedule(settings["n_warmup"], settings["n_burnin"], settings["thinning"], n_draws)
    planned = start + min(steps, schedule.total) * per_step
    why = f"a step of every chain costs {per_step} evaluations; whole steps leave the rest"
    plan = type(method)(**{**method.get_params(), **settings})
    return BudgetPlan(plan, settings, planned, shortfall_note(planned, budget, why))


class MALA(Method):
    """Metropolis-adjusted Langevin algorithm over parallel chains (Roberts & Tweedie 1996).

    Parameters
    ----------
    n_chains
        Number of independent chains.
    n_warmup
        Steps of step-size adaptation per chain (discarded).
    n_burnin
        Further steps at the adapted step size (discarded).
    thinning
        Steps between kept draws.
    step_size
        Initial step size ε₀ (units of x): the proposal is
        y = x − (ε²/2) ∇E(x) + ε ξ.
    target_accept
        Acceptance rate aimed at during warm-up (0.574: Roberts & Rosenthal 1998).
    init_scale
        Chains start from N(loc, init_scale² I), loc the target's base_location (or 0).
    dtype
        "float32" or "float64": the dtype of positions (the target should match).
    compile
        "false" (default), "auto" or "true" (or a bool): run each MALA step as one
        ``torch.compile``d graph (:mod:`boltzbench.mcmc.compiling`; "auto" where the
        platform supports it, "true" warns and runs eager where not). The draws
        and counts are those of the eager run; samples agree to float rounding.

    Under an evaluation budget, the budget decides ``thinning`` and ``n_burnin``
    (and ``n_warmup`` when it cannot pay for the configured warm-up and burn-in
    and one draw per sample row): their configured values are then ignored,
    except as the warm-up kept and the least burn-in (:meth:`plan_budget`).
    """

    #: small settings for the conformance suite (CI)
    fast_params = {"n_chains": 8, "n_warmup": 50, "n_burnin": 10, "thinning": 1}
    budget_settings = ("n_warmup", "n_burnin", "thinning")

    def __init__(
        self,
        n_chains: int = 64,
        n_warmup: int = 500,
        n_burnin: int = 200,
        thinning: int = 5,
        step_size: float = 0.1,
        target_accept: float = 0.574,
        init_scale: float = 1.0,
        dtype: str = "float32",
        compile: compiling.Switch = False,
    ):
        if n_chains < 1 or thinning < 1 or n_warmup < 0 or n_burnin < 0:
            raise ValueError("need n_chains >= 1, thinning >= 1, n_warmup >= 0, n_burnin >= 0")
        if not (step_size > 0 and 0 < target_accept < 1):
            raise ValueError("need step_size > 0 and 0 < target_accept < 1")
        resolve_dtype(dtype)
        self.n_chains, self.n_warmup, self.n_burnin = n_chains, n_warmup, n_burnin
        self.thinning, self.step_size, self.target_accept = thinning, step_size, target_accept
        self.init_scale, self.dtype, self.compile = init_scale, dtype, compiling.check(compile)

    def n_steps(self, n: int) -> int:
        """Kernel steps per chain for ``n`` samples (each one evaluation per chain)."""
        return self.n_warmup + self.n_burnin + math.ceil(n / self.n_chains) * self.thinning

    def sample(
        self,
        target: Target,
        n: int,
        generator: torch.Generator,
        checkpoint: Checkpoint = NO_CHECKPOINT,
    ) -> SampleSet:
        """Run the chains and return the ``n`` draws (see the module docstring).

        The chain runner (:func:`boltzbench.mcmc.runner.run`) saves the whole run
        every ``checkpoint.every`` steps and resumes a saved one.
        """
        dtype = resolve_dtype(self.dtype)
        potential = compiling.potential(target, self.compile)
        x0 = torch.randn(self.n_chains, target.dim, generator=generator, dtype=dtype)
        x0 = start_location(target, dtype) + self.init_scale * x0
        state = mala.init(x0, potential)
        chain = self._chain(potential)
        accept = torch.zeros(state.energy.shape, dtype=dtype)
        run = runner.start(chain, state, self.step_size, {"accept": accept})
        schedule = Schedule(
            self.n_warmup, self.n_burnin, self.thinning, math.ceil(n / self.n_chains)
        )
        run = runner.run(chain, run, schedule, generator, checkpoint, desc="mala")
        after_warmup, accept = run.step - self.n_warmup, run.sums["accept"]
        acceptance = accept / after_warmup if after_warmup > 0 else accept * math.nan
        draws = runner.stack(runner.draws(chain, run))
        samples = self._sample_set(draws, n, acceptance, run.step_size)
        samples.attrs.update(n_steps=run.step, n_steps_planned=schedule.total)
        return samples

    def _chain(self, potential: proposal.Potential) -> runner.Chain:
        """MALA steps on ``potential``, each chain adapting its own step size."""
        kernel = mala.build_kernel(self.compile)
        return runner.Chain(
            step=lambda generator, state, eps: kernel(generator, state, potential, eps),
            record=lambda info: {"accept": info.acceptance_rate},
            keep=runner.keep_state,
            adapt_on=runner.acceptance_rate,
            target_accept=self.target_accept,
        )

    def sample_cost(self, n: int) -> int:
        """One evaluation per chain at the start and per step."""
        return self.n_chains * (1 + self.n_steps(n))

    def plan_budget(self, budget: int, n_samples: int) -> BudgetPlan:
        """Chains of ⌊budget / n_chains⌋ − 1 steps, laid out by
        :func:`~boltzbench.mcmc.runner.plan_chain`.

        ValueError when the budget cannot pay for the start and one step (2 · n_chains).
        """
        return chain_budget_plan(self, budget, n_samples, self.n_chains, self.n_chains)

    def _sample_set(self, draws: Draw, n: int, acceptance: Tensor, step_size: Tensor) -> SampleSet:
        """The first ``n`` draws (``draws`` fields of shape (K, chains, ...)) with diagnostics."""
        samples = runner.chain_samples(draws, n)
        samples.attrs.update(
            acceptance=float(acceptance.mean()),
            step_size=float(step_size.mean()),
            n_chains=self.n_chains,
            n_steps=self.n_steps(n),
        )
        samples.diagnostics.update(acceptance_per_chain=acceptance, step_size_per_chain=step_size)
        return samples
