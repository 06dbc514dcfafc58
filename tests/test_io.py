"""Artifacts: Zarr round trips, atomic writes, provenance and content hashes."""

import json
import warnings

import blake3
import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from snakemake.io import IOFile, directory

from boltzbench.core import SampleSet
from boltzbench.hashing import (
    PACKAGE_ROOT,
    ROOT_METADATA,
    _hash_tree,
    canonical_json,
    closure_hash,
    data_hash,
    derive_seed,
    hash_path,
    legacy_data_hash,
    module_closure,
)
from boltzbench.io import (
    DATA_HASH,
    block_dims,
    dataset_to_samples,
    load_model,
    read_attrs,
    read_json,
    read_store,
    samples_to_dataset,
    save_model,
    store_encoding,
    write_json,
    write_store,
)
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


def test_a_store_opens_the_ecosystem_way_without_warnings(tmp_path):
    """``xarray.open_zarr(path)``, as a user opens a store, with every warning an error:
    a sample set and a model as written, then with the ``.snakemake_timestamp`` that
    Snakemake leaves inside a directory output (made by Snakemake's own code)."""
    samples = write_store(samples_to_dataset(sample_set()), tmp_path / "s.zarr", {"k": "v"})
    model = save_model(tmp_path / "m.zarr", {"w": torch.ones(2, 2)}, {"loss": [1.0]}, {})
    for path in (samples, model):
        for marked in (False, True):
            if marked:
                IOFile(directory(str(path))).touch()
                assert (path / ".snakemake_timestamp").is_file()
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                with xr.open_zarr(path) as ds:
                    ds.load()
                read_store(path)
    assert set(xr.open_zarr(samples).data_vars) >= {"x", "energy", "log_weight"}


def test_the_seal_covers_the_consolidated_metadata(tmp_path):
    """A reader of consolidated metadata takes the arrays' metadata from the root
    document, so an edit there (a dtype, here) breaks the seal, as one in an array's
    own document does; editing attrs does not."""
    path = write_store(samples_to_dataset(sample_set()), tmp_path / "s.zarr", {"k": "v"})
    root = json.loads((path / "zarr.json").read_text())
    assert set(root["consolidated_metadata"]["metadata"]) >= {"x", "energy"}
    sealed = root["attributes"]["data_hash"]
    assert data_hash(path) == sealed
    zarr.open_group(path, mode="r+").attrs["k"] = "w"
    assert data_hash(path) == sealed and "consolidated_metadata" in (path / "zarr.json").read_text()
    root = json.loads((path / "zarr.json").read_text())
    root["consolidated_metadata"]["metadata"]["x"]["data_type"] = "int64"
    (path / "zarr.json").write_text(json.dumps(root))
    assert data_hash(path) != sealed


def test_the_store_seal_is_a_blake3_tree_of_its_files(tmp_path):
    """The seal as documented, recomputed here from the files' bytes: BLAKE3 of the
    canonical JSON of [[path, BLAKE3 of the bytes], ...] and the consolidated
    metadata, every file but the root document and Snakemake's marker."""
    path = write_store(samples_to_dataset(sample_set(n=3000)), tmp_path / "s.zarr", {})
    IOFile(directory(str(path))).touch()
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != ".snakemake_timestamp")
    tree = {
        "files": [
            [str(f.relative_to(path)), blake3.blake3(f.read_bytes()).hexdigest()]
            for f in files
            if str(f.relative_to(path)) != "zarr.json"
        ],
        "consolidated_metadata": json.loads((path / "zarr.json").read_text())[
            "consolidated_metadata"
        ],
    }
    expected = "blake3:" + blake3.blake3(canonical_json(tree).encode()).hexdigest()
    assert len(tree["files"]) >= 6 and data_hash(path) == expected
    assert zarr.open_group(path, mode="r").attrs[DATA_HASH] == expected


def test_stores_without_consolidated_metadata_keep_their_seal(tmp_path):
    """A store written before consolidated metadata hashes by the legacy scheme as it
    did (every file but the root document) and reads without a warning; a zarr v2
    store's .zmetadata (which copies the root attrs) is covered but for those attrs."""
    old = tmp_path / "old.zarr"
    samples_to_dataset(sample_set()).to_zarr(old, consolidated=False)
    IOFile(directory(str(old))).touch()
    assert legacy_data_hash(old) == _hash_tree(old, skip=ROOT_METADATA)
    assert data_hash(old) != legacy_data_hash(old) and data_hash(old).startswith("blake3:")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(dataset_to_samples(read_store(old)).x, sample_set().x)
    v2 = tmp_path / "v2.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xr.Dataset({"x": ("s", np.arange(3.0))}).to_zarr(v2, consolidated=True, zarr_format=2)
        before = data_hash(v2)
        zarr.open_group(v2, mode="r+").attrs["data_hash"] = before
    assert data_hash(v2) == before and "data_hash" in (v2 / ".zmetadata").read_text()
    meta = json.loads((v2 / ".zmetadata").read_text())
    meta["metadata"]["x/.zarray"]["dtype"] = "<i8"
    (v2 / ".zmetadata").write_text(json.dumps(meta))
    assert data_hash(v2) != before


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


