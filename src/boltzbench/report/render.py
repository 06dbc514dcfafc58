"""The leaderboard as Markdown and HTML, from :func:`~boltzbench.report.leaderboard_frame`.

The Markdown and HTML tables of a target compare, in the main table, the
methods held to the run's common budget (the budget most runs share); methods
with another budget or none are listed apart. Each cell is mean ± std over
seeds with the floor verdict (:func:`verdict`); the first row of each table is
the noise floor, and the registered metrics' definitions follow the tables.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import yaml

from boltzbench.metrics import METRICS, metric_docs
from boltzbench.report.leaderboard import COST_COLUMNS, common_budget

__all__ = [
    "SHOWN",
    "DECLARED_COLUMNS",
    "AT_FLOOR_SIGMA",
    "PREAMBLE",
    "verdict",
    "shown_metrics",
    "leaderboard_markdown",
    "leaderboard_html",
    "config_text",
]

#: metrics shown in the Markdown/HTML leaderboard, in this order (the CSV has all)
SHOWN = (
    "log_z_error",
    "elbo_gap",
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


PREAMBLE = (
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


def leaderboard_markdown(frame: pd.DataFrame, n_eval: dict[str, int]) -> str:
    """The leaderboard as Markdown: the preamble, each target's tables (N_eval of
    each target in its heading) and the definitions of every registered metric."""
    lines = ["# boltzbench leaderboard", "", PREAMBLE, ""]
    for target in sorted(frame.target.unique()):
        lines += [_heading(target, n_eval), ""]
        for head, table in _target_tables(frame, target):
            lines += [head, "", table.to_markdown(index=False), ""]
    docs = metric_docs()
    lines += ["## Metric definitions", ""]
    lines += [f"- **{name}**: {doc}" for name, doc in sorted(docs.items())]
    return "\n".join(lines) + "\n"


def leaderboard_html(frame: pd.DataFrame, markdown: str, n_eval: dict[str, int]) -> str:
    """The leaderboard as HTML: the tables of :func:`leaderboard_markdown`, and its
    metric definitions (from ``markdown``) as preformatted text."""
    parts = ["<h1>boltzbench leaderboard</h1>", f"<p>{PREAMBLE}</p>"]
    for target in sorted(frame.target.unique()):
        parts.append(f"<h2>{_heading(target, n_eval).removeprefix('## ')}</h2>")
        for head, table in _target_tables(frame, target):
            parts += [f"<p>{head}</p>", table.to_html(index=False)]
    parts.append("<pre>" + markdown.split("## Metric definitions", 1)[-1] + "</pre>")
    return "\n".join(parts)


def config_text(config: dict[str, Any]) -> str:
    """The resolved config of a run as YAML, with a header saying so."""
    header = "# The resolved config of this run (defaults filled in), written by aggregate.\n"
    return header + yaml.safe_dump(config, sort_keys=True)
