"""Train step: fit a method on a target, write the model artifact."""

from __future__ import annotations

import logging
from typing import Any

import torch

from boltzbench.io import read_store, save_model
from boltzbench.jobs import (
    budget_attrs,
    build_counted_target,
    generator,
    job_checkpoint,
    job_key,
    named_divergence,
    on_device,
    plan_attrs,
    planned_method,
    resolve_device,
    timed,
    training_budget,
)
from boltzbench.provenance import now, provenance_attrs
from boltzbench.references import Trajectories

__all__ = ["run"]

log = logging.getLogger(__name__)


def _training_data(inputs: dict, time_order: bool = False) -> torch.Tensor | Trajectories | None:
    """The 'train' reference split as float64, when the method trains on data; as
    :class:`~boltzbench.references.Trajectories` for a method that ``uses_time_order``
    when the reference stores each row's MD replica and frame."""
    if "reference" not in inputs:
        return None
    ds = read_store(inputs["reference"])
    x = torch.from_numpy(ds["x"].values).double()
    if not (time_order and "diag__md_replica" in ds and "diag__md_frame" in ds):
        return x
    index = [torch.from_numpy(ds[f"diag__md_{k}"].values).long() for k in ("replica", "frame")]
    return Trajectories(x, *index)


def run(
    *,
    inputs: dict,
    outputs: dict,
    target_name: str,
    target: dict[str, Any],
    method_name: str,
    method: dict[str, Any],
    seed: int,
    n_samples: int = 0,
    budget: int | None = None,
    device: str = "cpu",
    checkpoint: str | None = None,
    checkpoint_every: int = 0,
    source: str = "",
) -> None:
    """Fit and write the model; a checkpoint left by a killed attempt is resumed.

    With a ``budget`` (target evaluations of fit and sample together), the method
    is first planned to spend it (:func:`~boltzbench.jobs.planned_method`:
    its budget-decided settings, such as training steps, are filled in); training
    may use what is left after the sampling of ``n_samples`` is reserved
    (:func:`~boltzbench.jobs.training_budget`), and stops there. The
    model's attrs record the plan (``budget_planned``, ``budget_settings``,
    ``budget_note``).
    """
    started = now()
    dev = resolve_device(device)
    config = dict(
        target_name=target_name, target=target, method_name=method_name, method=method, seed=seed
    )
    if budget is not None:  # unbudgeted jobs keep their config slice (and checkpoints)
        config.update(budget=budget, n_samples=n_samples)
    times: dict[str, float] = {}
    with on_device(dev):
        model, plan = planned_method(method, budget, n_samples)
        fit_budget = training_budget(model, budget, n_samples)
        counted = build_counted_target(target, fit_budget).to(dev)
        data = _training_data(inputs, model.uses_time_order)
        if isinstance(data, Trajectories):
            data = Trajectories(*(t.to(dev) for t in data))
        elif data is not None:
            data = data.to(dev)
        ckpt = job_checkpoint(
            checkpoint,
            checkpoint_every,
            job_key("train", config, source, inputs, dev),
            counted,
            times,
            "fit",
        )
        with timed(times, "fit"), named_divergence(method_name, target_name):
            gen = generator("train", target_name, method_name, seed, device=dev)
            model.fit(counted, data, gen, ckpt)
    log.info("trained %s on %s (seed %d): %s", method_name, target_name, seed, counted.counts)
    attrs = provenance_attrs("train", config, seed, inputs, started)
    attrs.update(counted.counts.as_dict("fit_n_"), fit_seconds=times["fit"])
    attrs.update(device=str(dev), resumed_from_step=ckpt.resumed_from)
    rows = data.x if isinstance(data, Trajectories) else data
    attrs["fit_n_data"] = 0 if rows is None else int(rows.shape[0])  # exact samples used
    attrs.update(budget_attrs(budget, counted, "fit"), **plan_attrs(plan))
    save_model(outputs["model"], model.model_state(), getattr(model, "history_", {}), attrs)
    ckpt.clear()
