"""Integrators of Hamiltonian dynamics with a unit mass matrix.

H(x, p) = E(x) + K(p) with K(p) = ½ |p|², positions and momenta of shape
``(chains, dim)``. The step size ε is in units of x (the mass is one), either one
number or one per chain (shape ``(chains,)``).

Leapfrog, i.e. velocity Verlet (Leimkuhler & Reich 2004, "Simulating
Hamiltonian Dynamics"; Neal 2011, "MCMC using Hamiltonian dynamics"), one step:

    p_½ = p − (ε/2) ∇E(x)
    x'  = x + ε p_½
    p'  = p_½ − (ε/2) ∇E(x')

It is symplectic and time-reversible, so H is conserved up to O(ε²) and the
Metropolis correction of HMC is exact. Each step costs one energy-and-gradient
evaluation per chain (the gradient at x is cached in the state).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from boltzbench.mcmc.compiling import Compiled, Switch, resolve
from boltzbench.mcmc.proposal import Potential, State

__all__ = ["leapfrog", "build_leapfrog", "kinetic_energy", "per_chain", "normal"]


def per_chain(step_size: Tensor | float, like: Tensor) -> Tensor:
    """``step_size`` (scalar or shape ``(chains,)``) shaped to broadcast against ``like``.

    A per-chain step size becomes a column of shape ``(chains, 1)``.
    """
    if isinstance(step_size, Tensor) and step_size.dtype == like.dtype:
        s = step_size if step_size.device == like.device else step_size.to(like.device)
    else:
        s = torch.as_tensor(step_size, dtype=like.dtype, device=like.device)
    return s.reshape(-1, *([1] * (like.ndim - 1))) if s.ndim else s


def normal(like: Tensor, generator: torch.Generator) -> Tensor:
    """ξ ~ N(0, I) of the shape and dtype of ``like``, drawn on the CPU generator,
    on ``like``'s device (no copy where that is the CPU)."""
    xi = torch.randn(like.shape, generator=generator, dtype=like.dtype)
    return xi if xi.device == like.device else xi.to(like.device)


def kinetic_energy(momentum: Tensor) -> Tensor:
    """K(p) = ½ |p|², shape ``(chains,)`` for ``momentum`` of shape ``(chains, dim)``."""
    return 0.5 * (momentum**2).sum(-1)


def leapfrog(
    state: State,
    momentum: Tensor,
    potential: Potential,
    step_size: Tensor | float,
    n_steps: int = 1,
) -> tuple[State, Tensor]:
    """``n_steps`` leapfrog steps from (``state``, ``momentum``).

    Parameters
    ----------
    state
        The start, with its cached gradient.
    momentum
        p, shape ``(chains, dim)``.
    potential
        Positions → state (one evaluation per chain per step).
    step_size
        ε, a number or shape ``(chains,)``.
    n_steps
        Number of steps L; the trajectory length is L ε.

    Returns
    -------
    The end state and the end momentum.
    """
    eps = per_chain(step_size, momentum)
    for _ in range(n_steps):
        momentum = momentum - 0.5 * eps * state.grad
        state = potential(state.position + eps * momentum)
        momentum = momentum - 0.5 * eps * state.grad
    return state, momentum


def _kick_drift(x: Tensor, p: Tensor, grad: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """p_½ = p − (ε/2) ∇E(x) and x' = x + ε p_½."""
    p = p - 0.5 * eps * grad
    return x + eps * p, p


def _kick(p: Tensor, grad: Tensor, eps: Tensor) -> Tensor:
    """p' = p_½ − (ε/2) ∇E(x')."""
    return p - 0.5 * eps * grad


def build_leapfrog(compile: Switch = False) -> Callable[..., tuple[State, Tensor]]:
    """:func:`leapfrog` with its kicks and drift compiled where ``compile`` asks
    (:mod:`boltzbench.mcmc.compiling`); off, :func:`leapfrog` itself."""
    on = resolve(compile)
    if not on:
        return leapfrog
    kick_drift = Compiled(_kick_drift, "leapfrog.kick_drift", on)
    kick = Compiled(_kick, "leapfrog.kick", on)

    def integrate(
        state: State, momentum: Tensor, potential: Potential, step_size, n_steps: int = 1
    ) -> tuple[State, Tensor]:
        eps = per_chain(step_size, momentum)
        for _ in range(n_steps):
            x, momentum = kick_drift(state.position, momentum, state.grad, eps)
            state = potential(x)
            momentum = kick(momentum, state.grad, eps)
        return state, momentum

    return integrate
