"""One chain runner for every MCMC kernel: warm-up, burn-in, thinning, budget stop, checkpoints.

A kernel of this package moves every chain by one step; what a benchmark run
does around it is the same for MALA, parallel tempering and flow-proposal
MCMC, and lives here (blackjax keeps the loop outside the kernel for the same
reason). A run of ``schedule.total`` steps per chain has three phases
(:class:`Schedule`):

1. warm-up, ``n_warmup`` steps: every chain (or replica) adapts its own step
   size ε towards ``target_accept`` by dual averaging on log ε (Hoffman &
   Gelman 2014, :mod:`boltzbench.mcmc.adaptation`); at its end the averaged
   ε̄ are reduced to the step sizes used afterwards (:attr:`Chain.reduce`: per
   chain, or e.g. the median over the chains of each temperature);
2. burn-in, ``n_burnin`` steps at the fixed step sizes, discarded;
3. sampling: ``n_draws`` kept draws, one every ``thinning`` steps.

After warm-up the statistics a use asks for (:attr:`Chain.record`, e.g. the
acceptance rates) are summed by name. The loop (:func:`run`) ends early at the
first step an evaluation budget cannot pay for
(:class:`~boltzbench.targets.counting.BudgetExceeded`), and saves the whole
:class:`ChainRun` with the generator's state whenever the checkpoint is due,
so that a killed run resumed from its checkpoint ends with the numbers of an
uninterrupted one.

What differs between uses is passed in as a :class:`Chain`: the kernel step
``(generator, state, ε) -> (state, info)``, the acceptance signal the
adaptation sees (none: nothing adapts, e.g. independent Metropolis–Hastings),
the reduction of ε̄, the statistics summed and what a kept draw is.

Under an evaluation budget the budget decides the chain length:
:func:`plan_chain` lays out warm-up, burn-in and thinning so that the steps a
budget pays for are spent.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import SampleSet
from boltzbench.mcmc import adaptation, diagnostics
from boltzbench.targets.counting import BudgetExceeded

__all__ = [
    "Schedule",
    "plan_chain",
    "Draw",
    "Chain",
    "ChainRun",
    "keep_state",
    "acceptance_rate",
    "start",
    "advance",
    "run",
    "draws",
    "stack",
    "chain_samples",
    "state_dict",
    "restore",
]


class Schedule(NamedTuple):
    """The phases of a run, in kernel steps per chain (see the module docstring)."""

    n_warmup: int
    n_burnin: int
    thinning: int
    n_draws: int

    @property
    def total(self) -> int:
        """Kernel steps per chain: n_warmup + n_burnin + n_draws · thinning."""
        return self.n_warmup + self.n_burnin + self.n_draws * self.thinning


def plan_chain(steps: int, n_warmup: int, n_burnin: int, n_draws: int) -> dict[str, int]:
    """Warm-up, burn-in and thinning of a chain of ``steps`` steps keeping ``n_draws`` draws.

    When ``steps`` ≥ n_warmup + n_burnin + n_draws, warm-up stays as configured,
    thinning = ⌊(steps − n_warmup − n_burnin) / n_draws⌋, and the remainder
    (fewer than ``n_draws`` steps) is added to the burn-in, so that
    n_warmup + n_burnin' + n_draws · thinning = steps exactly. Otherwise
    thinning = 1 and warm-up and burn-in share the steps − n_draws left, in
    their configured proportion (rounded down for the warm-up). With fewer
    steps than draws both are 0 (the run then stops at its budget before the
    last draws).
    """
    spare = steps - n_warmup - n_burnin
    if spare >= n_draws:
        thinning = spare // n_draws
        return {
            "n_warmup": n_warmup,
            "n_burnin": n_burnin + spare - thinning * n_draws,
            "thinning": thinning,
        }
    room, configured = max(steps - n_draws, 0), n_warmup + n_burnin
    warmup = room * n_warmup // configured if configured else 0
    return {"n_warmup": warmup, "n_burnin": room - warmup, "thinning": 1}


class Draw(NamedTuple):
    """One kept draw: positions ``(chains, dim)`` and energies ``(chains,)``.

    Stacked by :func:`stack`, the fields gain a draws axis.
    """

    position: Tensor
    energy: Tensor


def keep_state(state: Any) -> Draw:
    """The kept draw of every chain: the state's position and energy."""
    return Draw(state.position, state.energy)


