"""Particle targets DW-4, LJ-13, LJ-55: energies against direct double loops,
the pair convention, the centre-of-mass-free chart, pair minima and overlaps."""

import math

import numpy as np
import pytest
import torch

from boltzbench.targets import TARGETS, CountingTarget, DoubleWell4, LennardJones
from boltzbench.targets.particles import helmert_basis

SYSTEMS = {
    "dw4": lambda: DoubleWell4(),
    "lj13": lambda: LennardJones(n_particles=13),
    "lj55": lambda: LennardJones(n_particles=55),
}


def _dw_loop(pos: np.ndarray, a=0.9, b=-4.0, c=0.0, d0=4.0, tau=1.0) -> float:
    """Σ_{i<j} a (r-d0)^4 + b (r-d0)^2 + c by a plain double loop, / τ."""
    total = 0.0
    for i in range(len(pos)):
        for j in range(i + 1, len(pos)):
            r = math.dist(pos[i], pos[j])
            total += a * (r - d0) ** 4 + b * (r - d0) ** 2 + c
    return total / tau


def _lj_pairs_loop(pos: np.ndarray, eps=1.0, rm=1.0, ordered=False) -> float:
    """ε Σ ((rm/r)^12 - 2 (rm/r)^6) over i<j, or over all ordered pairs i≠j."""
    total = 0.0
    n = len(pos)
    for i in range(n):
        for j in range(n) if ordered else range(i + 1, n):
            if i != j:
                s = rm / math.dist(pos[i], pos[j])
                total += eps * (s**12 - 2 * s**6)
    return total


def _lj_loop(pos: np.ndarray, eps=1.0, rm=1.0, tether=0.5, tau=1.0, ordered=False) -> float:
    centre = pos.mean(axis=0)
    spring = sum(float(np.sum((p - centre) ** 2)) for p in pos)
    return (_lj_pairs_loop(pos, eps, rm, ordered) + tether * spring) / tau


def _random_positions(t, n, gen, scale):
    return scale * torch.randn(n, t.n_particles, t.spatial_dim, generator=gen) + 3.0


def _random_rotation(d, gen):
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen))
    return q * torch.sign(torch.diagonal(r))  # Haar; det ±1 (reflections also leave E)


# -- energies against direct loops --------------------------------------------------


@pytest.mark.parametrize(
    "name, loop, scale",
    [
        ("dw4", _dw_loop, 2.0),
        ("lj13", _lj_loop, 1.0),
        ("lj55", _lj_loop, 1.6),
    ],
)
def test_energy_matches_double_loop(name, loop, scale, gen):
    t = SYSTEMS[name]()
    pos = _random_positions(t, 3, gen, scale)  # not centred: the chart removes the CoM
    e = t.energy(t.coordinates(pos))
    expected = torch.tensor([loop(p.numpy()) for p in pos])
    assert torch.all(torch.isfinite(expected))
    assert torch.allclose(e, expected, rtol=1e-10, atol=0)


def test_nondefault_parameters_match_double_loop(gen):
    dw = DoubleWell4(a=0.5, b=-2.0, c=0.3, d0=3.0, tau=2.0)
    pos = _random_positions(dw, 2, gen, 2.0)
    exp = [_dw_loop(p.numpy(), 0.5, -2.0, 0.3, 3.0, 2.0) for p in pos]
    assert torch.allclose(dw.energy(dw.coordinates(pos)), torch.tensor(exp), rtol=1e-10)
    lj = LennardJones(n_particles=6, epsilon=2.0, r_m=1.3, tether=0.7, tau=1.5, spatial_dim=2)
    pos = _random_positions(lj, 2, gen, 1.5)
    exp = [_lj_loop(p.numpy(), 2.0, 1.3, 0.7, 1.5) for p in pos]
    assert torch.allclose(lj.energy(lj.coordinates(pos)), torch.tensor(exp), rtol=1e-10)


