"""Metrics: every quality measure of a sample set, one registry.

``METRICS.build(name)`` returns the :class:`Metric` registered under ``name``
(each entry is a factory without parameters). :func:`evaluate` computes every
applicable metric of a sample set, :func:`noise_floor` the floor of every
sample metric, and :func:`metric_docs` the definitions shown in the report.
"""

from __future__ import annotations

from boltzbench.metrics.base import Metric
from boltzbench.metrics.distributional import energy_w1, mmd, w2
from boltzbench.metrics.evaluate import evaluate, metric_docs, noise_floor, nonfinite_fraction
from boltzbench.metrics.modes import has_modes, mode_coverage
from boltzbench.metrics.weights import kish_ess, log_z_error, log_z_hat
from boltzbench.registry import Registry

__all__ = ["METRICS", "Metric", "evaluate", "noise_floor", "metric_docs"]

METRICS: Registry[Metric] = Registry("metric")


def _register(metric: Metric) -> None:
    """Register ``metric`` under its name, as a factory without parameters."""
    METRICS.register(metric.name)(lambda: metric)


_register(
    Metric(
        name="log_z_hat",
        kind="weights",
        fn=log_z_hat,
        doc=(
            "Estimate of log Z: the method's own attrs['log_Z_hat'] (SMC) if present, "
            "else log((1/N) Σ_i w_i) over all N rows with log w = -E - log q; "
            "non-finite log weights count as w = 0. None without weights or estimate."
        ),
        better="neither",
    )
)
_register(
    Metric(
        name="log_z_error",
        kind="weights",
        fn=log_z_error,
        doc=(
            "Δlog Z = |log Ẑ - log Z| with log Ẑ as in log_z_hat and the target's exact "
            "log Z. None when either is unknown."
        ),
    )
)
_register(
    Metric(
        name="ess",
        kind="weights",
        fn=kish_ess,
        doc=(
            "Normalized Kish ESS = (Σ_i w_i)² / (N Σ_i w_i²) ∈ [1/N, 1] over all N rows "
            "(non-finite log weights count as w = 0; 0 if all weights are 0). "
            "None without weights. For a flow, w = p/q is the importance weight of "
            "independent proposals; for SMC, w is the final particle weight, so this is "
            "the ESS accumulated since the last resampling step, not an ESS against a "
            "proposal: the two are not comparable."
        ),
        better="higher",
    )
)
_register(
    Metric(
        name="w2",
        kind="sample",
        fn=w2,
        doc=(
            "Exact 2-Wasserstein distance W2 (not W2²) between n_eval samples and n_eval "
            "reference samples as uniform empirical measures: sqrt of POT ot.emd2 "
            "(network simplex) with squared-Euclidean cost."
        ),
    )
)
_register(
    Metric(
        name="energy_w1",
        kind="sample",
        fn=energy_w1,
        doc=(
            "1-D 1-Wasserstein distance (k_BT) between the energies of n_eval samples and "
            "n_eval reference samples (scipy.stats.wasserstein_distance, uniform weights)."
        ),
    )
)
_register(
    Metric(
        name="mmd",
        kind="sample",
        fn=mmd,
        doc=(
            "MMD = sqrt(max(MMD²_b, 0)) with the biased V-statistic MMD²_b (diagonal terms "
            "included; Gretton et al. 2012) and Gaussian kernel exp(-‖x-y‖²/(2h²)); "
            "h = median of the pairwise Euclidean distances (i < j) of the pooled "
            "samples and reference samples."
        ),
    )
)
_register(
    Metric(
        name="mode_coverage",
        kind="sample",
        fn=mode_coverage,
        doc=(
            "Entropy of the histogram of target.assign_modes over n_eval samples divided "
            "by log(n_modes): 1 = all modes visited equally, 0 = one mode. Only for "
            "targets that label modes."
        ),
        better="higher",
        applies=has_modes,
    )
)
_register(
    Metric(
        name="nonfinite_fraction",
        kind="sampleset",
        fn=nonfinite_fraction,
        doc=(
            "Fraction of all rows whose energy or any coordinate of x is NaN or ±inf; "
            "these rows are dropped before the sample metrics."
        ),
    )
)
