"""Aggregate step: the leaderboard (CSV, Markdown, HTML) over all metrics files.

Each row is one (target, method), with every metric as mean ± std over seeds,
the noise floor of each sample metric as mean ± std over every (seed,
replicate) draw of a perfect sampler (:func:`boltzbench.metrics.noise_floor`),
the distance of the method's mean from the floor in floor standard deviations,
and the cost in energy and gradient evaluations and wall seconds (fit +
sample, mean over seeds) beside the budget the run was held to.

The Markdown and HTML tables of a target compare, in the main table, the
methods held to the run's common budget (the budget most runs share); methods
with another budget or none are listed apart.

``leaderboard.provenance.json`` records the sha256 of every metrics and
noise-floor file read (roles ``metrics:<target>/<method>/seed<seed>`` and
``noise_floor:<target>/seed<seed>``) and of every file written (``outputs``),
for ``boltzbench audit``. The resolved config of the run is written beside the
leaderboard (``config.resolved.yaml``) when the rule asks for it.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import yaml

from boltzbench.hashing import hash_path
from boltzbench.io import read_json, write_json, write_text
from boltzbench.metrics import METRICS, metric_docs
from boltzbench.provenance import now, provenance_attrs

__all__ = [
    "run",
    "leaderboard_frame",
    "floor_records",
    "verdict",
    "common_budget",
    "COST_COLUMNS",
]

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
        values = {**m["metrics"], **{k: m["cost"].get(k) for k in COST_COLUMNS}}
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


#: metrics shown in the Markdown/HTML leaderboard, in this order (the CSV has all)
SHOWN = (
    "log_z_error",
    "ess",
    "w2",
    "w2_reweighted",
    "w2_aligned",
    "w2_aligned_reweighted",
    "energy_w1",
    "energy_w1_reweighted",
    "mmd",
    "mmd_reweighted",
    "mode_tv",
    "mode_tv_reweighted",
    "modes_found",
    "modes_found_reweighted",
    "mode_coverage",
    "mode_coverage_reweighted",
    "forward_ess",
    "forward_kl",
    "eubo",
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
    "torsion_kl_phi_reweighted",
    "torsion_kl_psi",
    "torsion_kl_psi_reweighted",
    "torsion_kl_other",
    "torsion_kl_other_reweighted",
    "torus_w2",
    "torus_w2_reweighted",
    "wrong_chirality",
    "nonfinite_fraction",
    *COST_COLUMNS,
)


#: cost columns that come from declared costs, not counted ones, on a row whose
#: samples were made elsewhere (``costs_declared``); their cells say "(declared)"
DECLARED_COLUMNS = (
    "total_n_energy",
    "total_n_grad",
    "total_seconds",
    "budget_used",
    "ess_per_1e6_evals",
)

#: |excess| in floor standard deviations within which a mean is "at the floor"
AT_FLOOR_SIGMA = 2.0


def _fmt(mean: float, std: float, n: int, n_seeds: int) -> str | None:
    """ "mean ± std"; "[n/N seeds]" when the metric was finite on only n of N seeds."""
    if n == 0:
        return None
    text = f"{mean:.3g}" if n < 2 else f"{mean:.3g} ± {std:.2g}"
    return text if n == n_seeds else f"{text} [{n}/{n_seeds} seeds]"


def verdict(excess_sigma: float) -> str:
    """A plain reading of (mean − floor) / floor_std: "≈ floor" within ±2 floor standard
    deviations, else "+kσ" above it or "−kσ" below it (k rounded); "" when undefined."""
    if not math.isfinite(excess_sigma):
        return ""
    if abs(excess_sigma) <= AT_FLOOR_SIGMA:
        return "≈ floor"
    return f"{excess_sigma:+.0f}σ".replace("-", "−")


def _drops_rows(name: str) -> bool:
    """Whether the raw metric ``name`` is computed on finite rows only (it cannot count
    non-finite rows), so its cells are marked when rows were dropped."""
    if name.endswith("_reweighted") or name not in METRICS:
        return False
    m = METRICS.build(name)
    return m.kind == "sample" and not m.counts_invalid


def _cell(r: pd.Series, name: str) -> str | None:
    """A method's cell: mean ± std, the floor verdict, and the fraction of rows dropped."""
    n = 0 if pd.isna(r[f"{name}_n"]) else int(r[f"{name}_n"])  # NaN: not reported
    text = _fmt(r[f"{name}_mean"], r[f"{name}_std"], n, int(r.n_seeds))
    if text is None:
        return None
    reading = verdict(r.get(f"{name}_excess_sigma", math.nan))
    if reading:
        text += f" ({reading})"
    dropped = r.get("nonfinite_fraction_mean", 0.0)
    if _drops_rows(name) and dropped > 0:
        text += f" † {dropped:.1%} dropped"
    if r.get("costs_declared") and name in DECLARED_COLUMNS:
        text += " (declared)"
    return text


