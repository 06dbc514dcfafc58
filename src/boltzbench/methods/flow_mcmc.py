"""Flow-proposal MCMC: a trained normalizing flow as the proposal of MH chains.

``fit`` trains a flow exactly as :class:`~boltzbench.methods.flow.FlowMethod`
does (it *is* a FlowMethod built from ``flow_params``: ``"mle"`` on reference
samples or ``"reverse_kl"`` on the energy). ``sample`` then runs ``n_chains``
chains of the kernel ``kernel`` from :mod:`boltzbench.mcmc.flow_proposal`:

``"imh"``
    independent Metropolis–Hastings with the flow as proposal (Tierney 1994;
    Albergo et al. 2019; Gabrié, Rotskoff & Vanden-Eijnden 2022);
``"mixed"``
    ``n_local`` MALA steps, then one flow jump (Gabrié et al. 2022, Algorithm 1).

The chains start at flow draws, then run in the three phases of the chain
runner (:mod:`boltzbench.mcmc.runner`), counted in *steps* (one jump for
``"imh"``; ``n_local`` MALA steps and a jump for ``"mixed"``):

1. warm-up, ``n_warmup`` steps: with ``"mixed"`` each chain adapts its MALA
   step size towards ``target_accept`` by dual averaging (Hoffman & Gelman
   2014, :mod:`boltzbench.mcmc.adaptation`) on the mean acceptance rate of the
   step's MALA moves, and keeps the averaged step size; ``"imh"`` has nothing
   to adapt, so its warm-up is more burn-in;
2. burn-in, ``n_burnin`` steps, discarded;
3. sampling: K = ⌈n / n_chains⌉ kept draws per chain, one every ``thinning``
   steps, returned draw-major (draw 1 of every chain, then draw 2, …), first n.

The samples are unweighted draws from p (``weighted = False``).

**Cost.** With S = n_warmup + n_burnin + K · thinning steps per chain, ``sample``
makes, all through the target passed to it,

* ``"imh"``: n_chains · (1 + S) energy evaluations and no gradients;
* ``"mixed"``: n_chains · (1 + S · (n_local + 1)) energy-and-gradient
  evaluations (a jump takes ∇E at the proposal too: the next MALA step needs it);

the 1 is the initial state. Training costs nothing more for ``"mle"`` and
n_iter × batch_size energy-and-gradient evaluations for ``"reverse_kl"``
(counted during ``fit``, not here). Flow evaluations (draws and log q) are not
target evaluations. Under an evaluation budget the chains stop at the first
step the budget cannot pay for (``n_steps`` says how far they got; S above is
then the steps done).

**Budget plan** (:meth:`FlowMCMC.plan_budget`). A reverse-KL flow keeps its
configured ``n_iter`` unless that costs more than half the budget, in which
case it is cut to ⌊(budget / 2) / batch_size⌋ steps; the chains absorb the
rest: their ``thinning``, ``n_burnin`` (and, when the rest is small,
``n_warmup``) are laid out by :func:`~boltzbench.mcmc.runner.plan_chain` so
that S fills it. An MLE flow costs nothing, so the chains absorb the whole
budget.

**Diagnostics**, over all n_chains × K kept draws: ``ess_per_dim`` and
``ess_energy`` are the autocorrelation ESS of Vehtari et al. 2021
(:mod:`boltzbench.mcmc.diagnostics`), ``ess_min`` the smallest over coordinates,
``ess_per_energy_evaluation`` = ess_min / (every energy evaluation of the
``sample`` call: initial states, warm-up, burn-in and sampling steps, the
formula above), ``rhat_max`` the largest split R̂. ``acceptance_flow`` and
``acceptance_local`` are the fractions of flow jumps and of MALA moves accepted
after warm-up (``acceptance_local`` is NaN for ``"imh"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import BudgetPlan, SampleSet, shortfall_note
from boltzbench.mcmc import compiling, diagnostics, runner
from boltzbench.mcmc import flow_proposal as fp
from boltzbench.mcmc.runner import ChainRun, Draw, Schedule
from boltzbench.methods.base import Method
from boltzbench.methods.flow import FlowMethod
from boltzbench.methods.mala import chain_budget_plan
from boltzbench.targets.base import Target

__all__ = ["FlowMCMC", "KERNELS"]

#: the kernels ``FlowMCMC`` can run
KERNELS = ("imh", "mixed")


class FlowMCMC(Method):
    """MCMC with a trained normalizing flow as proposal: IMH or MALA + flow jumps.

    Parameters
    ----------
    flow_params
        Keywords of :class:`~boltzbench.methods.flow.FlowMethod` (its ``mode``
        decides ``needs_data``: ``"mle"`` trains on reference samples).
    kernel
        ``"imh"`` (independent MH, Tierney 1994) or ``"mixed"`` (``n_local``
        MALA steps then one flow jump, Gabrié et al. 2022).
    n_local
        MALA steps per flow jump (``"mixed"`` only; >= 1).
    n_chains
        Number of parallel chains.
    n_warmup, n_burnin
        Steps of step-size adaptation and of further burn-in (both discarded).
    thinning
        Steps between kept draws.
    step_size
        Initial MALA step size ε₀ (units of x), adapted during warm-up.
    target_accept
        MALA acceptance aimed at (0.574: Roberts & Rosenthal 1998).
    compile
        "false" (default), "auto" or "true" (or a bool): compile the mixed kernel's
        MALA steps and jump decision and the target's energy-and-gradient
        (:mod:`boltzbench.mcmc.compiling`); the flow itself runs as it is.

    Notes
    -----
    A step is one jump (``"imh"``) or ``n_local`` MALA moves and one jump
    (``"mixed"``). Chains run in float64, whatever the flow's dtype.

    Under an evaluation budget, the budget decides ``thinning`` and ``n_burnin``
    (and ``n_warmup`` when the chains' share is small), and cuts a reverse-KL
    flow's ``flow_params["n_iter"]`` to at most half the budget; the configured
    values of these settings are then ignored, except as the warm-up kept, the
    least burn-in and the longest training (see the module docstring).
    """

    trainable = True
    weighted = False
    #: small settings for the conformance suite (CI)
    fast_params: dict[str, Any] = {
        "flow_params": dict(FlowMethod.fast_params),
        "n_local": 2,
        "n_chains": 8,
        "n_warmup": 20,
        "n_burnin": 5,
        "thinning": 1,
    }

    def __init__(
        self,
        *,
        flow_params: dict[str, Any] | None = None,
        kernel: str = "mixed",
        n_local: int = 5,
        n_chains: int = 64,
        n_warmup: int = 200,
        n_burnin: int = 100,
        thinning: int = 1,
        step_size: float = 0.1,
        target_accept: float = 0.574,
        compile: compiling.Switch = False,
    ):
        if kernel not in KERNELS:
            raise ValueError(f"flow_mcmc: unknown kernel {kernel!r}; valid: {', '.join(KERNELS)}")
        if n_chains < 1 or thinning < 1 or n_warmup < 0 or n_burnin < 0 or n_local < 1:
            raise ValueError(
                "flow_mcmc: need n_chains, thinning, n_local >= 1 and n_warmup, n_burnin >= 0"
            )
        if not (step_size > 0 and 0 < target_accept < 1):
            raise ValueError("flow_mcmc: need step_size > 0 and 0 < target_accept < 1")
        self.flow_params = dict(flow_params or {})
        FlowMethod(**self.flow_params)  # checks the flow's keywords now
        self.kernel, self.n_local, self.n_chains = kernel, n_local, n_chains
        self.n_warmup, self.n_burnin, self.thinning = n_warmup, n_burnin, thinning
        self.step_size, self.target_accept = step_size, target_accept
        self.compile = compiling.check(compile)

    budget_settings = ("flow_params.n_iter", "n_warmup", "n_burnin", "thinning")

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        """True when the flow trains by maximum likelihood (``mode="mle"``)."""
        return FlowMethod(**self.flow_params).needs_data

    def plan_budget(self, budget: int, n_samples: int) -> BudgetPlan:
        """Training (reverse KL: at most half the budget) first, then chains that spend
        the rest (see the module docstring); ValueError when either gets nothing."""
        flow = FlowMethod(**self.flow_params)
        params, settings, training = self.get_params(), {}, 0
        if flow.mode == "reverse_kl":
            n_iter = min(flow.n_iter, budget // 2 // flow.batch_size)
            if n_iter < 1:
                raise ValueError(
                    f"flow_mcmc: half of a budget of {budget} evaluations cannot pay for "
                    f"one training step of batch_size = {flow.batch_size}"
                )
            params["flow_params"] = {**self.flow_params, "n_iter": n_iter}
            settings["flow_params.n_iter"], training = n_iter, n_iter * flow.batch_size
        per_step = 1 if self.kernel == "imh" else self.n_local + 1
        chains = chain_budget_plan(
            type(self)(**params),
            budget - training,
            n_samples,
            self.n_chains * per_step,
            self.n_chains,
        )
        planned = training + chains.planned
        why = f"a step of every chain costs {self.n_chains * per_step} evaluations"
        return BudgetPlan(
            chains.method,
            {**settings, **chains.settings},
            planned,
            shortfall_note(planned, budget, why),
        )

    # ---------------------------------------------------------------- the flow

    def _train(self, target, data, generator, checkpoint) -> dict[str, list[float]]:
        """What ``fit`` does: train the flow (:meth:`FlowMethod.fit`, with its
        checkpoints); its history."""
        self.flow_ = FlowMethod(**self.flow_params).fit(target, data, generator, checkpoint)
        return self.flow_.history_

    def model_state(self) -> dict[str, Tensor]:
        """The flow's tensors (:meth:`FlowMethod.model_state`)."""
        self._check_fitted()
        return self.flow_.model_state()

    def load_model_state(self, target: Target, state: dict[str, Tensor]) -> FlowMCMC:
        """Rebuild the flow from ``flow_params`` and load ``state`` into it."""
        self.flow_ = FlowMethod(**self.flow_params).load_model_state(target, state)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "flow_"):
            raise RuntimeError("flow_mcmc: call fit or load_model_state before sample")

    # ---------------------------------------------------------------- costs

    def n_steps(self, n: int) -> int:
        """Steps per chain (warm-up, burn-in and sampling) for ``n`` samples."""
        return self.n_warmup + self.n_burnin + math.ceil(n / self.n_chains) * self.thinning

    def n_evaluations(self, n: int) -> dict[str, int]:
        """Energy and gradient evaluations of ``sample(…, n, …)`` (see the module docstring)."""
        return self._evaluations(self.n_steps(n))

    def _evaluations(self, steps: int) -> dict[str, int]:
        """Energy and gradient evaluations of ``steps`` steps of every chain."""
        per_step = 1 if self.kernel == "imh" else self.n_local + 1
        energy = self.n_chains * (1 + steps * per_step)
        return {"energy": energy, "grad": 0 if self.kernel == "imh" else energy}

    # ---------------------------------------------------------------- sampling

    def sample(
        self,
        target: Target,
        n: int,
        generator: torch.Generator,
        checkpoint: Checkpoint = NO_CHECKPOINT,
    ) -> SampleSet:
        """Run the chains and return ``n`` unweighted draws (see the module docstring),
        saving the run every ``checkpoint.every`` steps and resuming a saved one."""
        self._check_fitted()
        if n < 1:
            raise ValueError(f"flow_mcmc: n must be positive, got {n}")
        chains = _Chains.build(self, target)
        y0, log_q0 = chains.propose(generator, self.n_chains)
        state = fp.init(y0, log_q0, chains.evaluate)
        chain = chains.chain(self.target_accept)
        zero = torch.zeros(state.energy.shape, dtype=state.position.dtype)
        sums = {"accepted_local": zero, "accepted_flow": zero.clone()}
        run = runner.start(chain, state, self.step_size, sums)
        schedule = Schedule(
            self.n_warmup, self.n_burnin, self.thinning, math.ceil(n / self.n_chains)
        )
        run = runner.run(chain, run, schedule, generator, checkpoint, desc="flow_mcmc")
        return self._sample_set(run, runner.draws(chain, run), n, run.step - self.n_warmup)

    def sample_cost(self, n: int) -> int:
        return self.n_evaluations(n)["energy"]

    def _sample_set(self, run: ChainRun, kept: list[Draw], n: int, n_counted: int) -> SampleSet:
        """The first ``n`` of the ``kept`` draws with the attrs and diagnostics of the module
        docstring; ``n_counted`` steps were summed in ``run.sums``."""
        draws = runner.stack(kept)  # (K, chains, ...)
        samples = runner.chain_samples(draws, n)
        n_counted = n_counted if n_counted > 0 else math.nan
        acc_flow = run.sums["accepted_flow"] / n_counted
        acc_local = run.sums["accepted_local"] / n_counted
        step_size = run.step_size
        if self.kernel == "imh":  # no MALA moves, no step size
            acc_local, step_size = acc_local * math.nan, step_size * math.nan
        evals = self._evaluations(run.step)
        samples.attrs.update(
            kernel=self.kernel,
            acceptance_flow=float(acc_flow.mean()),
            acceptance_local=float(acc_local.mean()),
            step_size=float(step_size.mean()),
            n_chains=self.n_chains,
            n_steps=run.step,
            n_steps_planned=self.n_steps(n),
            n_energy_evaluations=evals["energy"],
            n_grad_evaluations=evals["grad"],
            ess_energy=float(diagnostics.effective_sample_size(draws.energy.T)),
            ess_per_energy_evaluation=samples.attrs["ess_min"] / evals["energy"],
        )
        samples.diagnostics.update(
            acceptance_flow_per_chain=acc_flow,
            acceptance_local_per_chain=acc_local,
            step_size_per_chain=step_size,
        )
        return samples