def acceptance_rate(info: Any) -> Tensor:
    """The kernel's acceptance rate min(1, α) per chain, what warm-up usually adapts on."""
    return info.acceptance_rate


def _same(step_size: Tensor) -> Tensor:
    return step_size


@dataclass(frozen=True)
class Chain:
    """What one use of the runner adds to its kernel.

    Attributes
    ----------
    step
        The kernel step ``(generator, state, ε) -> (state, info)``; ε has the
        shape of the state's energy during warm-up (one per chain or replica)
        and the shape ``reduce`` gives afterwards.
    record
        ``info -> {name: value}``: the statistics summed after warm-up (each
        value is cast to its sum's dtype and device, then added).
    keep
        ``state -> Draw``: a kept draw (e.g. the β = 1 replicas of tempering).
    adapt_on
        ``info -> acceptance rate`` that dual averaging steers towards
        ``target_accept`` during warm-up; None adapts nothing.
    target_accept
        The acceptance rate aimed at during warm-up.
    reduce
        Averaged step sizes ε̄ (shape of the energy) → the step sizes used
        after warm-up; the identity keeps one per chain. The initial step
        sizes are reduced the same way.
    """

    step: Callable[[torch.Generator, Any, Tensor], tuple[Any, Any]]
    record: Callable[[Any], dict[str, Tensor]]
    keep: Callable[[Any], Draw]
    adapt_on: Callable[[Any], Tensor] | None
    target_accept: float = 0.574
    reduce: Callable[[Tensor], Tensor] = _same


@dataclass
class ChainRun:
    """The whole state of a run between two steps (what a checkpoint saves).

    ``step`` steps are done; ``state`` is the kernel's state. During warm-up
    ``adapt`` holds the dual-averaging state (one per chain or replica); after
    it, ``step_size`` holds the reduced averaged step sizes. ``sums`` holds
    the statistics summed after warm-up, by name; ``kept`` the kept draws.
    """

    step: int
    state: Any
    adapt: adaptation.DualAveragingState
    step_size: Tensor
    sums: dict[str, Tensor]
    kept: list[Draw] = field(default_factory=list)


def start(chain: Chain, state: Any, step_size: float, sums: dict[str, Tensor]) -> ChainRun:
    """A fresh run at kernel state ``state``: every ε = ``step_size``; ``sums``: the zeros
    the statistics of :attr:`Chain.record` are added to (their dtype, device and shape)."""
    eps = torch.full(state.energy.shape, step_size, dtype=state.position.dtype)
    return ChainRun(0, state, adaptation.dual_averaging_init(eps), chain.reduce(eps), sums)


def advance(chain: Chain, run: ChainRun, schedule: Schedule, generator: torch.Generator) -> None:
    """One kernel step of every chain, in the phase that ``run.step`` is in."""
    warming = run.step < schedule.n_warmup
    eps = torch.exp(run.adapt.log_step_size) if warming else run.step_size
    run.state, info = chain.step(generator, run.state, eps)
    run.step += 1
    if warming and chain.adapt_on is not None:
        run.adapt = adaptation.dual_averaging_update(
            run.adapt, chain.adapt_on(info), chain.target_accept
        )
    elif not warming:
        _record(chain, run, schedule, info)
    if run.step == schedule.n_warmup:
        run.step_size = chain.reduce(adaptation.dual_averaging_final(run.adapt))


def _record(chain: Chain, run: ChainRun, schedule: Schedule, info: Any) -> None:
    """Add a post-warm-up step's statistics; keep a draw when one is due."""
    for name, value in chain.record(info).items():
        run.sums[name] = run.sums[name] + value.to(run.sums[name])
    after_burnin = run.step - schedule.n_warmup - schedule.n_burnin
    if after_burnin > 0 and after_burnin % schedule.thinning == 0:
        run.kept.append(chain.keep(run.state))


