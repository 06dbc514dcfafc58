"""The chain runner (boltzbench.mcmc.runner) on a counting kernel: phases, kept draws,
summed statistics, the reduced step size, the budget stop and a resumed checkpoint.

The kernel moves every chain by +1 and reports a fixed acceptance, so every
number the runner produces is known exactly.
"""

from typing import NamedTuple

import pytest
import torch

from boltzbench.checkpoint import Checkpoint
from boltzbench.mcmc import runner
from boltzbench.mcmc.runner import Chain, Schedule
from boltzbench.targets import BudgetExceeded


class State(NamedTuple):
    position: torch.Tensor
    energy: torch.Tensor


class Info(NamedTuple):
    acceptance_rate: torch.Tensor


def counting_chain(rate: float = 0.5, budget: int | None = None, adapt: bool = True) -> Chain:
    """Steps x → x + 1 (energy = x); raises BudgetExceeded on step ``budget + 1``."""

    def step(generator, state, eps):
        if budget is not None and int(state.energy[0]) >= budget:
            raise BudgetExceeded("spent")
        torch.rand(1, generator=generator)  # uses the generator, as a kernel does
        x = state.position + 1
        return State(x, x[:, 0].clone()), Info(torch.full_like(state.energy, rate))

    return Chain(
        step=step,
        record=lambda info: {"accept": info.acceptance_rate},
        keep=runner.keep_state,
        adapt_on=runner.acceptance_rate if adapt else None,
        target_accept=0.5,
        reduce=lambda eps: eps.median(0).values,
    )


def fresh(chain: Chain, n_chains: int = 3) -> runner.ChainRun:
    state = State(torch.zeros(n_chains, 1, dtype=torch.float64), torch.zeros(n_chains))
    return runner.start(chain, state, 0.1, {"accept": torch.zeros(n_chains)})


def test_phases_kept_draws_and_sums():
    chain, schedule = counting_chain(), Schedule(n_warmup=4, n_burnin=3, thinning=2, n_draws=5)
    run = runner.run(chain, fresh(chain), schedule, torch.Generator().manual_seed(0))
    assert run.step == schedule.total == 17
    kept = runner.stack(runner.draws(chain, run))
    assert kept.position.shape == (5, 3, 1)
    assert kept.energy[:, 0].tolist() == [9, 11, 13, 15, 17]
    assert torch.equal(run.sums["accept"], torch.full((3,), 0.5 * (17 - 4)))
    assert run.step_size.shape == ()  # reduced over the chains at the end of warm-up


def test_without_adaptation_the_step_size_is_the_initial_one():
    chain = counting_chain(rate=0.9, adapt=False)
    run = runner.run(chain, fresh(chain), Schedule(3, 0, 1, 2), torch.Generator())
    assert float(run.step_size) == pytest.approx(0.1)


def test_a_spent_budget_ends_the_run_with_the_current_state():
    chain = counting_chain(budget=5)
    run = runner.run(chain, fresh(chain), Schedule(4, 3, 1, 4), torch.Generator())
    assert run.step == 5 and run.kept == []
    (draw,) = runner.draws(chain, run)
    assert draw.energy.tolist() == [5, 5, 5]


def test_a_resumed_run_ends_as_an_uninterrupted_one(tmp_path):
    schedule = Schedule(4, 2, 2, 4)
    whole = runner.run(counting_chain(), fresh(counting_chain()), schedule, torch.Generator())

    class Killed(Exception):
        pass

    ckpt = Checkpoint(tmp_path / "c.pt", every=5)
    save = ckpt.save

    def save_then_die(step, state):
        save(step, state)
        raise Killed

    ckpt.save = save_then_die
    chain = counting_chain()
    with pytest.raises(Killed):
        runner.run(chain, fresh(chain), schedule, torch.Generator(), ckpt)
    resumed = runner.run(
        chain, fresh(chain), schedule, torch.Generator(), Checkpoint(tmp_path / "c.pt", every=5)
    )
    assert resumed.step == whole.step
    assert torch.equal(resumed.sums["accept"], whole.sums["accept"])
    assert torch.equal(runner.stack(resumed.kept).energy, runner.stack(whole.kept).energy)
