"""Metrics of particle systems, the φ⁴ lattice and alanine dipeptide, against exact values.

Stand-in targets expose the same hooks as the real ones (``pair_distances``,
``field``, ``positions`` + ``mdtraj_topology``); the real targets are used where
they are cheap. Alanine dipeptide conformations with known (φ, ψ) are made by
rigidly rotating the atoms on one side of a bond of the shipped structure.
Seeded, float64.
"""

from __future__ import annotations

import math

import mdtraj
import numpy as np
import ot
import pytest
import torch

from boltzbench.core import SampleSet
from boltzbench.md.system import build_system
from boltzbench.metrics import METRICS, evaluate, metric_docs
from boltzbench.metrics.lattice import (
    connected_two_point,
    magnetization_w1,
    susceptibility,
    susceptibility_error,
)
from boltzbench.metrics.particles import (
    distance_tv,
    distance_w2,
    energy_w2,
    histogram_tv,
    wasserstein_1d,
)
from boltzbench.metrics.torsions import (
    PSEUDO_COUNT,
    RAMACHANDRAN_BINS,
    TORSION_BINS,
    angle_histogram,
    js_divergence,
    kl_divergence,
    ramachandran_js,
    ramachandran_kl,
    smooth,
    torsion_indices,
    torsion_kl_other,
    torsion_kl_phi,
    torsion_kl_psi,
    torus_w2,
    torus_wasserstein2,
    with_outside,
    wrong_chirality,
)
from boltzbench.targets import CountingTarget, Target
from boltzbench.targets.analytic import GMM
from boltzbench.targets.gaussian import Gaussian

PARTICLE_METRICS = {"distance_tv", "distance_w2"}
LATTICE_METRICS = {"magnetization_w1", "susceptibility_error"}
ALDP_METRICS = {
    "ramachandran_kl",
    "ramachandran_js",
    "torsion_kl_phi",
    "torsion_kl_psi",
    "torsion_kl_other",
    "torus_w2",
    "wrong_chirality",
}
NEW_METRICS = {"energy_w2"} | PARTICLE_METRICS | LATTICE_METRICS | ALDP_METRICS


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=torch.float64)


# ------------------------------------------------------------ stand-in targets
class Particles(Target):
    """N particles in d dimensions, x = flattened Cartesian positions (not CoM-free)."""

    def __init__(self, n_particles: int = 4, spatial_dim: int = 2):
        super().__init__()
        self.n_particles, self.spatial_dim = n_particles, spatial_dim
        self.dim = n_particles * spatial_dim

    def positions(self, x: torch.Tensor) -> torch.Tensor:
        p = x.reshape(x.shape[0], self.n_particles, self.spatial_dim)
        return p - p.mean(dim=1, keepdim=True)

    def pair_distances(self, x: torch.Tensor) -> torch.Tensor:
        i, j = torch.triu_indices(self.n_particles, self.n_particles, 1)
        p = self.positions(x)
        return (p[:, i] - p[:, j]).norm(dim=-1)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.pow(2).sum(-1)


class Lattice(Target):
    """An L×L field, x = the flattened field."""

    def __init__(self, L: int = 4):
        super().__init__()
        self.lattice_shape, self.dim = (L, L), L * L

    def field(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.lattice_shape)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.pow(2).sum(-1)


class Dipeptide(Target):
    """Alanine dipeptide geometry only: x = the 22 positions in nm, flattened."""

    dim = 66

    def __init__(self):
        super().__init__()
        self.mdtraj_topology = mdtraj.Topology.from_openmm(build_system("vacuum").topology)

    def positions(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 22, 3)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return x.pow(2).sum(-1)


SHIPPED = torch.from_numpy(build_system("vacuum").positions_nm)  # (22, 3) nm
DIPEPTIDE = Dipeptide()

# atoms rotated to change a torsion: the side of the bond away from the other end
PHI_BOND, PHI_SIDE = (6, 8), [0, 1, 2, 3, 4, 5, 7]  # about N-CA: ACE and H(N)
PSI_BOND, PSI_SIDE = (8, 14), [15, 16, 17, 18, 19, 20, 21]  # about CA-C: O and NME
METHYL_BOND, METHYL_SIDE = (8, 10), [11, 12, 13]  # about CA-CB: HB1-3


