"""A normalizing-flow Boltzmann generator (Noé et al. 2019) built from zuko coupling flows.

The proposal q is a coupling flow, a :class:`~boltzbench.methods.flows_util.FlowModel`
(the public model object that ``fab`` and ``flow_mcmc`` use too: built by
:meth:`FlowMethod.new_model`, trained with :meth:`FlowMethod.optimizer`).
It is trained in one of two modes:

``"reverse_kl"`` (energy only, no data)
    minimise KL(q‖p) + const = E_{x∼q}[log q(x) + E(x)], estimated with
    reparameterized samples x = g(z), z ∼ N(0, I), so ∇E flows through the
    target (and is counted by a :class:`~boltzbench.targets.CountingTarget`).
    Reverse KL is *mode-seeking*: on multimodal targets (GMM-40, ManyWell) it
    typically covers only some modes. That is a real property of the method,
    reported by the mode metrics, not a bug. A wide initial proposal
    (``init_scale``) helps it see more modes at the start.
``"mle"`` (needs reference samples)
    minimise the forward KL, i.e. the negative log-likelihood −mean log q(x_ref)
    over minibatches of ``data``. The data are first standardized by their mean
    and standard deviation (a fixed affine layer kept in the model state). A
    held-out part of ``data`` picks the best parameters (early stopping), which
    matters when the data are few: ManyWell-32 with 20 000 rows overfits.

Both modes use AdamW with gradient clipping and a cosine learning-rate schedule,
in the training loop shared by the gradient-trained methods
(:class:`~boltzbench.methods.training.Trainer`): a non-finite loss or gradient
raises :class:`~boltzbench.core.TrainingDiverged` naming the step and the last
finite loss. Under an evaluation budget
(:meth:`FlowMethod.plan_budget`), reverse-KL training runs for as many whole
batches as the budget less the sampling reserve pays for (``n_iter`` is set by
the budget), stopping at the first step the budget cannot pay for, and sampling
draws as many samples as the rest allows. MLE training costs no evaluations:
a budget then pays for sampling only. All randomness comes from the ``generator``
passed in; the global torch RNG is left as it was.

Periodic coordinates (``periodic``): on a target that declares angles
(:class:`~boltzbench.targets.base.PeriodicCoordinates`, e.g. alanine
dipeptide's 19 dihedrals in internal coordinates), ``"auto"`` (the default) and
``"circular"`` build the mixed flow of :mod:`boltzbench.methods.flows_util`:
circular splines (Rezende et al. 2020) on the angles, with a von Mises base
there and (cos, sin) features in every conditioner, ordinary couplings on the
rest; its samples never leave [−π, π). ``"interval"`` treats the angles as real
numbers (the flow before), whose mass beyond ±π is outside the support. ``fab``
and ``flow_mcmc`` build their flows here, so they get the same choice.

Sampling draws x ∼ q and returns importance weights log w = −E(x) − log q(x):
mean exp(log w) is an unbiased estimate of Z, and self-normalized estimates are
consistent. Non-finite energies get log w = −∞.

References
----------
Noé, Olsson, Köhler & Wu 2019, "Boltzmann generators", Science 365, eaaw1147.
Durkan et al. 2019, "Neural Spline Flows", arXiv:1906.04032.
Midgley et al. 2023, "Flow Annealed Importance Sampling Bootstrap", arXiv:2208.01893
(reverse-KL mode collapse on GMM-40 and ManyWell).
Rezende et al. 2020, "Normalizing Flows on Tori and Spheres", arXiv:2002.02428.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import (
    DTYPES,
    BudgetPlan,
    SampleSet,
    batch_sizes,
    shortfall_note,
    start_location,
)
from boltzbench.estimators import log_mean_exp, mean_log_weight, normalized_kish_ess
from boltzbench.methods.flows_util import (
    ACTIVATIONS,
    COUPLINGS,
    FlowModel,
    circular_moments,
    wrap_angle,
)
from boltzbench.methods.training import GradientMethod, Minibatches, Objective, forked_seed
from boltzbench.targets.base import PeriodicCoordinates, Target

if TYPE_CHECKING:  # annotations only
    from boltzbench.methods.training import StepLoss

__all__ = ["FlowMethod", "ARCHITECTURE"]

MODES = ("reverse_kl", "mle")
#: the settings of the flow's architecture (the keywords of :class:`FlowModel` they build)
ARCHITECTURE = ("transforms", "hidden_features", "coupling", "bins", "bound", "activation")
LR_SCHEDULES = ("cosine", "constant")
#: how the flow treats a target's periodic coordinates (see the module docstring)
PERIODIC = ("auto", "circular", "interval")
#: the most reference rows held out for MLE validation
MAX_VAL_ROWS = 4096


def _choice(name: str, value: Any, valid) -> None:
    if value not in valid:
        raise ValueError(f"flow: unknown {name} {value!r}; valid choices: {', '.join(valid)}")


class FlowMethod(GradientMethod):
    """Normalizing-flow Boltzmann generator (coupling flow, zuko), weighted samples.

    Parameters
    ----------
    mode
        ``"reverse_kl"`` (train on the energy) or ``"mle"`` (train on reference
        samples; then ``needs_data`` is True).
    transforms
        Number of coupling layers.
    hidden_features
        Hidden widths of each coupling layer's MLP.
    coupling
        ``"spline"`` (rational-quadratic, Durkan et al. 2019) or ``"affine"`` (RealNVP).
    bins, bound
        Spline bins, and the half-width of the spline domain in standardized units
        (the spline is the identity outside [-bound, bound]).
    activation
        MLP activation: relu, silu, elu, gelu or tanh.
    n_iter
        Optimizer steps.
    batch_size
        Samples per step: flow samples (reverse KL) or data rows (MLE).
    lr, weight_decay
        AdamW learning rate and decoupled weight decay.
    grad_clip
        Maximum global gradient norm, or None for no clipping.
    lr_schedule
        ``"cosine"`` (anneal lr to 0 over ``n_iter``) or ``"constant"``.
    init_scale
        Reverse KL only: the initial proposal is N(loc, init_scale² I), loc the
        target's base_location or 0 (in the target's units); a wide one lets
        reverse KL find distant modes.
    standardize
        MLE only: standardize with the data's per-coordinate mean and std
        (else the identity).
    val_fraction
        MLE only: the fraction of ``data`` (at most 4096 rows) held out. Its
        negative log-likelihood is tracked 40 times during training
        (``history_["val_loss"]``) and the parameters with the lowest one are
        kept (early stopping by restoring); 0 trains on all rows to the end.
    sample_batch_size
        Rows per batch when sampling.
    dtype
        ``"float32"`` or ``"float64"`` for the flow; energies and the returned
        samples, log q and log weights are float64.
    periodic
        ``"auto"``: circular transforms on the angles of a target that declares
        them (``periodic_mask``), the ordinary flow otherwise; ``"circular"``: the
        same, but an error on a target without angles; ``"interval"``: angles
        treated as real numbers. On the angles the base is von Mises: reverse
        KL's centred on the base location with κ = 1/init_scale²; MLE's at the
        data's circular mean with κ = 1/(circular std)² (uniform without
        ``standardize``).

    Notes
    -----
    ``needs_data`` is a property here (True for ``mode="mle"``), so read it on
    an instance, not on the class.

    Under an evaluation budget, reverse KL's ``n_iter`` is decided by the
    budget (the configured value is ignored): ⌊(budget − n_samples) / batch_size⌋
    steps. In MLE mode the budget decides nothing: training uses reference data
    and only sampling costs evaluations (a data-based method; the plan's note
    says so).
    """

    divergence_advice = "Try a smaller lr, a grad_clip, or a different init_scale."
    #: a tiny configuration for conformance tests (seconds to fit)
    fast_params: dict[str, Any] = {
        "transforms": 2,
        "hidden_features": [16, 16],
        "bins": 4,
        "n_iter": 20,
        "batch_size": 64,
    }

    def __init__(
        self,
        *,
        mode: str = "reverse_kl",
        transforms: int = 6,
        hidden_features: tuple[int, ...] | list[int] = (128, 128),
        coupling: str = "spline",
        bins: int = 8,
        bound: float = 5.0,
        activation: str = "relu",
        n_iter: int = 2000,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        grad_clip: float | None = 10.0,
        lr_schedule: str = "cosine",
        init_scale: float = 1.0,
        standardize: bool = True,
        val_fraction: float = 0.1,
        sample_batch_size: int = 4096,
        dtype: str = "float32",
        periodic: str = "auto",
    ):
        _choice("mode", mode, MODES)
        _choice("periodic", periodic, PERIODIC)
        _choice("coupling", coupling, COUPLINGS)
        _choice("activation", activation, ACTIVATIONS)
        _choice("lr_schedule", lr_schedule, LR_SCHEDULES)
        _choice("dtype", dtype, DTYPES)
        if min(transforms, n_iter, batch_size, sample_batch_size, bins) < 1 or init_scale <= 0:
            raise ValueError(
                "flow: transforms, n_iter, batch sizes, bins and init_scale must be > 0"
            )
        if not 0 <= val_fraction < 1:
            raise ValueError(f"flow: val_fraction must be in [0, 1), got {val_fraction}")
        self.mode, self.transforms, self.coupling = mode, transforms, coupling
        self.hidden_features = [int(h) for h in hidden_features]
        self.bins, self.bound, self.activation = bins, bound, activation
        self.n_iter, self.batch_size, self.lr = n_iter, batch_size, lr
        self.weight_decay, self.grad_clip, self.lr_schedule = weight_decay, grad_clip, lr_schedule
        self.init_scale, self.standardize = init_scale, standardize
        self.val_fraction = val_fraction
        self.sample_batch_size, self.dtype = sample_batch_size, dtype
        self.periodic = periodic

    budget_settings = ("n_iter",)

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        """True when ``mode == "mle"``: ``fit`` then trains on reference samples."""
        return self.mode == "mle"

    def plan_budget(self, budget: int, n_samples: int) -> BudgetPlan:
        """Reverse KL: ``n_iter`` = ⌊(budget − sample_cost(n_samples)) / batch_size⌋
        whole batches; ValueError when that is 0. MLE: the default plan (sampling only)."""
        if self.mode == "mle":
            return super().plan_budget(budget, n_samples)
        spare = budget - self.sample_cost(n_samples)
        n_iter = spare // self.batch_size
        if n_iter < 1:
            raise ValueError(
                f"flow: a budget of {budget} evaluations leaves none for training: drawing "
                f"n_samples = {n_samples} samples costs {self.sample_cost(n_samples)} and "
                f"one training step costs batch_size = {self.batch_size}"
            )
        plan = type(self)(**{**self.get_params(), "n_iter": n_iter})
        planned = n_iter * self.batch_size + self.sample_cost(n_samples)
        why = f"a training step costs batch_size = {self.batch_size} evaluations"
        return BudgetPlan(plan, {"n_iter": n_iter}, planned, shortfall_note(planned, budget, why))

    # ---------------------------------------------------------------- the model

    @property
    def _dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def build_model(
        self, shift: torch.Tensor, scale: torch.Tensor, periodic: torch.Tensor | None = None
    ) -> FlowModel:
        """A fresh :class:`FlowModel` of this config with standardization (shift, scale),
        ``(dim,)`` each, and angles ``periodic`` (bool ``(dim,)`` or None, see
        :meth:`periodic_mask`), in the configured dtype (initialized from the global RNG)."""
        settings = {k: getattr(self, k) for k in ARCHITECTURE}
        model = FlowModel(shift.shape[0], shift, scale, periodic=periodic, **settings)
        return model.to(self._dtype)

    def periodic_mask(self, target: Target) -> torch.Tensor | None:
        """The angles the flow treats as circular: the target's ``periodic_mask``
        (bool ``(dim,)``) under ``"auto"``/``"circular"`` when it has any, else None.

        ``"circular"`` on a target without angles is a ValueError.
        """
        mask = None
        if self.periodic != "interval" and isinstance(target, PeriodicCoordinates):
            mask = torch.as_tensor(target.periodic_mask, dtype=torch.bool).cpu()
            if mask.shape != (target.dim,):
                raise ValueError(
                    f"flow: the target's periodic_mask has shape {tuple(mask.shape)}, "
                    f"not ({target.dim},)"
                )
            mask = mask if bool(mask.any()) else None
        if mask is None and self.periodic == "circular":
            raise ValueError("flow: periodic='circular' but the target declares no angles")
        return mask

    def standardization(
        self, target: Target, data: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(shift, scale) of the fixed first layer, shape ``(dim,)`` each, float64.

        Reverse KL: the target's base_location (or 0) and ``init_scale``. MLE:
        the data's mean and std (clamped at 1e-6), or (0, 1) without ``standardize``.
        On the angles of :meth:`periodic_mask` (the base's von Mises loc and
        1/sqrt(κ)): the wrapped base location and ``init_scale``; the data's
        circular mean and circular std (≥ 1e-6); without ``standardize``, (0, inf).
        """
        zeros = torch.zeros(target.dim, dtype=torch.float64)
        if self.mode == "reverse_kl":
            shift = start_location(target, torch.float64)
            return self._circular(target, shift), torch.full_like(zeros, self.init_scale)
        if not self.standardize:
            mask = self.periodic_mask(target)
            ones = torch.ones_like(zeros)
            return zeros, ones if mask is None else torch.where(mask, math.inf, ones)
        data = data.to(torch.float64)
        shift, scale = data.mean(0), data.std(0).clamp_min(1e-6)
        mask = self.periodic_mask(target)
        if mask is not None:
            loc, spread = circular_moments(data[:, mask])
            shift[mask], scale[mask] = loc, spread.clamp_min(1e-6)
        return shift, scale

    def _circular(self, target: Target, shift: torch.Tensor) -> torch.Tensor:
        """``shift`` with the angles of :meth:`periodic_mask` wrapped into [−π, π)."""
        mask = self.periodic_mask(target)
        return shift if mask is None else torch.where(mask, wrap_angle(shift), shift)

    def new_model(
        self, target: Target, data: torch.Tensor | None, generator: torch.Generator
    ) -> FlowModel:
        """:meth:`build_model` with :meth:`standardization`, its initial weights seeded
        from ``generator`` (one draw; the global RNG is left as it was)."""
        shift, scale = self.standardization(target, data)
        with forked_seed(generator):
            return self.build_model(shift, scale, self.periodic_mask(target))

    def optimizer(
        self, model: FlowModel
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """AdamW (``lr``, ``weight_decay``) on the model's trainable parameters, and
        the ``lr_schedule`` (cosine over ``n_iter`` steps, or constant)."""
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.n_iter)
        else:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        return opt, sched

    def use_model(self, model: FlowModel) -> FlowMethod:
        """Take ``model`` as the fitted flow (one trained elsewhere: FAB); returns self."""
        self.flow_ = model
        return self

    def _check_data(self, target: Target, data: torch.Tensor | None) -> None:
        if not self.needs_data:
            return
        if data is None:
            raise ValueError("flow with mode='mle' needs reference data of shape (N, dim)")
        if data.ndim != 2 or data.shape[1] != target.dim or data.shape[0] < 2:
            raise ValueError(
                f"flow: data must have shape (N >= 2, {target.dim}), got {tuple(data.shape)}"
            )

    # ---------------------------------------------------------------- training

    def _label(self) -> str:
        return f"flow ({self.mode})"

    def _reverse_kl_loss(self, target: Target, generator: torch.Generator) -> StepLoss:
        """loss = mean over a batch of log q(x) + E(x), x = g(z) reparameterized."""

        def step() -> tuple[torch.Tensor, dict[str, float]]:
            x, log_q = self.flow_.sample(self.batch_size, generator)
            energy = target.energy(x.to(torch.float64))
            log_q = log_q.to(torch.float64)
            ess = normalized_kish_ess(-(energy + log_q).detach())
            return (log_q + energy).mean(), {"ess": ess}

        return step

    def _split(
        self, data: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(training rows, held-out rows or None), shuffled by ``generator``."""
        data = data.to(self._dtype)
        n_val = min(int(self.val_fraction * data.shape[0]), MAX_VAL_ROWS)
        if n_val < 1:
            return data, None
        perm = torch.randperm(data.shape[0], generator=generator)
        return data[perm[n_val:]], data[perm[:n_val]]

    def _mle_loss(self, batches: Minibatches) -> StepLoss:
        """loss = −mean log q(x_ref) over a minibatch of ``data``."""

        def step() -> tuple[torch.Tensor, dict[str, float]]:
            return -self.flow_.log_prob(next(batches)).mean(), {}

        return step

    def _nll(self, data: torch.Tensor) -> Callable[[], float]:
        """Validation loss: −mean log q over held-out ``data`` (no gradient)."""

        @torch.no_grad()
        def validate() -> float:
            return float(-self.flow_.log_prob(data).mean())

        return validate

    def _objective(self, target: Target, data: torch.Tensor | None, generator) -> Objective:
        """A fresh flow (seeded from ``generator``) and its loss (see the module docstring).

        Reverse KL makes exactly ``n_iter × batch_size`` energy and gradient
        evaluations; MLE makes none. MLE checkpoints the minibatch position too.
        """
        self._check_data(target, data)
        self.flow_ = self.new_model(target, data, generator)
        opt, sched = self.optimizer(self.flow_)
        if self.mode == "reverse_kl":
            return Objective(self.flow_, opt, sched, self._reverse_kl_loss(target, generator))
        train, val = self._split(data, generator)
        batches = Minibatches(train, self.batch_size, generator)
        return Objective(
            self.flow_,
            opt,
            sched,
            self._mle_loss(batches),
            state={"batches": batches},
            validate=None if val is None else self._nll(val),
        )

    # ---------------------------------------------------------------- sampling

    def _check_fitted(self) -> None:
        if not hasattr(self, "flow_"):
            raise RuntimeError("flow: call fit or load_model_state before sample")

    @torch.no_grad()
    def _sample_batch(
        self, target: Target, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (float64, ``(n, dim)``), log q (``(n,)``) and E(x) (``(n,)``) for one batch."""
        x, log_q = self.flow_.sample(n, generator)
        x, log_q = x.to(torch.float64), log_q.to(torch.float64)
        return x, log_q, target.energy(x)

    def sample(
        self,
        target: Target,
        n: int,
        generator: torch.Generator,
        checkpoint: Checkpoint = NO_CHECKPOINT,
    ) -> SampleSet:
        """Draw ``n`` samples x ∼ q with log w = −E(x) − log q(x) (−inf where non-finite)."""
        self._check_fitted()
        if n < 1:
            raise ValueError(f"flow: n must be positive, got {n}")
        sizes = batch_sizes(target, n, self.sample_batch_size)
        parts = [self._sample_batch(target, m, generator) for m in sizes]
        x, log_q, energy = (torch.cat(p) for p in zip(*parts, strict=True))
        ok = torch.isfinite(energy) & torch.isfinite(log_q) & torch.isfinite(x).all(-1)
        log_w = torch.where(ok, -energy - log_q, torch.full_like(energy, -math.inf))
        attrs = {
            "mode": self.mode,
            "periodic": "interval" if self.flow_.periodic is None else "circular",
            "n_nonfinite": int((~ok).sum()),
            "log_Z_hat": log_mean_exp(log_w),
            "log_Z_elbo": mean_log_weight(log_w),
            "ess_kish": normalized_kish_ess(log_w),
        }
        return SampleSet(x=x, energy=energy, log_weight=log_w, log_q=log_q, attrs=attrs)

    has_density = True

    @torch.no_grad()
    def log_density(self, target: Target, x: torch.Tensor) -> torch.Tensor:
        """log q(x) of the flow, float64 ``(n,)``, in batches of ``sample_batch_size``."""
        self._check_fitted()
        parts = [
            self.flow_.log_prob(b.to(self._dtype)).to(torch.float64)
            for b in x.split(self.sample_batch_size)
        ]
        return torch.cat(parts) if parts else x.new_zeros(0, dtype=torch.float64)

    # ---------------------------------------------------------------- state

    def model_state(self) -> dict[str, torch.Tensor]:
        """The flow's tensors (standardization buffers, masks, weights), keys ``flow.*``."""
        self._check_fitted()
        return {f"flow.{k}": v.detach().clone() for k, v in self.flow_.state_dict().items()}

    def load_model_state(self, target: Target, state: dict[str, torch.Tensor]) -> FlowMethod:
        """Rebuild the flow from this config and ``target`` (its dim and angles), then
        load ``state``."""
        dim, periodic = target.dim, self.periodic_mask(target)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the initial values are overwritten below
            flow = self.build_model(torch.zeros(dim), torch.ones(dim), periodic)
        own = {k.removeprefix("flow."): v for k, v in state.items() if k.startswith("flow.")}
        try:
            flow.load_state_dict(own, strict=True)
        except RuntimeError as err:
            raise ValueError(f"flow: model state does not match this config: {err}") from None
        self.flow_ = flow
        return self
