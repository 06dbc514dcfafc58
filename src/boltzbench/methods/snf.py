"""Stochastic normalizing flows (SNF): coupling flows interleaved with Langevin or MALA layers.

Wu, Köhler & Noé 2020, "Stochastic normalizing flows", NeurIPS, arXiv:2002.06707.

The sampler draws z ∼ q₀ = N(0, I) and runs K blocks (K = ``n_blocks``), each a
coupling flow g_k (a :class:`~boltzbench.methods.flows_util.FlowModel` of
``transforms`` layers) followed by a stochastic layer of m = ``layer_steps``
steps of a Markov kernel K_k at the intermediate density

    π_k(y) ∝ exp(−u_k(y)),   u_k = (1 − λ_k) u_ref + λ_k E,   λ_k = k / K,

where u_ref(y) = Σᵢ (yᵢ − locᵢ)² / (2 σᵢ²) is the energy of the reference
N(loc, diag σ²) that the first flow's fixed standardization maps q₀ onto
(loc, σ: the target's base location and ``base_scale``, or the data's mean and
std when training on data), and E the target's energy. The last layer runs at
λ_K = 1, the target itself. The kernels (``stochastic``):

``"langevin"``
    unadjusted Langevin, y' = y − (ε²/2) ∇u_k(y) + ε η (ε = ``step_size``, a
    length in the target's units of x; the time step is ε²/2), with the same
    kernel as backward kernel: B(y | y') = N(y; y' − (ε²/2) ∇u_k(y'), ε² I)
    (the paper's Langevin layer).
``"mala"``
    the same proposal with a Metropolis accept step (:mod:`boltzbench.mcmc.mala`),
    reversible with respect to π_k, so B = K_k and, by detailed balance,
    log B(y | y') − log K_k(y' | y) = u_k(y') − u_k(y) (the paper's MCMC layer).

Write d = log K(new | old) − log K(old | new) for one step in the order it was
simulated (for MALA d = u_k(old) − u_k(new)). Along a forward path
z → y₁ → … → x the log importance weight (the paper's Eq. 7 and Table 1) is

    log w = −E(x) − log q₀(z) + Σ_k log |det ∂g_k| − Σ_steps d,

and E_F[w] = Z exactly, for any flows, any step size and any K and m: the
weight is a ratio of proper path densities (backward over forward), so there is
no discretization bias in Ẑ. With m = 0 there are no stochastic layers and
log w is the flow's −E(x) − log q(x).

Losses (``loss``):

``"kl"``
    KL(forward ‖ backward) over paths = −E_F[log w] + log Z, by
    reparameterization through the flows and the kernels (the paper's energy
    training). The target's E and ∇E come from detached ``energy_and_grad``
    calls: E enters through the straight-through surrogate
    E(y) + ∇E(y)·(y − stop(y)), which has the exact first derivative, but the
    derivative of the drift ∇u_k (the Hessian of E) and that of MALA's
    accept/reject decision are left out (as in the paper's MCMC layers), so the
    gradient is not the exact pathwise one.
``"ml"``
    KL(backward ‖ forward) over paths = E_B[log w] − log Z, on backward paths
    from the data: x ∼ data, then each stochastic layer's backward kernel (a
    Langevin step, or the MALA kernel itself) and each flow's inverse down to z.
    With E(x) fixed by the data this is E_B[−log q₀(z) + Σ log |det ∂g_k| − Σ d]
    (the paper's maximum-likelihood training; with m = 0 the negative
    log-likelihood of the flow). Needs data.
``"kl+ml"``
    the KL loss plus ``ml_weight`` times the ML loss.

Costs, all through the target passed: every stochastic layer takes m + 1
energy-and-gradient evaluations per path (one where the flow hands over, one
per proposal); the last one also gives E(x). A forward path costs K (m + 1),
or 1 with m = 0 (for E(x)); a backward path from data costs K (m + 1), or 0
with m = 0. A training iteration costs ``batch_size`` forward paths (KL) plus
``batch_size`` backward paths (ML). Under an evaluation budget the budget
decides ``n_iter`` (whole iterations after the sampling reserve).

Sampling returns x with log w; ``attrs`` holds ``log_Z_hat`` = log mean exp(log w),
``log_Z_elbo`` = mean log w and ``ess_kish``, and, with MALA, the mean acceptance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from boltzbench.core import DTYPES, BudgetPlan, start_location
from boltzbench.estimators import normalized_kish_ess
from boltzbench.mcmc import mala
from boltzbench.methods.base import Method
from boltzbench.methods.diffusion_util import (
    clipped_score,
    masked_log_weights,
)
from boltzbench.methods.flow import ARCHITECTURE
from boltzbench.methods.flows_util import ACTIVATIONS, COUPLINGS, FlowModel
from boltzbench.methods.paths import PathSampler
from boltzbench.methods.training import Minibatches, Objective, forked_seed
from boltzbench.targets.base import Target

__all__ = ["SNF", "SNFModel", "Point", "langevin_step", "mala_step"]

LOSSES = ("kl", "ml", "kl+ml")
KERNELS = ("langevin", "mala")


def _choice(name: str, value: Any, valid) -> None:
    if value not in valid:
        raise ValueError(f"snf: unknown {name} {value!r}; valid choices: {', '.join(valid)}")


class Point(NamedTuple):
    """A state of a stochastic layer (an :mod:`boltzbench.mcmc.proposal` state).

    position ``(n, dim)`` (carries the graph); energy u_k ``(n,)`` float64 and its
    gradient ∇u_k ``(n, dim)`` (detached, the target's part clipped); the target's
    own E ``(n,)`` and raw ∇E ``(n, dim)``, float64, detached.
    """

    position: Tensor
    energy: Tensor
    grad: Tensor
    target_energy: Tensor
    target_grad: Tensor


def straight_through(value: Tensor, grad: Tensor, x: Tensor) -> Tensor:
    """value + grad·(x − stop(x)), float64 ``(n,)``: equal to ``value``, with
    derivative ``grad`` along ``x`` ``(n, dim)``."""
    x = x.to(torch.float64)
    return value + (grad.to(torch.float64) * (x - x.detach())).sum(-1)


#: one step ``(generator, point, potential, ε) -> (point, d, acceptance (n,))``
Step = Callable[..., tuple[Point, Tensor, Tensor]]


def langevin_step(generator, point: Point, potential, eps: float) -> tuple[Point, Tensor, Tensor]:
    """An unadjusted Langevin step; d = log K(new | old) − log K(old | new), float64 ``(n,)``."""
    x = point.position
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    new = potential(x + eps * (noise - 0.5 * eps * point.grad))
    fwd = mala.langevin_log_density(new.position, point, eps)
    bwd = mala.langevin_log_density(x, new, eps)
    return new, (fwd - bwd).to(torch.float64), torch.ones_like(new.energy)


_MALA = mala.build_kernel()


def mala_step(generator, point: Point, potential, eps: float) -> tuple[Point, Tensor, Tensor]:
    """A MALA step; d = u(old) − u(new) (detailed balance), straight-through in the
    positions, float64 ``(n,)``; zero for a rejected proposal."""
    new, info = _MALA(generator, point, potential, eps)
    old_u = straight_through(point.energy, point.grad, point.position)
    new_u = straight_through(new.energy, new.grad, new.position)
    return new, old_u - new_u, info.acceptance_rate


STEPS: dict[str, Step] = {"langevin": langevin_step, "mala": mala_step}


class SNFModel(nn.Module):
    """What an SNF trains: the K flows, and the reference N(loc, diag σ²) (buffers).

    ``flows[0]`` carries the fixed standardization (loc, σ), the others the identity,
    so a fresh model's flows map z to loc + σ z.
    """

    def __init__(self, flows: list[FlowModel]):
        super().__init__()
        self.flows = nn.ModuleList(flows)

    @property
    def reference(self) -> tuple[Tensor, Tensor]:
        """(loc, σ), ``(dim,)`` each: the standardization of the first flow."""
        return self.flows[0].standardization

    def base(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """z ∼ N(0, I) ``(n, dim)`` (as :meth:`FlowModel.sample` draws it) and log q₀(z)."""
        first = self.flows[0]
        z = torch.randn(n, first.dim, generator=generator, dtype=first.dtype)
        return z, first().base.log_prob(z).to(torch.float64)

    def push(self, k: int, y: Tensor) -> tuple[Tensor, Tensor]:
        """g_k(y) and log |det ∂g_k/∂y| (towards the target), ``(n, dim)``, ``(n,)``."""
        out, ladj = self.flows[k]().transform.inv.call_and_ladj(y)
        return out, ladj.to(torch.float64)

    def pull(self, k: int, y: Tensor) -> tuple[Tensor, Tensor]:
        """g_k⁻¹(y) and log |det ∂g_k/∂y| at the preimage (the forward log-det)."""
        out, ladj = self.flows[k]().transform.call_and_ladj(y)
        return out, -ladj.to(torch.float64)


class _Paths:
    """An SNF bound to a target: the potentials of its K layers and the path simulations."""

    def __init__(self, model: SNFModel, target: Target, kernel: str, m: int, eps: float, clip):
        self.model, self.target, self.m, self.eps, self.clip = model, target, m, eps, clip
        self.step = STEPS[kernel]
        self.n_blocks = len(model.flows)
        self.dtype = model.flows[0].dtype

    def potential(self, k: int) -> Callable[[Tensor], Point]:
        """y ↦ the :class:`Point` of u_k at ``y`` (one energy-and-gradient evaluation per row)."""
        lam = (k + 1) / self.n_blocks
        loc, scale = (t.to(self.dtype) for t in self.model.reference)

        def evaluate(y: Tensor) -> Point:
            energy, grad = self.target.energy_and_grad(y.detach().to(torch.float64))
            r = (y.detach() - loc) / scale
            u = (1 - lam) * 0.5 * (r**2).sum(-1).to(torch.float64) + lam * energy
            du = (1 - lam) * r / scale - lam * clipped_score(grad, self.clip, self.dtype)
            return Point(y, u, du, energy, grad)

        return evaluate

    def layer(self, k: int, y: Tensor, generator) -> tuple[Point, Tensor, Tensor]:
        """m steps of layer k from ``y``: (last point, Σ d ``(n,)``, mean acceptance ``(n,)``)."""
        potential = self.potential(k)
        point = potential(y)
        total, acc = torch.zeros_like(point.energy), torch.zeros_like(point.energy)
        for _ in range(self.m):
            point, d, rate = self.step(generator, point, potential, self.eps)
            total, acc = total + d, acc + rate / self.m
        return point, total, acc

    def terminal(self, x: Tensor, last: Point | None) -> tuple[Tensor, Tensor]:
        """E(x) (float64 ``(n,)``, detached) and its straight-through surrogate."""
        if last is None:  # no stochastic layer: one evaluation at x
            energy, grad = self.target.energy_and_grad(x.detach().to(torch.float64))
        else:
            energy, grad = last.target_energy, last.target_grad
        return energy, straight_through(energy, grad, x)

    def forward(self, n: int, generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``n`` forward paths: x ``(n, dim)``, E(x), log w (with the straight-through
        E, so differentiable) and the mean acceptance (``(n,)`` each)."""
        y, log_q0 = self.model.base(n, generator)
        log_w, acc, last = -log_q0, torch.zeros_like(log_q0), None
        for k in range(self.n_blocks):
            y, ladj = self.model.push(k, y)
            log_w = log_w + ladj
            if self.m:
                last, d, rate = self.layer(k, y, generator)
                y, log_w, acc = last.position, log_w - d, acc + rate / self.n_blocks
        energy, surrogate = self.terminal(y, last)
        return y, energy, log_w - surrogate, acc

    def backward(self, x: Tensor, generator) -> Tensor:
        """Backward paths from ``x`` ``(n, dim)`` down to z: log w + E(x), ``(n,)``
        (differentiable in the flows' parameters)."""
        y, log_w = x.to(self.dtype), x.new_zeros(x.shape[0], dtype=torch.float64)
        for k in reversed(range(self.n_blocks)):
            if self.m:
                last, d, _ = self.layer(k, y, generator)
                y, log_w = last.position, log_w + d
            y, ladj = self.model.pull(k, y)
            log_w = log_w + ladj
        return log_w - self.model.flows[0]().base.log_prob(y).to(torch.float64)


class SNF(PathSampler):
    """Stochastic normalizing flow (Wu, Köhler & Noé 2020), weighted samples.

    Parameters
    ----------
    loss
        ``"kl"`` (energy), ``"ml"`` (data) or ``"kl+ml"`` (see the module docstring);
        ``needs_data`` is True for the last two.
    n_blocks
        K, the blocks [flow → stochastic layer]; λ_k = k/K.
    layer_steps
        m, the kernel steps of each stochastic layer (0: a plain flow of K blocks).
    stochastic
        ``"mala"`` or ``"langevin"`` (unadjusted).
    step_size
        ε, the standard deviation of a step's noise in the target's units of x
        (the Langevin time step is ε²/2).
    base_scale
        σ of the reference N(loc, σ² I) in the target's units (energy training;
        with data the reference is the data's mean and per-coordinate std).
    transforms, hidden_features, coupling, bins, bound, activation
        Each block's flow: as for ``flow`` (coupling layers per block, MLP widths,
        ``"spline"`` or ``"affine"``, spline bins and half-width, activation).
    n_iter, batch_size, lr
        Adam steps, paths (and data rows) per step, learning rate (constant).
    ml_weight
        The ML loss's weight in ``"kl+ml"``.
    score_clip
        Elementwise clip of the target's score in the kernels' drift (keeps the
        weights exact: the drift is any deterministic function of y).
    grad_clip
        Maximum global norm of the parameter gradient, or None.
    sample_batch_size
        Paths per batch when sampling.
    dtype
        ``"float32"`` or ``"float64"`` for the flows and the chain; energies, log
        weights and the returned samples are float64.

    Defaults: KL, 3 blocks of a 2-layer spline flow and 1 MALA step of ε = 0.1
    (6 evaluations per path), σ = 1, (64, 64), 2000 steps of 128 paths, lr 1e-3,
    score clip 100, gradient clip 10, float32.
    """

    name = "snf"
    divergence_advice = "Try a smaller lr or step_size, a grad_clip, or another base_scale."
    #: a tiny configuration for conformance tests (seconds to fit)
    fast_params: dict[str, Any] = {
        "n_blocks": 2,
        "layer_steps": 1,
        "transforms": 1,
        "hidden_features": [16, 16],
        "bins": 4,
        "n_iter": 10,
        "batch_size": 32,
        "step_size": 0.3,
    }

    def __init__(
        self,
        *,
        loss: str = "kl",
        n_blocks: int = 3,
        layer_steps: int = 1,
        stochastic: str = "mala",
        step_size: float = 0.1,
        base_scale: float = 1.0,
        transforms: int = 2,
        hidden_features: tuple[int, ...] | list[int] = (64, 64),
        coupling: str = "spline",
        bins: int = 8,
        bound: float = 5.0,
        activation: str = "relu",
        n_iter: int = 2000,
        batch_size: int = 128,
        lr: float = 1e-3,
        ml_weight: float = 1.0,
        score_clip: float = 100.0,
        grad_clip: float | None = 10.0,
        sample_batch_size: int = 4096,
        dtype: str = "float32",
    ):
        _choice("loss", loss, LOSSES)
        _choice("stochastic", stochastic, KERNELS)
        _choice("coupling", coupling, COUPLINGS)
        _choice("activation", activation, ACTIVATIONS)
        _choice("dtype", dtype, DTYPES)
        if min(n_blocks, transforms, bins, n_iter, batch_size, sample_batch_size) < 1:
            raise ValueError("snf: n_blocks, transforms, bins, n_iter and batch sizes must be >= 1")
        if layer_steps < 0 or ml_weight < 0:
            raise ValueError("snf: layer_steps and ml_weight must be >= 0")
        if not (step_size > 0 and base_scale > 0 and lr > 0 and score_clip > 0):
            raise ValueError("snf: step_size, base_scale, lr and score_clip must be > 0")
        self.loss, self.n_blocks, self.layer_steps = loss, n_blocks, layer_steps
        self.stochastic, self.step_size, self.base_scale = stochastic, step_size, base_scale
        self.transforms, self.coupling, self.bins = transforms, coupling, bins
        self.hidden_features = [int(h) for h in hidden_features]
        self.bound, self.activation = bound, activation
        self.n_iter, self.batch_size, self.lr, self.ml_weight = n_iter, batch_size, lr, ml_weight
        self.score_clip, self.grad_clip = score_clip, grad_clip
        self.sample_batch_size, self.dtype = sample_batch_size, dtype

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        """True when the loss has an ML part: ``fit`` then trains on reference samples."""
        return self.loss != "kl"

    # ---------------------------------------------------------------- building

    def build_model(self, loc: Tensor, scale: Tensor) -> SNFModel:
        """K fresh flows (the first standardizing with (loc, scale), ``(dim,)`` each),
        in the configured dtype (initialized from the global RNG)."""
        settings = {k: getattr(self, k) for k in ARCHITECTURE}
        ident = (torch.zeros_like(loc), torch.ones_like(scale))
        shifts = [(loc, scale)] + [ident] * (self.n_blocks - 1)
        flows = [FlowModel(loc.shape[0], a, b, **settings) for a, b in shifts]
        return SNFModel(flows).to(DTYPES[self.dtype])

    def reference(self, target: Target, data: Tensor | None) -> tuple[Tensor, Tensor]:
        """(loc, σ) of the reference, float64 ``(dim,)`` each: the data's mean and std
        (clamped at 1e-6) when the loss uses data, else base location and ``base_scale``."""
        if self.needs_data:
            data = data.to(torch.float64)
            return data.mean(0), data.std(0).clamp_min(1e-6)
        loc = start_location(target, torch.float64)
        return loc, torch.full_like(loc, self.base_scale)

    def _paths(self, target: Target) -> _Paths:
        eps, clip = self.step_size, self.score_clip
        return _Paths(self.model_, target, self.stochastic, self.layer_steps, eps, clip)

    def _simulator(self, target: Target) -> _Paths:
        self._acceptance: list[Tensor] = []  # each batch's per-path mean acceptance
        return self._paths(target)

    # ---------------------------------------------------------------- costs

    def path_cost(self) -> int:
        """Evaluations of one forward path: K (m + 1), or 1 without stochastic layers."""
        return self.n_blocks * (self.layer_steps + 1) if self.layer_steps else 1

    def iteration_cost(self) -> int:
        """Evaluations of one training iteration (see the module docstring)."""
        kl = self.path_cost() if self.loss != "ml" else 0
        ml = self.n_blocks * (self.layer_steps + 1) if self.needs_data and self.layer_steps else 0
        return self.batch_size * (kl + ml)

    def sample_cost(self, n: int) -> int:
        """``path_cost()`` energy-and-gradient evaluations per sample."""
        return n * self.path_cost()

    def plan_budget(self, budget: int, n_samples: int) -> BudgetPlan:
        """A copy with ``n_iter`` = the whole iterations of ``iteration_cost()`` that
        ``budget`` less ``sample_cost(n_samples)`` pays for; ML without stochastic
        layers trains for free, and then the budget pays for sampling only."""
        if self.iteration_cost() == 0:
            return Method.plan_budget(self, budget, n_samples)
        return super().plan_budget(budget, n_samples)

    def _iteration_cost(self) -> int:
        return self.iteration_cost()

    # ---------------------------------------------------------------- training

    def _label(self) -> str:
        return f"snf ({self.loss}, {self.stochastic})"

    def _check_data(self, target: Target, data: Tensor | None) -> None:
        if not self.needs_data:
            return
        if data is None or data.ndim != 2 or data.shape[1] != target.dim or data.shape[0] < 2:
            got = None if data is None else tuple(data.shape)
            raise ValueError(
                f"snf with loss={self.loss!r} needs reference data of shape (N >= 2, "
                f"{target.dim}), got {got}"
            )

    def _step_loss(self, paths: _Paths, batches: Minibatches | None, generator):
        """loss = −mean log w (KL) and/or mean (log w + E) over backward paths (ML)."""

        def step() -> tuple[Tensor, dict[str, float]]:
            loss, record = torch.zeros((), dtype=torch.float64), {}
            if self.loss != "ml":
                _, _, log_w, _ = paths.forward(self.batch_size, generator)
                loss = loss - log_w.mean()
                log_w = log_w.detach()
                record = {"log_Z_elbo": float(log_w.mean()), "ess": normalized_kish_ess(log_w)}
            if batches is not None:
                ml = paths.backward(next(batches), generator).mean()
                weight = 1.0 if self.loss == "ml" else self.ml_weight
                loss, record["ml"] = loss + weight * ml, float(ml.detach())
            return loss, record

        return step

    def _objective(self, target: Target, data: Tensor | None, generator) -> Objective:
        """A fresh model (identity flows after the standardization, seeded from
        ``generator``), Adam at a constant ``lr``; training stops before the first
        iteration the budget cannot pay for. History: ``loss``, and ``log_Z_elbo``,
        ``ess`` (KL) and ``ml`` (ML)."""
        self._check_data(target, data)
        loc, scale = self.reference(target, data)
        with forked_seed(generator):
            self.model_ = self.build_model(loc, scale)
        batches = None
        if self.needs_data:
            batches = Minibatches(data.to(DTYPES[self.dtype]), self.batch_size, generator)
        opt = torch.optim.Adam(self.model_.parameters(), lr=self.lr)
        return Objective(
            self.model_,
            opt,
            loss=self._step_loss(self._paths(target), batches, generator),
            state={} if batches is None else {"batches": batches},
            target=target,
            cost=self.iteration_cost(),
        )

    # ---------------------------------------------------------------- sampling

    @torch.no_grad()
    def _sample_batch(self, paths: _Paths, target: Target, n: int, generator) -> tuple:
        """x (float64 ``(n, dim)``), E(x) and log w (``(n,)``) for one batch of paths."""
        x, energy, log_w, rate = paths.forward(n, generator)
        self._acceptance.append(rate)
        x = x.to(torch.float64)
        return x, energy, masked_log_weights(log_w, x, energy)

    def _sample_attrs(self, paths: _Paths) -> dict[str, Any]:
        """The loss, and the mean MALA acceptance."""
        attrs: dict[str, Any] = {"loss": self.loss}
        if self.stochastic == "mala" and self.layer_steps:
            attrs["acceptance"] = float(torch.cat(self._acceptance).mean())
        return attrs

    def _backward_log_density(self, paths: _Paths, target: Target, x: Tensor, generator) -> Tensor:
        """log q̂(x) = log P_F(τ) − log P_B(τ | x) along one backward path per row (the
        stochastic layers' kernels run backwards, the flows inverted); exact without
        stochastic layers."""
        return -paths.backward(x, generator)

    # ---------------------------------------------------------------- state

    def _build_model(self, target: Target) -> SNFModel:
        dim = target.dim
        return self.build_model(torch.zeros(dim), torch.ones(dim))
