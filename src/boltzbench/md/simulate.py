"""One independent Langevin MD replica of alanine dipeptide, with checkpoint/resume.

:func:`run_replica` builds the system (:func:`boltzbench.md.system.build_system`),
minimizes the shipped coordinates, draws Maxwell–Boltzmann velocities,
equilibrates and then runs production, saving a frame every
``save_every_steps``. The integrator is OpenMM's ``LangevinMiddleIntegrator``,
the LFMiddle discretization of Zhang, Liu, Tuckerman & Liu 2019 (J. Phys.
Chem. A 123, 6056), which gives the same trajectory as BAOAB (Leimkuhler &
Matthews 2013) but reports the half-step (leapfrog) velocities; OpenMM's
kinetic energy is that of those stored velocities, whose average is
(n_dof / 2) k_BT to high accuracy, with n_dof = 3N − (number of constraints)
(the system has no CMMotionRemover).

Platforms
---------
``platform="auto"`` picks "CUDA" when this OpenMM can load it, else
"Reference". For this 22-atom system the Reference platform is much faster
than the CPU platform, whose per-step overhead dominates. Measured on the
2-core development machine with OpenMM 8.6 (2 fs, no constraints, one thread,
a frame every 500 steps; ``benchmarks/bench_md.py`` measures the same on a
quiet machine, and about half of it when other jobs share the cores):

==========  ==========  ==========
solvent     Reference   CPU
==========  ==========  ==========
implicit    ≈ 3,900     ≈ 910       ns/day
vacuum      ≈ 12,000    ≈ 1,450     ns/day
==========  ==========  ==========

Checkpoints
-----------
With ``checkpoint_path`` set, a checkpoint is written atomically (temporary
file + ``os.replace``) every ``checkpoint_every_steps`` integrator steps and
at the end of equilibration. It is a numpy ``.npz`` holding the bytes of
``Context.createCheckpoint()`` (positions, velocities, time, step count and
the integrator's random-number state), the frames so far, the step counter
and a key (a hash of every setting that changes the result). A run that
finds a checkpoint with its key resumes from it; one with another key is
ignored and removed; the file is removed when the run succeeds. On the
Reference platform a resumed run gives exactly the frames of an
uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit

from boltzbench.hashing import derive_seed, hash_json
from boltzbench.md.system import AldpSystem, build_system, kT, make_platform

__all__ = [
    "MDSettings",
    "Frames",
    "run_replica",
    "resolve_platform",
    "openmm_seed",
    "degrees_of_freedom",
]

log = logging.getLogger(__name__)

#: the largest seed OpenMM's integrators take (a positive 32-bit signed int)
MAX_OPENMM_SEED = 2**31 - 1
#: bump when the layout of the checkpoint file or the meaning of a setting changes
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class MDSettings:
    """Every setting of a replica that changes its frames (units in the names)."""

    solvent: str = "implicit"
    temperature_K: float = 300.0
    timestep_fs: float = 1.0
    friction_per_ps: float = 1.0
    constraints: str = "none"
    platform: str = "Reference"  # resolved: never "auto"
    threads: int = 1
    minimize_max_iterations: int = 0
    equilibration_steps: int = 0
    production_steps: int = 0
    save_every_steps: int = 1
    seed: int = 0

    @property
    def n_frames(self) -> int:
        return self.production_steps // self.save_every_steps

    @property
    def total_steps(self) -> int:
        return self.equilibration_steps + self.production_steps

    def key(self) -> str:
        """Hash of the settings, the OpenMM version and the checkpoint layout."""
        return hash_json(
            {
                **asdict(self),
                "openmm": openmm.version.full_version,
                "checkpoint_version": CHECKPOINT_VERSION,
            }
        )


@dataclass
class Frames:
    """The production frames of one replica.

    Attributes
    ----------
    positions_nm
        (F, 22, 3) float64, nm.
    potential_kJ, kinetic_kJ
        (F,) float64, kJ/mol; the kinetic energy is that of the half-step velocities.
    time_ps
        (F,) float64, ps since the start of production.
    temperature_K
        The thermostat temperature.
    stats
        platform, ns_per_day (production), production_steps, equilibration_steps,
        dof, minimized_potential_kJ, wall_s (all attempts), production_wall_s,
        resumed_from_step, openmm_seed.
    """

    positions_nm: np.ndarray
    potential_kJ: np.ndarray
    kinetic_kJ: np.ndarray
    time_ps: np.ndarray
    temperature_K: float
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.potential_kJ)

    def reduced_potential(self) -> np.ndarray:
        """Potential energies in units of k_BT: U / (R T), shape (F,)."""
        return self.potential_kJ / kT(self.temperature_K)


def resolve_platform(name: str) -> str:
    """The OpenMM platform name for ``name``: "auto" is CUDA if loadable, else Reference."""
    if name != "auto":
        return name
    names = {
        openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
    }
    return "CUDA" if "CUDA" in names else "Reference"


def openmm_seed(seed: int) -> int:
    """A seed in [1, 2**31 − 1] derived from ``seed`` (OpenMM takes 0 as 'pick one at random')."""
    return derive_seed("md-replica", int(seed)) % MAX_OPENMM_SEED + 1


def degrees_of_freedom(system: openmm.System) -> int:
    """3N − (constraints) − 3 if a CMMotionRemover is present; massless particles excluded."""
    n = sum(
        system.getParticleMass(i).value_in_unit(unit.dalton) > 0
        for i in range(system.getNumParticles())
    )
    com = any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())
    return 3 * n - system.getNumConstraints() - (3 if com else 0)


# --- the checkpoint file ----------------------------------------------------------


@dataclass
class _Progress:
    """Everything a run's future depends on besides the OpenMM context."""

    step: int  # integrator steps done since the start of equilibration
    positions_nm: np.ndarray  # (F, N, 3), filled up to n_saved
    potential_kJ: np.ndarray
    kinetic_kJ: np.ndarray
    minimized_potential_kJ: float = float("nan")
    wall_s: float = 0.0  # of earlier attempts, up to their last checkpoint
    production_wall_s: float = 0.0

    @classmethod
    def empty(cls, n_frames: int, n_atoms: int) -> _Progress:
        return cls(0, np.zeros((n_frames, n_atoms, 3)), np.zeros(n_frames), np.zeros(n_frames))


