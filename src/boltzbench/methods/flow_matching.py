"""A flow-matching Boltzmann generator: conditional flow matching on the OT path.

Training (needs reference samples). Conditional flow matching (Lipman et al.
2023, "Flow matching for generative modeling", ICLR, arXiv:2210.02747, eqs.
20–23) regresses a vector field v_θ(x, t) on the velocity of the optimal-transport
(straight-line) conditional path from a base sample x₀ ∼ N(loc, base_scale² I)
(or a diagonal Gaussian fitted to the data's spread: ``base_scale="data"``)
to a data sample x₁:

    x_t = (1 − (1 − σ_min) t) x₀ + t x₁,      u_t = x₁ − (1 − σ_min) x₀,
    L(θ) = E_{t∼U(0,1), x₀, x₁} ‖v_θ(x_t, t) − u_t‖².

Its minimizer is the marginal field E[u_t | x_t], whose flow carries the base
to the data distribution (blurred by σ_min). With ``ot_pairing`` the pairs
(x₀, x₁) of a minibatch are matched by exact optimal transport (squared
Euclidean cost, POT's ``ot.emd``) instead of independently: minibatch OT-CFM
(Tong et al. 2024, "Improving and generalizing flow-based generative models
with minibatch optimal transport", TMLR, arXiv:2302.00482), which straightens
the paths.

Sampling. x₁ = φ₁(x₀) is integrated from t = 0 to 1 with the classical
fixed-step fourth-order Runge–Kutta scheme (:func:`rk4`, ``n_ode_steps``
steps, 4 field evaluations each; global error O(h⁴)), jointly with the
instantaneous change of variables (Chen et al. 2018, "Neural ordinary
differential equations", NeurIPS, Thm. 1)

    d log q_t(x_t)/dt = −div v(x_t, t),   log q(x₁) = log N(x₀) − ∫₀¹ div v dt.

The divergence is exact (autograd, one backward pass per coordinate:
:func:`exact_divergence`) when dim ≤ ``exact_trace_max_dim``, and otherwise
Hutchinson's estimate εᵀ (∂v/∂x) ε averaged over ``n_probes`` Rademacher
vectors ε, drawn once per sample and kept fixed along the trajectory
(Hutchinson 1989; Grathwohl et al. 2019, "FFJORD", ICLR, arXiv:1810.01367):
:func:`hutchinson_divergence`. E[εᵀ J ε] = tr J, so the integrated log q is
unbiased *as a log density* only; exp(−log q) and the importance weights
built from it are biased and noisier than with the exact trace, and so is
log Z_hat. The ``trace_estimator`` attribute says which one was used.

Importance weights log w = −E(x₁) − log q(x₁) (−∞ where non-finite);
mean exp(log w) estimates Z, without bias when log q is exact.

Particle systems. For a target with ``n_particles``, ``spatial_dim``,
``positions(x)`` and ``coordinates(positions)`` (:mod:`boltzbench.targets.particles`,
x the (N−1)·d Helmert chart of the centre-of-mass-free subspace),
``equivariant="auto"`` uses an E(n)-equivariant GNN (:mod:`boltzbench.methods.egnn`)
on Cartesian positions with a mean-free Gaussian prior, as in equivariant flow
matching (Klein, Krämer & Noé 2023, "Equivariant flow matching", NeurIPS,
arXiv:2306.15030). The chart is an isometry of the CoM-free subspace, so the
mean-free isotropic Gaussian N(0, base_scale² I) on positions is N(0, base_scale² I)
on x (the base is centred at 0, not at ``base_location``, to keep it
rotation-invariant), and the EGNN's mean-free velocity maps to the chart velocity
by ``coordinates``; the divergence is taken in the chart. The pairs are matched
without rotational or permutational alignment (plain OT on x when
``ot_pairing``), a simplification of Klein et al.'s equivariant OT.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import (
    DTYPES,
    SampleSet,
    batch_sizes,
    resolve_dtype,
    start_location,
)
from boltzbench.estimators import log_mean_exp, mean_log_weight, normalized_kish_ess
from boltzbench.methods.egnn import EGNN
from boltzbench.methods.training import (
    GradientMethod,
    Minibatches,
    Objective,
    StepLoss,
    forked_seed,
)
from boltzbench.targets.base import ParticleChart, Target

__all__ = [
    "FlowMatching",
    "MLPField",
    "ParticleField",
    "time_features",
    "ot_path",
    "ot_pairing_permutation",
    "exact_divergence",
    "hutchinson_divergence",
    "rademacher",
    "rk4",
    "integrate_with_divergence",
    "gaussian_log_prob",
]

#: frequencies k of the time features sin(πkt), cos(πkt), k = 1..N_TIME_FREQ
N_TIME_FREQ = 4

#: a vector field: (x ``(n, dim)``, t ``(n,)``) -> v ``(n, dim)``
Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: a divergence rule: (field, x, t) -> (v ``(n, dim)``, div v ``(n,)``)
Divergence = Callable[[Field, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


# ------------------------------------------------------------------ the path and the loss


def time_features(t: torch.Tensor, n_freq: int = N_TIME_FREQ) -> torch.Tensor:
    """[t, sin(πkt), cos(πkt) for k = 1..n_freq], shape ``(n, 1 + 2 n_freq)`` for t ``(n,)``."""
    k = torch.arange(1, n_freq + 1, dtype=t.dtype, device=t.device)
    angle = math.pi * t[:, None] * k
    return torch.cat([t[:, None], angle.sin(), angle.cos()], dim=-1)


def ot_path(
    x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, sigma_min: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The OT conditional path and its velocity (Lipman et al. 2023, eqs. 20–23).

    x_t = (1 − (1 − σ_min) t) x₀ + t x₁ and u_t = x₁ − (1 − σ_min) x₀, for
    ``x0``, ``x1`` of shape ``(n, dim)`` and ``t`` of shape ``(n,)``.
    """
    tt = t[:, None]
    return (1 - (1 - sigma_min) * tt) * x0 + tt * x1, x1 - (1 - sigma_min) * x0


