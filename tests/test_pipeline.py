"""The Snakemake pipeline end to end on the tiny config, in a temp dir.

Checks the leaderboard (finite values for every (target, method), noise floors
beside sample metrics), provenance on every artifact, and the incremental-rerun
properties through Snakemake's dry run.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from boltzbench.hashing import hash_path
from boltzbench.io import read_store

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests/configs/tiny.yaml"

pytestmark = [pytest.mark.pipeline, pytest.mark.timeout(900)]


def snakemake(workdir: Path, config: Path, *args: str, timeout: int = 600):
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        "--cores",
        "2",
        *args,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode:
        logs = "\n".join(p.read_text()[-3000:] for p in workdir.rglob("*.log"))
        raise AssertionError(
            f"snakemake failed:\n{out.stdout[-4000:]}\n{out.stderr[-6000:]}\n{logs}"
        )
    return out.stdout + out.stderr


def planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run plans."""
    jobs, rule = [], None
    for line in output.splitlines():
        m = re.match(r"^\s*(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
            jobs.append((rule, {}))
        m = re.match(r"^\s*wildcards: (.*)$", line)
        if m and jobs:
            jobs[-1][1].update(dict(kv.split("=", 1) for kv in m.group(1).split(", ")))
    return jobs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    snakemake(work, TINY)
    return work


def test_leaderboard_is_finite_for_every_target_and_method(run):
    cfg = yaml.safe_load(TINY.read_text())
    board = pd.read_csv(run / "results/leaderboard.csv")
    pairs = {
        (t, m) for m, spec in cfg["methods"].items() for t in spec.get("targets") or cfg["targets"]
    }
    assert set(zip(board.target, board.method)) == pairs
    for col in [
        "w2_mean",
        "energy_w1_mean",
        "mmd_mean",
        "total_n_energy_mean",
        "total_seconds_mean",
    ]:
        assert board[col].map(math.isfinite).all(), col
    assert board["w2_floor"].map(math.isfinite).all()
    assert (board["w2_floor"] > 0).all()
    # the floor has a spread: floor_replicates (default 5) draws per seed
    assert (board["w2_floor_std"] > 0).all() and (board["w2_floor_n"] == 5).all()
    assert board["w2_excess_sigma"].map(math.isfinite).all()
    # weighted methods get Δlog Z and ESS; every target here has a known log Z
    weighted = board[board.method.isin(["smc", "flow_rkl", "flow_mle"])]
    for col in [
        "log_z_error_mean",
        "ess_mean",
        "w2_reweighted_mean",
        "w2_reweighted_floor",
        "energy_w1_reweighted_mean",
        "mmd_reweighted_mean",
    ]:
        assert weighted[col].map(math.isfinite).all(), col
    assert ((weighted["ess_mean"] > 0) & (weighted["ess_mean"] <= 1)).all()
    mle = board[board.method == "flow_mle"]
    assert (mle["fit_n_data_mean"] == cfg["reference"]["n_train"]).all()
    assert (mle["total_n_energy_mean"] == cfg["sampling"]["n_samples"]).all()  # MLE: no energy
    md = (run / "results/leaderboard.md").read_text()
    assert "reference (noise floor)" in md and "N_eval" in md


def test_budget_sweep_stays_within_its_budgets(run):
    cfg = yaml.safe_load(TINY.read_text())
    sweep = cfg["budget_sweep"]
    table = pd.read_csv(run / "results/budget_sweep.csv")
    expected = {(m, b) for m in sweep["methods"] for b in sweep["budgets"]}
    assert set(zip(table.base_method, table.budget)) == expected
    assert (table.target == sweep["target"]).all()
    assert (table.total_n_energy_mean <= table.budget).all()
    assert (table.budget_mean == table.budget).all()  # the store records its budget
    smc = table[table.base_method == "smc"].sort_values("budget")
    # SMC's full ladder (20 temperatures, 2 moves, 500 particles) costs 20,500: every
    # budget here shortens it, so more budget buys strictly more evaluations and a
    # larger share of the modes
    assert smc.total_n_energy_mean.is_monotonic_increasing
    assert (smc.total_n_energy_mean > smc.budget - 500 * 2).all()
    assert table.ess_per_1e6_evals_mean.map(math.isfinite).all()
    assert (run / "results/figures/budget_sweep.png").stat().st_size > 1000
    prov = json.loads((run / "results/budget_sweep.provenance.json").read_text())
    assert prov["outputs"]["csv"]["sha256"] == hash_path(run / "results/budget_sweep.csv")
    assert len(json.loads(prov["attrs"]["inputs"])) == len(table) + 1  # + one seed's floor
    board = pd.read_csv(run / "results/leaderboard.csv")
    assert not board.method.str.contains("-budget").any()  # kept out of the leaderboard


def test_figures_exist(run):
    cfg = yaml.safe_load(TINY.read_text())
    for t in cfg["targets"]:
        assert (run / f"results/figures/{t}_samples.png").stat().st_size > 1000
    assert (run / "results/figures/training_curves.png").stat().st_size > 1000


def test_figures_carry_provenance(run):
    from PIL import Image

    for png in run.glob("results/figures/*.png"):
        attrs = json.loads(Image.open(png).text["boltzbench"])
        assert attrs["boltzbench_step"] in ("figures", "budget_sweep")
        assert len(attrs["config_sha256"]) == 64


def test_every_artifact_carries_provenance(run):
    keys = {
        "config",
        "config_sha256",
        "source_sha256",
        "git_commit",
        "git_dirty",
        "packages",
        "seed",
        "inputs",
        "host",
        "started_at",
        "finished_at",
        "slurm_job_id",
    }
    stores = list(run.glob("results/**/*.zarr"))
    assert stores
    for store in stores:
        attrs = read_store(store).attrs
        assert keys <= set(attrs), store
    for path in run.glob("results/**/metrics.json"):
        attrs = json.loads(path.read_text())["attrs"]
        assert keys <= set(attrs), path
        inputs = json.loads(attrs["inputs"])
        assert {"samples", "reference"} <= set(inputs)
        assert all(len(v["sha256"]) == 64 for v in inputs.values())


def test_sample_store_records_costs(run):
    store = next(run.glob("results/*/mala/seed*/samples.zarr"))
    attrs = read_store(store).attrs
    for k in (
        "fit_n_energy",
        "fit_n_grad",
        "fit_seconds",
        "sample_n_energy",
        "sample_n_grad",
        "sample_seconds",
    ):
        assert k in attrs
    assert attrs["sample_n_energy"] > 0 and attrs["sample_n_grad"] > 0


def test_nothing_to_do_on_rerun(run):
    out = snakemake(run, TINY, "-n")
    assert planned_jobs(out) == [], out[-2000:]


def test_changing_one_method_reruns_only_its_chain(run, tmp_path):
    cfg = yaml.safe_load(TINY.read_text())
    cfg["methods"]["mala"]["params"]["n_burnin"] = 21  # no per-target override of it
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(snakemake(run, changed, "-n"))
    rules = {r for r, _ in jobs}
    downstream = {"aggregate", "figures", "all"}
    assert (
        {"train", "sample", "evaluate", "aggregate"}
        <= rules
        <= {"train", "sample", "evaluate"} | downstream
    )
    for rule, wc in jobs:
        if rule in ("train", "sample", "evaluate"):
            assert wc["method"] == "mala", (rule, wc)
    n_mala = len(cfg["methods"]["mala"].get("targets") or cfg["targets"]) * len(cfg["seeds"])
    assert sum(r == "train" for r, _ in jobs) == n_mala
    assert sum(r == "evaluate" for r, _ in jobs) == n_mala
    assert "reference" not in rules and "noise_floor" not in rules
    assert "aggregate" in rules


def test_snakemake_report_shows_leaderboard_and_figures(run):
    snakemake(run, TINY, "--report", str(run / "report.html"))
    html = (run / "report.html").read_text()
    for name in ("leaderboard.html", "leaderboard.csv", "gmm40_samples.png", "training_curves.png"):
        assert name in html, name


def test_jobs_run_the_code_of_their_own_workflow(tmp_path):
    """A copy of the workflow, run with this environment (whose editable install
    points at REPO/src), runs the copy's code in its jobs, not REPO's: the code
    each job hashes into its provenance is the code it runs."""
    import shutil

    copy = tmp_path / "copy"
    copy.mkdir()
    for part in ("Snakefile", "workflow", "src", "profiles", "envs"):
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, copy / part)
    marker = tmp_path / "marker.txt"
    step = copy / "src/boltzbench/steps/noise_floor.py"
    step.write_text(step.read_text() + f"\nopen({str(marker)!r}, 'w').write(__file__)\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "seeds": [0],
                "reference": {"n_train": 100, "n_eval": 100},
                "evaluation": {"n_eval": 50},
                "targets": {"g": {"kind": "gaussian", "params": {"dim": 2}}},
                "methods": {"mala": {"kind": "mala"}},
            }
        )
    )
    work = tmp_path / "work"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(copy / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(config),
        "--cores",
        "1",
        "results/g/noise_floor/seed0.json",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert marker.read_text() == str(step)
