"""``boltzbench export`` and the audit of an unpacked archive, on a small results
tree built by hand from real stores (tests/test_audit.py exports the micro run).

The tree is a run's shape: reference -> model -> samples -> metrics and a noise
floor -> leaderboard, and a figure; Snakemake's ``.snakemake_timestamp`` in each
store; logs, checkpoints and a stale run that the export leaves out.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image, PngImagePlugin
from snakemake.io import IOFile, directory
from test_audit import flip_byte

from boltzbench.audit import MANIFEST, audit, problems
from boltzbench.cli import main
from boltzbench.core import SampleSet
from boltzbench.export import ExportError, export
from boltzbench.hashing import hash_path
from boltzbench.io import (
    read_json,
    samples_to_dataset,
    save_model,
    write_json,
    write_store,
    write_text,
)
from boltzbench.provenance import provenance_attrs

R = Path("results")
RUN = R / "t/m/seed0"


def store(path: Path, step: str, inputs: dict | None = None, seed: int = 0) -> Path:
    """A sample-set store as a rule writes it, with Snakemake's timestamp inside."""
    s = SampleSet(x=torch.randn(40, 2), energy=torch.randn(40))
    write_store(samples_to_dataset(s), path, provenance_attrs(step, {"n": 40}, seed, inputs))
    IOFile(directory(str(path))).touch()
    return path


def figure(path: Path, inputs: dict) -> Path:
    attrs = provenance_attrs("figures", {"targets": ["t"]}, None, inputs)
    info = PngImagePlugin.PngInfo()
    info.add_text("boltzbench", json.dumps(attrs))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    return path


def leaderboard(metrics: Path, floor: Path) -> None:
    outputs = {
        "csv": write_text(R / "leaderboard.csv", "target,method\nt,m\n"),
        "markdown": write_text(R / "leaderboard.md", "| t | m |\n"),
        "config": write_text(R / "config.resolved.yaml", "seeds: [0]\n"),
    }
    written = {role: {"path": str(p), "sha256": hash_path(p)} for role, p in outputs.items()}
    roles = {"metrics:t/m/seed0": metrics, "noise_floor:t/seed0": floor}
    attrs = provenance_attrs("aggregate", {"n_eval": 40}, None, roles)
    write_json({"rows": 1, "outputs": written}, R / "leaderboard.provenance.json", attrs)


