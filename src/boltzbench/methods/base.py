"""The method interface shared by every sampler family.

A method is configured by keyword arguments only (its constructor), fitted by
:meth:`Method.fit` (which may do nothing), and then draws a :class:`SampleSet`
with :meth:`Method.sample`. Fitted state ends in ``_`` and is set only by
``fit`` or :meth:`Method.load_model_state`.

Long loops (flow training, MCMC) take a
:class:`~boltzbench.checkpoint.Checkpoint`: they save their whole state every
few steps and resume from it, so a killed job run again ends with the result of
an uninterrupted run. Methods without a long loop ignore it.

The model artifact is a flat ``dict[str, torch.Tensor]`` (:meth:`model_state`),
written to Zarr by the pipeline; nothing is ever pickled.

Capability tags (class attributes):

``needs_data``
    ``fit`` trains on reference samples (``data`` must be given).
``trainable``
    ``fit`` does real work and yields a training history.
``weighted``
    Samples come with importance weights (``log_weight``).
``declares_costs``
    The samples were made elsewhere and their costs are *declared* (by the
    file they come from), not counted: boltzbench's own evaluations (the
    check of the file's energies) are recorded as ``check_n_*`` instead, and
    the leaderboard marks the costs as declared (the ``external`` method).

Hooks a method may override (each has a default that does nothing):
:meth:`Method.check_target` (config validation, before any job) and
:meth:`Method.input_files` (files from outside the pipeline that sampling
reads, made inputs of the sample job).

Evaluation budgets. A budget is a plan, not only a cap:
:meth:`Method.plan_budget` returns a :class:`BudgetPlan`, a copy of the method
whose budget-decided settings (``budget_settings``: chain lengths, training
steps, annealing temperatures, …) are chosen so that fit + sample spend the
budget, with a ``note`` saying why when the plan cannot spend at least
:data:`BUDGET_SPEND_MIN` of it. The train and sample steps both run the
planned method, so a plan must depend only on (budget, n_samples) and the
method's own parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.targets.base import Target

__all__ = [
    "Method",
    "BudgetPlan",
    "BUDGET_SPEND_MIN",
    "shortfall_note",
    "SampleSet",
    "DTYPES",
    "resolve_dtype",
    "start_location",
    "ShiftedTarget",
    "TrainingDiverged",
    "remaining_budget",
    "affordable",
    "batch_sizes",
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


class ShiftedTarget(Target):
    """``target`` seen from ``loc``: E'(y) = E(y + loc). log Z is unchanged.

    Lets a sampler whose base distribution is centred at the origin (SMC)
    start around a molecular target's energy minimum.
    """

    def __init__(self, target: Target, loc: torch.Tensor):
        super().__init__()
        self.target, self.dim, self.log_Z = target, target.dim, target.log_Z
        self.register_buffer("loc", loc)

    def energy(self, y: torch.Tensor) -> torch.Tensor:
        return self.target.energy(y + self.loc.to(y.dtype))

    def energy_and_grad(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.target.energy_and_grad(y + self.loc.to(y.dtype))


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


class Method:
    """Base class of every sampler family; each is one line in ``methods/__init__.py``."""

    needs_data: bool = False
    trainable: bool = False
    weighted: bool = False
    #: small settings under which the conformance suite runs the method (CI)
    fast_params: dict[str, Any] = {}
    #: the parameters an evaluation budget decides (see :meth:`plan_budget`)
    budget_settings: tuple[str, ...] = ()
    #: :meth:`log_density` gives the normalized density the samples are drawn from
    has_density: bool = False
    #: the costs come declared with samples made elsewhere, not counted (``external``)
    declares_costs: bool = False

    def check_target(self, target: Target) -> None:
        """Raise ValueError when this method, as configured, cannot run on ``target``.

        Config validation calls it for every target the method runs on, before
        any job starts (``external``: its file exists and holds rows of the
        target's dimension). Default: nothing to check.
        """

    def input_files(self) -> dict[str, str]:
        """Files from outside the pipeline that :meth:`sample` reads, ``{role: path}``.

        The sample job takes them as inputs: their sha256 is in its provenance
        and a change to them reruns it (``external``: its sample file).
        Roles are Python identifiers. Default: none.
        """
        return {}

    def log_density(self, target: Target, x: torch.Tensor) -> torch.Tensor:
        """log q(x) of the fitted sampler at ``x`` ``(n, dim)``, float64 ``(n,)``: the
        normalized density its samples come from (only when ``has_density``). The
        forward metrics (EUBO, forward ESS) evaluate it at reference samples; it
        makes no target evaluation."""
        raise NotImplementedError(f"{type(self).__name__} has no density")

    def plan_budget(self, budget: int, n_samples: int) -> BudgetPlan:
        """The run that spends ``budget`` evaluations (fit + sample) drawing ``n_samples``.

        Default: the method as configured, which spends ``sample_cost(n_samples)``;
        the note says so when that is below :data:`BUDGET_SPEND_MIN` of the budget
        (for a method that ``needs_data``: it trains on reference samples, so
        only sampling costs evaluations). Families override this to choose
        their ``budget_settings``; a budget too small for any run is a ValueError.
        """
        cost = self.sample_cost(n_samples)
        why = f"{type(self).__name__} plans no use of a budget beyond sampling"
        if getattr(self, "needs_data", False):
            why = (
                f"data-based: {type(self).__name__} trains on reference samples, so only "
                f"drawing the {n_samples} samples costs evaluations"
            )
        planned = min(cost, budget)
        return BudgetPlan(self, {}, planned, shortfall_note(planned, budget, why))

    def get_params(self) -> dict[str, Any]:
        """The constructor keywords, so ``type(m)(**m.get_params())`` round-trips."""
        import inspect

        names = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in names if k != "self"}

    def fit(
        self,
        target: Target,
        data: torch.Tensor | None,
        generator: torch.Generator,
        checkpoint: Checkpoint = NO_CHECKPOINT,
    ) -> Method:
        """Fit on ``target`` (and reference ``data`` when ``needs_data``); returns self."""
        self.history_: dict[str, list[float]] = {}
        return self

    def sample(
        self,
        target: Target,
        n: int,
        generator: torch.Generator,
        checkpoint: Checkpoint = NO_CHECKPOINT,
    ) -> SampleSet:
        """Draw ``n`` samples from the fitted method.

        Under an evaluation budget (a CountingTarget with ``budget``) a method
        stops when the next evaluation would exceed it and returns what it
        has, so it may return fewer than ``n`` rows.
        """
        raise NotImplementedError

    def sample_cost(self, n: int) -> int:
        """Energy evaluations that ``sample(…, n, …)`` plans to make.

        The train step reserves them out of an evaluation budget, so that a
        trained method can still draw its samples. Default: one per sample
        (importance weights).
        """
        return n

    def model_state(self) -> dict[str, torch.Tensor]:
        """Tensors that make up the fitted model (empty for untrained methods)."""
        return {}

    def load_model_state(self, target: Target, state: dict[str, torch.Tensor]) -> Method:
        """Restore a fitted model from :meth:`model_state`; returns self."""
        return self
