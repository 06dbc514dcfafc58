"""Iterated denoising energy matching (iDEM): a score network regressed onto a Monte
Carlo estimate of the noised target's score, with an outer loop that refills a
replay buffer by simulating the learned reverse SDE.

Akhound-Sadegh, Rector-Brooks, Bose, Mittal, Lemos, Liu, Sendera, Ravanbakhsh,
Gidel, Bengio, Malkin & Tong 2024, "Iterated denoising energy matching for
sampling from Boltzmann densities", ICML, arXiv:2402.06121.

Noise. The variance-exploding (VE) process dX_t = g(t) dW_t, t ∈ [0, 1], from
X_0 ∼ p ∝ exp(−E) has the marginals p_t = p ∗ N(0, σ_t² I). The geometric
schedule (:class:`GeometricVE`; Karras et al. 2022, arXiv:2206.00364, the
schedule of the paper's experiments) with σ_d = σ_max / σ_min has

    σ_t² = σ_min² (σ_d^{2t} − 1),        g(t)² = dσ_t²/dt = 2 σ_min² σ_d^{2t} log σ_d,

so σ_0 = 0 and σ_1² = σ_max² − σ_min² (σ_max is ``base_scale``, a length in the
target's units of x).

The Monte Carlo score (the paper's eq. 8–9, :func:`mc_score`). Since
p_t(x) ∝ E_{ε∼N(0,I)}[exp(−E(x + σ_t ε))], the noised score is

    ∇log p_t(x) = E_ε[exp(−E(x + σ_t ε)) ∇(−E)(x + σ_t ε)] / E_ε[exp(−E(x + σ_t ε))],

and with K draws ε_1..ε_K its self-normalized estimate is

    S_K(x, t) = Σ_i softmax_i(−E(x + σ_t ε_i)) ∇(−E)(x + σ_t ε_i),

consistent as K → ∞ with an O(1/K) bias (a ratio of means). Each of the K
points is one energy-and-gradient evaluation. The estimate's norm is clipped to
``score_clip`` (the paper's clipping of the estimated score, its App. C: the
public code clips the norm of S_K per sample; here the norm over all
coordinates, not per particle).

Inner loop (denoising energy matching). x_0 from the buffer (uniformly, with
replacement), t ∼ U(0, 1), x_t = x_0 + σ_t ε, and the loss

    L(θ) = mean_batch ‖s_θ(x_t, t) − clip(S_K(x_t, t))‖² / dim,

unweighted in t (λ(t) = 1, the weighting of the paper's DW-4 and LJ-13 runs).
The alternative λ(t) = σ_t² (its GMM run, where the public code adds 10⁻³ in
coordinates scaled by 1/50) was tried and dropped: with σ_min = 10⁻³ half of
the times have σ_t < 0.07 and get almost no weight, and on the 4-mode mixture
of tests/test_idem.py (K = 100, batch 32) the score stayed wrong at small t
(error 2–5 times its size), the modes came out too wide (sd 0.8–1.15 for 0.5)
and W2 was 2.05 after 1000 steps, 1.06 after 3000, against 0.44 after 3000
steps with λ = 1 (sd 0.48–0.55). One inner step costs ``batch_size × n_mc``
evaluations.

Outer loop. The buffer starts with ``n_refill`` draws of the prior
N(loc, σ_1² I) (loc the target's base location, or 0; the paper's
``init_from_prior``); every ``inner_steps`` inner steps, ``n_refill`` samples
of the learned reverse SDE are added to it (first in, first out, at most
``buffer_size``). The buffer holds positions only: a refill makes no target
evaluation (the public code computes the new samples' energies for its
prioritized buffer, which the uniform buffer here does not use).

The reverse SDE dX = −g(t)² s_θ(X, t) dt + g(t) dW̄, run from t = 1 to 0 from
X_1 ∼ N(loc, σ_1² I), is simulated by Euler–Maruyama on ``n_sde_steps`` equal
time steps h (:func:`reverse_sde`):

    x ← x + g(t_k)² s_θ(x, t_k) h + g(t_k) √h ξ,     t_k = 1 − k h.

The network (:class:`ScoreNet`, a departure from the paper's plain MLP, kept
for targets of different length scales) is preconditioned as in Karras et al.
2022 with a data scale of 1: s_θ(x, t) = c_t F_θ(c_t (x − loc), t) with
c_t = 1/√(1 + σ_t²), so that F's inputs and outputs stay of order one as σ_t
grows (the noised score is ≈ −(x − loc)/σ_t² at large σ_t). F is
:class:`~boltzbench.methods.diffusion_util.ControlNet` (no Langevin term) and
starts at zero.

Sampling simulates the reverse SDE for n samples and evaluates their energies:
``sample_cost(n) = n``. The samples are unweighted (there is no tractable
density without integrating the probability-flow ODE, not done here).

Costs and budget: ``fit`` makes n_iter · batch_size · n_mc evaluations, each
with its gradient; under an evaluation budget the budget decides ``n_iter``
(the whole inner steps that fit after the sampling reserve).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import (
    DTYPES,
    BudgetPlan,
    SampleSet,
    batch_sizes,
    shortfall_note,
    start_location,
)
from boltzbench.methods.diffusion_util import (
    ControlNet,
    load_module_state,
    module_state,
    time_embedding,
)
from boltzbench.methods.training import GradientMethod, Objective, Trainer, forked_seed
from boltzbench.targets.base import Target

__all__ = [
    "IDEM",
    "GeometricVE",
    "ScoreNet",
    "ReplayBuffer",
    "mc_score",
    "clip_norm",
    "reverse_sde",
]

#: (x ``(m, dim)`` float64) -> (E ``(m,)``, ∇E ``(m, dim)``), one evaluation per row
EnergyAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]


class GeometricVE(NamedTuple):
    """The geometric VE noise schedule (see the module docstring), lengths in units of x."""

    sigma_min: float
    sigma_max: float

    @property
    def log_ratio(self) -> float:
        """log σ_d = log(σ_max / σ_min)."""
        return math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: Tensor) -> Tensor:
        """σ_t = σ_min √(σ_d^{2t} − 1), same shape and dtype as ``t``."""
        return self.sigma_min * torch.sqrt(torch.expm1(2 * t * self.log_ratio))

    def g2(self, t: Tensor) -> Tensor:
        """g(t)² = 2 σ_min² σ_d^{2t} log σ_d, same shape and dtype as ``t``."""
        return 2 * self.sigma_min**2 * torch.exp(2 * t * self.log_ratio) * self.log_ratio

    @property
    def final_std(self) -> float:
        """σ_1 = √(σ_max² − σ_min²), the prior's standard deviation."""
        return math.sqrt(self.sigma_max**2 - self.sigma_min**2)


