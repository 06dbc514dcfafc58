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
    job_checkpoint,
    job_key,
    on_device,
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
    checkpoint: str | None = None,
    checkpoint_every: int = 0,
    source: str = "",
) -> None:
    """Fit and write the model; a checkpoint left by a killed attempt is resumed."""
    started = now()
    dev = resolve_device(device)
    config = dict(
        target_name=target_name, target=target, method_name=method_name, method=method, seed=seed
    )
    times: dict[str, float] = {}
    with on_device(dev):
        counted = build_counted_target(target).to(dev)
        model = build_method(method)
        data = _training_data(inputs)
        data = None if data is None else data.to(dev)
        ckpt = job_checkpoint(
            checkpoint,
            checkpoint_every,
            job_key("train", config, source, inputs, dev),
            counted,
            times,
            "fit",
        )
        with timed(times, "fit"):
            gen = generator("train", target_name, method_name, seed, device=dev)
            model.fit(counted, data, gen, ckpt)
    log.info("trained %s on %s (seed %d): %s", method_name, target_name, seed, counted.counts)
    attrs = provenance_attrs("train", config, seed, inputs, started)
    attrs.update(counted.counts.as_dict("fit_n_"), fit_seconds=times["fit"])
    attrs.update(device=str(dev), resumed_from_step=ckpt.resumed_from)
    attrs["fit_n_data"] = 0 if data is None else int(data.shape[0])  # exact samples used
    save_model(outputs["model"], model.model_state(), getattr(model, "history_", {}), attrs)
    ckpt.clear()


def load_fitted(path: str, target, method_spec: dict[str, Any]):
    """The method of ``method_spec`` restored from a model artifact, and its attrs."""
    state, _, attrs = load_model(path)
    return build_method(method_spec).load_model_state(target, state), attrs
