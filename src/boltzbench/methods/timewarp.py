"""Timewarp: a conditional flow of time-coarsened MD as a Metropolis–Hastings proposal.

Klein, Foong, Fjelde, Mlodozeniec, Brockschmidt, Nowozin, Noé & Tomioka 2023,
"Timewarp: transferable acceleration of molecular dynamics by learning
time-coarsened dynamics", NeurIPS 2023. A conditional normalizing flow
q_θ(x_{t+τ} | x_t) is trained by maximum likelihood on pairs of MD frames a lag
τ apart, and used as the proposal of MH chains on the Boltzmann density
(:mod:`boltzbench.mcmc.conditional_proposal`), so that the chains are exact
whatever the flow's error.

**The flow** (:class:`IncrementFlow`) models the increment Δ = x_{t+τ} − x_t
given the context x_t, both standardized by the training pairs' statistics:

    u = Δ / s_Δ,  c = (x_t − m_x) / s_x,
    log q(y | x) = log q_θ(u = (y − x) / s_Δ | c) − Σ_i log s_Δ,i,

with q_θ a zuko neural spline flow (Durkan et al. 2019; rational-quadratic
splines in masked autoregressive layers with ``passes = 2``, i.e. coupling-like
layers whose inverse is two network passes) conditioned on c. Timewarp's own
model is a transformer over atoms with a Gaussian base whose mean is x_t; on
boltzbench's coordinates (alanine dipeptide in internal coordinates: bonds,
angles, dihedrals; dihedrals as intervals, a proposal outside (−π, π] has E = +∞
and is rejected) an MLP-conditioned spline flow over the increment plays its part.

**The training pairs** (:func:`training_pairs`):

* MD reference data with its time order (:class:`~boltzbench.references.Trajectories`,
  what the train step hands a method that ``uses_time_order`` when the reference
  is ``md``): each row x_t is paired with the first row of the same replica whose
  frame is at least ``lag_frames`` later (with the train split thinned evenly,
  the lag is ``lag_frames`` up to one thinning interval; aldp in ``config.yaml``
  saves a frame every 80 fs). Rows with no such partner are dropped.
* Data without time order (exact or MCMC references, the conformance suite):
  each row is paired with a random other row (a permutation from the
  generator). The pairs are then independent, the flow learns p(x′) and ignores
  x, and the kernel is in effect independent MH with a flow proposal. Nothing
  else changes, no evaluation is spent on building pairs: the method says so
  in ``pairs`` (attrs ``pairs = "md lag"`` or ``"independent"``).

The chains start at up to ``n_starts`` training rows (kept in the model state),
chain i at row i mod n_starts, and run in the three phases of the chain runner
(:mod:`boltzbench.mcmc.runner`), one step being one conditional jump
(``kernel = "conditional"``; nothing to adapt, warm-up is more burn-in) or
``n_local`` MALA steps and a jump (``"mixed"``; the MALA ε adapts per chain
towards ``target_accept`` during warm-up).

**Cost.** With S = n_warmup + n_burnin + K · thinning steps per chain, K =
⌈n / n_chains⌉, ``sample`` makes n_chains · (1 + S) energy evaluations and no
gradient (``"conditional"``) or n_chains · (1 + S · (n_local + 1)) energy-and-
gradient evaluations (``"mixed"``), all through the target passed to it; the 1
is the initial state. ``fit`` trains on data and evaluates nothing. Under an
evaluation budget the budget decides ``thinning``, ``n_burnin`` (and, when it
is small, ``n_warmup``): :func:`~boltzbench.methods.mala.chain_budget_plan`.

**Diagnostics**, as :class:`~boltzbench.methods.flow_mcmc.FlowMCMC`'s:
``acceptance_jump`` (fraction of conditional jumps accepted after warm-up),
``acceptance_local`` (MALA moves; NaN for ``"conditional"``), ``ess_min``,
``ess_energy``, ``ess_per_energy_evaluation`` = ess_min / energy evaluations,
``n_energy_evaluations``, ``n_grad_evaluations``, ``sample_seconds``.
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from zuko.flows import NSF

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import BudgetPlan, SampleSet, resolve_dtype
from boltzbench.mcmc import conditional_proposal as cp
from boltzbench.mcmc import diagnostics, runner
from boltzbench.mcmc.flow_proposal import energy_only
from boltzbench.mcmc.runner import ChainRun, Schedule
from boltzbench.methods.mala import chain_budget_plan
from boltzbench.methods.training import GradientMethod, Minibatches, Objective, forked_seed
from boltzbench.references import Trajectories
from boltzbench.targets.base import Target

__all__ = ["Timewarp", "IncrementFlow", "Pairs", "training_pairs", "KERNELS"]

#: the kernels ``Timewarp`` can run
KERNELS = ("conditional", "mixed")


class Pairs(NamedTuple):
    """Training pairs: x_t and x_{t+τ}, each ``(m, dim)``; ``kind``: how they were made."""

    x: Tensor
    y: Tensor
    kind: str


def training_pairs(
    data: Tensor | Trajectories, lag_frames: int, generator: torch.Generator
) -> Pairs:
    """The pairs of the module docstring: by MD lag, or independent without time order."""
    if not isinstance(data, Trajectories):
        perm = torch.randperm(data.shape[0], generator=generator).to(data.device)
        return Pairs(data, data[perm], "independent")
    key = data.replica * (int(data.frame.max()) + lag_frames + 1) + data.frame
    order = torch.argsort(key)
    key, x = key[order], data.x[order]
    j = torch.searchsorted(key, key + lag_frames)
    ok = j < len(key)
    j = j.clamp(max=len(key) - 1)
    ok &= data.replica[order][j] == data.replica[order]
    if not ok.any():
        raise ValueError(f"timewarp: no two rows of a replica are {lag_frames} frames apart")
    return Pairs(x[ok], x[j[ok]], "md lag")


class IncrementFlow(nn.Module):
    """q(y | x) through the increment y − x: a conditional spline flow (module docstring).

    Parameters
    ----------
    dim
        Dimension of x and y.
    starts
        Rows the chains start at, ``(n_starts, dim)`` (a buffer of the state).
    transforms, hidden_features, bins
        zuko ``NSF`` settings: layers, hidden widths of each layer's MLP, spline bins.
    """

    def __init__(self, dim: int, starts: Tensor, transforms: int, hidden_features, bins: int):
        super().__init__()
        self.dim = dim
        for name in ("x_shift", "x_scale", "d_scale"):
            default = torch.zeros(dim) if name == "x_shift" else torch.ones(dim)
            self.register_buffer(name, default.to(starts))
        self.register_buffer("starts", starts.clone())
        self.flow = NSF(
            features=dim,
            context=dim,
            transforms=transforms,
            hidden_features=tuple(hidden_features),
            bins=bins,
            passes=min(2, dim),
        ).to(starts.dtype)

    def standardize(self, pairs: Pairs) -> None:
        """Set m_x, s_x and s_Δ from the training pairs (s floored at 1e-6)."""
        delta = pairs.y - pairs.x
        self.x_shift.copy_(pairs.x.mean(0))
        self.x_scale.copy_(pairs.x.std(0).clamp(min=1e-6).nan_to_num(1.0))
        self.d_scale.copy_(delta.std(0).clamp(min=1e-6).nan_to_num(1.0))

    def _context(self, x: Tensor) -> Tensor:
        return (x - self.x_shift) / self.x_scale

    def log_prob(self, y: Tensor, x: Tensor) -> Tensor:
        """log q(y | x), shape ``(n,)`` for ``y``, ``x`` of shape ``(n, dim)``."""
        u = (y - x) / self.d_scale
        return self.flow(self._context(x)).log_prob(u) - self.d_scale.log().sum()

    def sample(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """y ∼ q(· | x), shape ``(n, dim)``: base noise from ``generator`` pushed through
        the inverse of the flow's transform."""
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        u = self.flow(self._context(x)).transform.inv(z)
        return x + u * self.d_scale


