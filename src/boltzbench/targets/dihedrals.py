"""Backbone and side-chain torsions of alanine dipeptide, from positions in nm.

The torsion definitions (atom quadruples by residue and atom name in the
shipped ACE–ALA–NME topology) and their computation with mdtraj, shared by
the torsion metrics (:mod:`boltzbench.metrics.torsions`, which documents the
table) and the MD reference's convergence gate (:mod:`boltzbench.references`),
so that the reference step does not import the metrics.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TORSION_ATOMS", "torsion_indices", "wrap_angle", "dihedrals_nm"]

#: (residue name, atom name) quadruples of every torsion (see the module docstring)
TORSION_ATOMS: dict[str, tuple[tuple[str, str], ...]] = {
    "phi": (("ACE", "C"), ("ALA", "N"), ("ALA", "CA"), ("ALA", "C")),
    "psi": (("ALA", "N"), ("ALA", "CA"), ("ALA", "C"), ("NME", "N")),
    "omega_1": (("ACE", "CH3"), ("ACE", "C"), ("ALA", "N"), ("ALA", "CA")),
    "omega_2": (("ALA", "CA"), ("ALA", "C"), ("NME", "N"), ("NME", "C")),
    "methyl_ace": (("ACE", "H1"), ("ACE", "CH3"), ("ACE", "C"), ("ALA", "N")),
    "methyl_ala": (("ALA", "N"), ("ALA", "CA"), ("ALA", "CB"), ("ALA", "HB1")),
    "methyl_nme": (("ALA", "C"), ("NME", "N"), ("NME", "C"), ("NME", "H1")),
}


def torsion_indices(topology, names: tuple[str, ...]) -> np.ndarray:
    """Atom indices ``(len(names), 4)`` of the torsions ``names`` in an mdtraj ``topology``."""
    index = {(a.residue.name, a.name): a.index for a in topology.atoms}
    return np.array([[index[atom] for atom in TORSION_ATOMS[name]] for name in names])


def wrap_angle(theta: np.ndarray) -> np.ndarray:
    """Angles mapped to [−π, π) (θ − 2π ⌊(θ + π) / 2π⌋), in float64."""
    theta = np.asarray(theta, dtype=np.float64)
    return theta - 2 * math.pi * np.floor((theta + math.pi) / (2 * math.pi))


def dihedrals_nm(positions_nm: np.ndarray, topology, names: tuple[str, ...]) -> np.ndarray:
    """Torsions ``names`` of positions ``(n, atoms, 3)`` in nm, radians in [−π, π), ``(n, k)``.

    ``mdtraj.compute_dihedrals`` on a ``mdtraj.Trajectory`` with the mdtraj
    ``topology`` (mdtraj computes in float32: ~1e-6 rad).
    """
    import mdtraj  # imported here: only alanine dipeptide needs it

    traj = mdtraj.Trajectory(np.asarray(positions_nm, dtype=np.float32), topology)
    idx = torsion_indices(topology, names)
    return wrap_angle(mdtraj.compute_dihedrals(traj, idx, periodic=False))