def _floor_cell(r: pd.Series, name: str) -> str | None:
    """The floor's cell: mean ± std over its draws."""
    if f"{name}_floor" not in r or pd.isna(r[f"{name}_floor"]):
        return None
    n = int(r[f"{name}_floor_n"])
    return _fmt(r[f"{name}_floor"], r[f"{name}_floor_std"], n, n)


def shown_metrics(frame: pd.DataFrame) -> list[str]:
    """The columns of the Markdown/HTML tables: :data:`SHOWN` first, then any other
    reported metric (a user's or a newly registered one), then the costs."""
    present = [c.removesuffix("_mean") for c in frame.columns if c.endswith("_mean")]
    hidden = ("log_z_hat", "n_eval_samples", "n_eval_reference")  # in the CSV only
    extra = [m for m in present if m not in SHOWN and m not in hidden]
    return [m for m in SHOWN if m not in COST_COLUMNS] + sorted(extra) + list(COST_COLUMNS)


def _table(sub: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """The noise-floor row, then one row per method of ``sub`` (one target)."""
    floor_row: dict[str, object] = {"method": "reference (noise floor)", "seeds": "", "samples": ""}
    rows = []
    for _, r in sub.iterrows():
        row: dict[str, object] = {"method": r.method, "seeds": int(r.n_seeds)}
        row["samples"] = int(r.n_samples)
        for name in names:
            if f"{name}_mean" in r:
                row[name] = _cell(r, name)
            floor_row[name] = floor_row.get(name) or _floor_cell(r, name)
        if r.get("budget_note"):
            row["budget note"] = r.budget_note
        if r.get("declared_device"):
            row["device (declared)"] = r.declared_device
        rows.append(row)
    table = pd.DataFrame([floor_row, *rows])
    table = table.dropna(axis=1, how="all").astype(object)
    return table.where(table.notna(), "")


def common_budget(frame: pd.DataFrame) -> float | None:
    """The budget most (target, method) rows were held to, or None when none had one."""
    budgets = frame.get("budget_mean", pd.Series(dtype=float)).dropna()
    return None if budgets.empty else float(budgets.mode().iloc[0])


def _target_tables(frame: pd.DataFrame, target: str) -> list[tuple[str, pd.DataFrame]]:
    """(heading, table) pairs of one target: the methods at the common budget, then
    the others (another budget, or none)."""
    sub = frame[frame.target == target]
    names = shown_metrics(frame)
    budget = common_budget(frame)
    if budget is None:
        return [("Methods (no evaluation budget).", _table(sub, names))]
    at = sub.get("budget_mean") == budget
    parts = []
    if at.any():
        head = (
            f"At equal budget: every method held to {budget:.3g} target energy evaluations "
            "per run (fit + sample); `budget_used` is the fraction spent."
        )
        parts.append((head, _table(sub[at], names)))
    if (~at).any():
        head = "Not at that budget (another budget, or none): not comparable at equal cost."
        parts.append((head, _table(sub[~at], names)))
    return parts


_PREAMBLE = (
    "Sample metrics use N_eval samples against N_eval reference samples (N_eval per target "
    "in its heading). Each cell is mean ± std over seeds. The first row of each table is the "
    "noise floor: a perfect sampler's metric (exact samples, n_samples rows, scored exactly "
    "as a method's are, raw or with uniform weights for the `_reweighted` forms), mean ± std "
    "over seeds × floor replicates. In brackets, the method's mean against the floor: "
    f"'≈ floor' within ±{AT_FLOOR_SIGMA:g} floor standard deviations, else how many it lies "
    "above (+) or below (−). '† x% dropped' marks a metric computed on the finite rows only "
    "while x% of the rows were not finite (histogram and mode metrics count those rows as "
    "mass outside the reference's support instead). `_reweighted` columns resample a weighted "
    "sample set by its normalized importance weights before computing the metric. Costs are "
    "energy (and gradient) evaluations and wall seconds, fit + sample; `fit_n_data` is the "
    "number of exact reference samples a data-based method trained on (not counted as "
    "evaluations). `budget` is the evaluation budget the run was held to (target energy "
    "evaluations, fit + sample; empty: none), `budget_used` the fraction of it spent; "
    "`total_n_energy` never exceeds it, and a run that spent less than 95 % says why in "
    "its budget note. Costs marked '(declared)' were not counted by boltzbench: they are "
    "declared by the file of samples made elsewhere (a method `kind: external`), as is "
    "the device; with no declaration the cell is empty. "
    "`ess_per_1e6_evals` is the ESS as a number of samples per 10⁶ energy evaluations: "
    "the Kish ESS (Σw)²/Σw² over all rows for weighted sets, the autocorrelation ESS of "
    "the kept chain draws (smallest over coordinates, Vehtari et al. 2021) for MCMC; "
    "SMC's Kish ESS counts only since its last resampling, so it is an upper bound (1 "
    "when it resampled at the last temperature: its particles are then unweighted, but "
    "duplicates moved by a few MCMC steps)."
)


def _heading(target: str, n_eval: dict[str, int]) -> str:
    n = n_eval.get(target)
    return f"## {target}" + (f" (N_eval = {n})" if n else "")


def _markdown(frame: pd.DataFrame, n_eval: dict[str, int]) -> str:
    lines = ["# boltzbench leaderboard", "", _PREAMBLE, ""]
    for target in sorted(frame.target.unique()):
        lines += [_heading(target, n_eval), ""]
        for head, table in _target_tables(frame, target):
            lines += [head, "", table.to_markdown(index=False), ""]
    docs = metric_docs()
    lines += ["## Metric definitions", ""]
    lines += [f"- **{name}**: {doc}" for name, doc in sorted(docs.items())]
    return "\n".join(lines) + "\n"


def _html(frame: pd.DataFrame, markdown: str, n_eval: dict[str, int]) -> str:
    parts = ["<h1>boltzbench leaderboard</h1>", f"<p>{_PREAMBLE}</p>"]
    for target in sorted(frame.target.unique()):
        parts.append(f"<h2>{_heading(target, n_eval).removeprefix('## ')}</h2>")
        for head, table in _target_tables(frame, target):
            parts += [f"<p>{head}</p>", table.to_html(index=False)]
    parts.append("<pre>" + markdown.split("## Metric definitions", 1)[-1] + "</pre>")
    return "\n".join(parts)


def _input_roles(metric_files: list[str], floor_files: list[str]) -> dict[str, str]:
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


def _config_text(config: dict[str, Any]) -> str:
    header = "# The resolved config of this run (defaults filled in), written by aggregate.\n"
    return header + yaml.safe_dump(config, sort_keys=True)


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
    markdown = _markdown(frame, n_eval)
    write_text(outputs["markdown"], markdown)
    write_text(outputs["html"], _html(frame, markdown, n_eval))
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
