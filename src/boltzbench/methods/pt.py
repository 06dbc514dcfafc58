"""Parallel tempering as a benchmark method: the classical baseline beside MALA and SMC.

Runs :func:`boltzbench.mcmc.reference.mcmc_reference` with
``algorithm="pt"`` (batched replica exchange, :mod:`boltzbench.mcmc.tempering`)
and no R̂ gate: a sampler under test is scored, not refused. Its samples are the
β = 1 replicas, unweighted; every replica's evaluations are counted, since the
hot replicas are part of the method's cost. The store carries the acceptance,
the swap acceptance, R̂ and the energy ESS of the run.

Under an evaluation budget the budget decides the chain length, as for
:class:`~boltzbench.methods.mala.MALA`: ``thinning``, ``n_burnin`` and, when the
budget is small, ``n_warmup`` (:func:`~boltzbench.mcmc.runner.plan_chain`),
with one step costing n_temps · n_chains evaluations (· n_leapfrog with HMC).

Swendsen & Wang 1986, "Replica Monte Carlo simulation of spin glasses";
Geyer 1991, "Markov chain Monte Carlo maximum likelihood".
"""

from __future__ import annotations

import math

import torch

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import BudgetPlan, SampleSet
from boltzbench.mcmc import compiling
from boltzbench.methods.base import Method
from boltzbench.methods.mala import chain_budget_plan
from boltzbench.targets.base import Target

__all__ = ["ParallelTempering"]


class ParallelTempering(Method):
    """Parallel tempering with MALA or HMC moves (see the module docstring).

    Parameters are those of :func:`~boltzbench.mcmc.reference.mcmc_reference`:
    ``n_chains`` independent ensembles of ``n_temps`` replicas on a geometric
    ladder up to ``t_max``; ``n_warmup`` steps of per-replica step-size
    adaptation, ``n_burnin`` discarded steps, a draw every ``thinning`` steps.

    Under an evaluation budget, the budget decides ``thinning`` and ``n_burnin``
    (and ``n_warmup`` when it cannot pay for the configured warm-up and burn-in
    and one draw per sample row); their configured values are then ignored,
    except as the warm-up kept and the least burn-in (:meth:`plan_budget`).

    ``compile``: "false" (default), "auto" or "true" (or a bool): run the local
    step of every replica as one ``torch.compile``d graph
    (:mod:`boltzbench.mcmc.compiling`; "auto" where the platform supports it,
    "true" warns and runs eager where not); the draws and counts are those of
    the eager run, samples agree to float rounding.
    """

    fast_params = {"n_chains": 4, "n_temps": 2, "n_warmup": 20, "n_burnin": 5, "thinning": 1}
    budget_settings = ("n_warmup", "n_burnin", "thinning")

    def __init__(
        self,
        n_chains: int = 32,
        n_temps: int = 4,
        t_max: float = 5.0,
        n_warmup: int = 500,
        n_burnin: int = 500,
        thinning: int = 10,
        step_size: float = 0.1,
        kernel: str = "mala",
        n_leapfrog: int = 1,
        init_scale: float = 1.0,
        dtype: str = "float64",
        compile: compiling.Switch = False,
    ):
        if min(n_chains, n_temps, thinning, n_leapfrog) < 1 or min(n_warmup, n_burnin) < 0:
            raise ValueError(
                "pt: n_chains, n_temps, thinning, n_leapfrog >= 1; n_warmup, n_burnin >= 0"
            )
        if kernel not in ("mala", "hmc"):
            raise ValueError(f"pt: kernel must be 'mala' or 'hmc', got {kernel!r}")
        self.n_chains, self.n_temps, self.t_max = n_chains, n_temps, t_max
        self.n_warmup, self.n_burnin, self.thinning = n_warmup, n_burnin, thinning
        self.step_size, self.kernel, self.n_leapfrog = step_size, kernel, n_leapfrog
        self.init_scale, self.dtype, self.compile = init_scale, dtype, compiling.check(compile)

    def _leapfrog(self) -> int:
        """Evaluations per replica and step: ``n_leapfrog`` with HMC, 1 with MALA."""
        return self.n_leapfrog if self.kernel == "hmc" else 1

    def sample_cost(self, n: int) -> int:
        """One evaluation per replica at the start and per step (``n_leapfrog`` with HMC)."""
        steps = self.n_warmup + self.n_burnin + math.ceil(n / self.n_chains) * self.thinning
        return self.n_temps * self.n_chains * (1 + steps * self._leapfrog())

    def plan_budget(self, budget: int, n_samples: int) -> BudgetPlan:
        """Chains of ⌊(budget / (n_temps · n_chains) − 1) / L⌋ steps (L = ``n_leapfrog``
        with HMC, else 1), laid out by :func:`~boltzbench.mcmc.runner.plan_chain`.

        ValueError when the budget cannot pay for the start and one step.
        """
        replicas = self.n_temps * self.n_chains
        return chain_budget_plan(self, budget, n_samples, replicas * self._leapfrog(), replicas)

    def sample(
        self,
        target: Target,
        n: int,
        generator: torch.Generator,
        checkpoint: Checkpoint = NO_CHECKPOINT,
    ) -> SampleSet:
        """``n`` draws of the β = 1 replicas, with the run's diagnostics."""
        from boltzbench.mcmc.reference import mcmc_reference

        return mcmc_reference(
            target,
            n,
            generator,
            algorithm="pt",
            rhat_max=math.inf,
            checkpoint=checkpoint,
            **{k: v for k, v in self.get_params().items()},
        )
