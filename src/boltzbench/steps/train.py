"""Train step: fit a method on a target, write the model artifact."""

from __future__ import annotations

import logging
from typing import Any

import torch

from boltzbench.io import load_model, read_store, save_model
from boltzbench.provenance import now, provenance_attrs
from boltzbench.steps.common import (
    build_counted_target,
    build_method,
    generator,
    resolve_device,
    timed,
)

__all__ = ["run"]

log = logging.getLogger(__name__)


def _training_data(inputs: dict) -> torch.Tensor | None:
    """The 'train' reference split as float64, when the method trains on data."""
    if "reference" not in inputs:
        return None
    return torch.from_numpy(read_store(inputs["reference"])["x"].values).double()


def run(
    *,
    inputs: dict,
    outputs: dict,
    target_name: str,
    target: dict[str, Any],
    method_name: str,
    method: dict[str, Any],
    seed: int,
    device: str = "cpu",
    source: str = "",
) -> None:
    started = now()
    dev = resolve_device(device)
    counted = build_counted_target(target)
    model = build_method(method)
    times: dict[str, float] = {}
    data = _training_data(inputs)
    with timed(times, "fit"):
        model.fit(counted, data, generator("train", target_name, method_name, seed))
    log.info("trained %s on %s (seed %d): %s", method_name, target_name, seed, counted.counts)
    config = dict(
        target_name=target_name, target=target, method_name=method_name, method=method, seed=seed
    )
    attrs = provenance_attrs("train", config, seed, inputs, started)
    attrs.update(counted.counts.as_dict("fit_n_"), fit_seconds=times["fit"])
    attrs["fit_device"] = str(dev)
    attrs["fit_n_data"] = 0 if data is None else int(data.shape[0])  # exact samples used
    save_model(outputs["model"], model.model_state(), getattr(model, "history_", {}), attrs)


def load_fitted(path: str, target, method_spec: dict[str, Any]):
    """The method of ``method_spec`` restored from a model artifact, and its attrs."""
    state, _, attrs = load_model(path)
    return build_method(method_spec).load_model_state(target, state), attrs
