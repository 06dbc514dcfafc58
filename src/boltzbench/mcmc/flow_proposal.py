"""Flow-proposal MCMC: independent Metropolis–Hastings with a learned proposal,
alone or mixed with MALA steps, batched over chains.

**Independent Metropolis–Hastings (IMH)** (Tierney 1994, "Markov chains for
exploring posterior distributions", Ann. Statist. 22, §2.3.3). The proposal
y ∼ q does not depend on the current state x, and is accepted with probability
min(1, exp(log α)),

    log α = log w(y) − log w(x),   log w(x) = −E(x) − log q(x),

so only the importance weights w = p̃/q of the two points enter (p̃ = exp(−E)).
The chain is p-invariant for any q whose support covers p's, and uniformly
ergodic when w is bounded. With q = p every proposal is accepted. Used with a
normalizing flow as q by Albergo, Kanwar & Shanahan 2019 ("Flow-based generative
models for Markov chain Monte Carlo in lattice field theory", PRD 100, 034515)
and Gabrié, Rotskoff & Vanden-Eijnden 2022 ("Adaptive Monte Carlo augmented
with normalizing flows", PNAS 119, e2109420119).

**Mixed kernel** (Gabrié et al. 2022, Algorithm 1; in the spirit of Timewarp,
Klein et al. 2023, "Timewarp: transferable acceleration of molecular dynamics by
learning time-coarsened dynamics", which also corrects a learned proposal by
Metropolis–Hastings): ``n_local`` MALA steps (:mod:`boltzbench.mcmc.mala`),
then one IMH jump. Each part leaves p invariant, so their composition does too.
The local steps explore within a mode; the jumps move between modes.

Costs per chain: an IMH jump evaluates the target once at y (energy only with
:func:`energy_only`; energy and gradient in the mixed kernel, because the next
MALA step needs ∇E at the accepted point), and the proposal's sampler once. A
mixed step costs ``n_local + 1`` energy-and-gradient evaluations and one
evaluation of log q at the current point (the flow, not the target).

The *proposal* is any callable ``propose(generator, n) -> (y, log_q)`` with y of
shape ``(n, dim)`` and log q(y) of shape ``(n,)`` (for a flow: push base noise
through it). The *evaluator* maps positions to ``(energy, grad)``, e.g.
``target.energy_and_grad``, or :func:`energy_only` for pure IMH.

Usage::

    evaluate = flow_proposal.energy_only(target.energy)
    state = flow_proposal.init(y0, log_q0, evaluate)
    step = flow_proposal.build_kernel(propose)
    state, info = step(generator, state, evaluate)

    mixed = flow_proposal.build_mixed_kernel(propose, log_prob, n_local=5)
    state, info = mixed(generator, state, target.energy_and_grad, step_size)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from boltzbench.mcmc import mala
from boltzbench.mcmc import proposal as mh
from boltzbench.mcmc.compiling import Compiled, Switch, resolve

__all__ = [
    "State",
    "Info",
    "MixedInfo",
    "Proposal",
    "Evaluate",
    "energy_only",
    "init",
    "log_importance_weight",
    "build_kernel",
    "build_mixed_kernel",
]

#: ``propose(generator, n) -> (y, log q(y))``, shapes ``(n, dim)`` and ``(n,)``
Proposal = Callable[[torch.Generator, int], tuple[Tensor, Tensor]]
#: ``evaluate(x) -> (E(x), ∇E(x))``, shapes ``(chains,)`` and ``(chains, dim)`` or ``(chains, 0)``
Evaluate = Callable[[Tensor], tuple[Tensor, Tensor]]


class State(NamedTuple):
    """Every chain's position with its cached energy, gradient and log q.

    Attributes
    ----------
    position
        x, shape ``(chains, dim)``.
    energy
        E(x) in k_BT, shape ``(chains,)``.
    grad
        ∇E(x), shape ``(chains, dim)``; shape ``(chains, 0)`` when the evaluator
        takes no gradient (:func:`energy_only`).
    log_q
        log q(x), the proposal's log density at x, shape ``(chains,)``.
    """

    position: Tensor
    energy: Tensor
    grad: Tensor
    log_q: Tensor


class Info(NamedTuple):
    """What one IMH jump did, per chain (shape ``(chains,)`` but ``proposal``).

    Attributes
    ----------
    acceptance_rate
        min(1, w(y)/w(x)), zero for an invalid proposal (non-finite E(y) or log q(y)).
    is_accepted
        Whether the chain jumped.
    proposal
        The proposed state (whether accepted or not).
    """

    acceptance_rate: Tensor
    is_accepted: Tensor
    proposal: State


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


def energy_only(energy: Callable[[Tensor], Tensor]) -> Evaluate:
    """An evaluator that takes E(x) only, with an empty gradient of shape ``(chains, 0)``.

    One energy evaluation per chain and no gradient: the cost of a pure IMH jump.
    """

    def evaluate(x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            e = energy(x)
        return e, x.new_empty(x.shape[0], 0)

    return evaluate


def init(position: Tensor, log_q: Tensor, evaluate: Evaluate) -> State:
    """The state at ``position`` (``(chains, dim)``) with log q there (``(chains,)``).

    One evaluation per chain. Chains usually start at proposal draws, whose
    log q the proposal returns with them.
    """
    energy, grad = evaluate(position)
    return State(position, energy, grad, log_q.to(energy))


def log_importance_weight(state: State) -> Tensor:
    """log w(x) = −E(x) − log q(x), shape ``(chains,)``; −inf where not finite."""
    log_w = -state.energy - state.log_q
    ok = torch.isfinite(log_w) & torch.isfinite(state.position).all(-1)
    return torch.where(ok, log_w, torch.full_like(log_w, -torch.inf))


def _jump(state: State, new: State, log_u: Tensor) -> tuple[State, Tensor, Tensor]:
    """The IMH decision given log u: the new state, whether accepted, min(1, w(y)/w(x))."""
    log_w_new = log_importance_weight(new)
    log_ratio = log_w_new - log_importance_weight(state)
    accepted, rate = mh.metropolis_decide(log_ratio, log_w_new, log_u)
    return mh.select(accepted, new, state), accepted, rate


def build_kernel(propose: Proposal, compile: Switch = False) -> Callable[..., tuple[State, Info]]:
    """The IMH transition ``step(generator, state, evaluate) -> (state, info)``.

    Draws y ∼ q for every chain, evaluates the target once per chain at y, and
    accepts with min(1, w(y)/w(x)) (Tierney 1994). A proposal with a non-finite
    log w is rejected. ``compile`` compiles the decision
    (:mod:`~boltzbench.mcmc.compiling`); the proposal and the evaluator run as given.
    """
    decide = Compiled(_jump, "flow_proposal.jump", resolve(compile))

    def step(generator: torch.Generator, state: State, evaluate: Evaluate) -> tuple[State, Info]:
        y, log_q = propose(generator, state.position.shape[0])
        y = y.to(state.position)
        new = init(y, log_q, evaluate)
        like = new.energy.to(torch.promote_types(new.energy.dtype, new.log_q.dtype))
        state, accepted, rate = decide(state, new, mh.log_uniform(like, generator))
        return state, Info(rate, accepted, new)

    return step


def build_mixed_kernel(
    propose: Proposal,
    log_prob: Callable[[Tensor], Tensor],
    n_local: int,
    compile: Switch = False,
) -> Callable[..., tuple[State, MixedInfo]]:
    """``n_local`` MALA steps then one IMH jump (Gabrié et al. 2022, Algorithm 1).

    Returns ``step(generator, state, evaluate, step_size) -> (state, info)``, with
    ``evaluate`` giving the energy *and* gradient and ``step_size`` the MALA ε
    (a number or one per chain). ``log_prob(x)`` is log q(x), shape ``(chains,)``:
    it refreshes the cached log q after the local moves, before the jump.
    ``compile`` compiles the MALA steps and the jump's decision.
    """
    if n_local < 1:
        raise ValueError(f"the mixed kernel needs n_local >= 1, got {n_local}")
    local, jump = mala.build_kernel(compile), build_kernel(propose, compile)

    def step(
        generator: torch.Generator, state: State, evaluate: Evaluate, step_size: Tensor | float
    ) -> tuple[State, MixedInfo]:
        potential = mh.potential_from(evaluate)
        x = mh.State(state.position, state.energy, state.grad)
        rate = accepted = torch.zeros_like(state.energy)
        for _ in range(n_local):
            x, info = local(generator, x, potential, step_size)
            rate = rate + info.acceptance_rate
            accepted = accepted + info.is_accepted.to(rate)
        with torch.no_grad():
            log_q = log_prob(x.position).to(x.energy)
        state, info = jump(generator, State(*x, log_q), evaluate)
        return state, MixedInfo(rate / n_local, accepted / n_local, info)

    return step
