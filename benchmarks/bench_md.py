"""MD speed: boltzbench's replica runner ÷ a bare OpenMM script, in ns/day.

Both sides simulate alanine dipeptide (AMBER ff96, no cutoff, no constraints,
no CMMotionRemover) with ``LangevinMiddleIntegrator`` at 300 K, friction 1/ps,
2 fs, on the same OpenMM platform with one thread: minimize, draw velocities,
equilibrate (untimed), then production, reading positions and energies with
``getState`` every ``SAVE_EVERY`` steps. Only production is timed.

``bare``
    The textbook script: ``AmberPrmtopFile.createSystem`` here, the integrator,
    a ``for`` loop of ``integrator.step(SAVE_EVERY)`` + ``getState``.
``ours``
    :func:`boltzbench.md.simulate.run_replica`, its ``stats["ns_per_day"]``.
``ours_ckpt``
    The same with a checkpoint file written every 10,000 steps (the default).

For each (solvent, platform) the three run interleaved, ``REPEATS`` times, in
rotating order; the ratio is the median over repeats of (ours ÷ bare), so 1.0
means no overhead; ``ratio_best`` (fastest repeat ÷ fastest repeat, the least
disturbed by other processes) is given too, as on a shared machine single
repeats vary by up to ±50 %. Target: ≥ 0.95. Run: ``.venv/bin/python benchmarks/bench_md.py``
(about 1.5 minutes on 2 cores).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a file: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openmm  # noqa: E402
import openmm.app as app  # noqa: E402
import openmm.unit as unit  # noqa: E402

from benchmarks._common import write_result  # noqa: E402
from boltzbench.md.simulate import run_replica  # noqa: E402
from boltzbench.md.system import data_dir  # noqa: E402

TEMPERATURE_K, FRICTION_PER_PS, TIMESTEP_FS = 300.0, 1.0, 2.0
SAVE_EVERY, EQUILIBRATION, REPEATS, SEED = 500, 1000, 5, 1
#: (solvent, platform) -> production steps of one repeat (about 1 s each here)
CONFIGS = {
    ("implicit", "Reference"): 20_000,
    ("implicit", "CPU"): 5_000,
    ("vacuum", "Reference"): 60_000,
    ("vacuum", "CPU"): 8_000,
}


def bare(solvent: str, platform: str, steps: int) -> float:
    """ns/day of production of the plain OpenMM script."""
    d = data_dir()
    prmtop = app.AmberPrmtopFile(str(d / "alanine-dipeptide.prmtop"))
    crd = app.AmberInpcrdFile(str(d / "alanine-dipeptide.crd"))
    kwargs = {"implicitSolvent": app.OBC2} if solvent == "implicit" else {}
    system = prmtop.createSystem(nonbondedMethod=app.NoCutoff, constraints=None, **kwargs)
    for i in reversed(range(system.getNumForces())):
        if isinstance(system.getForce(i), openmm.CMMotionRemover):
            system.removeForce(i)
    integrator = openmm.LangevinMiddleIntegrator(
        TEMPERATURE_K * unit.kelvin,
        FRICTION_PER_PS / unit.picosecond,
        TIMESTEP_FS * unit.femtosecond,
    )
    integrator.setRandomNumberSeed(SEED)
    props = {"Threads": "1"} if platform == "CPU" else {}
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform), props)
    context.setPositions(crd.getPositions())
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(TEMPERATURE_K * unit.kelvin, SEED)
    integrator.step(EQUILIBRATION)
    frames = []
    t0 = time.perf_counter()
    for _ in range(steps // SAVE_EVERY):
        integrator.step(SAVE_EVERY)
        state = context.getState(getPositions=True, getEnergy=True)
        frames.append(
            (
                state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole),
            )
        )
    seconds = time.perf_counter() - t0
    return steps * TIMESTEP_FS * 1e-6 / seconds * 86400.0


def ours(solvent: str, platform: str, steps: int, checkpoint: Path | None = None) -> float:
    """ns/day of production that :func:`run_replica` reports."""
    frames = run_replica(
        solvent=solvent,
        temperature_K=TEMPERATURE_K,
        timestep_fs=TIMESTEP_FS,
        friction_per_ps=FRICTION_PER_PS,
        platform=platform,
        equilibration_steps=EQUILIBRATION,
        production_steps=steps,
        save_every_steps=SAVE_EVERY,
        seed=SEED,
        checkpoint_path=checkpoint,
        checkpoint_every_steps=10_000,
    )
    return frames.stats["ns_per_day"]


def measure(solvent: str, platform: str, steps: int, ckpt: Path) -> dict[str, list[float]]:
    """ns/day of each variant over ``REPEATS`` interleaved repeats, rotating the order."""
    variants = {
        "bare": lambda n: bare(solvent, platform, n),
        "ours": lambda n: ours(solvent, platform, n),
        "ours_ckpt": lambda n: ours(solvent, platform, n, ckpt),
    }
    names = list(variants)
    for name in names:  # untimed warm-up (plugin loading, first-context costs)
        variants[name](SAVE_EVERY)
    result = {name: [] for name in names}
    for r in range(REPEATS):
        for name in names[r % 3 :] + names[: r % 3]:
            result[name].append(variants[name](steps))
    return result


def summarize(m: dict[str, list[float]]) -> dict[str, float]:
    """Medians of each variant, paired-median ratios to ``bare`` and best ÷ best."""
    out = {f"{k}_ns_per_day": statistics.median(v) for k, v in m.items()}
    for name in ("ours", "ours_ckpt"):
        ratios = [u / v for u, v in zip(m[name], m["bare"], strict=True)]
        out[f"{name}_ratio"] = statistics.median(ratios)
        out[f"{name}_ratio_best"] = max(m[name]) / max(m["bare"])
    return out


def print_table(rows: dict[tuple[str, str], dict[str, float]]) -> None:
    cols = [c.removesuffix("_ns_per_day") for c in next(iter(rows.values()))]
    w = max(map(len, cols)) + 2
    print("ns/day: medians over repeats; ratio: paired median; ratio_best: fastest ÷ fastest")
    print(f"{'solvent':<9}{'platform':<10}" + "".join(f"{c:>{w}}" for c in cols))
    for (solvent, platform), row in rows.items():
        cells = "".join(
            f"{v:>{w}.0f}" if k.endswith("day") else f"{v:>{w}.3f}" for k, v in row.items()
        )
        print(f"{solvent:<9}{platform:<10}{cells}")


def main() -> dict:
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for (solvent, platform), steps in CONFIGS.items():
            rows[solvent, platform] = summarize(
                measure(solvent, platform, steps, Path(tmp) / "c.npz")
            )
    print_table(rows)
    result = {"what": "alanine dipeptide MD ns/day: run_replica ÷ bare OpenMM script"}
    for (solvent, platform), row in rows.items():
        result |= {f"{solvent}_{platform}_{k}": v for k, v in row.items()}
    result |= {
        "ratio_min": min(r["ours_ratio"] for r in rows.values()),
        "ratio_best_min": min(r["ours_ratio_best"] for r in rows.values()),
        "timestep_fs": TIMESTEP_FS,
        "save_every_steps": SAVE_EVERY,
        "repeats": REPEATS,
        "openmm": openmm.version.full_version,
    }
    write_result("md", result)
    return result


if __name__ == "__main__":
    main()
