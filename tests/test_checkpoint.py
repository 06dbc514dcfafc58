"""Checkpoint and resume: a killed run, run again, ends exactly like an uninterrupted one.

In-process, a run is "killed" by an evaluation budget that raises midway; in
the pipeline test, a real Snakemake job is killed with SIGKILL and rerun with
``--rerun-incomplete``. Both compare the results bit for bit with an
uninterrupted run of the same seed, and the counted evaluations too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import correlated_gaussian

from boltzbench.checkpoint import Checkpoint
from boltzbench.io import read_store
from boltzbench.jobs import job_checkpoint
from boltzbench.methods.flow import FlowMethod
from boltzbench.methods.mala import MALA
from boltzbench.targets import CountingTarget

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ the file


def test_save_then_restore_round_trips_state_and_extras(tmp_path):
    ckpt = Checkpoint(tmp_path / "c.pt", every=10, key="k")
    extra = {"n": 7}
    ckpt.track("n", lambda: extra["n"], lambda v: extra.update(n=v))
    assert [s for s in range(35) if ckpt.due(s)] == [10, 20, 30]
    ckpt.save(20, {"x": torch.arange(3.0), "nested": {"h": [1.0, 2.0]}})
    extra["n"] = 0
    step, state = ckpt.restore()
    assert step == 20 and ckpt.resumed_from == 20 and extra["n"] == 7
    assert torch.equal(state["x"], torch.arange(3.0)) and state["nested"]["h"] == [1.0, 2.0]
    assert not list(tmp_path.glob(".*tmp*")), "the temporary file was renamed into place"


def test_a_checkpoint_of_another_config_is_ignored_and_removed(tmp_path):
    Checkpoint(tmp_path / "c.pt", every=1, key="old").save(5, {"x": torch.ones(1)})
    ckpt = Checkpoint(tmp_path / "c.pt", every=1, key="new")
    assert ckpt.restore() is None and ckpt.resumed_from == 0
    assert not (tmp_path / "c.pt").exists()


class _Pickled:
    """Any object that only a full unpickler could rebuild."""


def test_a_checkpoint_holding_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"key": "k", "step": 3, "state": {"obj": _Pickled()}, "extras": {}}, path)
    assert Checkpoint(path, every=1, key="k").restore() is None  # weights_only=True


def test_disabled_checkpoints_write_nothing(tmp_path):
    ckpt = Checkpoint(tmp_path / "c.pt", every=0, key="k")
    ckpt.save(10, {"x": torch.ones(1)})
    assert not ckpt.due(10) and not (tmp_path / "c.pt").exists()


# ------------------------------------------------------------------ in-process resume


class _Killed(Exception):
    pass


def _dies_after_saving(ckpt: Checkpoint, at: int) -> Checkpoint:
    """``ckpt``, made to raise right after it saved step ``at`` (a kill, in-process)."""
    save = ckpt.save

    def save_then_die(step, state):
        save(step, state)
        if step == at:
            raise _Killed

    ckpt.save = save_then_die
    return ckpt


def _killed_then_resumed(run, at: int, path: Path):
    """Run ``run(target, ckpt)`` until it is killed after saving step ``at``, then
    again from the checkpoint; returns (result, counts, step resumed from)."""
    times: dict[str, float] = {}
    first = CountingTarget(correlated_gaussian())
    with pytest.raises(_Killed):
        run(first, _dies_after_saving(job_checkpoint(path, 10, ["j"], first, times, "x"), at))
    again = CountingTarget(correlated_gaussian())
    ckpt = job_checkpoint(path, 10, ["j"], again, times, "x")
    return run(again, ckpt), again.counts, ckpt.resumed_from


def _uninterrupted(run):
    target = CountingTarget(correlated_gaussian())
    return run(target, Checkpoint(None)), target.counts


@pytest.mark.parametrize("mode", ["reverse_kl", "mle"])
def test_resumed_flow_training_equals_an_uninterrupted_one(mode, tmp_path):
    data = correlated_gaussian().sample(600, torch.Generator().manual_seed(0))
    params = dict(mode=mode, transforms=2, hidden_features=[16], n_iter=60, batch_size=32)

    def run(target, ckpt):
        gen = torch.Generator().manual_seed(3)
        return FlowMethod(**params).fit(target, data if mode == "mle" else None, gen, ckpt)

    resumed, counts, start = _killed_then_resumed(run, 30, tmp_path / "c.pt")
    ref, ref_counts = _uninterrupted(run)
    assert start == 30
    assert counts == ref_counts, "the counts saved by the killed attempt are carried over"
    for k, v in ref.flow_.state_dict().items():
        assert torch.equal(v, resumed.flow_.state_dict()[k]), k
    assert resumed.history_ == ref.history_


@pytest.mark.parametrize("at", [20, 40, 60], ids=["warm-up", "end-of-warm-up", "sampling"])
def test_resumed_mala_equals_an_uninterrupted_run(at, tmp_path):
    mala = dict(n_chains=6, n_warmup=40, n_burnin=10, thinning=2, step_size=0.3)

    def run(target, ckpt):
        return MALA(**mala).sample(target, 120, torch.Generator().manual_seed(5), ckpt)

    # killed during the step-size adaptation (40 steps), right after it, or
    # while sampling (after 10 more steps of burn-in)
    resumed, counts, start = _killed_then_resumed(run, at, tmp_path / "m.pt")
    ref, ref_counts = _uninterrupted(run)
    assert start == at and counts == ref_counts
    assert torch.equal(resumed.x, ref.x) and torch.equal(resumed.energy, ref.energy)
    assert resumed.attrs == ref.attrs


# ------------------------------------------------------------------ a real killed job

KILL_CONFIG = {
    "results_dir": "results",
    "seeds": [0],
    "reference": {"n_train": 500, "n_eval": 200},
    "sampling": {"n_samples": 400},
    "evaluation": {"n_eval": 100},
    "checkpoint": {"every": 20},
    "device": "cpu",
    "targets": {
        "slow": {
            "callable": "custom_target:make_slow_gaussian",
            "params": {"dim": 2, "delay_s": 0.01},
        }
    },
    "methods": {
        "flow_rkl": {
            "kind": "flow",
            "params": {
                "mode": "reverse_kl",
                "transforms": 2,
                "hidden_features": [16],
                "n_iter": 300,
                "batch_size": 32,
            },
        },
        "mala": {
            "kind": "mala",
            "params": {"n_chains": 20, "n_warmup": 100, "n_burnin": 20, "thinning": 5},
        },
    },
}

#: (method, the store it writes, the checkpoint's step name, the step to kill after)
KILLS = [("flow_rkl", "model.zarr", "train", 100), ("mala", "samples.zarr", "sample", 160)]


def _snakemake(work: Path, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    cmd += ["--directory", str(work), "--configfile", str(work / "config.yaml"), "--cores", "1"]
    return subprocess.Popen([*cmd, *args], env=env, **popen)


def _run(work: Path, *args: str) -> str:
    proc = _snakemake(work, *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-5000:]
    return out


def _workdir(tmp_path: Path, name: str) -> Path:
    work = tmp_path / name
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(KILL_CONFIG))
    return work


def _saved_step(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True)["step"]
    except (OSError, RuntimeError, EOFError, KeyError):
        return -1


def _kill_when_saved(work: Path, output: str, ckpt: Path, step: int) -> None:
    """Start Snakemake on ``output``; SIGKILL its whole process group once the
    job's checkpoint has passed ``step``."""
    proc = _snakemake(work, output, start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    try:
        while _saved_step(ckpt) < step:
            assert proc.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    work = _workdir(tmp_path_factory.mktemp("ckpt"), "whole")
    _run(work, *(f"results/slow/{m}/seed0/{store}" for m, store, _, _ in KILLS))
    return work


@pytest.mark.pipeline
@pytest.mark.timeout(600)
@pytest.mark.parametrize("method, store, step, kill_after", KILLS)
def test_a_killed_job_resumes_and_matches_an_uninterrupted_run(
    uninterrupted, tmp_path, method, store, step, kill_after
):
    work = _workdir(tmp_path, "killed")
    output = f"results/slow/{method}/seed0/{store}"
    ckpt = work / f"results/checkpoints/slow/{method}/seed0/{step}.pt"
    _kill_when_saved(work, output, ckpt, kill_after)

    # nothing that looks complete is left behind, only the checkpoint
    assert not (work / output).exists() and ckpt.exists()
    _run(work, "--unlock")
    _run(work, output, "--rerun-incomplete")

    got, ref = read_store(work / output), read_store(uninterrupted / output)
    assert got.attrs["resumed_from_step"] >= kill_after
    assert got.attrs["device"] == ref.attrs["device"] == "cpu"  # device: cpu in the config
    for name in ref.data_vars:
        np.testing.assert_array_equal(got[name].values, ref[name].values, err_msg=name)
    for key in ("fit_n_energy", "fit_n_grad", "sample_n_energy", "sample_n_grad"):
        if key in ref.attrs:
            assert got.attrs[key] == ref.attrs[key], key
    assert not ckpt.exists(), "the checkpoint is removed once the store is written"
