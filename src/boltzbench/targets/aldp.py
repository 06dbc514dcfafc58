"""Alanine dipeptide (22 atoms) with the AMBER ff96 force field, through OpenMM.

The system is openmmtools' ``alanine-dipeptide-gbsa`` files built by
:func:`boltzbench.md.system.build_system`: no cutoff, no constraints, and either
OBC GB/SA implicit solvent (``implicitSolvent=OBC2``, OpenMM's
``GBSAOBCForce``) or vacuum. openmmtools' own ``AlanineDipeptideImplicit`` uses
OBC1 and gives different energies. Energies are reduced,
E(x) = U(x) / (k_B T) with k_B T = R·T, and evaluated in batches by
:class:`boltzbench.md.bridge.OpenMMBridge`; autograd's gradient is −F/(k_B T).

Coordinates:

``"cartesian"`` (dim 66)
    x = the 22 positions in nm, flattened from (22, 3). Rigid-body motions are
    not removed, so exp(−E) is not normalizable along those 6 directions.
``"internal"`` (dim 60)
    z = bonds, angles, dihedrals of :class:`boltzbench.targets.internal.InternalCoordinates`
    (its alanine dipeptide Z-matrix), with every dihedral taken relative to the
    shipped structure's: z_d = wrap(φ_d − φ_d^shipped) ∈ [−π, π) (see
    ``dihedral_offset``), a rotation of each circle, so the 19 dihedral entries
    are angles of period 2π (``periodic_mask``, the
    :class:`~boltzbench.targets.base.PeriodicCoordinates` hook: flows use
    circular transforms on them). E_z(z) = E(x(z)) − log_det(z) with log_det(z) =
    log |det ∂x/∂(z, t, R)|, the density of z up to the constant 8π²V of the
    rigid motions, 2π-periodic in every dihedral; +inf where z is outside the
    support (a bond ≤ 0, an angle outside (0, π), a dihedral outside [−π, π],
    whose ends are the same point of the circle), so a density on the real line
    (an interval flow) gets weight 0 for the mass it puts beyond ±π.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from boltzbench.targets.base import Target, wrap_angle

__all__ = ["AlanineDipeptide", "COORDINATES"]

COORDINATES = ("cartesian", "internal")
N_ATOMS = 22

_COM_TREATMENT = {
    "cartesian": (
        "Cartesian coordinates are kept as is: rigid-body motions (3 translations, "
        "3 rotations) are not removed, so the density is improper along those 6 "
        "directions; use coordinates='internal' for flows."
    ),
    "internal": (
        "Internal coordinates (bonds, angles, dihedrals relative to the shipped "
        "structure's) remove the 6 rigid-body degrees of freedom; positions(z) are in "
        "the canonical frame of the Z-matrix (N at the origin, CA on +x, C in the "
        "xy-plane)."
    ),
}


class AlanineDipeptide(Target):
    """Alanine dipeptide, AMBER ff96, implicit solvent or vacuum, in k_BT.

    Building the target is cheap: the OpenMM Context (or the worker pool) is
    made at the first energy evaluation.

    Parameters
    ----------
    solvent
        "implicit" (OBC GB/SA via ``implicitSolvent=OBC2``) or "vacuum".
    temperature_K
        Temperature in kelvin; energies are U / (R·T).
    coordinates
        "cartesian" (dim 66, nm) or "internal" (dim 60; see the module docstring).
    n_workers
        Worker processes of the bridge; 0 evaluates in this process.
    platform
        OpenMM platform name ("Reference", "CPU", ...).
    """

    exact_sampling = False
    log_Z = None
    n_atoms = N_ATOMS
    translation_invariant = True

    def __init__(
        self,
        solvent: str = "implicit",
        temperature_K: float = 300.0,
        coordinates: str = "cartesian",
        n_workers: int = 0,
        platform: str = "Reference",
    ):
        super().__init__()
        if coordinates not in COORDINATES:
            raise ValueError(f"coordinates must be one of {', '.join(COORDINATES)}")
        from boltzbench.md.bridge import OpenMMBridge  # imports OpenMM, builds no Context

        self.bridge = OpenMMBridge(solvent, temperature_K, "none", platform, n_workers)
        self.solvent, self.temperature_K = solvent, float(temperature_K)
        self.coordinates, self.n_workers, self.platform = coordinates, n_workers, platform
        self.dim = 3 * N_ATOMS if coordinates == "cartesian" else 3 * N_ATOMS - 6
        self.com_treatment = _COM_TREATMENT[coordinates]
        self.description = _describe(solvent, self.temperature_K, coordinates)

    # -- the density ----------------------------------------------------------

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Reduced energy (n,) of x (n, dim): Cartesian nm, or internal z (E − log_det)."""
        if self.coordinates == "cartesian":
            return self._cartesian_energy(x)
        return self._internal_energy(x)

    def _cartesian_energy(self, x: torch.Tensor) -> torch.Tensor:
        from boltzbench.md.bridge import bridge_energy

        return bridge_energy(x.reshape(len(x), 3 * N_ATOMS), self.bridge)

    def _internal_energy(self, z: torch.Tensor) -> torch.Tensor:
        """E(x(z)) − log_det(z) on the support, +inf (zero gradient) elsewhere."""
        ok = self.internal.in_support(self._closed(z))
        e = (z * 0).sum(-1)  # tied to z, so a batch wholly outside the support has a gradient
        if ok.any():
            x, log_det = self.internal.to_cartesian(self._unshift(z[ok]))
            e = e.index_put((ok,), self._cartesian_energy(x) - log_det)
        return torch.where(ok, e, torch.inf)

    def _closed(self, z: torch.Tensor) -> torch.Tensor:
        """z with dihedrals equal to −π moved to π, the same point of the circle, so
        that the support check (−π, π] of the internal coordinates accepts [−π, π]."""
        idx = self.internal.dihedral_idx
        d = z[:, idx]
        return z.index_copy(1, idx, torch.where(d == -torch.pi, torch.pi, d))

    @property
    def periodic_mask(self) -> torch.Tensor:
        """Bool ``(dim,)``: the 19 dihedrals in internal coordinates, nothing in Cartesian."""
        if self.coordinates == "internal":
            return self.internal.periodic_mask.clone()
        return torch.zeros(self.dim, dtype=torch.bool)

    @cached_property
    def dihedral_offset(self) -> torch.Tensor:
        """Shape (60,): the shipped structure's dihedrals at the dihedral entries, 0 elsewhere.

        Internal coordinates hold each dihedral relative to it, wrapped to
        [−π, π), so the edge of the interval (±π) lies opposite the shipped, fully
        extended structure: φ = 0, ψ = 0 and cis peptide bonds, all rare at 300 K,
        instead of cutting through the trans ω ≈ ±π and the β region.
        """
        shipped = torch.from_numpy(self.shipped_positions()).reshape(1, 3 * N_ATOMS)
        z0 = self.internal.to_internal(shipped)[0][0]
        offset = torch.zeros_like(z0)
        idx = self.internal.dihedral_idx
        offset[idx] = z0[idx]
        return offset

    def _unshift(self, z: torch.Tensor) -> torch.Tensor:
        """Dihedrals back to absolute angles (not wrapped: x(z) is 2π-periodic in them)."""
        return z + self.dihedral_offset.to(z)

    def _shift(self, z: torch.Tensor) -> torch.Tensor:
        """Absolute dihedrals → relative to :attr:`dihedral_offset`, wrapped to [−π, π)."""
        idx = self.internal.dihedral_idx
        d = z[:, idx] - self.dihedral_offset.to(z)[idx]
        return z.index_copy(1, idx, wrap_angle(d))

    # -- geometry hooks used by metrics and samplers ----------------------------

    @cached_property
    def internal(self):
        """The :class:`~boltzbench.targets.internal.InternalCoordinates` of alanine dipeptide."""
        from boltzbench.targets.internal import InternalCoordinates

        return InternalCoordinates.alanine_dipeptide()

    def positions(self, x: torch.Tensor) -> torch.Tensor:
        """Atom positions (n, 22, 3) in nm of x (n, dim)."""
        if self.coordinates == "internal":
            x = self.internal.to_cartesian(self._unshift(x))[0]
        return x.reshape(len(x), N_ATOMS, 3)

    def to_coordinates(self, positions_nm: torch.Tensor) -> torch.Tensor:
        """This target's coordinates (n, dim) of positions (n, 22, 3) in nm."""
        x = positions_nm.reshape(len(positions_nm), 3 * N_ATOMS)
        return (
            x if self.coordinates == "cartesian" else self._shift(self.internal.to_internal(x)[0])
        )

    @cached_property
    def _aldp(self):
        from boltzbench.md.system import build_system

        return build_system(self.solvent, "none")

    @cached_property
    def mdtraj_topology(self):
        """The ``mdtraj.Topology`` of the 22 atoms (from the OpenMM topology)."""
        import mdtraj

        return mdtraj.Topology.from_openmm(self._aldp.topology)

    def shipped_positions(self) -> np.ndarray:
        """The structure shipped with openmmtools, (22, 3) in nm."""
        return self._aldp.positions_nm.copy()

    def minimized_positions(self) -> np.ndarray:
        """The energy minimum (22, 3) in nm that OpenMM's L-BFGS reaches from the shipped
        structure (RMS force below 1e-3 kJ/(mol nm)); computed once and cached."""
        if not hasattr(self, "_minimized"):
            self._minimized = self.bridge.minimize(self.shipped_positions(), tolerance=1e-3)
        return self._minimized.copy()

    def base_location(self) -> torch.Tensor:
        """The minimized structure in this target's coordinates, shape (dim,), float64."""
        pos = torch.from_numpy(self.minimized_positions())[None]
        return self.to_coordinates(pos)[0]

    def close(self) -> None:
        """Shut the bridge's worker pool down (a later energy call restarts it)."""
        self.bridge.close()

    def extra_repr(self) -> str:
        return (
            f"solvent={self.solvent!r}, temperature_K={self.temperature_K}, "
            f"coordinates={self.coordinates!r}, dim={self.dim}, n_workers={self.n_workers}"
        )


def _describe(solvent: str, temperature_K: float, coordinates: str) -> str:
    solv = (
        "OBC GB/SA implicit solvent (implicitSolvent=OBC2; openmmtools' "
        "AlanineDipeptideImplicit is OBC1)"
        if solvent == "implicit"
        else "vacuum"
    )
    return (
        f"alanine dipeptide, AMBER ff96, {solv}, no cutoff, no constraints, "
        f"T = {temperature_K:g} K, {coordinates} coordinates"
    )
