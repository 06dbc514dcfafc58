"""The types and helpers every layer of boltzbench shares.

Nothing here imports another boltzbench module (only torch), so that the
kernels (:mod:`boltzbench.mcmc`), the metrics, the stores (:mod:`boltzbench.io`)
and the pipeline steps can use them without importing the sampler package:

* :class:`SampleSet`, what a sampler returns;
* :func:`resolve_dtype` and :data:`DTYPES`, the dtypes a ``dtype`` parameter names;
* :func:`start_location`, where chains and base distributions are centred;
* the budget helpers: :func:`remaining_budget`, :func:`affordable`,
  :func:`batch_sizes`, :class:`BudgetPlan`, :func:`shortfall_note` and
  :data:`BUDGET_SPEND_MIN`;
* :class:`TrainingDiverged`, raised by a training loop on a non-finite step.

The layers, bottom up: ``core`` and ``targets``; ``mcmc``; ``methods``;
``metrics`` and ``report``; ``steps``. A module imports only from its own layer
and those below it (``tests/test_layers.py`` checks it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from boltzbench.methods.base import Method
    from boltzbench.targets.base import Target

__all__ = [
    "SampleSet",
    "DTYPES",
    "resolve_dtype",
    "start_location",
    "TrainingDiverged",
    "remaining_budget",
    "affordable",
    "batch_sizes",
    "BudgetPlan",
    "BUDGET_SPEND_MIN",
    "shortfall_note",
]


#: the floating-point types a method's ``dtype`` parameter may name
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name``; ValueError listing the valid names otherwise."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


class TrainingDiverged(RuntimeError):
    """A training loop met a non-finite loss, gradient or parameter.

    The message names the method, the step and the last finite loss; the train
    step adds the target and writes no model.
    """


def remaining_budget(target: Target) -> int | None:
    """Energy evaluations ``target`` still allows, or None when it has no cap.

    A :class:`~boltzbench.targets.CountingTarget` with a ``budget`` refuses any
    call that would exceed it (:class:`~boltzbench.targets.BudgetExceeded`,
    raised before evaluating). Loops stop at that refusal; one-shot methods
    (importance sampling, SMC) size themselves with this number first.
    """
    remaining = getattr(target, "remaining", None)
    return remaining() if callable(remaining) else None


def affordable(target: Target, n: int, per_row: int = 1) -> int:
    """How many of ``n`` rows, each costing ``per_row`` evaluations, the budget allows.

    Fewer than ``n`` marks the counting target ``exhausted`` (the run stops at it).
    """
    left = remaining_budget(target)
    if left is None:
        return n
    m = max(0, min(n, left // per_row))
    if m < n:
        target.exhausted = True
    return m


def batch_sizes(target: Target, n: int, batch: int, per_row: int = 1) -> list[int]:
    """Sizes of the batches that draw ``n`` rows (fewer when the budget allows fewer).

    Raises RuntimeError when the budget allows not a single row.
    """
    m = affordable(target, n, per_row)
    if m < 1:
        raise RuntimeError(
            f"the evaluation budget is spent ({remaining_budget(target)} evaluations left, "
            f"one sample costs {per_row}); raise the budget"
        )
    return [batch] * (m // batch) + ([m % batch] if m % batch else [])


def start_location(target: Target, dtype: torch.dtype) -> torch.Tensor:
    """``target.base_location()`` (the origin when it has none), shape ``(dim,)``."""
    loc = target.base_location()
    if loc is None:
        return torch.zeros(target.dim, dtype=dtype)
    return torch.as_tensor(loc).to(dtype).reshape(target.dim)


@dataclass
class SampleSet:
    """What a method returns.

    Attributes
    ----------
    x
        Samples, shape ``(n, dim)``.
    energy
        Reduced energies E(x) in k_BT, shape ``(n,)``.
    log_weight
        Log importance weights, shape ``(n,)`` (unnormalized), or None when the
        samples are meant to be unweighted draws from p.
    log_q
        Log density of the proposal at ``x``, shape ``(n,)``, or None.
    diagnostics
        Named arrays (e.g. ``ess_per_dim`` of shape ``(dim,)``), stored as variables.
    attrs
        Named scalars (e.g. ``acceptance``, ``log_Z_hat``), stored as attributes.
    """

    x: torch.Tensor
    energy: torch.Tensor
    log_weight: torch.Tensor | None = None
    log_q: torch.Tensor | None = None
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        for name in ("energy", "log_weight", "log_q"):
            v = getattr(self, name)
            if v is not None and v.shape != (n,):
                raise ValueError(f"SampleSet.{name} has shape {tuple(v.shape)}, expected ({n},)")


#: the least fraction of its budget a budgeted run should spend (else it says why)
BUDGET_SPEND_MIN = 0.95


@dataclass(frozen=True)
class BudgetPlan:
    """How a method spends an evaluation budget (see :meth:`Method.plan_budget`).

    Attributes
    ----------
    method
        The method to run: a copy with the budget-decided settings filled in
        (or the method itself when the budget decides nothing).
    settings
        ``{parameter: planned value}`` of the settings the budget decided.
    planned
        The evaluations the plan expects fit + sample to make (≤ the budget).
    note
        Why the plan spends less than :data:`BUDGET_SPEND_MIN` of the budget
        (e.g. "trained on reference data: only sampling costs evaluations");
        empty when it does not.
    """

    method: Method
    settings: dict[str, Any]
    planned: int
    note: str = ""


def shortfall_note(planned: int, budget: int, why: str) -> str:
    """``why`` when ``planned`` is below :data:`BUDGET_SPEND_MIN` of ``budget``, else "".

    The note starts with the numbers: "plans P of B evaluations (x %): why".
    """
    if planned >= BUDGET_SPEND_MIN * budget:
        return ""
    return f"plans {planned} of {budget} evaluations ({planned / budget:.1%}): {why}"
