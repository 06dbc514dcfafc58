"""The leaderboard: mean ± std over seeds, noise floors, non-finite results."""

import math

import pandas as pd

from boltzbench.io import write_json
from boltzbench.steps import aggregate


def metrics_file(path, method, seed, **metrics):
    cost = {"total_n_energy": 1000.0 * (seed + 1), "total_n_grad": 10.0, "total_seconds": 2.0}
    result = {
        "target": "t",
        "method": method,
        "seed": seed,
        "n_samples": 500,
        "metrics": metrics,
        "cost": cost,
    }
    return str(write_json(result, path / f"{method}_{seed}.json", {}))


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
    floor = str(write_json({"target": "t", "noise_floor": {"w2": 0.25}}, tmp_path / "f.json", {}))
    frame = aggregate.leaderboard_frame(files, [floor]).set_index("method")
    assert frame.loc["a", "w2_mean"] == 2.0
    assert math.isclose(frame.loc["a", "w2_std"], math.sqrt(2.0))  # sample std, ddof = 1
    assert math.isclose(frame.loc["a", "ess_mean"], 0.6)
    assert frame.loc["a", "total_n_energy_mean"] == 1500.0
    assert frame.loc["a", "n_seeds"] == 2 and frame.loc["b", "n_seeds"] == 1
    assert frame.loc["a", "w2_floor"] == 0.25 and "ess_floor" not in frame
    assert math.isnan(frame.loc["b", "w2_mean"]) and frame.loc["b", "nonfinite_fraction_mean"] == 1
    assert frame.loc["c", "w2_mean"] == 5.0 and frame.loc["c", "w2_n"] == 1
    assert frame.loc["c", "ess_n"] == 1 and frame.loc["c", "nonfinite_fraction_mean"] == 0.25
    outputs = {k: tmp_path / f"board.{k}" for k in ("csv", "markdown", "html", "provenance")}
    aggregate.run(inputs={"metrics": files, "floors": [floor]}, outputs=outputs, n_eval=100)
    md = outputs["markdown"].read_text()
    assert "| reference (noise floor) |" in md and "2 ± 1.4" in md and "N_eval = 100" in md
    assert "5 [1/2 seeds]" in md
    assert len(pd.read_csv(outputs["csv"])) == 3