def rotate(pos: torch.Tensor, bond: tuple[int, int], atoms: list[int], angle: float):
    """``pos`` (22, 3) with ``atoms`` rotated by ``angle`` about the bond axis (Rodrigues)."""
    origin = pos[bond[0]]
    k = (pos[bond[1]] - origin) / (pos[bond[1]] - origin).norm()
    v = pos[atoms] - origin
    c, s = math.cos(angle), math.sin(angle)
    rotated = v * c + torch.cross(k.expand_as(v), v, dim=-1) * s + k * (v @ k)[:, None] * (1 - c)
    out = pos.clone()
    out[atoms] = rotated + origin
    return out


def conformation(d_phi: float = 0.0, d_psi: float = 0.0, d_methyl: float = 0.0) -> torch.Tensor:
    """The shipped structure with φ, ψ and the ALA methyl torsion turned, flat (66,)."""
    pos = rotate(SHIPPED, PHI_BOND, PHI_SIDE, d_phi)
    pos = rotate(pos, PSI_BOND, PSI_SIDE, d_psi)
    return rotate(pos, METHYL_BOND, METHYL_SIDE, d_methyl).reshape(66)


def conformations(shifts: list[tuple[float, float, float]]) -> torch.Tensor:
    return torch.stack([conformation(*s) for s in shifts])


def mdtraj_torsions(x: torch.Tensor, quadruples: list[list[int]]) -> np.ndarray:
    """Dihedrals (n, k) straight from mdtraj, for cross-checks."""
    traj = mdtraj.Trajectory(x.reshape(-1, 22, 3).numpy(), DIPEPTIDE.mdtraj_topology)
    return mdtraj.compute_dihedrals(traj, quadruples, periodic=False).astype(np.float64)


def call(fn, x, ref_x, target, energy=None, ref_energy=None, **kwargs) -> float:
    """A ``"sample"`` metric with the fixed argument order."""
    return fn(x, energy, ref_x, ref_energy, target, gen(), **kwargs)


# ------------------------------------------------------------------ 1-D W_p
def test_wasserstein_1d_unequal_sizes_by_hand():
    # u = {0, 1}, v = {0, 1, 2}: quantiles differ by 1 on (1/3, 1/2] and (2/3, 1]
    u, v = torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0, 1.0])
    assert wasserstein_1d(u, v, p=1) == pytest.approx(0.5, abs=1e-15)
    assert wasserstein_1d(u, v, p=2) == pytest.approx(math.sqrt(0.5), abs=1e-15)


@pytest.mark.parametrize("n, m", [(37, 100), (2000, 1999), (50, 50)])
def test_wasserstein_1d_matches_pot(n, m):
    u, v = randn(n, seed=1), 2 * randn(m, seed=2) + 1
    expected = math.sqrt(ot.wasserstein_1d(u.numpy(), v.numpy(), p=2))
    assert wasserstein_1d(u, v, p=2) == pytest.approx(expected, rel=1e-10)


def test_energy_w2_of_shifted_energies_is_the_shift():
    e = randn(500, seed=3)
    assert call(energy_w2, None, None, None, e, e + 0.7) == pytest.approx(0.7, abs=1e-12)


def test_energy_w2_two_gaussians_closed_form():
    # W2(N(1, 2²), N(-0.5, 1²)) = sqrt(1.5² + 1²) ≈ 1.803. At n = 20000 the sample
    # means and sds differ from the truth by sd ≈ 0.016 and 0.011: ±0.06 is > 3σ.
    e, e_ref = 2 * randn(20_000, seed=4) + 1, randn(20_000, seed=5) - 0.5
    value = call(energy_w2, None, None, None, e, e_ref)
    assert value == pytest.approx(math.sqrt(1.5**2 + 1.0), abs=0.06)


