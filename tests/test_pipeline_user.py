"""A user's method and samples made elsewhere, through the whole pipeline.

One run of the tiny config's user target (tests/configs/tiny.yaml) with three
methods: MALA (built in), ``mine`` (tests/custom_method.py, named by
``callable``, with a budget and budget-sweep runs) and ``ext`` (``kind:
external``: a file of exact samples with declared costs and one non-finite
row). Both reach the leaderboard; the user method's evaluations are counted
and the file's costs are marked declared; editing the user's method file, or
the sample file, reruns its jobs and nothing else.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from custom_target import make_shifted_gaussian

from boltzbench.hashing import hash_path
from boltzbench.io import read_json, read_store

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests/configs/tiny.yaml"
SWEEP = [200, 300, 400]
DECLARED = {"n_energy": 12345, "n_grad": 678, "seconds": 42.5, "device": "test-gpu"}

pytestmark = [pytest.mark.pipeline, pytest.mark.timeout(900)]


def planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    from test_pipeline import planned_jobs as parse

    return parse(output)


def write_samples(path: Path, seed: int) -> None:
    """500 exact samples of the user target with their energies, exact log q (so log w
    = log Z), one failed draw (a row of NaN: kept and counted) and the declared costs."""
    target = make_shifted_gaussian(dim=3, shift=2.0, scale=0.5)
    x = target.sample(500, torch.Generator().manual_seed(seed))
    energy = target.energy(x)
    log_q = -energy - target.log_Z
    arrays = {"x": x, "energy": energy, "log_q": log_q, "log_weight": -energy - log_q}
    for v in arrays.values():
        v[17] = math.nan
    np.savez(path, **{k: v.numpy() for k, v in arrays.items()}, **DECLARED)


def config(samples: Path) -> dict:
    tiny = yaml.safe_load(TINY.read_text())
    mala = {**tiny["methods"]["mala"], "targets": ["user"]}
    mala.pop("overrides")
    return {
        **{k: tiny[k] for k in ("results_dir", "seeds", "reference", "sampling", "evaluation")},
        "targets": {"user": tiny["targets"]["user"]},
        "methods": {
            "mala": mala,
            "mine": {
                "callable": "custom_method:GaussianIS",
                "params": {"loc": 2.0, "scale": 0.7},
                "budget": 450,
            },
            "ext": {"kind": "external", "params": {"path": str(samples)}},
        },
        "budget_sweep": {"target": "user", "budgets": SWEEP, "methods": ["mine"]},
    }


def snakemake(work: Path, mods: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(mods), str(REPO / "tests")])}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    cmd += ["--directory", str(work), "--configfile", str(work / "config.yaml"), "--cores", "2"]
    out = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=600, env=env)
    if out.returncode:
        logs = "\n".join(p.read_text()[-3000:] for p in work.rglob("*.log"))
        tail = f"{out.stdout[-4000:]}\n{out.stderr[-6000:]}"
        raise AssertionError(f"snakemake failed:\n{tail}\n{logs}")
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(workdir, the directory holding the user's module, the sample file)."""
    work = tmp_path_factory.mktemp("pipeline_user")
    mods = work / "user_code"  # the user's own code, outside boltzbench
    mods.mkdir()
    shutil.copy(REPO / "tests/custom_method.py", mods / "custom_method.py")
    samples = work / "user_samples.npz"
    write_samples(samples, seed=5)
    (work / "config.yaml").write_text(yaml.safe_dump(config(samples)))
    snakemake(work, mods)
    return work, mods, samples


def board(work: Path) -> pd.DataFrame:
    return pd.read_csv(work / "results/leaderboard.csv").set_index("method")


def test_both_reach_the_leaderboard(run):
    work, _, _ = run
    b = board(work)
    assert set(b.index) == {"mala", "mine", "ext"} and (b.target == "user").all()
    for method in ("mine", "ext"):
        for col in ("w2_mean", "w2_reweighted_mean", "energy_w1_mean", "mmd_mean", "ess_mean"):
            assert math.isfinite(b.loc[method, col]), (method, col)
    assert b.loc["ext", "w2_reweighted_floor"] > 0  # scored beside the same floor


