"""Internal coordinates of alanine dipeptide: round trips, mdtraj, log-Jacobian, chirality."""

import math

import mdtraj
import numpy as np
import pytest
import torch

from boltzbench.md.system import build_system
from boltzbench.targets.internal import (
    ALDP_Z_MATRIX,
    InternalCoordinates,
    chirality,
    is_l_form,
    phi_psi,
    positions,
)


@pytest.fixture(scope="module")
def aldp():
    return build_system("vacuum")


@pytest.fixture(scope="module")
def ic():
    return InternalCoordinates.alanine_dipeptide()


@pytest.fixture(scope="module")
def x0(aldp):
    """The shipped structure, (1, 66) float64, nm."""
    return torch.tensor(aldp.positions_nm, dtype=torch.float64).reshape(1, 66)


def rotation_zyz(angles: torch.Tensor) -> torch.Tensor:
    """R = Rz(α) Ry(β) Rz(γ) for angles (α, β, γ); its Haar density is sin β."""

    def rz(a):
        c, s, o, i = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
        return torch.stack(
            [torch.stack([c, -s, o]), torch.stack([s, c, o]), torch.stack([o, o, i])]
        )

    def ry(a):
        c, s, o, i = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
        return torch.stack(
            [torch.stack([c, o, s]), torch.stack([o, i, o]), torch.stack([-s, o, c])]
        )

    return rz(angles[0]) @ ry(angles[1]) @ rz(angles[2])


