"""φ⁴ lattice target: the action against a site loop, its symmetries, and the
exact free-field (λ = 0) Gaussian: Hessian, log Z and moments."""

import math

import numpy as np
import pytest
import torch

from boltzbench.targets import TARGETS, Phi4


def _action_loop(phi: np.ndarray, m2: float, lam: float) -> float:
    """S[φ] by an explicit loop over sites x and directions μ, periodic."""
    L = phi.shape[0]
    total = 0.0
    for x0 in range(L):
        for x1 in range(L):
            f = phi[x0, x1]
            fwd = (phi[(x0 + 1) % L, x1], phi[x0, (x1 + 1) % L])
            bwd = (phi[(x0 - 1) % L, x1], phi[x0, (x1 - 1) % L])
            for mu in range(2):
                total += f * (2 * f - fwd[mu] - bwd[mu])
            total += m2 * f**2 + lam * f**4
    return total


def _laplacian_plus_mass(L: int, m2: float) -> np.ndarray:
    """A with S = φᵀAφ at λ = 0, by hand: 4 + m² on the diagonal, -1 per neighbour."""
    V = L * L
    a = np.zeros((V, V))

    def site(x0, x1):
        return (x0 % L) * L + (x1 % L)

    for x0 in range(L):
        for x1 in range(L):
            s = site(x0, x1)
            a[s, s] += 4 + m2
            for n in (site(x0 + 1, x1), site(x0 - 1, x1), site(x0, x1 + 1), site(x0, x1 - 1)):
                a[s, n] -= 1
    return a


@pytest.mark.parametrize("L, m2, lam", [(8, -4.0, 8.0), (5, 1.3, 0.7), (2, -1.0, 2.0)])
def test_action_matches_site_loop(L, m2, lam, gen):
    t = Phi4(L=L, m2=m2, lam=lam)
    x = torch.randn(4, L * L, generator=gen) * 1.3
    expected = [_action_loop(f.numpy(), m2, lam) for f in t.field(x)]
    assert torch.allclose(t.energy(x), torch.tensor(expected), rtol=1e-10, atol=1e-10)


def test_default_parameters_and_shapes(gen):
    t = TARGETS.build("phi4")
    assert (t.L, t.m2, t.lam, t.dim, t.lattice_shape) == (8, -4.0, 8.0, 64, (8, 8))
    assert t.log_Z is None and not t.exact_sampling
    x = torch.randn(3, 64, generator=gen)
    assert t.field(x).shape == (3, 8, 8) and torch.equal(t.field(x)[1, 2, 5], x[1, 21])
    # constant field φ = c: no kinetic term, S = V (m² c² + λ c⁴)
    c = 0.6
    assert float(t.energy(torch.full((1, 64), c))) == pytest.approx(64 * (-4 * c**2 + 8 * c**4))


def test_periodicity_and_z2_symmetry(gen):
    t = Phi4()
    x = torch.randn(5, t.dim, generator=gen)
    e = t.energy(x)
    phi = t.field(x)
    for shift, dims in (((3,), (1,)), ((5,), (2,)), ((2, 7), (1, 2))):
        moved = torch.roll(phi, shift, dims).reshape(5, -1)
        assert torch.allclose(t.energy(moved), e, rtol=1e-12)
    # the lattice's reflections and transpose are symmetries too
    assert torch.allclose(t.energy(phi.flip(1).reshape(5, -1)), e, rtol=1e-12)
    assert torch.allclose(t.energy(phi.transpose(1, 2).reshape(5, -1)), e, rtol=1e-12)
    assert torch.allclose(t.energy(-x), e, rtol=1e-14)  # Z2: S[-φ] = S[φ]


@pytest.mark.parametrize("L, m2", [(4, 0.5), (3, 2.0)])
def test_free_field_hessian_is_twice_the_lattice_operator(L, m2):
    t = Phi4(L=L, m2=m2, lam=0.0)
    hess = torch.autograd.functional.hessian(lambda v: t.energy(v[None])[0], torch.zeros(L * L))
    assert np.allclose(hess.numpy(), 2 * _laplacian_plus_mass(L, m2), atol=1e-12)
    # quadratic: S[φ] = φᵀAφ exactly at any φ
    phi = torch.linspace(-2, 3, L * L)
    a = torch.from_numpy(_laplacian_plus_mass(L, m2))
    assert float(t.energy(phi[None])) == pytest.approx(float(phi @ a @ phi), rel=1e-12)


@pytest.mark.parametrize("L, m2", [(8, 0.5), (6, 3.0), (2, 1.0)])
def test_free_field_log_z_closed_form(L, m2):
    t = Phi4(L=L, m2=m2, lam=0.0)
    _, logdet = np.linalg.slogdet(_laplacian_plus_mass(L, m2))
    assert t.log_Z == pytest.approx(0.5 * L * L * math.log(math.pi) - 0.5 * logdet, rel=1e-12)


def test_free_field_log_z_by_quadrature_on_a_tiny_lattice():
    # L = 1: no neighbours other than itself, S = m² φ², Z = sqrt(π / m²)
    t = Phi4(L=1, m2=2.0, lam=0.0)
    assert t.log_Z == pytest.approx(0.5 * math.log(math.pi / 2.0), rel=1e-12)
    g = torch.linspace(-12, 12, 200_001)
    z = float(torch.exp(-t.energy(g[:, None])).sum()) * float(g[1] - g[0])
    assert math.log(z) == pytest.approx(t.log_Z, abs=1e-9)


def test_free_field_exact_samples_have_gaussian_moments(gen):
    L, m2, n = 8, 0.5, 40_000
    t = Phi4(L=L, m2=m2, lam=0.0)
    assert t.exact_sampling
    x = t.sample(n, gen)
    assert x.shape == (n, 64) and x.dtype == torch.float64
    # equipartition: E = φᵀAφ with φ ~ N(0, (2A)^-1) is ½ χ²_V: mean V/2, variance V/2
    e = t.energy(x)
    sd = math.sqrt(32 / n)  # 0.028
    assert abs(float(e.mean()) - 32.0) < 5 * sd
    # sd of the sample variance: (V/2)·sqrt((2 + 12/V)/n) ≈ 0.24 (χ² excess kurtosis 12/V)
    assert abs(float(e.var()) - 32.0) < 1.5
    # covariance against (2A)^-1 built by hand: site variance and a neighbour covariance
    cov = np.linalg.inv(2 * _laplacian_plus_mass(L, m2))
    emp = (x.T @ x / n).numpy()
    assert abs(emp[0, 0] - cov[0, 0]) < 0.03 * cov[0, 0]
    assert abs(emp[0, 1] - cov[0, 1]) < 0.03 * cov[0, 0]


def test_interacting_has_no_sampler_and_bad_parameters_are_refused(gen):
    with pytest.raises(NotImplementedError, match="lam = 0"):
        Phi4().sample(2, gen)
    with pytest.raises(ValueError, match="m2 > 0"):
        Phi4(m2=-1.0, lam=0.0)
    with pytest.raises(ValueError, match="lam must be"):
        Phi4(lam=-1.0)