def clip_norm(v: Tensor, max_norm: float) -> tuple[Tensor, Tensor]:
    """Rows of ``v`` ``(n, dim)`` scaled down to Euclidean norm ≤ ``max_norm``; also
    which rows were clipped ``(n,)`` (bool)."""
    norm = v.norm(dim=-1, keepdim=True)
    clipped = norm > max_norm
    scale = torch.where(clipped, max_norm / norm.clamp_min(1e-300), torch.ones_like(norm))
    return v * scale, clipped[:, 0]


def mc_score(
    energy_and_grad: EnergyAndGrad,
    x: Tensor,
    sigma: Tensor,
    n_mc: int,
    generator: torch.Generator,
) -> Tensor:
    """S_K(x, t) = Σ_i softmax_i(−E(x + σ ε_i)) ∇(−E)(x + σ ε_i), K = ``n_mc`` (unclipped).

    ``x`` ``(n, dim)`` and ``sigma`` ``(n,)`` (σ_t of each row) in float64; returns
    float64 ``(n, dim)``. Makes K · n energy-and-gradient evaluations (one call).
    Points of non-finite energy get weight 0 (their non-finite gradients are
    zeroed first); a row with no finite energy among its K points gets score 0.
    """
    eps = torch.randn((n_mc, *x.shape), generator=generator, dtype=x.dtype)
    y = x[None] + sigma[None, :, None] * eps
    energy, grad = energy_and_grad(y.reshape(-1, x.shape[-1]))
    log_w = -energy.reshape(n_mc, x.shape[0]).to(x.dtype)
    log_w = torch.where(torch.isfinite(log_w), log_w, torch.full_like(log_w, -math.inf))
    w = torch.softmax(log_w, dim=0).nan_to_num(0.0)  # all −inf: NaN -> 0
    score = torch.nan_to_num(-grad.reshape(y.shape).to(x.dtype), nan=0.0, posinf=0.0, neginf=0.0)
    return (w[:, :, None] * score).sum(0)


