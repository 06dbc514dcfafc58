"""Evaluate step: every applicable metric for one (target, method, seed), and
the noise floor of every sample metric for one (target, seed).

Both draw the seed's N_eval reference rows with the same generator (seeded by
target and seed), so a method and its floor are scored against the same rows.
A method with a density (``Method.has_density``) is loaded from its model
store, and its log density at those rows gives the forward metrics.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from boltzbench.core import SampleSet
from boltzbench.estimators import normalized_kish_ess
from boltzbench.io import dataset_to_samples, load_model, read_store, write_json
from boltzbench.metrics import evaluate, noise_floor
from boltzbench.metrics.base import LogDensity
from boltzbench.provenance import now, provenance_attrs
from boltzbench.steps.common import build_method, generator
from boltzbench.targets import Target, build_target

__all__ = ["run", "run_noise_floor"]

log = logging.getLogger(__name__)

#: sample-store attributes copied into the metrics file as cost and diagnostics
COST_PREFIXES = ("fit_", "sample_", "check_")
#: declared costs of samples made elsewhere (``declared_<key>``) → the total they give
DECLARED_TOTALS = {
    "n_energy": "total_n_energy",
    "n_grad": "total_n_grad",
    "seconds": "total_seconds",
}
DIAGNOSTIC_KEYS = (
    "acceptance",
    "step_size",
    "ess_min",
    "log_Z_hat",
    "n_resample",
    "n_samples",
    "budget_stop_fit",
    "budget_stop_sample",
    "budget_planned",
    "budget_settings",
    "budget_note",
    # samples made elsewhere (kind: external)
    "declared_device",
    "external_path",
    "external_sha256",
    "external_n_rows",
    "energy_checked",
    "n_nonfinite_rows",
    "n_nonfinite_log_weight",
)


def _cost(samples: SampleSet) -> dict[str, float]:
    attrs = samples.attrs
    cost = {k: float(v) for k, v in attrs.items() if k.startswith(COST_PREFIXES)}
    cost.update(_totals(attrs, cost))
    cost["budget"] = float(attrs.get("budget", math.nan))
    cost["budget_used"] = cost["total_n_energy"] / cost["budget"]  # NaN without a budget
    cost["ess_count"] = effective_samples(samples)
    evals = cost["total_n_energy"]
    cost["ess_per_1e6_evals"] = 1e6 * cost["ess_count"] / evals if evals > 0 else math.nan
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


def _log_density(path: str | None, target: Target, method: dict[str, Any]) -> LogDensity | None:
    """x ↦ log q(x) of the fitted method in the model store ``path``, or None when the
    method has no density (or no model was given)."""
    if path is None:
        return None
    model = build_method(method)
    if not model.has_density:
        return None
    state, _, _ = load_model(path)
    model.load_model_state(target, state)
    return lambda x: model.log_density(target, x)


def run(
    *,
    inputs: dict,
    outputs: dict,
    target_name: str,
    target: dict[str, Any],
    method_name: str,
    seed: int,
    n_eval: int,
    method: dict[str, Any] | None = None,
    source: str = "",
) -> None:
    started = now()
    tgt = build_target(target).double()
    samples = dataset_to_samples(read_store(inputs["samples"]))
    reference = dataset_to_samples(read_store(inputs["reference"]))
    density = _log_density(inputs.get("model"), tgt, method or {})
    gen = generator("evaluate", target_name, method_name, seed)
    ref_gen = generator("reference_rows", target_name, seed)  # the same for every method
    metrics = evaluate(samples, tgt, reference, n_eval, gen, ref_gen, density)
    log.info("%s on %s (seed %d): %s", method_name, target_name, seed, metrics)
    result = {
        "target": target_name,
        "method": method_name,
        "seed": seed,
        "n_samples": int(samples.x.shape[0]),
        "metrics": metrics,
        "cost": _cost(samples),
        "diagnostics": {k: samples.attrs[k] for k in DIAGNOSTIC_KEYS if k in samples.attrs},
    }
    config = dict(
        target_name=target_name, target=target, method_name=method_name, seed=seed, n_eval=n_eval
    )
    if method is not None:
        config["method"] = method
    write_json(
        result, outputs["metrics"], provenance_attrs("evaluate", config, seed, inputs, started)
    )


def run_noise_floor(
    *,
    inputs: dict,
    outputs: dict,
    target_name: str,
    target: dict[str, Any],
    seed: int,
    n_eval: int,
    n_samples: int,
    replicates: int,
    source: str = "",
) -> None:
    """The noise floor of one (target, seed): ``replicates`` perfect samplers of
    ``n_samples`` rows (disjoint chunks of the 'floor' split), each scored like a
    method against the seed's N_eval rows of the 'eval' split."""
    started = now()
    tgt = build_target(target).double()
    reference = dataset_to_samples(read_store(inputs["eval"]))
    floor = dataset_to_samples(read_store(inputs["floor"]))
    gen = generator("noise_floor", target_name, seed)
    ref_gen = generator("reference_rows", target_name, seed)  # the methods' rows
    values = noise_floor(floor, reference, tgt, n_eval, n_samples, replicates, gen, ref_gen)
    log.info("noise floor on %s (seed %d): %s", target_name, seed, values)
    config = dict(
        target_name=target_name,
        target=target,
        seed=seed,
        n_eval=n_eval,
        n_samples=n_samples,
        replicates=replicates,
    )
    result = {
        "target": target_name,
        "seed": seed,
        "n_samples": n_samples,
        "n_eval": n_eval,
        "replicates": values,
    }
    write_json(
        result, outputs["floor"], provenance_attrs("noise_floor", config, seed, inputs, started)
    )