@pytest.fixture
def run(tmp_path, monkeypatch) -> Path:
    """The working directory of a small finished run (recorded paths are relative)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    train = store(R / "t/reference/train.zarr", "reference", seed=7)
    ev = store(R / "t/reference/eval.zarr", "reference", seed=8)
    attrs = provenance_attrs("train", {"lr": 0.1}, 0, {"reference": train})
    save_model(RUN / "model.zarr", {"w": torch.randn(3, 3)}, {"loss": [2.0, 1.0]}, attrs)
    samples = store(RUN / "samples.zarr", "sample", {"model": RUN / "model.zarr"})
    metrics = RUN / "metrics.json"
    attrs = provenance_attrs("evaluate", {}, 0, {"samples": samples, "reference": ev})
    write_json({"metrics": {"w2": 0.5}}, metrics, attrs)
    floor = R / "t/noise_floor/seed0.json"
    write_json({"w2": 0.1}, floor, provenance_attrs("noise_floor", {}, 0, {"eval": ev}))
    leaderboard(metrics, floor)
    figure(R / "figures/t_samples.png", {"input_0": ev, "input_1": samples})
    write_text(R / "logs/train/t_m_seed0.log", "a log\n")
    write_text(R / "checkpoints/t/m/seed0/state.npz", "a checkpoint\n")
    store(R / "t/stale/seed0/samples.zarr", "sample")  # another config's leftover
    return work


def unpack(archive: Path, where: Path) -> Path:
    where.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="data")
    return where


def audit_cli(capsys, path: Path) -> tuple[int, str]:
    code = main(["audit", str(path)])
    return code, capsys.readouterr().out


@pytest.fixture
def unpacked(run, tmp_path, monkeypatch) -> Path:
    out, _ = export(R, tmp_path / "run.tar.gz")
    monkeypatch.chdir(tmp_path)  # away from the run: nothing may resolve there
    return unpack(out, tmp_path / "elsewhere")


def test_the_archive_holds_the_run_and_its_manifest(run, tmp_path):
    out, n = export(R, tmp_path / "run.tar")
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile(MANIFEST))
    assert names[0] == MANIFEST and len(names) == n == len(manifest["files"]) + 1
    for name in (
        "results/leaderboard.csv",
        "results/leaderboard.md",
        "results/leaderboard.provenance.json",
        "results/config.resolved.yaml",
        "results/t/m/seed0/metrics.json",
        "results/t/m/seed0/model.zarr/zarr.json",
        "results/t/m/seed0/samples.zarr/x/c/0/0",
        "results/t/reference/train.zarr/zarr.json",
        "results/t/reference/eval.zarr/energy/c/0",
        "results/t/noise_floor/seed0.json",
        "results/figures/t_samples.png",
    ):
        assert name in names, name
        assert manifest["files"][name]["sha256"] == hash_path(run / name)
    for left_out in ("logs/", "checkpoints/", "stale", ".snakemake_timestamp"):
        assert not any(left_out in name for name in names), left_out
    attrs = manifest["attrs"]
    assert attrs["boltzbench_step"] == "export" and "data_hash" in attrs
    assert set(json.loads(attrs["inputs"])) == {
        "leaderboard.provenance.json",
        "figures/t_samples.png",
    }


def test_an_unpacked_archive_audits_clean(unpacked, capsys):
    code, out = audit_cli(capsys, unpacked)
    assert code == 0, out
    assert out.splitlines()[0] == "export manifest elsewhere/MANIFEST.json"
    assert "manifest ok" in out and "every recorded hash verified" in out
    for text in (
        "← leaderboard.provenance.json: leaderboard elsewhere/results/leaderboard.provenance.json",
        "← samples: sample set elsewhere/results/t/m/seed0/samples.zarr",
        "← model: model elsewhere/results/t/m/seed0/model.zarr",
        "← reference: reference data elsewhere/results/t/reference/train.zarr",
        "← figures/t_samples.png: figure elsewhere/results/figures/t_samples.png",
    ):
        assert text in out, text
    auditor, _ = audit(unpacked / MANIFEST)  # the manifest itself works as well
    assert problems(auditor) == []


def test_a_flipped_byte_fails_the_audit_naming_the_file(unpacked, capsys):
    flip_byte(unpacked / "results/t/m/seed0/samples.zarr/x/c/0/0")
    code, out = audit_cli(capsys, unpacked)
    assert code == 1
    summary = out.split("\naudit: ", 1)[1]
    chunk = "elsewhere/results/t/m/seed0/samples.zarr/x/c/0/0"
    assert f"{chunk}: manifest sha256 " in summary and "changed since the export" in summary
    assert "samples.zarr: data_hash recorded" in summary
    assert "samples.zarr: sha256 recorded by elsewhere/results/t/m/seed0/metrics.json" in summary


def test_a_flipped_byte_in_a_plain_file_and_an_edited_manifest(unpacked, capsys):
    table = unpacked / "results/leaderboard.md"
    flip_byte(table)
    code, out = audit_cli(capsys, unpacked)
    assert code == 1 and "elsewhere/results/leaderboard.md: manifest sha256" in out
    assert "results/leaderboard.md: sha256 recorded by" in out
    manifest = unpacked / MANIFEST
    doc = read_json(manifest)
    doc["files"]["results/leaderboard.md"]["sha256"] = hash_path(table)
    manifest.write_text(json.dumps(doc))  # the file list now agrees; the seal does not
    code, out = audit_cli(capsys, unpacked)
    assert code == 1 and "elsewhere/MANIFEST.json: data_hash recorded" in out


def test_missing_and_unlisted_files_are_named(unpacked, capsys):
    (unpacked / "results/t/noise_floor/seed0.json").unlink()
    (unpacked / "results/extra.txt").write_text("not from the run")
    code, out = audit_cli(capsys, unpacked)
    assert code == 1
    assert "results/t/noise_floor/seed0.json: manifest sha256 " in out
    assert "but the file is missing" in out
    assert "elsewhere/results/extra.txt: manifest does not list this file" in out


def test_a_run_that_does_not_verify_is_not_exported(run, tmp_path, capsys):
    flip_byte(run / RUN / "samples.zarr")
    with pytest.raises(ExportError, match="samples.zarr: data_hash recorded"):
        export(R, tmp_path / "run.tar.gz")
    assert main(["export", "results", str(tmp_path / "run.tar.gz")]) == 2
    assert "does not verify" in capsys.readouterr().err
    assert not (tmp_path / "run.tar.gz").exists()


def test_export_usage_errors(run, tmp_path, capsys):
    with pytest.raises(ExportError, match="must end in"):
        export(R, tmp_path / "run.zip")
    with pytest.raises(ExportError, match="no leaderboard.provenance.json"):
        export(R / "t", tmp_path / "run.tar")
    assert main(["export", "results", str(tmp_path / "run.tgz")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'run.tgz'}: " in out and "boltzbench audit" in out
