"""Aggregate step: the leaderboard (CSV, Markdown, HTML) over all metrics files.

Each row is one (target, method), with every metric as mean ± std over seeds,
the noise floor of each sample metric (the same metric between the two
independent reference sets), and the cost in energy and gradient evaluations
and wall seconds (fit + sample, mean over seeds).

``leaderboard.provenance.json`` records the sha256 of every metrics and
noise-floor file read (roles ``metrics:<target>/<method>/seed<seed>`` and
``noise_floor:<target>``) and of every file written (``outputs``), for
``boltzbench audit``. The resolved config of the run is written beside the
leaderboard (``config.resolved.yaml``) when the rule asks for it.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import yaml

from boltzbench.hashing import hash_path
from boltzbench.io import read_json, write_json, write_text
from boltzbench.metrics import metric_docs
from boltzbench.provenance import now, provenance_attrs

__all__ = ["run", "leaderboard_frame", "COST_COLUMNS"]

COST_COLUMNS = (
    "budget",
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
        base = {
            "target": m["target"],
            "method": m["method"],
            "seed": m["seed"],
            "n_samples": m["n_samples"],
        }
        values = {**m["metrics"], **{k: m["cost"].get(k) for k in COST_COLUMNS}}
        rows += [{**base, "metric": k, "value": _as_float(v)} for k, v in values.items()]
    return pd.DataFrame(rows)


def _floors(floor_files: list[str]) -> dict[tuple[str, str], float]:
    out = {}
    for path in floor_files:
        f = read_json(path)
        out.update({(f["target"], k): _as_float(v) for k, v in f["noise_floor"].items()})
    return out


def leaderboard_frame(metric_files: list[str], floor_files: list[str]) -> pd.DataFrame:
    """Wide numeric leaderboard, one row per (target, method).

    Columns ``<metric>_mean`` and ``<metric>_std`` (sample std over the seeds
    where the metric is finite), ``<metric>_n`` (how many seeds that is) and
    ``<metric>_floor`` (its noise floor, for sample metrics).
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
        n_seeds=("seed", "nunique"), n_samples=("n_samples", "first")
    )
    wide = meta.join(wide)
    floors = _floors(floor_files)
    for metric in sorted({c.removesuffix("_mean") for c in wide.columns if c.endswith("_mean")}):
        col = [floors.get((t, metric), math.nan) for t, _ in wide.index]
        if any(not math.isnan(v) for v in col):
            wide[f"{metric}_floor"] = col
    return wide.reset_index()


#: metrics shown in the Markdown/HTML leaderboard, in this order (the CSV has all)
SHOWN = (
    "log_z_error",
    "ess",
    "w2",
    "w2_reweighted",
    "energy_w1",
    "energy_w1_reweighted",
    "mmd",
    "mmd_reweighted",
    "mode_coverage",
    "mode_coverage_reweighted",
    # particle systems
    "distance_tv",
    "distance_tv_reweighted",
    "distance_w2",
    "distance_w2_reweighted",
    "energy_w2",
    "energy_w2_reweighted",
    # lattice
    "magnetization_w1",
    "magnetization_w1_reweighted",
    "susceptibility_error",
    "susceptibility_error_reweighted",
    # alanine dipeptide
    "ramachandran_kl",
    "ramachandran_kl_reweighted",
    "ramachandran_js",
    "ramachandran_js_reweighted",
    "torsion_kl_phi",
    "torsion_kl_psi",
    "torsion_kl_other",
    "torus_w2",
    "torus_w2_reweighted",
    "wrong_chirality",
    "nonfinite_fraction",
    *COST_COLUMNS,
)


def _fmt(mean: float, std: float, n: int, n_seeds: int) -> str | None:
    """ "mean ± std"; "[n/N seeds]" when the metric was finite on only n of N seeds."""
    if n == 0:
        return None
    text = f"{mean:.3g}" if n < 2 else f"{mean:.3g} ± {std:.2g}"
    return text if n == n_seeds else f"{text} [{n}/{n_seeds} seeds]"


