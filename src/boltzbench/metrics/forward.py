"""Forward metrics: a method's density q judged at reference samples x ∼ p.

Reverse metrics (the Kish ESS of the method's own weights, Δlog Z from them)
only look where q puts its samples, so they cannot see a mode that q misses.
The forward metrics of Blessing et al. 2024 ("Beyond ELBOs: a large-scale
evaluation of variational methods for sampling", ICML, arXiv:2406.07423,
Sec. 4) evaluate log q at the N_eval reference samples instead. With the
unnormalized log weights log w(x) = −E(x) − log q(x) at x_i ∼ p, i = 1…N:

* EUBO = (1/N) Σ_i log w(x_i), an estimate of E_p[log p̃ − log q] =
  log Z + KL(p ‖ q) ≥ log Z (the evidence upper bound);
* EUBO − log Z, an estimate of the forward KL(p ‖ q) ≥ 0, when log Z is known;
* forward ESS = 1 / ( mean_i w(x_i) · mean_i 1/w(x_i) ) ∈ (0, 1]: since
  E_p[w] = E_q[w²]/Z and E_p[1/w] = 1/Z, its population value is
  (E_q w)² / E_q[w²], the normalized ESS of importance sampling from q, but
  estimated on p's samples, so a mode q misses (w huge there) drives it to 0.

Each function has the ``"density"`` metric signature
``fn(ref_energy, ref_log_q, target) -> float | None`` (float64 ``(N,)`` each).
A non-finite log q or energy at a reference row means q (or the bookkeeping)
fails there: the EUBO and forward KL are then +inf and the forward ESS 0.
"""

from __future__ import annotations

import math

import torch

from boltzbench.estimators import log_mean_exp
from boltzbench.targets.base import Target

__all__ = ["forward_log_weights", "eubo", "forward_kl", "forward_ess"]


def forward_log_weights(ref_energy: torch.Tensor, ref_log_q: torch.Tensor) -> torch.Tensor:
    """log w(x_i) = −E(x_i) − log q(x_i) at the reference rows, float64 ``(N,)``;
    +inf where either is not finite (q assigns the row no usable density)."""
    lw = -ref_energy.to(torch.float64) - ref_log_q.to(torch.float64)
    return torch.where(torch.isfinite(lw), lw, torch.full_like(lw, math.inf))


def eubo(ref_energy: torch.Tensor, ref_log_q: torch.Tensor, target: Target) -> float | None:
    """EUBO = mean_i [−E(x_i) − log q(x_i)] over the reference rows x_i ∼ p (≥ log Z in
    expectation); None without rows."""
    if ref_energy.numel() == 0:
        return None
    return float(forward_log_weights(ref_energy, ref_log_q).mean())


def forward_kl(ref_energy: torch.Tensor, ref_log_q: torch.Tensor, target: Target) -> float | None:
    """EUBO − log Z, an estimate of KL(p ‖ q) in nats; None when log Z is unknown."""
    value = eubo(ref_energy, ref_log_q, target)
    if value is None or target.log_Z is None:
        return None
    return value - float(target.log_Z)


def forward_ess(ref_energy: torch.Tensor, ref_log_q: torch.Tensor, target: Target) -> float | None:
    """1 / (mean w · mean 1/w) at the reference rows, computed in log space:
    exp(−logmeanexp(log w) − logmeanexp(−log w)); 0 when some log w is +inf."""
    if ref_energy.numel() == 0:
        return None
    lw = forward_log_weights(ref_energy, ref_log_q)
    if not bool(torch.isfinite(lw).all()):
        return 0.0
    return math.exp(-(log_mean_exp(lw) + log_mean_exp(-lw)))
