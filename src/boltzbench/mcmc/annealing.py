"""The annealing engine of SMC and AIS: tempered states, paths, schedules, resampling, the loop.

Geometric annealing (Neal 2001, "Annealed importance sampling"; Del Moral,
Doucet & Jasra 2006, "Sequential Monte Carlo samplers") along a path from a
*normalized* base q₀ (energy E₀ = −log q₀, so Z₀ = 1) to an unnormalized
end point p̃ = exp(−E₁):

    π_β(x) ∝ q₀(x)^(1−β) p̃(x)^β,   E_β = (1 − β) E₀ + β E₁,

over 0 = β₀ < β₁ < … < β_T = 1 (T = ``n_temps``). Schedules (:func:`beta_schedule`):
``"linear"``, β_t = t / T; ``"geometric"``, β_t = β_min^((T − t)/(T − 1)) for
t ≥ 1, i.e. log-spaced from β₁ = ``beta_min`` to 1.

:func:`anneal` takes n particles drawn from q₀ and, at each temperature t = 1…T:

1. reweights: log w_t = −(β_t − β_{t−1}) (E₁(x) − E₀(x)) at the current
   particles (both ends are cached in the :class:`TemperedState`, so this costs
   nothing); a non-finite difference gives log w = −inf (weight zero);
2. accumulates log Ẑ += log Σ_i W_{t−1,i} w_{t,i}, with W_{t−1} the normalized
   weights before the step (uniform after a resampling);
3. resamples (systematic; Kitagawa 1996) when the normalized ESS
   (Σ w)² / (n Σ w²) drops below ``ess_threshold``, and resets the weights
   (``ess_threshold = 0``: never, i.e. AIS);
4. moves: ``n_moves`` MALA or HMC steps that leave π_{β_t} invariant, with one
   step size shared by all particles, adapted after each move by Robbins–Monro
   on log ε towards ``target_accept`` (carried over to the next temperature).

Since Z₀ = 1, Ẑ estimates ∫ exp(−E₁) (unbiased for Z, not for log Z). The loop
only sees a :data:`Path`: a function x ↦ :class:`PathEnds` giving the energy
and gradient of both ends. :func:`gaussian_path` is the path from N(0, σ₀² I),

    E₀(x) = |x|² / (2σ₀²) + (d/2) log(2π σ₀²),

to a target (the SMC method, :mod:`boltzbench.methods.smc`); FAB
(:mod:`boltzbench.methods.fab`) anneals from a flow q to p²/q with
``ess_threshold = 0``. The settings of a run are an :class:`Annealing`.

Cost: each particle takes one evaluation of both ends at the start and one per
MALA step (``n_leapfrog`` per HMC step), all through the path.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from boltzbench.estimators import normalized_kish_ess
from boltzbench.mcmc import adaptation, compiling, hmc, mala, proposal
from boltzbench.mcmc.compiling import Switch
from boltzbench.targets.base import Target

__all__ = [
    "TARGET_ACCEPT",
    "Annealing",
    "Annealed",
    "TemperedState",
    "PathEnds",
    "Path",
    "anneal",
    "move",
    "beta_schedule",
    "base_energy_and_grad",
    "gaussian_path",
    "path_potential",
    "temper",
    "temper_ends",
    "retemper",
    "tempered_potential",
    "incremental_log_weight",
    "log_z_increment",
    "normalize_log_weights",
    "systematic_resample",
]

#: default acceptance aimed at, per kernel (Roberts & Rosenthal 1998; Beskos et al. 2013)
TARGET_ACCEPT = {"mala": 0.574, "hmc": 0.651}


class TemperedState(NamedTuple):
    """A particle state at inverse temperature β, with both ends of the path cached.

    ``energy`` (E_β, float64) and ``grad`` (∇E_β) drive the MCMC kernel;
    ``target_energy`` (E, float64), ``target_grad`` (∇E), ``base_energy``
    (E₀ = −log q₀, float64) and ``base_grad`` (∇E₀) let the state be re-tempered
    to a new β, and the weights computed, with no new evaluation.
    Shapes: positions and gradients ``(n, dim)``, energies ``(n,)``.
    """

    position: Tensor
    energy: Tensor
    grad: Tensor
    target_energy: Tensor
    target_grad: Tensor
    base_energy: Tensor
    base_grad: Tensor


class PathEnds(NamedTuple):
    """Both ends of an annealing path at positions x (shapes as in :class:`TemperedState`).

    ``target_energy``, ``target_grad``: E₁ and ∇E₁ of the unnormalized end
    point; ``base_energy``, ``base_grad``: E₀ = −log q₀ and ∇E₀ of the
    normalized start (so that Z₀ = 1 and Ẑ estimates ∫ exp(−E₁)).
    """

    target_energy: Tensor
    target_grad: Tensor
    base_energy: Tensor
    base_grad: Tensor


#: positions ``(n, dim)`` -> :class:`PathEnds` (one evaluation of each end per particle)
Path = Callable[[Tensor], PathEnds]


class Annealed(NamedTuple):
    """The end of one :func:`anneal` run.

    ``state`` is the final :class:`TemperedState` (at β = 1); ``log_w`` the
    log weights accumulated since the last resampling (float64, ``(n,)``; with
    no resampling, the AIS log weights Σ_t log w_t); ``log_Z`` log Ẑ (scalar);
    ``step_size`` the adapted ε at the end (scalar); ``trace`` the per-temperature
    records (``ess_fraction``, ``resampled``, ``acceptance``, ``step_size``, ``log_Z``).
    """

    state: TemperedState
    log_w: Tensor
    log_Z: Tensor
    step_size: Tensor
    trace: dict[str, list[float]]


def beta_schedule(n_temps: int, schedule: str = "geometric", beta_min: float = 1e-3) -> Tensor:
    """β₀ = 0 < β₁ < … < β_T = 1, shape ``(n_temps + 1,)``, float64 (see the module docstring)."""
    if n_temps < 1:
        raise ValueError(f"n_temps must be >= 1, got {n_temps}")
    if schedule == "linear":
        return torch.linspace(0.0, 1.0, n_temps + 1, dtype=torch.float64)
    if schedule == "geometric":
        if not 0 < beta_min < 1:
            raise ValueError(f"beta_min must be in (0, 1), got {beta_min}")
        exponents = torch.linspace(1.0, 0.0, n_temps, dtype=torch.float64) if n_temps > 1 else None
        rest = beta_min**exponents if exponents is not None else torch.ones(1, dtype=torch.float64)
        return torch.cat([torch.zeros(1, dtype=torch.float64), rest])
    raise ValueError(f"schedule must be 'linear' or 'geometric', got {schedule!r}")


def base_energy_and_grad(x: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """E₀(x) = |x|²/(2σ₀²) + (d/2) log(2πσ₀²) (float64, shape ``(n,)``) and ∇E₀ = x/σ₀²."""
    d = x.shape[-1]
    e0 = 0.5 * (x.to(torch.float64) ** 2).sum(-1) / scale**2 + 0.5 * d * math.log(
        2 * math.pi * scale**2
    )
    return e0, x / scale**2


def gaussian_path(target: Target, base_scale: float, compile: Switch = False) -> Path:
    """The path from N(0, σ₀² I) (E₀ of :func:`base_energy_and_grad`) to ``target``;
    ``compile``: the target's energy compiled inside its counters
    (:func:`~boltzbench.mcmc.compiling.energy_and_grad`)."""
    energy_and_grad = compiling.energy_and_grad(target, compile)

    def ends(x: Tensor) -> PathEnds:
        return PathEnds(*energy_and_grad(x), *base_energy_and_grad(x, base_scale))

    return ends


def temper_ends(x: Tensor, ends: PathEnds, beta: float) -> TemperedState:
    """The state at inverse temperature β from both ends at x (no evaluation):
    E_β = (1 − β) E₀ + β E₁ (E₀ alone at β = 0, so an infinite E₁ does no harm)."""
    energy = ends.target_energy.to(torch.float64)
    e0, g0 = ends.base_energy.to(torch.float64), ends.base_grad
    e_beta = (1 - beta) * e0 + beta * energy if beta > 0 else e0
    grad = (1 - beta) * g0 + beta * ends.target_grad
    return TemperedState(x, e_beta, grad, energy, ends.target_grad, e0, g0)


def temper(
    x: Tensor, energy: Tensor, grad: Tensor, beta: float, base_scale: float
) -> TemperedState:
    """The state at inverse temperature β from the target's E(x) and ∇E(x) and the
    Gaussian base N(0, σ₀² I) (no target evaluation)."""
    return temper_ends(x, PathEnds(energy, grad, *base_energy_and_grad(x, base_scale)), beta)


def retemper(state: TemperedState, beta: float, base_scale: float | None = None) -> TemperedState:
    """``state`` moved to inverse temperature β from its cached ends (``base_scale``
    is not needed any more: the base's parts are cached too)."""
    ends = PathEnds(state.target_energy, state.target_grad, state.base_energy, state.base_grad)
    return temper_ends(state.position, ends, beta)


def path_potential(path: Path, beta: float) -> proposal.Potential:
    """Positions → :class:`TemperedState` at β: one evaluation of each end per particle."""

    def evaluate(x: Tensor) -> TemperedState:
        return temper_ends(x, path(x), beta)

    return evaluate


def tempered_potential(target: Target, beta: float, base_scale: float) -> proposal.Potential:
    """Positions → :class:`TemperedState` at β: one target evaluation per particle."""
    return path_potential(gaussian_path(target, base_scale), beta)


def incremental_log_weight(
    state: TemperedState, dbeta: float, base_scale: float | None = None
) -> Tensor:
    """log w = −Δβ (E(x) − E₀(x)), float64 shape ``(n,)``; −inf where it is not finite.

    E₀ is the cached base energy (``base_scale`` is not needed any more).
    """
    delta = state.target_energy - state.base_energy
    return torch.where(torch.isfinite(delta), -dbeta * delta, -torch.inf)


def log_z_increment(log_w: Tensor, inc: Tensor) -> Tensor:
    """log Σ_i W_i w_i: W the normalized weights ``log_w``, w the increments ``inc``."""
    return torch.logsumexp(normalize_log_weights(log_w) + inc, 0)


def normalize_log_weights(log_w: Tensor) -> Tensor:
    """log W_i = log w_i − log Σ_j w_j; all −inf when every weight is zero."""
    total = torch.logsumexp(log_w, 0)
    return log_w - total if torch.isfinite(total) else torch.full_like(log_w, -torch.inf)


def systematic_resample(log_w: Tensor, generator: torch.Generator) -> Tensor:
    """Systematic resampling (Kitagawa 1996): n indices, shape ``(n,)``.

    With one u ~ U(0, 1), index i is the j with C_{j−1} ≤ (i + u)/n < C_j, C the
    cumulative normalized weights; particle j is copied ⌊n W_j⌋ or ⌈n W_j⌉ times.
    """
    n = log_w.shape[0]
    cdf = torch.cumsum(torch.exp(normalize_log_weights(log_w)), 0)
    u = torch.rand(1, generator=generator, dtype=torch.float64).to(cdf.device)
    points = (torch.arange(n, dtype=torch.float64, device=cdf.device) + u) / n
    return torch.searchsorted(cdf, points * cdf[-1], right=True).clamp(max=n - 1)


@dataclass(frozen=True)
class Annealing:
    """The settings of an annealing run (see the module docstring); checked when built.

    Attributes
    ----------
    n_temps
        Number of annealing steps T (temperatures after β₀ = 0).
    schedule
        "geometric" (log-spaced from ``beta_min``) or "linear".
    beta_min
        β₁ of the geometric schedule.
    kernel
        "mala" or "hmc": the move at each temperature.
    n_moves
        Kernel steps per temperature.
    n_leapfrog
        Leapfrog steps per HMC move (ignored by MALA).
    step_size
        Initial step size ε (units of x), shared by all particles.
    target_accept
        Acceptance aimed at by the step-size adaptation; None: 0.574 for MALA,
        0.651 for HMC (:data:`TARGET_ACCEPT`).
    adapt_gain
        Robbins–Monro gain g in log ε ← log ε + g (α − δ), after every move.
    ess_threshold
        Resample when the normalized ESS falls below this (0: never, i.e. AIS;
        1: always).
    compile
        Compile the moves' arithmetic (:mod:`~boltzbench.mcmc.compiling`):
        "auto", "true" or "false" (or a bool).
    """

    n_temps: int = 100
    schedule: str = "geometric"
    beta_min: float = 1e-3
    kernel: str = "mala"
    n_moves: int = 5
    n_leapfrog: int = 5
    step_size: float = 0.1
    target_accept: float | None = None
    adapt_gain: float = 1.0
    ess_threshold: float = 0.5
    compile: Switch = False

    def __post_init__(self) -> None:
        if self.kernel not in TARGET_ACCEPT:
            raise ValueError(
                f"kernel must be one of {', '.join(TARGET_ACCEPT)}, got {self.kernel!r}"
            )
        self.betas()  # validates the schedule
        if self.n_moves < 0 or self.n_leapfrog < 1 or self.step_size <= 0:
            raise ValueError("need n_moves >= 0, n_leapfrog >= 1, step_size > 0")

    @classmethod
    def of(cls, config: object, **overrides) -> Annealing:
        """The settings read from the attributes of the same names of ``config`` (e.g. a
        method's parameters), but those given in ``overrides``; ``compile`` keeps its
        default where ``config`` has none."""
        names = [f.name for f in fields(cls) if f.name not in overrides]
        names = [n for n in names if n != "compile" or hasattr(config, n)]
        return cls(**{name: getattr(config, name) for name in names}, **overrides)

    def betas(self) -> Tensor:
        """β₀ = 0 < β₁ < … < β_T = 1, shape ``(n_temps + 1,)``, float64."""
        return beta_schedule(self.n_temps, self.schedule, self.beta_min)

    def evaluations_per_temperature(self) -> int:
        """Evaluations of both ends per particle of one temperature's moves."""
        return self.n_moves * (1 if self.kernel == "mala" else self.n_leapfrog)

    def evaluations_per_particle(self) -> int:
        """Evaluations of both ends per particle in one :func:`anneal` run."""
        return 1 + self.n_temps * self.evaluations_per_temperature()

    @property
    def aimed_acceptance(self) -> float:
        """The acceptance δ the step size is adapted towards."""
        return self.target_accept if self.target_accept is not None else TARGET_ACCEPT[self.kernel]

    def build_kernel(self) -> Callable:
        """The move ``step(generator, state, potential, step_size) -> (state, info)``."""
        return _move_kernel(self.kernel, self.n_leapfrog, compiling.resolve(self.compile))


@functools.cache
def _move_kernel(kernel: str, n_leapfrog: int, compile: bool) -> Callable:
    """One kernel per setting, so that a compiled one is compiled once per process."""
    if kernel == "mala":
        return mala.build_kernel(compile)
    return partial(hmc.build_kernel(compile=compile), n_leapfrog=n_leapfrog)


def anneal(
    annealing: Annealing,
    path: Path,
    x: Tensor,
    generator: torch.Generator,
    step_size: float | Tensor | None = None,
) -> Annealed:
    """Anneal the particles ``x`` (shape ``(n, dim)``, drawn from the path's base)
    along ``path`` over the schedule of ``annealing``, resampling and moving as it says.

    ``step_size`` is the initial ε (``annealing.step_size`` when None). Costs one
    evaluation of both ends per particle at the start and one per MALA step
    (``n_leapfrog`` per HMC step). With ``ess_threshold = 0`` this is AIS
    (Neal 2001): ``log_w`` are then the AIS log weights.
    """
    betas = annealing.betas().tolist()
    state = temper_ends(x, path(x), 0.0)
    log_w = torch.zeros(x.shape[0], dtype=torch.float64)
    log_z = torch.zeros((), dtype=torch.float64)
    eps0 = annealing.step_size if step_size is None else float(step_size)
    log_eps = torch.tensor(math.log(eps0), dtype=torch.float64)
    trace: dict[str, list[float]] = {
        k: [] for k in ("ess_fraction", "resampled", "acceptance", "step_size", "log_Z")
    }
    for t in tqdm(range(1, len(betas)), desc="smc", disable=None, leave=False):
        inc = incremental_log_weight(state, betas[t] - betas[t - 1])
        log_w, log_z = log_w + inc, log_z + log_z_increment(log_w, inc)
        ess = normalized_kish_ess(log_w)
        resample = 0 < ess < annealing.ess_threshold
        if resample:
            state = proposal.take(state, systematic_resample(log_w, generator))
            log_w = torch.zeros_like(log_w)
        state = retemper(state, betas[t])
        state, acceptance, log_eps = move(annealing, path, betas[t], state, log_eps, generator)
        for k, v in zip(trace, (ess, resample, acceptance, log_eps.exp(), log_z), strict=True):
            trace[k].append(float(v))
    return Annealed(state, log_w, log_z, log_eps.exp(), trace)


def move(
    annealing: Annealing,
    path: Path,
    beta: float,
    state: TemperedState,
    log_eps: Tensor,
    generator: torch.Generator,
) -> tuple[TemperedState, float, Tensor]:
    """``n_moves`` kernel steps at β, adapting log ε (a float64 scalar) by Robbins–Monro
    after each; returns the state, the mean acceptance rate (NaN with no move) and log ε."""
    step, potential = annealing.build_kernel(), path_potential(path, beta)
    rates = []
    for _ in range(annealing.n_moves):
        state, info = step(generator, state, potential, torch.exp(log_eps))
        rates.append(float(info.acceptance_rate.mean()))
        log_eps = adaptation.robbins_monro_update(
            log_eps, torch.tensor(rates[-1]), annealing.aimed_acceptance, annealing.adapt_gain
        )
    return state, (sum(rates) / len(rates) if rates else math.nan), log_eps
