"""Pieces of training loops shared by the flow-based methods.

``forked_seed`` seeds a network's initialization from the run's generator
without touching the global RNG; ``Minibatches`` walks the data in reshuffled
epochs; ``KeepBest`` keeps the parameters with the lowest validation loss; and
``TrainingLoop`` saves and restores everything a loop's future depends on, so a
resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from boltzbench.checkpoint import Checkpoint

__all__ = [
    "forked_seed",
    "Minibatches",
    "KeepBest",
    "TrainingLoop",
    "optimizer_state",
    "load_optimizer_state",
]


@contextmanager
def forked_seed(generator: torch.Generator) -> Iterator[None]:
    """Seed the global RNG from ``generator`` inside a fork, leaving it untouched outside."""
    seed = int(torch.randint(2**62, (), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class Minibatches:
    """Endless minibatches of ``data``, reshuffled by ``generator`` every epoch.

    Its position (the current permutation and the index in it) is part of a
    training checkpoint: :meth:`state_dict` / :meth:`load_state_dict`.
    """

    def __init__(self, data: torch.Tensor, size: int, generator: torch.Generator):
        self.data, self.generator = data, generator
        self.size = min(size, data.shape[0])
        self.perm, self.pos = torch.empty(0, dtype=torch.long), 0

    def __next__(self) -> torch.Tensor:
        if self.pos + self.size > self.perm.shape[0]:
            self.perm = torch.randperm(self.data.shape[0], generator=self.generator)
            self.pos = 0
        batch = self.data[self.perm[self.pos : self.pos + self.size]]
        self.pos += self.size
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perm, self.pos = state["perm"], int(state["pos"])


class KeepBest:
    """Early stopping by restoring: track a validation loss, keep the best parameters.

    The loss is computed after every ``n_iter // 40``-th step and after the last
    one; :meth:`check` returns ``{"val_step": ..., "val_loss": ...}`` on those
    steps (for the history) and ``{}`` otherwise.
    """

    def __init__(self, validate: Callable[[], float], n_iter: int):
        self.validate, self.n_iter = validate, n_iter
        self.every = max(1, n_iter // 40)
        self.best, self.state = math.inf, None

    def check(self, done: int, flow: torch.nn.Module) -> dict[str, float]:
        if done % self.every and done != self.n_iter:
            return {}
        val = self.validate()
        if val < self.best:
            self.best, self.state = val, copy.deepcopy(flow.state_dict())
        return {"val_step": done, "val_loss": val}

    def restore(self, flow: torch.nn.Module) -> None:
        if self.state is not None:
            flow.load_state_dict(self.state)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "state": self.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.state = state["best"], state["state"]


def optimizer_state(flow, opt, sched, generator: torch.Generator) -> dict[str, Any]:
    """The states a gradient-trained model's future depends on: parameters,
    optimizer, learning-rate scheduler and generator."""
    return {
        "flow": flow.state_dict(),
        "opt": opt.state_dict(),
        "sched": sched.state_dict(),
        "generator": generator.get_state(),
    }


def load_optimizer_state(state: dict[str, Any], flow, opt, sched, generator) -> None:
    """Load what :func:`optimizer_state` saved."""
    flow.load_state_dict(state["flow"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    generator.set_state(state["generator"])


class TrainingLoop:
    """Everything a training loop's future depends on, saved and restored as one.

    The flow's parameters, the optimizer and scheduler states, the generator's
    state, the history so far, the early-stopping record, and the minibatch
    position (MLE), so that a resumed run repeats an uninterrupted one exactly.
    """

    def __init__(self, flow, opt, sched, generator, history, keeper, loss_fn):
        self.flow, self.opt, self.sched, self.generator = flow, opt, sched, generator
        self.history, self.keeper = history, keeper
        self.batches = getattr(loss_fn, "batches", None)

    def state_dict(self, last: float) -> dict[str, Any]:
        return {
            **optimizer_state(self.flow, self.opt, self.sched, self.generator),
            "history": self.history,
            "keeper": None if self.keeper is None else self.keeper.state_dict(),
            "batches": None if self.batches is None else self.batches.state_dict(),
            "last": last,
        }

    def restore(self, checkpoint: Checkpoint) -> tuple[int, float]:
        """(first step to run, last finite loss) after loading a checkpoint, if any."""
        saved = checkpoint.restore()
        if saved is None:
            return 0, math.nan
        step, state = saved
        load_optimizer_state(state, self.flow, self.opt, self.sched, self.generator)
        self.history.update(state["history"])
        if self.keeper is not None:
            self.keeper.load_state_dict(state["keeper"])
        if self.batches is not None:
            self.batches.load_state_dict(state["batches"])
        return step, state["last"]
