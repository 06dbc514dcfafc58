"""Step-size adaptation towards a target acceptance rate, per chain.

Both schemes act on log ε, so the step size stays positive.

Dual averaging (Nesterov 2009; Hoffman & Gelman 2014, "The No-U-Turn Sampler",
Algorithm 5), with α_t the acceptance rate at iteration t and δ the target:

    H̄_t   = (1 − 1/(t + t₀)) H̄_{t−1} + (δ − α_t) / (t + t₀)
    log ε_t = μ − (√t / γ) H̄_t,                 μ = log(10 ε₀)
    log ε̄_t = t^(−κ) log ε_t + (1 − t^(−κ)) log ε̄_{t−1}

The iterate ε_t is used during warm-up, the average ε̄_t afterwards. Defaults
γ = 0.05, t₀ = 10, κ = 0.75 are those of Hoffman & Gelman.

Robbins–Monro (Robbins & Monro 1951; Andrieu & Thoms 2008, "A tutorial on
adaptive MCMC"), a stochastic-approximation step with gain g:

    log ε ← log ε + g (α − δ)

Every tensor here has shape ``(chains,)`` (or is a scalar for a shared step).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "DualAveragingState",
    "dual_averaging_init",
    "dual_averaging_update",
    "dual_averaging_final",
    "robbins_monro_update",
]


class DualAveragingState(NamedTuple):
    """Dual-averaging state, per chain.

    Attributes
    ----------
    log_step_size
        log ε_t, the step size to use next.
    log_step_size_avg
        log ε̄_t, the averaged iterate (the final step size).
    error_avg
        H̄_t, the running mean of δ − α.
    mu
        μ, the point log ε_t shrinks towards.
    count
        t, the number of updates so far.
    """

    log_step_size: Tensor
    log_step_size_avg: Tensor
    error_avg: Tensor
    mu: Tensor
    count: int


def dual_averaging_init(step_size: Tensor) -> DualAveragingState:
    """Start dual averaging from ε₀ = ``step_size`` (shape ``(chains,)`` or scalar)."""
    log_eps = torch.log(torch.as_tensor(step_size))
    zero = torch.zeros_like(log_eps)
    return DualAveragingState(log_eps, log_eps, zero, log_eps + math.log(10.0), 0)


def dual_averaging_update(
    state: DualAveragingState,
    acceptance: Tensor,
    target_accept: float,
    gamma: float = 0.05,
    t0: float = 10.0,
    kappa: float = 0.75,
) -> DualAveragingState:
    """One dual-averaging update from the acceptance rates α_t (shape ``(chains,)``)."""
    t = state.count + 1
    eta = 1.0 / (t + t0)
    acceptance = torch.nan_to_num(acceptance.to(state.error_avg), nan=0.0)
    error_avg = (1 - eta) * state.error_avg + eta * (target_accept - acceptance)
    log_eps = state.mu - math.sqrt(t) / gamma * error_avg
    w = t**-kappa
    log_eps_avg = w * log_eps + (1 - w) * state.log_step_size_avg
    return DualAveragingState(log_eps, log_eps_avg, error_avg, state.mu, t)


def dual_averaging_final(state: DualAveragingState) -> Tensor:
    """The step size to keep after warm-up, ε̄_t (ε₀ when no update was made)."""
    return torch.exp(state.log_step_size_avg)


def robbins_monro_update(
    log_step_size: Tensor, acceptance: Tensor, target_accept: float, gain: float
) -> Tensor:
    """log ε + g (α − δ): one Robbins–Monro step on the log step size."""
    acceptance = torch.nan_to_num(torch.as_tensor(acceptance).to(log_step_size), nan=0.0)
    return log_step_size + gain * (acceptance - target_accept)
