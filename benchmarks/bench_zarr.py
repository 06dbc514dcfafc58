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

from benchmarks._common import write_result
from boltzbench.io import write_store

N, D, REPEATS = 1_000_000, 66, 5


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> dict:
    x = np.random.default_rng(0).standard_normal((N, D), dtype=np.float32)
    ds = xr.Dataset({"x": (("sample", "dim"), x)})
    tmp = Path(tempfile.mkdtemp())
    ours, peer = [], []
    try:
        for i in range(REPEATS):
            ours.append(_time(lambda: write_store(ds, tmp / f"s{i}.zarr", {"bench": "zarr"})))
            peer.append(_time(lambda: np.save(tmp / f"s{i}.npy", x)))
            shutil.rmtree(tmp / f"s{i}.zarr")
            (tmp / f"s{i}.npy").unlink()
    finally:
        shutil.rmtree(tmp)
    ratios = [a / b for a, b in zip(ours, peer)]
    result = {
        "what": f"write {N}x{D} float32",
        "boltzbench_write_store_s": statistics.median(ours),
        "np_save_s": statistics.median(peer),
        "ratio_median": statistics.median(ratios),
        "repeats": REPEATS,
    }
    write_result("zarr", result)
    return result


if __name__ == "__main__":
    main()
