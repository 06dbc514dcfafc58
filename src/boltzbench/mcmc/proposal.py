"""Shared pieces of every MCMC kernel: the cached state, potentials, Metropolis.

All kernels are batched over independent chains: positions have shape
``(chains, dim)`` and every per-chain quantity has shape ``(chains,)``. Energies
are reduced (k_BT), so the density is p(x) ∝ exp(-E(x)).

A *potential* maps positions to a state: ``potential(x) -> State``. It performs
exactly one energy-and-gradient evaluation per chain. A state may be any
NamedTuple whose first three fields are ``position``, ``energy`` and ``grad``;
further fields (e.g. the target's own energy inside a tempered potential, see
:mod:`boltzbench.mcmc.annealing`) are carried along unchanged, accepted or rejected
together with the position. :func:`select` and :func:`take` work field by field.

The Metropolis–Hastings step (Metropolis et al. 1953; Hastings 1970) accepts a
proposal with probability min(1, exp(log_ratio)), decided in log space as
log u < log_ratio with u ~ U(0, 1). A proposal whose energy is not finite is
never accepted, and a NaN log ratio counts as a rejection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeVar

import torch
from torch import Tensor

__all__ = [
    "State",
    "Potential",
    "potential_from",
    "init",
    "metropolis_accept",
    "uniform",
    "log_uniform",
    "metropolis_decide",
    "select",
    "take",
]


class State(NamedTuple):
    """The position of every chain with its cached energy and gradient.

    Attributes
    ----------
    position
        x, shape ``(chains, dim)``.
    energy
        E(x) in k_BT, shape ``(chains,)``.
    grad
        ∇E(x), shape ``(chains, dim)``.
    """

    position: Tensor
    energy: Tensor
    grad: Tensor


S = TypeVar("S", bound=tuple)

#: maps positions ``(chains, dim)`` to a state (one energy+grad evaluation per chain)
Potential = Callable[[Tensor], State]


def potential_from(energy_and_grad: Callable[[Tensor], tuple[Tensor, Tensor]]) -> Potential:
    """The potential of ``energy_and_grad`` (e.g. ``target.energy_and_grad``)."""

    def evaluate(x: Tensor) -> State:
        energy, grad = energy_and_grad(x)
        return State(x, energy, grad)

    return evaluate


def init(position: Tensor, potential: Potential) -> State:
    """The state at ``position`` (shape ``(chains, dim)``): one evaluation per chain."""
    return potential(position)


def metropolis_accept(
    log_ratio: Tensor, proposed_energy: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Batched Metropolis–Hastings decision in log space.

    Parameters
    ----------
    log_ratio
        log [p(y) q(x|y) / (p(x) q(y|x))] per chain, shape ``(chains,)``.
    proposed_energy
        E(y), shape ``(chains,)``; a non-finite value means "reject".
    generator
        Source of the uniform draws (one per chain).

    Returns
    -------
    accepted
        Boolean, shape ``(chains,)``.
    acceptance_rate
        min(1, exp(log_ratio)), zero where the proposal is invalid, shape ``(chains,)``.
    """
    return metropolis_decide(log_ratio, proposed_energy, log_uniform(log_ratio, generator))


def uniform(shape: torch.Size, dtype: torch.dtype, device, generator: torch.Generator) -> Tensor:
    """u ~ U(0, 1) of ``shape``, drawn on the CPU generator, on ``device``: the draws of
    :func:`log_uniform` before the log (a fused compiled step takes the log inside)."""
    u = torch.rand(shape, generator=generator, dtype=dtype)
    return u if u.device == device else u.to(device)


def log_uniform(like: Tensor, generator: torch.Generator) -> Tensor:
    """log u, u ~ U(0, 1), of the shape, dtype and device of ``like``: the draws of
    :func:`metropolis_accept`, apart so that compiled kernels draw them eagerly."""
    u = torch.rand(like.shape, generator=generator, dtype=like.dtype)
    return torch.log(u).to(like.device)


def metropolis_decide(
    log_ratio: Tensor, proposed_energy: Tensor, log_u: Tensor
) -> tuple[Tensor, Tensor]:
    """The decision of :func:`metropolis_accept` given its draws ``log_u`` (no randomness,
    so it compiles): accept where log u < log_ratio and the proposal is valid."""
    valid = torch.isfinite(proposed_energy) & ~torch.isnan(log_ratio)
    log_ratio = torch.where(valid, log_ratio, torch.full_like(log_ratio, -torch.inf))
    accepted = log_u < log_ratio
    return accepted, torch.exp(torch.clamp(log_ratio, max=0.0))


def select(mask: Tensor, new: S, old: S) -> S:
    """Per chain, ``new`` where ``mask`` (shape ``(chains,)``) is true, else ``old``."""
    return type(old)(*(_where(mask, a, b) for a, b in zip(new, old, strict=True)))


def take(state: S, index: Tensor) -> S:
    """The chains ``index`` (shape ``(m,)``) of every field, e.g. after resampling."""
    return type(state)(*(f[index] for f in state))


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(mask.reshape(-1, *([1] * (a.ndim - 1))), a, b)
