"""Cartesian ↔ internal coordinates (bonds, angles, dihedrals) through a Z-matrix.

A Z-matrix places three reference atoms canonically and every other atom ``i``
by spherical coordinates relative to three atoms placed before it: the bond
length ``r = |x_i - x_j|`` to its bond partner ``j``, the angle
``θ = ∠(i, j, k)`` at ``j`` with its angle partner ``k``, and the dihedral
``φ = dihedral(i, j, k, l)`` with its dihedral partner ``l``. Placement is the
NeRF construction (Parsons et al. 2005, J. Comput. Chem. 26, 1063).

Canonical frame of the reference atoms ``(a, b, c)``: ``a`` at the origin, ``b``
on the +x axis at distance ``r_ba``, ``c`` bonded to ``b`` in the xy-plane with
y > 0, at distance ``r_cb`` and angle ``θ_cba``. For ``N`` atoms ``z`` has
``3N - 6`` entries in the layout

``[bonds (N - 1) | angles (N - 2) | dihedrals (N - 3)]``

where each block lists the reference coordinates first (bonds ``b-a``,
``c-b``; angle ``c-b-a``) and then the Z-matrix rows in their given order.
Units: bonds in nm, angles in radians in (0, π), dihedrals in radians in
(−π, π]. Dihedrals follow the IUPAC sign convention (the one of mdtraj).

Log-Jacobian (the formula the tests check against autograd). Write ``x`` as the
rigid motion ``x = R x(z) + t`` of the canonical structure ``x(z)``. Atom by
atom the map is block triangular: the first reference atom is ``t``, the second
is a point on the sphere of radius ``r_ba`` about it (volume ``r_ba² dr dΩ``),
the third sits at ``r_cb``, polar angle ``θ_cba`` about the a-b axis and an
azimuth that is the third rotation angle (``r_cb² sin θ_cba``), and every row
atom is at spherical coordinates about its partners (``r² sin θ``). The two
sphere directions and the azimuth form the Haar measure of SO(3) (total
``8π²``), hence

``dx = exp(log_det(z)) dz dt dR``,  ``log_det(z) = Σ_bonds 2 log r + Σ_angles log sin θ``

summed over all ``N - 1`` bonds and ``N - 2`` angles of ``z``. With ZYZ Euler
angles (α, β, γ), ``dR = sin β dα dβ dγ``. For a density ``p_x`` invariant under
rigid motions, normalized over positions whose translation ranges over a
volume ``V``, integrating out ``t`` and ``R`` gives

``p_z(z) = 8π² V · p_x(x(z)) · exp(log_det(z))``.

:meth:`InternalCoordinates.to_cartesian` returns ``log_det(z)``;
:meth:`InternalCoordinates.to_internal` returns ``-log_det(z)``.

Alanine dipeptide (openmmtools, AMBER ff96): atom order 0 H1, 1 CH3, 2 H2, 3 H3,
4 C, 5 O (ACE); 6 N, 7 H, 8 CA, 9 HA, 10 CB, 11 HB1, 12 HB2, 13 HB3, 14 C,
15 O (ALA); 16 N, 17 H, 18 C, 19 H1, 20 H2, 21 H3 (NME). See
:data:`ALDP_Z_MATRIX`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "InternalCoordinates",
    "ALDP_REFERENCE_ATOMS",
    "ALDP_Z_MATRIX",
    "ALDP_PHI_ATOMS",
    "ALDP_PSI_ATOMS",
    "ALDP_ZETA_ATOMS",
    "positions",
    "bond_lengths",
    "bond_angles",
    "dihedral_angles",
    "phi_psi",
    "chirality",
    "is_l_form",
]

#: alanine dipeptide reference atoms: N (origin), CA (+x), C (xy-plane, y > 0)
ALDP_REFERENCE_ATOMS: tuple[int, int, int] = (6, 8, 14)
#: alanine dipeptide Z-matrix rows (atom, bond partner, angle partner, dihedral partner).
#: Every bond and angle is a chemical one; every dihedral is a proper torsion
#: about a bond (φ and ψ among them) except the two that place the branches at
#: CA (CB and HA, by the improper X-CA-N-C).
ALDP_Z_MATRIX: tuple[tuple[int, int, int, int], ...] = (
    (4, 6, 8, 14),  # C(ACE):  dihedral C'-N-CA-C = φ
    (16, 14, 8, 6),  # N(NME): dihedral N'-C-CA-N = ψ (reversal leaves a dihedral unchanged)
    (10, 8, 6, 14),  # CB:     CB-CA-N-C (sets the chirality at CA)
    (9, 8, 6, 14),  # HA:      HA-CA-N-C
    (1, 4, 6, 8),  # CH3(ACE): CH3-C-N-CA = ω(ACE), ≈ π for a trans amide
    (5, 4, 6, 8),  # O(ACE):   O-C-N-CA, ≈ 0
    (7, 6, 4, 5),  # H(ALA):   H-N-C-O, ≈ π
    (0, 1, 4, 6),  # methyl hydrogens of ACE: H-CH3-C-N
    (2, 1, 4, 6),
    (3, 1, 4, 6),
    (11, 10, 8, 6),  # methyl hydrogens of CB: H-CB-CA-N
    (12, 10, 8, 6),
    (13, 10, 8, 6),
    (18, 16, 14, 8),  # C(NME): C-N-C-CA = ω(NME), ≈ π
    (15, 14, 16, 18),  # O(ALA): O-C-N-C(NME), ≈ 0
    (17, 16, 14, 15),  # H(NME): H-N-C-O, ≈ π
    (19, 18, 16, 14),  # methyl hydrogens of NME: H-C-N-C
    (20, 18, 16, 14),
    (21, 18, 16, 14),
)
#: φ = dihedral(C(ACE), N, CA, C): equal to ``z[:, ic.dihedral_index(4)]``, no offset
ALDP_PHI_ATOMS: tuple[int, int, int, int] = (4, 6, 8, 14)
#: ψ = dihedral(N, CA, C, N(NME)): equal to ``z[:, ic.dihedral_index(16)]``, no offset
ALDP_PSI_ATOMS: tuple[int, int, int, int] = (6, 8, 14, 16)
#: ζ = dihedral(CA, N, C, CB), the virtual torsion of the CA chirality check in
#: PROCHECK (Morris et al. 1992, Proteins 12, 345; Laskowski et al. 1993):
#: about +34° for L residues, −34° for D.
ALDP_ZETA_ATOMS: tuple[int, int, int, int] = (8, 6, 14, 10)


def positions(x: torch.Tensor) -> torch.Tensor:
    """Reshape flattened coordinates ``(..., 3N)`` into ``(..., N, 3)`` (a view)."""
    if x.shape[-1] % 3:
        raise ValueError(f"the last dimension must be a multiple of 3, got {x.shape[-1]}")
    return x.reshape(*x.shape[:-1], x.shape[-1] // 3, 3)


def _norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last axis, with a gradient that stays finite at 0."""
    eps = torch.finfo(v.dtype).eps
    return torch.sqrt(torch.clamp((v * v).sum(-1), min=eps * eps))


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / _norm(v).unsqueeze(-1)


