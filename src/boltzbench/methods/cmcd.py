"""Controlled Monte Carlo Diffusions (CMCD): annealed Langevin dynamics with a learned control.

Vargas, Padhy, Blessing & Nüsken 2024, "Transport meets variational inference:
controlled Monte Carlo diffusions", ICLR, arXiv:2307.01050.

A path of densities π_k ∝ π₀^{1−β_k} p̃^{β_k}, k = 0..K (K = ``n_steps``), joins the
base π₀ = N(loc, σ₀² I) (σ₀ = ``base_scale``, loc the target's base location) to
the target p̃ = exp(−E). With the step ε = h²/2 (h = ``step_size``, the standard
deviation of a step's noise, a length in the target's units of x), the annealed score
s_k(x) = (1 − β_k) ∇log π₀(x) + β_k ∇log p̃(x) and the learned control
u_k(x) = f_θ(x, t_k) (t_k = k/K; the network of :mod:`~boltzbench.methods.diffusion_util`),
the forward and backward kernels are the Euler–Maruyama steps of the paper's
forward and backward SDEs (its Sec. 3 and the discretization of its App.):

    F_k(x_{k+1} | x_k)   = N(x_{k+1}; x_k + ε (s_k(x_k) + u_k(x_k)), 2ε I),
    B_{k+1}(x_k | x_{k+1}) = N(x_k; x_{k+1} + ε (s_{k+1}(x_{k+1}) − u_{k+1}(x_{k+1})), 2ε I).

Without control the forward chain is unadjusted Langevin on the annealing path
and B its time reversal (MCD/AIS without Metropolis); the control corrects the
lag of the chain behind π_k. X_0 ∼ π₀, and the log Radon–Nikodym derivative of the
backward path measure (started at p̃ at step K) with respect to the forward one is

    log w = −E(X_K) − log π₀(X_0)
            + Σ_{k=0}^{K−1} [log B_{k+1}(X_k | X_{k+1}) − log F_k(X_{k+1} | X_k)],

so E_F[w] = Z for any control, any ε, any schedule, any K: there is no
discretization bias in Ẑ (the kernels are proper Gaussian densities whatever
their means). The target's score is clipped to ±``score_clip`` (a deterministic
function of x, so this keeps the weights exact).

Losses (``loss``):

``"kl"``
    the reverse KL of the path measures, KL(F ‖ B) = −E_F[log w] + log Z, by
    reparameterization through the chain (the paper's CMCD-KL). ∇log p̃(X_k)
    and E(X_K) come from detached ``energy_and_grad`` calls: the terminal energy
    enters through the straight-through surrogate E(X_K) + ∇E(X_K)·(X_K − stop(X_K)),
    which has the exact first derivative, but the score's own derivative (the
    Hessian of E) is left out, so the gradient is not the exact pathwise one.
``"log_variance"``
    Var_batch[log w_θ] on paths simulated with the current control detached
    (the paper's CMCD-LV, after Richter & Berner 2023, arXiv:2307.01198): no
    derivative through the chain, and no Hessian needed.

β schedule (``schedule``): ``"linear"`` (β_k = k/K, fixed) or ``"learned"``
(β_k = Σ_{j<k} softplus(a_j) / Σ_j softplus(a_j), with a learned a ∈ R^K
starting at 0, i.e. at the linear schedule; the paper learns the schedule in
this monotone way). The step ε is fixed here (the paper also learns it).

Costs, all through the target passed: a path takes K + 1 energy-and-gradient
evaluations (one at every X_k, X_0 included; the one at X_K also gives E(X_K)).
A training iteration costs ``batch_size × (n_steps + 1)``; sampling n paths
``n × (n_steps + 1)``. Under an evaluation budget the budget decides ``n_iter``
(whole training batches after the sampling reserve, as for ``diffusion``).

Sampling returns x = X_K with log w; ``attrs`` holds ``log_Z_hat`` = log mean
exp(log w) and ``log_Z_elbo`` = mean log w (≤ log_Z_hat).

Sequential CMCD (SCLD, :mod:`boltzbench.methods.scld`) runs the K steps as
sub-trajectories with resampling in between: :meth:`Chain.segment` runs steps
a → b from a cached point, and a whole CMCD path is the segment 0 → K.
At a boundary b, adding log π̃_b(X_b) = (1 − β_b) log π₀ − β_b E
(:meth:`Chain.log_annealed`) and subtracting it at the start of the next
segment gives the incremental weights that resampling needs.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from boltzbench.core import DTYPES, start_location
from boltzbench.estimators import normalized_kish_ess
from boltzbench.methods.diffusion_util import (
    ControlNet,
    clipped_score,
    gaussian_log_density,
    masked_log_weights,
    time_embedding,
)
from boltzbench.methods.paths import PathSampler
from boltzbench.methods.training import StepLoss
from boltzbench.targets.base import Target

__all__ = ["CMCD", "CMCDModel", "Chain", "Point"]

LOSSES = ("kl", "log_variance")
SCHEDULES = ("linear", "learned")


def _choice(method: str, name: str, value: Any, valid) -> None:
    if value not in valid:
        raise ValueError(f"{method}: unknown {name} {value!r}; valid choices: {', '.join(valid)}")


class CMCDModel(nn.Module):
    """What CMCD trains: the control network f_θ(x, t) and, with a learned
    schedule, the logits a ``(K,)`` of the β increments.

    Parameters
    ----------
    dim
        Dimension of x.
    hidden_features
        Hidden widths of the control MLP.
    n_steps
        K, the number of steps.
    langevin
        Give the network the target's score: f = NN₁(x, t) + NN₂(t) ⊙ ∇log p̃(x)
        (free here: the chain evaluates the score anyway).
    learn_schedule
        Learn β (else β_k = k/K).
    """

    def __init__(
        self,
        dim: int,
        hidden_features: list[int],
        n_steps: int,
        langevin: bool,
        learn_schedule: bool,
    ):
        super().__init__()
        self.net = ControlNet(dim, hidden_features, langevin)
        self.n_steps = n_steps
        self.logits = nn.Parameter(torch.zeros(n_steps)) if learn_schedule else None

    def betas(self) -> Tensor:
        """β_0 = 0 < β_1 < … < β_K = 1, shape ``(K + 1,)``."""
        if self.logits is None:
            return torch.linspace(0.0, 1.0, self.n_steps + 1, dtype=torch.float64)
        inc = F.softplus(self.logits)
        cum = torch.cat([inc.new_zeros(1), torch.cumsum(inc, 0)])
        return cum / cum[-1]


class Point(NamedTuple):
    """One state of the chain: x ``(n, dim)``, the target's clipped score ``(n, dim)``
    (detached), E(x) ``(n,)`` float64 (detached) and its raw gradient."""

    x: Tensor
    score: Tensor
    energy: Tensor
    grad: Tensor


class Chain:
    """CMCD bound to a target: base, step, schedule, time embeddings and the model."""

    def __init__(self, model: CMCDModel, loc: Tensor, base_scale: float, eps: float, clip: float):
        self.model, self.dtype = model, next(model.parameters()).dtype
        self.loc, self.base_scale, self.eps, self.clip = loc.to(self.dtype), base_scale, eps, clip
        times = torch.arange(model.n_steps + 1, dtype=torch.float64) / model.n_steps
        self.emb = time_embedding(times).to(self.dtype)

    def point(self, target: Target, x: Tensor) -> Point:
        """Evaluate E and ∇E at ``x`` (one energy-and-gradient evaluation per row)."""
        energy, grad = target.energy_and_grad(x.detach().to(torch.float64))
        return Point(x, clipped_score(grad, self.clip, self.dtype), energy, grad)

    def drift(self, k, x: Tensor, score: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
        """(s_k(x), u_k(x)): the annealed score and the control at step(s) ``k``.

        ``k`` an int (x ``(n, dim)``) or a ``(m,)`` index tensor (x ``(m, n, dim)``,
        ``beta`` ``(m,)``): the network sees every row with its own time."""
        beta = beta.to(self.dtype)
        base = -(x - self.loc) / self.base_scale**2
        if isinstance(k, int):
            s = (1 - beta) * base + beta * score
            u = self.model.net(x, self.emb[k].expand(x.shape[0], -1), score)
            return s, u
        m, n, dim = x.shape
        s = (1 - beta)[:, None, None] * base + beta[:, None, None] * score
        emb = self.emb[k][:, None, :].expand(m, n, -1).reshape(m * n, -1)
        u = self.model.net(x.reshape(m * n, dim), emb, score.reshape(m * n, dim))
        return s, u.reshape(m, n, dim)

    def increment(self, x, x_new, s, u, s_new, u_new) -> Tensor:
        """log B_{k+1}(x | x_new) − log F_k(x_new | x) (the normalizers cancel), float64,
        summed over the last axis."""
        fwd = x_new - x - self.eps * (s + u)
        bwd = x - x_new - self.eps * (s_new - u_new)
        return ((fwd**2 - bwd**2).sum(-1) / (4 * self.eps)).to(torch.float64)

    def initial(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """X_0 ∼ N(loc, σ₀² I) ``(n, dim)`` and log π₀(X_0) ``(n,)``."""
        eps = torch.randn(n, self.loc.shape[0], generator=generator, dtype=self.dtype)
        x = self.loc + self.base_scale * eps
        return x, gaussian_log_density(x, self.loc, self.base_scale)

    def rollout(self, target: Target, n: int, generator, keep: bool = False):
        """Simulate ``n`` paths (differentiable unless under no_grad).

        Returns (the last point, log w ``(n,)`` without the terminal −E(X_K), and,
        with ``keep``, the stacked states and scores ``(K + 1, n, dim)``)."""
        betas = self.model.betas()
        x, log_base = self.initial(n, generator)
        start = self.point(target, x)
        return self.segment(target, start, 0, self.model.n_steps, betas, -log_base, generator, keep)

    def segment(
        self,
        target: Target,
        start: Point,
        a: int,
        b: int,
        betas: Tensor,
        log_w: Tensor,
        generator,
        keep: bool = False,
    ):
        """Steps a → b (0 ≤ a < b ≤ K) of the chain from ``start``, a point at step a.

        ``betas`` is the whole schedule ``(K + 1,)``; ``log_w`` ``(n,)`` (or a scalar)
        is what the increments log B_{k+1} − log F_k, k = a..b−1, are added to. Costs
        b − a evaluations per row (the start's are cached in ``start``). Returns (the
        point at step b, the sum, and, with ``keep``, the stacked states and scores
        ``(b − a + 1, n, dim)``, else None). An SCLD sub-trajectory is one segment."""
        x, here = start.x, start
        s, u = self.drift(a, x, start.score, betas[a])
        kept = [(x, start.score)] if keep else []
        for k in range(a, b):
            noise = torch.randn(x.shape, generator=generator, dtype=self.dtype)
            x_new = x + self.eps * (s + u) + math.sqrt(2 * self.eps) * noise
            here = self.point(target, x_new)
            s_new, u_new = self.drift(k + 1, x_new, here.score, betas[k + 1])
            log_w = log_w + self.increment(x, x_new, s, u, s_new, u_new)
            x, s, u = x_new, s_new, u_new
            if keep:
                kept.append((x, here.score))
        if not keep:
            return here, log_w, None
        states, scores = (torch.stack(t) for t in zip(*kept, strict=True))
        return here, log_w, (states, scores)

    def backward(self, target: Target, x: Tensor, generator) -> Tensor:
        """log q̂(x) = log π₀(X_0) − Σ_k [log B_{k+1} − log F_k] along one backward path
        X_K = x, X_k ∼ B_{k+1}(· | X_{k+1}), float64 ``(n,)``; E[q̂(x)] = q(x), the density
        of X_K. Costs K evaluations per row (at X_K..X_1)."""
        betas = self.model.betas()
        k = self.model.n_steps
        x_new = x.to(self.dtype)
        here = self.point(target, x_new)
        s_new, u_new = self.drift(k, x_new, here.score, betas[k])
        total = torch.zeros(x.shape[0], dtype=torch.float64)
        for k in reversed(range(self.model.n_steps)):
            noise = torch.randn(x_new.shape, generator=generator, dtype=self.dtype)
            x_old = x_new + self.eps * (s_new - u_new) + math.sqrt(2 * self.eps) * noise
            score = self.point(target, x_old).score if k > 0 else torch.zeros_like(x_old)
            s, u = self.drift(k, x_old, score, betas[k])
            total = total + self.increment(x_old, x_new, s, u, s_new, u_new)
            x_new, s_new, u_new = x_old, s, u
        return gaussian_log_density(x_new, self.loc, self.base_scale) - total

    def path_increments(self, states: Tensor, scores: Tensor, a: int, betas: Tensor) -> Tensor:
        """Σ_k [log B_{k+1} − log F_k] of kept states ``(L + 1, n, dim)`` of steps a..a+L
        under the current model (differentiable in its parameters and ``betas``), ``(n,)``."""
        steps = torch.arange(a, a + states.shape[0])
        s, u = self.drift(steps, states, scores, betas[steps])
        inc = self.increment(states[:-1], states[1:], s[:-1], u[:-1], s[1:], u[1:])
        return inc.sum(0)

    def path_log_weight(self, states: Tensor, scores: Tensor, end: Point) -> Tensor:
        """log w_θ of kept paths ``(K + 1, n, dim)`` under the current model, ``(n,)``."""
        betas = self.model.betas()
        log_base = gaussian_log_density(states[0], self.loc, self.base_scale)
        return -end.energy - log_base + self.path_increments(states, scores, 0, betas)

    def log_annealed(self, here: Point, beta: Tensor) -> Tensor:
        """log π̃_β(x) = (1 − β) log π₀(x) − β E(x) at ``here`` (float64 ``(n,)``;
        log π₀ alone at β = 0, so that an infinite E does no harm there)."""
        log_base = gaussian_log_density(here.x, self.loc, self.base_scale)
        if float(beta) == 0:
            return log_base
        beta = beta.to(torch.float64)
        return (1 - beta) * log_base - beta * here.energy


def _terminal_energy(end: Point) -> Tensor:
    """E(X_K) with the gradient ∇E(X_K) along X_K (straight-through), float64 ``(n,)``."""
    x = end.x.to(torch.float64)
    return end.energy + (end.grad * (x - x.detach())).sum(-1)


class CMCD(PathSampler):
    """Controlled Monte Carlo Diffusion, trained on the energy; weighted samples.

    Parameters
    ----------
    loss
        ``"kl"`` or ``"log_variance"`` (see the module docstring).
    n_steps
        K, the Langevin steps (K + 1 energy-and-gradient evaluations per path).
    step_size
        h, the standard deviation of each step's noise, in the target's units of x:
        the Langevin step is ε = h²/2 (stable for ε below about the smallest
        variance of π₀ and the target's modes).
    base_scale
        σ₀ of the base π₀ = N(loc, σ₀² I), in the target's units of x.
    schedule
        ``"linear"`` (fixed β_k = k/K) or ``"learned"`` (monotone, starts linear).
    hidden_features
        Hidden widths of the control MLP.
    langevin_preconditioning
        Feed the target's score to the network (f = NN₁(x, t) + NN₂(t) ⊙ ∇log p̃).
    n_iter, batch_size, lr
        Adam steps, paths per step, learning rate (constant).
    score_clip
        Elementwise clip of ∇log p̃.
    grad_clip
        Maximum global norm of the parameter gradient, or None.
    sample_batch_size
        Paths per batch when sampling.
    dtype
        ``"float32"`` or ``"float64"`` for the network and the chain; energies,
        log weights and the returned samples are float64.

    Defaults: log_variance, 100 steps, h = 0.1 (ε = 0.005), σ₀ = 1, linear schedule,
    (128, 128), Langevin-preconditioned network, 2000 steps of 256 paths,
    lr 1e-3, score clip 100, gradient clip 10, float32.
    """

    name = "cmcd"
    divergence_advice = "Try a smaller lr or step_size, a grad_clip, or another base_scale."
    #: a tiny configuration for conformance tests (seconds to fit)
    fast_params: dict[str, Any] = {
        "n_steps": 8,
        "hidden_features": [16, 16],
        "n_iter": 10,
        "batch_size": 32,
        "step_size": 0.3,
    }

    def __init__(
        self,
        *,
        loss: str = "log_variance",
        n_steps: int = 100,
        step_size: float = 0.1,
        base_scale: float = 1.0,
        schedule: str = "linear",
        hidden_features: tuple[int, ...] | list[int] = (128, 128),
        langevin_preconditioning: bool = True,
        n_iter: int = 2000,
        batch_size: int = 256,
        lr: float = 1e-3,
        score_clip: float = 100.0,
        grad_clip: float | None = 10.0,
        sample_batch_size: int = 4096,
        dtype: str = "float32",
    ):
        name = self.name
        _choice(name, "loss", loss, LOSSES)
        _choice(name, "schedule", schedule, SCHEDULES)
        _choice(name, "dtype", dtype, DTYPES)
        if min(n_steps, n_iter, batch_size, sample_batch_size) < 1:
            raise ValueError(f"{name}: n_steps, n_iter and the batch sizes must be >= 1")
        if not (step_size > 0 and base_scale > 0 and lr > 0 and score_clip > 0):
            raise ValueError(f"{name}: step_size, base_scale, lr and score_clip must be > 0")
        if loss == "log_variance" and batch_size < 2:
            raise ValueError(f"{name}: the log-variance loss needs batch_size >= 2")
        self.loss, self.n_steps, self.step_size, self.base_scale = (
            loss,
            n_steps,
            step_size,
            base_scale,
        )
        self.schedule = schedule
        self.hidden_features = [int(h) for h in hidden_features]
        self.langevin_preconditioning = bool(langevin_preconditioning)
        self.n_iter, self.batch_size, self.lr = n_iter, batch_size, lr
        self.score_clip, self.grad_clip = score_clip, grad_clip
        self.sample_batch_size, self.dtype = sample_batch_size, dtype

    # ---------------------------------------------------------------- building

    def _build(self, dim: int) -> CMCDModel:
        model = CMCDModel(
            dim,
            self.hidden_features,
            self.n_steps,
            self.langevin_preconditioning,
            self.schedule == "learned",
        )
        return model.to(DTYPES[self.dtype])

    def _simulator(self, target: Target) -> Chain:
        loc = start_location(target, DTYPES[self.dtype])
        eps = 0.5 * self.step_size**2
        return Chain(self.model_, loc, self.base_scale, eps, self.score_clip)

    # ---------------------------------------------------------------- losses

    def _kl_loss(self, chain: Chain, target: Target, generator) -> tuple[Tensor, Tensor]:
        """(loss, log w): loss = −mean log w, reparameterized through the chain."""
        end, log_w, _ = chain.rollout(target, self.batch_size, generator)
        log_w = log_w - _terminal_energy(end)
        return -log_w.mean(), log_w.detach()

    def _log_variance_loss(self, chain: Chain, target: Target, generator) -> tuple[Tensor, Tensor]:
        """(loss, log w): loss = Var_batch[log w_θ] on detached paths."""
        with torch.no_grad():
            end, _, (states, scores) = chain.rollout(target, self.batch_size, generator, keep=True)
        log_w = chain.path_log_weight(states, scores, end)
        return log_w.var(), log_w.detach()

    # ---------------------------------------------------------------- training

    def _label(self) -> str:
        return f"cmcd ({self.loss})"

    def _step_loss(self, chain: Chain, target: Target, generator) -> StepLoss:
        loss_fn = self._kl_loss if self.loss == "kl" else self._log_variance_loss

        def step() -> tuple[Tensor, dict[str, float]]:
            loss, log_w = loss_fn(chain, target, generator)
            return loss, {"log_Z_elbo": float(log_w.mean()), "ess": normalized_kish_ess(log_w)}

        return step

    # ---------------------------------------------------------------- sampling

    @torch.no_grad()
    def _sample_batch(self, chain: Chain, target: Target, n: int, generator) -> tuple:
        """x (float64 ``(n, dim)``), E(x) and log w (``(n,)``) for one batch of paths."""
        end, log_w, _ = chain.rollout(target, n, generator)
        x = end.x.to(torch.float64)
        log_w = log_w - end.energy
        return x, end.energy, masked_log_weights(log_w, x, end.energy)

    def _backward_log_density(self, chain: Chain, target: Target, x: Tensor, generator) -> Tensor:
        """log q̂(x) along one backward path per row (:meth:`Chain.backward`); n_steps
        evaluations per row."""
        return chain.backward(target, x, generator)

    def sample_cost(self, n: int) -> int:
        """n_steps + 1 energy-and-gradient evaluations per path."""
        return n * (self.n_steps + 1)

    def _build_model(self, target: Target) -> CMCDModel:
        return self._build(target.dim)
