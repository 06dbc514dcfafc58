"""Artifacts: Zarr round trips, atomic writes, provenance and content hashes."""

import json

import pytest
import torch
import xarray as xr

from boltzbench.hashing import PACKAGE_ROOT, closure_hash, derive_seed, hash_path, module_closure
from boltzbench.io import (
    dataset_to_samples,
    load_model,
    read_json,
    read_store,
    samples_to_dataset,
    save_model,
    write_json,
    write_store,
)
from boltzbench.methods.base import SampleSet
from boltzbench.provenance import provenance_attrs


def sample_set(n=5, weighted=True):
    x = torch.arange(2.0 * n).reshape(n, 2)
    return SampleSet(
        x=x,
        energy=x.sum(1),
        log_weight=-x[:, 0] if weighted else None,
        diagnostics={"ess_per_dim": torch.tensor([3.0, 4.0])},
        attrs={"acceptance": 0.5, "nested": {"a": 1}},
    )


def test_sample_set_round_trip(tmp_path):
    s = sample_set()
    write_store(samples_to_dataset(s), tmp_path / "s.zarr", {"k": "v"})
    back = dataset_to_samples(read_store(tmp_path / "s.zarr"))
    assert torch.equal(back.x, s.x) and torch.equal(back.log_weight, s.log_weight)
    assert back.log_q is None
    assert torch.equal(back.diagnostics["ess_per_dim"], torch.tensor([3.0, 4.0]))
    assert back.attrs["acceptance"] == 0.5 and back.attrs["k"] == "v"
    assert json.loads(back.attrs["nested"]) == {"a": 1}


def test_model_round_trip_without_pickle(tmp_path):
    state = {
        "flow.0.weight": torch.randn(3, 4),
        "shift": torch.tensor(2.5),
        "n": torch.tensor([1, 2]),
    }
    save_model(tmp_path / "m.zarr", state, {"loss": [3.0, 2.0, 1.0]}, {"seed": 1})
    back, history, attrs = load_model(tmp_path / "m.zarr")
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    assert list(history["loss"]) == [3.0, 2.0, 1.0] and attrs["seed"] == 1
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pt"))


def test_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    write_store(samples_to_dataset(sample_set()), path, {"version": 1})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed midway")

    monkeypatch.setattr(xr.Dataset, "to_zarr", killed)
    with pytest.raises(KeyboardInterrupt):
        write_store(samples_to_dataset(sample_set()), tmp_path / "new.zarr", {})
    assert not (tmp_path / "new.zarr").exists()  # nothing that looks complete
    assert read_store(path).attrs["version"] == 1
    write_json({"a": 1}, tmp_path / "m.json", {"p": 2})
    assert read_json(tmp_path / "m.json") == {"a": 1, "attrs": {"p": 2}}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_content_hash_sees_one_flipped_byte(tmp_path):
    path = tmp_path / "s.zarr"
    write_store(samples_to_dataset(sample_set()), path, {})
    before = hash_path(path)
    assert hash_path(path) == before
    chunk = max((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    assert hash_path(path) != before


def test_provenance_attrs(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    (tmp_path / "in.txt").write_text("x")
    attrs = provenance_attrs("train", {"b": 1, "a": [1, 2]}, 3, {"reference": tmp_path / "in.txt"})
    assert attrs["slurm_job_id"] == "4242" and attrs["seed"] == 3
    assert json.loads(attrs["config"]) == {"a": [1, 2], "b": 1}
    assert len(attrs["config_sha256"]) == 64 and len(attrs["source_sha256"]) == 64
    inputs = json.loads(attrs["inputs"])
    assert inputs["reference"]["sha256"] == hash_path(tmp_path / "in.txt")
    assert {"torch", "zuko", "numpy"} <= set(json.loads(attrs["packages"]))
    assert all(isinstance(v, (str, int, float)) for v in attrs.values())


def _names(*modules):
    return {str(p.relative_to(PACKAGE_ROOT)) for p in module_closure(*modules)}


def test_code_closure_of_each_step():
    """A code change reruns exactly the jobs whose step imports the changed file."""
    reference = _names("boltzbench.steps.reference")
    assert {"targets/analytic.py", "io.py", "provenance.py", "steps/reference.py"} <= reference
    # references by MCMC and merged MD runs; no metric and no trained method
    assert {"mcmc/reference.py", "mcmc/tempering.py", "md/simulate.py"} <= reference
    assert not any(f.startswith("metrics/") for f in reference)
    assert "methods/flow.py" not in reference and "steps/train.py" not in reference
    evaluate = _names("boltzbench.steps.evaluate")
    assert {"metrics/distributional.py", "metrics/evaluate.py"} <= evaluate
    mala = _names("boltzbench.steps.train", "boltzbench.methods.mala")
    assert {"mcmc/mala.py", "mcmc/diagnostics.py", "methods/mala.py"} <= mala
    assert "methods/flow.py" not in mala and "steps/figures.py" not in mala
    assert "methods/flows_util.py" in _names("boltzbench.methods.flow")


def test_closure_hash_sees_extra_files(tmp_path):
    (tmp_path / "user.py").write_text("a = 1")
    before = closure_hash("boltzbench.steps.reference", extra_files=(str(tmp_path / "user.py"),))
    (tmp_path / "user.py").write_text("a = 2")
    after = closure_hash("boltzbench.steps.reference", extra_files=(str(tmp_path / "user.py"),))
    assert before != after != closure_hash("boltzbench.steps.reference")


def test_derived_seeds():
    assert (
        derive_seed("train", "gmm40", "mala", 0) == 3022583294085082291
    )  # pinned: results depend on it
    assert derive_seed("train", "gmm40", "mala", 0) != derive_seed("train", "gmm40", "mala", 1)
    assert 0 <= derive_seed("x") < 2**63