def _safe_atan2(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """atan2(y, x), returning 0 with zero gradient where x = y = 0 (torch gives NaN grads)."""
    degenerate = (x * x + y * y) <= torch.finfo(x.dtype).tiny
    x_safe = torch.where(degenerate, torch.ones_like(x), x)
    return torch.where(degenerate, torch.zeros_like(x), torch.atan2(y, x_safe))


def bond_lengths(xi: torch.Tensor, xj: torch.Tensor) -> torch.Tensor:
    """|x_i - x_j| over the last axis (nm)."""
    return _norm(xi - xj)


def bond_angles(xi: torch.Tensor, xj: torch.Tensor, xk: torch.Tensor) -> torch.Tensor:
    """The angle ∠(i, j, k) at ``j`` in [0, π], as atan2(|u × v|, u · v) (stable near 0, π)."""
    u, v = xi - xj, xk - xj
    return _safe_atan2(_norm(torch.linalg.cross(u, v, dim=-1)), (u * v).sum(-1))


def dihedral_angles(
    xa: torch.Tensor, xb: torch.Tensor, xc: torch.Tensor, xd: torch.Tensor
) -> torch.Tensor:
    """The IUPAC dihedral of a-b-c-d in (−π, π] (radians).

    With ``b1 = b - a``, ``b2 = c - b``, ``b3 = d - c``:
    ``atan2(|b2| b1 · (b2 × b3), (b1 × b2) · (b2 × b3))``; positive when, looking
    along b → c, the bond c-d is rotated clockwise from a-b. Invariant under the
    reversal d-c-b-a; negated by a mirror image.
    """
    b1, b2, b3 = xb - xa, xc - xb, xd - xc
    n1 = torch.linalg.cross(b1, b2, dim=-1)
    n2 = torch.linalg.cross(b2, b3, dim=-1)
    phi = _safe_atan2(_norm(b2) * (b1 * n2).sum(-1), (n1 * n2).sum(-1))
    return torch.where(phi <= -math.pi, phi + 2 * math.pi, phi)


def _place(
    c: torch.Tensor,
    b: torch.Tensor,
    a: torch.Tensor,
    r: torch.Tensor,
    theta: torch.Tensor,
    phi: torch.Tensor,
) -> torch.Tensor:
    """NeRF: the point d with |d - c| = r, ∠(d, c, b) = θ and dihedral(a, b, c, d) = φ.

    ``a, b, c`` have shape ``(n, 3)``, ``r, theta, phi`` shape ``(n,)``
    (Parsons et al. 2005), in the right-handed frame ``[bc, n × bc, n]``.
    """
    bc = _unit(c - b)
    n = _unit(torch.linalg.cross(b - a, bc, dim=-1))
    m = torch.linalg.cross(n, bc, dim=-1)
    sin_t = torch.sin(theta)
    d_bc = -r * torch.cos(theta)
    d_m = r * sin_t * torch.cos(phi)
    d_n = r * sin_t * torch.sin(phi)
    return c + d_bc[:, None] * bc + d_m[:, None] * m + d_n[:, None] * n


class InternalCoordinates(torch.nn.Module):
    """A Z-matrix transform between Cartesian ``x`` (n, 3N) in nm and internal ``z`` (n, 3N − 6).

    Parameters
    ----------
    z_matrix
        One row ``(atom, bond partner, angle partner, dihedral partner)`` per
        non-reference atom, each partner placed before the row (a reference
        atom or an earlier row).
    reference_atoms
        ``(a, b, c)``: ``a`` at the origin, ``b`` bonded to ``a`` on +x, ``c``
        bonded to ``b`` in the xy-plane (y > 0) with the angle ``c-b-a``.

    Attributes
    ----------
    bond_idx, angle_idx, dihedral_idx
        Long tensors of positions in ``z`` of the bonds (N − 1), angles (N − 2)
        and dihedrals (N − 3, the periodic coordinates).
    rows
        The Z-matrix rows as tuples; ``reference_atoms`` the triple.
    bond_atoms, angle_atoms, dihedral_atoms
        Long tensors ``(N−1, 2)``, ``(N−2, 3)``, ``(N−3, 4)``: the atoms of each
        coordinate of ``z``, block by block.
    periodic_mask
        Bool ``(3N − 6,)``: True at the dihedrals, the angles of period 2π
        (x(z) is 2π-periodic in each; see
        :class:`~boltzbench.targets.base.PeriodicCoordinates`).
    """

    def __init__(self, z_matrix: Sequence[Sequence[int]], reference_atoms: Sequence[int]) -> None:
        super().__init__()
        self.rows = [tuple(int(v) for v in row) for row in z_matrix]
        self.reference_atoms = tuple(int(v) for v in reference_atoms)
        self.n_atoms = len(self.rows) + 3
        self.dim_cartesian = 3 * self.n_atoms
        self.dim = 3 * self.n_atoms - 6
        self._validate()
        a, b, c = self.reference_atoms
        bonds = [(b, a), (c, b)] + [row[:2] for row in self.rows]
        angles = [(c, b, a)] + [row[:3] for row in self.rows]
        nb, na = len(bonds), len(angles)
        self.register_buffer("bond_atoms", torch.tensor(bonds, dtype=torch.long))
        self.register_buffer("angle_atoms", torch.tensor(angles, dtype=torch.long))
        self.register_buffer("dihedral_atoms", torch.tensor(self.rows, dtype=torch.long))
        self.register_buffer("bond_idx", torch.arange(nb))
        self.register_buffer("angle_idx", torch.arange(nb, nb + na))
        self.register_buffer("dihedral_idx", torch.arange(nb + na, self.dim))
        periodic = torch.zeros(self.dim, dtype=torch.bool)
        periodic[nb + na :] = True
        self.register_buffer("periodic_mask", periodic, persistent=False)

    @classmethod
    def alanine_dipeptide(cls) -> InternalCoordinates:
        """The Z-matrix :data:`ALDP_Z_MATRIX` on reference atoms N, CA, C (6, 8, 14)."""
        return cls(ALDP_Z_MATRIX, ALDP_REFERENCE_ATOMS)

    def _validate(self) -> None:
        placed = list(self.reference_atoms)
        if len(set(placed)) != 3:
            raise ValueError(f"reference atoms must be distinct, got {self.reference_atoms}")
        for row in self.rows:
            if len(row) != 4 or len(set(row)) != 4:
                raise ValueError(f"a Z-matrix row needs 4 distinct atoms, got {row}")
            if row[0] in placed or any(p not in placed for p in row[1:]):
                raise ValueError(f"row {row}: atom placed twice or a partner not yet placed")
            placed.append(row[0])
        if sorted(placed) != list(range(self.n_atoms)):
            raise ValueError(f"atoms must be 0..{self.n_atoms - 1}, each once; got {placed}")

    def bond_index(self, atom: int) -> int:
        """Position in ``z`` of the bond length that places ``atom``."""
        return int(self.bond_idx[self._column(self.bond_atoms, atom)])

    def angle_index(self, atom: int) -> int:
        """Position in ``z`` of the angle that places ``atom``."""
        return int(self.angle_idx[self._column(self.angle_atoms, atom)])

    def dihedral_index(self, atom: int) -> int:
        """Position in ``z`` of the dihedral that places ``atom``."""
        return int(self.dihedral_idx[self._column(self.dihedral_atoms, atom)])

    @staticmethod
    def _column(atoms: torch.Tensor, atom: int) -> int:
        hits = (atoms[:, 0] == atom).nonzero()
        if len(hits) == 0:
            raise KeyError(f"atom {atom} has no such coordinate")
        return int(hits[0, 0])

    def _check(self, t: torch.Tensor, width: int, name: str) -> None:
        if t.ndim != 2 or t.shape[1] != width:
            raise ValueError(f"{name} must have shape (n, {width}), got {tuple(t.shape)}")

    def log_det(self, z: torch.Tensor) -> torch.Tensor:
        """log |det ∂x/∂(z, t, R)| per sample, ``Σ 2 log r + Σ log sin θ``, shape ``(n,)``."""
        r, theta = z[:, self.bond_idx], z[:, self.angle_idx]
        return 2 * torch.log(r).sum(-1) + torch.log(torch.sin(theta)).sum(-1)

    def to_internal(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Internal coordinates of ``x`` (n, 3N) in nm: ``(z (n, 3N − 6), −log_det(z))``."""
        self._check(x, self.dim_cartesian, "x")
        p = positions(x)
        bonds = bond_lengths(*(p[:, self.bond_atoms[:, i]] for i in range(2)))
        angles = bond_angles(*(p[:, self.angle_atoms[:, i]] for i in range(3)))
        dihedrals = dihedral_angles(*(p[:, self.dihedral_atoms[:, i]] for i in range(4)))
        z = torch.cat([bonds, angles, dihedrals], dim=-1)
        return z, -self.log_det(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`to_internal`."""
        return self.to_internal(x)

    def to_cartesian(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cartesian coordinates in the canonical frame: ``(x (n, 3N) in nm, log_det(z))``."""
        self._check(z, self.dim, "z")
        r, theta, phi = z[:, self.bond_idx], z[:, self.angle_idx], z[:, self.dihedral_idx]
        zero = torch.zeros_like(r[:, 0])
        a, b, c = self.reference_atoms
        pos: dict[int, torch.Tensor] = {a: torch.stack([zero, zero, zero], -1)}
        pos[b] = torch.stack([r[:, 0], zero, zero], -1)
        pos[c] = pos[b] + r[:, 1:2] * torch.stack(
            [-torch.cos(theta[:, 0]), torch.sin(theta[:, 0]), zero], -1
        )
        for k, (i, j, kk, ll) in enumerate(self.rows):
            pos[i] = _place(pos[j], pos[kk], pos[ll], r[:, k + 2], theta[:, k + 1], phi[:, k])
        x = torch.stack([pos[i] for i in range(self.n_atoms)], dim=1)
        return x.reshape(len(z), self.dim_cartesian), self.log_det(z)

    def in_support(self, z: torch.Tensor) -> torch.Tensor:
        """Bool ``(n,)``: finite, bonds > 0, angles in (0, π), dihedrals in (−π, π]."""
        self._check(z, self.dim, "z")
        r, theta, phi = z[:, self.bond_idx], z[:, self.angle_idx], z[:, self.dihedral_idx]
        ok = torch.isfinite(z).all(-1) & (r > 0).all(-1)
        ok &= ((theta > 0) & (theta < math.pi)).all(-1)
        return ok & ((phi > -math.pi) & (phi <= math.pi)).all(-1)

    def extra_repr(self) -> str:
        return f"n_atoms={self.n_atoms}, dim={self.dim}, reference_atoms={self.reference_atoms}"


def _torsion(x: torch.Tensor, atoms: Sequence[int]) -> torch.Tensor:
    p = positions(x)
    return dihedral_angles(*(p[:, i] for i in atoms))


def phi_psi(x: torch.Tensor) -> torch.Tensor:
    """Alanine dipeptide backbone torsions (φ, ψ) in radians, shape ``(n, 2)`` for ``x`` (n, 66).

    φ = dihedral(4, 6, 8, 14) (C-N-CA-C), ψ = dihedral(6, 8, 14, 16) (N-CA-C-N),
    as ``mdtraj.compute_phi``/``compute_psi`` define them.
    """
    return torch.stack([_torsion(x, ALDP_PHI_ATOMS), _torsion(x, ALDP_PSI_ATOMS)], dim=-1)


def chirality(x: torch.Tensor, atoms: Sequence[int] = ALDP_ZETA_ATOMS) -> torch.Tensor:
    """The signed improper torsion ζ = dihedral(CA, N, C, CB) in radians, shape ``(n,)``.

    Default atoms (8, 6, 14, 10) of alanine dipeptide. ζ ≈ +34° (0.59 rad) for
    an L residue and ≈ −34° for D (PROCHECK's Cα chirality check, Morris et
    al. 1992); the shipped openmmtools structure gives +35.3°.
    """
    return _torsion(x, atoms)


def is_l_form(x: torch.Tensor, atoms: Sequence[int] = ALDP_ZETA_ATOMS) -> torch.Tensor:
    """Bool ``(n,)``: ζ > 0, the L configuration at CA."""
    return chirality(x, atoms) > 0
