"""Batched OpenMM energies and forces in reduced units, without torch.

:class:`Evaluator` owns one OpenMM ``Context`` and evaluates a batch of
configurations one after another (``setPositions`` then ``getState``). The
module-level :func:`init_worker` and :func:`evaluate_chunk` are what
:class:`boltzbench.md.bridge.OpenMMBridge` runs in each of its worker processes:
this module imports only numpy and OpenMM, so a worker started with the "spawn"
method does not pay for importing torch.

Units: positions in nm; energies E/(k_B T) and forces F/(k_B T) in 1/nm, with
k_B T = R·T from :func:`boltzbench.md.system.kT`.

A configuration is *bad* when it has a non-finite coordinate, when OpenMM raises
``OpenMMException`` on it (the CPU and GPU platforms refuse NaN coordinates), or
when the energy or a force comes out non-finite (the Reference platform returns
NaN for NaN coordinates and for coincident atoms). A bad row gets energy +inf
and zero forces; the others are unaffected.
"""

from __future__ import annotations

import os

import numpy as np
import openmm
import openmm.unit as unit

from boltzbench.md.system import build_system, kT, make_platform

__all__ = ["Evaluator", "init_worker", "evaluate_chunk", "worker_info"]

_ENERGY_UNIT = unit.kilojoule_per_mole
_FORCE_UNIT = unit.kilojoule_per_mole / unit.nanometer


class Evaluator:
    """One OpenMM Context for the alanine dipeptide system, evaluated row by row.

    Parameters
    ----------
    solvent, constraints
        Passed to :func:`boltzbench.md.system.build_system`.
    temperature_K
        Temperature in kelvin; energies are divided by k_B T = R·T.
    platform
        OpenMM platform name ("Reference", "CPU", ...), one CPU thread.
    """

    def __init__(
        self,
        solvent: str = "implicit",
        temperature_K: float = 300.0,
        constraints: str = "none",
        platform: str = "Reference",
    ):
        self.aldp = build_system(solvent, constraints)
        self.kT = kT(temperature_K)
        plat, props = make_platform(platform)
        # the integrator is never stepped; a Context needs one
        self.context = openmm.Context(self.aldp.system, openmm.VerletIntegrator(1e-3), plat, props)

    @property
    def n_atoms(self) -> int:
        return self.aldp.n_atoms

    def evaluate(self, positions_nm: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Energies (n,) in k_BT, forces (n, n_atoms, 3) in k_BT/nm and the bad-row count.

        ``positions_nm`` has shape (n, n_atoms, 3), in nm.
        """
        pos = np.asarray(positions_nm, dtype=np.float64).reshape(-1, self.n_atoms, 3)
        energy = np.full(len(pos), np.inf)
        forces = np.zeros(pos.shape)
        for i in np.flatnonzero(np.isfinite(pos).all(axis=(1, 2))):
            state = self._state(pos[i])
            if state is not None:
                energy[i], forces[i] = _md_values(state)
        bad = ~(np.isfinite(energy) & np.isfinite(forces).all(axis=(1, 2)))
        energy[bad], forces[bad] = np.inf, 0.0
        return energy / self.kT, forces / self.kT, int(np.count_nonzero(bad))

    def _state(self, x: np.ndarray) -> openmm.State | None:
        """The State with energy and forces at ``x`` (22, 3) nm, or None if OpenMM refuses it."""
        try:
            self.context.setPositions(x)
            return self.context.getState(getEnergy=True, getForces=True)
        except openmm.OpenMMException:
            return None

    def minimize(self, positions_nm: np.ndarray, tolerance: float = 1e-3, max_iterations: int = 0):
        """Local energy minimum (n_atoms, 3) in nm reached from ``positions_nm`` by L-BFGS.

        ``tolerance`` is OpenMM's: the root-mean-square force, in kJ/(mol nm),
        at which :class:`openmm.LocalEnergyMinimizer` stops; ``max_iterations``
        = 0 means no limit.
        """
        self.context.setPositions(np.asarray(positions_nm, dtype=np.float64))
        openmm.LocalEnergyMinimizer.minimize(self.context, tolerance, max_iterations)
        state = self.context.getState(getPositions=True)
        return np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))


def _md_values(state: openmm.State) -> tuple[float, np.ndarray]:
    """Energy (kJ/mol) and forces (kJ/(mol nm)) of ``state`` as plain numbers.

    A State always carries OpenMM's MD units; reading ``_value`` after checking
    the unit skips ``value_in_unit``, which costs as much as a tenth of a
    22-atom evaluation.
    """
    e, f = state.getPotentialEnergy(), state.getForces(asNumpy=True)
    if e.unit == _ENERGY_UNIT and f.unit == _FORCE_UNIT:
        return e._value, f._value
    return e.value_in_unit(_ENERGY_UNIT), f.value_in_unit(_FORCE_UNIT)


_EVALUATOR: Evaluator | None = None


def init_worker(solvent: str, temperature_K: float, constraints: str, platform: str) -> None:
    """Pool initializer: build this process's own :class:`Evaluator` once."""
    global _EVALUATOR
    _EVALUATOR = Evaluator(solvent, temperature_K, constraints, platform)


def evaluate_chunk(positions_nm: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """:meth:`Evaluator.evaluate` with this worker's Evaluator."""
    if _EVALUATOR is None:
        raise RuntimeError("init_worker was not called in this process")
    return _EVALUATOR.evaluate(positions_nm)


def worker_info(_: object = None) -> dict:
    """This process's id and whether torch has been imported in it (for tests)."""
    import sys

    return {"pid": os.getpid(), "torch_imported": "torch" in sys.modules}
