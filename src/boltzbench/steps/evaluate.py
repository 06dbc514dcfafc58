"""Evaluate step: every applicable metric for one (target, method, seed), and
the noise floor of every sample metric for one target."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from boltzbench.estimators import normalized_kish_ess
from boltzbench.io import dataset_to_samples, read_store, write_json
from boltzbench.methods.base import SampleSet
from boltzbench.metrics import evaluate, noise_floor
from boltzbench.provenance import now, provenance_attrs
from boltzbench.steps.common import generator
from boltzbench.targets import build_target

__all__ = ["run", "run_noise_floor"]

log = logging.getLogger(__name__)

#: sample-store attributes copied into the metrics file as cost and diagnostics
COST_PREFIXES = ("fit_", "sample_")
DIAGNOSTIC_KEYS = (
    "acceptance",
    "step_size",
    "ess_min",
    "log_Z_hat",
    "n_resample",
    "n_samples",
    "budget_stop_fit",
    "budget_stop_sample",
)


def _cost(samples: SampleSet) -> dict[str, float]:
    attrs = samples.attrs
    cost = {k: float(v) for k, v in attrs.items() if k.startswith(COST_PREFIXES)}
    cost["total_n_energy"] = cost.get("fit_n_energy", 0) + cost.get("sample_n_energy", 0)
    cost["total_n_grad"] = cost.get("fit_n_grad", 0) + cost.get("sample_n_grad", 0)
    cost["total_seconds"] = cost.get("fit_seconds", 0) + cost.get("sample_seconds", 0)
    cost["budget"] = float(attrs.get("budget", math.nan))
    cost["ess_count"] = effective_samples(samples)
    evals = cost["total_n_energy"]
    cost["ess_per_1e6_evals"] = 1e6 * cost["ess_count"] / evals if evals > 0 else math.nan
    return cost


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


def run(
    *,
    inputs: dict,
    outputs: dict,
    target_name: str,
    target: dict[str, Any],
    method_name: str,
    seed: int,
    n_eval: int,
    source: str = "",
) -> None:
    started = now()
    tgt = build_target(target).double()
    samples = dataset_to_samples(read_store(inputs["samples"]))
    reference = dataset_to_samples(read_store(inputs["reference"]))
    gen = generator("evaluate", target_name, method_name, seed)
    ref_gen = generator("reference_rows", target_name, seed)  # the same for every method
    metrics = evaluate(samples, tgt, reference, n_eval, gen, ref_gen)
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
    write_json(
        result, outputs["metrics"], provenance_attrs("evaluate", config, seed, inputs, started)
    )


def run_noise_floor(
    *,
    inputs: dict,
    outputs: dict,
    target_name: str,
    target: dict[str, Any],
    n_eval: int,
    source: str = "",
) -> None:
    started = now()
    tgt = build_target(target).double()
    a = dataset_to_samples(read_store(inputs["eval"]))
    b = dataset_to_samples(read_store(inputs["floor"]))
    floor = noise_floor(b, a, tgt, n_eval, generator("noise_floor", target_name))
    log.info("noise floor on %s: %s", target_name, floor)
    config = dict(target_name=target_name, target=target, n_eval=n_eval)
    result = {"target": target_name, "noise_floor": floor}
    write_json(
        result, outputs["floor"], provenance_attrs("noise_floor", config, None, inputs, started)
    )
