"""Posterior means under a Gaussian observation, by MCMC: the score of a smoothed density.

Training-free diffusion-type samplers need, at every step, the mean of

    π(x | c, s) ∝ p(x) · N(x; c, s² I),   p(x) ∝ exp(−E(x)),

one posterior per row of the centres ``c`` (shape ``(rows, dim)``), s > 0 a number:

- reverse diffusion Monte Carlo (Huang, Dong, Hao, Ma & Zhang, ICLR 2024): the
  OU posterior q_t(x₀ | x_t) ∝ p(x₀) N(x_t; e^{−t} x₀, (1 − e^{−2t}) I) is
  π(· | e^{t} x_t, √(e^{2t} − 1)), and Tweedie's formula turns its mean into the
  score ∇log p_t(x_t) = (e^{−t} E[x₀ | x_t] − x_t) / (1 − e^{−2t});
- walk-jump sampling (Saremi & Hyvärinen 2019; Saremi, Park & Bach 2023): the
  posterior p(x | y_{1:m}) ∝ p(x) Π_k N(y_k; x, σ² I) is π(· | ȳ, σ / √m).

:func:`posterior_mean` estimates E_π[x] for every row in three stages:

1. warm start: the chains' positions ``start`` when given (a use that moves c
   little between calls continues its chains: :class:`~boltzbench.methods.rdmc.RDMC`),
   else importance sampling (the initialization of rdMC's inner sampler):
   ``n_proposals`` draws z ~ N(c, s² I) per row, self-normalized weights
   w ∝ exp(−E(z)) (a non-finite energy weighs 0; a row whose weights are all 0
   is resampled uniformly), and ``n_chains`` starts resampled from them
   multinomially (with replacement); ``n_proposals = 0`` starts every chain at c.
   With ``pool`` G > 1 the rows are taken in blocks of G and every row draws from
   its block's G · n_proposals proposals, pooled by the balance heuristic
   (deterministic-mixture importance sampling, Veach & Guibas 1995; Owen & Zhou
   2000): z from the mixture ψ(z) = (1/G) Σ_l N(z; c_l, s² I) weighs
   w_i(z) ∝ exp(−E(z)) N(z; c_i, s² I) / ψ(z) for row i (no further energy
   evaluations; G = 1 is the per-row rule above). Where s is large against the
   spacing of p's modes, n_proposals draws of one row rarely land in a mode and
   its chains all start in one; the pool has G times as many;
2. ``n_burnin`` + ``n_draws`` MALA steps (:mod:`boltzbench.mcmc.mala`) of every
   chain on the potential U(x) = E(x) + |x − c|² / (2 s²), run by the chain runner
   (:mod:`boltzbench.mcmc.runner`) without adaptation, at the step size
   ε = (step_size⁻² + s⁻²)^{−1/2}: ``step_size`` suits p alone, and the Gaussian
   factor's precision 1/s² adds to p's, so ε shrinks to s when s is small;
3. the mean of the ``n_chains · n_draws`` kept draws of each row.

Costs per row: ``n_proposals`` energy evaluations (an importance-sampling warm
start, :meth:`Inner.start_cost`) and ``n_chains · (1 + n_burnin + n_draws)``
energy-and-gradient evaluations (each chain's start and steps,
:meth:`Inner.chain_cost`). Chains are batched:
chain j of row i is row j · rows + i of the runner's state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from boltzbench.mcmc import mala, runner
from boltzbench.mcmc.proposal import Potential, State
from boltzbench.mcmc.runner import Schedule

__all__ = ["Inner", "tilted_potential", "pooled_log_weights", "importance_start", "posterior_mean"]

EnergyFn = Callable[[Tensor], Tensor]
EnergyGradFn = Callable[[Tensor], tuple[Tensor, Tensor]]


class Inner(NamedTuple):
    """The inner sampler of :func:`posterior_mean` (see the module docstring).

    Attributes
    ----------
    n_chains
        MALA chains per row.
    n_proposals
        Importance-sampling proposals per row for the warm start (0: start at c).
    n_burnin
        Discarded MALA steps per chain.
    n_draws
        Kept MALA steps per chain (≥ 1).
    step_size
        ε for p alone (units of x); the chains use (step_size⁻² + s⁻²)^{−1/2}.
    pool
        G, the rows whose proposals are pooled for the warm start (1: each row its own).
    """

    n_chains: int
    n_proposals: int
    n_burnin: int
    n_draws: int
    step_size: float
    pool: int = 1

    def start_cost(self) -> int:
        """Energy evaluations per row of an importance-sampling warm start: n_proposals."""
        return self.n_proposals

    def chain_cost(self) -> int:
        """Energy-and-gradient evaluations per row of the chains: n_chains · (1 + n_burnin
        + n_draws)."""
        return self.n_chains * (1 + self.n_burnin + self.n_draws)

    def check(self) -> None:
        """ValueError unless the sizes are usable."""
        if self.n_chains < 1 or self.n_draws < 1 or self.n_burnin < 0 or self.n_proposals < 0:
            raise ValueError("need n_chains >= 1, n_draws >= 1, n_burnin >= 0, n_proposals >= 0")
        if self.pool < 1:
            raise ValueError(f"need pool >= 1, got {self.pool}")
        if not self.step_size > 0:
            raise ValueError(f"need step_size > 0, got {self.step_size}")


def tilted_potential(energy_and_grad: EnergyGradFn, center: Tensor, s: float) -> Potential:
    """The potential U(x) = E(x) + |x − c|² / (2 s²) of π(· | c, s), with ∇U = ∇E + (x − c)/s².

    ``center`` has the shape of the positions it is evaluated at, ``(chains, dim)``;
    one energy-and-gradient evaluation per chain.
    """

    def evaluate(x: Tensor) -> State:
        energy, grad = energy_and_grad(x)
        r = x - center
        return State(x, energy + 0.5 * (r**2).sum(-1) / s**2, grad + r / s**2)

    return evaluate


def pooled_log_weights(log_p: Tensor, z: Tensor, center: Tensor, s: float, pool: int) -> Tensor:
    """Log weights ``(rows, P · G)`` of every row's block pool (balance heuristic).

    ``log_p`` ``(P, rows)`` are −E at the proposals ``z`` ``(P, rows, dim)``, drawn
    from N(c_l, s² I) for row l. Row i of block b weighs its block's proposal
    z_{m,l} (column m · G_b + l, l local, G_b ≤ G its size) by
    −E(z) + log N(z; c_i, s²) − log Σ_{l′∈b} N(z; c_{l′}, s²) (+ const); columns
    past a short last block are −inf."""
    n_prop, rows, dim = z.shape
    log_w = torch.full((rows, n_prop * pool), -torch.inf, dtype=z.dtype, device=z.device)
    for b in range(0, rows, pool):
        block = slice(b, min(b + pool, rows))
        pooled = z[:, block].reshape(-1, dim)
        log_k = -0.5 * torch.cdist(center[block], pooled) ** 2 / s**2
        lw = log_p[:, block].reshape(-1) + log_k - torch.logsumexp(log_k, 0)
        log_w[block, : pooled.shape[0]] = lw
    return log_w


def importance_start(
    energy: EnergyFn,
    center: Tensor,
    s: float,
    inner: Inner,
    generator: torch.Generator,
) -> Tensor:
    """Starts ``(n_chains · rows, dim)`` resampled from N(c, s² I) proposals weighted by
    exp(−E), pooled over blocks of ``inner.pool`` rows (``n_proposals`` energy
    evaluations per row); chain j of row i at j · rows + i."""
    rows, dim = center.shape
    if inner.n_proposals == 0:
        return center.repeat(inner.n_chains, 1)
    noise = torch.randn(inner.n_proposals, rows, dim, generator=generator, dtype=center.dtype)
    z = center + s * noise.to(center.device)
    log_p = -energy(z.reshape(-1, dim)).reshape(inner.n_proposals, rows).to(center.dtype)
    log_p = torch.where(torch.isfinite(log_p), log_p, torch.full_like(log_p, -torch.inf))
    pool = min(inner.pool, rows)
    log_w = log_p.T if pool == 1 else pooled_log_weights(log_p, z, center, s, pool)
    log_w = torch.where(torch.isnan(log_w), torch.full_like(log_w, -torch.inf), log_w)
    first = torch.arange(rows, device=center.device) // pool * pool  # each row's block
    size = (rows - first).clamp(max=pool)[:, None]  # its block's rows G_b
    col = torch.arange(log_w.shape[1], device=center.device)
    own = (col % size == torch.arange(rows, device=center.device)[:, None] - first[:, None]) & (
        col < inner.n_proposals * size
    )
    none = torch.isinf(log_w).all(-1, keepdim=True)
    log_w = torch.where(none & own, torch.zeros_like(log_w), log_w)
    probs = torch.softmax(log_w, -1).cpu()
    pick = torch.multinomial(probs, inner.n_chains, replacement=True, generator=generator)
    pick = pick.to(center.device)  # (rows, n_chains): column m · G_b + l of the block
    return z[pick // size, first[:, None] + pick % size].transpose(0, 1).reshape(-1, dim)


def posterior_mean(
    energy: EnergyFn,
    energy_and_grad: EnergyGradFn,
    center: Tensor,
    s: float,
    inner: Inner,
    generator: torch.Generator,
    start: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """E_π[x] for every row of ``center`` ``(rows, dim)``, the chains' mean acceptance
    and their last positions.

    ``energy`` and ``energy_and_grad`` are the target's (counted): the call costs
    ``rows · (inner.start_cost() + inner.chain_cost())`` evaluations, or
    ``rows · inner.chain_cost()`` when the chains continue from ``start``
    ``(n_chains · rows, dim)``. Returns the means ``(rows, dim)``, the acceptance
    rate of the MALA steps averaged over chains and steps (a 0-d tensor) and the
    chains' positions ``(n_chains · rows, dim)``.
    """
    rows, dim = center.shape
    if start is None:
        start = importance_start(energy, center, s, inner, generator)
    potential = tilted_potential(energy_and_grad, center.repeat(inner.n_chains, 1), s)
    kernel = mala.build_kernel()
    chain = runner.Chain(
        step=lambda gen, state, eps: kernel(gen, state, potential, eps),
        record=lambda info: {"accept": info.acceptance_rate},
        keep=runner.keep_state,
        adapt_on=None,
    )
    eps = (inner.step_size**-2 + s**-2) ** -0.5
    state = mala.init(start, potential)
    run = runner.start(chain, state, eps, {"accept": torch.zeros_like(state.energy)})
    run = runner.run(chain, run, Schedule(0, inner.n_burnin, 1, inner.n_draws), generator)
    kept = runner.stack(runner.draws(chain, run)).position
    acceptance = run.sums["accept"].mean() / max(run.step, 1)
    return kept.reshape(-1, rows, dim).mean(0), acceptance, run.state.position
