"""One λ-window of the solvation path: Langevin MD at U_λ, with checkpoint/resume.

:func:`run_window` minimizes the shipped alanine dipeptide structure at U_λ
(:func:`boltzbench.free_energy.alchemical.lambda_system`), draws
Maxwell–Boltzmann velocities, equilibrates and runs production with OpenMM's
``LangevinMiddleIntegrator`` (as :mod:`boltzbench.md.simulate`), saving every
``save_every_steps`` steps the positions and the two energy components
(U_vac, U_GB). From those, :meth:`Window.reduced` gives the reduced energy of
every frame at every λ of the grid, u_k(x_n) = (U_vac + λ_k U_GB) / (k_B T):
the window's columns of the MBAR matrix.

Checkpoints use :class:`boltzbench.checkpoint.Checkpoint` with one loop step
per frame: the OpenMM checkpoint bytes (positions, velocities, step count, the
integrator's random state) and the frames so far. On the Reference platform a
resumed window gives exactly the frames of an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import openmm
import openmm.unit as unit
import torch

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.free_energy.alchemical import components, lambda_system, set_lambda
from boltzbench.hashing import hash_json
from boltzbench.md.simulate import openmm_seed, resolve_platform
from boltzbench.md.system import kT, make_platform

__all__ = ["WindowSettings", "Window", "run_window", "reduced_matrix"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowSettings:
    """Every setting of a window's MD that changes its frames (units in the names)."""

    lambda_: float = 1.0
    temperature_K: float = 300.0
    timestep_fs: float = 1.0
    friction_per_ps: float = 1.0
    platform: str = "Reference"
    equilibration_steps: int = 5_000
    production_steps: int = 50_000
    save_every_steps: int = 100
    seed: int = 0

    def __post_init__(self):
        if self.save_every_steps < 1 or self.production_steps < self.save_every_steps:
            raise ValueError("need 1 <= save_every_steps <= production_steps")
        if self.production_steps % self.save_every_steps:
            raise ValueError("production_steps must be a multiple of save_every_steps")
        if not 0.0 <= self.lambda_ <= 1.0:
            raise ValueError(f"lambda must lie in [0, 1], got {self.lambda_}")

    @property
    def n_frames(self) -> int:
        return self.production_steps // self.save_every_steps

    def key(self) -> str:
        return hash_json({**asdict(self), "openmm": openmm.version.full_version})


@dataclass
class Window:
    """The production frames of one window.

    Attributes
    ----------
    positions_nm
        (F, 22, 3) float64, nm.
    u_vac_kJ, u_gb_kJ
        (F,) float64, kJ/mol: the vacuum energy and the unscaled solvent energy.
    settings
        The window's :class:`WindowSettings`.
    stats
        wall_s, ns_per_day, resumed_from_frame, openmm_seed.
    """

    positions_nm: np.ndarray
    u_vac_kJ: np.ndarray
    u_gb_kJ: np.ndarray
    settings: WindowSettings
    stats: dict = field(default_factory=dict)

    def reduced(self, lambdas: np.ndarray) -> np.ndarray:
        """u_k(x_n) = (U_vac + λ_k U_GB) / (k_B T), shape (K, F), in k_BT."""
        return reduced_matrix(self.u_vac_kJ, self.u_gb_kJ, lambdas, self.settings.temperature_K)


def reduced_matrix(
    u_vac_kJ: np.ndarray, u_gb_kJ: np.ndarray, lambdas, temperature_K: float
) -> np.ndarray:
    """(U_vac + λ_k U_GB) / (k_B T) for every λ_k: shape (K, F) from (F,) components."""
    lam = np.asarray(lambdas, dtype=np.float64)[:, None]
    return (np.asarray(u_vac_kJ)[None] + lam * np.asarray(u_gb_kJ)[None]) / kT(temperature_K)


def _context(s: WindowSettings, threads: int) -> openmm.Context:
    aldp = lambda_system(s.lambda_)
    integrator = openmm.LangevinMiddleIntegrator(
        s.temperature_K * unit.kelvin,
        s.friction_per_ps / unit.picosecond,
        s.timestep_fs * unit.femtosecond,
    )
    integrator.setRandomNumberSeed(openmm_seed(s.seed))
    platform, props = make_platform(s.platform, threads)
    context = openmm.Context(aldp.system, integrator, platform, props)
    set_lambda(context, s.lambda_)
    context.setPositions(aldp.positions_nm)
    return context


def _equilibrate(s: WindowSettings, context: openmm.Context) -> None:
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 0)
    context.setVelocitiesToTemperature(s.temperature_K * unit.kelvin, openmm_seed(s.seed))
    if s.equilibration_steps:
        context.getIntegrator().step(s.equilibration_steps)


def run_window(
    settings: WindowSettings,
    *,
    threads: int = 1,
    checkpoint: Checkpoint = NO_CHECKPOINT,
    _stop_after_frames: int | None = None,
) -> Window:
    """Run the MD of one λ-window and return its production frames.

    ``settings.platform`` may be "auto" (CUDA if loadable, else Reference).
    ``checkpoint`` saves after every ``checkpoint.every`` frames (its key must
    identify the settings; :meth:`WindowSettings.key` is a good one) and is
    cleared on success. ``_stop_after_frames`` is a test hook standing for a
    kill: a ``KeyboardInterrupt`` once that many frames are saved.
    """
    s = WindowSettings(**{**asdict(settings), "platform": resolve_platform(settings.platform)})
    t0 = time.perf_counter()
    context = _context(s, threads)
    n = s.n_frames
    pos, comp = np.zeros((n, 22, 3)), np.zeros((n, 2))
    start, wall0 = 0, 0.0
    restored = checkpoint.restore()
    if restored is None:
        _equilibrate(s, context)
    else:
        start, state = restored
        context.loadCheckpoint(state["openmm"].numpy().tobytes())
        pos[:start], comp[:start] = state["positions_nm"].numpy(), state["components"].numpy()
        wall0 = float(state["wall_s"])
    t_prod = time.perf_counter()
    for i in range(start, n):
        context.getIntegrator().step(s.save_every_steps)
        pos[i] = context.getState(getPositions=True).getPositions(asNumpy=True)._value
        comp[i] = components(context)
        if checkpoint.due(i + 1) and i + 1 < n:
            checkpoint.save(
                i + 1, _state(context, pos, comp, i + 1, wall0 + time.perf_counter() - t0)
            )
        if _stop_after_frames is not None and i + 1 >= _stop_after_frames:
            raise KeyboardInterrupt(f"stopped after {i + 1} frames (test hook)")
    prod_s = time.perf_counter() - t_prod
    ns = (n - start) * s.save_every_steps * s.timestep_fs * 1e-6
    stats = {
        "wall_s": wall0 + time.perf_counter() - t0,
        "ns_per_day": ns / prod_s * 86400.0 if prod_s > 0 else float("nan"),
        "resumed_from_frame": start,
        "openmm_seed": openmm_seed(s.seed),
        "platform": s.platform,
    }
    checkpoint.clear()
    log.info("window λ=%g: %d frames, %.0f ns/day", s.lambda_, n, stats["ns_per_day"])
    return Window(pos, comp[:, 0].copy(), comp[:, 1].copy(), s, stats)


def _state(context, pos, comp, n_saved: int, wall_s: float) -> dict:
    raw = np.frombuffer(context.createCheckpoint(), dtype=np.uint8).copy()
    return {
        "openmm": torch.from_numpy(raw),
        "positions_nm": torch.from_numpy(pos[:n_saved].copy()),
        "components": torch.from_numpy(comp[:n_saved].copy()),
        "wall_s": wall_s,
    }
