"""Free-energy difference estimators, in k_BT: exponential FEP, BAR and MBAR.

ΔF = F_B − F_A = −log(Z_B / Z_A) between two states with reduced energies
u_A, u_B. The inputs are *works* (reduced energy differences):

* forward, w_F(x) = u_B(x) − u_A(x) for x ~ p_A;
* reverse, w_R(y) = u_A(y) − u_B(y) for y ~ p_B.

For targeted estimators (Jarzynski 2002, Phys. Rev. E 65, 046122;
Wirnsberger et al. 2020, J. Chem. Phys. 153, 144112) the same functions take
the generalized works Φ of a bijection M (:mod:`boltzbench.free_energy.targeted`).

Every estimator returns an :class:`Estimate` (ΔF and its standard error, both
k_BT). The errors are the asymptotic (delta-method) ones for independent
samples; correlated MD frames are subsampled first
(:func:`decorrelated`, pymbar's statistical inefficiency).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import logsumexp

__all__ = ["Estimate", "fep", "bar", "mbar", "decorrelated"]


@dataclass(frozen=True)
class Estimate:
    """ΔF̂ and its standard error σ, both in k_BT, from ``n`` samples."""

    delta_f: float
    sigma: float
    n: int


def fep(w: np.ndarray) -> Estimate:
    """Exponential FEP (Zwanzig 1954): ΔF̂ = −log (1/N) Σ exp(−w_n).

    ``w`` (N,): forward works w_F (then ΔF̂ estimates F_B − F_A), or reverse works
    w_R (then it estimates F_A − F_B; negate it). σ² = Var[e^{−w}] / (N ⟨e^{−w}⟩²)
    by the delta method, computed stably with the weights e^{−w − max}.
    """
    w = np.asarray(w, dtype=np.float64)
    n = len(w)
    log_mean = logsumexp(-w) - np.log(n)
    ratio = np.exp(-w - log_mean)  # e^{−w} / ⟨e^{−w}⟩, mean 1
    return Estimate(float(-log_mean), float(np.sqrt(ratio.var() / n)), n)


def _fermi(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^x), stable for large |x|."""
    return np.exp(-np.logaddexp(0.0, x))


def bar(w_f: np.ndarray, w_r: np.ndarray) -> Estimate:
    """Bennett's acceptance ratio (Bennett 1976; Shirts et al. 2003, PRL 91, 140601).

    ΔF̂ solves Σ_F f(M + w_F − ΔF) = Σ_R f(−M + w_R + ΔF) with f(x) = 1/(1+e^x)
    and M = log(N_F / N_R). σ² = Σ_{d∈{F,R}} (⟨f_d²⟩ / ⟨f_d⟩² − 1) / N_d (Shirts
    et al. 2003, eq. 10's asymptotic form).
    """
    w_f, w_r = np.asarray(w_f, np.float64), np.asarray(w_r, np.float64)
    m = np.log(len(w_f) / len(w_r))

    def imbalance(df: float) -> float:
        return np.log(_fermi(m + w_f - df).sum()) - np.log(_fermi(-m + w_r + df).sum())

    lo, hi = fep(w_f).delta_f, -fep(w_r).delta_f
    lo, hi = min(lo, hi) - 1.0, max(lo, hi) + 1.0
    while imbalance(lo) > 0:
        lo -= 2 * (hi - lo)
    while imbalance(hi) < 0:
        hi += 2 * (hi - lo)
    df = brentq(imbalance, lo, hi, xtol=1e-12)
    var = sum(
        ((f := _fermi(x)) ** 2).mean() / f.mean() ** 2 / len(x) - 1.0 / len(x)
        for x in (m + w_f - df, -m + w_r + df)
    )
    return Estimate(float(df), float(np.sqrt(max(var, 0.0))), len(w_f) + len(w_r))


def mbar(u_kn: np.ndarray, n_k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MBAR (Shirts & Chodera 2008, J. Chem. Phys. 129, 124105) through pymbar 4.

    ``u_kn`` (K, N): reduced energy of every sample n at every state k, samples
    ordered by the state that drew them; ``n_k`` (K,) how many each state drew.
    Returns (f_k − f_0, its standard error), each (K,), k_BT.
    """
    from pymbar import MBAR

    fit = MBAR(u_kn, n_k, solver_protocol="robust")
    res = fit.compute_free_energy_differences()
    return np.asarray(res["Delta_f"][0]), np.asarray(res["dDelta_f"][0])


def decorrelated(series: np.ndarray) -> np.ndarray:
    """Indices of an (approximately) uncorrelated subsample of ``series`` (F,).

    Every g-th frame, g the statistical inefficiency (Chodera et al. 2007,
    J. Chem. Theory Comput. 3, 26) that pymbar's ``timeseries`` estimates.
    """
    from pymbar import timeseries

    g = timeseries.statistical_inefficiency(np.asarray(series, np.float64), fast=False)
    step = max(int(np.ceil(g)), 1)
    return np.arange(0, len(series), step)
