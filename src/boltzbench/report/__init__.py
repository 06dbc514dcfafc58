"""The report: the leaderboard (table, Markdown, HTML), the budget sweep and the figures.

Library code that the aggregate, budget-sweep and figures steps call, and
that the command line uses (:func:`verdict`):

* :mod:`~boltzbench.report.leaderboard` — one row per (target, method) over
  the metrics and noise-floor files (:func:`leaderboard_frame`);
* :mod:`~boltzbench.report.render` — its Markdown and HTML tables;
* :mod:`~boltzbench.report.sweep` — the budget sweep's table and figure;
* :mod:`~boltzbench.report.figures` and :mod:`~boltzbench.report.structure` —
  samples against the reference, training curves;
* :mod:`~boltzbench.report.outputs` — the hashes of what a job wrote.

The figure modules import matplotlib, so they are not imported here.
"""

from __future__ import annotations

from boltzbench.report.leaderboard import (
    COST_COLUMNS,
    common_budget,
    floor_records,
    input_roles,
    leaderboard_frame,
)
from boltzbench.report.outputs import output_hashes
from boltzbench.report.render import (
    config_text,
    leaderboard_html,
    leaderboard_markdown,
    shown_metrics,
    verdict,
)

__all__ = [
    "COST_COLUMNS",
    "leaderboard_frame",
    "floor_records",
    "common_budget",
    "input_roles",
    "output_hashes",
    "leaderboard_markdown",
    "leaderboard_html",
    "shown_metrics",
    "verdict",
    "config_text",
]
