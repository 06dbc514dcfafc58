"""Hamiltonian Monte Carlo (HMC) with a unit mass matrix, batched over chains.

Duane, Kennedy, Pendleton & Roweth 1987, "Hybrid Monte Carlo"; Neal 2011, "MCMC
using Hamiltonian dynamics". One step draws a fresh momentum p ~ N(0, I),
integrates H(x, p) = E(x) + ½|p|² with ``n_leapfrog`` leapfrog steps of size ε
(:func:`boltzbench.mcmc.integrators.leapfrog`) and accepts the end point with
probability min(1, exp(−ΔH)), ΔH = H(x', p') − H(x, p).

With one leapfrog step HMC is exactly MALA with the same ε (the momentum flip
is implicit: −ΔH equals the MALA log Hastings ratio), a fact the tests check.
Each step costs ``n_leapfrog`` energy-and-gradient evaluations per chain. The
optimal acceptance in high dimension is about 0.651 (Beskos et al. 2013).

On a :class:`~boltzbench.mcmc.compiling.CountedPotential` with the default
integrator a whole step (the L leapfrog steps, ΔH, accept and select) runs as
ONE compiled graph (:func:`fused_step`), its momentum and uniform drawn eagerly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from boltzbench.mcmc.compiling import Compiled, CountedPotential, Switch, nonfinite, resolve
from boltzbench.mcmc.integrators import build_leapfrog, kinetic_energy, leapfrog, normal, per_chain
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
    "finish",
    "fused_step",
    "DIVERGENCE_THRESHOLD",
]

#: an energy error ΔH above this (in k_BT), or a non-finite one, is a divergence
DIVERGENCE_THRESHOLD = 1000.0


class Info(NamedTuple):
    """What one HMC step did, per chain (shape ``(chains,)`` but ``proposal``).

    Attributes
    ----------
    acceptance_rate
        min(1, exp(−ΔH)), zero for a proposal with a non-finite energy.
    is_accepted
        Whether the chain moved.
    is_divergent
        ΔH > :data:`DIVERGENCE_THRESHOLD` or not finite.
    energy_error
        ΔH in k_BT.
    proposal
        The end state of the trajectory.
    """

    acceptance_rate: Tensor
    is_accepted: Tensor
    is_divergent: Tensor
    energy_error: Tensor
    proposal: State


def finish(
    state: State, proposal: State, momentum: Tensor, end_momentum: Tensor, log_u: Tensor
) -> tuple[State, Tensor, Tensor, Tensor, Tensor]:
    """The Metropolis end of a step given log u: the new state, whether accepted,
    min(1, exp(−ΔH)), whether divergent and ΔH, all but the state ``(chains,)``."""
    energy_error = (proposal.energy - state.energy) + (
        kinetic_energy(end_momentum) - kinetic_energy(momentum)
    )
    accepted, rate = metropolis_decide(-energy_error, proposal.energy, log_u)
    divergent = ~(energy_error <= DIVERGENCE_THRESHOLD)  # NaN counts as divergent
    return select(accepted, proposal, state), accepted, rate, divergent, energy_error


@functools.cache
def fused_step(n_leapfrog: int) -> Callable:
    """``step(pure, state, momentum, eps, u)``: a whole step of ``n_leapfrog``
    leapfrog steps on the pure potential ``pure`` given its draws (p and u ~ U(0, 1)).
    It returns the outputs of :func:`finish`, the proposal and the number of non-finite energies
    met along the trajectory (one function per L, so that each compiles once)."""

    def step(pure: Potential, state: State, momentum: Tensor, eps: Tensor, u: Tensor):
        proposal, p, count = state, momentum, 0
        for _ in range(n_leapfrog):
            p = p - 0.5 * eps * proposal.grad
            proposal = pure(proposal.position + eps * p)
            p = p - 0.5 * eps * proposal.grad
            count = count + nonfinite(proposal.energy)
        return (*finish(state, proposal, momentum, p, torch.log(u)), proposal, count)

    step.__qualname__ = f"hmc.fused_step({n_leapfrog})"
    return step


def build_kernel(integrator=leapfrog, compile: Switch = False) -> Callable[..., tuple[State, Info]]:
    """The HMC transition
    ``step(generator, state, potential, step_size, n_leapfrog) -> (state, info)``.

    ``integrator`` has the signature of :func:`~boltzbench.mcmc.integrators.leapfrog`.
    ``step_size`` is ε (a number or shape ``(chains,)``); ``n_leapfrog`` is L ≥ 1.
    On a :class:`~boltzbench.mcmc.compiling.CountedPotential` with the default
    integrator the step is :func:`fused_step` (one graph; the potential charges
    its counters first, L times). Otherwise ``compile`` (see
    :mod:`~boltzbench.mcmc.compiling`) compiles :func:`finish` and, for the
    default integrator, the leapfrog kicks and drifts.
    """
    on, fusable = resolve(compile), integrator is leapfrog
    if integrator is leapfrog:
        integrator = build_leapfrog(on)
    end = Compiled(finish, "hmc.finish", on)

    def step(
        generator: torch.Generator,
        state: State,
        potential: Potential,
        step_size: Tensor | float,
        n_leapfrog: int,
    ) -> tuple[State, Info]:
        x = state.position
        p = normal(x, generator)
        if fusable and isinstance(potential, CountedPotential):
            return _fused(generator, state, potential, per_chain(step_size, p), n_leapfrog, p)
        proposal, p_end = integrator(state, p, potential, step_size, n_leapfrog)
        like = proposal.energy.to(torch.promote_types(proposal.energy.dtype, x.dtype))
        new, accepted, rate, divergent, energy_error = end(
            state, proposal, p, p_end, log_uniform(like, generator)
        )
        return new, Info(rate, accepted, divergent, energy_error, proposal)

    return step


def _fused(generator, state: State, potential: CountedPotential, eps, n_leapfrog: int, p):
    """The step of :func:`fused_step` on ``potential``: charge, draw log u, run, note."""
    for _ in range(n_leapfrog):  # one charge per evaluation: refused where eager refuses
        potential.charge(p.shape[0])
    dtype = torch.promote_types(state.energy.dtype, p.dtype)
    u = uniform(state.energy.shape, dtype, p.device, generator)
    out = potential.fuse(fused_step(n_leapfrog))(state, p, eps, u)
    new, accepted, rate, divergent, energy_error, proposal, count = out
    potential.note(count)
    return new, Info(rate, accepted, divergent, energy_error, proposal)
