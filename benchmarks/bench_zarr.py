"""Zarr write of 10⁶ × 66 float32 through boltzbench.io.write_store ÷ np.save.

Both writes run side by side in one process, interleaved, ``REPEATS`` times; the
reported ratio is the median over repeats of (ours ÷ np.save). Run:
``.venv/bin/python benchmarks/bench_zarr.py``.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

if __package__ in (None, ""):  # run as a file: make the repository importable
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_result  # noqa: E402
from boltzbench.io import write_store  # noqa: E402

N, D, REPEATS = 1_000_000, 66, 5


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> dict:
    x = np.random.default_rng(0).standard_normal((N, D), dtype=np.float32)
    ds = xr.Dataset({"x": (("sample", "dim"), x)})
    tmp = Path(tempfile.mkdtemp())
    ours, peer = [], []
    try:
        for i in range(REPEATS):
            store, npy = tmp / f"s{i}.zarr", tmp / f"s{i}.npy"
            ours.append(_time(lambda s=store: write_store(ds, s, {"bench": "zarr"})))
            peer.append(_time(lambda f=npy: np.save(f, x)))
            sizes = (_du(store), npy.stat().st_size)
            shutil.rmtree(store)
            npy.unlink()
    finally:
        shutil.rmtree(tmp)
    ratios = [a / b for a, b in zip(ours, peer)]
    result = {
        "what": f"write {N}x{D} float32",
        "boltzbench_write_store_s": statistics.median(ours),
        "np_save_s": statistics.median(peer),
        "ratio_median": statistics.median(ratios),
        "repeats": REPEATS,
        "zarr_bytes": sizes[0],
        "npy_bytes": sizes[1],
    }
    write_result("zarr", result)
    return result


if __name__ == "__main__":
    main()
