"""Diffusion samplers trained from the energy: PIS and DDS, one method.

A neural drift f_θ steers a discretized diffusion from a simple initial law to
the target p ∝ p̃ = exp(−E) in ``n_steps`` steps (the chains, their reference
processes and the path weights are in :mod:`boltzbench.methods.diffusion_util`):

``kind="pis"`` — Path Integral Sampler (Zhang & Chen 2022)
    dX = f_θ(X, t) dt + σ dW on [0, 1] from the Dirac at the target's base
    location; Euler–Maruyama. The reference (f = 0) is Brownian motion, whose
    terminal marginal N(loc, σ² I) stands in for the prior.
``kind="dds"`` — Denoising Diffusion Sampler (Vargas, Grathwohl & Doucet 2023)
    the learned reversal of an Ornstein–Uhlenbeck noising process that contracts
    towards loc (invariant law N(loc, σ² I)), started from X_0 ∼ N(loc, σ² I),
    discretized with DDS's exponential integrator (exact OU transitions) on a
    cosine noise schedule; the reference chain stays N(loc, σ² I) at every step.

``loc`` is ``target.base_location()`` (the origin when it has none).

Both weigh the terminal sample X_N by the path-space importance weight
(eq. 2 of the util module) log w = −E(X_N) − log N(X_N; loc, σ² I) − log dP^u/dR,
for which mean exp(log w) is an unbiased estimate of Z for any control: the
discretized reference chain's terminal marginal is exact.

Losses (``loss``):

``"kl"``
    the reverse KL between path measures, KL(P^u ‖ Q*) = −ELBO + log Z, by
    reparameterization through the solver (Zhang & Chen 2022, eq. 11; Vargas et
    al. 2023, eq. 18): minimize mean[Σ_k ½|u_k|² + E(X_N) + log N(X_N; loc, σ²I)].
    The zero-mean term Σ u_k · ε_k of −log w is left out of the loss (it only adds
    variance to the gradient) but kept in the weights.
``"log_variance"``
    the variance over the batch of log w_u(X) = −E − log N − log dP^u/dR on
    trajectories simulated with the current control *detached* (the behaviour
    process v = stop-grad(u)), eq. (1) of the util module; its gradient needs
    no derivative through the SDE solver (Richter & Berner 2023, "Improved
    sampling via learned diffusions", ICLR, arXiv:2307.01198, Sec. 3).

``langevin_preconditioning``: f_θ = NN₁(x, t) + NN₂(t) ⊙ ∇log p̃(x) (PIS-Grad).
The score enters as a *detached input*: the KL gradient holds ∇log p̃(X_k) fixed
(no second derivatives of E, as in the PIS and DDS implementations), so it is
not the exact pathwise gradient of the KL; the log-variance loss is unaffected.
The score is clipped elementwise to ±``score_clip`` (non-finite entries → 0),
as PIS does.

Evaluation budget (:meth:`DiffusionSampler.plan_budget`): the budget decides
``n_iter`` only: as many whole training batches as fit in the budget less the
sampling reserve ``sample_cost(n_samples)``; the configured ``n_iter`` is then
ignored. Under the cap itself training stops before the first batch of paths the
budget cannot pay for, and sampling simulates as many paths as the rest allows.

Costs, all through the target passed (so a CountingTarget counts them): each
trajectory takes one energy evaluation at X_N (and its gradient for the KL
loss), plus one energy-and-gradient evaluation per step with
``langevin_preconditioning``. Training makes ``n_iter × batch_size``
trajectories; sampling ``n``.

Forward metrics (:meth:`DiffusionSampler.path_log_density`): at a reference
sample x, a path drawn backwards from the reference chain conditioned on
X_N = x (:func:`~boltzbench.methods.diffusion_util.reference_bridge`) gives
log q̂(x) = log N(x; loc, σ_N² I) + log dP^u/dR (path), with E[q̂(x)] = q(x):
the EUBO the pipeline reports for this sampler is the path EUBO, an upper
bound on log Z (Sendera et al. 2024, "On diffusion models for amortized
inference", NeurIPS, arXiv:2402.05098, Sec. 4).

Sampling returns x = X_N and log w; ``attrs`` holds ``log_Z_hat`` = log mean
exp(log w) (the importance-weighted estimate log Ẑ_RW, the one the pipeline's
Δlog Z reads) and ``log_Z_elbo`` = mean log w (the ELBO, a stochastic lower
bound: log_Z_elbo ≤ log_Z_hat for every sample set by Jensen).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from boltzbench.core import DTYPES, start_location
from boltzbench.estimators import normalized_kish_ess
from boltzbench.methods.diffusion_util import (
    KINDS,
    ControlNet,
    Scheme,
    clipped_score,
    dds_scheme,
    gaussian_log_density,
    masked_log_weights,
    pis_scheme,
    reference_bridge,
    time_embedding,
)
from boltzbench.methods.paths import PathSampler
from boltzbench.methods.training import StepLoss
from boltzbench.targets.base import Target

__all__ = ["DiffusionSampler"]

LOSSES = ("kl", "log_variance")


def _choice(name: str, value: Any, valid) -> None:
    if value not in valid:
        raise ValueError(f"diffusion: unknown {name} {value!r}; valid choices: {', '.join(valid)}")


class _Rollout(NamedTuple):
    """One simulated batch: X_N ``(n, dim)``, Σ½|u|² and Σu·ε ``(n,)`` (float64), and,
    when kept, the states X_0..X_{N−1}, scores, controls and noises ``(N, n, dim)``."""

    x: Tensor
    running: Tensor
    martingale: Tensor
    states: Tensor | None = None
    scores: Tensor | None = None
    controls: Tensor | None = None
    noises: Tensor | None = None


class _Chain:
    """A sampler bound to a target: the scheme's coefficients, the time embeddings,
    the base location and the network, all in the working dtype."""

    def __init__(self, net: ControlNet, scheme: Scheme, loc: Tensor, score_clip: float):
        dtype = next(net.parameters()).dtype
        self.net, self.scheme, self.score_clip, self.dtype = net, scheme, score_clip, dtype
        self.decay, self.noise = scheme.decay.to(dtype), scheme.noise.to(dtype)
        self.gain = (scheme.drift / scheme.noise).to(dtype)  # u = gain · f
        self.emb = time_embedding(scheme.times).to(dtype)
        self.loc = loc.to(dtype)
        # (1 − a_k) loc, shape (N, dim): the reference chain contracts towards loc, not 0
        self.pull = (1 - scheme.decay)[:, None].to(dtype) * self.loc

    def score(self, target: Target, x: Tensor) -> Tensor | None:
        """Clipped ∇log p̃(x) = −∇E(x) (one energy-and-gradient evaluation per row), or None."""
        if not self.net.langevin:
            return None
        _, grad = target.energy_and_grad(x.detach().to(torch.float64))
        return clipped_score(grad, self.score_clip, self.dtype)

    def control(self, k: int, x: Tensor, score: Tensor | None) -> Tensor:
        """u_k = (c_k / s_k) f_θ(x, t_k), shape ``(n, dim)``."""
        return self.gain[k] * self.net(x, self.emb[k].expand(x.shape[0], -1), score)

    def initial(self, n: int, generator: torch.Generator) -> Tensor:
        """X_0: ``loc`` (PIS) or loc + σ ε (DDS), shape ``(n, dim)``."""
        x = self.loc.expand(n, -1).clone()
        if self.scheme.init_std > 0:
            eps = torch.randn(n, x.shape[1], generator=generator, dtype=self.dtype)
            x = x + self.scheme.init_std * eps
        return x

    def rollout(self, target: Target, n: int, generator: torch.Generator, keep=False) -> _Rollout:
        """Simulate ``n`` paths X_{k+1} = a_k X_k + (1 − a_k) loc + s_k (u_k + ε_k)
        (differentiable unless called under no_grad); ``keep`` stores the path for the
        LV loss. The states are the target's x throughout: the network, the score and
        E see X_k itself, and the kept states are those same X_k."""
        x = self.initial(n, generator)
        running = torch.zeros(n, dtype=torch.float64)
        martingale = torch.zeros(n, dtype=torch.float64)
        kept: list[tuple] = []
        for k in range(self.scheme.n_steps):
            score = self.score(target, x)
            u = self.control(k, x, score)
            eps = torch.randn(x.shape, generator=generator, dtype=self.dtype)
            if keep:
                kept.append((x, score, u, eps))
            running = running + 0.5 * (u**2).sum(-1).to(torch.float64)
            martingale = martingale + (u * eps).sum(-1).to(torch.float64)
            x = self.decay[k] * x + self.pull[k] + self.noise[k] * (u + eps)
        if not keep:
            return _Rollout(x, running, martingale)
        states, scores, controls, noises = zip(*kept, strict=True)
        scores = None if scores[0] is None else torch.stack(scores)
        stack = torch.stack
        return _Rollout(
            x, running, martingale, stack(states), scores, stack(controls), stack(noises)
        )

    def log_rnd(self, path: _Rollout) -> Tensor:
        """log dP^u/dR along a kept path driven by the controls ``path.controls`` (v):
        Σ_k [u_k · (v_k + ε_k) − ½|u_k|²] with u the current (differentiable) control, ``(n,)``."""
        n_steps, n, dim = path.states.shape
        emb = self.emb[:, None, :].expand(n_steps, n, -1).reshape(n_steps * n, -1)
        scores = None if path.scores is None else path.scores.reshape(n_steps * n, dim)
        f = self.net(path.states.reshape(n_steps * n, dim), emb, scores)
        u = self.gain[:, None, None] * f.reshape(n_steps, n, dim)
        terms = (u * (path.controls + path.noises)).sum(-1) - 0.5 * (u**2).sum(-1)
        return terms.sum(0).to(torch.float64)

    def log_reference(self, x: Tensor) -> Tensor:
        """log N(x; loc, σ_N² I) of the reference chain's terminal marginal, ``(n,)``."""
        return gaussian_log_density(x, self.loc, self.scheme.final_std)


