"""Conditional-proposal MCMC: Metropolis–Hastings with a learned q(x′ | x), alone or
mixed with MALA steps, batched over chains.

**Metropolis–Hastings** (Metropolis et al. 1953; Hastings 1970) with a proposal
that depends on the current state: y ∼ q(· | x) is accepted with probability
min(1, exp(log α)),

    log α = −E(y) + E(x) + log q(x | y) − log q(y | x),

so p ∝ exp(−E) is invariant for any q whose support covers p's from every x
(the chain is p-reversible: detailed balance holds term by term). With q a
learned model of the transition density of MD over a lag τ, p(x_{t+τ} | x_t),
this is the Timewarp sampler of Klein et al. 2023 ("Timewarp: transferable
acceleration of molecular dynamics by learning time-coarsened dynamics",
NeurIPS 2023, Sec. 3 and Algorithm 1): the flow proposes a move of τ, much
longer than an MD step, and MH makes the chain exact whatever the flow's error.
A q that ignores x is independent MH (:mod:`boltzbench.mcmc.flow_proposal`).

**Mixed kernel** (Timewarp's exploration variant mixes its jumps with local
moves; here Gabrié et al. 2022's Algorithm 1 with a conditional jump):
``n_local`` MALA steps (:mod:`boltzbench.mcmc.mala`), then one conditional jump;
each leaves p invariant, so their composition does.

Costs per chain: a jump evaluates the target once at y (energy only with
:func:`~boltzbench.mcmc.flow_proposal.energy_only`; energy and gradient in the
mixed kernel, because the next MALA step needs ∇E at the accepted point), draws
y once from q(· | x) and evaluates log q twice (q(y | x) and q(x | y), one batched
call); the model's evaluations are not target evaluations. A mixed step costs
``n_local + 1`` energy-and-gradient evaluations.

The *proposal* is ``propose(generator, x) -> y`` (shapes ``(chains, dim)``) and
``log_prob(y, x)`` is log q(y | x), shape ``(chains,)``. The state is
:class:`boltzbench.mcmc.proposal.State` (position, energy, gradient; an empty
gradient ``(chains, 0)`` under an energy-only evaluator).

Usage::

    evaluate = flow_proposal.energy_only(target.energy)
    state = conditional_proposal.init(x0, evaluate)
    step = conditional_proposal.build_kernel(propose, log_prob)
    state, info = step(generator, state, evaluate)

    mixed = conditional_proposal.build_mixed_kernel(propose, log_prob, n_local=5)
    state, info = mixed(generator, state, target.energy_and_grad, step_size)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from boltzbench.mcmc import mala
from boltzbench.mcmc import proposal as mh
from boltzbench.mcmc.flow_proposal import Evaluate

__all__ = [
    "Info",
    "MixedInfo",
    "ConditionalProposal",
    "ConditionalLogProb",
    "init",
    "log_ratio",
    "build_kernel",
    "build_mixed_kernel",
]

#: ``propose(generator, x) -> y ∼ q(· | x)``, shapes ``(chains, dim)``
ConditionalProposal = Callable[[torch.Generator, Tensor], Tensor]
#: ``log_prob(y, x) -> log q(y | x)``, shapes ``(chains, dim)`` twice → ``(chains,)``
ConditionalLogProb = Callable[[Tensor, Tensor], Tensor]


class Info(NamedTuple):
    """What one conditional jump did, per chain (shape ``(chains,)``, but ``proposal``).

    Attributes
    ----------
    acceptance_rate
        min(1, α), zero for an invalid proposal (non-finite E(y) or log q).
    is_accepted
        Whether the chain moved.
    proposal
        The proposed state (whether accepted or not).
    """

    acceptance_rate: Tensor
    is_accepted: Tensor
    proposal: mh.State


class MixedInfo(NamedTuple):
    """What one mixed step (``n_local`` MALA steps, then a jump) did, per chain.

    Attributes
    ----------
    local_acceptance_rate
        Mean over the MALA steps of min(1, α), shape ``(chains,)``.
    local_accepted
        Fraction of the MALA steps accepted, shape ``(chains,)``.
    jump
        The :class:`Info` of the jump.
    """

    local_acceptance_rate: Tensor
    local_accepted: Tensor
    jump: Info


def init(position: Tensor, evaluate: Evaluate) -> mh.State:
    """The state at ``position`` (``(chains, dim)``): one evaluation per chain."""
    energy, grad = evaluate(position)
    return mh.State(position, energy, grad)


def log_ratio(state: mh.State, proposed: mh.State, log_prob: ConditionalLogProb) -> Tensor:
    """log α = −E(y) + E(x) + log q(x | y) − log q(y | x), shape ``(chains,)``.

    The two log q come from one batched call of ``log_prob`` on 2·chains rows.
    """
    x, y = state.position, proposed.position
    with torch.no_grad():
        both = log_prob(torch.cat([y, x]), torch.cat([x, y])).to(state.energy)
    forward, backward = both.chunk(2)
    return state.energy - proposed.energy + backward - forward


def build_kernel(
    propose: ConditionalProposal, log_prob: ConditionalLogProb
) -> Callable[..., tuple[mh.State, Info]]:
    """The MH transition ``step(generator, state, evaluate) -> (state, info)``.

    Draws y ∼ q(· | x) for every chain, evaluates the target once per chain at y
    and accepts with min(1, α) (:func:`log_ratio`).
    """

    def step(generator: torch.Generator, state: mh.State, evaluate: Evaluate):
        with torch.no_grad():
            y = propose(generator, state.position).to(state.position)
        new = init(y, evaluate)
        ratio = log_ratio(state, new, log_prob)
        accepted, rate = mh.metropolis_accept(ratio, new.energy, generator)
        return mh.select(accepted, new, state), Info(rate, accepted, new)

    return step


def build_mixed_kernel(
    propose: ConditionalProposal, log_prob: ConditionalLogProb, n_local: int
) -> Callable[..., tuple[mh.State, MixedInfo]]:
    """``n_local`` MALA steps then one conditional jump.

    Returns ``step(generator, state, evaluate, step_size) -> (state, info)``, with
    ``evaluate`` giving the energy *and* gradient and ``step_size`` the MALA ε
    (a number or one per chain).
    """
    if n_local < 1:
        raise ValueError(f"the mixed kernel needs n_local >= 1, got {n_local}")
    local, jump = mala.build_kernel(), build_kernel(propose, log_prob)

    def step(
        generator: torch.Generator, state: mh.State, evaluate: Evaluate, step_size: Tensor | float
    ) -> tuple[mh.State, MixedInfo]:
        potential = mh.potential_from(evaluate)
        rate = accepted = torch.zeros_like(state.energy)
        for _ in range(n_local):
            state, info = local(generator, state, potential, step_size)
            rate = rate + info.acceptance_rate
            accepted = accepted + info.is_accepted.to(rate)
        state, info = jump(generator, state, evaluate)
        return state, MixedInfo(rate / n_local, accepted / n_local, info)

    return step
