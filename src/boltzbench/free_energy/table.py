"""The free-energy table: every task's estimates beside its MBAR reference.

One row per (task, estimator) from the ``estimates.json`` files of the
``fe_estimate`` jobs, with the error |ΔF̂ − ΔF_ref| in k_BT beside the
reference's own standard error σ_ref, and z = (ΔF̂ − ΔF_ref) / sqrt(σ² + σ_ref²)
(the estimator's σ and the reference's, treated as independent, which
overstates the spread where both read the same end-state frames).
"""

from __future__ import annotations

import math

import pandas as pd

from boltzbench.io import read_json

__all__ = ["COLUMNS", "free_energy_frame", "free_energy_markdown", "input_roles"]

COLUMNS = [
    "task", "estimator", "delta_f_kT", "sigma_kT", "ref_delta_f_kT", "ref_sigma_kT",
    "abs_error_kT", "z", "n_samples", "md_steps", "extra_evaluations", "energy_evaluations",
]  # fmt: skip


def _rows(doc: dict) -> list[dict]:
    ref = next(r for r in doc["rows"] if r["estimator"] == doc["reference"])
    out = []
    for r in doc["rows"]:
        err = r["delta_f_kT"] - ref["delta_f_kT"]
        both = math.hypot(r["sigma_kT"], ref["sigma_kT"]) if r is not ref else float("nan")
        out.append(
            {
                **r,
                "task": doc["task"],
                "ref_delta_f_kT": ref["delta_f_kT"],
                "ref_sigma_kT": ref["sigma_kT"],
                "abs_error_kT": abs(err) if r is not ref else float("nan"),
                "z": err / both if both > 0 else float("nan"),
            }
        )
    return out


def free_energy_frame(paths: list[str]) -> pd.DataFrame:
    """The table over ``estimates.json`` files, in :data:`COLUMNS` order."""
    rows = [row for p in paths for row in _rows(read_json(p))]
    return pd.DataFrame(rows, columns=COLUMNS)


def free_energy_markdown(frame: pd.DataFrame) -> str:
    """The table as Markdown, one section per task, the reference first."""
    parts = ["# Free-energy differences\n"]
    for task, rows in frame.groupby("task", sort=False):
        ref = rows.iloc[0]
        parts.append(
            f"## {task}\n\nReference (MBAR over every λ-window): ΔF = "
            f"{ref.ref_delta_f_kT:.3f} ± {ref.ref_sigma_kT:.3f} k_BT.\n"
        )
        shown = rows[["estimator", "delta_f_kT", "sigma_kT", "abs_error_kT", "z",
                      "n_samples", "energy_evaluations"]]  # fmt: skip
        shown = shown.rename(
            columns={
                "delta_f_kT": "ΔF (k_BT)",
                "sigma_kT": "σ (k_BT)",
                "abs_error_kT": "|ΔF − ΔF_ref| (k_BT)",
                "n_samples": "samples",
                "energy_evaluations": "energy evaluations",
            }
        )
        parts.append(shown.to_markdown(index=False, floatfmt=".3f") + "\n")
    return "\n".join(parts)


def input_roles(paths: list[str]) -> dict[str, str]:
    """``{"estimates:<task>": path}`` of the files read."""
    return {f"estimates:{read_json(p)['task']}": p for p in paths}