def test_user_method_is_counted_and_held_to_its_budget(run):
    work, _, _ = run
    b = board(work)
    mine = b.loc["mine"]
    assert not mine.costs_declared
    assert mine.total_n_energy_mean == 450 and mine.budget_used_mean == 1.0
    store = read_store(work / "results/user/mine/seed0/samples.zarr")
    assert store.attrs["sample_n_energy"] == 450 and store.attrs["fit_n_energy"] == 0
    assert store.attrs["budget_stop_sample"] == 1  # 450 of the 500 samples drawn
    assert store.x.shape == (450, 3) and store.attrs["proposal_scale"] == 0.7
    sweep = pd.read_csv(work / "results/budget_sweep.csv")
    assert sorted(sweep.budget) == SWEEP and (sweep.base_method == "mine").all()
    assert (sweep.total_n_energy_mean == sweep.budget).all()


def test_external_costs_are_declared(run):
    work, _, samples = run
    ext = board(work).loc["ext"]
    assert ext.costs_declared and ext.declared_device == "test-gpu"
    assert ext.total_n_energy_mean == 12345 and ext.total_n_grad_mean == 678
    assert ext.total_seconds_mean == 42.5
    assert ext.nonfinite_fraction_mean == pytest.approx(1 / 500)  # the NaN row: kept
    # exact log q: log w = log Z, but the failed draw has zero weight, Ẑ = (499/500) Z
    assert ext.log_z_error_mean == pytest.approx(-math.log(499 / 500), rel=1e-3)
    md = (work / "results/leaderboard.md").read_text()
    ext_row = next(line for line in md.splitlines() if line.startswith("| ext "))
    mine_row = next(line for line in md.splitlines() if line.startswith("| mine "))
    assert "1.23e+04 (declared)" in ext_row and "test-gpu" in ext_row
    assert "(declared)" not in mine_row
    store = read_store(work / "results/user/ext/seed0/samples.zarr")
    attrs = store.attrs
    assert attrs["costs_declared"] == 1 and "sample_n_energy" not in attrs
    assert attrs["check_n_energy"] == 499  # boltzbench's check: the finite rows
    assert attrs["external_sha256"] == hash_path(samples)
    inputs = json.loads(attrs["inputs"])
    assert inputs["external_samples"]["sha256"] == hash_path(samples)


def test_audit_verifies_the_sample_file_by_hash(run):
    from boltzbench.cli import main

    work, _, _ = run
    store = work / "results/user/ext/seed0/samples.zarr"
    assert main(["audit", str(store), "--directory", str(work)]) == 0
    assert main(["audit", str(work / "results/leaderboard.csv"), "--directory", str(work)]) == 0


def test_score_command_reproduces_the_pipelines_numbers(run, monkeypatch):
    """``boltzbench score`` on the same file, in the workflow's directory, reads its
    reference stores; named like the method, it draws the same rows."""
    from boltzbench.config import validate_config
    from boltzbench.steps.score import score_file

    work, mods, samples = run
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(mods))
    cfg = validate_config(yaml.safe_load((work / "config.yaml").read_text()))
    report = score_file(cfg, "user", samples, method_name="ext")
    assert report.reference.startswith("results/user/reference/eval.zarr")
    metrics = read_json(work / "results/user/ext/seed0/metrics.json")["metrics"]
    assert set(report.metrics) == set(metrics)
    for name, value in metrics.items():
        assert same(report.metrics[name], value), (name, report.metrics[name], value)
    floor = read_json(work / "results/user/noise_floor/seed0.json")["replicates"]
    assert report.floor["w2"].mean == pytest.approx(np.mean([r["w2"] for r in floor]))


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-15)


def test_nothing_to_do_on_rerun(run):
    work, mods, _ = run
    assert planned_jobs(snakemake(work, mods, "-n")) == []


def test_editing_the_users_method_reruns_its_jobs_only(run):
    work, mods, _ = run
    code = mods / "custom_method.py"
    original = code.read_text()
    code.write_text(original + "\n# an edit by the user\n")
    try:
        jobs = planned_jobs(snakemake(work, mods, "-n"))
    finally:
        code.write_text(original)  # the same code again: nothing to rerun
    runs = [(r, wc["method"]) for r, wc in jobs if r in ("train", "sample", "evaluate")]
    mine = {"mine", *(f"mine-budget{b}" for b in SWEEP)}
    assert {m for _, m in runs} == mine
    assert len(runs) == 3 * len(mine)
    assert not {r for r, _ in jobs} & {"reference", "noise_floor"}


def test_changing_the_sample_file_reruns_its_jobs_only(run):
    work, mods, samples = run
    write_samples(samples, seed=6)
    jobs = planned_jobs(snakemake(work, mods, "-n"))
    runs = {(r, wc["method"]) for r, wc in jobs if r in ("train", "sample", "evaluate")}
    assert runs == {("sample", "ext"), ("evaluate", "ext")}
