"""Cost metrics: what a sample set is worth per target evaluation.

The sample set's evaluation counts are its attributes: ``fit_n_energy`` and
``sample_n_energy`` for a run boltzbench counted, or ``declared_n_energy`` for
samples made elsewhere whose costs are declared (``costs_declared``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from boltzbench.estimators import normalized_kish_ess
from boltzbench.targets.base import Target

if TYPE_CHECKING:  # only for annotations: metrics never import the sampler families
    from boltzbench.core import SampleSet

__all__ = [
    "effective_samples",
    "total_energy_evaluations",
    "ess_per_1e6_evals",
    "run_costs",
    "COST_PREFIXES",
    "DECLARED_TOTALS",
]

#: sample-store attributes that are costs (copied into the metrics file)
COST_PREFIXES = ("fit_", "sample_", "check_")
#: declared costs of samples made elsewhere (``declared_<key>``) → the total they give
DECLARED_TOTALS = {
    "n_energy": "total_n_energy",
    "n_grad": "total_n_grad",
    "seconds": "total_seconds",
}


def effective_samples(samples: SampleSet) -> float:
    """The sample set's ESS as a number of samples (NaN where none is defined).

    Weighted sets: the Kish ESS, (Σw)²/Σw² over all rows. MCMC chains: the
    autocorrelation ESS of the kept draws (Vehtari et al. 2021), the smallest
    over coordinates (``ess_per_dim``). Other unweighted sets: NaN.
    """
    if samples.log_weight is not None:
        return normalized_kish_ess(samples.log_weight) * samples.log_weight.shape[0]
    ess = samples.diagnostics.get("ess_per_dim")
    if ess is not None and ess.numel() and bool(torch.isfinite(ess).all()):
        return float(ess.min())
    return math.nan


def total_energy_evaluations(attrs: dict[str, Any]) -> float:
    """Target energy evaluations of fit + sample (counted), or the declared ones
    (``declared_n_energy``, NaN when none) when ``costs_declared``."""
    if attrs.get("costs_declared"):
        return float(attrs.get("declared_n_energy", math.nan))
    return float(attrs.get("fit_n_energy", 0)) + float(attrs.get("sample_n_energy", 0))


def ess_per_1e6_evals(samples: SampleSet, target: Target) -> float:
    """ESS per 10⁶ energy evaluations: 1e6 · :func:`effective_samples` /
    :func:`total_energy_evaluations`; NaN when no evaluation was counted."""
    evals = total_energy_evaluations(samples.attrs)
    return 1e6 * effective_samples(samples) / evals if evals > 0 else math.nan


def run_costs(attrs: dict[str, Any]) -> dict[str, float]:
    """The costs of a sample store's run, from its ``attrs``: every ``fit_*``,
    ``sample_*`` and ``check_*`` attribute, the totals (:func:`_totals`),
    ``budget`` (NaN without one) and ``budget_used`` = total_n_energy / budget."""
    cost = {k: float(v) for k, v in attrs.items() if k.startswith(COST_PREFIXES)}
    cost.update(_totals(attrs, cost))
    cost["budget"] = float(attrs.get("budget", math.nan))
    cost["budget_used"] = cost["total_n_energy"] / cost["budget"]  # NaN without a budget
    return cost


def _totals(attrs: dict[str, Any], cost: dict[str, float]) -> dict[str, float]:
    """``total_n_energy``, ``total_n_grad``, ``total_seconds`` and ``costs_declared``.

    Counted runs: fit + sample, ``costs_declared`` 0. Samples made elsewhere
    (the store's ``costs_declared``): the costs their file declares, NaN
    where it declares none, and ``costs_declared`` 1; boltzbench's own check
    of them (``check_n_*``) is not a cost of the sampler.
    """
    if attrs.get("costs_declared"):
        declared = {t: attrs.get(f"declared_{k}", math.nan) for k, t in DECLARED_TOTALS.items()}
        return {**{t: float(v) for t, v in declared.items()}, "costs_declared": 1.0}
    return {
        "total_n_energy": cost.get("fit_n_energy", 0) + cost.get("sample_n_energy", 0),
        "total_n_grad": cost.get("fit_n_grad", 0) + cost.get("sample_n_grad", 0),
        "total_seconds": cost.get("fit_seconds", 0) + cost.get("sample_seconds", 0),
        "costs_declared": 0.0,
    }
