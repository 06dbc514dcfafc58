"""The alanine dipeptide system that openmmtools ships (AMBER ff96, 22 atoms).

The files are ``openmmtools/data/alanine-dipeptide-gbsa/alanine-dipeptide.{prmtop,crd}``,
found without importing openmmtools. Two variants, both without cutoffs and,
by default, without constraints:

``"implicit"``
    OBC GB/SA implicit solvent with ``implicitSolvent=OBC2`` (the fast
    ``GBSAOBCForce``; openmmtools' own ``AlanineDipeptideImplicit`` is OBC1,
    built with ``CustomGBForce``, and gives different energies).
``"vacuum"``
    No solvent.

Energies are in kJ/mol from OpenMM; :func:`kT` converts them to k_BT.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

__all__ = [
    "SOLVENTS",
    "CONSTRAINTS",
    "AldpSystem",
    "data_dir",
    "build_system",
    "kT",
    "make_platform",
]

SOLVENTS = ("implicit", "vacuum")
CONSTRAINTS = {"none": None, "h-bonds": app.HBonds}
#: Boltzmann's constant times Avogadro's number, kJ/(mol K), as OpenMM has it
MOLAR_GAS_CONSTANT = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)


def data_dir() -> Path:
    """The folder of alanine dipeptide files inside the installed openmmtools."""
    spec = importlib.util.find_spec("openmmtools")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "openmmtools is not installed; it ships the alanine dipeptide files"
        )
    return Path(spec.submodule_search_locations[0]) / "data" / "alanine-dipeptide-gbsa"


def kT(temperature_K: float) -> float:
    """k_BT in kJ/mol at ``temperature_K``."""
    return MOLAR_GAS_CONSTANT * temperature_K


@dataclass
class AldpSystem:
    """An OpenMM system with its topology and the shipped coordinates (nm)."""

    system: openmm.System
    topology: app.Topology
    positions_nm: np.ndarray  # (22, 3)
    solvent: str
    constraints: str

    @property
    def n_atoms(self) -> int:
        return self.system.getNumParticles()

    def describe(self) -> str:
        gb = (
            "OBC GB/SA (implicitSolvent=OBC2, GBSAOBCForce)"
            if self.solvent == "implicit"
            else "none"
        )
        return (
            f"alanine dipeptide, AMBER ff96 (openmmtools alanine-dipeptide-gbsa), "
            f"implicit solvent: {gb}, no cutoff, constraints: {self.constraints}"
        )


def build_system(solvent: str = "implicit", constraints: str = "none") -> AldpSystem:
    """The alanine dipeptide system in ``solvent`` ("implicit" or "vacuum").

    ``constraints`` is "none" (every bond flexible, as samplers of the
    Cartesian density need) or "h-bonds". The CMMotionRemover that the prmtop
    adds is removed: it is not a force and must not act in sampling.
    """
    if solvent not in SOLVENTS:
        raise ValueError(f"solvent must be one of {', '.join(SOLVENTS)}, got {solvent!r}")
    if constraints not in CONSTRAINTS:
        raise ValueError(
            f"constraints must be one of {', '.join(CONSTRAINTS)}, got {constraints!r}"
        )
    d = data_dir()
    prmtop = app.AmberPrmtopFile(str(d / "alanine-dipeptide.prmtop"))
    inpcrd = app.AmberInpcrdFile(str(d / "alanine-dipeptide.crd"))
    kwargs = {"implicitSolvent": app.OBC2} if solvent == "implicit" else {}
    system = prmtop.createSystem(
        nonbondedMethod=app.NoCutoff, constraints=CONSTRAINTS[constraints], **kwargs
    )
    for i in reversed(range(system.getNumForces())):
        if isinstance(system.getForce(i), openmm.CMMotionRemover):
            system.removeForce(i)
    positions = np.asarray(inpcrd.getPositions().value_in_unit(unit.nanometer), dtype=np.float64)
    return AldpSystem(system, prmtop.topology, positions, solvent, constraints)


def make_platform(name: str, threads: int = 1) -> tuple[openmm.Platform, dict[str, str]]:
    """The OpenMM platform ``name`` and its properties (one CPU thread by default).

    Names: "Reference", "CPU", "CUDA", "OpenCL". A platform this OpenMM cannot
    load raises ValueError listing those it can.
    """
    names = [
        openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
    ]
    if name not in names:
        raise ValueError(
            f"OpenMM platform {name!r} is not available here; available: {', '.join(names)}"
        )
    props = {"Threads": str(threads)} if name == "CPU" else {}
    return openmm.Platform.getPlatformByName(name), props
