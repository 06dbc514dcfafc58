"""FAB: a normalizing flow trained by annealed importance sampling with the α = 2 divergence.

Midgley, Stimper, Simm, Schölkopf & Hernández-Lobato 2023, "Flow Annealed
Importance Sampling Bootstrap", ICLR, arXiv:2208.01893 (FAB).

The flow q_θ is the coupling flow of :class:`~boltzbench.methods.flow.FlowMethod`
(built by it). It is trained to minimise the mass-covering divergence

    D₂(p‖q_θ) ∝ ∫ p(x)² / q_θ(x) dx,

whose gradient is ∇_θ D₂ ∝ −E_{g}[∇_θ log q_θ(x)] with g ∝ p²/q_θ, the
distribution that minimises the variance of its importance-sampling estimate
(FAB, Sec. 3). FAB estimates it with annealed importance sampling (AIS; Neal
2001) from q_θ to g. On the geometric path π_β ∝ q^(1−β) g^β, in reduced
energies,

    E₀ = −log q,   E_g = 2E + log q,   E_β = (1 − β) E₀ + β E_g = 2βE − (1 − 2β) log q,

each AIS step adds the incremental log weight −Δβ (E_g − E₀) = −2Δβ (E + log q),
so that mean(w) is an unbiased estimate of Z_g = ∫ exp(−2E)/q (with no MCMC
move, w = p̃²/q² exactly). The AIS itself is
:func:`~boltzbench.mcmc.annealing.anneal` with no resampling
(``ess_threshold = 0``), along the path :func:`annealing_path` whose base is
the flow (log q and ∇ log q by autograd) instead of SMC's Gaussian.

Training, one AIS run per iteration (``n_iter`` of them), ``batch_size`` particles:

``replay = False`` (FAB Algorithm 1)
    one gradient step on the surrogate loss L(θ) = −Σ_i w̄_i log q_θ(x_i), with
    x_i the AIS samples and w̄_i their self-normalized AIS weights, both held
    fixed (detached), so that ∇L estimates the D₂ gradient above.
``replay = True`` (FAB Algorithm 2, prioritized replay buffer)
    the AIS samples, their log weights and log q_θ(x_i) go into a buffer of the
    last ``buffer_size`` samples. Once it holds ``min_buffer_size`` rows, each
    iteration makes ``n_updates_per_batch`` gradient steps, each on
    L(θ) = −mean log q_θ(x) over ``batch_size`` rows drawn without replacement
    with probability ∝ w (the Gumbel top-k trick; Kool, van Hoof & Welling 2019).
    Since g depends on θ, after each step the drawn rows' weights are moved to
    the new target p²/q_θ': log w += log q_θ(x) − log q_θ'(x).

The step size of the AIS moves is one ε shared by the particles, adapted by
Robbins–Monro after every move (as in :class:`~boltzbench.methods.smc.SMC`) and
carried from one AIS run to the next.

Sampling draws x ∼ q_θ with importance weights log w = −E(x) − log q(x)
(:meth:`FlowMethod.sample <boltzbench.methods.flow.FlowMethod.sample>`);
mean(w) is unbiased for Z. With ``sample_ais`` an AIS run from q_θ to p (same
settings) on another ``n`` particles also reports ``log_Z_ais`` and
``ess_ais``, at a cost of ``1 + n_temps · n_moves · (1 or n_leapfrog)``
evaluations per particle.

Under an evaluation budget (:meth:`FAB.plan_budget`) the budget decides
``n_iter``: the whole AIS runs that the budget less the sampling reserve pays
for. Training stops before the first AIS run the budget cannot pay for;
``sample_ais`` is skipped (NaN) when the rest cannot pay for it.

Costs: every AIS run makes ``batch_size · (1 + n_temps · n_moves · k)``
energy-and-gradient evaluations (k = 1 for MALA, ``n_leapfrog`` for HMC), all
through the target passed, so a :class:`~boltzbench.targets.CountingTarget`
counts them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import (
    DTYPES,
    BudgetPlan,
    SampleSet,
    affordable,
    shortfall_note,
)
from boltzbench.estimators import log_mean_exp, normalized_kish_ess
from boltzbench.mcmc.annealing import Annealed, Annealing, Path, PathEnds, anneal
from boltzbench.methods.flow import ARCHITECTURE, FlowMethod
from boltzbench.methods.flows_util import FlowModel
from boltzbench.methods.training import GradientMethod, Objective, Trainer
from boltzbench.targets.base import Target

__all__ = ["FAB", "ReplayBuffer", "LogDensity", "flow_log_density", "annealing_path"]

#: x ``(n, dim)`` -> (log q(x) ``(n,)``, ∇ log q(x) ``(n, dim)``), both detached
LogDensity = Callable[[Tensor], tuple[Tensor, Tensor]]


def flow_log_density(flow: Callable[[], Any]) -> LogDensity:
    """log q and ∇_x log q of a lazy zuko flow (``flow().log_prob``), by autograd.

    Only the gradient with respect to x is taken; the flow's parameters get none.
    """

    def log_q_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            log_q = flow().log_prob(x)
            (grad,) = torch.autograd.grad(log_q.sum(), x)
        return log_q.detach(), grad.detach()

    return log_q_and_grad


def annealing_path(target: Target, log_q: LogDensity, power: float = 2.0) -> Path:
    """The AIS path from a normalized q to g ∝ p̃^a q^(1−a), a = ``power``.

    E_g = a E − (1 − a) log q: a = 2 is FAB's AIS target p²/q (E_g = 2E + log q),
    a = 1 the target p itself. The base end is E₀ = −log q. One target and one
    ``log_q`` evaluation per particle; the target sees float64 positions.
    """

    def ends(x: Tensor) -> PathEnds:
        energy, grad = target.energy_and_grad(x.to(torch.float64))
        grad = grad.to(x.dtype)
        lq, g_lq = log_q(x)
        lq = lq.to(torch.float64)
        if power != 1:
            energy, grad = power * energy + (power - 1) * lq, power * grad + (power - 1) * g_lq
        return PathEnds(energy, grad, -lq, -g_lq)

    return ends


class ReplayBuffer:
    """FAB's prioritized replay buffer (FAB Algorithm 2): the last ``capacity`` AIS samples.

    Each row holds x (``(dim,)``), its AIS log weight log w (float64) with respect
    to p²/q_θ, and log q_θ(x) for the θ that log w refers to.

    Parameters
    ----------
    capacity
        The most rows kept; the oldest are overwritten first.
    dim
        Dimension of x.
    dtype
        dtype of x and log q.
    """

    def __init__(self, capacity: int, dim: int, dtype: torch.dtype):
        self.x = torch.zeros(capacity, dim, dtype=dtype)
        self.log_w = torch.full((capacity,), -math.inf, dtype=torch.float64)
        self.log_q = torch.zeros(capacity, dtype=dtype)
        self.head, self.size = 0, 0

    @property
    def capacity(self) -> int:
        return self.x.shape[0]

    def __len__(self) -> int:
        return self.size

    def add(self, x: Tensor, log_w: Tensor, log_q: Tensor) -> None:
        """Append rows (the last ``capacity`` of them if more), overwriting the oldest."""
        x, log_w, log_q = x[-self.capacity :], log_w[-self.capacity :], log_q[-self.capacity :]
        idx = (self.head + torch.arange(x.shape[0])) % self.capacity
        self.x[idx] = x.detach().to(self.x.dtype)
        self.log_w[idx] = log_w.detach().to(torch.float64)
        self.log_q[idx] = log_q.detach().to(self.log_q.dtype)
        self.head = (self.head + x.shape[0]) % self.capacity
        self.size = min(self.size + x.shape[0], self.capacity)

    def sample(self, k: int, generator: torch.Generator) -> Tensor:
        """Indices of up to ``k`` distinct rows drawn with probability ∝ w, shape ``(m,)``.

        Gumbel top-k: the k largest log w_i + G_i, G_i ∼ Gumbel(0, 1), are a draw
        of k rows without replacement, successively ∝ w (Kool et al. 2019).
        Rows of weight zero (log w = −inf) are never drawn, so m = min(k, rows
        of positive weight).
        """
        log_w = self.log_w[: self.size]
        u = torch.rand(self.size, generator=generator, dtype=torch.float64)
        gumbel = -torch.log(-torch.log(u.clamp(1e-300, 1.0 - 1e-16)))
        valid = torch.isfinite(log_w)
        m = min(k, int(valid.sum()))
        keys = torch.where(valid, log_w + gumbel, torch.full_like(log_w, -math.inf))
        return torch.topk(keys, m).indices

    def adjust(self, idx: Tensor, log_q_new: Tensor) -> None:
        """Move rows ``idx`` to the new AIS target p²/q': log w += log q − log q'.

        Rows whose adjustment is not finite are left as they were (FAB Alg. 2).
        """
        log_q_new = log_q_new.detach().to(self.log_q.dtype)
        delta = (self.log_q[idx] - log_q_new).to(torch.float64)
        ok = torch.isfinite(delta)
        self.log_w[idx[ok]] += delta[ok]
        self.log_q[idx[ok]] = log_q_new[ok]

    def state_dict(self) -> dict[str, Any]:
        return {
            "x": self.x,
            "log_w": self.log_w,
            "log_q": self.log_q,
            "head": self.head,
            "size": self.size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x, self.log_w, self.log_q = state["x"], state["log_w"], state["log_q"]
        self.head, self.size = int(state["head"]), int(state["size"])


class _Run:
    """FAB's training state beside the flow's optimizer (which the
    :class:`~boltzbench.methods.training.Trainer` owns): the flow, the AIS step size
    carried from one AIS run to the next, and the replay buffer (None without
    replay). A checkpoint saves the step size and the buffer."""

    def __init__(self, model: FlowModel, buffer: ReplayBuffer | None, step_size: float):
        self.model, self.buffer, self.step_size = model, buffer, float(step_size)

    def state_dict(self) -> dict[str, Any]:
        buffer = None if self.buffer is None else self.buffer.state_dict()
        return {"step_size": self.step_size, "buffer": buffer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_size = float(state["step_size"])
        if self.buffer is not None:
            self.buffer.load_state_dict(state["buffer"])


class FAB(GradientMethod):
    """Flow Annealed importance sampling Bootstrap (Midgley et al. 2023), weighted samples.

    Parameters
    ----------
    n_iter
        AIS runs (outer iterations).
    batch_size
        AIS particles per run, and rows per gradient step.
    n_temps
        AIS annealing steps T from q (β = 0) to p²/q (β = 1), i.e. T − 1
        intermediate distributions (FAB used 2 for GMM-40, 4 for ManyWell-32).
    schedule, beta_min
        The β schedule (:func:`~boltzbench.mcmc.annealing.beta_schedule`); FAB
        spaces β linearly.
    kernel
        AIS move: "hmc" (as in FAB) or "mala".
    n_moves
        Kernel steps per intermediate distribution (0: plain importance sampling).
    n_leapfrog
        Leapfrog steps per HMC move.
    step_size
        Initial ε of the moves (units of x), adapted towards ``target_accept``
        by Robbins–Monro with gain ``adapt_gain`` and carried across AIS runs.
    target_accept
        None: 0.574 for MALA, 0.651 for HMC.
    adapt_gain
        Robbins–Monro gain on log ε.
    replay
        Use the prioritized replay buffer (FAB Algorithm 2) or not (Algorithm 1).
    buffer_size, min_buffer_size
        Rows kept in the buffer, and rows needed before the first update.
    n_updates_per_batch
        Gradient steps per AIS run with the buffer.
    lr, weight_decay, grad_clip, lr_schedule
        AdamW settings, as for :class:`~boltzbench.methods.flow.FlowMethod`
        (the cosine schedule runs over all gradient steps).
    transforms, hidden_features, coupling, bins, bound, activation
        The coupling flow (:class:`~boltzbench.methods.flow.FlowMethod`).
    init_scale
        The initial flow is N(loc, init_scale² I), loc the target's
        base_location or 0 (units of x).
    sample_batch_size
        Rows per batch when sampling.
    sample_ais
        Also run AIS from the flow to p in :meth:`sample` (``log_Z_ais``,
        ``ess_ais`` in attrs); costs evaluations, see the module docstring.
    dtype
        "float32" or "float64" for the flow and the AIS positions; energies,
        weights and samples are float64.

    Under an evaluation budget, ``n_iter`` is decided by the budget (the
    configured value is ignored): ⌊(budget − sample_cost(n_samples)) /
    (batch_size · evaluations_per_ais_particle())⌋ AIS runs, and so the length
    of the cosine learning-rate schedule too (:meth:`plan_budget`).
    """

    needs_data = False
    budget_settings = ("n_iter",)
    divergence_advice = "Try a smaller lr, a grad_clip, or a different init_scale."
    iteration_unit = "iteration"
    #: a tiny configuration for conformance tests (seconds to fit)
    fast_params: dict[str, Any] = {
        "transforms": 2,
        "hidden_features": [16, 16],
        "bins": 4,
        "n_iter": 6,
        "batch_size": 32,
        "n_temps": 2,
        "buffer_size": 256,
        "min_buffer_size": 64,
        "n_updates_per_batch": 2,
    }

    def __init__(
        self,
        *,
        n_iter: int = 1000,
        batch_size: int = 128,
        n_temps: int = 3,
        schedule: str = "linear",
        beta_min: float = 1e-3,
        kernel: str = "hmc",
        n_moves: int = 1,
        n_leapfrog: int = 5,
        step_size: float = 0.5,
        target_accept: float | None = None,
        adapt_gain: float = 0.5,
        replay: bool = True,
        buffer_size: int = 12800,
        min_buffer_size: int = 1280,
        n_updates_per_batch: int = 4,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        grad_clip: float | None = 100.0,
        lr_schedule: str = "cosine",
        transforms: int = 6,
        hidden_features: tuple[int, ...] | list[int] = (64, 64),
        coupling: str = "spline",
        bins: int = 8,
        bound: float = 5.0,
        activation: str = "relu",
        init_scale: float = 1.0,
        sample_batch_size: int = 4096,
        sample_ais: bool = False,
        dtype: str = "float32",
    ):
        self.n_iter, self.batch_size, self.n_temps = n_iter, batch_size, n_temps
        self.schedule, self.beta_min, self.kernel = schedule, beta_min, kernel
        self.n_moves, self.n_leapfrog, self.step_size = n_moves, n_leapfrog, step_size
        self.target_accept, self.adapt_gain = target_accept, adapt_gain
        self.replay, self.buffer_size = replay, buffer_size
        self.min_buffer_size, self.n_updates_per_batch = min_buffer_size, n_updates_per_batch
        self.lr, self.weight_decay, self.grad_clip = lr, weight_decay, grad_clip
        self.lr_schedule, self.transforms = lr_schedule, transforms
        self.hidden_features = [int(h) for h in hidden_features]
        self.coupling, self.bins, self.bound, self.activation = coupling, bins, bound, activation
        self.init_scale, self.sample_batch_size = init_scale, sample_batch_size
        self.sample_ais, self.dtype = sample_ais, dtype
        self._validate()

    def _validate(self) -> None:
        if min(self.n_iter, self.batch_size, self.n_updates_per_batch) < 1:
            raise ValueError("fab: n_iter, batch_size and n_updates_per_batch must be >= 1")
        if self.replay and not self.batch_size <= self.min_buffer_size <= self.buffer_size:
            raise ValueError(
                "fab: need batch_size <= min_buffer_size <= buffer_size, got "
                f"{self.batch_size}, {self.min_buffer_size}, {self.buffer_size}"
            )
        if self.replay and self._fill_iterations() >= self.n_iter:
            raise ValueError(
                f"fab: n_iter = {self.n_iter} AIS runs of {self.batch_size} never fill the "
                f"buffer to min_buffer_size = {self.min_buffer_size}"
            )
        self._flow_method()  # validates the flow and optimizer settings
        self._ais()  # validates the AIS settings

    # ---------------------------------------------------------------- parts

    def _flow_method(self) -> FlowMethod:
        """The reverse-KL-mode FlowMethod that builds FAB's flow (:meth:`FlowMethod.new_model
        <boltzbench.methods.flow.FlowMethod.new_model>`), makes its optimizer and samples it.

        Its ``n_iter`` is the number of gradient steps (the length of the lr schedule).
        """
        shared = (*ARCHITECTURE, "batch_size", "lr", "weight_decay", "grad_clip", "lr_schedule")
        shared += ("init_scale", "sample_batch_size", "dtype")
        settings = {k: getattr(self, k) for k in shared}
        return FlowMethod(mode="reverse_kl", n_iter=self.n_updates(), **settings)

    def _ais(self) -> Annealing:
        """The annealing settings: SMC's loop without resampling, i.e. AIS."""
        return Annealing.of(self, ess_threshold=0.0)

    def _fill_iterations(self) -> int:
        """AIS runs before the buffer holds ``min_buffer_size`` rows (no update in them)."""
        return math.ceil(self.min_buffer_size / self.batch_size) - 1 if self.replay else 0

    def n_updates(self) -> int:
        """Gradient steps in :meth:`fit`."""
        if not self.replay:
            return self.n_iter
        return max(1, (self.n_iter - self._fill_iterations()) * self.n_updates_per_batch)

    def evaluations_per_ais_particle(self) -> int:
        """Energy-and-gradient evaluations per particle of one AIS run."""
        return self._ais().evaluations_per_particle()

    def plan_budget(self, budget: int, n_samples: int) -> BudgetPlan:
        """``n_iter`` = the whole AIS runs of batch_size · evaluations_per_ais_particle()
        evaluations that the budget less ``sample_cost(n_samples)`` pays for.

        ValueError, with the numbers, when they cannot fill the replay buffer to
        ``min_buffer_size`` and make one update (or, without replay, one run).
        """
        per_run = self.batch_size * self.evaluations_per_ais_particle()
        spare = budget - self.sample_cost(n_samples)
        n_iter, needed = max(spare, 0) // per_run, self._fill_iterations() + 1
        if n_iter < needed:
            need = (
                f"filling the replay buffer to min_buffer_size = {self.min_buffer_size} "
                f"and one update need {needed}"
                if self.replay
                else "one update needs 1"
            )
            raise ValueError(
                f"fab: a budget of {budget} evaluations leaves {spare} for training after "
                f"drawing n_samples = {n_samples} samples ({self.sample_cost(n_samples)}): "
                f"{n_iter} AIS runs of {per_run} evaluations, but {need}"
            )
        plan = type(self)(**{**self.get_params(), "n_iter": n_iter})
        planned = n_iter * per_run + self.sample_cost(n_samples)
        why = f"an AIS run costs {per_run} evaluations; whole runs leave the rest"
        return BudgetPlan(plan, {"n_iter": n_iter}, planned, shortfall_note(planned, budget, why))

    # ---------------------------------------------------------------- training

    def _anneal(
        self, model: FlowModel, target: Target, n: int, step_size: float, power: float, generator
    ) -> Annealed:
        """AIS with n particles from the flow q to p^a q^(1−a), a = ``power``."""
        with torch.no_grad():
            x, _ = model.sample(n, generator)
        path = annealing_path(target, flow_log_density(model), power)
        return anneal(self._ais(), path, x, generator, step_size)

    def _weighted_step(self, trainer: Trainer, model: FlowModel, ais: Annealed) -> None:
        """FAB Algorithm 1: L = −Σ w̄_i log q_θ(x_i), x and w̄ held fixed."""
        w_bar = torch.softmax(ais.log_w, 0)
        keep = w_bar > 0  # rows of weight zero add nothing (and may have log q = −inf)
        if not keep.any():
            raise trainer.diverged("no AIS sample has a finite weight")
        log_q = model.log_prob(ais.state.position[keep].detach())
        trainer.step(-(w_bar[keep].to(log_q.dtype) * log_q).sum())

    def _replay_steps(self, trainer: Trainer, run: _Run) -> None:
        """FAB Algorithm 2: steps on −mean log q_θ over rows drawn ∝ w, then reweight them."""
        for _ in range(self.n_updates_per_batch):
            idx = run.buffer.sample(self.batch_size, trainer.generator)
            if idx.numel() == 0:
                raise trainer.diverged("no buffer row has a finite weight")
            x = run.buffer.x[idx]
            trainer.step(-run.model.log_prob(x).mean())
            with torch.no_grad():
                run.buffer.adjust(idx, run.model.log_prob(x))

    def _iteration(self, run: _Run, target: Target, trainer: Trainer) -> dict[str, float]:
        """One AIS run towards p²/q_θ and the gradient steps it feeds; its history entries."""
        ais = self._anneal(
            run.model, target, self.batch_size, run.step_size, 2.0, trainer.generator
        )
        run.step_size = float(ais.step_size)
        record = {
            "ess_ais": normalized_kish_ess(ais.log_w),
            "acceptance": float(torch.tensor(ais.trace["acceptance"]).nanmean()),
            "step_size": run.step_size,
        }
        if not self.replay:
            self._weighted_step(trainer, run.model, ais)
            return record
        run.buffer.add(ais.state.position, ais.log_w, -ais.state.base_energy)
        if len(run.buffer) >= self.min_buffer_size:
            self._replay_steps(trainer, run)
        return record

    def _label(self) -> str:
        return "fab"

    def _objective(self, target: Target, data: Tensor | None, generator) -> Objective:
        """A fresh flow (seeded from ``generator``), AdamW over ``n_updates()`` steps,
        and one AIS run with the updates it feeds per iteration (``data`` is ignored).

        Makes ``n_iter · batch_size · evaluations_per_ais_particle()``
        energy-and-gradient evaluations. The history holds ``loss`` and ``lr``
        per gradient step, and per AIS run ``ess_ais`` (the normalized Kish ESS
        of the AIS weights towards p²/q), ``acceptance`` and ``step_size``.
        """
        flow = self._flow_method()
        model = flow.new_model(target, None, generator)
        opt, sched = flow.optimizer(model)
        buffer = ReplayBuffer(self.buffer_size, target.dim, DTYPES[self.dtype])
        run = _Run(model, buffer if self.replay else None, self.step_size)
        return Objective(
            model,
            opt,
            sched,
            iteration=partial(self._iteration, run, target),
            state={"fab": run},
            records=("ess_ais", "acceptance", "step_size"),
            target=target,
            cost=self.batch_size * self.evaluations_per_ais_particle(),
        )

    def _trained(self, objective: Objective) -> None:
        run = objective.state["fab"]
        self.flow_ = self._flow_method().use_model(run.model)
        self.ais_step_size_ = run.step_size

    # ---------------------------------------------------------------- sampling

    def _check_fitted(self) -> None:
        if not hasattr(self, "flow_"):
            raise RuntimeError("fab: call fit or load_model_state before sample")

    def sample(
        self,
        target: Target,
        n: int,
        generator: torch.Generator,
        checkpoint: Checkpoint = NO_CHECKPOINT,
    ) -> SampleSet:
        """Draw ``n`` samples x ∼ q with log w = −E(x) − log q(x) (−inf where non-finite).

        With ``sample_ais``, also anneal ``n`` further particles from q to p and
        report ``log_Z_ais`` (log mean of the AIS weights) and ``ess_ais``.
        """
        self._check_fitted()
        samples = self.flow_.sample(target, n, generator)
        samples.attrs["mode"] = "fab"
        n_ais = n * self.evaluations_per_ais_particle()
        if self.sample_ais and affordable(target, 1, n_ais) < 1:
            samples.attrs["log_Z_ais"] = samples.attrs["ess_ais"] = math.nan  # over budget
        elif self.sample_ais:
            with torch.no_grad():
                model = self.flow_.flow_
                ais = self._anneal(model, target, n, self.ais_step_size_, 1.0, generator)
            samples.attrs["log_Z_ais"] = log_mean_exp(ais.log_w)
            samples.attrs["ess_ais"] = normalized_kish_ess(ais.log_w)
        return samples

    def sample_cost(self, n: int) -> int:
        """``n`` flow samples, and an AIS run of ``n`` particles with ``sample_ais``."""
        return n * (1 + (self.evaluations_per_ais_particle() if self.sample_ais else 0))

    has_density = True

    def log_density(self, target: Target, x: Tensor) -> Tensor:
        """log q(x) of FAB's flow (the density its samples come from), float64 ``(n,)``."""
        self._check_fitted()
        return self.flow_.log_density(target, x)

    # ---------------------------------------------------------------- state

    def model_state(self) -> dict[str, Tensor]:
        """The flow's tensors (keys ``flow.*``) and the adapted AIS step size."""
        self._check_fitted()
        state = self.flow_.model_state()
        state["ais.step_size"] = torch.tensor(self.ais_step_size_, dtype=torch.float64)
        return state

    def load_model_state(self, target: Target, state: dict[str, Tensor]) -> FAB:
        """Rebuild the flow from this config and ``target.dim``, then load ``state``."""
        self.flow_ = self._flow_method().load_model_state(target, state)
        self.ais_step_size_ = float(state.get("ais.step_size", self.step_size))
        return self