def random_rigid(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each structure of x (n, 66) moved by its own random rotation and translation."""
    out = []
    for xi in positions(x):
        angles = torch.rand(3, generator=gen, dtype=torch.float64) * torch.tensor(
            [2 * math.pi, math.pi, 2 * math.pi]
        )
        t = torch.randn(3, generator=gen, dtype=torch.float64)
        out.append(xi @ rotation_zyz(angles).T.to(x) + t.to(x))
    return torch.stack(out).reshape(x.shape)


def kabsch_max_deviation(x: np.ndarray, y: np.ndarray) -> float:
    """max_i |x_i − (R y_i + t)| after the best *proper* rotation R (no reflection)."""
    x, y = x - x.mean(0), y - y.mean(0)
    u, _, vt = np.linalg.svd(y.T @ x)
    d = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag([1.0, 1.0, d]) @ vt
    return float(np.linalg.norm(y @ r - x, axis=1).max())


def wrapped(a: torch.Tensor) -> torch.Tensor:
    """Angle differences mapped into (−π, π]."""
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


def structures(x0: torch.Tensor, n: int, gen: torch.Generator, noise_nm: float = 0.01):
    """The shipped structure and n − 1 copies perturbed by N(0, noise²) per coordinate."""
    eps = noise_nm * torch.randn(n - 1, 66, generator=gen, dtype=torch.float64)
    return torch.cat([x0, x0 + eps])


def varied_conformations(ic, x0, n: int, gen: torch.Generator) -> torch.Tensor:
    """n structures with uniformly random φ and ψ, perturbed, randomly rotated and shifted."""
    z, _ = ic.to_internal(x0.expand(n, 66))
    z = z.clone()
    for atom in (4, 16):  # the rows whose dihedrals are φ and ψ
        z[:, ic.dihedral_index(atom)] = (2 * torch.rand(n, generator=gen) - 1) * math.pi
    x, _ = ic.to_cartesian(z)
    x = x + 0.01 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    return random_rigid(x, gen)


def test_layout_and_chemistry(ic, aldp):
    assert ic.n_atoms == 22 and ic.dim == 60
    assert ic.bond_idx.tolist() == list(range(21))
    assert ic.angle_idx.tolist() == list(range(21, 41))
    assert ic.dihedral_idx.tolist() == list(range(41, 60))
    assert ic.rows == [tuple(r) for r in ALDP_Z_MATRIX] and len(ic.rows) == 19
    assert ic.reference_atoms == (6, 8, 14)
    bonds = {frozenset((b[0].index, b[1].index)) for b in aldp.topology.bonds()}
    # every bond coordinate is a chemical bond, every angle spans two bonds
    assert {frozenset(p) for p in ic.bond_atoms.tolist()} == bonds
    for i, j, k in ic.angle_atoms.tolist():
        assert frozenset((i, j)) in bonds and frozenset((j, k)) in bonds
    # dihedrals: i-j-k bonded, and l bonded to k (proper) or to j (branch at CA)
    improper = []
    for i, j, k, ll in ic.dihedral_atoms.tolist():
        assert frozenset((k, ll)) in bonds or frozenset((j, ll)) in bonds
        if frozenset((k, ll)) not in bonds:
            improper.append(i)
    assert improper == [10, 9]  # CB and HA, placed by X-CA-N-C
    assert ic.bond_index(8) == 0 and ic.bond_index(14) == 1 and ic.angle_index(14) == 21
    assert ic.dihedral_index(4) == 41 and ic.dihedral_index(16) == 42
    with pytest.raises(KeyError):
        ic.dihedral_index(6)


def test_invalid_z_matrix_and_shapes(ic):
    with pytest.raises(ValueError, match="not yet placed"):
        InternalCoordinates([(3, 0, 1, 4), (4, 0, 1, 2)], (0, 1, 2))
    with pytest.raises(ValueError, match="each once"):
        InternalCoordinates([(5, 0, 1, 2)], (0, 1, 2))
    with pytest.raises(ValueError, match="shape"):
        ic.to_internal(torch.zeros(2, 22, 3))
    with pytest.raises(ValueError, match="shape"):
        ic.to_cartesian(torch.zeros(2, 59))


def test_canonical_frame(ic, x0, gen):
    x, _ = ic.to_cartesian(ic.to_internal(random_rigid(x0, gen))[0])
    p = positions(x)[0]
    assert torch.equal(p[6], torch.zeros(3))
    assert p[8, 0] > 0 and p[8, 1] == 0 and p[8, 2] == 0
    assert p[14, 1] > 0 and p[14, 2] == 0
    assert (
        abs(float(p[8, 0]) - float(torch.linalg.norm(positions(x0)[0, 8] - positions(x0)[0, 6])))
        < 1e-14
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cartesian_round_trip(ic, x0, gen, dtype):
    x = random_rigid(structures(x0, 16, gen), gen).to(dtype)
    z, log_det = ic.to_internal(x)
    x_back, log_det_back = ic.to_cartesian(z)
    assert z.dtype == dtype and x_back.dtype == dtype
    assert torch.isfinite(x_back).all()
    for a, b in zip(positions(x).double().numpy(), positions(x_back).double().numpy()):
        assert kabsch_max_deviation(a, b) < 1e-5  # nm, proper rotation only
    assert torch.allclose(log_det, -log_det_back)


def test_internal_round_trip(ic, x0, gen):
    z, _ = ic.to_internal(structures(x0, 16, gen))
    z2, _ = ic.to_internal(ic.to_cartesian(z)[0])
    assert torch.allclose(z2[:, :41], z[:, :41], atol=1e-8, rtol=0)
    assert wrapped(z2[:, 41:] - z[:, 41:]).abs().max() < 1e-8
    # random z in the support (bonds, angles, dihedrals drawn wide) round-trips too
    zr = z.clone()
    zr[:, ic.angle_idx] = 0.3 + (math.pi - 0.6) * torch.rand(16, 20, generator=gen)
    zr[:, ic.dihedral_idx] = (2 * torch.rand(16, 19, generator=gen) - 1) * math.pi
    z3, _ = ic.to_internal(ic.to_cartesian(zr)[0])
    assert torch.allclose(z3[:, :41], zr[:, :41], atol=1e-8, rtol=0)
    assert wrapped(z3[:, 41:] - zr[:, 41:]).abs().max() < 1e-8


def test_phi_psi_match_mdtraj(ic, x0, aldp, gen):
    x = varied_conformations(ic, x0, 32, gen)
    traj = mdtraj.Trajectory(positions(x).numpy(), mdtraj.Topology.from_openmm(aldp.topology))
    phi_idx, phi_md = mdtraj.compute_phi(traj)
    psi_idx, psi_md = mdtraj.compute_psi(traj)
    assert phi_idx.tolist() == [[4, 6, 8, 14]] and psi_idx.tolist() == [[6, 8, 14, 16]]
    ref = torch.tensor(np.concatenate([phi_md, psi_md], axis=1), dtype=torch.float64)
    # mdtraj works in float32: agreement to ~1e-6 rad
    assert wrapped(phi_psi(x) - ref).abs().max() < 1e-5
    z, _ = ic.to_internal(x)
    from_z = z[:, [ic.dihedral_index(4), ic.dihedral_index(16)]]  # zero offset
    assert wrapped(from_z - ref).abs().max() < 1e-5
    assert float(ref[:, 0].std()) > 1.0  # the conformations really span the torus


def rigid_map(ic, z0, t0, angles0):
    """The square map (z, t, α, β, γ) → x = R(α, β, γ) x(z) + t, as a function of 66 numbers."""

    def f(v):
        x, _ = ic.to_cartesian(v[None, :60])
        return (positions(x)[0] @ rotation_zyz(v[63:]).T + v[60:63]).reshape(66)

    return f, torch.cat([z0, t0, angles0])


def test_log_det_matches_autograd_jacobian(ic, x0, gen):
    z, _ = ic.to_internal(varied_conformations(ic, x0, 4, gen))
    for zi in z:
        t0 = torch.randn(3, generator=gen)
        angles = torch.tensor([2 * math.pi, 2.4, 2 * math.pi]) * torch.rand(3, generator=gen)
        angles[1] += 0.35  # β in (0.35, 2.75), away from the Euler singularity
        f, v = rigid_map(ic, zi, t0, angles)
        jac = torch.autograd.functional.jacobian(f, v)
        sign, logabs = torch.linalg.slogdet(jac)
        _, log_det = ic.to_cartesian(zi[None])
        expected = float(log_det[0]) + math.log(math.sin(float(angles[1])))
        assert float(sign) != 0 and abs(float(logabs) - expected) < 1e-8
    # and the closed form, term by term, on the shipped structure
    z0, neg = ic.to_internal(x0)
    by_hand = sum(2 * math.log(float(z0[0, i])) for i in range(21))
    by_hand += sum(math.log(math.sin(float(z0[0, i]))) for i in range(21, 41))
    assert abs(float(-neg[0]) - by_hand) < 1e-10


def test_to_cartesian_gradcheck(ic, x0):
    z, _ = ic.to_internal(x0)
    z = z.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: ic.to_cartesian(v), (z,))


def test_chirality_and_mirror(ic, x0, gen):
    x = random_rigid(structures(x0, 8, gen), gen)
    zeta = chirality(x)
    assert abs(math.degrees(float(zeta[0])) - 35.34) < 0.05  # shipped structure, L-alanine
    assert (torch.rad2deg(zeta) > 10).all() and is_l_form(x).all()  # noise moves ζ by ~10°
    mirror = -x
    assert torch.allclose(chirality(mirror), -zeta, atol=1e-12)
    assert not is_l_form(mirror).any()
    z, log_det = ic.to_internal(x)
    zm, log_det_m = ic.to_internal(mirror)
    assert torch.allclose(zm[:, :41], z[:, :41], atol=1e-12)
    assert wrapped(zm[:, 41:] + z[:, 41:]).abs().max() < 1e-12
    assert torch.allclose(log_det_m, log_det)
    # a structure rebuilt from the mirror's z is D again (no reflection hidden in the frame)
    assert not is_l_form(ic.to_cartesian(zm)[0]).any()


def test_in_support(ic, x0, gen):
    z, _ = ic.to_internal(structures(x0, 4, gen))
    assert ic.in_support(z).all()
    bad = []
    for idx, value in [
        (ic.bond_idx[3], 0.0),
        (ic.bond_idx[0], -0.1),
        (ic.angle_idx[2], 0.0),
        (ic.angle_idx[5], math.pi),
        (ic.angle_idx[0], 4.0),
        (ic.dihedral_idx[7], -math.pi),
        (ic.dihedral_idx[0], 3.2),
        (ic.dihedral_idx[1], math.nan),
    ]:
        zb = z[:1].clone()
        zb[0, idx] = value
        bad.append(zb)
    assert not ic.in_support(torch.cat(bad)).any()
    edge = z[:1].clone()
    edge[0, ic.dihedral_idx] = math.pi  # π is inside (−π, π]
    assert ic.in_support(edge).all()


def test_collinear_atoms_are_finite(ic, x0):
    """A straight angle (θ = π) in x or z gives finite outputs and finite gradients."""
    p = positions(x0.clone())[0]
    # put H (7) on the line C(ACE)-N extended: the H-N-C angle is π, its dihedral undefined
    p[7] = p[6] + 0.1 * (p[6] - p[4]) / torch.linalg.norm(p[6] - p[4])
    x = p.reshape(1, 66).requires_grad_(True)
    z, log_det = ic.to_internal(x)
    assert torch.isfinite(z).all()
    (g,) = torch.autograd.grad(z.sum(), x)
    assert torch.isfinite(g).all()
    z2 = z.detach().clone()
    z2[0, ic.angle_index(5)] = math.pi  # O-C-N straight: O's dependant H (7) has a degenerate frame
    z2.requires_grad_(True)
    xb, _ = ic.to_cartesian(z2)
    (g2,) = torch.autograd.grad(xb.sum(), z2)
    assert torch.isfinite(xb).all() and torch.isfinite(g2).all()
