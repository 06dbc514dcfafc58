"""The sampling side of the path samplers, written once.

A path sampler simulates a path X_0 → … → X_N with a learned model and weighs its
end point by a path importance weight, log w = log p̃(X_N) + log P_B(τ) − log P_F(τ),
for which E[w] = Z (PIS/DDS in ``diffusion``, ``cmcd``, ``scld``, ``gfn``, ``snf``).
Each family says how to bind its model to a target (``_simulator``), how to draw
one batch of weighted end points (``_sample_batch``) and, where it has one, how
to draw a path backwards from a given end point (``_backward_log_density``).
:class:`PathSampler` does the rest: the fitted check, ``sample`` in batches under
the budget (:func:`~boltzbench.methods.diffusion_util.weighted_paths`: log Ẑ,
ELBO and Kish ESS in the attrs), the path density the forward metrics read
(``path_log_density``), the model state and the budget plan (whole training
iterations after the sampling reserve).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import BudgetPlan, SampleSet
from boltzbench.methods.diffusion_util import (
    batches_budget_plan,
    load_module_state,
    module_state,
    weighted_paths,
)
from boltzbench.methods.training import GradientMethod, Objective, StepLoss, forked_seed
from boltzbench.targets.base import Target

__all__ = ["PathSampler"]


class PathSampler(GradientMethod):
    """Base of the path samplers: sampling, path density, model state, budget plan."""

    #: the registered kind, in messages
    name = "path sampler"
    #: the fitted model is ``self.<model_attr>_``; its state keys are ``<model_attr>.*``
    model_attr = "model"
    needs_data = False
    has_path_density = True
    #: the mean log w of a sample set is an ELBO (independent paths; not after resampling)
    declares_elbo = True
    budget_settings = ("n_iter",)

    # ---------------------------------------------------------------- the family's part

    def _simulator(self, target: Target) -> Any:
        """The fitted model bound to ``target`` (coefficients, base location, dtype)."""
        raise NotImplementedError

    def _sample_batch(self, sim: Any, target: Target, n: int, generator) -> tuple:
        """x (float64 ``(n, dim)``), E(x) and log w (``(n,)``) for ``n`` paths."""
        raise NotImplementedError

    def _sample_attrs(self, sim: Any) -> dict[str, Any]:
        """Attrs added to a sample set (default: the loss)."""
        return {"loss": self.loss}

    def _backward_log_density(self, sim: Any, target: Target, x: Tensor, generator) -> Tensor:
        """log P_F(τ) − log P_B(τ | x) along one backward path per row of ``x``."""
        raise NotImplementedError(f"{self.name} has no path density")

    def _build_model(self, target: Target) -> nn.Module:
        """A model of this config for ``target`` (its values are then loaded)."""
        raise NotImplementedError

    def _iteration_cost(self) -> int:
        """Evaluations of one training iteration (default: a batch of paths)."""
        return self.sample_cost(self.batch_size)

    def _step_loss(self, sim: Any, target: Target, generator) -> StepLoss:
        """The loss of one training step on the simulator (used by :meth:`_objective`)."""
        raise NotImplementedError

    def _objective(self, target: Target, data: Tensor | None, generator) -> Objective:
        """The default objective: a fresh model (:meth:`_build_model`, seeded from
        ``generator``), Adam at a constant ``lr``, and :meth:`_step_loss` of one batch
        of ``batch_size`` paths per step. Training stops before the first batch the
        budget cannot pay for (``sample_cost(batch_size)``). History: ``loss``,
        ``log_Z_elbo`` and ``ess`` per step."""
        with forked_seed(generator):
            model = self._build_model(target)
        setattr(self, f"{self.model_attr}_", model)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        return Objective(
            model,
            opt,
            loss=self._step_loss(self._simulator(target), target, generator),
            records=("log_Z_elbo", "ess"),
            target=target,
            cost=self.sample_cost(self.batch_size),
        )

    # ---------------------------------------------------------------- written once

    def _check_fitted(self) -> None:
        if not hasattr(self, f"{self.model_attr}_"):
            raise RuntimeError(f"{self.name}: call fit or load_model_state before sample")

    def sample(
        self,
        target: Target,
        n: int,
        generator: torch.Generator,
        checkpoint: Checkpoint = NO_CHECKPOINT,
    ) -> SampleSet:
        """Simulate ``n`` paths in batches of ``sample_batch_size`` (fewer when the budget
        allows fewer); x = X_N with path weights log w (−inf where non-finite)."""
        self._check_fitted()
        if n < 1:
            raise ValueError(f"{self.name}: n must be positive, got {n}")
        sim = self._simulator(target)
        draw = lambda m: self._sample_batch(sim, target, m, generator)  # noqa: E731
        samples = weighted_paths(target, n, self.sample_batch_size, self.sample_cost(1), draw)
        samples.attrs.update(self._sample_attrs(sim))
        if not self.declares_elbo:
            del samples.attrs["log_Z_elbo"]
        return samples

    @torch.no_grad()
    def path_log_density(self, target: Target, x: Tensor, generator: torch.Generator) -> Tensor:
        """log q̂(x) = log P_F(τ) − log P_B(τ | x), τ drawn backwards from each row of ``x``
        by the family's backward kernel, float64 ``(n,)``: E[q̂(x)] = q(x) (see
        :meth:`Method.path_log_density`)."""
        self._check_fitted()
        return self._backward_log_density(self._simulator(target), target, x, generator)

    def plan_budget(self, budget: int, n_samples: int) -> BudgetPlan:
        """A copy with ``n_iter`` = the whole training iterations that ``budget`` pays for.

        With S = ``sample_cost(n_samples)`` (the sampling reserve) and c the cost of
        one iteration (``_iteration_cost``), n_iter = ⌊(budget − S) / c⌋ and
        planned = n_iter · c + S ≤ budget: less than c is left unspent, so at least
        BUDGET_SPEND_MIN of the budget is spent unless one iteration is over about
        5 % of it (``note`` then says so). ValueError when the budget cannot pay for S
        plus one iteration.
        """
        return batches_budget_plan(self, budget, n_samples, self.name, self._iteration_cost())

    def model_state(self) -> dict[str, Tensor]:
        """The fitted model's tensors, keys ``<model_attr>.*``."""
        self._check_fitted()
        return module_state(getattr(self, f"{self.model_attr}_"), self.model_attr)

    def load_model_state(self, target: Target, state: dict[str, Tensor]) -> PathSampler:
        """Rebuild the model from this config and ``target``, then load ``state``."""
        build = lambda: self._build_model(target)  # noqa: E731
        model = load_module_state(build, state, self.model_attr, self.name)
        setattr(self, f"{self.model_attr}_", model)
        return self