class _Moves(NamedTuple):
    """What one step did, per chain (shape ``(chains,)``; the MALA fields are None for IMH).

    Attributes
    ----------
    local_accepted
        Fraction of the step's MALA moves accepted.
    local_rate
        Mean of their acceptance rates min(1, α) (what the step-size adaptation uses).
    jumped
        Whether the flow jump was accepted.
    """

    local_accepted: Tensor | None
    local_rate: Tensor | None
    jumped: Tensor


@dataclass
class _Chains:
    """The flow as proposal, the target's evaluator and the kernel of one run."""

    propose: fp.Proposal
    evaluate: fp.Evaluate
    kernel: Callable[..., tuple[fp.State, Any]]
    mixed: bool

    @classmethod
    def build(cls, method: FlowMCMC, target: Target) -> _Chains:
        propose, log_prob = _flow_proposal(method.flow_, target.dim)
        if method.kernel == "imh":
            return cls(propose, fp.energy_only(target.energy), fp.build_kernel(propose), False)
        kernel = fp.build_mixed_kernel(propose, log_prob, method.n_local, method.compile)
        return cls(propose, compiling.energy_and_grad(target, method.compile), kernel, True)

    def step(
        self, generator: torch.Generator, state: fp.State, step_size: Tensor
    ) -> tuple[fp.State, _Moves]:
        """One step of every chain (``step_size``: the MALA ε per chain, unused by IMH)."""
        if not self.mixed:
            state, info = self.kernel(generator, state, self.evaluate)
            return state, _Moves(None, None, info.is_accepted)
        state, info = self.kernel(generator, state, self.evaluate, step_size)
        return state, _Moves(info.local_accepted, info.local_acceptance_rate, info.jump.is_accepted)

    def chain(self, target_accept: float) -> runner.Chain:
        """These steps for the chain runner: ``"mixed"`` adapts the MALA ε per chain on
        the mean rate of the step's MALA moves; ``"imh"`` adapts nothing."""
        return runner.Chain(
            step=self.step,
            record=_statistics,
            keep=runner.keep_state,
            adapt_on=_local_rate if self.mixed else None,
            target_accept=target_accept,
        )


