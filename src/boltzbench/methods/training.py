"""The one training loop of the gradient-trained methods, and its pieces.

A gradient-trained method (:class:`GradientMethod`: ``flow``, ``flow_matching``,
``diffusion``, ``fab``) only says *what* to train: its :meth:`GradientMethod._objective`
builds the model (seeded from the run's generator) and returns an
:class:`Objective`: the model, the optimizer and learning-rate scheduler, the
loss of one step (or the work of one iteration), and any further state its
future depends on. :class:`Trainer` does the rest, the same way for every
method:

* ``n_iter`` iterations, resumed from a checkpoint's iteration;
* the optimizer step, with the global-norm gradient clipping of
  :func:`torch.nn.utils.clip_grad_norm_` (``grad_clip``; None: no clipping);
* the divergence check: a non-finite loss, gradient norm or (at the end)
  parameter raises :class:`~boltzbench.core.TrainingDiverged` naming the
  method, the iteration and the last finite loss;
* early stopping by restoring (:class:`KeepBest`, when a validation loss is given);
* the progress bar and the history (``loss`` per optimizer step, ``lr`` with a
  scheduler, and the entries each iteration returns);
* the evaluation budget: an iteration the budget cannot pay for
  (:func:`~boltzbench.core.affordable`), or a refused evaluation
  (:class:`~boltzbench.targets.counting.BudgetExceeded`), ends training;
* checkpoints of everything the future depends on (model, optimizer, scheduler,
  generator, history, last finite loss, early-stopping record and the
  objective's own state), so a resumed run repeats an uninterrupted one exactly.

``forked_seed`` seeds a network's initialization from the run's generator
without touching the global RNG; ``Minibatches`` walks the data in reshuffled
epochs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import TrainingDiverged, affordable
from boltzbench.methods.base import Method
from boltzbench.targets.base import Target
from boltzbench.targets.counting import BudgetExceeded

__all__ = [
    "forked_seed",
    "Minibatches",
    "KeepBest",
    "Stateful",
    "StepLoss",
    "Iteration",
    "Objective",
    "Trainer",
    "GradientMethod",
]

#: the loss of one optimizer step: () -> (scalar loss, entries for the history)
StepLoss = Callable[[], tuple[Tensor, dict[str, float]]]
#: the work of one iteration, which makes its optimizer steps with
#: :meth:`Trainer.step`: (trainer) -> entries for the history
Iteration = Callable[["Trainer"], dict[str, float]]
#: iterations between two updates of the progress bar's numbers
BAR_EVERY = 50


@contextmanager
def forked_seed(generator: torch.Generator) -> Iterator[None]:
    """Seed the global RNG from ``generator`` inside a fork, leaving it untouched outside."""
    seed = int(torch.randint(2**62, (), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class Stateful(Protocol):
    """Anything whose state a checkpoint saves: ``state_dict`` / ``load_state_dict``."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


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

    def check(self, done: int, model: nn.Module) -> dict[str, float]:
        if done % self.every and done != self.n_iter:
            return {}
        val = self.validate()
        if val < self.best:
            self.best, self.state = val, copy.deepcopy(model.state_dict())
        return {"val_step": done, "val_loss": val}

    def restore(self, model: nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "state": self.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.state = state["best"], state["state"]


@dataclass
class Objective:
    """What a gradient-trained method hands the training loop.

    Attributes
    ----------
    model
        The module whose parameters are trained (saved whole in checkpoints).
    optimizer
        Its optimizer.
    scheduler
        Learning-rate scheduler stepped after every optimizer step, or None
        (constant lr, and no ``lr`` in the history).
    loss
        One optimizer step per iteration on this loss; or None, and then
    iteration
        the work of one iteration, making zero or more steps with
        :meth:`Trainer.step` (FAB: an AIS run and the updates it feeds).
    state
        Further state the future depends on, saved and restored by name
        (minibatch position, replay buffer, …).
    records
        History entries that exist from the start (others appear when first returned).
    validate
        A validation loss: the parameters with the lowest one are kept (:class:`KeepBest`).
    target, cost
        With a target, an iteration starts only when its budget pays for
        ``cost`` energy evaluations; training ends at the first that it cannot.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    loss: StepLoss | None = None
    iteration: Iteration | None = None
    state: dict[str, Stateful] = field(default_factory=dict)
    records: tuple[str, ...] = ()
    validate: Callable[[], float] | None = None
    target: Target | None = None
    cost: int = 0


class Trainer:
    """The training loop of an :class:`Objective` (see the module docstring).

    Parameters
    ----------
    objective
        The model, optimizer, loss and state.
    generator
        The run's generator (its state goes into checkpoints).
    name
        The method in messages and on the progress bar, e.g. ``"flow (mle)"``.
    n_iter
        Iterations.
    grad_clip
        Maximum global gradient norm, or None for no clipping.
    advice
        The end of a divergence message (what to try).
    unit
        What an iteration is called in messages (``"step"``, ``"iteration"``).
    """

    def __init__(
        self,
        objective: Objective,
        generator: torch.Generator,
        *,
        name: str,
        n_iter: int,
        grad_clip: float | None = None,
        advice: str = "Try a smaller lr.",
        unit: str = "step",
    ):
        if (objective.loss is None) == (objective.iteration is None):
            raise ValueError("an Objective needs exactly one of loss and iteration")
        self.objective, self.generator = objective, generator
        self.name, self.n_iter, self.grad_clip = name, n_iter, grad_clip
        self.advice, self.unit = advice, unit
        self.params = [p for group in objective.optimizer.param_groups for p in group["params"]]
        lr = ("lr",) if objective.scheduler is not None else ()
        self.history: dict[str, list[float]] = {k: [] for k in ("loss", *lr, *objective.records)}
        self.keeper = None
        if objective.validate is not None:
            self.keeper = KeepBest(objective.validate, n_iter)
        #: the iteration running, and the last finite loss
        self.it, self.last = 0, math.nan

    # ---------------------------------------------------------------- one step

    def diverged(self, what: str, last: float | None = None) -> TrainingDiverged:
        """The error for a non-finite ``what`` at the current iteration."""
        last = self.last if last is None else last
        return TrainingDiverged(
            f"{self.name} diverged at {self.unit} {self.it} of {self.n_iter}: {what}; "
            f"last finite loss {last:.6g}. {self.advice}"
        )

    def step(self, loss: Tensor) -> float:
        """One optimizer step on ``loss`` with clipping; records ``loss`` and ``lr``.

        Raises :class:`TrainingDiverged` when the loss or the gradient norm is
        not finite. Returns the loss's value.
        """
        value = loss.item()
        if not math.isfinite(value):
            raise self.diverged(f"loss is {value}")
        opt, sched = self.objective.optimizer, self.objective.scheduler
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip = math.inf if self.grad_clip is None else self.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        if not torch.isfinite(norm):
            raise self.diverged(f"gradient norm is {float(norm)}", value)
        opt.step()
        if sched is not None:
            self.history["lr"].append(sched.get_last_lr()[0])
            sched.step()
        self.history["loss"].append(value)
        self.last = value
        return value

    def _one_step(self, _: Trainer) -> dict[str, float]:
        loss, extra = self.objective.loss()
        self.step(loss)
        return extra

    # ---------------------------------------------------------------- the loop

    def _affordable(self) -> bool:
        target = self.objective.target
        return target is None or affordable(target, 1, self.objective.cost) >= 1

    def _record(self, extra: dict[str, float]) -> None:
        if self.keeper is not None:
            extra |= self.keeper.check(self.it + 1, self.objective.model)
        for k, v in extra.items():
            self.history.setdefault(k, []).append(v)

    def run(self, checkpoint: Checkpoint = NO_CHECKPOINT) -> dict[str, list[float]]:
        """Train to ``n_iter`` iterations (or the end of the budget); returns the history.

        Every ``checkpoint.every`` iterations the whole state is saved, and a
        saved state is resumed from.
        """
        iteration = self.objective.iteration or self._one_step
        start = self.restore(checkpoint)
        bar = tqdm(range(start, self.n_iter), desc=self.name, disable=None, leave=False)
        for it in bar:
            self.it = it
            if not self._affordable():
                break
            try:
                extra = iteration(self)
            except BudgetExceeded:  # the evaluation budget is spent: stop training here
                break
            self._record(extra)
            if checkpoint.due(it + 1) and it + 1 < self.n_iter:
                checkpoint.save(it + 1, self.state_dict())
            if it % BAR_EVERY == 0:
                numbers = {k: f"{v:.3g}" for k, v in extra.items()}
                bar.set_postfix(loss=f"{self.last:.4g}", **numbers)
        self._finish()
        return self.history

    def _finish(self) -> None:
        """Check the parameters are finite, then restore the best ones (early stopping)."""
        if not all(torch.isfinite(p).all() for p in self.params):
            self.it = self.n_iter
            raise self.diverged("parameters are not finite")
        if self.keeper is not None:
            self.keeper.restore(self.objective.model)

    # ---------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything the rest of the training depends on."""
        o = self.objective
        return {
            "model": o.model.state_dict(),
            "opt": o.optimizer.state_dict(),
            "sched": None if o.scheduler is None else o.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "history": self.history,
            "last": self.last,
            "keeper": None if self.keeper is None else self.keeper.state_dict(),
            "state": {k: s.state_dict() for k, s in o.state.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        o = self.objective
        o.model.load_state_dict(state["model"])
        o.optimizer.load_state_dict(state["opt"])
        if o.scheduler is not None:
            o.scheduler.load_state_dict(state["sched"])
        self.generator.set_state(state["generator"])
        self.history.update(state["history"])
        self.last = float(state["last"])
        if self.keeper is not None:
            self.keeper.load_state_dict(state["keeper"])
        for k, s in o.state.items():
            s.load_state_dict(state["state"][k])

    def restore(self, checkpoint: Checkpoint) -> int:
        """Load a saved state, if any; the first iteration to run (0 when none)."""
        saved = checkpoint.restore()
        if saved is None:
            return 0
        start, state = saved
        self.load_state_dict(state)
        return start


class GradientMethod(Method):
    """A method whose ``fit`` trains a model by gradient steps in a :class:`Trainer`.

    A family provides :meth:`_objective` (build the model, seeded from the
    generator, and say what to minimise), :meth:`_label` and the settings the
    loop reads (``n_iter``, ``grad_clip``), and optionally :meth:`_trained`;
    ``fit`` (:meth:`Method.fit <boltzbench.methods.base.Method.fit>`) calls the
    one :meth:`_train` here.
    """

    trainable = True
    weighted = True
    #: iterations of the training loop (every family's constructor sets it)
    n_iter: int
    #: maximum global gradient norm, None for no clipping (a family without the setting)
    grad_clip: float | None = None
    #: what a divergence message suggests
    divergence_advice: str = "Try a smaller lr."
    #: what one iteration is called in messages
    iteration_unit: str = "step"

    def _label(self) -> str:
        """The method in messages and on the progress bar, e.g. ``"flow (mle)"``."""
        raise NotImplementedError

    def _objective(self, target: Target, data: Tensor | None, generator) -> Objective:
        """Build a fresh model (seeded from ``generator``) and what to train it on."""
        raise NotImplementedError

    def _trained(self, objective: Objective) -> None:
        """Set the fitted state that only a finished training gives (default: none)."""

    def _trainer(self, objective: Objective, generator: torch.Generator) -> Trainer:
        return Trainer(
            objective,
            generator,
            name=self._label(),
            n_iter=self.n_iter,
            grad_clip=self.grad_clip,
            advice=self.divergence_advice,
            unit=self.iteration_unit,
        )

    def _train(self, target, data, generator, checkpoint) -> dict[str, list[float]]:
        """What :meth:`fit` does: build a fresh model and train it for ``n_iter``
        iterations; returns the history (see :class:`Trainer`).

        All randomness comes from ``generator`` (the global RNG is left as it
        was). Every ``checkpoint.every`` iterations the whole loop state is
        saved, and a saved one is resumed exactly.
        """
        objective = self._objective(target, data, generator)
        history = self._trainer(objective, generator).run(checkpoint)
        self._trained(objective)
        return history
