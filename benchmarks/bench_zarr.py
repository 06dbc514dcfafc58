"""Zarr write of 10⁶ × 66 float32 through boltzbench.io.write_store ÷ np.save,
for each chunking and codec tried.

The data are standard normal float32 draws (like sample coordinates, their low
mantissa bits are noise). Each choice is a ``(compressors, chunk_bytes)`` pair of
:func:`boltzbench.io.write_store`; ``"before"`` is the layout until issue 17
(zarr's own chunk shapes, 62,500 × 5, and its default Zstd level 0), and
``LIBRARY`` marks the library's default. In each of ``REPEATS`` rounds, every
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
inflates less than wall time.
Files go to a temporary folder (``tempfile``). Run:
``.venv/bin/python benchmarks/bench_zarr.py``.
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


#: name -> (compressors, chunk_bytes); chunk_bytes None: zarr's chunk shapes
CHOICES = {
    "before: zstd-0, zarr's chunks": ("auto", None),
    "zstd-0, 16 MiB rows": ((ZstdCodec(level=0),), 16 * MIB),
    "blosc-zstd-1 shuffle, 16 MiB rows": (_blosc("zstd", 1, "shuffle"), 16 * MIB),
    "blosc-lz4-5 shuffle, 16 MiB rows": (_blosc("lz4", 5, "shuffle"), 16 * MIB),
    "blosc-lz4-5 bitshuffle, 16 MiB rows": (_blosc("lz4", 5, "bitshuffle"), 16 * MIB),
    "blosc-lz4-1 noshuffle, 16 MiB rows": (_blosc("lz4", 1, "noshuffle"), 16 * MIB),
    "none, 4 MiB rows": (COMPRESSORS, 4 * MIB),
    LIBRARY: (COMPRESSORS, 16 * MIB),
    "none, 64 MiB rows": (COMPRESSORS, 64 * MIB),
}


def _time(fn, *args, **kwargs) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn(*args, **kwargs)``; CPU: every thread of this process."""
    os.sync()
    t0, c0 = time.perf_counter(), time.process_time()
    fn(*args, **kwargs)
    return time.perf_counter() - t0, time.process_time() - c0


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _round(
    ds: xr.Dataset, x: np.ndarray, tmp: Path, order: list[str], peer_first: bool
) -> dict[str, tuple]:
    """One write of each choice, each paired with an np.save:
    name -> (ours, peer, seal, sha256 seal, bytes)."""
    out = {}
    for name in order:
        compressors, chunk_bytes = CHOICES[name]
        store, npy = tmp / "s.zarr", tmp / "s.npy"
        if peer_first:
            peer = _time(np.save, npy, x)
        attrs = {"bench": "zarr"}
        ours = _time(
            write_store, ds, store, attrs, compressors=compressors, chunk_bytes=chunk_bytes
        )
        if not peer_first:
            peer = _time(np.save, npy, x)
        seal, legacy = _time(data_hash, store)[0], _time(legacy_data_hash, store)[0]
        out[name] = (ours, peer, seal, legacy, _du(store))
        shutil.rmtree(store)
        npy.unlink()
    return out


def _table(rows: dict[str, dict]) -> str:
    lines = [
        "| chunks and codec | store MB | write_store s (CPU s) | BLAKE3 seal s | sha256 seal s "
        "| np.save s (CPU s) | ratio (CPU ratio) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        mark = " (library)" if name == LIBRARY else ""
        lines.append(
            f"| {name}{mark} | {r['bytes'] / 1e6:.1f} | {r['write_store_s']:.2f} "
            f"({r['write_store_cpu_s']:.2f}) | {r['seal_s']:.3f} | {r['sha256_seal_s']:.3f} "
            f"| {r['np_save_s']:.2f} "
            f"({r['np_save_cpu_s']:.2f}) | {r['ratio_median']:.2f} ({r['cpu_ratio_median']:.2f}) |"
        )
    return "\n".join(lines)


def main() -> dict:
    x = np.random.default_rng(0).standard_normal((N, D), dtype=np.float32)
    ds = xr.Dataset({"x": (("sample", "dim"), x)})
    tmp = Path(tempfile.mkdtemp())
    names = list(CHOICES)
    runs: dict[str, list[tuple]] = {name: [] for name in names}
    try:
        for i in range(REPEATS):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name, r in _round(ds, x, tmp, order, peer_first=i % 2 == 1).items():
                runs[name].append(r)
    finally:
        shutil.rmtree(tmp)
    rows = {}
    for name, rs in runs.items():
        ours_wc, peer_wc, seal, legacy, size = zip(*rs)
        (ours, ours_cpu), (peer, peer_cpu) = zip(*ours_wc), zip(*peer_wc)
        rows[name] = {
            "ratio_median": statistics.median(a / b for a, b in zip(ours, peer)),
            "cpu_ratio_median": statistics.median(a / b for a, b in zip(ours_cpu, peer_cpu)),
            "write_store_s": statistics.median(ours),
            "write_store_cpu_s": statistics.median(ours_cpu),
            "np_save_cpu_s": statistics.median(peer_cpu),
            "seal_s": statistics.median(seal),
            "sha256_seal_s": statistics.median(legacy),
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
        "ratio_before": rows["before: zstd-0, zarr's chunks"]["ratio_median"],
        "zarr_bytes": lib["bytes"],
        "npy_bytes": x.nbytes + 128,
        "repeats": REPEATS,
        "choices": rows,
    }
    write_result("zarr", result)
    return result


if __name__ == "__main__":
    main()
