"""Zarr write of 10⁶ × 66 float32 through boltzbench.io.write_store ÷ np.save,
for each chunking and codec tried.

The data are standard normal float32 draws (like sample coordinates, their low
mantissa bits are noise). Each choice is a set of keywords of
:func:`boltzbench.io.write_store` (``compressors``, ``chunk_bytes``,
``by_blocks``); ``"before"`` is the writer until issue 17 (zarr's own chunk
shapes, 62,500 × 5, its default Zstd level 0, every array through one
``to_zarr``), and ``LIBRARY`` marks the library's default. In each of ``REPEATS`` rounds, every
choice is written once and paired with an ``np.save`` of the same array (so a
ratio pairs two writes made under the same load), the two in alternating order,
the choices in a rotated order from round to round; ``os.sync()`` before every
timed write (untimed) flushes the page cache's dirty pages, so no write pays for
the writeback of the one before it (without it, ``np.save`` times ranged over
0.7-2.5 s in one run). Reported per choice: the median of
(write_store ÷ np.save) over rounds, of its wall seconds, and of the seal alone
(:func:`boltzbench.hashing.data_hash` of the written store, timed again after
the write: the BLAKE3 of every chunk that sealing adds to a write), beside the
seal of before (:func:`boltzbench.hashing.legacy_data_hash`, one sequential
sha256), and the store's bytes; and the same for CPU seconds
(``time.process_time``, every thread), which a machine shared with other work
inflates less than wall time. Those writes end in the page cache, where
``np.save`` is one copy of the array; each choice is also written once more per
round with its ``np.save``, each followed by an ``fsync`` of every file it
wrote and timed until that returns (the bytes on the disk), reported as "to
the disk"; those rounds run after all the page-cache rounds, so that their
writeback does not load the page-cache timings. Files go to a temporary
folder (``tempfile``). Run: ``.venv/bin/python benchmarks/bench_zarr.py``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr
from zarr.codecs import BloscCodec, ZstdCodec

if __package__ in (None, ""):  # run as a file: make the repository importable
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_result  # noqa: E402
from boltzbench.hashing import data_hash, legacy_data_hash  # noqa: E402
from boltzbench.io import COMPRESSORS, write_store  # noqa: E402

N, D, REPEATS = 1_000_000, 66, 6
MIB = 1 << 20
#: the library's default (boltzbench.io: CHUNK_BYTES, COMPRESSORS)
LIBRARY = "none, 16 MiB rows"


def _blosc(cname: str, clevel: int, shuffle: str) -> tuple:
    return (BloscCodec(cname=cname, clevel=clevel, shuffle=shuffle),)


#: name -> write_store keywords; chunk_bytes None: zarr's chunk shapes; by_blocks
#: False: every array through one to_zarr (the writer before issue 17)
CHOICES = {
    "before: zstd-0, zarr's chunks, one to_zarr": {
        "compressors": "auto",
        "chunk_bytes": None,
        "by_blocks": False,
    },
    "zstd-0, 16 MiB rows": {"compressors": (ZstdCodec(level=0),), "chunk_bytes": 16 * MIB},
    "blosc-zstd-1 shuffle, 16 MiB rows": {
        "compressors": _blosc("zstd", 1, "shuffle"),
        "chunk_bytes": 16 * MIB,
    },
    "blosc-lz4-5 shuffle, 16 MiB rows": {
        "compressors": _blosc("lz4", 5, "shuffle"),
        "chunk_bytes": 16 * MIB,
    },
    "blosc-lz4-5 bitshuffle, 16 MiB rows": {
        "compressors": _blosc("lz4", 5, "bitshuffle"),
        "chunk_bytes": 16 * MIB,
    },
    "blosc-lz4-1 noshuffle, 16 MiB rows": {
        "compressors": _blosc("lz4", 1, "noshuffle"),
        "chunk_bytes": 16 * MIB,
    },
    "none, 4 MiB rows": {"compressors": COMPRESSORS, "chunk_bytes": 4 * MIB},
    "none, 16 MiB rows, one to_zarr": {
        "compressors": COMPRESSORS,
        "chunk_bytes": 16 * MIB,
        "by_blocks": False,
    },
    LIBRARY: {"compressors": COMPRESSORS, "chunk_bytes": 16 * MIB},
    "none, 64 MiB rows": {"compressors": COMPRESSORS, "chunk_bytes": 64 * MIB},
}


def _time(fn, *args, **kwargs) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn(*args, **kwargs)``; CPU: every thread of this process."""
    os.sync()
    t0, c0 = time.perf_counter(), time.process_time()
    fn(*args, **kwargs)
    return time.perf_counter() - t0, time.process_time() - c0


