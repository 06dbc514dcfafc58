"""Parallel tempering (replica exchange), batched over temperatures and chains.

Swendsen & Wang 1986, "Replica Monte Carlo simulation of spin glasses"; Geyer
1991, "Markov chain Monte Carlo maximum likelihood"; Earl & Deem 2005, "Parallel
tempering: theory, applications, and new perspectives". K replicas run at
inverse temperatures 1 = β₀ > β₁ > … > β_{K−1} = 1/T_max, replica k targeting

    p_k(x) ∝ exp(−β_k E(x)),

and C independent ensembles of K replicas run side by side. Positions have shape
``(K, C, dim)``, per-replica quantities ``(K, C)``. Energies are reduced (k_BT).

One step is

1. a local move of every replica: a MALA or HMC step
   (:mod:`boltzbench.mcmc.mala`, :mod:`boltzbench.mcmc.hmc`) on E_k = β_k E with
   the step size ε_k of its temperature;
2. swaps of neighbouring temperatures under the deterministic even–odd scheme
   (Okabe, Kawata, Okamoto & Mikami 2001; Syed, Bouchard-Côté, Deligiannidis &
   Doucet 2022, "Non-reversible parallel tempering", the "DEO" scheme): the
   pairs (0,1), (2,3), … at one step and (1,2), (3,4), … at the next. A pair
   (k, k+1) swaps its positions with probability

       min(1, exp((β_k − β_{k+1}) (E(x_k) − E(x_{k+1})))).

A swap moves the cached energy and gradient with the position, so it costs no
evaluation: a step costs K·C energy-and-gradient evaluations for MALA, K·C·L
for HMC with L leapfrog steps, all through ``potential``. The state caches the
untempered E(x) and ∇E(x); the tempered ones are β_k times these. A local
proposal with a non-finite energy is rejected
(:func:`~boltzbench.mcmc.proposal.metropolis_accept`), and so is a swap where
either energy is not finite.

Usage::

    betas = tempering.geometric_ladder(8, t_max=20.0)
    state = tempering.init(x0, potential)          # x0: (8, chains, dim)
    step = tempering.build_kernel(betas, "mala")
    state, info = step(generator, state, potential, step_sizes)   # step_sizes: (8,)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from boltzbench.mcmc import hmc, mala
from boltzbench.mcmc.compiling import CountedPotential, Switch
from boltzbench.mcmc.proposal import Potential, metropolis_accept

__all__ = [
    "State",
    "Info",
    "TemperedState",
    "geometric_ladder",
    "tempered_potential",
    "init",
    "build_kernel",
    "LOCAL_KERNELS",
]

#: the local kernels and the acceptance their step size is tuned towards
#: (Roberts & Rosenthal 1998 for MALA; Beskos et al. 2013 for HMC)
LOCAL_KERNELS = {"mala": 0.574, "hmc": 0.651}


class State(NamedTuple):
    """Every replica's position with its cached (untempered) energy and gradient.

    Attributes
    ----------
    position
        x, shape ``(K, C, dim)``: K temperatures (β = 1 first), C ensembles.
    energy
        E(x) in k_BT, shape ``(K, C)``.
    grad
        ∇E(x), shape ``(K, C, dim)``.
    swap_parity
        Which pairs the next step proposes to swap: 0 for (0,1), (2,3), …;
        1 for (1,2), (3,4), ….
    """

    position: Tensor
    energy: Tensor
    grad: Tensor
    swap_parity: int = 0


class Info(NamedTuple):
    """What one step did.

    Attributes
    ----------
    acceptance_rate
        Of the local moves, min(1, α), shape ``(K, C)``.
    is_accepted
        Whether the local move was accepted, shape ``(K, C)``.
    swap_proposed
        Whether the pair (k, k+1) was proposed this step, shape ``(K − 1,)``.
    swap_acceptance_rate
        min(1, exp(log α_swap)) of the pair (k, k+1), shape ``(K − 1, C)``;
        zero where not proposed.
    is_swapped
        Whether the pair swapped, shape ``(K − 1, C)``.
    """

    acceptance_rate: Tensor
    is_accepted: Tensor
    swap_proposed: Tensor
    swap_acceptance_rate: Tensor
    is_swapped: Tensor


class TemperedState(NamedTuple):
    """A flattened replica state for the local kernel (rows = K·C replicas).

    ``energy`` and ``grad`` are β E and β ∇E (what the kernel sees);
    ``target_energy`` and ``target_grad`` are E and ∇E, carried along.
    """

    position: Tensor
    energy: Tensor
    grad: Tensor
    target_energy: Tensor
    target_grad: Tensor


def geometric_ladder(n_temps: int, t_max: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """β_k = T_max^(−k/(K−1)), k = 0…K−1: from 1 down to 1/T_max, shape ``(K,)``.

    Temperatures in a geometric progression give equal swap acceptance between
    neighbours when the heat capacity is constant (Kofke 2002, "On the acceptance
    probability of replica-exchange Monte Carlo trials"). K = 1 gives β = (1,).
    """
    if n_temps < 1 or not t_max >= 1:
        raise ValueError(f"need n_temps >= 1 and t_max >= 1, got {n_temps}, {t_max}")
    if n_temps == 1:
        return torch.ones(1, dtype=dtype)
    k = torch.arange(n_temps, dtype=torch.float64)
    return (float(t_max) ** (-k / (n_temps - 1))).to(dtype)


def _temper(x: Tensor, energy: Tensor, grad: Tensor, beta: Tensor) -> TemperedState:
    """The tempered state of rows at inverse temperatures ``beta`` (shape ``(rows,)``)."""
    return TemperedState(x, beta * energy, beta[:, None] * grad, energy, grad)


def tempered_potential(potential: Potential, beta: Tensor) -> Callable[[Tensor], TemperedState]:
    """Positions ``(rows, dim)`` → :class:`TemperedState` at β (shape ``(rows,)``).

    One evaluation of ``potential`` per row. Of a
    :class:`~boltzbench.mcmc.compiling.CountedPotential` it is one too
    (:meth:`~boltzbench.mcmc.compiling.CountedPotential.map`), so that the local
    kernel fuses its step, tempering included, into one compiled graph.
    """
    if isinstance(potential, CountedPotential):
        return potential.map(
            lambda x, s: _temper(x, s.energy, s.grad, beta), f"{potential.name} tempered"
        )

    def evaluate(x: Tensor) -> TemperedState:
        s = potential(x)
        return _temper(x, s.energy, s.grad, beta)

    return evaluate


def init(position: Tensor, potential: Potential) -> State:
    """The state at ``position`` (shape ``(K, C, dim)``): one evaluation per replica."""
    k, c, d = position.shape
    s = potential(position.reshape(k * c, d))
    return State(position, s.energy.reshape(k, c), s.grad.reshape(k, c, d), 0)


def build_kernel(
    betas: Tensor, local: str = "mala", compile: Switch = False
) -> Callable[..., tuple[State, Info]]:
    """The parallel-tempering transition
    ``step(generator, state, potential, step_sizes, n_leapfrog=1) -> (state, info)``.

    Parameters
    ----------
    betas
        Inverse temperatures, shape ``(K,)``, β₀ = 1 first and decreasing
        (e.g. :func:`geometric_ladder`).
    local
        The local kernel, ``"mala"`` or ``"hmc"``.
    compile
        Compile the local kernel's arithmetic (:mod:`~boltzbench.mcmc.compiling`)
        around a plain potential. On a
        :class:`~boltzbench.mcmc.compiling.CountedPotential` (built by
        :func:`~boltzbench.mcmc.compiling.potential`) the local step of every
        replica, tempering included, is one compiled graph whatever ``compile``
        says; the swaps stay eager (a few ``(K, C)`` operations).

    ``step_sizes`` has shape ``(K,)`` (one ε per temperature) or ``(K, C)`` (one per
    replica, e.g. during warm-up) or is a number;
    ``n_leapfrog`` is the number of leapfrog steps L of HMC (must be 1 for MALA).
    ``potential`` maps positions ``(rows, dim)`` to a
    :class:`~boltzbench.mcmc.proposal.State` of the untempered target.
    """
    if local not in LOCAL_KERNELS:
        raise ValueError(f"local kernel must be one of {', '.join(LOCAL_KERNELS)}, got {local!r}")
    betas = torch.as_tensor(betas)
    if betas.ndim != 1 or float(betas[0]) != 1.0 or bool((betas[1:] >= betas[:-1]).any()):
        raise ValueError(f"betas must start at 1 and decrease, got {betas.tolist()}")
    kernel = mala.build_kernel(compile) if local == "mala" else hmc.build_kernel(compile=compile)
    tempered: dict[tuple, tuple] = {}  # (potential, C, dtype, device) → (β per row, potential)

    def step(
        generator: torch.Generator,
        state: State,
        potential: Potential,
        step_sizes: Tensor | float,
        n_leapfrog: int = 1,
    ) -> tuple[State, Info]:
        if local == "mala" and n_leapfrog != 1:
            raise ValueError(f"MALA takes one leapfrog step, got n_leapfrog={n_leapfrog}")
        extra = () if local == "mala" else (n_leapfrog,)
        b = betas.to(state.energy)
        key = (potential, state.energy.shape[1], b.dtype, b.device)
        if key not in tempered:  # one tempered potential (and compiled graph) per run
            beta = b.repeat_interleave(key[1])
            tempered[key] = beta, tempered_potential(potential, beta)
        state, rate, accepted = _local_move(
            kernel, generator, state, *tempered[key], step_sizes, extra
        )
        state, swaps = _swap(generator, state, b)
        return state, Info(rate, accepted, *swaps)

    return step


def _local_move(kernel, generator, state: State, beta, potential, step_sizes, extra):
    """One local kernel step of every replica on its tempered ``potential``
    (β per row ``beta``, shape ``(K·C,)``).

    Returns the new state, the acceptance rates and the accept flags (both ``(K, C)``).
    """
    k, c, d = state.position.shape
    eps = torch.as_tensor(step_sizes, dtype=state.position.dtype, device=state.position.device)
    eps = eps.reshape(-1) if eps.ndim == 2 else eps.repeat_interleave(c) if eps.ndim else eps
    flat = _temper(
        state.position.reshape(k * c, d),
        state.energy.reshape(-1),
        state.grad.reshape(k * c, d),
        beta,
    )
    new, info = kernel(generator, flat, potential, eps, *extra)
    moved = State(
        new.position.reshape(k, c, d),
        new.target_energy.reshape(k, c),
        new.target_grad.reshape(k, c, d),
        state.swap_parity,
    )
    return moved, info.acceptance_rate.reshape(k, c), info.is_accepted.reshape(k, c)


def _swap(generator: torch.Generator, state: State, betas: Tensor) -> tuple[State, tuple]:
    """Propose the swaps of the pairs of parity ``state.swap_parity`` (see the module docstring).

    Returns the new state (parity flipped) and (swap_proposed, swap_acceptance_rate,
    is_swapped) of :class:`Info`.
    """
    n_temps, c = state.energy.shape
    device = state.energy.device
    lo = torch.tensor(range(state.swap_parity, n_temps - 1, 2), dtype=torch.long, device=device)
    hi = lo + 1
    e_lo, e_hi = state.energy[lo], state.energy[hi]
    log_ratio = (betas[lo] - betas[hi])[:, None] * (e_lo - e_hi)
    # the sum is finite exactly when both energies are, so a swap with a NaN or
    # infinite energy is rejected by the shared Metropolis step
    accepted, rate = metropolis_accept(log_ratio, e_lo + e_hi, generator)
    source = torch.arange(n_temps, device=device)[:, None].expand(n_temps, c).clone()
    source[lo] = torch.where(accepted, hi[:, None], lo[:, None])
    source[hi] = torch.where(accepted, lo[:, None], hi[:, None])
    swapped = State(
        torch.take_along_dim(state.position, source[..., None], dim=0),
        torch.take_along_dim(state.energy, source, dim=0),
        torch.take_along_dim(state.grad, source[..., None], dim=0),
        1 - state.swap_parity,
    )
    proposed = torch.zeros(n_temps - 1, dtype=torch.bool, device=device)
    proposed[lo] = True
    rates = torch.zeros(n_temps - 1, c, dtype=state.energy.dtype, device=device)
    rates[lo] = rate
    is_swapped = torch.zeros(n_temps - 1, c, dtype=torch.bool, device=device)
    is_swapped[lo] = accepted
    return swapped, (proposed, rates, is_swapped)
