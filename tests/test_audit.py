"""``boltzbench audit``: the provenance chain is printed and every recorded hash
verified; a flipped byte or an edited attr is caught and named.

The fast tests build a small chain by hand (reference -> model -> metrics); the
pipeline tests audit a real run of tests/configs/micro.yaml (shared with
tests/test_status.py through :func:`micro_run`), and its export unpacked elsewhere
(tests/test_export.py exports a hand-made run).
"""

from __future__ import annotations

import json
import shutil
import tarfile
import warnings
from pathlib import Path

import pytest
import torch
import xarray as xr
import zarr

from boltzbench.audit import audit, problems
from boltzbench.cli import main
from boltzbench.core import SampleSet
from boltzbench.hashing import data_hash, hash_json, hash_path, legacy_data_hash
from boltzbench.io import (
    read_attrs,
    read_store,
    recompute_data_hash,
    recorded_seal,
    samples_to_dataset,
    save_model,
    write_json,
    write_store,
)
from boltzbench.provenance import provenance_attrs

REPO = Path(__file__).resolve().parent.parent
MICRO = REPO / "tests/configs/micro.yaml"


def flip_byte(path: Path) -> None:
    """Flip one bit in the middle of ``path`` (a store: its largest chunk)."""
    if path.is_dir():
        path = max((p for p in path.rglob("c/*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def edit_store_attr(path: Path, key: str, value) -> None:
    zarr.open_group(path, mode="r+").attrs[key] = value


def run_audit(capsys, *argv: str) -> tuple[int, str]:
    code = main(["audit", *argv])
    return code, capsys.readouterr().out


# -- sealing (io) -------------------------------------------------------------


def test_a_store_is_sealed_with_its_data_hash(tmp_path):
    path = tmp_path / "s.zarr"
    s = SampleSet(x=torch.randn(50, 2), energy=torch.randn(50))
    write_store(samples_to_dataset(s), path, {"k": "v"})
    assert read_attrs(path)["data_hash"] == data_hash(path) == recompute_data_hash(path)
    before = hash_path(path)
    edit_store_attr(path, "k", "w")  # attrs: the whole-store hash sees it, the seal does not
    assert hash_path(path) != before and data_hash(path) == read_attrs(path)["data_hash"]
    flip_byte(path)
    assert data_hash(path) != read_attrs(path)["data_hash"]


def test_artifacts_sealed_before_blake3_still_verify(tmp_path):
    """A store and a JSON file sealed by the legacy scheme (``data_sha256``, a bare
    sha256 hex digest) verify by that scheme, and a flipped byte or an edited value
    still breaks them; their attrs are not carried into a store written from one."""
    path = tmp_path / "s.zarr"
    write_store(
        samples_to_dataset(SampleSet(x=torch.randn(50, 2), energy=torch.randn(50))), path, {}
    )
    group = zarr.open_group(path, mode="r+")
    del group.attrs["data_hash"]
    group.attrs["data_sha256"] = legacy_data_hash(path)
    assert recorded_seal(read_attrs(path)) == legacy_data_hash(path) == recompute_data_hash(path)
    copy = write_store(read_store(path), tmp_path / "c.zarr", {})
    assert "data_sha256" not in read_attrs(copy) and read_attrs(copy)["data_hash"] == data_hash(
        copy
    )
    flip_byte(path)
    assert recompute_data_hash(path) != read_attrs(path)["data_sha256"]

    doc = tmp_path / "m.json"
    write_json({"metrics": {"w2": 0.5}}, doc, provenance_attrs("evaluate", {"a": 1}, 0))
    legacy = json.loads(doc.read_text())
    del legacy["attrs"]["data_hash"]
    legacy["attrs"]["data_sha256"] = hash_json({"metrics": {"w2": 0.5}})
    doc.write_text(json.dumps(legacy))
    assert recompute_data_hash(doc) == legacy["attrs"]["data_sha256"]
    doc.write_text(doc.read_text().replace('"w2": 0.5', '"w2": 0.4'))
    assert recompute_data_hash(doc) != legacy["attrs"]["data_sha256"]


def test_a_json_artifact_with_provenance_is_sealed(tmp_path):
    attrs = provenance_attrs("evaluate", {"a": 1}, 0)
    path = write_json({"metrics": {"w2": 0.5, "bad": float("nan")}}, tmp_path / "m.json", attrs)
    assert read_attrs(path)["data_hash"] == recompute_data_hash(path)
    path.write_text(path.read_text().replace('"w2": 0.5', '"w2": 0.4'))
    assert read_attrs(path)["data_hash"] != recompute_data_hash(path)


# -- a hand-made chain: reference -> model -> metrics -------------------------


@pytest.fixture
def chain(tmp_path, monkeypatch):
    """results/{ref.zarr, model.zarr, metrics.json}, with relative recorded paths."""
    monkeypatch.chdir(tmp_path)
    ref = Path("results/ref.zarr")
    s = SampleSet(x=torch.randn(100, 2), energy=torch.randn(100))
    write_store(samples_to_dataset(s), ref, provenance_attrs("reference", {"n": 100}, 7))
    model = Path("results/model.zarr")
    attrs = provenance_attrs("train", {"lr": 0.1}, 0, {"reference": ref})
    save_model(model, {"w": torch.randn(3, 3)}, {"loss": [2.0, 1.0]}, attrs)
    metrics = Path("results/metrics.json")
    attrs = provenance_attrs("evaluate", {"n_eval": 10}, 0, {"samples": model, "reference": ref})
    write_json({"metrics": {"w2": 0.5}}, metrics, attrs)
    return tmp_path


def test_a_clean_chain_verifies_and_prints_every_link(chain, capsys):
    code, out = run_audit(capsys, "results/metrics.json")
    assert code == 0, out
    assert "every recorded hash verified" in out
    for text in ("metrics results/metrics.json", "← samples: model results/model.zarr"):
        assert text in out
    assert "← reference: reference data results/ref.zarr" in out and "(shown above)" in out
    for field in ("sha256 ", "config ", "source ", "git ", "packages", "seed 7", "host ", "SLURM"):
        assert field in out, field


def test_a_flipped_byte_in_a_chunk_is_caught_twice(chain, capsys):
    flip_byte(chain / "results/ref.zarr")
    code, out = run_audit(capsys, "results/metrics.json")
    assert code == 1
    bad = [line for line in out.splitlines() if line.startswith("  results/ref.zarr")]
    assert any("data_hash" in line and "edited or corrupted" in line for line in bad), out
    assert any("recorded by results/model.zarr (reference)" in line for line in bad), out
    assert any("recorded by results/metrics.json (reference)" in line for line in bad), out


def test_an_edited_attr_is_caught_by_the_downstream_record(chain, capsys):
    edit_store_attr(chain / "results/model.zarr", "seed", 1)
    code, out = run_audit(capsys, "results/metrics.json")
    assert code == 1
    (line,) = [ln for ln in out.splitlines() if ln.startswith("  results/model.zarr")]
    assert "recorded by results/metrics.json (samples)" in line
    assert "its data_hash verifies, so its attrs or metadata were changed" in line


def test_an_edited_config_attr_no_longer_matches_its_hash(chain, capsys):
    edit_store_attr(chain / "results/model.zarr", "config", '{"lr":0.2}')
    code, out = run_audit(capsys, "results/metrics.json")
    assert code == 1 and "results/model.zarr: config_sha256 recorded" in out


def test_an_edited_metric_and_a_missing_input_are_caught(chain, capsys):
    path = chain / "results/metrics.json"
    path.write_text(path.read_text().replace('"w2": 0.5', '"w2": 0.05'))
    shutil.rmtree(chain / "results/ref.zarr")
    code, out = run_audit(capsys, "results/metrics.json")
    assert code == 1
    assert "results/metrics.json: data_hash recorded" in out
    assert "results/ref.zarr: sha256 recorded by results/model.zarr (reference)" in out
    assert "the file is missing" in out


def test_a_corrupted_metadata_document_is_reported_not_raised(chain, capsys):
    path = chain / "results/model.zarr/zarr.json"
    path.write_bytes(path.read_bytes()[:100])  # truncated
    code, out = run_audit(capsys, "results/metrics.json")
    assert code == 1 and "results/model.zarr: attrs unreadable" in out


def test_usage_errors(chain, capsys):
    assert main(["audit", "results/nope.json"]) == 2
    assert main(["audit", "results/metrics.json", "--row", "t/m"]) == 2
    assert "needs a leaderboard file" in capsys.readouterr().err


# -- a real run ---------------------------------------------------------------


def micro_run(factory: pytest.TempPathFactory) -> Path:
    """The micro pipeline run of this test session (run once, shared by modules)."""
    from test_pipeline import snakemake

    work = factory.getbasetemp() / "micro-run"
    if not (work / "results/leaderboard.provenance.json").exists():
        work.mkdir(exist_ok=True)
        snakemake(work, MICRO)
    return work


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return micro_run(tmp_path_factory)


@pytest.fixture
def micro_copy(micro, tmp_path, monkeypatch):
    """A copy of the micro run to damage, as the working directory."""
    work = tmp_path / "copy"
    shutil.copytree(micro / "results", work / "results")
    monkeypatch.chdir(work)
    return work


@pytest.mark.pipeline
def test_audit_of_a_leaderboard_row_walks_to_the_reference_data(micro, capsys, monkeypatch):
    monkeypatch.chdir(micro)
    code, out = run_audit(capsys, "results/leaderboard.csv", "--row", "gauss/flow_mle")
    assert code == 0, out
    chain = [
        "leaderboard results/leaderboard.provenance.json",
        "← metrics:gauss/flow_mle/seed0: metrics results/gauss/flow_mle/seed0/metrics.json",
        "← samples: sample set results/gauss/flow_mle/seed0/samples.zarr",
        "← model: model results/gauss/flow_mle/seed0/model.zarr",
        "← reference: reference data results/gauss/reference/train.zarr",
        "← noise_floor:gauss/seed0: noise floor results/gauss/noise_floor/seed0.json",
        "← output:csv: file results/leaderboard.csv",
        "← output:config: file results/config.resolved.yaml",
    ]
    for text in chain:
        assert text in out, text
    assert "mala" not in out


@pytest.mark.pipeline
def test_audit_of_a_whole_run_from_elsewhere(micro, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # recorded paths are found from the audited file's parents
    code, out = run_audit(capsys, str(micro / "results/leaderboard.md"))
    assert code == 0, out
    auditor, _ = audit(micro / "results/leaderboard.provenance.json")
    stores = {p for p in auditor.nodes if p.suffix == ".zarr"}
    assert len(stores) == 2 * 2 + 3  # model and samples of 2 methods, 3 reference splits
    assert problems(auditor) == []


@pytest.mark.pipeline
def test_audit_of_a_run_with_a_flipped_byte(micro_copy, capsys):
    flip_byte(micro_copy / "results/gauss/mala/seed0/samples.zarr")
    code, out = run_audit(capsys, "results/leaderboard.csv", "--row", "gauss/mala")
    assert code == 1
    summary = out.split("\naudit: ", 1)[1]
    assert "files, 2 problem(s)" in summary, summary
    assert "samples.zarr: data_hash recorded" in summary
    assert (
        "samples.zarr: sha256 recorded by results/gauss/mala/seed0/metrics.json (samples)"
        in summary
    )
    assert "flow_mle" not in out


@pytest.mark.pipeline
def test_audit_of_an_edited_leaderboard(micro_copy, capsys):
    board = micro_copy / "results/leaderboard.csv"
    board.write_text(board.read_text().replace("gauss,mala", "gauss,mala2"))
    code, out = run_audit(capsys, "results/leaderboard.csv")
    assert code == 1
    assert "results/leaderboard.csv: sha256 recorded by results/leaderboard.provenance.json" in out
    assert main(["audit", "results/leaderboard.csv", "--row", "gauss/nope"]) == 2


@pytest.mark.pipeline
def test_every_store_of_a_run_opens_without_warnings(micro):
    """The stores as the pipeline leaves them, .snakemake_timestamp inside each."""
    stores = sorted((micro / "results").rglob("*.zarr"))
    assert len(stores) == 7 and all((s / ".snakemake_timestamp").is_file() for s in stores)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in stores:
            with xr.open_zarr(path) as ds:
                ds.load()


@pytest.mark.pipeline
def test_an_export_of_the_run_audits_unpacked_elsewhere(micro, capsys, tmp_path, monkeypatch):
    archive = tmp_path / "micro.tar.gz"
    assert main(["export", str(micro / "results"), str(archive)]) == 0, capsys.readouterr()
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "unpacked", filter="data")
    for part in ("leaderboard.csv", "leaderboard.html", "config.resolved.yaml", "figures/"):
        assert any(name.startswith(f"results/{part}") for name in names), part
    assert not any(("logs/" in n) or ("checkpoints/" in n) for n in names)
    monkeypatch.chdir(tmp_path)  # neither the run nor the current directory resolves links
    code, out = run_audit(capsys, "unpacked")
    assert code == 0, out
    assert "manifest ok" in out and "← reference: reference data unpacked/results/gauss" in out
    chunk = tmp_path / "unpacked/results/gauss/mala/seed0/samples.zarr/x/c/0/0"
    flip_byte(chunk)
    code, out = run_audit(capsys, "unpacked")
    assert code == 1
    summary = out.split("\naudit: ", 1)[1]
    assert "unpacked/results/gauss/mala/seed0/samples.zarr/x/c/0/0: manifest sha256" in summary
    assert "samples.zarr: data_hash recorded" in summary