# ----------------------------------------------------------------- particles
def test_histogram_tv_by_hand_and_disjoint():
    # range [0, 1], 200 bins: u puts ½ in the first and ½ in the last bin, v all in the first
    assert histogram_tv(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0])) == 0.5
    assert histogram_tv(torch.rand(100) + 1, torch.rand(300) + 3) == 1.0
    assert histogram_tv(torch.full((5,), 2.0), torch.full((3,), 2.0)) == 0.0


def test_distance_metrics_zero_for_identical_sets():
    target, x = Particles(5, 3), randn(300, 15, seed=6)
    assert call(distance_tv, x, x, target) == 0.0
    assert call(distance_w2, x, x, target) == 0.0


def test_distance_w2_of_two_particles_with_a_known_shift():
    # two particles on the x axis at separation r_i; separation r_i + s → W2 = s
    target = Particles(2, 3)
    r = 1 + torch.rand(400, generator=gen(7), dtype=torch.float64)

    def dimers(sep):
        x = torch.zeros(sep.shape[0], 6, dtype=torch.float64)
        x[:, 3] = sep
        return x

    assert call(distance_w2, dimers(r + 0.25), dimers(r), target) == pytest.approx(0.25, abs=1e-12)


def test_distance_w2_of_scaled_clusters_is_exact():
    # scaling every configuration by a scales every distance by a, keeping the sorted
    # order: W2 = |a - 1| sqrt(mean r²) over the pooled distances
    target, x, a = Particles(4, 2), randn(300, 8, seed=8), 1.3
    d = target.pair_distances(x).reshape(-1)
    expected = (a - 1) * math.sqrt(float(d.pow(2).mean()))
    assert call(distance_w2, a * x, x, target) == pytest.approx(expected, rel=1e-12)


def test_distance_tv_of_separated_clusters_is_one():
    target = Particles(3, 2)
    x = 0.01 * randn(100, 6, seed=9)  # all distances < 0.1
    assert call(distance_tv, 100 * x, x, target) > 0.9
    tight = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.5, 0.0]])  # distances 1, 0.5, 0.5
    wide = 4 * tight  # distances 4, 2, 2
    assert call(distance_tv, wide, tight, target) == pytest.approx(1.0, abs=1e-15)


def test_distance_metrics_on_the_real_particle_target():
    particles = pytest.importorskip("boltzbench.targets.particles", reason="particle targets")
    target = particles.DoubleWell4()
    x = randn(200, target.dim, seed=10)
    # the chart is an isometry, so a scaled set scales distances: W2 exact as above
    d = target.pair_distances(x).reshape(-1)
    expected = 0.5 * math.sqrt(float(d.pow(2).mean()))
    assert call(distance_w2, 1.5 * x, x, target) == pytest.approx(expected, rel=1e-12)
    assert call(distance_tv, x, x, target) == 0.0


# ------------------------------------------------------------------- lattice
def test_magnetization_w1_of_shifted_fields_is_the_shift():
    target, x = Lattice(4), randn(500, 16, seed=11)
    assert call(magnetization_w1, x + 0.3, x, target) == pytest.approx(0.3, abs=1e-12)


def test_magnetization_w1_sees_a_collapsed_z2_mode():
    # reference: half the configurations at φ ≡ -m, half at +m; samples all at +m
    target, m = Lattice(3), 0.8
    ref = torch.cat([torch.full((50, 9), -m), torch.full((50, 9), m)])
    assert call(magnetization_w1, torch.full((100, 9), m), ref, target) == pytest.approx(m)
    assert call(magnetization_w1, -ref, ref, target) == 0.0


def test_two_point_function_by_explicit_shifts():
    # G_c(x) = (1/V) Σ_y [⟨φ(y)φ(y+x)⟩ - ⟨φ(y)⟩⟨φ(y+x)⟩] with torch.roll, no FFT
    phi = randn(64, 4, 5, seed=12) + 0.2 * randn(1, 4, 5, seed=13)
    mean = phi.mean(0)
    expected = torch.empty(4, 5, dtype=torch.float64)
    for a in range(4):
        for b in range(5):
            shifted = torch.roll(phi, shifts=(-a, -b), dims=(1, 2))  # φ(y + x)
            cov = (phi * shifted).mean(0) - mean * torch.roll(mean, (-a, -b), (0, 1))
            expected[a, b] = cov.mean()
    assert torch.allclose(connected_two_point(phi), expected, atol=1e-13)
    assert susceptibility(phi) == pytest.approx(float(expected.sum()), rel=1e-10)


