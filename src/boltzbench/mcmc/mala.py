"""Metropolis-adjusted Langevin algorithm (MALA), batched over chains.

Roberts & Tweedie 1996, "Exponential convergence of Langevin distributions and
their discrete approximations"; the proposal is one Euler–Maruyama step of the
overdamped Langevin diffusion dx = −∇E dt + √2 dW with time step τ = ε²/2:

    y = x − (ε²/2) ∇E(x) + ε ξ,   ξ ~ N(0, I)

    log q(y | x) = −|y − x + (ε²/2) ∇E(x)|² / (2ε²) + const

and y is accepted with probability min(1, exp(log α)),

    log α = E(x) − E(y) + log q(x | y) − log q(y | x).

The step size ε is in units of x (so that MALA equals HMC with one leapfrog step
of size ε, see :mod:`boltzbench.mcmc.hmc`), either a number or one per chain.
Each step costs exactly one energy-and-gradient evaluation per chain: the energy
and gradient at x are cached in the :class:`State`. The optimal acceptance in
high dimension is 0.574 (Roberts & Rosenthal 1998).

On a :class:`~boltzbench.mcmc.compiling.CountedPotential` (built by
:func:`boltzbench.mcmc.compiling.potential` with compilation on) a step runs
as ONE compiled graph (proposal, energy and gradient, Hastings ratio, accept
and select: :func:`fused_step`); on another potential ``build_kernel(compile=...)``
compiles the arithmetic around the potential's call. The random draws stay
eager either way, so compiled and eager steps agree up to float rounding.

Usage::

    state = mala.init(x0, proposal.potential_from(target.energy_and_grad))
    step = mala.build_kernel()
    state, info = step(generator, state, potential, step_size)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from boltzbench.mcmc.compiling import Compiled, CountedPotential, Switch, nonfinite, resolve
from boltzbench.mcmc.integrators import normal, per_chain
from boltzbench.mcmc.proposal import (
    Potential,
    State,
    init,
    log_uniform,
    metropolis_decide,
    select,
    uniform,
)

__all__ = [
    "State",
    "Info",
    "init",
    "build_kernel",
    "langevin_log_density",
    "propose",
    "finish",
    "fused_step",
]


class Info(NamedTuple):
    """What one MALA step did, per chain (all of shape ``(chains,)`` but ``proposal``).

    Attributes
    ----------
    acceptance_rate
        min(1, α), zero for a proposal with a non-finite energy.
    is_accepted
        Whether the chain moved.
    proposal
        The proposed state (whether accepted or not).
    """

    acceptance_rate: Tensor
    is_accepted: Tensor
    proposal: State


def langevin_log_density(y: Tensor, x: State, step_size: Tensor | float) -> Tensor:
    """log q(y | x) up to a constant, shape ``(chains,)``: Gaussian with mean
    x − (ε²/2) ∇E(x) and covariance ε² I."""
    eps2 = per_chain(step_size, y) ** 2
    r = y - x.position + 0.5 * eps2 * x.grad
    return -0.5 * ((r**2).sum(-1, keepdim=True) / eps2).squeeze(-1)


def propose(x: Tensor, grad: Tensor, noise: Tensor, eps: Tensor) -> Tensor:
    """y = x − (ε²/2) ∇E(x) + ε ξ, shape ``(chains, dim)``; ``eps`` from
    :func:`~boltzbench.mcmc.integrators.per_chain`."""
    return x + eps * (noise - 0.5 * eps * grad)


def finish(
    state: State, proposal: State, noise: Tensor, eps: Tensor, log_u: Tensor
) -> tuple[State, Tensor, Tensor]:
    """The Metropolis–Hastings end of a step given its draws (ξ and log u): the new
    state (field by field), whether accepted and min(1, α), both ``(chains,)``."""
    log_ratio = (
        state.energy
        - proposal.energy
        + langevin_log_density(state.position, proposal, eps)
        + 0.5 * (noise**2).sum(-1)  # = −log q(y | x)
    )
    accepted, rate = metropolis_decide(log_ratio, proposal.energy, log_u)
    return select(accepted, proposal, state), accepted, rate


def fused_step(
    pure: Potential, state: State, noise: Tensor, eps: Tensor, u: Tensor
) -> tuple[State, Tensor, Tensor, State, Tensor]:
    """A whole step given its draws ξ and u ~ U(0, 1), on the pure potential ``pure``:
    the new state, whether accepted, min(1, α), the proposal and its number of
    non-finite energies."""
    proposal = pure(propose(state.position, state.grad, noise, eps))
    new, accepted, rate = finish(state, proposal, noise, eps, torch.log(u))
    return new, accepted, rate, proposal, nonfinite(proposal.energy)


def build_kernel(compile: Switch = False) -> Callable[..., tuple[State, Info]]:
    """The MALA transition ``step(generator, state, potential, step_size) -> (state, info)``.

    ``step_size`` is ε, a number or a tensor of shape ``(chains,)``. On a
    :class:`~boltzbench.mcmc.compiling.CountedPotential` the step is
    :func:`fused_step`, compiled as one graph where the potential was built
    compiled (the potential charges its counters first). On another potential,
    ``compile`` (see :mod:`~boltzbench.mcmc.compiling`) compiles :func:`propose`
    and :func:`finish` around its call.
    """
    on = resolve(compile)
    move, end = Compiled(propose, "mala.propose", on), Compiled(finish, "mala.finish", on)

    def step(
        generator: torch.Generator, state: State, potential: Potential, step_size: Tensor | float
    ) -> tuple[State, Info]:
        x, eps = state.position, per_chain(step_size, state.position)
        noise = normal(x, generator)
        if isinstance(potential, CountedPotential):
            potential.charge(x.shape[0])
            dtype = torch.promote_types(state.energy.dtype, x.dtype)
            u = uniform(state.energy.shape, dtype, x.device, generator)
            new, accepted, rate, proposal, count = potential.fuse(fused_step)(state, noise, eps, u)
            potential.note(count)
            return new, Info(rate, accepted, proposal)
        proposal = potential(move(x, state.grad, noise, eps))
        like = proposal.energy.to(torch.promote_types(proposal.energy.dtype, x.dtype))
        new, accepted, rate = end(state, proposal, noise, eps, log_uniform(like, generator))
        return new, Info(rate, accepted, proposal)

    return step
