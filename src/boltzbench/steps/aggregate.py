"""Aggregate step: the leaderboard (CSV, Markdown, HTML) over all metrics files.

The table and its rendering are library code (:mod:`boltzbench.report`).
``leaderboard.provenance.json`` records the sha256 of every metrics and
noise-floor file read (roles ``metrics:<target>/<method>/seed<seed>`` and
``noise_floor:<target>/seed<seed>``) and of every file written (``outputs``),
for ``boltzbench audit``. The resolved config of the run is written beside the
leaderboard (``config.resolved.yaml``) when the rule asks for it.
"""

from __future__ import annotations

from boltzbench.io import write_json, write_text
from boltzbench.provenance import now, provenance_attrs
from boltzbench.report import (
    config_text,
    input_roles,
    leaderboard_frame,
    leaderboard_html,
    leaderboard_markdown,
    output_hashes,
)

__all__ = ["run"]


def run(
    *,
    inputs: dict,
    outputs: dict,
    n_eval: dict[str, int] | int,
    config: dict | None = None,
    source: str = "",
) -> None:
    """``n_eval``: N_eval of each target (or one number for all)."""
    started = now()
    metric_files, floor_files = list(inputs["metrics"]), list(inputs["floors"])
    frame = leaderboard_frame(metric_files, floor_files)
    if not isinstance(n_eval, dict):
        n_eval = {t: int(n_eval) for t in frame.target.unique()}
    write_text(outputs["csv"], frame.to_csv(index=False, float_format="%.6g"))
    markdown = leaderboard_markdown(frame, n_eval)
    write_text(outputs["markdown"], markdown)
    write_text(outputs["html"], leaderboard_html(frame, markdown, n_eval))
    if "config" in outputs:
        write_text(outputs["config"], config_text(config or {}))
    job_config = {"n_eval": n_eval} | ({"resolved_config": config} if config else {})
    roles = input_roles(metric_files, floor_files)
    attrs = provenance_attrs("aggregate", job_config, None, roles, started)
    write_json(
        {"rows": len(frame), "outputs": output_hashes(outputs)}, outputs["provenance"], attrs
    )
