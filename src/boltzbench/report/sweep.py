"""The budget sweep: one target, several methods, each at several evaluation budgets.

The sweep's runs (``<method>-budget<N>``, see :func:`boltzbench.config.sweep_methods`)
are aggregated like leaderboard rows (mean ± std over seeds,
:func:`~boltzbench.report.leaderboard_frame`), with the base method and the
budget as columns (:func:`sweep_frame`), and drawn as one figure
(:func:`sweep_figure`): the metric against the target evaluations actually used
(log scale), one line per method through its budgets, the metric's noise floor
(raw and reweighted) as horizontal lines with a band of ± one floor standard
deviation.

Weighted methods are shown by the ``_reweighted`` form of the metric (resampled
by their importance weights), unweighted ones by the plain form; the legend
says which.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from boltzbench.report.leaderboard import leaderboard_frame  # noqa: E402

__all__ = ["sweep_frame", "sweep_figure"]


def sweep_frame(
    metric_files: list[str], floor_files: list[str], members: dict[str, dict]
) -> pd.DataFrame:
    """The sweep's rows with ``base_method`` and ``budget`` columns, sorted by both."""
    frame = leaderboard_frame(metric_files, floor_files)
    frame.insert(2, "base_method", frame.method.map(lambda m: members[m]["method"]))
    frame.insert(3, "budget", frame.method.map(lambda m: int(members[m]["budget"])))
    return frame.sort_values(["base_method", "budget"]).reset_index(drop=True)


def _shown(rows: pd.DataFrame, metric: str) -> tuple[str, bool]:
    """The column shown for a method: the reweighted metric where it has one."""
    col = f"{metric}_reweighted"
    if f"{col}_mean" in rows and rows[f"{col}_mean"].notna().any():
        return col, True
    return metric, False


def sweep_figure(frame: pd.DataFrame, target: str, metric: str):
    """The metric against the evaluations used, one line per method."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    shown = set()
    for method, rows in frame.groupby("base_method"):
        col, weighted = _shown(rows, metric)
        if f"{col}_mean" not in rows:
            continue
        shown.add(col)
        x = rows["total_n_energy_mean"]
        ax.errorbar(
            x,
            rows[f"{col}_mean"],
            yerr=rows[f"{col}_std"].fillna(0.0),
            marker="o",
            capsize=3,
            label=f"{method} ({'reweighted' if weighted else 'raw'})",
        )
    for col in sorted(shown):  # the floor of each form shown, with its ± std band
        floor = frame.get(f"{col}_floor")
        if floor is not None and floor.notna().any():
            mean = float(floor.dropna().iloc[0])
            std = float(frame[f"{col}_floor_std"].dropna().iloc[0])
            style = ":" if col.endswith("_reweighted") else "--"
            form = "reweighted" if style == ":" else "raw"
            ax.axhline(mean, color="k", ls=style, lw=1, label=f"noise floor ({form}) ± std")
            ax.axhspan(mean - std, mean + std, color="k", alpha=0.08, lw=0)
    for budget in sorted(frame.budget.unique()):
        ax.axvline(budget, color="0.8", lw=0.8, zorder=0)
    ax.set(
        xscale="log",
        xlabel="target energy evaluations used (fit + sample); grey lines: budgets",
        ylabel=metric,
        title=f"{target}: {metric} against the evaluation budget",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
