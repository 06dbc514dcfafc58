"""Running a method the way the pipeline does, for the conformance checks.

A run fits on one counting target and samples on another (the train and
sample jobs), each with its own generator. The targets are counted twice: the
counting target the method is handed, and one inside it that sees every row
the wrapped energy is really evaluated on, so that a method which reaches past
the counting target (``target.target.energy(x)``) is caught.
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import SampleSet
from boltzbench.methods.base import Method
from boltzbench.targets.base import Target
from boltzbench.targets.counting import CountingTarget, EvalCounts
from boltzbench.testing.common import typical_points

__all__ = ["Case", "Run", "Recorder", "KilledAfter", "Killed", "counted", "fit_generator"]


def counted(target: Target, budget: int | None = None) -> CountingTarget:
    """``target`` behind two counting targets: the outer one (capped at ``budget``)
    is handed to the method, the inner one counts what was really evaluated."""
    return CountingTarget(CountingTarget(target), budget)


def raw_counts(target: CountingTarget) -> EvalCounts:
    """The evaluations the target inside :func:`counted` really made."""
    return target.target.counts


def fit_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sample_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed + 1)


@contextlib.contextmanager
def global_seed(seed: int) -> Iterator[None]:
    """Seed torch's, NumPy's and Python's global generators inside the block and
    restore their states after it (a method must not depend on them)."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


class Recorder(Checkpoint):
    """A checkpoint due at every step that writes nothing: it records the steps
    a loop saves after, to find out whether (and where) a method checkpoints."""

    def __init__(self) -> None:
        super().__init__(None, every=1)
        self.steps: list[int] = []

    @property
    def enabled(self) -> bool:
        return True

    def save(self, step: int, state: dict) -> None:
        self.steps.append(step)

    def restore(self) -> None:
        return None


class Killed(Exception):
    """Raised by :class:`KilledAfter` right after its save: a kill, in-process."""


class KilledAfter(Checkpoint):
    """A checkpoint file saved every ``at`` steps that carries ``target``'s counts
    (as the pipeline's does) and, when ``kill``, raises :class:`Killed` right
    after saving step ``at``."""

    def __init__(self, path: Path, at: int, target: CountingTarget, kill: bool):
        super().__init__(path, every=at, key="conformance")
        self.at, self.kill = at, kill

        def set_counts(saved: dict[str, int]) -> None:
            target.counts = EvalCounts(**saved)

        self.track("counts", lambda: target.counts.as_dict(), set_counts)

    def save(self, step: int, state: dict) -> None:
        super().save(step, state)
        if self.kill and step == self.at:
            raise Killed


@dataclass
class Run:
    """One fit + sample: the fitted method, its samples and what each phase cost."""

    method: Method
    samples: SampleSet
    fit_counts: EvalCounts
    sample_counts: EvalCounts
    raw: EvalCounts
    model: dict[str, torch.Tensor] = field(default_factory=dict)
    fit_saves: list[int] = field(default_factory=list)
    sample_saves: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.fit_counts.energy + self.sample_counts.energy


@dataclass
class Case:
    """A method checked on one target: ``n`` samples, a fixed ``seed``, and
    reference ``data`` for a method that ``needs_data``."""

    method: Method
    target: Target
    n: int = 64
    seed: int = 0
    n_data: int = 512
    data: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not self.method.needs_data:
            self.data = None  # as in the pipeline: reference data only for who needs it
        elif self.data is None:
            gen = torch.Generator().manual_seed(self.seed + 2)
            self.data = typical_points(self.target, self.n_data, gen, noise=0.01)

    @property
    def name(self) -> str:
        return f"method {type(self.method).__name__} on target {type(self.target).__name__}"

    def fresh(self) -> Method:
        """A new, unfitted copy of the method: ``type(m)(**m.get_params())``."""
        return type(self.method)(**self.method.get_params())

    @functools.cached_property
    def main(self) -> Run:
        """The unbudgeted run every check shares (global seed 1, checkpoints recorded)."""
        return self.run(global_seed_=1, record=True)

    def run(self, global_seed_: int = 1, record: bool = False) -> Run:
        """Fit and sample a fresh copy without a budget (recording checkpoint saves)."""
        method, target = self.fresh(), counted(self.target)
        fit_ck, sample_ck = (Recorder(), Recorder()) if record else (NO_CHECKPOINT,) * 2
        with global_seed(global_seed_):
            method.fit(target, self.data, fit_generator(self.seed), fit_ck)
            fit_counts = target.reset()
            model = {k: v.detach().clone() for k, v in method.model_state().items()}
            samples = method.sample(target, self.n, sample_generator(self.seed), sample_ck)
        saves = (getattr(fit_ck, "steps", []), getattr(sample_ck, "steps", []))
        return Run(method, samples, fit_counts, target.counts, raw_counts(target), model, *saves)

    def fitted_from(self, model: dict[str, torch.Tensor], target: Target) -> Method:
        """A fresh copy restored from a model state (as the sample job does)."""
        return self.fresh().load_model_state(target, model)
