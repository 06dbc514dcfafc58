"""Timewarp on alanine dipeptide (internal coordinates, OBC2, 300 K) against MALA and MD.

Reads the pipeline's own MD replicas of aldp (the 'train' split to train on, the
'floor' split as the reference and as plain MD), merges the train replicas with
:func:`boltzbench.references.merge_md` (rows keep their replica and frame),
trains :class:`~boltzbench.methods.timewarp.Timewarp` on frame pairs
``LAG_FRAMES`` apart, and runs its chains and MALA's under the same evaluation
budget. Reported, per sampler: acceptance, the ESS of the slow variables
(sin, cos of φ and ψ; the smallest of the four) per energy evaluation and per
second of sampling, and the Ramachandran metrics against the 'floor' replicas:
KL(ref ‖ samples) of the 2-D (φ, ψ) histogram (36² bins, :func:`histogram_kl`)
and the fraction of samples outside the internal coordinates' support. Plain MD
at the same cost: one replica cut to the same number of force evaluations (one
per 1-fs step), and the whole 1-ns replica (its asymptotic ESS per evaluation).

Run (about 5 min on 2 busy cores): ``.venv/bin/python -m benchmarks.bench_timewarp
[MD_DIR]`` with MD_DIR holding ``train/replica*.zarr`` and ``floor/replica*.zarr``
(default ``results/aldp/md``, what ``make run`` leaves).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

if not __package__:  # run as a file: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_result  # noqa: E402
from boltzbench.io import read_attrs, read_store  # noqa: E402
from boltzbench.mcmc.diagnostics import effective_sample_size  # noqa: E402
from boltzbench.methods.mala import MALA  # noqa: E402
from boltzbench.methods.timewarp import Timewarp  # noqa: E402
from boltzbench.metrics.torsions import histogram_kl, torsion_angles  # noqa: E402
from boltzbench.references import Trajectories, merge_md  # noqa: E402
from boltzbench.targets import build_target  # noqa: E402
from boltzbench.targets.counting import CountingTarget  # noqa: E402

TARGET = {
    "kind": "aldp",
    "params": {"solvent": "implicit", "temperature_K": 300.0, "coordinates": "internal"},
}
N_TRAIN, LAG_FRAMES, CHAINS, BUDGET, N_SAMPLES, THREADS = 10_000, 125, 32, 32_000, 3200, 2
TIMEWARP = dict(lag_frames=LAG_FRAMES, n_chains=CHAINS, n_warmup=0, n_burnin=50, n_iter=1500)
MALA_PARAMS = dict(  # as config/full.yaml runs MALA on aldp
    n_chains=CHAINS, n_warmup=300, n_burnin=100, step_size=0.001, init_scale=0.001
)
FRAME_EVALS = 80  # MD steps (force evaluations) between saved frames in config.yaml


def replicas(directory: Path) -> list[dict[str, np.ndarray]]:
    out = []
    for path in sorted(directory.glob("replica*.zarr")):
        ds = read_store(path)
        out.append({k: ds[k].values for k in ("positions_nm", "energy_kT", "potential_kJ")})
    return out


def slow_features(angles: np.ndarray) -> torch.Tensor:
    """sin, cos of φ and ψ, ``(..., 4)`` for angles ``(..., 2)``."""
    a = torch.as_tensor(angles)
    return torch.cat([a.sin(), a.cos()], -1)


def ess_slow(angles: np.ndarray) -> float:
    """The smallest ESS of sin/cos φ, ψ over chains; angles ``(chains, draws, 2)``."""
    return float(effective_sample_size(slow_features(angles)).min())


def chain_report(name: str, samples, target, ref_angles, seconds: float, evals: int) -> dict:
    k = samples.attrs["n_draws_per_chain"]
    x = samples.x[: k * CHAINS]
    ok = torch.isfinite(samples.energy[: k * CHAINS])
    angles = torsion_angles(x, target, ("phi", "psi")).reshape(k, CHAINS, 2).swapaxes(0, 1)
    ess = ess_slow(angles)
    acc = samples.attrs.get("acceptance_jump", samples.attrs.get("acceptance"))
    return {
        f"{name}_acceptance": float(acc),
        f"{name}_evaluations": evals,
        f"{name}_ess_slow": ess,
        f"{name}_ess_per_evaluation": ess / evals,
        f"{name}_ess_per_second": ess / seconds,
        f"{name}_seconds": seconds,
        f"{name}_rama_kl": histogram_kl(ref_angles, angles.reshape(-1, 2), 36),
        f"{name}_outside_support": float(1 - ok.double().mean()),
    }


def run_chains(method, target, ref_angles, name: str) -> dict:
    plan = method.plan_budget(BUDGET, N_SAMPLES)
    planned = plan.method  # a new instance with the planned chain length
    if method.trainable:
        planned.load_model_state(target, method.model_state())
    counted = CountingTarget(target, budget=BUDGET)
    t0 = time.perf_counter()
    samples = planned.sample(counted, N_SAMPLES, torch.Generator().manual_seed(1))
    seconds = time.perf_counter() - t0
    return chain_report(name, samples, target, ref_angles, seconds, counted.counts.energy)


def md_report(floor: list[dict], target, wall_s: float) -> dict:
    """Plain MD: one floor replica cut to BUDGET force evaluations, and all of it."""
    frames = BUDGET // FRAME_EVALS
    x = target.to_coordinates(torch.as_tensor(floor[1]["positions_nm"], dtype=torch.float64))
    angles = torsion_angles(x, target, ("phi", "psi"))[None]
    total = angles.shape[1] * FRAME_EVALS
    cut = ess_slow(angles[:, :frames]) if frames >= 4 else float("nan")
    whole = ess_slow(angles)
    return {
        "md_same_cost_ess_per_evaluation": cut / BUDGET,
        "md_whole_replica_ess_per_evaluation": whole / total,
        "md_whole_replica_ess_per_second": whole / wall_s,
    }


def main(md_dir: Path) -> None:
    torch.set_num_threads(THREADS)
    target = build_target(TARGET).double()
    train, floor = replicas(md_dir / "train"), replicas(md_dir / "floor")
    ref = merge_md(floor, target, 5000, float("inf"))
    ref_angles = torsion_angles(ref.x, target, ("phi", "psi"))
    merged = merge_md(train, target, N_TRAIN, float("inf"), torch.Generator().manual_seed(0))
    data = Trajectories(merged.x, merged.diagnostics["md_replica"], merged.diagnostics["md_frame"])
    method = Timewarp(**TIMEWARP)
    t0 = time.perf_counter()
    method.fit(target, data, torch.Generator().manual_seed(0))
    result = {"timewarp_fit_seconds": time.perf_counter() - t0, "budget": BUDGET}
    result["timewarp_final_nll"] = float(np.mean(method.history_["loss"][-50:]))
    result |= run_chains(method, target, ref_angles, "timewarp")
    mixed = Timewarp(**{**TIMEWARP, "n_warmup": 100}, kernel="mixed", n_local=2, step_size=0.01)
    mixed.load_model_state(target, method.model_state())
    result |= run_chains(mixed, target, ref_angles, "timewarp_mixed")
    result |= run_chains(MALA(**MALA_PARAMS, dtype="float64"), target, ref_angles, "mala")
    wall = float(read_attrs(md_dir / "floor" / "replica1.zarr")["md_production_wall_s"])
    result |= md_report(floor, target, wall)
    write_result("timewarp", result)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results/aldp/md"))