def _save_checkpoint(
    path: Path, key: str, context: openmm.Context, prog: _Progress, n_saved: int
) -> None:
    """Write the checkpoint atomically: a temporary file beside ``path``, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # of saves killed midway
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    arrays = {
        "key": np.array(key),
        "openmm": np.frombuffer(context.createCheckpoint(), dtype=np.uint8),
        "step": np.array(prog.step, dtype=np.int64),
        "positions_nm": prog.positions_nm[:n_saved],
        "potential_kJ": prog.potential_kJ[:n_saved],
        "kinetic_kJ": prog.kinetic_kJ[:n_saved],
        "scalars": np.array([prog.minimized_potential_kJ, prog.wall_s, prog.production_wall_s]),
    }
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, key: str, context: openmm.Context, prog: _Progress) -> bool:
    """Restore ``context`` and ``prog`` from ``path`` if it holds a checkpoint with ``key``."""
    if not path.exists():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as err:  # a foreign or damaged file: start afresh
        log.warning("ignoring unreadable MD checkpoint %s: %s", path, err)
        path.unlink(missing_ok=True)
        return False
    if str(data.get("key", "")) != key:
        log.warning("ignoring MD checkpoint %s of other settings", path)
        path.unlink(missing_ok=True)
        return False
    context.loadCheckpoint(data["openmm"].tobytes())
    n = len(data["potential_kJ"])
    prog.step = int(data["step"])
    prog.positions_nm[:n] = data["positions_nm"]
    prog.potential_kJ[:n] = data["potential_kJ"]
    prog.kinetic_kJ[:n] = data["kinetic_kJ"]
    prog.minimized_potential_kJ, prog.wall_s, prog.production_wall_s = map(float, data["scalars"])
    return True


# --- the run ---------------------------------------------------------------------


class _StopRequested(KeyboardInterrupt):
    """Raised by the test hook ``_stop_after_steps`` to stand for a kill."""


def _validate(s: MDSettings) -> None:
    if s.save_every_steps < 1:
        raise ValueError(f"save_every_steps must be >= 1, got {s.save_every_steps}")
    if s.production_steps < 0 or s.equilibration_steps < 0:
        raise ValueError("equilibration_steps and production_steps must be >= 0")
    if s.production_steps % s.save_every_steps:
        raise ValueError(
            f"production_steps ({s.production_steps}) must be a multiple of "
            f"save_every_steps ({s.save_every_steps})"
        )
    if s.minimize_max_iterations < 0:
        raise ValueError(f"minimize_max_iterations must be >= 0, got {s.minimize_max_iterations}")


def _make_context(s: MDSettings) -> tuple[openmm.Context, openmm.Integrator, AldpSystem]:
    aldp = build_system(s.solvent, s.constraints)
    integrator = openmm.LangevinMiddleIntegrator(
        s.temperature_K * unit.kelvin,
        s.friction_per_ps / unit.picosecond,
        s.timestep_fs * unit.femtosecond,
    )
    integrator.setRandomNumberSeed(openmm_seed(s.seed))
    platform, props = make_platform(s.platform, s.threads)
    context = openmm.Context(aldp.system, integrator, platform, props)
    return context, integrator, aldp


def _start(s: MDSettings, context: openmm.Context, positions_nm: np.ndarray) -> float:
    """Set the shipped positions, minimize, draw velocities; the minimized energy (kJ/mol)."""
    context.setPositions(positions_nm)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, s.minimize_max_iterations)
    context.setVelocitiesToTemperature(s.temperature_K * unit.kelvin, openmm_seed(s.seed))
    energy = context.getState(getEnergy=True).getPotentialEnergy()
    return energy.value_in_unit(unit.kilojoule_per_mole)


def _save_frame(context: openmm.Context, prog: _Progress, i: int) -> None:
    state = context.getState(getPositions=True, getEnergy=True)
    prog.positions_nm[i] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    prog.potential_kJ[i] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    prog.kinetic_kJ[i] = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)


def _next_stop(s: MDSettings, step: int, every: int) -> int:
    """The step at which the next chunk ends: a frame, a checkpoint or the end of a phase."""
    if step < s.equilibration_steps:
        stops = [s.equilibration_steps]
    else:
        prod = step - s.equilibration_steps
        stops = [step + s.save_every_steps - prod % s.save_every_steps]
    if every > 0:
        stops.append((step // every + 1) * every)
    return min(min(stops), s.total_steps)


def _integrate(
    s: MDSettings,
    context: openmm.Context,
    integrator: openmm.Integrator,
    prog: _Progress,
    ckpt: Callable[[float], None] | None,
    every: int,
    stop_after: int | None,
) -> float:
    """Step from ``prog.step`` to the end; the production wall seconds of this attempt."""
    eq, total = s.equilibration_steps, s.total_steps
    prod_wall, report_every = 0.0, max(total // 10, 1)
    while prog.step < total:
        nxt = _next_stop(s, prog.step, every)
        t0 = time.perf_counter()
        integrator.step(nxt - prog.step)
        prev, prog.step = prog.step, nxt
        if nxt > eq and (nxt - eq) % s.save_every_steps == 0:
            _save_frame(context, prog, (nxt - eq) // s.save_every_steps - 1)
        if stop_after is not None and prog.step >= stop_after:
            raise _StopRequested(f"stopped after {prog.step} steps (test hook)")
        if ckpt is not None and (nxt == eq or (every > 0 and nxt % every == 0)) and nxt < total:
            ckpt(prod_wall + (time.perf_counter() - t0 if prev >= eq else 0.0))
        if prev >= eq:  # production chunk: stepping, its frame and its checkpoint
            prod_wall += time.perf_counter() - t0
        if nxt // report_every != prev // report_every:
            log.info(
                "MD step %d / %d (%s)", nxt, total, "production" if nxt > eq else "equilibration"
            )
    return prod_wall


def run_replica(
    *,
    solvent: str = "implicit",
    temperature_K: float = 300.0,
    timestep_fs: float = 1.0,
    friction_per_ps: float = 1.0,
    constraints: str = "none",
    platform: str = "auto",
    threads: int = 1,
    minimize_max_iterations: int = 0,
    equilibration_steps: int,
    production_steps: int,
    save_every_steps: int,
    seed: int,
    checkpoint_path: str | Path | None = None,
    checkpoint_every_steps: int = 10_000,
    _stop_after_steps: int | None = None,
) -> Frames:
    """Run one Langevin MD replica of alanine dipeptide and return its production frames.

    Parameters
    ----------
    solvent, constraints
        As :func:`boltzbench.md.system.build_system`: "implicit" or "vacuum";
        "none" or "h-bonds".
    temperature_K, timestep_fs, friction_per_ps
        Of ``openmm.LangevinMiddleIntegrator``.
    platform
        "auto" (CUDA if loadable, else Reference) or an OpenMM platform name.
    threads
        CPU threads (the CPU platform only).
    minimize_max_iterations
        Of ``LocalEnergyMinimizer`` (tolerance 10 kJ/mol/nm); 0: until converged.
    equilibration_steps, production_steps, save_every_steps
        Steps after minimization; a frame is saved every ``save_every_steps``
        steps of production (``production_steps`` must be a multiple of it).
    seed
        Any int; the integrator and the velocities get :func:`openmm_seed` of it.
    checkpoint_path, checkpoint_every_steps
        Where and how often (in steps, equilibration included) to checkpoint;
        None: never.
    _stop_after_steps
        Test hook: raise a KeyboardInterrupt subclass once this many steps
        (equilibration included) are done, without a checkpoint, as a kill would.

    Returns
    -------
    Frames
        ``production_steps // save_every_steps`` frames.
    """
    s = MDSettings(
        solvent, float(temperature_K), float(timestep_fs), float(friction_per_ps), constraints,
        resolve_platform(platform), int(threads), int(minimize_max_iterations),
        int(equilibration_steps), int(production_steps), int(save_every_steps), int(seed),
    )  # fmt: skip
    _validate(s)
    if checkpoint_every_steps < 0:
        raise ValueError(f"checkpoint_every_steps must be >= 0, got {checkpoint_every_steps}")
    t_start = time.perf_counter()
    context, integrator, aldp = _make_context(s)
    prog = _Progress.empty(s.n_frames, aldp.n_atoms)
    path, key = (None if checkpoint_path is None else Path(checkpoint_path)), s.key()
    resumed = path is not None and _load_checkpoint(path, key, context, prog)
    if resumed:
        log.info("resuming MD replica from %s at step %d", path, prog.step)
    else:
        prog.minimized_potential_kJ = _start(s, context, aldp.positions_nm)
    resumed_from, wall0, prod_wall0 = prog.step, prog.wall_s, prog.production_wall_s

    def checkpoint(prod_wall: float) -> None:
        prog.wall_s = wall0 + time.perf_counter() - t_start
        prog.production_wall_s = prod_wall0 + prod_wall
        n_saved = max(prog.step - s.equilibration_steps, 0) // s.save_every_steps
        _save_checkpoint(path, key, context, prog, n_saved)

    ckpt, every = (None, 0) if path is None else (checkpoint, checkpoint_every_steps)
    prod_wall = _integrate(s, context, integrator, prog, ckpt, every, _stop_after_steps)
    frames = _frames(
        s, prog, aldp.system, prod_wall0 + prod_wall, wall0 + time.perf_counter() - t_start
    )
    frames.stats["resumed_from_step"] = resumed_from
    if path is not None:
        path.unlink(missing_ok=True)
    log.info(
        "MD replica done: %d frames, %.0f ns/day on %s",
        len(frames),
        frames.stats["ns_per_day"],
        s.platform,
    )
    return frames


def _frames(
    s: MDSettings, prog: _Progress, system: openmm.System, prod_wall: float, wall: float
) -> Frames:
    dt_ps = s.timestep_fs * 1e-3
    ns = s.production_steps * dt_ps * 1e-3
    stats = {
        "platform": s.platform,
        "ns_per_day": ns / prod_wall * 86400.0 if prod_wall > 0 else float("nan"),
        "production_steps": s.production_steps,
        "equilibration_steps": s.equilibration_steps,
        "dof": degrees_of_freedom(system),
        "minimized_potential_kJ": prog.minimized_potential_kJ,
        "wall_s": wall,
        "production_wall_s": prod_wall,
        "openmm_seed": openmm_seed(s.seed),
    }
    time_ps = np.arange(1, s.n_frames + 1) * (s.save_every_steps * dt_ps)
    return Frames(
        prog.positions_nm, prog.potential_kJ, prog.kinetic_kJ, time_ps, s.temperature_K, stats
    )