def _target_table(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """One target's rows: the noise-floor row first, then one row per method."""
    sub = frame[frame.target == target]
    floor_row: dict[str, object] = {"method": "reference (noise floor)", "seeds": "", "samples": ""}
    rows = []
    for _, r in sub.iterrows():
        row: dict[str, object] = {
            "method": r.method,
            "seeds": int(r.n_seeds),
            "samples": int(r.n_samples),
        }
        for name in SHOWN:
            if f"{name}_mean" in r:
                n = 0 if pd.isna(r[f"{name}_n"]) else int(r[f"{name}_n"])  # NaN: not reported
                row[name] = _fmt(r[f"{name}_mean"], r[f"{name}_std"], n, int(r.n_seeds))
            if f"{name}_floor" in r and not pd.isna(r[f"{name}_floor"]):
                floor_row[name] = f"{r[f'{name}_floor']:.3g}"
        rows.append(row)
    table = pd.DataFrame([floor_row, *rows])
    table = table.dropna(axis=1, how="all").astype(object)
    return table.where(table.notna(), "")


def _markdown(frame: pd.DataFrame, n_eval: int) -> str:
    lines = [
        "# boltzbench leaderboard",
        "",
        f"Sample metrics use N_eval = {n_eval} samples against {n_eval} reference samples. "
        "Each cell is mean ± std over seeds. The first row of each table is the noise "
        "floor: the same metric between two independent exact reference sets. "
        "`_reweighted` columns resample a weighted sample set by its normalized "
        "importance weights before computing the metric. Costs are energy (and gradient) "
        "evaluations and wall seconds, fit + sample; `fit_n_data` is the number of exact "
        "reference samples a data-based method trained on (not counted as evaluations). "
        "`budget` is the evaluation budget the run was held to (target energy evaluations, "
        "fit + sample; empty: none); `total_n_energy` never exceeds it. "
        "`ess_per_1e6_evals` is the ESS as a number of samples per 10⁶ energy evaluations: "
        "the Kish ESS (Σw)²/Σw² over all rows for weighted sets, the autocorrelation ESS of "
        "the kept chain draws (smallest over coordinates, Vehtari et al. 2021) for MCMC; "
        "SMC's Kish ESS counts only since its last resampling, so it is an upper bound (1 "
        "when it resampled at the last temperature: its particles are then unweighted, but "
        "duplicates moved by a few MCMC steps).",
        "",
    ]
    for target in sorted(frame.target.unique()):
        lines += [f"## {target}", "", _target_table(frame, target).to_markdown(index=False), ""]
    docs = metric_docs()
    lines += ["## Metric definitions", ""]
    lines += [f"- **{name}**: {doc}" for name, doc in sorted(docs.items())]
    return "\n".join(lines) + "\n"


def _html(frame: pd.DataFrame, markdown: str) -> str:
    parts = ["<h1>boltzbench leaderboard</h1>"]
    for target in sorted(frame.target.unique()):
        parts += [f"<h2>{target}</h2>", _target_table(frame, target).to_html(index=False)]
    parts.append("<pre>" + markdown.split("## Metric definitions", 1)[-1] + "</pre>")
    return "\n".join(parts)


def _input_roles(metric_files: list[str], floor_files: list[str]) -> dict[str, str]:
    """``{role: path}`` of the files read, the role naming the leaderboard row."""
    roles: dict[str, str] = {}
    for path in metric_files:
        m = read_json(path)
        roles[f"metrics:{m['target']}/{m['method']}/seed{m['seed']}"] = path
    for path in floor_files:
        roles[f"noise_floor:{read_json(path)['target']}"] = path
    if len(roles) != len(metric_files) + len(floor_files):
        raise ValueError("two metrics or noise-floor files for the same row and seed")
    return roles


def _config_text(config: dict[str, Any]) -> str:
    header = "# The resolved config of this run (defaults filled in), written by aggregate.\n"
    return header + yaml.safe_dump(config, sort_keys=True)


def run(
    *, inputs: dict, outputs: dict, n_eval: int, config: dict | None = None, source: str = ""
) -> None:
    started = now()
    metric_files, floor_files = list(inputs["metrics"]), list(inputs["floors"])
    frame = leaderboard_frame(metric_files, floor_files)
    write_text(outputs["csv"], frame.to_csv(index=False, float_format="%.6g"))
    markdown = _markdown(frame, n_eval)
    write_text(outputs["markdown"], markdown)
    write_text(outputs["html"], _html(frame, markdown))
    if "config" in outputs:
        write_text(outputs["config"], _config_text(config or {}))
    written = {
        role: {"path": str(p), "sha256": hash_path(p)}
        for role, p in outputs.items()
        if role != "provenance"
    }
    job_config = {"n_eval": n_eval} | ({"resolved_config": config} if config else {})
    roles = _input_roles(metric_files, floor_files)
    attrs = provenance_attrs("aggregate", job_config, None, roles, started)
    write_json({"rows": len(frame), "outputs": written}, outputs["provenance"], attrs)