def test_susceptibility_of_iid_fields_is_the_variance():
    # φ(x) i.i.d. N(0, σ²): χ₂ = V Var(M) = σ² (times (n-1)/n for the 1/n estimator);
    # the estimator's sd is σ² sqrt(2/(n-1)) ≈ 0.05 at n = 4000, σ² = 2.25: ±0.2 is 4σ
    sigma, n = 1.5, 4000
    phi = sigma * randn(n, 6, 6, seed=14)
    assert susceptibility(phi) == pytest.approx(sigma**2 * (n - 1) / n, abs=0.2)


def test_susceptibility_error_of_a_scaled_field_is_exact():
    # φ → aφ scales χ₂ by a², so the relative error is |a² - 1|
    target, x, a = Lattice(4), randn(300, 16, seed=15) + 0.5, 1.7
    assert call(susceptibility_error, a * x, x, target) == pytest.approx(a * a - 1, rel=1e-12)
    assert call(susceptibility_error, x, x, target) == 0.0


def test_susceptibility_of_the_free_field_target():
    # free field (λ = 0): φ ~ N(0, (2A)⁻¹) with A1 = m² 1, so χ₂ = 1ᵀ(2A)⁻¹1 / V = 1/(2m²)
    lattice = pytest.importorskip("boltzbench.targets.lattice", reason="the Phi4 target")
    target, n = lattice.Phi4(L=6, m2=0.5, lam=0.0), 4000
    phi = target.field(target.sample(n, gen(16)))
    # the estimator's sd is χ₂ sqrt(2/(n-1)) ≈ 0.022 at χ₂ = 1: ±0.09 is 4σ
    assert susceptibility(phi) == pytest.approx(1.0, abs=0.09)


# --------------------------------------------------------- alanine dipeptide
def test_torsion_quadruples_are_mdtrajs():
    top = DIPEPTIDE.mdtraj_topology
    traj = mdtraj.Trajectory(SHIPPED.numpy()[None], top)
    idx = torsion_indices(top, ("phi", "psi"))
    assert idx.tolist() == [mdtraj.compute_phi(traj)[0][0].tolist()] + [
        mdtraj.compute_psi(traj)[0][0].tolist()
    ]
    other = ("omega_1", "omega_2", "methyl_ace", "methyl_ala", "methyl_nme")
    assert torsion_indices(top, other).tolist() == [
        [1, 4, 6, 8],
        [8, 14, 16, 18],
        [0, 1, 4, 6],
        [6, 8, 10, 11],
        [14, 16, 18, 19],
    ]


def test_rotation_helper_turns_phi_and_psi_only():
    x = conformations([(0.0, 0.0, 0.0), (0.4, -0.3, 0.0)])
    t = mdtraj_torsions(x, [[4, 6, 8, 14], [6, 8, 14, 16]])
    delta = np.angle(np.exp(1j * (t[1] - t[0])))  # wrapped differences
    assert np.allclose(np.abs(delta), [0.4, 0.3], atol=1e-5)


def test_kl_and_js_by_hand():
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.75, 0.0])
    assert kl_divergence(p, q) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))
    assert kl_divergence(p, np.array([1.0, 0.0, 0.0])) == math.inf
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(math.log(2))
    s = smooth(np.array([1.0, 0.0, 0.0, 0.0]), eps=0.1)
    assert np.allclose(s, np.array([1.1, 0.1, 0.1, 0.1]) / 1.4) and s.sum() == pytest.approx(1)


