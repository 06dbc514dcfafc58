"""A short molecular chain end to end: MD replicas → merged reference → evaluate.

tests/configs/molecular.yaml: alanine dipeptide (vacuum, internal coordinates)
from OpenMM MD replicas, each its own job, merged into reference splits; DW-4
from parallel tempering; MALA and a maximum-likelihood flow on both.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from test_pipeline import REPO, planned_jobs, snakemake

from boltzbench.io import read_store

MOLECULAR = REPO / "tests/configs/molecular.yaml"

pytestmark = [pytest.mark.pipeline, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("molecular")
    snakemake(work, MOLECULAR, timeout=1200)
    return work


def test_md_replicas_are_separate_jobs_with_units(run):
    cfg = yaml.safe_load(MOLECULAR.read_text())["targets"]["aldp"]["reference"]["params"]
    for split in ("train", "eval", "floor"):
        stores = sorted((run / f"results/aldp/md/{split}").glob("replica*.zarr"))
        assert len(stores) == cfg["n_replicas"]
        for store in stores:
            ds = read_store(store)
            assert ds["positions_nm"].shape == (
                cfg["production_steps"] // cfg["save_every_steps"],
                22,
                3,
            )
            assert ds["potential_kJ"].attrs["units"] == "kJ/mol"
            # k_BT at 300 K is R T = 2.494 kJ/mol
            ratio = ds["potential_kJ"].values / ds["energy_kT"].values
            assert np.allclose(ratio, 0.00831446261815324 * 300.0)
            assert ds.attrs["md_platform"] == "Reference"
    seeds = {read_store(s).attrs["md_openmm_seed"] for s in run.glob("results/aldp/md/*/*.zarr")}
    assert len(seeds) == 3 * cfg["n_replicas"]  # every replica its own random stream


def test_merged_reference_is_in_the_targets_coordinates(run):
    from boltzbench.targets import build_target

    ref = read_store(run / "results/aldp/reference/eval.zarr")
    n_eval = yaml.safe_load(MOLECULAR.read_text())["reference"]["n_eval"]
    assert ref["x"].shape == (n_eval, 60)  # internal coordinates
    assert ref.attrs["reference_method"] == "md" and ref.attrs["n_replicas"] == 2
    assert math.isfinite(ref.attrs["rhat_energy"]) and ref.attrs["ess_energy"] > 1
    # the stored energy is the internal-coordinate energy: E(x(z)) - log|J(z)|
    target = build_target(
        {"kind": "aldp", "params": {"solvent": "vacuum", "coordinates": "internal"}}
    )
    import torch

    z = torch.as_tensor(ref["x"].values[:5])
    md = torch.as_tensor(ref["diag__md_energy_kT"].values[:5])
    _, log_det = target.internal.to_cartesian(z)
    assert torch.allclose(torch.as_tensor(ref["energy"].values[:5]), md - log_det, atol=1e-6)


def test_dw4_reference_records_convergence(run):
    attrs = read_store(run / "results/dw4/reference/eval.zarr").attrs
    for key in ("n_chains", "n_temps", "thinning", "acceptance", "rhat_max", "ess_energy"):
        assert key in attrs, key
    assert attrs["rhat_max"] <= attrs["rhat_threshold"]
    assert "Helmert" in attrs["com_treatment"]


def test_leaderboard_has_molecular_metrics_beside_floors(run):
    board = pd.read_csv(run / "results/leaderboard.csv").set_index(["target", "method"])
    for col in ("ramachandran_kl", "ramachandran_js", "torus_w2", "energy_w1"):
        assert board.loc[("aldp", "flow_mle"), f"{col}_mean"] >= 0, col
        assert math.isfinite(board.loc[("aldp", "flow_mle"), f"{col}_floor"]), col
    assert 0 <= board.loc[("aldp", "flow_mle"), "wrong_chirality_mean"] <= 1
    for col in ("distance_tv", "distance_w2", "energy_w2"):
        assert math.isfinite(board.loc[("dw4", "mala"), f"{col}_mean"]), col
    assert (run / "results/figures/aldp_samples.png").stat().st_size > 1000


def test_a_lost_md_replica_reruns_alone(run, tmp_path):
    """A replica killed before it wrote leaves no store and no merged split:
    asking for the split again reruns that replica and the merge, nothing else."""
    work = tmp_path / "copy"
    shutil.copytree(run, work, symlinks=True)  # copy2: modification times kept
    shutil.rmtree(work / "results/aldp/md/eval/replica0.zarr")
    shutil.rmtree(work / "results/aldp/reference/eval.zarr")
    jobs = planned_jobs(snakemake(work, MOLECULAR, "-n", "results/aldp/reference/eval.zarr"))
    assert sorted(r for r, _ in jobs) == ["md_replica", "reference"]
    assert [wc for r, wc in jobs if r == "md_replica"] == [
        {"target": "aldp", "split": "eval", "replica": "0"}
    ]