def _local_rate(moves: _Moves) -> Tensor:
    """The mean acceptance rate of a step's MALA moves, per chain."""
    return moves.local_rate


def _statistics(moves: _Moves) -> dict[str, Tensor]:
    """What a post-warm-up step adds: the flow jumps and (``"mixed"``) the fraction of
    the MALA moves accepted, per chain."""
    if moves.local_accepted is None:
        return {"accepted_flow": moves.jumped}
    return {"accepted_local": moves.local_accepted, "accepted_flow": moves.jumped}


def _flow_proposal(flow: FlowMethod, dim: int) -> tuple[fp.Proposal, Callable[[Tensor], Tensor]]:
    """``propose(generator, n) -> (y, log q(y))`` and ``log_prob(x)`` of a fitted flow.

    Both use the flow's public model (:class:`~boltzbench.methods.flows_util.FlowModel`):
    draws are :meth:`FlowModel.sample <boltzbench.methods.flows_util.FlowModel.sample>`
    with base noise from ``generator`` (the same path as :meth:`FlowMethod.sample`),
    of dimension ``dim``; the results are float64.
    """
    model = flow.flow_
    if model.dim != dim:
        raise ValueError(f"flow_mcmc: the flow has dimension {model.dim}, the target {dim}")

    @torch.no_grad()
    def propose(generator: torch.Generator, n: int) -> tuple[Tensor, Tensor]:
        x, log_q = model.sample(n, generator)
        return x.to(torch.float64), log_q.to(torch.float64)

    @torch.no_grad()
    def log_prob(x: Tensor) -> Tensor:
        return model.log_prob(x.to(model.dtype)).to(torch.float64)

    return propose, log_prob