def test_angle_histogram_bins_and_wraps():
    # 4 bins of π/2 over [-π, π): π wraps to -π (bin 0); -π/4 is in bin 1; 3 in bin 3
    h = angle_histogram(np.array([math.pi, -math.pi, -math.pi / 4, 3.0]), bins=4)
    assert h.tolist() == [0.5, 0.25, 0.0, 0.25]
    h2 = angle_histogram(np.array([[-3.0, 3.0], [0.1, -0.1]]), bins=2)  # row-major (φ, ψ)
    assert h2.tolist() == [0.0, 0.5, 0.5, 0.0]


RAMA_K = RAMACHANDRAN_BINS**2  # (φ, ψ) bins, without the outside bin


def _two_bin_kl(n_bins: int) -> float:
    """KL(ref ‖ samples): ref ½/½ in two bins, samples all in the first, ε-smoothed.

    ``n_bins`` angle bins plus the outside bin (empty on both sides) make K = n_bins + 1.
    """
    eps, z = PSEUDO_COUNT, 1 + (n_bins + 1) * PSEUDO_COUNT
    p_a = (0.5 + eps) / z
    return p_a * (math.log((0.5 + eps) / (1 + eps)) + math.log((0.5 + eps) / eps))


def test_torsion_kls_by_hand_and_direction():
    # ref: half the rows turned by 1 rad in φ (57°: another bin in every grid used)
    ref = conformations([(0.0, 0.0, 0.0)] * 10 + [(1.0, 0.0, 0.0)] * 10)
    x = conformations([(0.0, 0.0, 0.0)] * 20)
    assert call(ramachandran_kl, x, ref, DIPEPTIDE) == pytest.approx(_two_bin_kl(RAMA_K))
    assert call(torsion_kl_phi, x, ref, DIPEPTIDE) == pytest.approx(_two_bin_kl(TORSION_BINS))
    assert call(torsion_kl_psi, x, ref, DIPEPTIDE) == pytest.approx(0.0, abs=1e-15)
    assert call(torsion_kl_other, x, ref, DIPEPTIDE) == pytest.approx(0.0, abs=1e-15)
    # KL(ref ‖ samples), not the reverse: swapping the sets gives KL(1/0 ‖ ½/½) ≈ log 2
    eps, z = PSEUDO_COUNT, 1 + (RAMA_K + 1) * PSEUDO_COUNT
    reverse = (1 + eps) / z * math.log((1 + eps) / (0.5 + eps)) + eps / z * math.log(
        eps / (0.5 + eps)
    )
    assert call(ramachandran_kl, ref, x, DIPEPTIDE) == pytest.approx(reverse)
    assert reverse < 0.5 * _two_bin_kl(RAMA_K)
    # JS of histograms ½/½ vs 1/0: ½[½ log(1/(3/4)) ... ] computed by hand
    m = np.array([0.75, 0.25])
    js = 0.5 * kl_divergence(np.array([0.5, 0.5]), m) + 0.5 * kl_divergence(np.array([1, 0]), m)
    assert call(ramachandran_js, x, ref, DIPEPTIDE) == pytest.approx(js)


def test_torsion_kl_other_sees_the_methyl_rotor():
    # turning the ALA methyl moves one of the five averaged torsions to another bin
    ref = conformations([(0.0, 0.0, 0.0)] * 10 + [(0.0, 0.0, 1.0)] * 10)
    x = conformations([(0.0, 0.0, 0.0)] * 20)
    expected = _two_bin_kl(TORSION_BINS) / 5
    assert call(torsion_kl_other, x, ref, DIPEPTIDE) == pytest.approx(expected)
    assert call(ramachandran_kl, x, ref, DIPEPTIDE) == pytest.approx(0.0, abs=1e-15)


def _kl_outside(p: list[float], invalid: float, n_bins: int) -> float:
    """KL(ref ‖ samples) by hand: the samples are the ref's finite part scaled by
    (1 − invalid) plus ``invalid`` in the outside bin; ``p`` the ref's non-empty
    bins (the empty ones give ε log(ε/ε) = 0); K = n_bins + 1."""
    eps = PSEUDO_COUNT
    z = 1 + (n_bins + 1) * eps
    inside = sum((pk + eps) / z * math.log((pk + eps) / ((1 - invalid) * pk + eps)) for pk in p)
    return inside + eps / z * math.log(eps / (invalid + eps))