class ScoreNet(nn.Module):
    """s_θ(x, t) = c_t F_θ(c_t (x − loc), t), c_t = 1/√(1 + σ_t²) (see the module docstring).

    Parameters
    ----------
    dim
        Dimension of x.
    hidden_features
        Hidden widths of F's MLP (:class:`~boltzbench.methods.diffusion_util.ControlNet`).
    loc
        The prior's centre ``(dim,)``, stored as a buffer.
    schedule
        The noise schedule (σ_t).
    """

    def __init__(self, dim: int, hidden_features: list[int], loc: Tensor, schedule: GeometricVE):
        super().__init__()
        self.net = ControlNet(dim, hidden_features, langevin=False)
        self.schedule = schedule
        self.register_buffer("loc", loc.clone())

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """The score at ``x`` ``(n, dim)`` and times ``t`` ``(n,)`` (the network's dtype)."""
        c = torch.rsqrt(1 + self.schedule.sigma(t) ** 2)[:, None]
        return c * self.net(c * (x - self.loc), time_embedding(t))


def reverse_sde(
    score: Callable[[Tensor, Tensor], Tensor],
    schedule: GeometricVE,
    x1: Tensor,
    n_steps: int,
    generator: torch.Generator,
) -> Tensor:
    """Euler–Maruyama of the reverse VE SDE from t = 1 (``x1`` ``(n, dim)``) to t = 0:
    x ← x + g(t_k)² s(x, t_k) h + g(t_k) √h ξ, t_k = 1 − k h, h = 1/``n_steps``;
    ``score(x, t)`` with t ``(n,)``. Returns x at t = 0 (the dtype of ``x1``)."""
    h = 1.0 / n_steps
    x = x1
    for k in range(n_steps):
        t = torch.full((x.shape[0],), 1.0 - k * h, dtype=x.dtype)
        g2 = schedule.g2(t)[:, None]
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = x + g2 * score(x, t) * h + torch.sqrt(g2 * h) * noise
    return x


class ReplayBuffer:
    """Positions ``(≤ size, dim)``, first in first out; drawn uniformly with replacement.

    Its contents are part of a training checkpoint (:meth:`state_dict`)."""

    def __init__(self, size: int, dim: int, dtype: torch.dtype):
        self.size, self.x = size, torch.empty(0, dim, dtype=dtype)

    def add(self, x: Tensor) -> None:
        """Append ``x`` ``(m, dim)`` and keep the newest ``size`` rows."""
        self.x = torch.cat([self.x, x.detach().to(self.x.dtype)])[-self.size :]

    def draw(self, m: int, generator: torch.Generator) -> Tensor:
        """``m`` rows drawn uniformly with replacement."""
        return self.x[torch.randint(self.x.shape[0], (m,), generator=generator)]

    def state_dict(self) -> dict[str, Any]:
        return {"x": self.x}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x = state["x"]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"idem: {message}")