class DiffusionSampler(PathSampler):
    """PIS or DDS with a learned drift, trained on the energy; weighted samples.

    Parameters
    ----------
    kind
        ``"pis"`` (Path Integral Sampler) or ``"dds"`` (Denoising Diffusion Sampler).
    loss
        ``"kl"`` (reverse KL by reparameterization) or ``"log_variance"``
        (Richter & Berner 2023); see the module docstring.
    n_steps
        Discretization steps N of the SDE (PIS: h = 1/N on [0, 1]).
    sigma
        Scale of the reference process in the target's units of x: PIS's diffusion
        coefficient (terminal reference N(loc, σ² I) at t = 1), DDS's invariant
        standard deviation (X_0 ∼ N(loc, σ² I)). It should cover the target.
    hidden_features
        Hidden widths of the control MLP (and of NN₂ with Langevin preconditioning).
    n_iter
        Adam steps.
    batch_size
        Trajectories per step.
    lr
        Adam learning rate (constant).
    langevin_preconditioning
        Use f = NN₁(x, t) + NN₂(t) ⊙ ∇log p̃(x) (one gradient evaluation per step).
    score_clip
        Elementwise clip of ∇log p̃ in the Langevin term (PIS uses 100).
    grad_clip
        Maximum global norm of the parameter gradient, or None for no clipping.
    sample_batch_size
        Trajectories per batch when sampling.
    dtype
        ``"float32"`` or ``"float64"`` for the network and the simulation; energies,
        log weights and the returned samples are float64.

    Defaults: pis, kl, 100 steps, σ = 1, (128, 128), 2000 steps of 256 paths,
    lr 1e-3, no Langevin term, score clip 100, gradient clip 10, float32.

    Under an evaluation budget the budget decides ``n_iter`` (``budget_settings``;
    the configured value is ignored): see :meth:`plan_budget`. Every other
    setting, ``batch_size`` and ``n_steps`` included, stays as configured.
    """

    name = "diffusion"
    model_attr = "net"
    divergence_advice = "Try a smaller lr, a grad_clip, or a different sigma."
    #: a tiny configuration for conformance tests (seconds to fit)
    fast_params: dict[str, Any] = {
        "n_steps": 8,
        "hidden_features": [16, 16],
        "n_iter": 10,
        "batch_size": 32,
    }

    def __init__(
        self,
        *,
        kind: str = "pis",
        loss: str = "kl",
        n_steps: int = 100,
        sigma: float = 1.0,
        hidden_features: tuple[int, ...] | list[int] = (128, 128),
        n_iter: int = 2000,
        batch_size: int = 256,
        lr: float = 1e-3,
        langevin_preconditioning: bool = False,
        score_clip: float = 100.0,
        grad_clip: float | None = 10.0,
        sample_batch_size: int = 4096,
        dtype: str = "float32",
    ):
        _choice("kind", kind, KINDS)
        _choice("loss", loss, LOSSES)
        _choice("dtype", dtype, DTYPES)
        if min(n_steps, n_iter, batch_size, sample_batch_size) < 1:
            raise ValueError("diffusion: n_steps, n_iter and the batch sizes must be >= 1")
        if not (sigma > 0 and lr > 0 and score_clip > 0):
            raise ValueError("diffusion: sigma, lr and score_clip must be > 0")
        if loss == "log_variance" and batch_size < 2:
            raise ValueError("diffusion: the log-variance loss needs batch_size >= 2")
        self.kind, self.loss, self.n_steps, self.sigma = kind, loss, n_steps, sigma
        self.hidden_features = [int(h) for h in hidden_features]
        self.n_iter, self.batch_size, self.lr = n_iter, batch_size, lr
        self.langevin_preconditioning = bool(langevin_preconditioning)
        self.score_clip, self.grad_clip = score_clip, grad_clip
        self.sample_batch_size, self.dtype = sample_batch_size, dtype

    # ---------------------------------------------------------------- building

    def _scheme(self) -> Scheme:
        make = pis_scheme if self.kind == "pis" else dds_scheme
        return make(self.n_steps, self.sigma)

    def _build(self, dim: int) -> ControlNet:
        net = ControlNet(dim, self.hidden_features, self.langevin_preconditioning)
        return net.to(DTYPES[self.dtype])

    def _simulator(self, target: Target) -> _Chain:
        loc = start_location(target, DTYPES[self.dtype])
        return _Chain(self.net_, self._scheme(), loc, self.score_clip)

    # ---------------------------------------------------------------- losses

    def _kl_loss(self, chain: _Chain, target: Target, generator) -> tuple[Tensor, Tensor]:
        """(loss, log w): loss = mean[Σ½|u|² + E(X_N) + log N(X_N)], reparameterized."""
        path = chain.rollout(target, self.batch_size, generator)
        energy = target.energy(path.x.to(torch.float64))
        cost = path.running + energy + chain.log_reference(path.x)
        return cost.mean(), -(cost + path.martingale).detach()

    def _log_variance_loss(self, chain: _Chain, target: Target, generator) -> tuple[Tensor, Tensor]:
        """(loss, log w): loss = Var_batch[log w_u] on detached paths (Richter & Berner 2023)."""
        with torch.no_grad():
            path = chain.rollout(target, self.batch_size, generator, keep=True)
            fixed = -target.energy(path.x.to(torch.float64)) - chain.log_reference(path.x)
        log_w = fixed - chain.log_rnd(path)
        return log_w.var(), log_w.detach()

    # ---------------------------------------------------------------- training

    def _label(self) -> str:
        return f"diffusion ({self.kind}, {self.loss})"

    def _step_loss(self, chain: _Chain, target: Target, generator) -> StepLoss:
        """The chosen loss of one batch of paths, with the batch's mean log w
        (``log_Z_elbo``) and normalized Kish ESS (``ess``) for the history."""
        loss_fn = self._kl_loss if self.loss == "kl" else self._log_variance_loss

        def step() -> tuple[Tensor, dict[str, float]]:
            loss, log_w = loss_fn(chain, target, generator)
            return loss, {"log_Z_elbo": float(log_w.mean()), "ess": normalized_kish_ess(log_w)}

        return step

    # ---------------------------------------------------------------- sampling

    @torch.no_grad()
    def _sample_batch(self, chain: _Chain, target: Target, n: int, generator) -> tuple:
        """x (float64 ``(n, dim)``), E(x) and log w (``(n,)``) for one batch of paths."""
        path = chain.rollout(target, n, generator)
        x = path.x.to(torch.float64)
        energy = target.energy(x)
        log_w = -energy - chain.log_reference(x) - path.running - path.martingale
        return x, energy, masked_log_weights(log_w, x, energy)

    def _sample_attrs(self, chain: _Chain) -> dict[str, Any]:
        return {"kind": self.kind, "loss": self.loss}

    def _backward_log_density(self, chain: _Chain, target: Target, x: Tensor, generator) -> Tensor:
        """log q̂(x) = log N(x; loc, σ_N² I) + log dP^u/dR along one reference bridge
        ending at each row of ``x`` (see the module docstring), float64 ``(n,)``;
        n_steps gradient evaluations per row with Langevin preconditioning."""
        x = x.to(chain.dtype)
        states, increments = reference_bridge(chain.scheme, x, chain.loc, generator)
        scores = None
        if self.langevin_preconditioning:
            scores = torch.stack([chain.score(target, s) for s in states])
        path = _Rollout(x, None, None, states, scores, torch.zeros_like(states), increments)
        return chain.log_reference(x).to(torch.float64) + chain.log_rnd(path)

    def sample_cost(self, n: int) -> int:
        """One energy evaluation per path, plus one per step with Langevin preconditioning."""
        return n * (1 + (self.n_steps if self.langevin_preconditioning else 0))

    def _build_model(self, target: Target) -> ControlNet:
        return self._build(target.dim)
