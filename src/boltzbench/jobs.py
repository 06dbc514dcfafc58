"""Running a method on a target as one pipeline job: the library code the train,
sample and evaluate steps share.

Seeded generators, the counted target and the method as planned for a budget,
the budget's attributes and notes, checkpoints keyed by the job, the device,
timing, and a fitted method loaded back from its model artifact (with its log
density for the forward metrics).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from boltzbench.checkpoint import Checkpoint
from boltzbench.core import BUDGET_SPEND_MIN, BudgetPlan, TrainingDiverged
from boltzbench.hashing import canonical_json, derive_seed, hash_json, hash_path
from boltzbench.io import load_model
from boltzbench.methods import Method, build_method
from boltzbench.metrics.base import LogDensity
from boltzbench.targets import CountingTarget, Target, build_target
from boltzbench.targets.counting import EvalCounts

__all__ = [
    "generator",
    "build_counted_target",
    "build_method",
    "timed",
    "resolve_device",
    "on_device",
    "job_checkpoint",
    "job_key",
    "training_budget",
    "planned_method",
    "plan_attrs",
    "spending_note",
    "budget_attrs",
    "named_divergence",
    "load_fitted",
    "fitted_log_density",
]


def generator(*keys: Any, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded by :func:`~boltzbench.hashing.derive_seed` of ``keys``.

    The same seed gives different streams on CPU and CUDA: results reproduce
    exactly on the same kind of device.
    """
    return torch.Generator(device=device).manual_seed(derive_seed(*keys))


def build_counted_target(spec: dict[str, Any], budget: int | None = None) -> CountingTarget:
    """The target of a config entry, wrapped to count its evaluations (at most ``budget``).

    Its buffers stay float64; energies come out in the dtype of ``x``, which
    each method chooses (its ``dtype`` parameter).
    """
    target: Target = build_target(spec)
    return CountingTarget(target, budget)


def training_budget(method: Method, budget: int | None, n_samples: int) -> int | None:
    """Evaluations training may use: the budget less what sampling ``n_samples`` plans
    to use (:meth:`~boltzbench.methods.Method.sample_cost`), never below 0."""
    if budget is None:
        return None
    return max(budget - method.sample_cost(n_samples), 0)


def planned_method(
    spec: dict[str, Any], budget: int | None, n_samples: int
) -> tuple[Method, BudgetPlan | None]:
    """The method of ``spec`` as the run uses it, and its budget plan.

    With a ``budget``: :meth:`~boltzbench.methods.Method.plan_budget` of
    (budget, n_samples), and the plan's method, whose budget-decided settings
    are filled in. The train and sample jobs both call this, and get the same
    plan, since it depends on nothing else. Without: the method as configured
    and None.
    """
    method = build_method(spec)
    if budget is None:
        return method, None
    plan = method.plan_budget(budget, n_samples)
    return plan.method, plan


def spending_note(plan: BudgetPlan, spent: int, budget: int) -> str:
    """Why a run spent ``spent`` of its ``budget``: the plan's note when it has one;
    otherwise, when the run spent less than :data:`BUDGET_SPEND_MIN` of the
    budget (a reason found at run time), the shortfall in numbers; else ""."""
    if plan.note or spent >= BUDGET_SPEND_MIN * budget:
        return plan.note
    return (
        f"spent {spent} of {budget} evaluations ({spent / budget:.1%}), short of the "
        f"{plan.planned} planned: the run stopped before its plan was spent"
    )


def plan_attrs(plan: BudgetPlan | None, note: str | None = None) -> dict[str, Any]:
    """``budget_planned`` (int), ``budget_settings`` (canonical JSON of the planned
    settings) and ``budget_note`` (``note``, else the plan's); nothing without a plan."""
    if plan is None:
        return {}
    return {
        "budget_planned": int(plan.planned),
        "budget_settings": canonical_json(plan.settings),
        "budget_note": plan.note if note is None else note,
    }


