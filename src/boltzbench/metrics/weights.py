"""Importance-weight metrics: the log Z estimate, its error and the Kish ESS.

All three read a :class:`~boltzbench.core.SampleSet` as a whole (every
row, no subsampling). Log weights are the unnormalized
log w_i = -E(x_i) - log q(x_i), so that (1/N) Σ w_i is an unbiased estimate of
Z. A non-finite log weight (NaN, ±inf) counts as zero weight, log w_i = -inf;
N still counts that row, so failed draws lower Ẑ and the ESS as they should.
Everything is computed in float64.

On a target whose energy is periodic on all of ℝ (U(1);
:func:`~boltzbench.targets.base.periodic_everywhere`) e^{−E} has no finite
integral over ℝ^dim, so weights against it from a density on ℝ^dim (SMC,
diffusions, an interval flow) estimate nothing: every metric here is None for
such a sample set, and defined for one whose density lives on the torus (a
circular flow, ``attrs["periodic"] == "circular"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from boltzbench.estimators import clean_log_weights, log_mean_exp, normalized_kish_ess
from boltzbench.targets.base import Target, periodic_everywhere

if TYPE_CHECKING:  # only for annotations: metrics never import the sampler families
    from boltzbench.core import SampleSet

__all__ = [
    "weights_defined",
    "clean_log_weights",
    "log_mean_exp",
    "log_z_hat",
    "log_z_error",
    "elbo_gap",
    "kish_ess",
]


def weights_defined(samples: SampleSet, target: Target) -> bool:
    """Whether the sample set's weights are against a finite measure: always, but
    on a target periodic on all of ℝ, where only a density on the torus gives them
    (module docstring)."""
    return not periodic_everywhere(target) or samples.attrs.get("periodic") == "circular"


def log_z_hat(samples: SampleSet, target: Target) -> float | None:
    """Estimate of log Z carried by a sample set.

    log Ẑ = ``samples.attrs["log_Z_hat"]`` when the method reports its own
    estimate (SMC: the product of the incremental normalizers), else
    log Ẑ = log((1/N) Σ_i w_i) over all N rows when ``log_weight`` is present,
    else None. -inf when every weight is zero.
    """
    if not weights_defined(samples, target):
        return None
    if samples.attrs.get("log_Z_hat") is not None:
        return float(samples.attrs["log_Z_hat"])
    if samples.log_weight is None or samples.log_weight.shape[0] == 0:
        return None
    return log_mean_exp(clean_log_weights(samples.log_weight))


def log_z_error(samples: SampleSet, target: Target) -> float | None:
    """Absolute error Δlog Z = |log Ẑ - log Z| (see :func:`log_z_hat`).

    None when the target's exact ``log_Z`` is unknown or the sample set carries
    no estimate; +inf when Ẑ = 0.
    """
    est = log_z_hat(samples, target)
    if est is None or target.log_Z is None:
        return None
    return abs(est - float(target.log_Z))


def elbo_gap(samples: SampleSet, target: Target) -> float | None:
    """ELBO gap log Z − ELBO, with ELBO = ``samples.attrs["log_Z_elbo"]``, the mean log
    weight of independent draws (flows: E_q[log p̃ − log q]; path samplers: over
    paths, E[log p̃ + log P_B − log P_F]).

    An estimate of the reverse KL(q ‖ p) (of the path measures for a path sampler),
    ≥ 0 in expectation; +inf when some weight is not finite. None when the target's
    ``log_Z`` is unknown or the method declares no ELBO (MCMC; SMC, whose final
    weights are not independent draws).
    """
    elbo = samples.attrs.get("log_Z_elbo")
    if samples.log_weight is None or elbo is None or target.log_Z is None:
        return None
    if not weights_defined(samples, target):
        return None
    return float(target.log_Z) - float(elbo)


def kish_ess(samples: SampleSet, target: Target) -> float | None:
    """Normalized Kish effective sample size over all N rows (Kish 1965).

    ESS/N = (Σ_i w_i)² / (N Σ_i w_i²) ∈ [1/N, 1] when some weight is positive.
    It is computed on the max-shifted weights w̃_i = exp(log w_i - max_j log w_j)
    ∈ [0, 1] (the ratio is scale-invariant), so nothing overflows and the
    largest term of Σ w̃² is 1. Exactly 1 for uniform weights and exactly 1/N
    for a single non-zero weight; 0.0 when every weight is zero; None without
    ``log_weight``.
    """
    if samples.log_weight is None or samples.log_weight.shape[0] == 0:
        return None
    if not weights_defined(samples, target):
        return None
    return normalized_kish_ess(samples.log_weight)
