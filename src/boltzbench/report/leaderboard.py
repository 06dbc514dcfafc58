"""The leaderboard as a table: one row per (target, method) over all metrics files.

Each row has every metric as mean ± std over seeds, the noise floor of each
sample metric as mean ± std over every (seed, replicate) draw of a perfect
sampler (:func:`boltzbench.metrics.noise_floor`), the distance of the method's
mean from the floor in floor standard deviations, and the cost in energy and
gradient evaluations and wall seconds (fit + sample, mean over seeds) beside
the budget the run was held to. :mod:`boltzbench.report.render` renders it.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from boltzbench.io import read_json

__all__ = [
    "COST_COLUMNS",
    "leaderboard_frame",
    "floor_records",
    "common_budget",
    "input_roles",
]

#: cost columns of the leaderboard (``ess_per_1e6_evals`` is a registered metric,
#: the others come from the metrics file's ``cost``)
COST_COLUMNS = (
    "budget",
    "budget_used",
    "total_n_energy",
    "total_n_grad",
    "fit_n_data",
    "total_seconds",
    "ess_per_1e6_evals",
)


def _as_float(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _long_records(metric_files: list[str]) -> pd.DataFrame:
    rows = []
    for path in metric_files:
        m = read_json(path)
        diagnostics = m.get("diagnostics") or {}
        base = {
            "target": m["target"],
            "method": m["method"],
            "seed": m["seed"],
            "n_samples": m["n_samples"],
            "budget_note": diagnostics.get("budget_note") or "",
            "costs_declared": bool(m["cost"].get("costs_declared")),
            "declared_device": diagnostics.get("declared_device") or "",
        }
        values = {**{k: m["cost"].get(k) for k in COST_COLUMNS}, **m["metrics"]}
        rows += [{**base, "metric": k, "value": _as_float(v)} for k, v in values.items()]
    return pd.DataFrame(rows)


def floor_records(floor_files: list[str]) -> pd.DataFrame:
    """Every noise-floor draw: columns target, seed, replicate, metric, value."""
    rows = []
    for path in floor_files:
        f = read_json(path)
        for r, values in enumerate(f["replicates"]):
            base = {"target": f["target"], "seed": f["seed"], "replicate": r}
            rows += [{**base, "metric": k, "value": _as_float(v)} for k, v in values.items()]
    return pd.DataFrame(rows, columns=["target", "seed", "replicate", "metric", "value"])


def _floors(floor_files: list[str]) -> dict[tuple[str, str], tuple[float, float, int]]:
    """(target, metric) → (mean, sample std, number of draws) of the finite floor draws."""
    long = floor_records(floor_files)
    long = long[long["value"].map(math.isfinite)]
    stats = long.groupby(["target", "metric"])["value"].agg(["mean", "std", "count"])
    return {k: (r["mean"], r["std"], int(r["count"])) for k, r in stats.iterrows()}


def _add_floors(wide: pd.DataFrame, floor_files: list[str]) -> None:
    """``<metric>_floor``, ``_floor_std``, ``_floor_n`` and ``_excess_sigma`` columns."""
    floors = _floors(floor_files)
    metrics = sorted({c.removesuffix("_mean") for c in wide.columns if c.endswith("_mean")})
    for metric in metrics:
        stats = [floors.get((t, metric)) for t, _ in wide.index]
        if all(s is None for s in stats):
            continue
        mean = [math.nan if s is None else s[0] for s in stats]
        std = [math.nan if s is None else s[1] for s in stats]
        wide[f"{metric}_floor"] = mean
        wide[f"{metric}_floor_std"] = std
        wide[f"{metric}_floor_n"] = [0 if s is None else s[2] for s in stats]
        wide[f"{metric}_excess_sigma"] = (wide[f"{metric}_mean"] - mean) / pd.Series(
            std, index=wide.index
        ).where(lambda v: v > 0)


def _first_text(values: pd.Series) -> str:
    """The first non-empty string of ``values`` ("" when none)."""
    return next((v for v in values if v), "")


def leaderboard_frame(metric_files: list[str], floor_files: list[str]) -> pd.DataFrame:
    """Wide numeric leaderboard, one row per (target, method).

    Columns ``<metric>_mean`` and ``<metric>_std`` (sample std over the seeds
    where the metric is finite), ``<metric>_n`` (how many seeds that is); for
    sample metrics ``<metric>_floor``, ``<metric>_floor_std`` and
    ``<metric>_floor_n`` (mean, sample std and number of the floor's draws,
    over seeds × replicates) and ``<metric>_excess_sigma`` = (mean − floor) /
    floor_std; ``budget_note``, the first non-empty note of the row's runs
    on why a budget was not spent; ``costs_declared`` (True when the row's
    costs were declared with samples made elsewhere, not counted) and
    ``declared_device``.
    """
    long = _long_records(metric_files)
    finite = long["value"].where(long["value"].map(math.isfinite))
    stats = (
        long.assign(value=finite)
        .groupby(["target", "method", "metric"])["value"]
        .agg(mean="mean", std=lambda v: v.std(ddof=1) if v.notna().sum() > 1 else 0.0, n="count")
    )
    wide = stats.unstack("metric")
    wide.columns = [f"{metric}_{stat}" for stat, metric in wide.columns]
    meta = long.groupby(["target", "method"]).agg(
        n_seeds=("seed", "nunique"),
        n_samples=("n_samples", "first"),
        budget_note=("budget_note", _first_text),
        costs_declared=("costs_declared", "max"),
        declared_device=("declared_device", _first_text),
    )
    wide = meta.join(wide)
    _add_floors(wide, floor_files)
    return wide.reset_index()


def common_budget(frame: pd.DataFrame) -> float | None:
    """The budget most (target, method) rows were held to, or None when none had one."""
    budgets = frame.get("budget_mean", pd.Series(dtype=float)).dropna()
    return None if budgets.empty else float(budgets.mode().iloc[0])


def input_roles(metric_files: list[str], floor_files: list[str]) -> dict[str, str]:
    """``{role: path}`` of the files read, the role naming the leaderboard row."""
    roles: dict[str, str] = {}
    for path in metric_files:
        m = read_json(path)
        roles[f"metrics:{m['target']}/{m['method']}/seed{m['seed']}"] = path
    for path in floor_files:
        f = read_json(path)
        roles[f"noise_floor:{f['target']}/seed{f['seed']}"] = path
    if len(roles) != len(metric_files) + len(floor_files):
        raise ValueError("two metrics or noise-floor files for the same row and seed")
    return roles