def ot_pairing_permutation(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """The permutation π minimising Σ_i ‖x0_i − x1_π(i)‖² (Tong et al. 2024, minibatch OT).

    Exact OT between two uniform empirical measures of n points each
    (POT's network simplex, ``ot.emd``); its optimal plan is a permutation
    matrix (a vertex of the Birkhoff polytope) scaled by 1/n. Returns indices
    of shape ``(n,)``: pair x0[i] with x1[π[i]].
    """
    import ot  # POT pulls in scikit-learn: import only when pairing is asked for

    a = x0.detach().to(torch.float64).cpu()
    b = x1.detach().to(torch.float64).cpu()
    cost = torch.cdist(a, b).pow(2).numpy()
    w = np.full(a.shape[0], 1.0 / a.shape[0])
    plan = ot.emd(w, w, cost)
    return torch.as_tensor(plan.argmax(axis=1), device=x1.device)


# ------------------------------------------------------------------ vector fields


class MLPField(nn.Module):
    """An MLP vector field v(x, t) on R^dim, in standardized units.

    v(x, t) = scale ⊙ f((x − shift) / scale, time_features(t)), with f an MLP of
    ``n_layers`` hidden SiLU layers of width ``hidden_features``; ``shift`` and
    ``scale`` (buffers, shape ``(dim,)``) are the data's mean and std, so f sees
    inputs and outputs of order one whatever the target's length scale.
    """

    def __init__(
        self,
        dim: int,
        hidden_features: int,
        n_layers: int,
        shift: torch.Tensor,
        scale: torch.Tensor,
    ):
        super().__init__()
        widths = [dim + 1 + 2 * N_TIME_FREQ] + [hidden_features] * n_layers
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(widths[-1], dim))
        self.register_buffer("shift", shift.clone())
        self.register_buffer("scale", scale.clone())

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        u = (x - self.shift) / self.scale
        return self.scale * self.net(torch.cat([u, time_features(t)], dim=-1))