def test_invalid_rows_fill_the_outside_bin_by_hand():
    # the samples are the reference's rows (identical finite parts), and half the
    # sample set's rows were not finite: every in-support bin of the samples halves
    ref = conformations([(0.0, 0.0, 0.0)] * 10 + [(1.0, 0.0, 0.0)] * 10)
    kl = call(ramachandran_kl, ref, ref, DIPEPTIDE, invalid=0.5)
    assert kl == pytest.approx(_kl_outside([0.5, 0.5], 0.5, RAMA_K), rel=1e-12)
    # −log(1 − invalid) as ε → 0; the smoothing's 1/(1 + Kε) shrinks it by ~Kε
    assert kl == pytest.approx(math.log(2), rel=2 * (RAMA_K + 1) * PSEUDO_COUNT + 1e-4)
    phi = call(torsion_kl_phi, ref, ref, DIPEPTIDE, invalid=0.5)
    assert phi == pytest.approx(_kl_outside([0.5, 0.5], 0.5, TORSION_BINS), rel=1e-12)
    psi = call(torsion_kl_psi, ref, ref, DIPEPTIDE, invalid=0.5)  # ψ: one bin
    assert psi == pytest.approx(_kl_outside([1.0], 0.5, TORSION_BINS), rel=1e-12)
    other = call(torsion_kl_other, ref, ref, DIPEPTIDE, invalid=0.5)
    assert other == pytest.approx(_kl_outside([1.0], 0.5, TORSION_BINS), rel=1e-12)
    # JS without pseudo-count: p = (½, ½, 0), q = (¼, ¼, ½), m = (3/8, 3/8, ¼)
    js = 0.5 * math.log(4 / 3) + 0.5 * (0.5 * math.log(2 / 3) + 0.5 * math.log(2))
    got = call(ramachandran_js, ref, ref, DIPEPTIDE, invalid=0.5)
    assert got == pytest.approx(js, rel=1e-12)


def test_invalid_mass_raises_the_kl_and_keeps_it_finite():
    x = conformations([(0.3 * i, -0.2 * i, 0.0) for i in range(12)])
    ref = conformations([(0.3 * i + 0.1, -0.2 * i, 0.0) for i in range(12)])
    values = [call(ramachandran_kl, x, ref, DIPEPTIDE, invalid=f) for f in (0, 0.1, 0.5, 0.99)]
    assert all(math.isfinite(v) for v in values) and values == sorted(values)
    # no finite rows at all: all the sample mass is outside
    assert with_outside(np.zeros(4), 0.0).tolist() == [0, 0, 0, 0, 1.0]
    assert with_outside(np.array([0.5, 0.5]), 0.2).tolist() == [0.4, 0.4, 0.2]
    with pytest.raises(ValueError, match="invalid"):
        with_outside(np.array([1.0]), 1.5)


def test_histogram_metrics_count_invalid_rows():
    counting = {n for n in ALDP_METRICS if METRICS.build(n).counts_invalid}
    assert counting == ALDP_METRICS - {"torus_w2", "wrong_chirality"}
    for name in counting:
        assert "outside" in METRICS.build(name).doc


def test_ramachandran_metrics_zero_for_identical_sets():
    shifts = [(0.3 * i, -0.2 * i, 0.1 * i) for i in range(12)]
    x = conformations(shifts)
    for fn in (ramachandran_kl, ramachandran_js, torsion_kl_other, torus_w2):
        assert call(fn, x, x, DIPEPTIDE) == pytest.approx(0.0, abs=1e-12)
    # disjoint Ramachandran histograms: JS = log 2 exactly
    assert call(ramachandran_js, x[:1], conformations([(2.0, 2.0, 0.0)]), DIPEPTIDE) == (
        pytest.approx(math.log(2))
    )


def test_torus_w2_wraps_around():
    delta = 0.1
    a = np.array([[-math.pi + delta, 0.0]])
    b = np.array([[math.pi - delta, 0.0]])
    assert torus_wasserstein2(a, b) == pytest.approx(2 * delta, rel=1e-12)
    c = np.array([[math.pi - delta, math.pi - 0.05]])
    d = np.array([[-math.pi + delta, -math.pi + 0.05]])
    assert torus_wasserstein2(c, d) == pytest.approx(math.hypot(2 * delta, 0.1), rel=1e-12)


