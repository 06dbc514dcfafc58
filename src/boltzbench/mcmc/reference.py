"""Reference samples of a target without an exact sampler: long batched MCMC.

:func:`mcmc_reference` runs ``n_chains`` independent chains (``algorithm="mala"``)
or ``n_chains`` independent parallel-tempering ensembles of ``n_temps`` replicas
each (``algorithm="pt"``, :mod:`boltzbench.mcmc.tempering`), all started from
N(loc, init_scale² I) (loc: the target's ``base_location``, or 0), in the three
phases of the chain runner (:mod:`boltzbench.mcmc.runner`):

1. warm-up, ``n_warmup`` steps: the step size of every replica (temperature ×
   chain) is adapted by dual averaging (Hoffman & Gelman 2014,
   :mod:`boltzbench.mcmc.adaptation`) towards an acceptance of 0.574 (MALA) or
   0.651 (HMC); afterwards each temperature keeps one step size, the median
   over its chains of the averaged ε̄. Adapting each replica on its own lets a
   chain that starts in a steep region (e.g. overlapping particles, where a
   shared step would always be rejected) shrink its step and relax; the median
   ignores such stragglers;
2. burn-in, ``n_burnin`` steps at the fixed step sizes, discarded;
3. sampling: K = ⌈n / n_chains⌉ draws per chain, one every ``thinning`` steps,
   of the β = 1 replicas. The ``n`` returned samples are the first ``n`` in
   draw-major order (draw 1 of every chain, then draw 2, …).

Plain MALA is parallel tempering with the one-temperature ladder β = (1,): the
same loop with no swaps, each step a :func:`boltzbench.mcmc.mala.build_kernel`
step of every chain.

Convergence (Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021): the
rank-normalized split R̂ of the energy and of every coordinate of the kept
draws (``rhat_max`` attr: the largest), and the autocorrelation ESS of the
energy, pooled over chains (:mod:`boltzbench.mcmc.diagnostics`). When R̂
exceeds the threshold, :func:`check_convergence` raises
:class:`ConvergenceError`. For a target invariant under rotations and
permutations (DW-4, LJ-13) the coordinates mix only as fast as the orientation
diffuses and particles swap, which tempering does not speed up, and which no
metric looks at; such a target provides ``invariant_features(x)`` (the sorted
interatomic distances) and R̂ is checked on those instead of the coordinates
(attr ``rhat_of`` says which).

Cost: n_temps · n_chains · (1 + n_steps · L) energy-and-gradient evaluations,
with L = n_leapfrog for HMC and 1 for MALA, all through ``target``. Under an
evaluation budget (parallel tempering as a benchmark method) the run stops at
the first step the budget cannot pay for; ``n_steps`` is then the steps done.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import SampleSet, resolve_dtype, start_location
from boltzbench.mcmc import compiling, diagnostics, proposal, runner, tempering
from boltzbench.mcmc.runner import ChainRun, Draw, Schedule
from boltzbench.targets.base import InvariantFeatures, Target, wrap_periodic

__all__ = ["mcmc_reference", "check_convergence", "ConvergenceError", "ALGORITHMS"]

#: ``algorithm`` → the ``reference_method`` attr
ALGORITHMS = {"pt": "parallel_tempering", "mala": "mala"}


class ConvergenceError(RuntimeError):
    """The chains did not converge: R̂ above the threshold."""


def check_convergence(
    rhat: float, rhat_max: float = 1.01, of: str = "energy and every coordinate"
) -> None:
    """Raise :class:`ConvergenceError` unless ``rhat`` ≤ ``rhat_max`` (NaN fails).

    ``rhat_max = inf`` turns the check off; ``of`` says what R̂ was taken of.
    """
    if math.isinf(rhat_max) or rhat <= rhat_max:
        return
    raise ConvergenceError(
        f"MCMC reference did not converge: R-hat = {rhat:.4g} > rhat_max = {rhat_max:g} "
        f"(max over the {of} of the beta = 1 chains). "
        "Raise n_warmup, n_burnin or thinning (longer chains), or for parallel tempering "
        "n_temps / t_max (a hotter ladder crosses barriers)."
    )


def mcmc_reference(
    target: Target,
    n: int,
    generator: torch.Generator,
    *,
    algorithm: str = "pt",
    n_chains: int = 16,
    n_warmup: int = 1000,
    n_burnin: int = 1000,
    thinning: int = 10,
    n_temps: int = 8,
    t_max: float = 10.0,
    step_size: float = 0.1,
    n_leapfrog: int = 1,
    kernel: str = "mala",
    rhat_max: float = 1.01,
    init_scale: float = 1.0,
    dtype: torch.dtype | str = torch.float64,
    checkpoint: Checkpoint = NO_CHECKPOINT,
    compile: compiling.Switch = False,
) -> SampleSet:
    """``n`` reference samples of ``target`` by long MCMC (see the module docstring).

    Parameters
    ----------
    target
        The target; every evaluation goes through ``target.energy_and_grad``.
    n
        Number of samples returned; needs ⌈n / n_chains⌉ ≥ 4 (for split R̂).
    generator
        Source of every random number.
    algorithm
        ``"pt"`` (parallel tempering) or ``"mala"`` (plain chains, β = 1 only).
    n_chains
        Independent chains (for ``"pt"``: independent ensembles).
    n_warmup, n_burnin, thinning
        Steps of step-size adaptation, of discarded burn-in, and between kept draws.
    n_temps, t_max
        The geometric ladder β_k = t_max^(−k/(n_temps−1)) (``"pt"`` only).
    step_size
        Initial step size ε₀ of every replica (units of x).
    n_leapfrog
        Leapfrog steps of the local HMC move (``kernel="hmc"``).
    kernel
        Local move of parallel tempering: ``"mala"`` or ``"hmc"``.
    rhat_max
        Largest R̂ accepted (``inf``: no check).
    init_scale
        Chains start from N(loc, init_scale² I), loc the target's base_location (or 0).
    dtype
        Dtype of the positions, a torch dtype or "float32"/"float64" (the target
        should match).
    checkpoint
        Every ``checkpoint.every`` steps the whole loop is saved; a saved run resumes.
    compile
        "false" (default), "auto" or "true" (or a bool): run the local step of
        every replica as one ``torch.compile``d graph
        (:mod:`boltzbench.mcmc.compiling`); the same draws and counts as eager,
        samples equal to float rounding.

    Raises
    ------
    ConvergenceError
        When R̂ > ``rhat_max``.
    """
    config = _Config.make(
        algorithm, n, n_chains, n_warmup, n_burnin, thinning, n_temps, t_max, kernel, n_leapfrog
    )
    potential = compiling.potential(target, compile)
    shape = (config.n_temps, n_chains, target.dim)
    dtype = resolve_dtype(dtype) if isinstance(dtype, str) else dtype
    x0 = start_location(target, dtype) + init_scale * torch.randn(
        shape, generator=generator, dtype=dtype
    )
    state = tempering.init(x0, potential)
    chain = _chain(config, potential, compile)
    run = runner.start(chain, state, step_size, _zero_statistics(state))
    run = runner.run(chain, run, config.schedule, generator, checkpoint)
    features = target.invariant_features if isinstance(target, InvariantFeatures) else None
    samples = _sample_set(run, runner.draws(chain, run), config, n, features)
    samples.x = wrap_periodic(target, samples.x)  # the chains move in ℝ^dim
    samples.attrs["rhat_threshold"] = rhat_max
    check_convergence(samples.attrs["rhat_max"], rhat_max, samples.attrs["rhat_of"])
    return samples


class _Config(NamedTuple):
    """The structural settings of a run, checked once."""

    algorithm: str
    kernel: str
    betas: Tensor
    t_max: float
    n_chains: int
    schedule: Schedule
    n_leapfrog: int

    @classmethod
    def make(
        cls,
        algorithm,
        n,
        n_chains,
        n_warmup,
        n_burnin,
        thinning,
        n_temps,
        t_max,
        kernel,
        n_leapfrog,
    ) -> _Config:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
        if algorithm == "mala" and kernel != "mala":
            raise ValueError(f"algorithm 'mala' runs MALA chains, got kernel={kernel!r}")
        if n_chains < 1 or thinning < 1 or n_warmup < 0 or n_burnin < 0 or n_leapfrog < 1:
            raise ValueError(
                "need n_chains >= 1, thinning >= 1, n_warmup >= 0, n_burnin >= 0, n_leapfrog >= 1"
            )
        n_draws = math.ceil(n / n_chains)
        if n_draws < 4:
            raise ValueError(f"need n >= 4 * n_chains for split R-hat, got n={n}, {n_chains=}")
        if algorithm == "mala":
            n_temps, t_max = 1, 1.0
        betas = tempering.geometric_ladder(n_temps, t_max)
        return cls(
            algorithm,
            kernel,
            betas,
            float(t_max),
            n_chains,
            Schedule(n_warmup, n_burnin, thinning, n_draws),
            n_leapfrog if kernel == "hmc" else 1,
        )

    @property
    def n_temps(self) -> int:
        return len(self.betas)

    @property
    def target_accept(self) -> float:
        return tempering.LOCAL_KERNELS[self.kernel]

    @property
    def evaluations(self) -> int:
        """Energy-and-gradient evaluations of the whole run, all temperatures."""
        return self.evaluations_of(self.schedule.total)

    def evaluations_of(self, steps: int) -> int:
        """Energy-and-gradient evaluations of the first ``steps`` steps, all temperatures."""
        return self.n_temps * self.n_chains * (1 + steps * self.n_leapfrog)


def _chain(
    config: _Config, potential: proposal.Potential, compile: compiling.Switch = False
) -> runner.Chain:
    """Tempering steps of every replica (see the module docstring): during warm-up each
    replica adapts its own ε; afterwards each temperature keeps the median over its chains."""
    step = tempering.build_kernel(config.betas, config.kernel, compile)
    n_leapfrog = config.n_leapfrog
    return runner.Chain(
        step=lambda generator, state, eps: step(generator, state, potential, eps, n_leapfrog),
        record=_statistics,
        keep=_beta_one,
        adapt_on=runner.acceptance_rate,
        target_accept=config.target_accept,
        reduce=_median_over_chains,
    )


def _statistics(info: tempering.Info) -> dict[str, Tensor]:
    """What a post-warm-up step adds: local acceptance rates ``(K, C)``, swap
    acceptance rates ``(K − 1, C)`` and swap proposals ``(K − 1,)``."""
    return {
        "accept": info.acceptance_rate,
        "swap_accept": info.swap_acceptance_rate,
        "swap_count": info.swap_proposed,
    }


def _zero_statistics(state: tempering.State) -> dict[str, Tensor]:
    """The sums of :func:`_statistics` before the first step after warm-up."""
    k, c = state.energy.shape
    zeros = state.energy.new_zeros
    return {"accept": zeros(k, c), "swap_accept": zeros(k - 1, c), "swap_count": zeros(k - 1)}


def _beta_one(state: tempering.State) -> Draw:
    """The kept draw: the β = 1 replicas, positions ``(C, dim)`` and energies ``(C,)``."""
    return Draw(state.position[0], state.energy[0])


def _median_over_chains(step_size: Tensor) -> Tensor:
    """One ε per temperature ``(K,)``: the median over the chains of ``(K, C)``."""
    return step_size.median(1).values


def _sample_set(
    run: ChainRun, kept: list[Draw], config: _Config, n: int, features=None
) -> SampleSet:
    """The first ``n`` of the ``kept`` draws with their diagnostics and attrs.

    ``features`` (the target's ``invariant_features``, if any) maps positions
    to the statistics whose R̂ is checked instead of the raw coordinates.
    """
    position, energy = runner.stack(kept, 1)  # (C, K, dim), (C, K)
    checked = position if features is None else _features(features, position)
    diag = _convergence(checked, energy)
    n_local, sums = run.step - config.schedule.n_warmup, run.sums
    accept = sums["accept"] / max(n_local, 1)  # (temperatures, chains)
    swap = sums["swap_accept"].mean(1) / sums["swap_count"].clamp(min=1)  # (temperatures − 1,)
    attrs = {
        "reference_method": ALGORITHMS[config.algorithm],
        "local_kernel": config.kernel,
        "n_chains": config.n_chains,
        "n_temps": config.n_temps,
        "t_max": config.t_max,
        "n_warmup": config.schedule.n_warmup,
        "n_burnin": config.schedule.n_burnin,
        "thinning": config.schedule.thinning,
        "n_leapfrog": config.n_leapfrog,
        "n_steps": run.step,
        "n_steps_planned": config.schedule.total,
        "n_draws_per_chain": len(kept),
        "n_samples": min(n, energy.numel()),
        "acceptance": float(accept[0].mean()),
        "acceptance_mean": float(accept.mean()),
        "swap_acceptance_mean": float(swap.mean()) if len(swap) else math.nan,
        "rhat_energy": float(diag["rhat_energy"]),
        "rhat_of": "energy and every coordinate"
        if features is None
        else "energy and the target's invariant features",
        "rhat_max": float(torch.maximum(diag["rhat_energy"], diag["rhat_per_dim"].max())),
        "ess_energy": float(diag["ess_energy"]),
        "step_size": float(run.step_size[0]),
        "energy_evaluations": config.evaluations_of(run.step),
    }
    return SampleSet(
        x=position.transpose(0, 1).reshape(-1, position.shape[-1])[:n],
        energy=energy.transpose(0, 1).reshape(-1)[:n],
        diagnostics={
            "rhat_per_dim": diag["rhat_per_dim"],
            "ess_per_dim": diag["ess_per_dim"],
            "acceptance_per_temperature": accept.mean(1),
            "swap_acceptance_per_pair": swap,
            "step_size_per_temperature": run.step_size,
            "beta_per_temperature": config.betas,
        },
        attrs=attrs,
    )


def _features(features, position: Tensor) -> Tensor:
    """``features`` of every kept draw: ``(C, K, dim)`` → ``(C, K, n_features)``."""
    c, k, d = position.shape
    with torch.no_grad():
        return features(position.reshape(c * k, d)).reshape(c, k, -1)


def _convergence(position: Tensor, energy: Tensor) -> dict[str, Tensor]:
    """R̂ and ESS of kept draws: ``position`` ``(C, K, dim)``, ``energy`` ``(C, K)``
    (NaN with fewer than 4 draws per chain, after a run cut short by a budget)."""
    if energy.shape[1] < 4:
        nan = energy.new_tensor(math.nan)
        per_dim = position.new_full(position.shape[-1:], math.nan)
        return {
            "rhat_energy": nan,
            "rhat_per_dim": per_dim,
            "ess_energy": nan,
            "ess_per_dim": per_dim,
        }
    return {
        "rhat_energy": diagnostics.rank_normalized_split_rhat(energy),
        "rhat_per_dim": diagnostics.rank_normalized_split_rhat(position),
        "ess_energy": diagnostics.effective_sample_size(energy),
        "ess_per_dim": diagnostics.effective_sample_size(position),
    }
