"""Free-energy steps: one λ-window's MD, a task's estimates, the table.

One module, three stages (the rule's ``stage`` param):

``window``
    :func:`boltzbench.free_energy.window.run_window` at the ``k``-th λ of the
    task's grid, checkpointed; a Zarr store of the frames and of u (lambda,
    frame), the window's columns of the MBAR matrix.
``estimate``
    :func:`boltzbench.free_energy.solvation.estimate_rows` over the task's
    windows: ``estimates.json`` (the MBAR reference and every estimator).
``table``
    ``free_energy.csv`` and ``free_energy.md`` over every task
    (:mod:`boltzbench.free_energy.table`) and their provenance file.
"""

from __future__ import annotations

from typing import Any

from boltzbench.hashing import derive_seed
from boltzbench.io import write_json, write_store, write_text
from boltzbench.provenance import now, provenance_attrs

__all__ = ["run", "window", "estimate", "table"]


def window_seed(task_name: str, task_seed: int, k: int) -> int:
    """The MD seed of window ``k``: independent across windows, tasks and task seeds."""
    return derive_seed("free_energy", task_name, task_seed, k) % (2**31 - 1) + 1


def window(
    *, inputs: dict, outputs: dict, task_name: str, task: dict[str, Any], k: int, checkpoint=None
):
    from boltzbench.checkpoint import Checkpoint
    from boltzbench.free_energy.solvation import window_dataset
    from boltzbench.free_energy.window import WindowSettings, run_window

    started, md = now(), task["md"]
    seed = window_seed(task_name, task["seed"], k)
    settings = WindowSettings(
        task["lambdas"][k], task["temperature_K"], md["timestep_fs"], md["friction_per_ps"],
        md["platform"], md["equilibration_steps"], md["production_steps"],
        md["save_every_steps"], seed,
    )  # fmt: skip
    ckpt = Checkpoint(checkpoint, md["checkpoint_every_frames"], settings.key())
    result = run_window(settings, checkpoint=ckpt)
    config = {"task_name": task_name, "task": task, "window": k}
    attrs = provenance_attrs("free_energy_window", config, seed, None, started)
    write_store(window_dataset(result, task["lambdas"]), outputs["store"], attrs)


def estimate(*, inputs: dict, outputs: dict, task_name: str, task: dict[str, Any]):
    from boltzbench.free_energy.solvation import estimate_rows
    from boltzbench.free_energy.targeted import MapSettings
    from boltzbench.io import read_store

    started = now()
    windows = [read_store(p) for p in inputs["windows"]]
    m = task.get("map")
    settings = (
        None
        if m is None
        else MapSettings(
            **{**m, "hidden_features": tuple(m["hidden_features"]), "seed": task["seed"]}
        )
    )
    rows = estimate_rows(windows, task["temperature_K"], settings)
    roles = {f"window{k}": p for k, p in enumerate(inputs["windows"])}
    attrs = provenance_attrs("free_energy_estimate", {"task_name": task_name, "task": task},
                             task["seed"], roles, started)  # fmt: skip
    doc = {"task": task_name, "reference": "mbar", "rows": [r.as_dict() for r in rows]}
    write_json(doc, outputs["estimates"], attrs)


def table(*, inputs: dict, outputs: dict, tasks: dict[str, Any]):
    from boltzbench.free_energy.table import (
        free_energy_frame,
        free_energy_markdown,
        input_roles,
    )
    from boltzbench.report import output_hashes

    started, paths = now(), list(inputs["estimates"])
    frame = free_energy_frame(paths)
    write_text(outputs["csv"], frame.to_csv(index=False, float_format="%.6g"))
    write_text(outputs["markdown"], free_energy_markdown(frame))
    attrs = provenance_attrs(
        "free_energy_table", {"tasks": tasks}, None, input_roles(paths), started
    )
    write_json(
        {"rows": len(frame), "outputs": output_hashes(outputs)}, outputs["provenance"], attrs
    )


STAGES = {"window": window, "estimate": estimate, "table": table}


def run(*, inputs: dict, outputs: dict, stage: str, source: str = "", **params) -> None:
    """Run ``stage`` (``window``, ``estimate`` or ``table``) with the rule's params."""
    return STAGES[stage](inputs=inputs, outputs=outputs, **params)
