"""Underdamped (kinetic) Langevin kernels, batched over chains: OBABO and randomized midpoint.

Both discretize the underdamped Langevin diffusion with unit mass, friction γ
and unit temperature (energies in k_BT),

    dx = p dt,    dp = −∇E(x) dt − γ p dt + √(2γ) dW,

whose invariant density is ∝ exp(−E(x) − ½|p|²): the position marginal is the
target. The momentum persists from step to step, so the chain :class:`State`
carries it. The step size h is in units of x (unit mass), a number or one per
chain; γ is in units of 1/h.

**OBABO with a Metropolis correction** (:func:`build_obabo_kernel`; generalized
HMC, Horowitz 1991, "A generalized guided Monte Carlo algorithm"; the OBABO
splitting of Leimkuhler & Matthews 2013 "Rational construction of stochastic
numerical methods for molecular sampling" and Bou-Rabee & Sanz-Serna 2018,
"Geometric integrators and the Hamiltonian Monte Carlo method", Acta Numerica).
One step of size h:

    O:   p ← η p + √(1 − η²) ξ,         η = exp(−γ h / 2),  ξ ~ N(0, I)
    BAB: (x', p') = one leapfrog step of size h from (x, p)
         accept with probability min(1, exp(−ΔH)), ΔH = H(x', p') − H(x, p);
         on rejection stay at x and flip the momentum: p ← −p
    O:   p ← η p + √(1 − η²) ξ'

Each O is an exact half step h/2 of the Ornstein–Uhlenbeck part, so a whole
step damps the momentum by exp(−γ h), the same γ as the diffusion above and as
the randomized-midpoint kernel. Every part leaves exp(−E − ½|p|²) invariant
exactly (the O parts exactly, the BAB part through the Metropolis test and the
flip), so the chain has no step-size bias. Cost: one energy-and-gradient
evaluation per chain per step (the gradient at x is cached).

**Randomized midpoint, unadjusted** (:func:`build_randomized_midpoint_kernel`;
Shen & Lee 2019, "The randomized midpoint method for log-concave sampling",
NeurIPS, Algorithm 1, written here for general γ and unit mass; their SDE is
this one with γ = 2 and the gradient scaled by u). Over one step the linear
(OU) part is integrated exactly and the time integral of the gradient force is
replaced by h times its value at a uniformly random time αh, α ~ U(0, 1) (an
unbiased estimate of the integral). With φ(τ) = (1 − e^{−γτ})/γ,
ψ(τ) = (τ − φ(τ))/γ and g₀ = ∇E(x):

    x_α  = x + φ(αh) p − ψ(αh) g₀ + W₁                      (the random midpoint)
    x'   = x + φ(h) p − h φ((1−α)h) ∇E(x_α) + W₂
    p'   = e^{−γh} p − h e^{−γ(1−α)h} ∇E(x_α) + W₃

where (W₁, W₂, W₃) are the Brownian integrals of the exact OU flow, drawn
jointly and exactly, coordinate by coordinate, with s = √(2γ):

    W₁ = s ∫₀^{αh} φ(αh − t) dW_t,   W₂ = s ∫₀^h φ(h − t) dW_t,
    W₃ = s ∫₀^h e^{−γ(h − t)} dW_t

(:func:`ou_noise`). There is no Metropolis test: the stationary law is
biased by the step size (Yu, Karagulyan & Dalalyan 2023 characterize it), which
the benchmark shows against its noise floor. Cost: two energy-and-gradient
evaluations per chain per step (at x_α and at x'; the gradient at x is
cached). A step whose midpoint or end point has a non-finite energy is refused
(the chain stays where it was) and counted as divergent.

Shapes: positions and momenta ``(chains, dim)``, per-chain quantities
``(chains,)``.

Usage::

    potential = proposal.potential_from(target.energy_and_grad)
    state = underdamped.init(x0, p0, potential)
    step = underdamped.build_kernel("obabo")
    state, info = step(generator, state, potential, step_size, friction)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from boltzbench.mcmc import proposal
from boltzbench.mcmc.hmc import DIVERGENCE_THRESHOLD
from boltzbench.mcmc.integrators import kinetic_energy, leapfrog, per_chain
from boltzbench.mcmc.proposal import Potential, metropolis_accept, select

__all__ = [
    "State",
    "OBABOInfo",
    "MidpointInfo",
    "KERNELS",
    "init",
    "build_kernel",
    "build_obabo_kernel",
    "build_randomized_midpoint_kernel",
    "partial_refresh",
    "ou_noise",
]

#: the kernels of this module, by name, with their energy-and-gradient evaluations per step
KERNELS = {"obabo": 1, "randomized_midpoint": 2}


class State(NamedTuple):
    """Position and momentum of every chain with the cached energy and gradient.

    The first three fields are those of :class:`boltzbench.mcmc.proposal.State`.

    Attributes
    ----------
    position
        x, shape ``(chains, dim)``.
    energy
        E(x) in k_BT, shape ``(chains,)``.
    grad
        ∇E(x), shape ``(chains, dim)``.
    momentum
        p, shape ``(chains, dim)`` (unit mass: p is also the velocity).
    """

    position: Tensor
    energy: Tensor
    grad: Tensor
    momentum: Tensor


class OBABOInfo(NamedTuple):
    """What one OBABO step did, per chain (all of shape ``(chains,)``).

    Attributes
    ----------
    acceptance_rate
        min(1, exp(−ΔH)) of the BAB part, zero for a non-finite proposal energy.
    is_accepted
        Whether the position moved (otherwise the momentum was flipped).
    is_divergent
        ΔH > :data:`~boltzbench.mcmc.hmc.DIVERGENCE_THRESHOLD` or not finite.
    energy_error
        ΔH of the BAB part, in k_BT.
    """

    acceptance_rate: Tensor
    is_accepted: Tensor
    is_divergent: Tensor
    energy_error: Tensor


class MidpointInfo(NamedTuple):
    """What one randomized-midpoint step did, per chain (all of shape ``(chains,)``).

    Attributes
    ----------
    acceptance_rate
        1 where the step was taken, 0 where it was refused (a non-finite energy):
        the kernel has no Metropolis test.
    is_divergent
        The step was refused.
    midpoint
        α, the fraction of the step at which the gradient was taken.
    """

    acceptance_rate: Tensor
    is_divergent: Tensor
    midpoint: Tensor


def init(position: Tensor, momentum: Tensor, potential: Potential) -> State:
    """The state at (``position``, ``momentum``), both ``(chains, dim)``: one
    evaluation per chain."""
    x = potential(position)
    return State(x.position, x.energy, x.grad, momentum)


def _randn(like: Tensor, generator: torch.Generator) -> Tensor:
    return torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)


def partial_refresh(momentum: Tensor, eta: Tensor, generator: torch.Generator) -> Tensor:
    """The O step p ← η p + √(1 − η²) ξ (exact OU flow of the momentum); η broadcasts
    against ``momentum`` ``(chains, dim)``."""
    return eta * momentum + torch.sqrt(1 - eta**2) * _randn(momentum, generator)


def build_obabo_kernel() -> Callable[..., tuple[State, OBABOInfo]]:
    """The OBABO transition ``step(generator, state, potential, step_size, friction)``.

    ``step_size`` is h (a number or shape ``(chains,)``), ``friction`` is γ > 0.
    """

    def step(
        generator: torch.Generator,
        state: State,
        potential: Potential,
        step_size: Tensor | float,
        friction: float,
    ) -> tuple[State, OBABOInfo]:
        x = proposal.State(state.position, state.energy, state.grad)
        eta = torch.exp(-0.5 * friction * per_chain(step_size, x.position))
        p = partial_refresh(state.momentum, eta, generator)
        moved, p_end = leapfrog(x, p, potential, step_size, 1)
        energy_error = (moved.energy - x.energy) + (kinetic_energy(p_end) - kinetic_energy(p))
        accepted, rate = metropolis_accept(-energy_error, moved.energy, generator)
        x = select(accepted, moved, x)
        p = torch.where(accepted[:, None], p_end, -p)  # flip the momentum on rejection
        divergent = ~(energy_error <= DIVERGENCE_THRESHOLD)  # NaN counts as divergent
        new = State(*x, partial_refresh(p, eta, generator))
        return new, OBABOInfo(rate, accepted, divergent, energy_error)

    return step


def _phi(tau: Tensor, gamma: float) -> Tensor:
    """φ(τ) = (1 − e^{−γτ})/γ, the distance the OU flow carries a unit momentum."""
    return -torch.expm1(-gamma * tau) / gamma


def _ou_pair(
    tau: Tensor, gamma: float, shape: torch.Size, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(A, V) = (∫₀^τ φ(τ − t) dW_t, ∫₀^τ e^{−γ(τ − t)} dW_t), drawn jointly.

    ``tau`` has shape ``(chains,)`` (float64); A and V have ``shape`` ``(chains, dim)``.
    By Itô's isometry, per coordinate,

        Var V = (1 − e^{−2γτ})/(2γ),  Cov(A, V) = φ(τ)²/2,
        Var A = (τ − 2φ(τ) + Var V)/γ²,

    sampled as V = √Var V · z₁, A = (Cov/√Var V) z₁ + √(Var A − Cov²/Var V) z₂.
    """
    var_v = -torch.expm1(-2 * gamma * tau) / (2 * gamma)
    phi = _phi(tau, gamma)
    cov, var_a = 0.5 * phi**2, (tau - 2 * phi + var_v) / gamma**2
    sd_v = torch.sqrt(var_v)
    slope = cov / sd_v.clamp_min(1e-300)
    rest = torch.sqrt((var_a - slope**2).clamp_min(0.0))
    z1, z2 = (torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(2))
    return slope[:, None] * z1 + rest[:, None] * z2, sd_v[:, None] * z1