def _fsync_tree(path: Path) -> None:
    """fsync the file ``path``, or every file under the directory ``path``."""
    for f in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _durable(fn, path: Path, *args, **kwargs) -> float:
    """Wall seconds of ``fn(*args, **kwargs)`` and an fsync of what it wrote at ``path``:
    the write until its bytes are on the disk, not only in the page cache."""
    os.sync()
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    _fsync_tree(path)
    return time.perf_counter() - t0


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _round(
    ds: xr.Dataset, x: np.ndarray, tmp: Path, order: list[str], peer_first: bool
) -> dict[str, tuple]:
    """One write of each choice, each paired with an np.save:
    name -> (ours, peer, seal, sha256 seal, bytes)."""
    out = {}
    for name in order:
        kwargs = CHOICES[name]
        store, npy = tmp / "s.zarr", tmp / "s.npy"
        if peer_first:
            peer = _time(np.save, npy, x)
        attrs = {"bench": "zarr"}
        ours = _time(write_store, ds, store, attrs, **kwargs)
        if not peer_first:
            peer = _time(np.save, npy, x)
        seal, legacy = _time(data_hash, store)[0], _time(legacy_data_hash, store)[0]
        out[name] = (ours, peer, seal, legacy, _du(store))
        shutil.rmtree(store)
        npy.unlink()
    return out


def _durable_round(ds: xr.Dataset, x: np.ndarray, tmp: Path, order: list[str]) -> dict:
    """One write of each choice to the disk, each paired with an np.save to the disk:
    name -> (ours, peer) wall seconds."""
    out = {}
    for name in order:
        store, npy = tmp / "s.zarr", tmp / "s.npy"
        ours = _durable(write_store, store, ds, store, {"bench": "zarr"}, **CHOICES[name])
        out[name] = (ours, _durable(np.save, npy, npy, x))
        shutil.rmtree(store)
        npy.unlink()
    return out


def _table(rows: dict[str, dict]) -> str:
    lines = [
        "| chunks and codec | store MB | write_store s (CPU s) | BLAKE3 seal s | sha256 seal s "
        "| np.save s (CPU s) | ratio (CPU ratio) | to the disk: write_store s, np.save s, ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        mark = " (library)" if name == LIBRARY else ""
        lines.append(
            f"| {name}{mark} | {r['bytes'] / 1e6:.1f} | {r['write_store_s']:.2f} "
            f"({r['write_store_cpu_s']:.2f}) | {r['seal_s']:.3f} | {r['sha256_seal_s']:.3f} "
            f"| {r['np_save_s']:.2f} "
            f"({r['np_save_cpu_s']:.2f}) | {r['ratio_median']:.2f} ({r['cpu_ratio_median']:.2f}) "
            f"| {r['durable_write_store_s']:.2f}, {r['durable_np_save_s']:.2f}, "
            f"{r['durable_ratio_median']:.2f} |"
        )
    return "\n".join(lines)


def main() -> dict:
    x = np.random.default_rng(0).standard_normal((N, D), dtype=np.float32)
    ds = xr.Dataset({"x": (("sample", "dim"), x)})
    tmp = Path(tempfile.mkdtemp())
    names = list(CHOICES)
    runs: dict[str, list[tuple]] = {name: [] for name in names}
    to_disk: dict[str, list[tuple]] = {name: [] for name in names}
    try:  # the page-cache rounds first, then the rounds to the disk
        for i in range(REPEATS):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name, r in _round(ds, x, tmp, order, peer_first=i % 2 == 1).items():
                runs[name].append(r)
        for i in range(REPEATS):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name, r in _durable_round(ds, x, tmp, order).items():
                to_disk[name].append(r)
    finally:
        shutil.rmtree(tmp)
    rows = {}
    for name, rs in runs.items():
        ours_wc, peer_wc, seal, legacy, size = zip(*rs)
        durable = to_disk[name]
        (ours, ours_cpu), (peer, peer_cpu) = zip(*ours_wc), zip(*peer_wc)
        rows[name] = {
            "ratio_median": statistics.median(a / b for a, b in zip(ours, peer)),
            "cpu_ratio_median": statistics.median(a / b for a, b in zip(ours_cpu, peer_cpu)),
            "write_store_s": statistics.median(ours),
            "write_store_cpu_s": statistics.median(ours_cpu),
            "np_save_cpu_s": statistics.median(peer_cpu),
            "seal_s": statistics.median(seal),
            "sha256_seal_s": statistics.median(legacy),
            "durable_write_store_s": statistics.median(a for a, _ in durable),
            "durable_np_save_s": statistics.median(b for _, b in durable),
            "durable_ratio_median": statistics.median(a / b for a, b in durable),
            "np_save_s": statistics.median(peer),
            "bytes": size[-1],
        }
    print(_table(rows))
    lib = rows[LIBRARY]
    result = {
        "what": f"write {N}x{D} float32 normal draws",
        "library_choice": LIBRARY,
        "boltzbench_write_store_s": lib["write_store_s"],
        "np_save_s": lib["np_save_s"],
        "ratio_median": lib["ratio_median"],
        "ratio_before": rows["before: zstd-0, zarr's chunks, one to_zarr"]["ratio_median"],
        "durable_ratio_median": lib["durable_ratio_median"],
        "zarr_bytes": lib["bytes"],
        "npy_bytes": x.nbytes + 128,
        "repeats": REPEATS,
        "choices": rows,
    }
    write_result("zarr", result)
    return result


if __name__ == "__main__":
    main()
