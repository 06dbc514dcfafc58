"""OpenMM bridge throughput: configurations per second ÷ a bare single-Context loop.

One batch of ``N`` alanine dipeptide configurations (the shipped structure
perturbed by 0.01 nm; implicit solvent, Reference platform, float64). The bare
reference is the plain OpenMM idiom in one Context: for each configuration
``setPositions`` then ``getState(getEnergy=True, getForces=True)``, energy and
forces taken out as numpy. Ours is the torch autograd path that samplers use,
``bridge_energy(x, bridge)`` then ``backward()`` (energies and gradients),
with ``n_workers`` = 0 (this process), 1 and 2 (worker processes, pool started
in an untimed warm-up). The four are interleaved, ``REPEATS`` times; every
figure is a median over repeats and a ratio is (ours ÷ bare) in configurations
per second, so 1.0 means no overhead and 2 workers can reach up to 2 where two
cores are free. Run: ``.venv/bin/python -m benchmarks.bench_bridge`` from the
repository root (or ``.venv/bin/python benchmarks/bench_bridge.py``), about 10 s.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit
import torch

if not __package__:  # run as a file: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_result  # noqa: E402
from boltzbench.md.bridge import OpenMMBridge, bridge_energy  # noqa: E402
from boltzbench.md.system import build_system, make_platform  # noqa: E402

N, REPEATS, SOLVENT, PLATFORM, WORKERS = 4096, 3, "implicit", "Reference", (0, 1, 2)


def bare_loop(context: openmm.Context, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference: one Context, setPositions and getState per configuration."""
    energy, forces = np.empty(len(pos)), np.empty(pos.shape)
    for i, x in enumerate(pos):
        context.setPositions(x)
        state = context.getState(getEnergy=True, getForces=True)
        energy[i] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        f = state.getForces(asNumpy=True)
        forces[i] = f.value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energy, forces


def ours(bridge: OpenMMBridge, x: torch.Tensor) -> torch.Tensor:
    """Energy and gradient through the torch autograd path."""
    x = x.detach().requires_grad_(True)
    bridge_energy(x, bridge).sum().backward()
    return x.grad


def _per_second(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return N / (time.perf_counter() - t0)


def main() -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run()
    finally:
        torch.set_num_threads(threads)


def _run() -> dict:
    aldp = build_system(SOLVENT)
    platform, props = make_platform(PLATFORM)
    context = openmm.Context(aldp.system, openmm.VerletIntegrator(1e-3), platform, props)
    rng = np.random.default_rng(0)
    pos = aldp.positions_nm + 0.01 * rng.standard_normal((N, aldp.n_atoms, 3))
    x = torch.from_numpy(pos.reshape(N, -1))
    bridges = {n: OpenMMBridge(SOLVENT, platform=PLATFORM, n_workers=n) for n in WORKERS}
    try:
        for b in bridges.values():  # untimed warm-up: Contexts built, pools started
            ours(b, x[:64])
        bare_loop(context, pos[:64])
        rates = {"bare": [], **{n: [] for n in WORKERS}}
        for _ in range(REPEATS):
            rates["bare"].append(_per_second(bare_loop, context, pos))
            for n, b in bridges.items():
                rates[n].append(_per_second(ours, b, x))
    finally:
        for b in bridges.values():
            b.close()
    return write_result("bridge", _summary(rates))


def _summary(rates: dict) -> dict:
    bare = statistics.median(rates["bare"])
    result = {
        "what": f"configurations/s, alanine dipeptide {SOLVENT}, {PLATFORM}, batch {N}",
        "bare_loop_per_s": bare,
    }
    for n in WORKERS:
        ratios = [u / v for u, v in zip(rates[n], rates["bare"], strict=True)]
        result[f"workers{n}_per_s"] = statistics.median(rates[n])
        result[f"workers{n}_ratio_median"] = statistics.median(ratios)
    result.update(
        repeats=REPEATS,
        cpu_count=os.cpu_count(),
        openmm=openmm.__version__,
        torch=torch.__version__,
    )
    return result


if __name__ == "__main__":
    main()