def test_lj_sums_unordered_pairs_once(gen):
    # two particles at r = r_m: pair -ε once, tether 0.5 · 2 · (r_m/2)² = 0.25
    t = LennardJones(n_particles=2)
    x = t.coordinates(torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]]))
    assert float(t.energy(x)) == pytest.approx(-0.75, abs=1e-14)  # ordered pairs: -1.75
    # a random LJ-13 configuration: the i<j loop, not the ordered-pair loop
    t = LennardJones(n_particles=13)
    pos = _random_positions(t, 1, gen, 1.0)
    e = float(t.energy(t.coordinates(pos)))
    p = pos[0].numpy()
    ij, ordered = _lj_loop(p), _lj_loop(p, ordered=True)
    assert e == pytest.approx(ij, rel=1e-10)
    assert abs(ordered - ij) == pytest.approx(abs(_lj_pairs_loop(p)), rel=1e-10)
    assert abs(e - ordered) > 1e-3 * abs(e)


def test_dw4_pair_terms_sum_unordered_pairs_once():
    # a unit square of side 4 = d0: four sides at (r-d0) = 0, two diagonals at 4√2
    t = DoubleWell4()
    x = t.coordinates(torch.tensor([[[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]]]))
    u = 4 * math.sqrt(2) - 4
    expected = 2 * (0.9 * u**4 - 4 * u**2)
    assert float(t.energy(x)) == pytest.approx(expected, rel=1e-12)


def test_lj_tether_is_squared_norm_of_chart_coordinates(gen):
    t = LennardJones(n_particles=13)
    x = torch.randn(5, t.dim, generator=gen)
    assert torch.allclose(t.one_body_energy(t.positions(x)), 0.5 * (x**2).sum(-1), rtol=1e-12)