def run(
    chain: Chain,
    chain_run: ChainRun,
    schedule: Schedule,
    generator: torch.Generator,
    checkpoint: Checkpoint = NO_CHECKPOINT,
    desc: str | None = None,
) -> ChainRun:
    """Resume ``chain_run`` from ``checkpoint`` if it holds a saved run, then step it
    to ``schedule.total`` steps, or until an evaluation budget is spent.

    Saves the run every ``checkpoint.every`` steps (not after the last); ``desc``
    names a progress bar (None: no bar). Returns ``chain_run``, updated in place.
    """
    restore(chain_run, checkpoint, generator)
    total = schedule.total
    hide = True if desc is None else None  # None: tqdm shows the bar on a terminal only
    bar = tqdm(total=total, initial=chain_run.step, desc=desc, disable=hide, leave=False)
    with bar, contextlib.suppress(BudgetExceeded):  # a spent budget ends the run
        while chain_run.step < total:
            advance(chain, chain_run, schedule, generator)
            bar.update()
            if checkpoint.due(chain_run.step) and chain_run.step < total:
                checkpoint.save(chain_run.step, state_dict(chain_run, generator))
    return chain_run


def draws(chain: Chain, run: ChainRun) -> list[Draw]:
    """The kept draws; the chains' current states when a budget ended the run before
    the first kept draw."""
    return run.kept or [chain.keep(run.state)]


def stack(kept: list[Draw], dim: int = 0) -> Draw:
    """The draws stacked along a new axis ``dim`` (0: draws first, ``(K, chains, …)``)."""
    return Draw(*(torch.stack(fields, dim) for fields in zip(*kept, strict=True)))


def chain_samples(draws: Draw, n: int) -> SampleSet:
    """The first ``n`` of ``draws`` (fields ``(K, chains, ...)``) in draw-major order
    (draw 1 of every chain, then draw 2, …), with the chains' diagnostics.

    ``ess_per_dim``: the autocorrelation ESS of each coordinate over all chains
    (Vehtari et al. 2021); ``rhat_per_dim``: the split R̂, NaN with fewer than 4
    draws per chain. Attrs: ``n_draws_per_chain``, ``n_samples``, ``ess_min``,
    ``ess_mean``, ``rhat_max``. A method adds its own (acceptance, step sizes).
    """
    dim = draws.position.shape[-1]
    chains_first = draws.position.transpose(0, 1)
    ess = diagnostics.effective_sample_size(chains_first)
    short = chains_first.shape[1] < 4
    rhat = ess * math.nan if short else diagnostics.split_rhat(chains_first)
    attrs = {
        "n_draws_per_chain": draws.position.shape[0],
        "n_samples": min(n, draws.energy.numel()),
        "ess_min": float(ess.min()),
        "ess_mean": float(ess.mean()),
        "rhat_max": float(rhat.max()),
    }
    return SampleSet(
        x=draws.position.reshape(-1, dim)[:n],
        energy=draws.energy.reshape(-1)[:n],
        diagnostics={"ess_per_dim": ess, "rhat_per_dim": rhat},
        attrs=attrs,
    )


def state_dict(run: ChainRun, generator: torch.Generator) -> dict:
    """The run and the generator's state, as plain tensors and containers."""
    return {
        "step": run.step,
        "state": run.state._asdict(),
        "adapt": run.adapt._asdict(),
        "step_size": run.step_size,
        "sums": dict(run.sums),
        "kept": [k._asdict() for k in run.kept],
        "generator": generator.get_state(),
    }


def restore(run: ChainRun, checkpoint: Checkpoint, generator: torch.Generator) -> None:
    """Load the run saved in ``checkpoint`` into ``run`` and ``generator``, if any.

    A checkpoint is loaded onto the CPU; its tensors move to the device of the
    run's positions.
    """
    saved = checkpoint.restore()
    if saved is None:
        return
    _, s = saved
    dev = run.state.position.device
    on = lambda d: {k: v.to(dev) if torch.is_tensor(v) else v for k, v in d.items()}  # noqa: E731
    run.step = s["step"]
    run.state = type(run.state)(**on(s["state"]))
    run.adapt = adaptation.DualAveragingState(**on(s["adapt"]))
    run.step_size, run.sums = s["step_size"].to(dev), on(s["sums"])
    run.kept = [Draw(**on(k)) for k in s["kept"]]
    generator.set_state(s["generator"])
