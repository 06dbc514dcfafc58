"""Evaluate step: every applicable metric for one (target, method, seed).

It draws the seed's N_eval reference rows with the same generator as the
noise-floor step (seeded by target and seed), so a method and its floor are
scored against the same rows.
A method with a density (``Method.has_density``), or a path sampler with a path
estimate of it (``Method.has_path_density``), is loaded from its model store,
and its log density at those rows gives the forward metrics.
"""

from __future__ import annotations

import logging
from typing import Any

from boltzbench.io import dataset_to_samples, read_store, write_json
from boltzbench.jobs import fitted_log_density, generator
from boltzbench.metrics import evaluate
from boltzbench.metrics.cost import run_costs
from boltzbench.provenance import now, provenance_attrs
from boltzbench.targets import build_target

__all__ = ["run"]

log = logging.getLogger(__name__)

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
    paths = generator("backward_paths", target_name, method_name, seed)
    density = fitted_log_density(inputs.get("model"), tgt, method or {}, paths)
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
        "cost": run_costs(samples.attrs),
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
