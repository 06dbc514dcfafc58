"""The three hot paths behind issue 17's last gains, each beside what it replaced.

Side by side in one run, medians of ``REPEATS`` interleaved repeats, one thread:

* **ManyWell-32's energy in the fused HMC step** (1,024 chains, float32, L = 5,
  ε = 0.1, compiled as :mod:`boltzbench.mcmc.compiling` compiles it): the
  library's per-coordinate polynomial against the same energy written on pairs
  (``x.reshape(n, -1, 2)``, the form before), µs per call of the step's graph.
* **The Gaussian-50's precision matrix in a float32 product** ((1,024, 50) ×
  (50, 50), ρ = 0.5): the closed form (:func:`boltzbench.targets.gaussian.ar1_precision`)
  against ``torch.linalg.inv(Σ)`` (the matrix before, with its subnormal float32
  entries), µs per product.
* **Writing 10⁶ × 66 float32 in 16 MiB row chunks**: zarr given one chunk at a
  time (what :func:`boltzbench.io.write_store` does), zarr given the whole array,
  and plain ``write()`` of the same 17 chunk files, seconds per write, files in
  a temporary folder, ``os.sync()`` before each (no seal, no xarray: the chunk
  writes alone).

Run: ``.venv/bin/python -m benchmarks.bench_hot_paths`` (about a minute).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

if not __package__:  # run as a file: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_result  # noqa: E402
from boltzbench.mcmc import compiling, hmc, mala  # noqa: E402
from boltzbench.targets.analytic import ManyWell, _double_well_log_density  # noqa: E402
from boltzbench.targets.counting import CountingTarget  # noqa: E402
from boltzbench.targets.gaussian import Gaussian  # noqa: E402

REPEATS, CHAINS = 5, 1024


class PairedManyWell(ManyWell):
    """ManyWell with its energy on pairs, the form before the per-coordinate one."""

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        pairs = x.reshape(x.shape[0], -1, 2)
        x1, x2 = pairs[..., 0], pairs[..., 1]
        return -(_double_well_log_density(x1, self.a, self.b, self.c) - 0.5 * x2**2).sum(-1)


def _us_per_call(fn, calls: int) -> float:
    """µs per call of ``fn`` over ``calls`` calls, once."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def _hmc_graph(target: ManyWell):
    """A call of the fused HMC step's compiled graph on 1,024 chains, warmed up."""
    potential = compiling.potential(CountingTarget(target), "true")
    generator = torch.Generator().manual_seed(0)
    state = mala.init(torch.randn(CHAINS, target.dim, generator=generator), potential)
    kernel = hmc.build_kernel(compile="true")
    for _ in range(20):
        state, _ = kernel(generator, state, potential, 0.1, 5)
    graph = potential.fuse(hmc.fused_step(5))
    p, u = torch.randn(CHAINS, target.dim), torch.rand(CHAINS)
    eps = torch.full((CHAINS, 1), 0.1)
    return lambda: graph(state, p, eps, u)


def _pair(ours, before, calls: int) -> dict:
    rows = [(_us_per_call(ours, calls), _us_per_call(before, calls)) for _ in range(REPEATS)]
    a, b = (statistics.median(r) for r in zip(*rows))
    return {"ours_us": a, "before_us": b, "ratio_median": statistics.median(x / y for x, y in rows)}


def _writes(tmp: Path) -> dict:
    x = np.random.default_rng(0).standard_normal((1_000_000, 66), dtype=np.float32)
    rows = (16 << 20) // (66 * 4)

    def array(name: str):
        return zarr.create_array(
            tmp / name,
            shape=x.shape,
            dtype=x.dtype,
            chunks=(rows, 66),
            compressors=(),
            config={"write_empty_chunks": True},
        )

    def blocks():
        a = array("blocks")
        for i in range(0, len(x), rows):
            a[i : i + rows] = x[i : i + rows]

    def whole():
        array("whole")[:] = x

    def plain():
        (tmp / "plain").mkdir()
        for i in range(0, len(x), rows):
            with open(tmp / "plain" / str(i), "wb") as f:
                f.write(memoryview(x[i : i + rows]).cast("B"))

    times: dict[str, list[float]] = {"blocks": [], "whole": [], "plain": []}
    for i in range(REPEATS):
        for name, fn in list(zip(times, (blocks, whole, plain)))[:: 1 if i % 2 else -1]:
            os.sync()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        for name in times:
            shutil.rmtree(tmp / name)
    out = {f"{k}_s": statistics.median(v) for k, v in times.items()}
    out["blocks_over_whole"] = statistics.median(
        a / b for a, b in zip(times["blocks"], times["whole"])
    )
    out["blocks_over_plain"] = statistics.median(
        a / b for a, b in zip(times["blocks"], times["plain"])
    )
    return out


def main() -> dict:
    torch.set_num_threads(1)
    result = {"what": "hot paths: per-coordinate ManyWell, closed-form precision, block writes"}
    result["manywell_hmc_graph"] = _pair(
        _hmc_graph(ManyWell(32).float()), _hmc_graph(PairedManyWell(32).float()), 200
    )
    gauss = Gaussian(50, rho=0.5)
    d = torch.randn(CHAINS, 50)
    closed, inverse = gauss.precision.float(), torch.linalg.inv(gauss.cov).float()
    result["gaussian_product"] = _pair(lambda: d @ closed, lambda: d @ inverse, 200)
    tmp = Path(tempfile.mkdtemp())
    try:
        result["zarr_writes"] = _writes(tmp)
    finally:
        shutil.rmtree(tmp)
    for key, value in result.items():
        print(f"{key:20s} {value}")
    write_result("hot_paths", result)
    return result


if __name__ == "__main__":
    main()
