"""Convergence diagnostics of several chains: autocorrelation ESS and split R̂.

Draws have shape ``(chains, draws, *event)`` (M chains of N draws); results have
shape ``event`` (one value per coordinate). Everything is computed in float64.

Effective sample size (Geyer 1992, "Practical Markov chain Monte Carlo";
Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021, "Rank-normalization,
folding, and localization: an improved R̂", eqs. 10–11, as in Stan):

* autocovariances γ_m(t) of each chain by FFT (biased, divided by N);
* W = mean within-chain variance, var⁺ = (N−1)/N · W + B/N with B/N the
  variance of the chain means;
* ρ̂_t = 1 − (W − mean_m γ_m(t)) / var⁺ (ρ̂_0 = 1), which pools all chains;
* Geyer's *initial positive sequence*: pair sums P_k = ρ̂_{2k} + ρ̂_{2k+1} are
  summed up to (not including) the first k with P_k ≤ 0, and made monotone
  (*initial monotone sequence*: P_k ← min(P_k, P_{k−1}));
* τ̂ = −1 + 2 Σ_k P_k, floored at 1/log₁₀(MN) as in Stan, and ESS = M N / τ̂.

For i.i.d. draws ESS ≈ MN; for an AR(1) series with coefficient φ,
ESS ≈ MN (1 − φ) / (1 + φ).

Split R̂ (Gelman et al. 2013, BDA3 §11.4; Vehtari et al. 2021): each chain is
cut in two halves, then R̂ = √(var⁺ / W) over the 2M half-chains. Values near 1
mean the chains agree; > 1.01 (strict) or > 1.1 (lenient) flags a problem.
:func:`rank_normalized_split_rhat` is the max of R̂ on rank-normalized draws
(bulk) and on rank-normalized |x − median| (tails), Vehtari et al.'s eq. 14.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "autocovariance",
    "effective_sample_size",
    "split_rhat",
    "rank_normalized_split_rhat",
]


def autocovariance(x: Tensor) -> Tensor:
    """Biased autocovariance γ(t) = (1/N) Σ_s (x_s − x̄)(x_{s+t} − x̄) along axis 1.

    ``x`` has shape ``(chains, draws, *event)``; so does the result (lags 0…N−1).
    Computed by FFT with zero padding to ≥ 2N, so there is no wrap-around.
    """
    x = x.to(torch.float64)
    n = x.shape[1]
    centred = x - x.mean(1, keepdim=True)
    size = 1 << (2 * n - 1).bit_length()
    f = torch.fft.rfft(centred, n=size, dim=1)
    return torch.fft.irfft(f * f.conj(), n=size, dim=1)[:, :n] / n


def _variance_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    """W (mean within-chain variance) and var⁺ for ``x`` of shape (M, N, ...)."""
    m, n = x.shape[:2]
    w = x.var(1, unbiased=True).mean(0)
    between = x.mean(1).var(0, unbiased=True) if m > 1 else torch.zeros_like(w)
    return w, (n - 1) / n * w + between


def effective_sample_size(x: Tensor) -> Tensor:
    """Autocorrelation ESS of ``x`` (shape ``(chains, draws, *event)``), shape ``event``.

    Needs at least 4 draws per chain; returns NaN otherwise, and NaN for a
    coordinate that is constant.
    """
    x = x.to(torch.float64)
    m, n = x.shape[:2]
    if n < 4:
        return torch.full(x.shape[2:], math.nan, dtype=torch.float64)
    w, var_plus = _variance_parts(x)
    rho = 1 - (w - autocovariance(x).mean(0)) / var_plus
    rho[0] = 1.0
    k = n // 2
    pairs = rho[0 : 2 * k : 2] + rho[1 : 2 * k : 2]  # P_k, shape (K, *event)
    positive = torch.cumprod((pairs > 0).to(torch.float64), dim=0)
    monotone = torch.cummin(pairs, dim=0).values
    tau = -1 + 2 * (monotone * positive).sum(0)
    tau = torch.clamp(tau, min=1 / math.log10(m * n))
    return m * n / tau


def split_rhat(x: Tensor) -> Tensor:
    """Split R̂ = √(var⁺ / W) over the half-chains of ``x`` (shape ``(chains, draws, *event)``).

    An odd middle draw is dropped. Needs at least 4 draws per chain.
    """
    x = x.to(torch.float64)
    half = x.shape[1] // 2
    if half < 2:
        raise ValueError(f"split R-hat needs at least 4 draws per chain, got {x.shape[1]}")
    halves = torch.cat([x[:, :half], x[:, -half:]], dim=0)
    w, var_plus = _variance_parts(halves)
    return torch.sqrt(var_plus / w)


def _rank_normalize(x: Tensor) -> Tensor:
    """Φ⁻¹((r − 3/8) / (S + 1/4)) of the ranks r over all S = M N pooled draws."""
    flat = x.reshape(-1, *x.shape[2:])
    ranks = torch.argsort(torch.argsort(flat, dim=0), dim=0).to(torch.float64) + 1
    z = torch.special.ndtri((ranks - 0.375) / (flat.shape[0] + 0.25))
    return z.reshape(x.shape)


def rank_normalized_split_rhat(x: Tensor) -> Tensor:
    """max(bulk R̂, tail R̂) of Vehtari et al. 2021 for ``x`` of shape ``(chains, draws, *event)``."""
    x = x.to(torch.float64)
    median = x.reshape(-1, *x.shape[2:]).median(0).values
    bulk = split_rhat(_rank_normalize(x))
    tail = split_rhat(_rank_normalize((x - median).abs()))
    return torch.maximum(bulk, tail)