def test_torus_w2_of_a_global_shift_across_the_boundary():
    # a cluster of diameter < 1 shifted by v with |v_k| + 1 < π: the torus cost is the
    # Euclidean one of the lifted points, and W2(μ, μ + v) = ‖v‖ in Euclidean space
    rng = np.random.default_rng(17)
    a = np.array([math.pi - 0.2, -math.pi + 0.1]) + rng.uniform(-0.5, 0.5, size=(200, 2))
    v = np.array([0.8, -0.6])
    assert torus_wasserstein2(a, a + v) == pytest.approx(1.0, rel=1e-9)


def test_torus_w2_of_rotated_conformations():
    # shipped (φ, ψ) ≈ (-π, π) sit on the boundary; global shift of (0.8, -0.6) rad
    rng = np.random.default_rng(18)
    jitter = rng.uniform(-0.3, 0.3, size=(30, 2))
    x = conformations([(a, b, 0.0) for a, b in jitter])
    ref = conformations([(a + 0.8, b - 0.6, 0.0) for a, b in jitter])
    assert call(torus_w2, x, ref, DIPEPTIDE) == pytest.approx(1.0, abs=1e-5)  # float32 mdtraj


def test_wrong_chirality_shipped_mirror_and_mixed():
    mirror = SHIPPED * torch.tensor([1.0, 1.0, -1.0])
    zeta = [[8, 6, 14, 10]]  # ζ = dihedral(CA, N, C, CB): + for L (PROCHECK)
    assert mdtraj_torsions(SHIPPED, zeta)[0, 0] > 0 > mdtraj_torsions(mirror, zeta)[0, 0]
    x = torch.stack([SHIPPED.reshape(66)] * 7 + [mirror.reshape(66)] * 3)
    energy = torch.zeros(10)
    assert wrong_chirality(SampleSet(x=x[:7], energy=energy[:7]), DIPEPTIDE) == 0.0
    assert wrong_chirality(SampleSet(x=x[7:], energy=energy[7:]), DIPEPTIDE) == 1.0
    assert wrong_chirality(SampleSet(x=x, energy=energy), DIPEPTIDE) == pytest.approx(0.3)
    energy[0] = math.nan  # a dropped L row: 3 of the 9 finite rows are D
    assert wrong_chirality(SampleSet(x=x, energy=energy), DIPEPTIDE) == pytest.approx(1 / 3)


# ------------------------------------------------------------------ registry
def _applicable(target: Target) -> set[str]:
    return {n for n in NEW_METRICS if METRICS.build(n).applies(target)}


def test_every_new_metric_is_documented():
    docs = metric_docs()
    assert NEW_METRICS <= set(docs)
    for name in NEW_METRICS:
        assert len(METRICS.build(name).doc) > 80 and docs[name].endswith("Lower is better.")
    assert METRICS.build("wrong_chirality").kind == "sampleset"
    assert "CoM" in METRICS.build("w2").doc


def test_applies_selects_targets_by_hooks():
    assert _applicable(Gaussian(dim=2)) == _applicable(GMM()) == {"energy_w2"}
    assert _applicable(Particles()) == {"energy_w2"} | PARTICLE_METRICS
    assert _applicable(Lattice()) == {"energy_w2"} | LATTICE_METRICS
    assert _applicable(DIPEPTIDE) == {"energy_w2"} | ALDP_METRICS
    # counting wrappers forward the hooks
    assert _applicable(CountingTarget(Lattice())) == {"energy_w2"} | LATTICE_METRICS
    assert _applicable(CountingTarget(DIPEPTIDE)) == {"energy_w2"} | ALDP_METRICS


