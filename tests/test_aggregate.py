"""The leaderboard: mean ± std over seeds, noise floors with their spread,
verdicts, dropped rows, budgets."""

import math

import pandas as pd
import pytest

from boltzbench import report
from boltzbench.io import write_json
from boltzbench.steps import aggregate


def metrics_file(path, method, seed, budget=None, note="", **metrics):
    cost = {"total_n_energy": 1000.0 * (seed + 1), "total_n_grad": 10.0, "total_seconds": 2.0}
    if budget is not None:
        cost.update(budget=float(budget), budget_used=cost["total_n_energy"] / budget)
    result = {
        "target": "t",
        "method": method,
        "seed": seed,
        "n_samples": 500,
        "metrics": metrics,
        "cost": cost,
        "diagnostics": {"budget_note": note} if note else {},
    }
    return str(write_json(result, path / f"{method}_{seed}.json", {}))


def floor_file(path, seed, values):
    doc = {"target": "t", "seed": seed, "replicates": [{"w2": v} for v in values]}
    return str(write_json(doc, path / f"floor_{seed}.json", {}))


def test_leaderboard_statistics_floor_and_nonfinite(tmp_path):
    files = [
        metrics_file(tmp_path, "a", 0, w2=1.0, ess=0.5, nonfinite_fraction=0.0, mmd=0.1),
        metrics_file(tmp_path, "a", 1, w2=3.0, ess=0.7, nonfinite_fraction=0.0, mmd=0.3),
        # every energy non-finite: sample metrics are None, the fraction is 1
        metrics_file(tmp_path, "b", 0, w2=None, ess=None, nonfinite_fraction=1.0),
        # one seed of c failed: its mean is over the finite seed, and says so
        metrics_file(tmp_path, "c", 0, w2=5.0, ess=0.1, nonfinite_fraction=0.0),
        metrics_file(tmp_path, "c", 1, w2=None, ess=float("inf"), nonfinite_fraction=0.5),
    ]
    # two seeds × three replicates: mean 0.25, sample std 0.1 (by hand below)
    floors = [floor_file(tmp_path, 0, [0.1, 0.25, 0.4]), floor_file(tmp_path, 1, [0.25] * 3)]
    frame = report.leaderboard_frame(files, floors).set_index("method")
    assert frame.loc["a", "w2_mean"] == 2.0
    assert math.isclose(frame.loc["a", "w2_std"], math.sqrt(2.0))  # sample std, ddof = 1
    assert math.isclose(frame.loc["a", "ess_mean"], 0.6)
    assert frame.loc["a", "total_n_energy_mean"] == 1000.0 * 1.5
    assert frame.loc["a", "n_seeds"] == 2 and frame.loc["b", "n_seeds"] == 1
    floor_std = math.sqrt((0.15**2 * 2) / 5)  # deviations ±0.15 and four zeros, ddof = 1
    assert frame.loc["a", "w2_floor"] == pytest.approx(0.25)
    assert frame.loc["a", "w2_floor_std"] == pytest.approx(floor_std)
    assert frame.loc["a", "w2_floor_n"] == 6 and "ess_floor" not in frame
    assert frame.loc["a", "w2_excess_sigma"] == pytest.approx((2.0 - 0.25) / floor_std)
    assert math.isnan(frame.loc["b", "w2_mean"]) and frame.loc["b", "nonfinite_fraction_mean"] == 1
    assert frame.loc["c", "w2_mean"] == 5.0 and frame.loc["c", "w2_n"] == 1
    assert frame.loc["c", "ess_n"] == 1 and frame.loc["c", "nonfinite_fraction_mean"] == 0.25
    outputs = {k: tmp_path / f"board.{k}" for k in ("csv", "markdown", "html", "provenance")}
    aggregate.run(inputs={"metrics": files, "floors": floors}, outputs=outputs, n_eval=100)
    md = outputs["markdown"].read_text()
    assert "| reference (noise floor) |" in md and "## t (N_eval = 100)" in md
    assert "0.25 ± 0.095" in md  # the floor's cell: mean ± std of its 6 draws
    assert "2 ± 1.4 (+18σ)" in md  # 1.75 / 0.095 floor standard deviations above it
    assert "5 [1/2 seeds] (+50σ) † 25.0% dropped" in md  # W2 cannot count invalid rows
    assert len(pd.read_csv(outputs["csv"])) == 3


def test_verdict_reads_the_excess_in_floor_standard_deviations():
    assert report.verdict(1.9) == "≈ floor" and report.verdict(-2.0) == "≈ floor"
    assert report.verdict(4.4) == "+4σ" and report.verdict(-3.2) == "−3σ"
    assert report.verdict(math.nan) == ""


def test_main_table_is_one_budget_and_others_are_listed_apart(tmp_path):
    files = [
        metrics_file(tmp_path, "m1", 0, budget=2000, w2=1.0),
        metrics_file(tmp_path, "m2", 0, budget=2000, w2=1.5, note="trained on data"),
        metrics_file(tmp_path, "m3", 0, budget=9000, w2=0.5),
        metrics_file(tmp_path, "m4", 0, w2=0.7),  # no budget
    ]
    floors = [floor_file(tmp_path, 0, [0.4, 0.5, 0.6])]
    frame = report.leaderboard_frame(files, floors)
    assert report.common_budget(frame) == 2000
    outputs = {k: tmp_path / f"board.{k}" for k in ("csv", "markdown", "html", "provenance")}
    aggregate.run(inputs={"metrics": files, "floors": floors}, outputs=outputs, n_eval=100)
    md = outputs["markdown"].read_text()
    main, rest = md.split("Not at that budget", 1)
    assert "every method held to 2e+03 target energy evaluations" in main
    assert "| m1 " in main and "| m2 " in main and "| m3 " not in main
    assert "| m3 " in rest.split("## Metric definitions")[0] and "| m4 " in rest
    assert "trained on data" in main  # the budget note beside the row
    assert "budget_used" in main