class _Moves(NamedTuple):
    """What one step did, per chain; the MALA fields are None for ``"conditional"``."""

    local_accepted: Tensor | None
    local_rate: Tensor | None
    jumped: Tensor


class Timewarp(GradientMethod):
    """Timewarp-style MCMC: a conditional flow of MD over a lag as MH proposal
    (Klein et al. 2023; see the module docstring).

    Parameters
    ----------
    lag_frames
        τ in frames of the MD reference (module docstring; unused without time order).
    kernel
        ``"conditional"`` (MH with q(x′ | x)) or ``"mixed"`` (``n_local`` MALA steps
        then a conditional jump).
    n_local
        MALA steps per jump (``"mixed"`` only; >= 1).
    n_chains, n_warmup, n_burnin, thinning
        Chains and their phases, in steps (:mod:`boltzbench.mcmc.runner`).
    step_size, target_accept
        Initial MALA ε (units of x) and the acceptance its adaptation aims at.
    n_iter, batch_size, lr
        Maximum-likelihood training: Adam steps, pairs per step, learning rate.
    transforms, hidden_features, bins
        The conditional spline flow (:class:`IncrementFlow`).
    n_starts
        Training rows kept as the chains' starting points.
    dtype
        The flow's dtype ("float32" or "float64"); the chains run in float64.

    Under an evaluation budget, the budget decides ``thinning`` and ``n_burnin``
    (and ``n_warmup`` when it is small); training costs no evaluation.
    """

    needs_data = True
    uses_time_order = True
    weighted = False
    budget_settings = ("n_warmup", "n_burnin", "thinning")
    #: small settings for the conformance suite (CI)
    fast_params: dict[str, Any] = {
        "n_chains": 8,
        "n_warmup": 20,
        "n_burnin": 5,
        "thinning": 1,
        "n_iter": 100,
        "batch_size": 128,
        "transforms": 2,
        "hidden_features": [32, 32],
    }

    def __init__(
        self,
        *,
        lag_frames: int = 125,
        kernel: str = "conditional",
        n_local: int = 5,
        n_chains: int = 64,
        n_warmup: int = 100,
        n_burnin: int = 100,
        thinning: int = 1,
        step_size: float = 0.05,
        target_accept: float = 0.574,
        n_iter: int = 2000,
        batch_size: int = 256,
        lr: float = 1e-3,
        transforms: int = 4,
        hidden_features: list[int] | tuple[int, ...] = (128, 128),
        bins: int = 8,
        n_starts: int = 256,
        dtype: str = "float32",
    ):
        if kernel not in KERNELS:
            raise ValueError(f"timewarp: unknown kernel {kernel!r}; valid: {', '.join(KERNELS)}")
        counts = (lag_frames, n_local, n_chains, thinning, n_iter, batch_size, transforms, n_starts)
        if min(counts) < 1 or n_warmup < 0 or n_burnin < 0 or bins < 1:
            raise ValueError(
                "timewarp: need lag_frames, n_local, n_chains, thinning, n_iter, batch_size, "
                "transforms, n_starts, bins >= 1 and n_warmup, n_burnin >= 0"
            )
        if not (step_size > 0 and 0 < target_accept < 1 and lr > 0):
            raise ValueError("timewarp: need step_size > 0, lr > 0 and 0 < target_accept < 1")
        resolve_dtype(dtype)
        self.lag_frames, self.kernel, self.n_local = lag_frames, kernel, n_local
        self.n_chains, self.n_warmup, self.n_burnin = n_chains, n_warmup, n_burnin
        self.thinning, self.step_size, self.target_accept = thinning, step_size, target_accept
        self.n_iter, self.batch_size, self.lr = n_iter, batch_size, lr
        self.transforms, self.hidden_features = transforms, list(hidden_features)
        self.bins, self.n_starts, self.dtype = bins, n_starts, dtype

    # ---------------------------------------------------------------- training

    def _label(self) -> str:
        return "timewarp"

    def _build(self, dim: int, starts: Tensor) -> IncrementFlow:
        dtype = resolve_dtype(self.dtype)
        starts = starts.to(dtype)
        return IncrementFlow(dim, starts, self.transforms, self.hidden_features, self.bins)

    def _objective(self, target: Target, data, generator) -> Objective:
        """A fresh flow and the loss −mean log q(x_{t+τ} | x_t) over minibatches of pairs."""
        if data is None:
            raise ValueError("timewarp trains on reference data (needs_data): pass data")
        pairs = training_pairs(data, self.lag_frames, generator)
        dtype = resolve_dtype(self.dtype)
        pairs = Pairs(pairs.x.to(dtype), pairs.y.to(dtype), pairs.kind)
        keep = torch.randperm(len(pairs.x), generator=generator)[: self.n_starts]
        with forked_seed(generator):
            self.model_ = self._build(target.dim, pairs.x[keep.to(pairs.x.device)])
        self.model_.standardize(pairs)
        self.pairs_ = pairs.kind
        opt = torch.optim.Adam(self.model_.parameters(), lr=self.lr)
        batches = Minibatches(torch.cat([pairs.x, pairs.y], 1), self.batch_size, generator)

        def loss() -> tuple[Tensor, dict[str, float]]:
            x, y = next(batches).chunk(2, dim=1)
            return -self.model_.log_prob(y, x).mean(), {}

        return Objective(self.model_, opt, loss=loss, state={"batches": batches})

    def model_state(self) -> dict[str, Tensor]:
        """The flow's parameters and buffers (scales, start rows)."""
        self._check_fitted()
        return {k: v.detach().clone() for k, v in self.model_.state_dict().items()}

    def load_model_state(self, target: Target, state: dict[str, Tensor]) -> Timewarp:
        """Rebuild the flow for ``target.dim`` and load ``state`` into it."""
        self.model_ = self._build(target.dim, state["starts"])
        self.model_.load_state_dict(state)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("timewarp: call fit or load_model_state before sample")

    # ---------------------------------------------------------------- costs

    def _per_step(self) -> int:
        return 1 if self.kernel == "conditional" else self.n_local + 1

    def n_steps(self, n: int) -> int:
        """Steps per chain (warm-up, burn-in and sampling) for ``n`` samples."""
        return self.n_warmup + self.n_burnin + math.ceil(n / self.n_chains) * self.thinning

    def _evaluations(self, steps: int) -> dict[str, int]:
        """Energy and gradient evaluations of ``steps`` steps of every chain."""
        energy = self.n_chains * (1 + steps * self._per_step())
        return {"energy": energy, "grad": 0 if self.kernel == "conditional" else energy}

    def sample_cost(self, n: int) -> int:
        """n_chains · (1 + S · per step) energy evaluations (module docstring)."""
        return self._evaluations(self.n_steps(n))["energy"]

    def plan_budget(self, budget: int, n_samples: int) -> BudgetPlan:
        """Chains that spend the whole budget (training is on data, free)."""
        per = self.n_chains * self._per_step()
        return chain_budget_plan(self, budget, n_samples, per, self.n_chains)

    # ---------------------------------------------------------------- sampling

    def _proposal(self) -> tuple[cp.ConditionalProposal, cp.ConditionalLogProb]:
        """``propose(generator, x)`` and ``log_prob(y, x)`` of the fitted flow, float64."""
        model, dtype = self.model_, resolve_dtype(self.dtype)

        @torch.no_grad()
        def propose(generator: torch.Generator, x: Tensor) -> Tensor:
            return model.sample(x.to(dtype), generator).to(torch.float64)

        @torch.no_grad()
        def log_prob(y: Tensor, x: Tensor) -> Tensor:
            return model.log_prob(y.to(dtype), x.to(dtype)).to(torch.float64)

        return propose, log_prob

    def _chain(self, target: Target) -> tuple[runner.Chain, Any]:
        """The runner's chain and the evaluator of the configured kernel."""
        propose, log_prob = self._proposal()
        if self.kernel == "conditional":
            kernel, evaluate = cp.build_kernel(propose, log_prob), energy_only(target.energy)

            def step(generator, state, eps):
                state, info = kernel(generator, state, evaluate)
                return state, _Moves(None, None, info.is_accepted)

        else:
            kernel = cp.build_mixed_kernel(propose, log_prob, self.n_local)
            evaluate = target.energy_and_grad

            def step(generator, state, eps):
                state, info = kernel(generator, state, evaluate, eps)
                jumped = info.jump.is_accepted
                return state, _Moves(info.local_accepted, info.local_acceptance_rate, jumped)

        mixed = self.kernel == "mixed"
        chain = runner.Chain(
            step=step,
            record=_statistics,
            keep=runner.keep_state,
            adapt_on=(lambda moves: moves.local_rate) if mixed else None,
            target_accept=self.target_accept,
        )
        return chain, evaluate

    def sample(
        self,
        target: Target,
        n: int,
        generator: torch.Generator,
        checkpoint: Checkpoint = NO_CHECKPOINT,
    ) -> SampleSet:
        """Run the chains and return ``n`` unweighted draws (module docstring), saving
        the run every ``checkpoint.every`` steps and resuming a saved one."""
        self._check_fitted()
        if n < 1:
            raise ValueError(f"timewarp: n must be positive, got {n}")
        started = time.perf_counter()
        chain, evaluate = self._chain(target)
        starts = self.model_.starts.to(torch.float64)
        x0 = starts[torch.arange(self.n_chains) % len(starts)]
        state = cp.init(x0, evaluate)
        zero = torch.zeros(state.energy.shape, dtype=torch.float64)
        sums = {"accepted_local": zero, "accepted_jump": zero.clone()}
        run = runner.start(chain, state, self.step_size, sums)
        schedule = Schedule(
            self.n_warmup, self.n_burnin, self.thinning, math.ceil(n / self.n_chains)
        )
        run = runner.run(chain, run, schedule, generator, checkpoint, desc="timewarp")
        samples = self._sample_set(run, runner.draws(chain, run), n)
        samples.attrs["sample_seconds"] = time.perf_counter() - started
        return samples

    def _sample_set(self, run: ChainRun, kept: list[runner.Draw], n: int) -> SampleSet:
        """The first ``n`` of the ``kept`` draws with the attrs and diagnostics of the
        module docstring."""
        draws = runner.stack(kept)
        samples = runner.chain_samples(draws, n)
        counted = run.step - self.n_warmup if run.step > self.n_warmup else math.nan
        acc_jump = run.sums["accepted_jump"] / counted
        acc_local, step_size = run.sums["accepted_local"] / counted, run.step_size
        if self.kernel == "conditional":
            acc_local, step_size = acc_local * math.nan, step_size * math.nan
        evals = self._evaluations(run.step)
        samples.attrs.update(
            kernel=self.kernel,
            pairs=getattr(self, "pairs_", "unknown (loaded model)"),
            acceptance_jump=float(acc_jump.mean()),
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
            acceptance_jump_per_chain=acc_jump,
            acceptance_local_per_chain=acc_local,
            step_size_per_chain=step_size,
        )
        return samples


def _statistics(moves: _Moves) -> dict[str, Tensor]:
    """What a post-warm-up step adds: the jump and (``"mixed"``) the MALA moves accepted."""
    if moves.local_accepted is None:
        return {"accepted_jump": moves.jumped}
    return {"accepted_local": moves.local_accepted, "accepted_jump": moves.jumped}