def test_applies_on_the_real_targets():
    particles = pytest.importorskip("boltzbench.targets.particles", reason="particle targets")
    lattice = pytest.importorskip("boltzbench.targets.lattice", reason="the Phi4 target")
    aldp = pytest.importorskip("boltzbench.targets.aldp", reason="the alanine dipeptide target")
    assert _applicable(particles.DoubleWell4()) == {"energy_w2"} | PARTICLE_METRICS
    assert _applicable(particles.LennardJones()) == {"energy_w2"} | PARTICLE_METRICS
    assert _applicable(lattice.Phi4()) == {"energy_w2"} | LATTICE_METRICS
    assert _applicable(aldp.AlanineDipeptide(solvent="vacuum")) == {"energy_w2"} | ALDP_METRICS


def test_evaluate_reports_lattice_metrics_raw_and_reweighted():
    target = Lattice(4)
    s = SampleSet(x=randn(300, 16, seed=19), energy=randn(300, seed=20))
    s.log_weight = 0.1 * randn(300, seed=21)
    ref = SampleSet(x=randn(300, 16, seed=22), energy=randn(300, seed=23))
    out = evaluate(s, target, ref, 200, gen())
    for name in ("energy_w2", *LATTICE_METRICS):
        assert type(out[name]) is float and math.isfinite(out[name])
        assert type(out[f"{name}_reweighted"]) is float
    assert not PARTICLE_METRICS & set(out) and not ALDP_METRICS & set(out)


def test_evaluate_reports_dipeptide_metrics():
    x = conformations([(0.1 * i, -0.1 * i, 0.2 * i) for i in range(20)])
    s = SampleSet(x=x, energy=DIPEPTIDE.energy(x))
    out = evaluate(s, DIPEPTIDE, s, 20, gen())
    assert out["wrong_chirality"] == 0.0
    for name in ALDP_METRICS - {"wrong_chirality"}:
        assert out[name] == pytest.approx(0.0, abs=1e-12)  # the same 20 rows on both sides


def _stand_in_set(target: Target, n: int, seed: int) -> SampleSet:
    """n rows for ``target``: random coordinates, or turned dipeptide conformations."""
    if target is DIPEPTIDE:
        rng = np.random.default_rng(seed)
        x = conformations([tuple(rng.uniform(-math.pi, math.pi, 3)) for _ in range(n)])
    else:
        x = randn(n, target.dim, seed=seed)
    return SampleSet(x=x, energy=target.energy(x))


@pytest.mark.parametrize("name", sorted(NEW_METRICS))
def test_new_metric_conformance(name):
    # the walk of test_metrics.py, with a target the metric applies to
    m = METRICS.build(name)
    assert m.name == name and m.better == "lower" and (m.fn.__doc__ or "").strip()
    target = next(t for t in (Gaussian(dim=2), Particles(), Lattice(), DIPEPTIDE) if m.applies(t))
    s, ref = _stand_in_set(target, 50, seed=24), _stand_in_set(target, 50, seed=25)
    if m.kind == "sample":
        value = m.fn(s.x, s.energy, ref.x, ref.energy, target, gen())
        assert value > 0  # two different sets
    else:
        value = m.fn(s, target)
    assert type(value) is float and math.isfinite(value)


@pytest.mark.parametrize("coordinates", ["cartesian", "internal"])
def test_dipeptide_metrics_on_the_real_target(coordinates):
    aldp = pytest.importorskip("boltzbench.targets.aldp", reason="the alanine dipeptide target")
    target = aldp.AlanineDipeptide(solvent="vacuum", coordinates=coordinates)
    mirror = SHIPPED * torch.tensor([-1.0, 1.0, 1.0])
    x = target.to_coordinates(torch.stack([SHIPPED] * 3 + [mirror]))
    assert wrong_chirality(SampleSet(x=x, energy=torch.zeros(4)), target) == pytest.approx(0.25)
    # a mirror image negates every torsion: (φ, ψ) ≈ (-π, π) maps to itself on the torus,
    # so the Ramachandran metrics cannot tell the mirror apart, but the methyl torsions can
    assert call(torus_w2, x[:1], x[3:], target) == pytest.approx(0.0, abs=1e-4)
    assert call(torsion_kl_other, x[:1], x[3:], target) > 1.0
