"""Importance-weight estimators on log weights, each defined once.

Metrics (:mod:`boltzbench.metrics.weights`), SMC's adaptive resampling and the
flow's training monitor all call these. They only need torch, so a sampler can
use them without importing the metrics' dependencies.
"""

from __future__ import annotations

import math

import torch

__all__ = ["clean_log_weights", "log_mean_exp", "mean_log_weight", "normalized_kish_ess"]


def clean_log_weights(log_weight: torch.Tensor) -> torch.Tensor:
    """Float64 copy of ``log_weight`` (shape ``(n,)``) with non-finite entries set to -inf."""
    lw = log_weight.detach().to(torch.float64)
    return torch.where(torch.isfinite(lw), lw, torch.full_like(lw, -math.inf))


def log_mean_exp(log_w: torch.Tensor) -> float:
    """log((1/N) Σ_i exp(log_w_i)) = logsumexp(log_w) - log N, shape ``(N,)`` → float.

    Non-finite entries count as zero weight; -inf when every weight is zero.
    """
    return float(torch.logsumexp(clean_log_weights(log_w), dim=0)) - math.log(log_w.shape[0])


def mean_log_weight(log_w: torch.Tensor) -> float:
    """(1/N) Σ_i log w_i, float64 → float: the ELBO of independent importance (or path)
    weights, E_q[log w] ≤ log Z; −inf when some entry is not finite (a row q puts
    mass on where the target has none, or a failed draw)."""
    lw = log_w.detach().to(torch.float64)
    if lw.numel() == 0 or not bool(torch.isfinite(lw).all()):
        return -math.inf
    return float(lw.mean())


def normalized_kish_ess(log_w: torch.Tensor) -> float:
    """Normalized Kish ESS (Kish 1965): (Σ_i w_i)² / (N Σ_i w_i²) ∈ [1/N, 1].

    Computed on the max-shifted weights w̃_i = exp(log w_i - max_j log w_j) ∈ [0, 1]
    (the ratio is scale-invariant), so nothing overflows. Non-finite log weights
    count as zero weight; 0.0 when every weight is zero.
    """
    lw = clean_log_weights(log_w)
    if lw.numel() == 0 or not torch.isfinite(lw).any():
        return 0.0
    w = torch.exp(lw - lw.max())
    return float(w.sum() ** 2 / (lw.shape[0] * (w**2).sum()))