class ParticleField(nn.Module):
    """An E(n)-equivariant field on a particle target's chart (Klein et al. 2023).

    v(x, t) = coordinates(EGNN(positions(x), time_features(t))): positions
    ``(n, N, d)`` from the chart x ``(n, (N−1)d)``, a mean-free EGNN velocity,
    and back. ``positions`` and ``coordinates`` are the target's linear maps
    (not parameters of the module).
    """

    def __init__(self, target: Target, hidden_features: int, n_layers: int):
        super().__init__()
        self.n_particles, self.spatial_dim = target.n_particles, target.spatial_dim
        self.positions, self.coordinates = target.positions, target.coordinates
        in_features = 1 + 2 * N_TIME_FREQ
        self.egnn = EGNN(self.n_particles, in_features, hidden_features, n_layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        pos = self.positions(x)
        h = time_features(t)[:, None, :].expand(-1, self.n_particles, -1)
        return self.coordinates(self.egnn(pos, h))


# ------------------------------------------------------------------ divergence and ODE


def exact_divergence(
    field: Field, x: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """v(x, t) and div v = Σ_i ∂v_i/∂x_i, by autograd: one backward pass per coordinate.

    Rows must not interact (true of every field here), so the backward pass of
    Σ_rows v_i gives ∂v_i/∂x_i for every row at once. Shapes ``(n, dim)``, ``(n,)``.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = field(x, t)
        div = torch.zeros_like(v[:, 0])
        for i in range(x.shape[1]):
            (g,) = torch.autograd.grad(v[:, i].sum(), x, retain_graph=i + 1 < x.shape[1])
            div = div + g[:, i]
    return v.detach(), div.detach()


def rademacher(
    shape: Sequence[int], generator: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    """Independent ±1 entries with probability ½ each, drawn from ``generator``."""
    return (2 * torch.randint(0, 2, tuple(shape), generator=generator) - 1).to(dtype)


def hutchinson_divergence(
    probes: torch.Tensor,
) -> Callable[[Field, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A divergence rule returning v and Hutchinson's estimate (1/P) Σ_p ε_pᵀ (∂v/∂x) ε_p.

    ``probes`` ε has shape ``(P, n, dim)`` (Rademacher: E[ε εᵀ] = I, so the
    estimate is unbiased for tr ∂v/∂x; Hutchinson 1989). Each probe costs one
    vector–Jacobian product (one backward pass). The same probes are used at
    every call, i.e. fixed along a trajectory (Grathwohl et al. 2019).
    """

    def divergence(field: Field, x: torch.Tensor, t: torch.Tensor):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            v = field(x, t)
            est = torch.zeros_like(v[:, 0])
            for p, eps in enumerate(probes):
                last = p + 1 == probes.shape[0]
                (g,) = torch.autograd.grad((v * eps).sum(), x, retain_graph=not last)
                est = est + (g * eps).sum(-1)
        return v.detach(), est.detach() / probes.shape[0]

    return divergence


def rk4(
    f: Callable[[float, tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]],
    y0: tuple[torch.Tensor, ...],
    n_steps: int,
    t0: float = 0.0,
    t1: float = 1.0,
) -> tuple[torch.Tensor, ...]:
    """Classical fourth-order Runge–Kutta with ``n_steps`` equal steps from t0 to t1.

    y_{k+1} = y_k + (h/6)(k₁ + 2k₂ + 2k₃ + k₄) with k₁ = f(t, y),
    k₂ = f(t + h/2, y + h k₁/2), k₃ = f(t + h/2, y + h k₂/2), k₄ = f(t + h, y + h k₃).
    The state is a tuple of tensors and ``f(t, y)`` returns their derivatives.
    """
    h = (t1 - t0) / n_steps

    def shift(y, k, c):
        return tuple(a + c * b for a, b in zip(y, k, strict=True))

    y = y0
    for step in range(n_steps):
        t = t0 + step * h
        k1 = f(t, y)
        k2 = f(t + h / 2, shift(y, k1, h / 2))
        k3 = f(t + h / 2, shift(y, k2, h / 2))
        k4 = f(t + h, shift(y, k3, h))
        y = tuple(
            a + (h / 6) * (b1 + 2 * b2 + 2 * b3 + b4)
            for a, b1, b2, b3, b4 in zip(y, k1, k2, k3, k4, strict=True)
        )
    return y


def integrate_with_divergence(
    field: Field, x0: torch.Tensor, n_steps: int, divergence: Divergence = exact_divergence
) -> tuple[torch.Tensor, torch.Tensor]:
    """x₁ = φ₁(x₀) and ∫₀¹ div v(x_t, t) dt, integrated jointly with :func:`rk4`.

    log q(x₁) = log q₀(x₀) − (the returned integral) (Chen et al. 2018, Thm. 1).
    Shapes ``(n, dim)`` and ``(n,)``; no gradient is kept.
    """
    n = x0.shape[0]

    def f(t: float, y: tuple[torch.Tensor, torch.Tensor]):
        v, div = divergence(field, y[0], torch.full((n,), t, dtype=x0.dtype, device=x0.device))
        return v, div

    x1, integral = rk4(f, (x0.detach(), x0.new_zeros(n)), n_steps)
    return x1, integral


def gaussian_log_prob(
    x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor | float
) -> torch.Tensor:
    """log N(x; loc, diag(scale²)) = Σᵢ [−(xᵢ − locᵢ)²/(2 scaleᵢ²) − log(scaleᵢ √(2π))].

    ``x`` ``(n, dim)``; ``loc`` and ``scale`` broadcast to ``(dim,)``. Returns ``(n,)``.
    """
    scale = torch.as_tensor(scale, dtype=x.dtype).expand(x.shape[-1])
    log_norm = torch.log(scale * math.sqrt(2 * math.pi)).sum()
    return -0.5 * ((x - loc) / scale).pow(2).sum(-1) - log_norm


# ------------------------------------------------------------------ the method


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"flow_matching: {message}")


class FlowMatching(GradientMethod):
    """Flow-matching Boltzmann generator: OT-path CFM, RK4 sampling, weighted samples.

    See the module docstring for the loss, the integrator and the likelihood.

    Parameters
    ----------
    hidden_features
        Width of the MLP's hidden layers, or of the EGNN's node features.
    n_layers
        Hidden layers of the MLP, or message-passing layers of the EGNN.
    n_iter
        Optimizer steps.
    batch_size
        Pairs (x₀, x₁) per step.
    lr
        Adam learning rate, annealed to 0 by a cosine schedule over ``n_iter``.
    sigma_min
        Width σ_min of the conditional path at t = 1 (Lipman et al. 2023), ≥ 0.
    n_ode_steps
        RK4 steps from t = 0 to 1 when sampling (4 field evaluations each).
    exact_trace_max_dim
        The exact divergence is used when dim ≤ this; otherwise Hutchinson's.
    n_probes
        Rademacher probes per sample for Hutchinson's estimator.
    equivariant
        ``"auto"`` (an EGNN for targets with ``n_particles``, else an MLP),
        True (EGNN; the target must be a particle system) or False (MLP).
    ot_pairing
        Match the pairs of each minibatch by exact OT (Tong et al. 2024).
    base_scale
        The base is N(loc, base_scale² I) in the target's units; loc is the
        target's ``base_location`` (or 0) for the MLP, and 0 for the EGNN.
        ``"data"``: the base's std is the data's root-mean-square deviation
        from loc, per coordinate for the MLP (a diagonal Gaussian), pooled over
        the coordinates for the EGNN (so the base stays isotropic); useful for
        targets whose coordinates have very different scales (internal
        coordinates of molecules: nm and radians).
    sample_batch_size
        Rows integrated at once when sampling. The EGNN's memory grows as
        rows × N² × hidden_features.
    dtype
        ``"float32"`` or ``"float64"`` for the network and the ODE; energies,
        samples, log q and log weights are returned in float64.

    Under an evaluation budget the budget decides no setting: training regresses
    on reference data and costs no evaluations, and sampling costs one per
    sample, so a data-based run spends ``n_samples`` of its budget and its plan's
    note says why (:meth:`Method.plan_budget <boltzbench.methods.base.Method.plan_budget>`).
    """

    needs_data = True
    #: a tiny configuration for the conformance suite (seconds to fit and sample)
    fast_params: dict[str, Any] = {
        "hidden_features": 16,
        "n_layers": 2,
        "n_iter": 20,
        "batch_size": 64,
        "n_ode_steps": 4,
        "base_scale": "data",
    }

    def __init__(
        self,
        *,
        hidden_features: int = 64,
        n_layers: int = 3,
        n_iter: int = 2000,
        batch_size: int = 256,
        lr: float = 1e-3,
        sigma_min: float = 1e-3,
        n_ode_steps: int = 20,
        exact_trace_max_dim: int = 10,
        n_probes: int = 1,
        equivariant: str | bool = "auto",
        ot_pairing: bool = False,
        base_scale: float | str = 1.0,
        sample_batch_size: int = 1000,
        dtype: str = "float32",
    ):
        positive = (hidden_features, n_layers, n_iter, batch_size, n_ode_steps, n_probes)
        _check(min(positive) >= 1 and sample_batch_size >= 1, "sizes and counts must be >= 1")
        _check(lr > 0, "lr must be > 0")
        number = isinstance(base_scale, (int, float)) and not isinstance(base_scale, bool)
        _check(base_scale == "data" or (number and base_scale > 0), "base_scale: > 0 or 'data'")
        _check(0 <= sigma_min < 1, f"sigma_min must be in [0, 1), got {sigma_min}")
        _check(exact_trace_max_dim >= 0, "exact_trace_max_dim must be >= 0")
        _check(equivariant in ("auto", True, False), "equivariant must be 'auto', True or False")
        resolve_dtype(dtype)
        self.hidden_features, self.n_layers = hidden_features, n_layers
        self.n_iter, self.batch_size, self.lr, self.sigma_min = n_iter, batch_size, lr, sigma_min
        self.n_ode_steps, self.exact_trace_max_dim = n_ode_steps, exact_trace_max_dim
        self.n_probes, self.equivariant, self.ot_pairing = n_probes, equivariant, ot_pairing
        self.base_scale, self.sample_batch_size, self.dtype = base_scale, sample_batch_size, dtype

    # ---------------------------------------------------------------- building

    @property
    def _dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def uses_egnn(self, target: Target) -> bool:
        """Whether the field on ``target`` is the EGNN (``equivariant`` resolved)."""
        particles = isinstance(target, ParticleChart)
        if self.equivariant == "auto":
            return particles
        _check(particles or not self.equivariant, "equivariant=True needs a particle target")
        return bool(self.equivariant)

    def base_loc(self, target: Target) -> torch.Tensor:
        """The base's centre, float64 ``(dim,)``: 0 for the EGNN, else ``start_location``."""
        if self.uses_egnn(target):
            return torch.zeros(target.dim, dtype=torch.float64)
        return start_location(target, torch.float64)

    def _build(self, target: Target, shift: torch.Tensor, scale: torch.Tensor) -> nn.Module:
        if self.uses_egnn(target):
            field = ParticleField(target, self.hidden_features, self.n_layers)
        else:
            field = MLPField(target.dim, self.hidden_features, self.n_layers, shift, scale)
        return field.to(self._dtype)

    # ---------------------------------------------------------------- training

    def _base_std(self, target: Target, loc: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        """The base's per-coordinate std, float64 ``(dim,)`` (see ``base_scale``)."""
        if self.base_scale != "data":
            return torch.full((target.dim,), float(self.base_scale), dtype=torch.float64)
        msd = (data - loc).pow(2).mean(0)
        msd = msd.mean().expand(target.dim) if self.uses_egnn(target) else msd
        return msd.sqrt().clamp_min(1e-6)

    def _base_noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n draws of the base N(base_loc_, diag(base_std_²)), float64 ``(n, dim)``."""
        loc = self.base_loc_
        eps = torch.randn(n, loc.shape[0], generator=generator, dtype=torch.float64)
        return loc + self.base_std_ * eps

    def _check_data(self, target: Target, data: torch.Tensor | None) -> torch.Tensor:
        _check(data is not None, "needs reference samples (data)")
        _check(
            data.ndim == 2 and data.shape[1] == target.dim and data.shape[0] >= 2,
            f"data must have shape (n >= 2, {target.dim}), got {tuple(data.shape)}",
        )
        return data.to(torch.float64)

    def _loss_fn(self, batches: Minibatches, generator: torch.Generator) -> StepLoss:
        """The CFM loss of one minibatch: () -> mean ‖v(x_t, t) − u_t‖² (Lipman et al. 2023)."""

        def loss() -> tuple[torch.Tensor, dict[str, float]]:
            x1 = next(batches)
            m = x1.shape[0]
            x0 = self._base_noise(m, generator)
            t = torch.rand(m, generator=generator, dtype=torch.float64)
            if self.ot_pairing:
                x1 = x1[ot_pairing_permutation(x0, x1)]
            xt, u = (a.to(self._dtype) for a in ot_path(x0, x1, t, self.sigma_min))
            return (self.field_(xt, t.to(self._dtype)) - u).pow(2).sum(-1).mean(), {}

        return loss

    def _label(self) -> str:
        return "flow_matching"

    def _objective(self, target: Target, data: torch.Tensor | None, generator) -> Objective:
        """A fresh field (seeded from ``generator``), Adam with a cosine schedule over
        ``n_iter`` steps, and the CFM loss on minibatches of ``data`` (their position
        is checkpointed). Makes no energy evaluations: the loss needs only ``data``
        and base samples."""
        data = self._check_data(target, data)
        self.base_loc_ = self.base_loc(target)
        self.base_std_ = self._base_std(target, self.base_loc_, data)
        shift, scale = data.mean(0), data.std(0).clamp_min(1e-6)
        with forked_seed(generator):
            self.field_ = self._build(target, shift, scale)
        opt = torch.optim.Adam(self.field_.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.n_iter)
        batches = Minibatches(data, self.batch_size, generator)
        loss = self._loss_fn(batches, generator)
        return Objective(self.field_, opt, sched, loss, state={"batches": batches})

    # ---------------------------------------------------------------- sampling

    def trace_estimator(self, target: Target) -> str:
        """``"exact"`` when dim ≤ ``exact_trace_max_dim``, else ``"hutchinson"``."""
        return "exact" if target.dim <= self.exact_trace_max_dim else "hutchinson"

    def _sample_batch(self, target: Target, n: int, generator: torch.Generator):
        """x₁ (float64 ``(n, dim)``), log q(x₁) and E(x₁) (``(n,)`` each) for one batch."""
        x0 = self._base_noise(n, generator).to(self._dtype)
        divergence = exact_divergence
        if self.trace_estimator(target) == "hutchinson":
            probes = rademacher((self.n_probes, n, target.dim), generator, self._dtype)
            divergence = hutchinson_divergence(probes)
        x1, integral = integrate_with_divergence(self.field_, x0, self.n_ode_steps, divergence)
        log_q0 = gaussian_log_prob(x0.to(torch.float64), self.base_loc_, self.base_std_)
        x1 = x1.to(torch.float64)
        return x1, log_q0 - integral.to(torch.float64), target.energy(x1)

    def sample(
        self,
        target: Target,
        n: int,
        generator: torch.Generator,
        checkpoint: Checkpoint = NO_CHECKPOINT,
    ) -> SampleSet:
        """Draw ``n`` samples x₁ = φ₁(x₀) with log w = −E − log q (−inf where non-finite).

        Makes exactly ``n`` energy evaluations (of the returned samples).
        """
        if not hasattr(self, "field_"):
            raise RuntimeError("flow_matching: call fit or load_model_state before sample")
        _check(n >= 1, f"n must be positive, got {n}")
        sizes = batch_sizes(target, n, self.sample_batch_size)
        with torch.no_grad():
            parts = [self._sample_batch(target, m, generator) for m in sizes]
        x, log_q, energy = (torch.cat(p) for p in zip(*parts, strict=True))
        ok = torch.isfinite(energy) & torch.isfinite(log_q) & torch.isfinite(x).all(-1)
        log_w = torch.where(ok, -energy - log_q, torch.full_like(energy, -math.inf))
        attrs = {
            "trace_estimator": self.trace_estimator(target),
            "vector_field": "egnn" if self.uses_egnn(target) else "mlp",
            "n_nonfinite": int((~ok).sum()),
            "log_Z_hat": log_mean_exp(log_w),
            "log_Z_elbo": mean_log_weight(log_w),
            "ess_kish": normalized_kish_ess(log_w),
        }
        return SampleSet(x=x, energy=energy, log_weight=log_w, log_q=log_q, attrs=attrs)

    has_density = True

    def log_density(self, target: Target, x: torch.Tensor) -> torch.Tensor:
        """log q(x), float64 ``(n,)``: x is carried back to x₀ = φ₁⁻¹(x) by RK4 from
        t = 1 to 0 (``n_ode_steps``), jointly with ∫₁⁰ div v dt, and
        log q(x) = log N(x₀) + ∫₁⁰ div v dt. The divergence is the one sampling
        uses (exact, or Hutchinson with probes from a generator seeded 0, so the
        value is deterministic). The backward RK4 is not the exact inverse of the
        forward one: this is the density of the continuous flow to O(h⁴)."""
        if not hasattr(self, "field_"):
            raise RuntimeError("flow_matching: call fit or load_model_state first")
        generator = torch.Generator(device=x.device).manual_seed(0)
        batches = x.split(self.sample_batch_size)
        parts = [self._log_density_batch(target, b, generator) for b in batches]
        return torch.cat(parts) if parts else x.new_zeros(0, dtype=torch.float64)

    def _log_density_batch(self, target: Target, x: torch.Tensor, generator) -> torch.Tensor:
        n = x.shape[0]
        divergence = exact_divergence
        if self.trace_estimator(target) == "hutchinson":
            probes = rademacher((self.n_probes, n, target.dim), generator, self._dtype)
            divergence = hutchinson_divergence(probes)

        def f(t: float, y: tuple[torch.Tensor, torch.Tensor]):
            return divergence(self.field_, y[0], torch.full((n,), t, dtype=y[0].dtype))

        with torch.no_grad():
            xt = x.detach().to(self._dtype)
            x0, integral = rk4(f, (xt, xt.new_zeros(n)), self.n_ode_steps, t0=1.0, t1=0.0)
        log_q0 = gaussian_log_prob(x0.to(torch.float64), self.base_loc_, self.base_std_)
        return log_q0 + integral.to(torch.float64)

    # ---------------------------------------------------------------- state

    def model_state(self) -> dict[str, torch.Tensor]:
        """The field's tensors (``field.*``: weights, the MLP's standardization) and the
        base (``base.loc``, ``base.std``, float64 ``(dim,)``)."""
        if not hasattr(self, "field_"):
            raise RuntimeError("flow_matching: call fit or load_model_state first")
        state = {f"field.{k}": v.detach().clone() for k, v in self.field_.state_dict().items()}
        return state | {"base.loc": self.base_loc_.clone(), "base.std": self.base_std_.clone()}

    def load_model_state(self, target: Target, state: dict[str, torch.Tensor]) -> FlowMatching:
        """Rebuild the field from this config and ``target``, then load ``state``."""
        ones = torch.ones(target.dim, dtype=torch.float64)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the initial values are overwritten below
            field = self._build(target, 0 * ones, ones)
        own = {k.removeprefix("field."): v for k, v in state.items() if k.startswith("field.")}
        try:
            field.load_state_dict(own, strict=True)
            loc, std = (state[f"base.{k}"].to(torch.float64) for k in ("loc", "std"))
        except (RuntimeError, KeyError) as err:
            raise ValueError(
                f"flow_matching: model state does not match the config: {err}"
            ) from None
        _check(loc.shape == std.shape == (target.dim,), "the base does not match the target")
        self.field_, self.base_loc_, self.base_std_ = field, loc, std
        return self
