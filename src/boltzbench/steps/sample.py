"""Sample step: draw from a fitted method, write the sample-set store with costs."""

from __future__ import annotations

import logging
from typing import Any

from boltzbench.io import samples_to_dataset, write_store
from boltzbench.provenance import now, provenance_attrs
from boltzbench.steps.common import build_counted_target, generator, resolve_device, timed
from boltzbench.steps.train import load_fitted

__all__ = ["run", "COST_KEYS"]

log = logging.getLogger(__name__)

#: cost attributes every sample store carries
COST_KEYS = (
    "fit_n_energy",
    "fit_n_grad",
    "fit_seconds",
    "sample_n_energy",
    "sample_n_grad",
    "sample_seconds",
)


def run(
    *,
    inputs: dict,
    outputs: dict,
    target_name: str,
    target: dict[str, Any],
    method_name: str,
    method: dict[str, Any],
    seed: int,
    n_samples: int,
    device: str = "cpu",
    source: str = "",
) -> None:
    started = now()
    dev = resolve_device(device)
    counted = build_counted_target(target)
    model, model_attrs = load_fitted(inputs["model"], counted, method)
    times: dict[str, float] = {}
    with timed(times, "sample"):
        samples = model.sample(
            counted, n_samples, generator("sample", target_name, method_name, seed)
        )
    log.info("sampled %s on %s (seed %d): %s", method_name, target_name, seed, counted.counts)
    config = dict(
        target_name=target_name,
        target=target,
        method_name=method_name,
        method=method,
        seed=seed,
        n_samples=n_samples,
    )
    attrs = provenance_attrs("sample", config, seed, inputs, started)
    attrs.update({k: model_attrs[k] for k in model_attrs if k.startswith("fit_")})
    attrs.update(counted.counts.as_dict("sample_n_"), sample_seconds=times["sample"])
    attrs["sample_device"] = str(dev)
    write_store(samples_to_dataset(samples), outputs["samples"], attrs)
