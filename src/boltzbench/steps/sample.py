"""Sample step: draw from a fitted method, write the sample-set store with costs."""

from __future__ import annotations

import logging
from typing import Any

from boltzbench.hashing import canonical_json
from boltzbench.io import samples_to_dataset, write_store
from boltzbench.jobs import (
    budget_attrs,
    build_counted_target,
    generator,
    job_checkpoint,
    job_key,
    load_fitted,
    on_device,
    plan_attrs,
    planned_method,
    resolve_device,
    spending_note,
    timed,
)
from boltzbench.methods import Method
from boltzbench.provenance import now, provenance_attrs
from boltzbench.targets import CountingTarget
from boltzbench.targets.base import periodic_everywhere, wrap_periodic

__all__ = ["run", "COST_KEYS", "cost_attrs", "check_declared_budget"]

log = logging.getLogger(__name__)

#: cost attributes every sample store carries (but that of a method whose costs are
#: declared: it carries ``check_n_*``, ``check_seconds`` and ``costs_declared`` instead
#: of the ``sample_`` ones, see :func:`cost_attrs`)
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
    budget: int | None = None,
    device: str = "cpu",
    checkpoint: str | None = None,
    checkpoint_every: int = 0,
    source: str = "",
) -> None:
    """Sample and write the store; a checkpoint left by a killed attempt is resumed.

    With a ``budget``, the method is planned as in the train step (the same plan:
    it depends only on the budget, ``n_samples`` and the method's parameters);
    sampling may use what training left of the budget and stops there (a
    method may then return fewer than ``n_samples`` rows). ``budget_note`` says
    why the run spent less than 95 % of its budget, when it did.

    A method whose costs are declared (``Method.declares_costs``: samples made
    elsewhere, ``kind: external``) is not held to the budget by counting: the
    target's evaluations it makes are boltzbench's check of its samples, and
    its declared energy evaluations must not exceed the budget
    (:func:`check_declared_budget`).
    """
    started = now()
    dev = resolve_device(device)
    config = dict(
        target_name=target_name,
        target=target,
        method_name=method_name,
        method=method,
        seed=seed,
        n_samples=n_samples,
    )
    if budget is not None:
        config["budget"] = budget
    times: dict[str, float] = {}
    with on_device(dev):
        counted = build_counted_target(target).to(dev)
        model, plan = planned_method(method, budget, n_samples)
        model, model_attrs = load_fitted(inputs["model"], counted, model)
        _check_same_plan(plan, model_attrs)
        if budget is not None and not model.declares_costs:  # what training left
            counted.budget = max(budget - int(model_attrs.get("fit_n_energy", 0)), 0)
        ckpt = job_checkpoint(
            checkpoint,
            checkpoint_every,
            job_key("sample", config, source, inputs, dev),
            counted,
            times,
            "sample",
        )
        with timed(times, "sample"):
            gen = generator("sample", target_name, method_name, seed, device=dev)
            samples = model.sample(counted, n_samples, gen, ckpt)
        if periodic_everywhere(counted):  # stored on the canonical domain, energies the same
            samples.x = wrap_periodic(counted, samples.x)
    log.info("sampled %s on %s (seed %d): %s", method_name, target_name, seed, counted.counts)
    attrs = provenance_attrs("sample", config, seed, inputs, started)
    attrs.update({k: model_attrs[k] for k in model_attrs if k.startswith("fit_")})
    attrs.update(cost_attrs(model, counted, times["sample"]))
    attrs.update({k: v for k, v in model_attrs.items() if k.startswith("budget")})
    if model.declares_costs:  # not counted against the budget: declared within it
        check_declared_budget(samples.attrs, budget)
    else:
        attrs.update(budget_attrs(budget, counted, "sample"))
    if plan is not None and not model.declares_costs:
        spent = attrs["fit_n_energy"] + attrs["sample_n_energy"]
        attrs.update(plan_attrs(plan, spending_note(plan, spent, budget)))
    attrs.update(device=str(dev), resumed_from_step=ckpt.resumed_from)
    write_store(samples_to_dataset(samples), outputs["samples"], attrs)
    ckpt.clear()


def cost_attrs(model: Method, counted: CountingTarget, seconds: float) -> dict[str, Any]:
    """The counted cost of sampling: ``sample_n_*`` and ``sample_seconds``; for a method
    whose costs are declared, what boltzbench's check of its samples cost
    (``check_n_*``, ``check_seconds``) and ``costs_declared`` = 1."""
    phase = "check" if model.declares_costs else "sample"
    counts = counted.counts.as_dict(f"{phase}_n_")
    declared = {"costs_declared": 1} if model.declares_costs else {}
    return {**counts, f"{phase}_seconds": seconds, **declared}


def check_declared_budget(attrs: dict[str, Any], budget: int | None) -> None:
    """Refuse declared costs over a budget, or a budget with no declared energy count."""
    if budget is None:
        return
    declared = attrs.get("declared_n_energy")
    if declared is None:
        raise ValueError(
            f"the run has a budget of {budget} energy evaluations, but its samples declare "
            "none (n_energy): give n_energy in the file, or no budget"
        )
    if declared > budget:
        raise ValueError(
            f"the samples declare {declared} energy evaluations (n_energy), over the run's "
            f"budget of {budget}"
        )


def _check_same_plan(plan, model_attrs: dict) -> None:
    """Refuse a model trained under other budget-decided settings than ``plan``'s."""
    trained = model_attrs.get("budget_settings")
    if plan is not None and trained is not None and trained != canonical_json(plan.settings):
        raise ValueError(
            f"the model was trained under the budget plan {trained}, but this sample job "
            f"plans {canonical_json(plan.settings)}; retrain the model"
        )
