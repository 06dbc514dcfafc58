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
``uses_time_order``
    ``fit`` reads the time order of MD reference data: it then receives
    ``data`` as :class:`~boltzbench.references.Trajectories` (rows with their
    replica and frame) when the reference has it, and a plain tensor otherwise
    (``timewarp``: pairs of frames a lag apart).
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

from typing import Any

import torch

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import (
    BUDGET_SPEND_MIN,
    DTYPES,
    BudgetPlan,
    SampleSet,
    TrainingDiverged,
    affordable,
    batch_sizes,
    remaining_budget,
    resolve_dtype,
    shortfall_note,
    start_location,
)
from boltzbench.targets.base import ShiftedTarget, Target

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


class Method:
    """Base class of every sampler family; each is one line in ``methods/__init__.py``."""

    needs_data: bool = False
    #: ``fit`` takes ``data`` as :class:`~boltzbench.references.Trajectories` when it can
    uses_time_order: bool = False
    trainable: bool = False
    weighted: bool = False
    #: small settings under which the conformance suite runs the method (CI)
    fast_params: dict[str, Any] = {}
    #: the parameters an evaluation budget decides (see :meth:`plan_budget`)
    budget_settings: tuple[str, ...] = ()
    #: :meth:`log_density` gives the normalized density the samples are drawn from
    has_density: bool = False
    #: :meth:`path_log_density` gives a path estimate of log q (path samplers)
    has_path_density: bool = False
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

    def path_log_density(
        self, target: Target, x: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """A path estimate log q̂(x) = log P_F(τ) − log P_B(τ | x), τ ∼ P_B(· | x), of a
        path sampler's marginal log density at ``x`` ``(n, dim)``, float64 ``(n,)``
        (only when ``has_path_density``): P_F is the sampler's forward path measure and
        P_B its fixed backward (reference) kernel. E_τ[q̂(x)] = q(x), so by Jensen
        E[−E(x) − log q̂(x)] over x ∼ p is an upper bound on log Z no smaller than
        the EUBO with the exact q (Sendera et al. 2024, Sec. 4; Blessing et al.
        2024, Sec. 4). The forward metrics read it when the method has no exact
        density. Its target evaluations (a Langevin-preconditioned drift needs
        ∇E along the path) are not part of the method's budget."""
        raise NotImplementedError(f"{type(self).__name__} has no path density")

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
        """Fit on ``target`` (and reference ``data`` when ``needs_data``); returns self.

        ``history_`` is what :meth:`_train` returns. A gradient-trained family
        inherits its ``_train`` from :class:`~boltzbench.methods.training.GradientMethod`.
        """
        self.history_: dict[str, list[float]] = self._train(target, data, generator, checkpoint)
        return self

    def _train(self, target, data, generator, checkpoint) -> dict[str, list[float]]:
        """The work of :meth:`fit` (its arguments); the history. Default: nothing to fit."""
        return {}

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