def budget_attrs(budget: int | None, counted: CountingTarget, phase: str) -> dict[str, int]:
    """The budget (``budget``, ``<phase>_budget``) and whether ``phase`` stopped at it
    (``budget_stop_<phase>``, 0 or 1); nothing without a budget."""
    if budget is None:
        return {}
    return {
        "budget": int(budget),
        f"{phase}_budget": int(counted.budget),
        f"budget_stop_{phase}": int(counted.exhausted),
    }


@contextmanager
def named_divergence(method_name: str, target_name: str) -> Iterator[None]:
    """Re-raise a :class:`~boltzbench.core.TrainingDiverged` naming the method
    and the target (the job then fails and writes no model)."""
    try:
        yield
    except TrainingDiverged as err:
        raise TrainingDiverged(f"method {method_name!r} on target {target_name!r}: {err}") from err


@contextmanager
def timed(record: dict[str, float], key: str):
    """Add the wall seconds spent in the block to ``record[key]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        record[key] = record.get(key, 0.0) + time.perf_counter() - t0


def resolve_device(setting: str) -> torch.device:
    """The device of a train or sample job for the config's ``device`` setting.

    ``"cpu"`` is the CPU; ``"cuda"`` is the job's GPU and raises when CUDA is
    not available; ``"auto"`` is the GPU when CUDA is available, else the CPU.
    """
    if setting not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {setting!r}")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "config key 'device' is 'cuda' but this job sees no CUDA device "
            "(set device: auto or cpu, or run the job on a GPU node)"
        )
    use_cuda = setting == "cuda" or (setting == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")


@contextmanager
def on_device(device: torch.device) -> Iterator[None]:
    """New tensors default to ``device`` inside the block (nothing changes for the CPU).

    The CPU needs no mode: torch's device mode adds a Python call to every op.
    """
    with torch.device(device) if device.type != "cpu" else contextlib.nullcontext():
        yield


def job_checkpoint(
    path: str | Path | None,
    every: int,
    job: list[Any],
    counted: CountingTarget,
    times: dict[str, float],
    phase: str,
) -> Checkpoint:
    """The checkpoint of one job, keyed by ``job``: whatever the job's result
    depends on (its step, config slice, code hash, input hashes and device), so
    that a checkpoint of any other job is never resumed.

    It carries the target's evaluation counts and the wall seconds spent in
    ``phase`` so far, so that a resumed job reports the cost of every attempt.
    """
    ckpt = Checkpoint(path, every, hash_json(job))
    t0 = time.perf_counter()

    def set_counts(saved: dict[str, int]) -> None:
        counted.counts = EvalCounts(**saved)

    ckpt.track("counts", lambda: counted.counts.as_dict(), set_counts)
    ckpt.track(
        "seconds",
        lambda: times.get(phase, 0.0) + time.perf_counter() - t0,
        lambda seconds: times.__setitem__(phase, seconds),
    )
    return ckpt


def job_key(step: str, config: dict, source: str, inputs: dict, device: torch.device) -> list:
    """What a job's result depends on, for :func:`job_checkpoint`."""
    hashes = {role: hash_path(p) for role, p in sorted(inputs.items())}
    return [step, config, source, hashes, str(device)]


def load_fitted(path: str, target, method: Method):
    """``method`` (as configured, or as planned for a budget) with the fitted state of
    a model artifact loaded into it, and the artifact's attrs."""
    state, _, attrs = load_model(path)
    return method.load_model_state(target, state), attrs


def fitted_log_density(
    path: str | None,
    target: Target,
    method: dict[str, Any],
    generator: torch.Generator | None = None,
) -> LogDensity | None:
    """x ↦ log q(x) of the fitted method of config entry ``method`` in the model store
    ``path``: its exact density, else its path estimate (``path_log_density``, one
    backward path per row drawn with ``generator``); None when the method has
    neither (or no model was given)."""
    if path is None:
        return None
    model = build_method(method)
    path_only = not model.has_density and getattr(model, "has_path_density", False)
    if not (model.has_density or path_only):
        return None
    state, _, _ = load_model(path)
    model.load_model_state(target, state)
    if path_only:
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        return lambda x: model.path_log_density(target, x, gen)
    return lambda x: model.log_density(target, x)