def ou_noise(
    alpha: Tensor, h: Tensor, gamma: float, shape: torch.Size, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """(W₁, W₂, W₃) of the randomized-midpoint step (module docstring), float64.

    ``alpha`` and ``h`` have shape ``(chains,)``; the noises have ``shape``
    ``(chains, dim)``. The Brownian path is split at αh into independent pieces
    (A₁, V₁) on [0, αh] and (A₂, V₂) on [αh, h] (:func:`_ou_pair`); then, with
    s = √(2γ) and τ₂ = (1 − α)h,

        W₁ = s A₁,   W₂ = s (A₁ + φ(τ₂) V₁ + A₂),   W₃ = s (e^{−γτ₂} V₁ + V₂).
    """
    tau2 = (1 - alpha) * h
    a1, v1 = _ou_pair(alpha * h, gamma, shape, generator)
    a2, v2 = _ou_pair(tau2, gamma, shape, generator)
    s = math.sqrt(2 * gamma)
    w2 = s * (a1 + _phi(tau2, gamma)[:, None] * v1 + a2)
    return s * a1, w2, s * (torch.exp(-gamma * tau2)[:, None] * v1 + v2)


def build_randomized_midpoint_kernel() -> Callable[..., tuple[State, MidpointInfo]]:
    """The randomized-midpoint transition
    ``step(generator, state, potential, step_size, friction)``.

    ``step_size`` is h (a number or shape ``(chains,)``), ``friction`` is γ > 0.
    The step's coefficients are computed in float64, then cast to the positions'
    dtype (their small-τ differences cancel badly in float32).
    """

    def step(
        generator: torch.Generator,
        state: State,
        potential: Potential,
        step_size: Tensor | float,
        friction: float,
    ) -> tuple[State, MidpointInfo]:
        x, p, g0 = state.position, state.momentum, state.grad
        chains, f64 = x.shape[0], torch.float64
        h = torch.as_tensor(step_size, dtype=f64).cpu().expand(chains)
        alpha = torch.rand(chains, generator=generator, dtype=f64)
        w1, w2, w3 = (w.to(x) for w in ou_noise(alpha, h, friction, x.shape, generator))
        tau1, tau2 = alpha * h, (1 - alpha) * h
        phi1, psi1 = _phi(tau1, friction), (tau1 - _phi(tau1, friction)) / friction
        col = lambda c: c.to(x)[:, None]  # noqa: E731
        mid = potential(x + col(phi1) * p - col(psi1) * g0 + w1)
        kick = col(h) * mid.grad
        end = potential(x + col(_phi(h, friction)) * p - col(_phi(tau2, friction)) * kick + w2)
        p_end = col(torch.exp(-friction * h)) * p - col(torch.exp(-friction * tau2)) * kick + w3
        ok = torch.isfinite(mid.energy) & torch.isfinite(end.energy)
        new = select(ok, State(*end, p_end), state)
        return new, MidpointInfo(ok.to(x.dtype), ~ok, alpha.to(x))

    return step


def build_kernel(kernel: str = "obabo") -> Callable[..., tuple[State, tuple]]:
    """The transition of ``kernel`` (a name in :data:`KERNELS`):
    ``step(generator, state, potential, step_size, friction) -> (state, info)``."""
    builders = {
        "obabo": build_obabo_kernel,
        "randomized_midpoint": build_randomized_midpoint_kernel,
    }
    if kernel not in builders:
        raise ValueError(f"underdamped: kernel must be one of {sorted(builders)}, got {kernel!r}")
    return builders[kernel]()