class IDEM(GradientMethod):
    """Iterated denoising energy matching (Akhound-Sadegh et al., ICML 2024); unweighted samples.

    See the module docstring for the estimator, the loss and the two loops.

    Parameters
    ----------
    n_mc
        K, the Monte Carlo points per regression target (K energy-and-gradient
        evaluations each).
    base_scale
        σ_max of the noise schedule, in the target's units of x: the prior is
        N(loc, (σ_max² − σ_min²) I); it should cover the target's support.
    sigma_min
        σ_min of the geometric schedule (< ``base_scale``), in units of x.
    score_clip
        Maximum norm of the estimated score S_K (units of 1/x).
    hidden_features
        Hidden widths of the score MLP.
    n_iter
        Inner steps (Adam steps) in all.
    batch_size
        Regression targets per inner step.
    inner_steps
        Inner steps between two refills of the buffer (an outer iteration).
    n_refill
        Samples of the reverse SDE added at each refill (and prior draws at the start).
    buffer_size
        Most positions the buffer holds.
    n_sde_steps
        Euler–Maruyama steps of the reverse SDE (refills and sampling).
    lr
        Adam learning rate (constant).
    grad_clip
        Maximum global norm of the parameter gradient, or None.
    sample_batch_size
        Samples simulated at once.
    dtype
        ``"float32"`` or ``"float64"`` for the network and the SDE; the estimator,
        energies and returned samples are float64.

    Defaults: K = 64 (the paper's default is 100, 500 on its GMM), σ_max = 3,
    σ_min = 10⁻³, clip 100, (128, 128), 2000 inner steps of 64 targets (4096
    evaluations each: 8.2·10⁶ in all), a refill of 1000 every 50 steps, buffer
    10,000, 100 SDE steps, lr 10⁻³ (constant), gradient clip 10, float32.
    Under an evaluation budget the budget decides ``n_iter`` (:meth:`plan_budget`).
    """

    needs_data = False
    weighted = False
    budget_settings = ("n_iter",)
    divergence_advice = "Try a smaller lr, a smaller score_clip, or another base_scale."
    #: a tiny configuration for conformance tests (seconds to fit)
    fast_params: dict[str, Any] = {
        "n_mc": 4,
        "hidden_features": [16, 16],
        "n_iter": 10,
        "batch_size": 8,
        "inner_steps": 5,
        "n_refill": 32,
        "n_sde_steps": 8,
        "base_scale": 2.0,
    }

    def __init__(
        self,
        *,
        n_mc: int = 64,
        base_scale: float = 3.0,
        sigma_min: float = 1e-3,
        score_clip: float = 100.0,
        hidden_features: tuple[int, ...] | list[int] = (128, 128),
        n_iter: int = 2000,
        batch_size: int = 64,
        inner_steps: int = 50,
        n_refill: int = 1000,
        buffer_size: int = 10000,
        n_sde_steps: int = 100,
        lr: float = 1e-3,
        grad_clip: float | None = 10.0,
        sample_batch_size: int = 4096,
        dtype: str = "float32",
    ):
        sizes = (n_mc, n_iter, batch_size, inner_steps, n_refill, buffer_size, n_sde_steps)
        _check(min(sizes) >= 1 and sample_batch_size >= 1, "counts and sizes must be >= 1")
        _check(0 < sigma_min < base_scale, "need 0 < sigma_min < base_scale")
        _check(score_clip > 0 and lr > 0, "score_clip and lr must be > 0")
        _check(dtype in DTYPES, f"dtype must be one of {tuple(DTYPES)}")
        self.n_mc, self.base_scale, self.sigma_min = n_mc, base_scale, sigma_min
        self.score_clip = score_clip
        self.hidden_features = [int(h) for h in hidden_features]
        self.n_iter, self.batch_size, self.inner_steps = n_iter, batch_size, inner_steps
        self.n_refill, self.buffer_size, self.n_sde_steps = n_refill, buffer_size, n_sde_steps
        self.lr, self.grad_clip = lr, grad_clip
        self.sample_batch_size, self.dtype = sample_batch_size, dtype

    # ---------------------------------------------------------------- building

    @property
    def schedule(self) -> GeometricVE:
        return GeometricVE(self.sigma_min, self.base_scale)

    def _build(self, target: Target) -> ScoreNet:
        dtype = DTYPES[self.dtype]
        loc = start_location(target, dtype)
        return ScoreNet(target.dim, self.hidden_features, loc, self.schedule).to(dtype)

    def _simulate(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` samples of the learned reverse SDE, float64 ``(n, dim)`` (no evaluation)."""
        model, sched = self.model_, self.schedule
        noise = torch.randn(n, model.loc.shape[0], generator=generator, dtype=model.loc.dtype)
        with torch.no_grad():
            x = reverse_sde(
                model, sched, model.loc + sched.final_std * noise, self.n_sde_steps, generator
            )
        return x.to(torch.float64)

    # ---------------------------------------------------------------- training

    def _label(self) -> str:
        return "idem"

    def _targets(self, target: Target, buffer: ReplayBuffer, generator) -> tuple:
        """One batch of regression pairs: (x_t, t, clipped S_K, clipped?), float64."""
        x0 = buffer.draw(self.batch_size, generator)
        t = torch.rand(self.batch_size, generator=generator, dtype=torch.float64)
        sigma = self.schedule.sigma(t)
        eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        xt = x0 + sigma[:, None] * eps
        score = mc_score(target.energy_and_grad, xt, sigma, self.n_mc, generator)
        score, clipped = clip_norm(score, self.score_clip)
        return xt, t, score, clipped

    def _iteration(self, target: Target, buffer: ReplayBuffer, generator):
        """One inner step, preceded by a refill of the buffer every ``inner_steps``."""
        dtype = DTYPES[self.dtype]

        def step(trainer: Trainer) -> dict[str, float]:
            if trainer.it > 0 and trainer.it % self.inner_steps == 0:
                buffer.add(self._simulate(self.n_refill, generator))
            xt, t, score, clipped = self._targets(target, buffer, generator)
            pred = self.model_(xt.to(dtype), t.to(dtype))
            trainer.step((pred - score.to(dtype)).pow(2).mean())
            return {
                "score_norm": float(score.norm(dim=-1).mean()),
                "clipped": float(clipped.double().mean()),
            }

        return step

    def _objective(self, target: Target, data: Tensor | None, generator) -> Objective:
        """A zero network (seeded from ``generator``), Adam at a constant ``lr``, the buffer
        filled with ``n_refill`` prior draws; training stops before the first inner step
        the budget cannot pay for. History: ``loss``, ``score_norm`` (mean ‖S_K‖ after
        clipping) and ``clipped`` (the fraction of targets clipped)."""
        with forked_seed(generator):
            self.model_ = self._build(target)
        buffer = ReplayBuffer(self.buffer_size, target.dim, torch.float64)
        noise = torch.randn(self.n_refill, target.dim, generator=generator, dtype=torch.float64)
        buffer.add(start_location(target, torch.float64) + self.schedule.final_std * noise)
        opt = torch.optim.Adam(self.model_.parameters(), lr=self.lr)
        return Objective(
            self.model_,
            opt,
            iteration=self._iteration(target, buffer, generator),
            state={"buffer": buffer},
            records=("score_norm", "clipped"),
            target=target,
            cost=self.step_cost,
        )

    @property
    def step_cost(self) -> int:
        """Evaluations of one inner step: batch_size · n_mc."""
        return self.batch_size * self.n_mc

    # ---------------------------------------------------------------- sampling

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("idem: call fit or load_model_state before sample")

    def sample(
        self,
        target: Target,
        n: int,
        generator: torch.Generator,
        checkpoint: Checkpoint = NO_CHECKPOINT,
    ) -> SampleSet:
        """Simulate the reverse SDE for ``n`` samples and evaluate their energies (n
        evaluations; fewer samples when the budget pays for fewer)."""
        self._check_fitted()
        _check(n >= 1, f"n must be positive, got {n}")
        xs, energies = [], []
        for m in batch_sizes(target, n, self.sample_batch_size):
            x = self._simulate(m, generator)
            with torch.no_grad():
                energies.append(target.energy(x).to(torch.float64))
            xs.append(x)
        x, energy = torch.cat(xs), torch.cat(energies)
        attrs = {
            "n_sde_steps": self.n_sde_steps,
            "n_nonfinite": int((~torch.isfinite(energy)).sum()),
        }
        return SampleSet(x=x, energy=energy, attrs=attrs)

    def sample_cost(self, n: int) -> int:
        """One energy evaluation per sample (the SDE itself makes none)."""
        return n

    def plan_budget(self, budget: int, n_samples: int) -> BudgetPlan:
        """A copy with ``n_iter`` = ⌊(budget − n_samples) / (batch_size · n_mc)⌋, the whole
        inner steps after the sampling reserve; ValueError when not even one fits."""
        n_iter = (budget - self.sample_cost(n_samples)) // self.step_cost
        if n_iter < 1:
            raise ValueError(
                f"idem: a budget of {budget} evaluations cannot pay for sampling {n_samples} "
                f"({self.sample_cost(n_samples)}) plus one inner step of batch_size · n_mc = "
                f"{self.step_cost}; raise the budget or lower batch_size or n_mc"
            )
        planned = n_iter * self.step_cost + self.sample_cost(n_samples)
        why = f"an inner step costs {self.step_cost} evaluations; lower batch_size or n_mc"
        copy = type(self)(**{**self.get_params(), "n_iter": int(n_iter)})
        note = shortfall_note(planned, budget, why)
        return BudgetPlan(copy, {"n_iter": int(n_iter)}, int(planned), note)

    # ---------------------------------------------------------------- state

    def model_state(self) -> dict[str, Tensor]:
        """The score network's tensors (weights and ``loc``), keys ``model.*``."""
        self._check_fitted()
        return module_state(self.model_, "model")

    def load_model_state(self, target: Target, state: dict[str, Tensor]) -> IDEM:
        """Rebuild the network from this config and ``target``, then load ``state``."""
        self.model_ = load_module_state(lambda: self._build(target), state, "model", "idem")
        return self
