"""Budget-sweep step: one target, several methods, each at several evaluation budgets.

Writes ``budget_sweep.csv`` (:func:`boltzbench.report.sweep.sweep_frame`) and its
figure (:func:`boltzbench.report.sweep.sweep_figure`).
``budget_sweep.provenance.json`` records the inputs' and the outputs' sha256
with the provenance attributes.
"""

from __future__ import annotations

from boltzbench.io import write_json, write_text
from boltzbench.provenance import now, provenance_attrs
from boltzbench.report import output_hashes
from boltzbench.report.figures import save_figure
from boltzbench.report.sweep import sweep_figure, sweep_frame

__all__ = ["run"]


def run(
    *,
    inputs: dict,
    outputs: dict,
    members: dict[str, dict],
    target: str,
    metric: str,
    source: str = "",
) -> None:
    """The sweep's table and figure; ``members`` maps each run's method name to its
    base ``method`` and ``budget``."""
    started = now()
    metric_files, floor_files = list(inputs["metrics"]), list(inputs["floors"])
    frame = sweep_frame(metric_files, floor_files, members)
    write_text(outputs["csv"], frame.to_csv(index=False, float_format="%.6g"))
    config = {"members": members, "target": target, "metric": metric}
    roles = {f"input_{i}": p for i, p in enumerate([*metric_files, *floor_files])}
    attrs = provenance_attrs("budget_sweep", config, None, roles, started)
    save_figure(sweep_figure(frame, target, metric), outputs["figure"], attrs)
    write_json(
        {"rows": len(frame), "outputs": output_hashes(outputs)}, outputs["provenance"], attrs
    )