def test_writing_by_blocks_makes_the_same_store_byte_for_byte(tmp_path):
    """Arrays of several chunks written one chunk at a time (the default) give the
    store one ``to_zarr`` of everything gives: the same seal (every chunk and
    metadata document, and the consolidated metadata) and the same values, for
    float32, float64, int, bool and an index coordinate on the blocked dimension,
    beside a variable on another one, from a fresh dataset and from one read back
    from a store (with its encoding); a string on the dimension keeps it whole."""
    rng = np.random.default_rng(0)
    n = 1000
    ds = xr.Dataset(
        {
            "x": (("sample", "dim"), rng.standard_normal((n, 3)).astype(np.float32)),
            "energy": (("sample",), rng.standard_normal(n)),
            "count": (("sample",), np.arange(n) % 7),
            "ok": (("sample",), rng.random(n) > 0.5),
            "curve": (("step",), np.linspace(0.0, 1.0, 5)),
        },
        coords={"sample": np.arange(n) * 2},
        attrs={"k": "v"},
    )
    ds["x"][3, 1] = np.nan
    encoding = store_encoding(ds, chunk_bytes=1000)
    assert block_dims(ds, encoding) == {"sample"}
    for i, source in enumerate((ds, read_store(write_store(ds, tmp_path / "r.zarr", {})))):
        fast = write_store(source, tmp_path / f"f{i}.zarr", {"a": 1}, chunk_bytes=1000)
        whole = write_store(
            source, tmp_path / f"w{i}.zarr", {"a": 1}, chunk_bytes=1000, by_blocks=False
        )
        assert data_hash(fast) == data_hash(whole) == read_attrs(fast)[DATA_HASH]
        assert len(list((fast / "x/c").rglob("*"))) > 2  # several chunks
        back = read_store(fast)
        assert back.attrs.pop(DATA_HASH).startswith("blake3:")
        assert back.identical(ds.assign_attrs(a=1))
    named = ds.assign(label=("sample", np.array(["a"] * n)))
    assert block_dims(named, store_encoding(named, chunk_bytes=1000)) == set()


def test_stores_are_row_chunked_and_use_core_codecs_only(tmp_path, monkeypatch):
    """Every array is cut into whole rows of about CHUNK_BYTES, with Zarr v3's core
    ``bytes`` codec alone (no compressor), so any Zarr v3 reader decodes it; a dataset
    read back from a store with another layout is written in the library's."""
    import boltzbench.io as bio

    monkeypatch.setattr(bio, "CHUNK_BYTES", 1000)  # 1000 B: 41 rows of 3 float64
    ds = xr.Dataset(
        {
            "x": (("sample", "dim"), np.arange(300.0).reshape(100, 3)),
            "scalar": ((), np.float64(2.5)),
            "empty": (("k", "j"), np.zeros((0, 4), np.float32)),
        }
    )
    other = write_store(ds, tmp_path / "z.zarr", {}, compressors="auto", chunk_bytes=None)
    store = write_store(read_store(other), tmp_path / "s.zarr", {}, chunk_bytes=1000)
    meta = {v: json.loads((store / v / "zarr.json").read_text()) for v in ("x", "scalar", "empty")}
    chunks = {v: m["chunk_grid"]["configuration"]["chunk_shape"] for v, m in meta.items()}
    assert chunks == {"x": [41, 3], "scalar": [], "empty": [1, 4]}
    for m in meta.values():
        assert m["codecs"] == [{"name": "bytes", "configuration": {"endian": "little"}}]
    assert sorted(p.name for p in (store / "x/c").iterdir()) == ["0", "1", "2"]
    # a chunk file is the rows' raw little-endian bytes: 41 rows x 3 x 8 B
    assert (store / "x/c/0/0").read_bytes() == np.arange(123.0).astype("<f8").tobytes()
    back = read_store(store)
    assert np.array_equal(back["x"].values, ds["x"].values) and back["scalar"] == 2.5
    assert zarr.open_group(store, mode="r").attrs[DATA_HASH] == data_hash(store)
