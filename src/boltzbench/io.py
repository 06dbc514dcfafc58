"""Reading and writing artifacts: Zarr stores (via xarray) and JSON files.

Every write (stores, JSON, text, and figures through :func:`atomic_path`) goes
to a temporary path beside its destination and is renamed into place at the
end, so a killed job never leaves an artifact that looks complete.
Provenance attributes come from :func:`boltzbench.provenance.provenance_attrs`;
this module only attaches them, and seals each artifact with ``data_hash``,
the hash of its content without its attrs (an artifact cannot record the hash of
its own bytes), a value that names its scheme (``"blake3:<hex>"``):

* a Zarr store: :func:`boltzbench.hashing.data_hash` (a BLAKE3 hash tree of every
  file but the root ``zarr.json``, plus the consolidated metadata inside it),
  computed on the temporary path and written into the root attrs before the
  rename;
* a JSON file written with provenance attrs: the BLAKE3 of the canonical JSON of
  the document without its ``"attrs"``.

Artifacts sealed before BLAKE3 carry ``data_sha256`` (a bare sha256 hex digest)
instead; they are verified by that scheme (:func:`recorded_seal`,
:func:`recompute_data_hash`).

:func:`read_attrs` and :func:`recompute_data_hash` read them back for
``boltzbench audit``.

Stores carry consolidated metadata: their root ``zarr.json`` lists every array,
so ``xarray.open_zarr(path)`` opens one without a warning and without listing
the directory. (Listing it is what made zarr warn about Snakemake's
``.snakemake_timestamp``, the empty file Snakemake creates inside a
``directory()`` output to carry its modification time: zarr tries each entry as
a child node, and that file is none.)

Stores:

* **reference / sample sets** (:func:`samples_to_dataset`): dims ``(sample, dim)``;
  variables ``x``, ``energy`` and, when present, ``log_weight`` and ``log_q``;
  diagnostics as extra variables; scalar attrs.
* **models** (:func:`save_model`): each model-state tensor as a variable
  ``state__<name>``, each training curve as ``history__<name>`` over ``step``.

Layout on disk (:func:`store_encoding`): every array is cut along its first
dimension only, into chunks of whole rows of about :data:`CHUNK_BYTES` (16 MiB),
so a chunk is one contiguous slice of the array, written without a gather; and
its chunks are stored with Zarr v3's core ``bytes`` codec alone (little-endian,
no compression; :data:`COMPRESSORS` is empty), which every Zarr v3 reader
decodes. Sample coordinates are floats whose low mantissa bits are noise, so a
compressor saves little and costs more than the disk write:
``benchmarks/bench_zarr.py`` tries Zstd and Blosc (LZ4, Zstd; byte-, bit- and no
shuffle) on 10⁶ × 66 float32 normal draws: the smallest store (Blosc LZ4 with bit
shuffle) is 11 % smaller for about 1.3× the CPU time, Zstd level 0 9 % for 1.8×
(README, *Benchmarks*). Every chunk is written,
even one of fill values only (``write_empty_chunks``), which saves zarr a scan
of each chunk. An array of several chunks is written one chunk of rows at a
time (:func:`block_dims`): zarr encodes such a block from the array's own
memory, where a whole array handed to it is first copied chunk by chunk into
fresh chunk buffers; the store is the same byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
import zarr

from boltzbench.core import SampleSet
from boltzbench.hashing import (
    canonical_json,
    data_hash,
    file_digest,
    hash_json,
    is_legacy_seal,
    seal_bytes,
    seal_hash,
)

__all__ = [
    "CHUNK_BYTES",
    "COMPRESSORS",
    "store_encoding",
    "atomic_path",
    "write_text",
    "write_store",
    "read_store",
    "write_json",
    "read_json",
    "read_attrs",
    "recompute_data_hash",
    "DATA_HASH",
    "block_dims",
    "LEGACY_DATA_HASH",
    "recorded_seal",
    "samples_to_dataset",
    "dataset_to_samples",
    "save_model",
    "load_model",
]

#: the attr that seals an artifact: the hash of its content without its attrs
DATA_HASH = "data_hash"
#: the seal's attr before BLAKE3 (a bare sha256 hex digest), still verified
LEGACY_DATA_HASH = "data_sha256"
#: attrs that carry this key are provenance attrs, and a JSON file with them is sealed
PROVENANCE_KEY = "boltzbench_step"
#: bytes of one chunk, about: whole rows along an array's first dimension
CHUNK_BYTES = 16 << 20
#: the compressors after the ``bytes`` codec of every array: none (module docstring)
COMPRESSORS: tuple = ()


def _tmp_path(path: Path) -> Path:
    """A fresh temporary path beside ``path``; leftovers of killed writers are removed."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink()
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _replace(tmp: Path, path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    yield tmp
    _replace(tmp, path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _row_chunks(shape: tuple[int, ...], itemsize: int, chunk_bytes: int) -> tuple[int, ...]:
    """Chunk shape of whole rows (every dimension but the first in full), ~``chunk_bytes``."""
    if not shape:
        return ()
    row = itemsize * int(np.prod([max(n, 1) for n in shape[1:]]))
    rows = min(max(shape[0], 1), max(chunk_bytes // row, 1))
    return (rows, *(max(n, 1) for n in shape[1:]))


def store_encoding(
    ds: xr.Dataset,
    compressors: tuple | str = COMPRESSORS,
    chunk_bytes: int | None = CHUNK_BYTES,
) -> dict[str, dict[str, Any]]:
    """xarray's ``encoding`` for every variable of ``ds``: row chunks, ``compressors``.

    ``chunk_bytes=None`` keeps zarr's own chunk shapes and ``compressors="auto"``
    its default codec (Zstd level 0), the layout before these settings.
    """
    encoding: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        enc: dict[str, Any] = {"compressors": compressors}
        if chunk_bytes is not None:
            enc["chunks"] = _row_chunks(var.shape, var.dtype.itemsize, chunk_bytes)
        encoding[str(name)] = enc
    return encoding


def write_store(
    ds: xr.Dataset,
    path: str | Path,
    attrs: dict[str, Any],
    *,
    compressors: tuple | str = COMPRESSORS,
    chunk_bytes: int | None = CHUNK_BYTES,
    by_blocks: bool = True,
) -> Path:
    """Write ``ds`` with ``attrs`` to the Zarr store ``path``, atomically and sealed.

    ``compressors`` and ``chunk_bytes``: :func:`store_encoding` (the defaults are
    the library's layout; other values are for ``benchmarks/bench_zarr.py``).
    ``by_blocks``: write the arrays of several chunks one chunk at a time where
    :func:`block_dims` allows it (the store is the same, byte for byte; False
    writes every array through one ``to_zarr``, for the tests and the benchmark).
    """
    ds = ds.copy()
    kept = {k: v for k, v in ds.attrs.items() if k not in (DATA_HASH, LEGACY_DATA_HASH)}
    ds.attrs = {**kept, **attrs}
    for var in ds.variables.values():  # a dataset read from a store brings its layout
        for key in ("chunks", "preferred_chunks", "compressors", "compressor", "filters"):
            var.encoding.pop(key, None)
    encoding = store_encoding(ds, compressors, chunk_bytes)
    blocks = block_dims(ds, encoding) if by_blocks else set()
    digests: dict[str, str] = {}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # zarr v3 notes that consolidated metadata is not (yet) in its specification
        warnings.simplefilter("ignore", category=UserWarning)
        with zarr.config.set({"array.write_empty_chunks": True}):
            if blocks:  # xarray writes the metadata and every other array, then the blocks
                ds.isel({d: slice(0, 0) for d in blocks}).to_zarr(
                    tmp, mode="w", consolidated=False, encoding=encoding
                )
                digests = _write_blocks(tmp, ds, blocks)
                zarr.consolidate_metadata(tmp)
            else:
                ds.to_zarr(tmp, mode="w", consolidated=True, encoding=encoding)
        # the seal covers the consolidated copy, and setting an attr keeps it as it is
        zarr.open_group(tmp, mode="r+").attrs[DATA_HASH] = data_hash(tmp, digests)
    return Path(path)


#: encoding keys with which xarray changes the values it writes (CF encoding)
_VALUE_ENCODING = frozenset({"scale_factor", "add_offset", "units", "calendar", "missing_value"})


def _plain(var: xr.Variable, dim: Hashable) -> bool:
    """Whether xarray writes ``var`` as its values, with ``dim`` first: booleans or
    numbers, no CF encoding that changes them (a cast, scale and offset, time
    units, a fill value other than NaN put in place of NaN). The rest of its
    encoding is zarr's layout, which both ways of writing share."""
    encoding = var.encoding
    fill = encoding.get("_FillValue")
    return (
        var.dims[:1] == (dim,)
        and var.dtype.kind in "biuf"
        and not _VALUE_ENCODING & set(encoding)
        and np.dtype(encoding.get("dtype", var.dtype)) == var.dtype
        and (var.dtype.kind != "f" or fill is None or bool(np.isnan(fill)))
    )


def block_dims(ds: xr.Dataset, encoding: dict[str, dict[str, Any]]) -> set[Hashable]:
    """The dimensions along which :func:`write_store` writes one chunk at a time.

    A whole array handed to zarr (``array[...] = values``, what ``to_zarr``
    does) is copied chunk by chunk into a fresh chunk buffer (filled with the
    fill value first) before encoding, two extra passes over its bytes; a
    block that is exactly one chunk is encoded from the array's own memory.
    A dimension qualifies when it is the first of an array of several chunks,
    and every variable on it is :func:`_plain` along it, so that writing its
    values as they are is what xarray would write.
    """
    several = {
        var.dims[0]
        for name, var in ds.variables.items()
        if var.ndim
        and "chunks" in encoding[str(name)]
        and var.shape[0] > encoding[str(name)]["chunks"][0]
    }
    return {
        d for d in several if all(_plain(var, d) for var in ds.variables.values() if d in var.dims)
    }


def _write_blocks(store: Path, ds: xr.Dataset, dims: set[Hashable]) -> dict[str, str]:
    """Resize every array of ``store`` on ``dims`` (written with none of their rows)
    to its variable's shape and write the values one chunk of rows at a time,
    each chunk then hashed (:func:`~boltzbench.hashing.file_digest`), on one
    thread per core. Returns the chunks' digests by path."""
    group = zarr.open_group(store, mode="r+")
    blocks = []
    for name, var in ds.variables.items():
        if var.ndim and var.dims[0] in dims:
            array = group[str(name)]
            array.resize(var.shape)
            values, rows = var.values, array.chunks[0]
            for i, start in enumerate(range(0, values.shape[0], rows)):
                key = f"{name}/{array.metadata.encode_chunk_key((i,) + (0,) * (var.ndim - 1))}"
                blocks.append((array, values, start, rows, key))

    def write(block: tuple) -> tuple[str, str]:
        array, values, start, rows, key = block
        array[start : start + rows] = values[start : start + rows]
        return key, file_digest(store / key, threads=1)

    with ThreadPoolExecutor(_cores()) as pool:
        return dict(pool.map(write, blocks))


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def read_store(path: str | Path) -> xr.Dataset:
    """Load the Zarr store ``path`` fully into memory."""
    with warnings.catch_warnings():
        # stores written before consolidated metadata: xarray falls back to listing
        # the directory, where Snakemake's .snakemake_timestamp is no Zarr node
        warnings.filterwarnings("ignore", ".*consolidated metadata", RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")
        with xr.open_zarr(path) as ds:
            return ds.load()


def write_json(obj: dict[str, Any], path: str | Path, attrs: dict[str, Any]) -> Path:
    """Write ``{"attrs": attrs, **obj}`` as JSON to ``path``, atomically.

    Provenance attrs (they carry ``boltzbench_step``) get ``data_hash``, the
    hash of the document as written, without its attrs.
    """
    doc = json.loads(json.dumps(obj, default=_jsonable))  # what a reader will see
    if PROVENANCE_KEY in attrs:
        attrs = {**attrs, DATA_HASH: _json_data_hash(doc)}
    text = json.dumps({**doc, "attrs": attrs}, indent=2, sort_keys=True, default=_jsonable)
    return write_text(path, text)


def read_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _json_data_hash(doc: dict[str, Any], legacy: bool = False) -> str:
    """The seal of a JSON document without its attrs (``legacy``: the bare sha256)."""
    content = {k: v for k, v in doc.items() if k != "attrs"}
    return hash_json(content) if legacy else seal_bytes(canonical_json(content).encode())


def recorded_seal(attrs: dict[str, Any]) -> str | None:
    """The seal an artifact's attrs record: ``data_hash``, else a legacy ``data_sha256``."""
    return attrs.get(DATA_HASH, attrs.get(LEGACY_DATA_HASH))


def read_attrs(path: str | Path) -> dict[str, Any]:
    """The attrs of an artifact: a store's root attrs, a JSON file's ``"attrs"``,
    or the ``boltzbench`` text chunk of a PNG figure."""
    path = Path(path)
    if path.is_dir():
        return dict(zarr.open_group(path, mode="r").attrs)
    if path.suffix == ".png":
        from PIL import Image

        with Image.open(path) as image:
            return json.loads(image.text["boltzbench"])
    return dict(read_json(path)["attrs"])


def recompute_data_hash(path: str | Path, recorded: str | None = None) -> str | None:
    """The seal of an artifact as it is now on disk; None for a figure.

    It is computed by the scheme of ``recorded`` (by default, the seal the
    artifact records): a legacy bare hex seal by the legacy sha256, so an
    artifact sealed by an earlier version verifies.
    """
    path = Path(path)
    if path.is_dir():
        recorded = recorded_seal(read_attrs(path)) if recorded is None else recorded
        return seal_hash(path, recorded)
    if path.suffix == ".json":
        doc = read_json(path)
        recorded = recorded_seal(doc.get("attrs", {})) if recorded is None else recorded
        return _json_data_hash(doc, legacy=is_legacy_seal(recorded))
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic | torch.Tensor):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _scalar_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in attrs.items():
        if isinstance(v, torch.Tensor | np.generic):
            v = v.item()
        out[k] = v if isinstance(v, str | int | float | bool) else json.dumps(v, default=str)
    return out


def samples_to_dataset(s: SampleSet) -> xr.Dataset:
    """A :class:`SampleSet` as an xarray Dataset (see the module docstring)."""
    data = {"x": (("sample", "dim"), _np(s.x)), "energy": ("sample", _np(s.energy))}
    for name in ("log_weight", "log_q"):
        if getattr(s, name) is not None:
            data[name] = ("sample", _np(getattr(s, name)))
    for name, value in s.diagnostics.items():
        arr = _np(torch.as_tensor(value))
        data[f"diag__{name}"] = (tuple(f"{name}_{i}" for i in range(arr.ndim)), arr)
    return xr.Dataset(data, attrs=_scalar_attrs(s.attrs))


def dataset_to_samples(ds: xr.Dataset) -> SampleSet:
    """The inverse of :func:`samples_to_dataset` (float64 tensors)."""

    def t(name: str) -> torch.Tensor | None:
        return torch.from_numpy(ds[name].values.astype(np.float64)) if name in ds else None

    diagnostics = {
        k.removeprefix("diag__"): torch.from_numpy(np.asarray(ds[k].values))
        for k in ds.data_vars
        if k.startswith("diag__")
    }
    return SampleSet(
        x=t("x"),
        energy=t("energy"),
        log_weight=t("log_weight"),
        log_q=t("log_q"),
        diagnostics=diagnostics,
        attrs=dict(ds.attrs),
    )


def save_model(
    path: str | Path,
    state: dict[str, torch.Tensor],
    history: dict[str, list[float]],
    attrs: dict[str, Any],
) -> Path:
    """Write a model artifact: state tensors and training curves, no pickles."""
    data = {}
    for name, tensor in state.items():
        arr = _np(tensor)
        data[f"state__{name}"] = (tuple(f"{name}_{i}" for i in range(arr.ndim)), arr)
    for name, curve in history.items():
        data[f"history__{name}"] = (f"step_{name}", np.asarray(curve, dtype=np.float64))
    return write_store(xr.Dataset(data), path, attrs)


def load_model(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray], dict]:
    """Read a model artifact: (state tensors, training curves, attrs)."""
    ds = read_store(path)
    state = {
        k.removeprefix("state__"): torch.from_numpy(np.array(ds[k].values))
        for k in ds.data_vars
        if k.startswith("state__")
    }
    history = {
        k.removeprefix("history__"): ds[k].values for k in ds.data_vars if k.startswith("history__")
    }
    return state, history, dict(ds.attrs)
