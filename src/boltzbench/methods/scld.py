"""Sequential Controlled Langevin Diffusions (SCLD): CMCD's controlled path cut into
sub-trajectories, with SMC resampling and MCMC moves in between, trained off-policy.

Chen, Richter, Berner, Blessing, Neumann & Anandkumar 2025, "Sequential controlled
Langevin diffusions", ICLR, arXiv:2412.07081.

The path, kernels and control are those of :mod:`boltzbench.methods.cmcd`
(π_k ∝ π₀^{1−β_k} p̃^{β_k}, k = 0..K, forward kernel F_k and backward kernel B_{k+1}),
with the K steps cut at boundaries 0 = b_0 < b_1 < … < b_S = K (S =
``n_subtrajectories``, b_j = round(jK/S)). Sub-trajectory j runs steps b_j → b_{j+1}
(:meth:`~boltzbench.methods.cmcd.Chain.segment`) and has the incremental weight

    log G_j = log π̃_{b_{j+1}}(X_{b_{j+1}}) − log π̃_{b_j}(X_{b_j})
              + Σ_{k=b_j}^{b_{j+1}−1} [log B_{k+1}(X_k | X_{k+1}) − log F_k(X_{k+1} | X_k)],

log π̃_k = (1 − β_k) log π₀ − β_k E (π̃_0 = π₀ is normalized, π̃_K = p̃), so
Π_j G_j is CMCD's path weight. The particles form an SMC sampler (the paper's
Sec. 3 and Alg. 1; Del Moral, Doucet & Jasra 2006): after sub-trajectory j they
are reweighted by G_j, log Ẑ grows by log Σ_i W_i G_{j,i} (W the normalized
weights before), and at the intermediate boundaries (j < S − 1) they are
resampled (systematic, Kitagawa 1996) when the normalized ESS falls below
``ess_threshold``; then ``n_mcmc_moves`` MALA steps leaving π_{b_{j+1}} invariant
move them (at every boundary, the last included; the step size, from
``mcmc_step_size``, is adapted by Robbins–Monro towards 0.574 over the run, or
fixed with ``mcmc_adapt=False``). E[Ẑ] = Z for any control (exactly with a fixed
MCMC step). The returned log weights are log w_i = log Ẑ_r + log W̃_i, with Ẑ_r
the estimate up to the last resampling and W̃_i the weight accumulated since,
so log mean exp(log w) = log Ẑ. With S = 1 and no moves this is CMCD's sampler,
draw for draw (same generator calls, same x; log w equal to rounding).

Training (the paper's Sec. 4 and its code's scheme, CPU-sized): an iteration runs
the SMC sampler with ``batch_size`` particles and the current control (no
gradient), stores the particles at the start of every sub-trajectory (after
resampling and moves) in a buffer per boundary (the last ``buffer_batches``
runs), then makes ``n_updates`` Adam steps on the sub-trajectory log-variance
loss

    L(θ) = Σ_j Var_i[log G_j^θ(X^{(i)})],

each sub-trajectory j simulated anew (detached, with the current control) from
``batch_size`` starts drawn uniformly from buffer j, and log G_j^θ re-evaluated
along the kept path with gradients (the log-variance divergence of Richter &
Berner 2023, arXiv:2307.01198, per sub-trajectory; off-policy, since the starts
come from earlier controls and from resampling). Simplified from the paper:
uniform (not prioritized) buffer sampling, no learned ε or noise schedule (β may
be learned, ``schedule="learned"``), only the log-variance loss, MALA only, and
the MCMC step size restarts at ``mcmc_step_size`` each run. With a float32 chain
the moved particles are rounded to float32 after the float64 MALA moves (their
cached energies belong to the unrounded positions).

Costs, all through the target: a sampler run of n particles takes
n · (K + 1 + S · ``n_mcmc_moves``) energy-and-gradient evaluations
(:meth:`SCLD.sample_cost`); a training iteration that plus ``n_updates`` ·
batch_size · K (a sub-trajectory from a stored start costs its b_{j+1} − b_j
steps). Under a budget, the budget decides ``n_iter`` (whole iterations after the
sampling reserve). Sampling runs independent SMC samplers of ``sample_batch_size``
particles; ``attrs``: ``log_Z_hat`` (log mean w, the SMC estimate), ``log_Z_elbo``
(mean log w, only when no run can resample: after resampling it is no ELBO),
``ess_kish``, ``resampled`` (resampling events) and ``acceptance``
(mean MALA acceptance, NaN without moves).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from boltzbench.estimators import log_mean_exp, normalized_kish_ess
from boltzbench.mcmc.annealing import (
    Annealing,
    PathEnds,
    move,
    systematic_resample,
    temper_ends,
)
from boltzbench.mcmc.proposal import take
from boltzbench.methods.cmcd import CMCD, Chain, Point
from boltzbench.methods.diffusion_util import (
    clipped_score,
    gaussian_log_density,
    masked_log_weights,
)
from boltzbench.methods.training import Objective, Trainer, forked_seed
from boltzbench.targets.base import Target

__all__ = ["SCLD", "Sequential", "SMCRun", "StartBuffer", "boundaries", "run_smc"]


def boundaries(n_steps: int, n_sub: int) -> list[int]:
    """b_j = round(j K / S), j = 0..S: 0 = b_0 < … < b_S = K (needs 1 ≤ S ≤ K)."""
    if not 1 <= n_sub <= n_steps:
        raise ValueError(f"scld: need 1 <= n_subtrajectories <= n_steps, got {n_sub}")
    return [round(j * n_steps / n_sub) for j in range(n_sub + 1)]


class Sequential(NamedTuple):
    """The SMC settings of an SCLD run (see the module docstring)."""

    n_subtrajectories: int
    ess_threshold: float
    n_mcmc_moves: int
    mcmc_step_size: float
    mcmc_adapt: bool


class SMCRun(NamedTuple):
    """One SMC run: the particles at β = 1 (``end``), their log weights ``(n,)``
    (log mean exp = log Ẑ), log Ẑ, the particles at the start of each sub-trajectory
    (``starts``, S points), the number of resamplings and the mean MALA acceptance."""

    end: Point
    log_w: Tensor
    log_Z: Tensor
    starts: list[Point]
    resampled: int
    acceptance: float


def _gaussian_path(chain: Chain, target: Target):
    """x ↦ both ends of the path: E, ∇E and E₀ = −log π₀, ∇E₀ (π₀ = N(loc, σ₀² I))."""
    loc = chain.loc.to(torch.float64)

    def ends(x: Tensor) -> PathEnds:
        e0 = -gaussian_log_density(x, loc, chain.base_scale)
        return PathEnds(*target.energy_and_grad(x), e0, (x - loc) / chain.base_scale**2)

    return ends


def _mala_moves(
    chain: Chain, target: Target, here: Point, beta: float, settings: Sequential, log_eps, generator
) -> tuple[Point, float, Tensor]:
    """``n_mcmc_moves`` MALA steps at π_β (one evaluation per particle each) from
    ``here``; returns the moved point, the mean acceptance and the adapted log ε."""
    path = _gaussian_path(chain, target)
    x = here.x.detach().to(torch.float64)
    loc = chain.loc.to(torch.float64)
    e0 = -gaussian_log_density(x, loc, chain.base_scale)
    ends = PathEnds(here.energy, here.grad, e0, (x - loc) / chain.base_scale**2)
    gain = 1.0 if settings.mcmc_adapt else 0.0
    annealing = Annealing(n_temps=1, n_moves=settings.n_mcmc_moves, adapt_gain=gain)
    state = temper_ends(x, ends, beta)
    state, acceptance, log_eps = move(annealing, path, beta, state, log_eps, generator)
    score = clipped_score(state.target_grad, chain.clip, chain.dtype)
    moved = Point(state.position.to(chain.dtype), score, state.target_energy, state.target_grad)
    return moved, acceptance, log_eps


def _increment(chain: Chain, start: Point, end: Point, inc: Tensor, betas, a: int, b: int):
    """log G of a sub-trajectory a → b: inc + log π̃_b(end) − log π̃_a(start), ``(n,)``."""
    log_g = inc + chain.log_annealed(end, betas[b]) - chain.log_annealed(start, betas[a])
    return masked_log_weights(log_g, end.x, end.energy)


@torch.no_grad()
def run_smc(
    chain: Chain, target: Target, n: int, settings: Sequential, generator: torch.Generator
) -> SMCRun:
    """The SMC sampler of the module docstring with ``n`` particles (no gradient)."""
    betas = chain.model.betas().detach()
    bounds = boundaries(chain.model.n_steps, settings.n_subtrajectories)
    x, _ = chain.initial(n, generator)
    here = chain.point(target, x)
    log_w = torch.zeros(n, dtype=torch.float64)
    log_z = 0.0  # log Ẑ up to the last resampling
    log_eps = torch.tensor(math.log(settings.mcmc_step_size), dtype=torch.float64)
    starts, resampled, rates = [], 0, []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        starts.append(here)
        zero = torch.zeros(n, dtype=torch.float64)
        end, inc, _ = chain.segment(target, here, a, b, betas, zero, generator)
        log_w = log_w + _increment(chain, here, end, inc, betas, a, b)
        here = end
        ess = normalized_kish_ess(log_w)
        if b < bounds[-1] and 0 < ess < settings.ess_threshold:
            log_z = log_z + log_mean_exp(log_w)
            here = take(here, systematic_resample(log_w, generator))
            log_w, resampled = torch.zeros_like(log_w), resampled + 1
        if settings.n_mcmc_moves:
            here, rate, log_eps = _mala_moves(
                chain, target, here, float(betas[b]), settings, log_eps, generator
            )
            rates.append(rate)
    acceptance = sum(rates) / len(rates) if rates else math.nan
    log_Z = torch.tensor(log_z + log_mean_exp(log_w), dtype=torch.float64)
    return SMCRun(here, log_z + log_w, log_Z, starts, resampled, acceptance)


class StartBuffer:
    """Sub-trajectory starts of the last runs: for every boundary j < S, a ring of
    ``capacity`` points (x, clipped score, E, ∇E), sampled uniformly with replacement."""

    def __init__(self, n_sub: int, capacity: int):
        self.capacity = capacity
        self.points: list[Point | None] = [None] * n_sub
        self.head, self.size = 0, 0

    def add(self, starts: list[Point]) -> None:
        """Store one run's starts (rows with a non-finite energy are left out)."""
        ok = torch.isfinite(starts[0].energy)
        for p in starts[1:]:
            ok &= torch.isfinite(p.energy)
        rows = [Point(*(f.detach()[ok][-self.capacity :] for f in p)) for p in starts]
        m = rows[0].x.shape[0]
        if self.points[0] is None:
            self.points = [
                Point(*(f.new_zeros(self.capacity, *f.shape[1:]) for f in p)) for p in rows
            ]
        idx = (self.head + torch.arange(m)) % self.capacity
        for stored, new in zip(self.points, rows, strict=True):
            for f, g in zip(stored, new, strict=True):
                f[idx] = g
        self.head, self.size = (self.head + m) % self.capacity, min(self.size + m, self.capacity)

    def __len__(self) -> int:
        return self.size

    def sample(self, j: int, n: int, generator: torch.Generator) -> Point:
        """``n`` starts of sub-trajectory ``j``, drawn uniformly with replacement."""
        idx = torch.randint(self.size, (n,), generator=generator)
        return take(self.points[j], idx)

    def state_dict(self) -> dict[str, Any]:
        points = [None if p is None else list(p) for p in self.points]
        return {"points": points, "head": self.head, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.points = [None if p is None else Point(*p) for p in state["points"]]
        self.head, self.size = int(state["head"]), int(state["size"])


class SCLD(CMCD):
    """Sequential Controlled Langevin Diffusion, trained on the energy; weighted samples.

    Parameters
    ----------
    n_subtrajectories
        S, the sub-trajectories the K steps are cut into (1 ≤ S ≤ K; 1 with no
        moves is CMCD's sampler).
    ess_threshold
        Resample at an intermediate boundary when the normalized ESS falls below
        this (0: never).
    n_mcmc_moves
        MALA steps at every boundary (0: none).
    mcmc_step_size
        Initial MALA step ε (units of x; adapted over a run with ``mcmc_adapt``).
    mcmc_adapt
        Adapt ε by Robbins–Monro towards acceptance 0.574 (else fixed).
    n_updates
        Gradient steps per SMC run (iteration).
    buffer_batches
        The buffer keeps the starts of the last ``buffer_batches`` runs.
    n_steps, step_size, base_scale, schedule, hidden_features,
    langevin_preconditioning, n_iter, batch_size, lr, score_clip, grad_clip,
    sample_batch_size, dtype
        As for :class:`~boltzbench.methods.cmcd.CMCD` (``n_iter`` counts SMC runs;
        ``batch_size`` is both the particles per run and the rows per sub-trajectory
        in a gradient step).

    Defaults: 128 steps in 4 sub-trajectories, resampling below ESS 0.3, one MALA
    move of initial ε = 0.1 (adapted), 4 updates per run, a buffer of 10 runs; the
    rest as CMCD's (h = 0.1, σ₀ = 1, linear schedule, (128, 128), 1000 runs of 256
    particles, lr 1e-3, float32). Under a budget, ``n_iter`` is decided by it.
    """

    name = "scld"
    #: the SMC marginal has no path estimate (resampling, MCMC moves)
    has_path_density = False
    iteration_unit = "iteration"
    fast_params: dict[str, Any] = {
        "n_steps": 8,
        "n_subtrajectories": 2,
        "hidden_features": [16, 16],
        "n_iter": 4,
        "batch_size": 32,
        "step_size": 0.3,
        "n_updates": 2,
    }

    def __init__(
        self,
        *,
        n_subtrajectories: int = 4,
        ess_threshold: float = 0.3,
        n_mcmc_moves: int = 1,
        mcmc_step_size: float = 0.1,
        mcmc_adapt: bool = True,
        n_updates: int = 4,
        buffer_batches: int = 10,
        n_steps: int = 128,
        step_size: float = 0.1,
        base_scale: float = 1.0,
        schedule: str = "linear",
        hidden_features: tuple[int, ...] | list[int] = (128, 128),
        langevin_preconditioning: bool = True,
        n_iter: int = 1000,
        batch_size: int = 256,
        lr: float = 1e-3,
        score_clip: float = 100.0,
        grad_clip: float | None = 10.0,
        sample_batch_size: int = 4096,
        dtype: str = "float32",
    ):
        super().__init__(
            loss="log_variance",
            n_steps=n_steps,
            step_size=step_size,
            base_scale=base_scale,
            schedule=schedule,
            hidden_features=hidden_features,
            langevin_preconditioning=langevin_preconditioning,
            n_iter=n_iter,
            batch_size=batch_size,
            lr=lr,
            score_clip=score_clip,
            grad_clip=grad_clip,
            sample_batch_size=sample_batch_size,
            dtype=dtype,
        )
        boundaries(n_steps, n_subtrajectories)
        if not 0 <= ess_threshold <= 1:
            raise ValueError(f"scld: ess_threshold must be in [0, 1], got {ess_threshold}")
        if n_mcmc_moves < 0 or not mcmc_step_size > 0 or min(n_updates, buffer_batches) < 1:
            raise ValueError(
                "scld: need n_mcmc_moves >= 0, mcmc_step_size > 0, n_updates >= 1 "
                "and buffer_batches >= 1"
            )
        self.n_subtrajectories, self.ess_threshold = n_subtrajectories, ess_threshold
        self.n_mcmc_moves, self.mcmc_step_size = n_mcmc_moves, mcmc_step_size
        self.mcmc_adapt, self.n_updates = bool(mcmc_adapt), n_updates
        self.buffer_batches = buffer_batches

    def _settings(self) -> Sequential:
        return Sequential(
            self.n_subtrajectories,
            self.ess_threshold,
            self.n_mcmc_moves,
            self.mcmc_step_size,
            self.mcmc_adapt,
        )

    def _label(self) -> str:
        return "scld"

    # ---------------------------------------------------------------- training

    def _subtrajectory_loss(self, chain: Chain, target: Target, buffer: StartBuffer, generator):
        """Σ_j Var[log G_j^θ] on fresh detached sub-trajectories from buffered starts."""
        bounds = boundaries(self.n_steps, self.n_subtrajectories)
        betas = self.model_.betas()
        loss = torch.zeros((), dtype=torch.float64)
        for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            start = buffer.sample(j, self.batch_size, generator)
            with torch.no_grad():
                end, _, (states, scores) = chain.segment(
                    target, start, a, b, betas.detach(), 0.0, generator, keep=True
                )
            inc = chain.path_increments(states, scores, a, betas)
            log_g = inc + chain.log_annealed(end, betas[b]) - chain.log_annealed(start, betas[a])
            loss = loss + log_g.var()
        return loss

    def _iteration(self, chain: Chain, target: Target, buffer: StartBuffer, generator):
        settings = self._settings()

        def iteration(trainer: Trainer) -> dict[str, float]:
            with torch.no_grad():
                run = run_smc(chain, target, self.batch_size, settings, generator)
            buffer.add(run.starts)
            for _ in range(self.n_updates if len(buffer) else 0):
                trainer.step(self._subtrajectory_loss(chain, target, buffer, generator))
            return {"log_Z_hat": float(run.log_Z), "ess": normalized_kish_ess(run.log_w)}

        return iteration

    def _objective(self, target: Target, data: Tensor | None, generator) -> Objective:
        """A zero-control model (seeded from ``generator``), Adam at a constant ``lr``;
        an iteration is one SMC run and ``n_updates`` steps. History: ``loss`` (per
        step), ``log_Z_hat`` and ``ess`` (per run)."""
        with forked_seed(generator):
            self.model_ = self._build(target.dim)
        opt = torch.optim.Adam(self.model_.parameters(), lr=self.lr)
        buffer = StartBuffer(self.n_subtrajectories, self.buffer_batches * self.batch_size)
        return Objective(
            self.model_,
            opt,
            iteration=self._iteration(self._simulator(target), target, buffer, generator),
            state={"buffer": buffer},
            records=("log_Z_hat", "ess"),
            target=target,
            cost=self.iteration_cost(),
        )

    # ---------------------------------------------------------------- sampling

    @torch.no_grad()
    def _sample_batch(self, chain: Chain, target: Target, n: int, generator) -> tuple:
        """One SMC run of ``n`` particles: x (float64), E(x) and log w, plus counters."""
        run = run_smc(chain, target, n, self._settings(), generator)
        x = run.end.x.to(torch.float64)
        self._counters.append((run.resampled, run.acceptance))
        return x, run.end.energy, masked_log_weights(run.log_w, x, run.end.energy)

    def _simulator(self, target: Target) -> Chain:
        self._counters: list[tuple[int, float]] = []  # (resampled, acceptance) per run
        return super()._simulator(target)

    @property
    def declares_elbo(self) -> bool:  # type: ignore[override]
        """Only runs that never resample give independent weights, whose mean log w is an
        ELBO: one sub-trajectory, or ``ess_threshold`` 0."""
        return self.n_subtrajectories == 1 or self.ess_threshold == 0

    def _sample_attrs(self, chain: Chain) -> dict[str, Any]:
        """The resampling steps and the mean MALA acceptance over the runs."""
        rates = [r for _, r in self._counters if not math.isnan(r)]
        return {
            "resampled": sum(k for k, _ in self._counters),
            "acceptance": sum(rates) / len(rates) if rates else math.nan,
        }

    def sample_cost(self, n: int) -> int:
        """n · (n_steps + 1 + n_subtrajectories · n_mcmc_moves) evaluations."""
        return n * (self.n_steps + 1 + self.n_subtrajectories * self.n_mcmc_moves)

    def iteration_cost(self) -> int:
        """One training iteration: an SMC run of batch_size particles plus
        n_updates · batch_size · n_steps evaluations of the sub-trajectories."""
        return self.sample_cost(self.batch_size) + self.n_updates * self.batch_size * self.n_steps

    def _iteration_cost(self) -> int:
        return self.iteration_cost()