def test_two_particle_lj_force_matches_closed_form():
    # E(r) = ε((r_m/r)^12 - 2(r_m/r)^6) + tether·r²/2 for two particles at distance r;
    # with N = 2, d = 1 the chart coordinate is x = -r/√2, so dE/dx = -√2 dE/dr
    eps, rm, tether = 1.7, 1.2, 0.5
    t = LennardJones(n_particles=2, epsilon=eps, r_m=rm, tether=tether, spatial_dim=1)
    r = torch.tensor([0.9, 1.2, 1.5, 2.5])
    x = t.coordinates(torch.stack([torch.zeros_like(r), r], dim=1)[:, :, None])
    assert torch.allclose(x[:, 0], -r / math.sqrt(2), rtol=1e-14)
    e, g = t.energy_and_grad(x)
    de_dr = eps * (-12 * rm**12 / r**13 + 12 * rm**6 / r**7) + tether * r
    assert torch.allclose(e, eps * ((rm / r) ** 12 - 2 * (rm / r) ** 6) + tether * r**2 / 2)
    assert torch.allclose(g[:, 0], -math.sqrt(2) * de_dr, rtol=1e-12)


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_gradient_matches_finite_differences(name, gen):
    t = SYSTEMS[name]()
    x = t.coordinates(_random_positions(t, 3, gen, 1.6 if name != "dw4" else 2.0))
    _, grad = t.energy_and_grad(x)
    h = 1e-5
    for d in range(0, t.dim, max(1, t.dim // 8)):
        e = torch.zeros(t.dim)
        e[d] = h
        fd = (t.energy(x + e) - t.energy(x - e)) / (2 * h)
        scale = 1 + t.energy(x).abs()  # central differences lose |E|·1e-16/h to rounding
        assert torch.all((grad[:, d] - fd).abs() < 1e-6 * scale)


# -- the centre-of-mass-free chart --------------------------------------------------


@pytest.mark.parametrize("n", [2, 4, 13, 55])
def test_helmert_basis_is_orthonormal_and_sum_free(n):
    q = helmert_basis(n)
    assert q.shape == (n, n - 1)
    assert torch.allclose(q.T @ q, torch.eye(n - 1), atol=1e-14)
    assert torch.allclose(q.sum(0), torch.zeros(n - 1), atol=1e-14)
    # Q Qᵀ is the projector I - 11ᵀ/n onto the centroid-free subspace
    assert torch.allclose(q @ q.T, torch.eye(n) - torch.full((n, n), 1 / n), atol=1e-14)


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_chart_round_trips_and_preserves_distances(name, gen):
    t = SYSTEMS[name]()
    assert t.dim == (t.n_particles - 1) * t.spatial_dim and t.translation_invariant
    pos = _random_positions(t, 4, gen, 1.5)
    x = t.coordinates(pos)
    assert x.shape == (4, t.dim)
    centred = pos - pos.mean(dim=1, keepdim=True)
    assert torch.allclose(t.positions(x), centred, atol=1e-12)
    assert torch.allclose(t.positions(x).mean(dim=1), torch.zeros(4, t.spatial_dim), atol=1e-13)
    y = torch.randn(4, t.dim, generator=gen)
    assert torch.allclose(t.coordinates(t.positions(y)), y, atol=1e-13)
    # the O(N) chart is the dense Helmert matrix: P = Q Z and Z = Qᵀ (P - p̄)
    q = helmert_basis(t.n_particles)
    z = y.reshape(4, t.n_particles - 1, t.spatial_dim)
    assert torch.allclose(t.positions(y), q @ z, atol=1e-13)
    assert torch.allclose(x, (q.T @ centred).reshape(4, t.dim), atol=1e-12)
    # isometry: pair distances by hand, and ‖x‖² = Σ_i ‖p_i - p̄‖²
    i, j = torch.triu_indices(t.n_particles, t.n_particles, 1)
    d = (pos[:, i] - pos[:, j]).norm(dim=-1)
    assert t.pair_distances(x).shape == (4, t.n_particles * (t.n_particles - 1) // 2)
    assert torch.allclose(t.pair_distances(x), d, rtol=1e-12)
    assert torch.allclose((x**2).sum(-1), (centred**2).sum(dim=(1, 2)), rtol=1e-12)


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_energy_invariant_under_rigid_motions_and_permutations(name, gen):
    t = SYSTEMS[name]()
    pos = _random_positions(t, 3, gen, 1.5)
    e = t.energy(t.coordinates(pos))
    rot = _random_rotation(t.spatial_dim, gen)
    shift = torch.randn(1, 1, t.spatial_dim, generator=gen) * 10
    perm = torch.randperm(t.n_particles, generator=gen)
    for moved in (pos + shift, pos @ rot.T, (pos @ rot.T + shift)[:, perm]):
        assert torch.allclose(t.energy(t.coordinates(moved)), e, rtol=1e-10)


def test_com_treatment_is_documented():
    for make in SYSTEMS.values():
        t = make()
        assert "centre-of-mass-free" in t.com_treatment and "Helmert" in t.com_treatment


# -- pair minima --------------------------------------------------------------------


@pytest.mark.parametrize("a, b, d0", [(0.9, -4.0, 4.0), (0.5, -3.0, 2.5)])
def test_dw_pair_minima_closed_form(a, b, d0):
    t = DoubleWell4(a=a, b=b, c=0.2, d0=d0)
    r = torch.linspace(0.0, 2 * d0 + 2, 2_000_001)
    u = t.pair_potential(r)
    w = math.sqrt(-b / (2 * a))
    lo, hi = r < d0, r >= d0
    for side, r_min in ((lo, d0 - w), (hi, d0 + w)):
        k = int(torch.argmin(u[side]))
        assert abs(float(r[side][k]) - r_min) < 1e-5
        # value at the minimum: c - b²/(4a)
        assert float(u[side][k]) == pytest.approx(0.2 - b**2 / (4 * a), abs=1e-9)


@pytest.mark.parametrize("eps, rm", [(1.0, 1.0), (2.5, 1.3)])
def test_lj_pair_minimum_at_r_m(eps, rm):
    t = LennardJones(epsilon=eps, r_m=rm)
    r = torch.linspace(0.8 * rm, 3 * rm, 2_000_001)
    u = t.pair_potential(r)
    k = int(torch.argmin(u))
    assert abs(float(r[k]) - rm) < 1e-5
    assert float(t.pair_potential(torch.tensor(rm))) == pytest.approx(-eps, rel=1e-14)
    # u(σ) = 0 at σ = r_m / 2^{1/6}
    assert abs(float(t.pair_potential(torch.tensor(rm / 2 ** (1 / 6))))) < 1e-12


# -- overlaps -----------------------------------------------------------------------


def _energy_and_grad_rows(t, x):
    xr = x.clone().requires_grad_(True)
    e = t.energy(xr)
    (g,) = torch.autograd.grad(e.sum(), xr)
    return e.detach(), g


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_overlap_row_is_inf_and_does_not_poison_the_batch(name, gen):
    t = SYSTEMS[name]()
    pos = _random_positions(t, 4, gen, 1.5)
    pos[2, 1] = pos[2, 0]  # particles 0 and 1 coincide in row 2
    x = t.coordinates(pos)
    e, g = _energy_and_grad_rows(t, x)
    assert e[2] == math.inf
    assert torch.isfinite(g).all()  # the overlapping row too
    for k in (0, 1, 3):
        e_k, g_k = _energy_and_grad_rows(t, x[k : k + 1])
        assert torch.isfinite(e_k).all()
        assert torch.equal(e[k : k + 1], e_k)
        assert torch.equal(g[k : k + 1], g_k)


def test_exact_coincidence_in_chart_coordinates_is_inf():
    # x = 0 puts every particle at the origin: r = 0 exactly for every pair
    t = LennardJones(n_particles=13)
    e, g = _energy_and_grad_rows(t, torch.zeros(2, t.dim))
    assert torch.all(e == math.inf) and torch.equal(g, torch.zeros_like(g))


def test_nan_row_is_nan_and_is_counted(gen):
    t = LennardJones(n_particles=13)
    x = t.coordinates(_random_positions(t, 3, gen, 1.0))
    x[1, 4] = math.nan
    e, g = _energy_and_grad_rows(t, x)
    assert math.isnan(float(e[1]))
    assert torch.isfinite(e[[0, 2]]).all() and torch.isfinite(g[[0, 2]]).all()
    c = CountingTarget(t)
    c.energy(x)
    assert (c.counts.energy, c.counts.nonfinite) == (3, 1)


def test_counting_wrapper_counts_overlaps(gen):
    t = DoubleWell4()
    pos = _random_positions(t, 5, gen, 2.0)
    pos[0, 3] = pos[0, 2]
    pos[4, 0] = pos[4, 1]
    c = CountingTarget(t)
    e = c.energy(c.coordinates(pos))  # coordinates reached through the wrapper
    assert int(torch.isinf(e).sum()) == 2
    assert (c.counts.energy, c.counts.nonfinite) == (5, 2)


def test_float32_overlap_is_inf_and_others_finite(gen):
    t = LennardJones(n_particles=13).float()
    pos = _random_positions(t, 3, gen, 1.0).float()
    pos[0, 5] = pos[0, 7]
    e, g = _energy_and_grad_rows(t, t.coordinates(pos))
    assert e.dtype == torch.float32 and e[0] == math.inf
    assert torch.isfinite(e[1:]).all() and torch.isfinite(g).all()


def test_registered_names_build_the_benchmark_systems():
    dw, lj13 = TARGETS.build("dw4"), TARGETS.build("lj")
    lj55 = TARGETS.build("lj", n_particles=55)
    assert (dw.n_particles, dw.spatial_dim, dw.dim) == (4, 2, 6)
    assert (lj13.n_particles, lj13.spatial_dim, lj13.dim) == (13, 3, 36)
    assert (lj55.n_particles, lj55.dim) == (55, 162)
    assert dw.log_Z is None and not dw.exact_sampling and lj55.log_Z is None
