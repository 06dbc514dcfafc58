"""Targets: energies at known points, exact-sampler moments, log Z, gradients."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from boltzbench.targets import CountingTarget, build_target
from boltzbench.targets.analytic import GMM, GMM25, Funnel, ManyWell, double_well_log_z
from boltzbench.targets.gaussian import Gaussian

# log Z of ManyWell-32 as reported in the literature (the FAB ManyWell benchmark,
# Midgley et al. 2023; the same value is used by later diffusion-sampler papers).
MANYWELL32_LOG_Z_LITERATURE = 164.69568


def test_gmm40_parameters_match_fab():
    t = GMM()
    assert t.dim == 2 and t.n_modes == 40
    assert torch.allclose(t.std, torch.full((2,), math.log1p(math.e)))  # softplus(1)
    assert abs(float(t.std[0]) - 1.3133) < 1e-4
    assert t.means.abs().max() <= 40
    # FAB draws (torch.rand(40, 2) - 0.5) * 80 in float32 after torch.manual_seed(0);
    # these are its first three means and its last, whatever the default dtype
    expected = torch.tensor(
        [[-0.29947281, 21.45774460], [-32.92180634, -29.43756104], [-15.40617466, 10.72629452]]
    )
    assert torch.allclose(t.means[:3], expected, atol=1e-6)
    assert torch.allclose(t.means[-1], torch.tensor([3.67969990, -25.02421379]), atol=1e-6)


def test_gmm40_energy_matches_scipy():
    t = GMM()
    x = torch.tensor([[0.0, 0.0], [3.0, -7.0], [float(t.means[5, 0]), float(t.means[5, 1])]])
    comps = [stats.multivariate_normal(m.numpy(), np.diag(t.std.numpy() ** 2)) for m in t.means]
    expected = -np.logaddexp.reduce([c.logpdf(x.numpy()) for c in comps], axis=0) + math.log(40)
    assert np.allclose(t.energy(x).numpy(), expected, rtol=1e-10, atol=1e-10)


def test_gmm40_normalized_by_quadrature():
    t = GMM()
    g = torch.linspace(-50, 50, 1001)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    p = torch.exp(-t.energy(torch.stack([xx.ravel(), yy.ravel()], 1)))
    z = float(p.sum()) * float(g[1] - g[0]) ** 2
    assert abs(z - 1) < 1e-6  # log Z = 0


def test_gmm25_parameters_match_sendera_et_al():
    t = build_target({"kind": "gmm25"})
    assert isinstance(t, GMM25) and t.dim == 2 and t.n_modes == 25 and t.log_Z == 0.0
    grid = [-10.0, -5.0, 0.0, 5.0, 10.0]
    expected = torch.tensor([[a, b] for a in grid for b in grid])  # the authors' order
    assert torch.equal(t.means, expected)
    assert torch.allclose(t.std**2, torch.full((2,), 0.3), rtol=1e-14)
    # E at a mode: −log[(1/25) Σ_k N(μ_0; μ_k, 0.3 I)] written out with scipy
    x = torch.tensor([[-10.0, -10.0], [1.3, -2.2]])
    comps = [stats.multivariate_normal(m.numpy(), 0.3 * np.eye(2)) for m in expected]
    lp = np.logaddexp.reduce([c.logpdf(x.numpy()) for c in comps], axis=0) - math.log(25)
    assert np.allclose(t.energy(x).numpy(), -lp, rtol=1e-12, atol=1e-12)


def test_gmm25_log_z_is_zero(gen):
    t = GMM25()
    # quadrature: the Riemann sum of a Gaussian on a fine grid is exact to round-off
    g = torch.linspace(-16, 16, 641)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    p = torch.exp(-t.energy(torch.stack([xx.ravel(), yy.ravel()], 1)))
    assert abs(float(p.sum()) * float(g[1] - g[0]) ** 2 - 1) < 1e-9
    # importance sampling from q = N(0, 8² I): mean(p/q) = Z = 1 within 4 standard
    # errors (se ≈ 0.01 at n = 10⁵, from the sample itself)
    n, s = 100_000, 8.0
    q = s * torch.randn(n, 2, generator=gen)
    log_q = -0.5 * (q**2).sum(-1) / s**2 - 2 * math.log(s) - math.log(2 * math.pi)
    w = torch.exp(-t.energy(q) - log_q)
    se = float(w.std()) / math.sqrt(n)
    assert se < 0.015 and abs(float(w.mean()) - 1) < 4 * se


def test_gmm25_exact_samples(gen):
    t = GMM25()
    n = 100_000
    x = t.sample(n, gen)
    # grid coordinate variance (100 + 25 + 0 + 25 + 100)/5 = 50, plus 0.3 within a mode
    # and 4th moment μ₄ = (2·10⁴ + 2·5⁴)/5 + 6·50·0.3 + 3·0.3² = 4340.27, so the sample
    # variance has sd √((μ₄ − var²)/n)
    var, mu4 = 50.3, 4340.27
    assert x.mean(0).abs().max() < 4 * math.sqrt(var / n)
    assert (x.var(0) - var).abs().max() < 4 * math.sqrt((mu4 - var**2) / n)
    assert abs(float(torch.corrcoef(x.T)[0, 1])) < 4 / math.sqrt(n)
    # every mode gets 1/25 of the samples (binomial sd √(p(1−p)/n)), and a sample's
    # label is the component it came from (the modes are 9.1 sd apart)
    freq = torch.bincount(t.assign_modes(x), minlength=25) / n
    assert (freq - 1 / 25).abs().max() < 4 * math.sqrt(0.04 * 0.96 / n)
    torch.testing.assert_close(t.mode_weights(), torch.full((25,), 0.04))
    near = (x[:, None, :] - t.means).norm(dim=-1).argmin(-1)
    assert torch.equal(t.assign_modes(x), near)


def test_funnel_energy_at_known_points():
    t = Funnel()
    x = torch.zeros(1, 10)
    expected = math.log(3 * math.sqrt(2 * math.pi)) + 9 * 0.5 * math.log(2 * math.pi)
    assert abs(float(t.energy(x)) - expected) < 1e-12
    x = torch.tensor([[2.0] + [1.0] * 9])
    lp = stats.norm(0, 3).logpdf(2.0) + 9 * stats.norm(0, math.exp(1.0)).logpdf(1.0)
    assert abs(float(t.energy(x)) + lp) < 1e-12


def test_funnel_exact_moments(gen):
    x = Funnel().sample(200_000, gen)
    assert abs(float(x[:, 0].mean())) < 4 * 3 / math.sqrt(2e5)
    assert abs(float(x[:, 0].var()) - 9) < 0.15  # sd of the sample variance ≈ 9·√(2/n) = 0.03
    z = x[:, 1:] / torch.exp(0.5 * x[:, :1])  # standardized conditionals
    assert abs(float(z.var()) - 1) < 0.01


def test_funnel_normalized_by_quadrature():
    t = Funnel(dim=2)

    def p(x1, x0):
        return math.exp(-float(t.energy(torch.tensor([[x0, x1]]))))

    z, _ = integrate.dblquad(
        p, -25, 25, lambda x0: -60 * math.exp(x0 / 2), lambda x0: 60 * math.exp(x0 / 2)
    )
    assert abs(z - 1) < 1e-6


def test_manywell_energy_at_known_points():
    t = ManyWell()
    assert float(t.energy(torch.zeros(1, 32))) == 0.0
    x = torch.zeros(1, 32)
    x[0, 0], x[0, 1] = 1.0, 2.0  # -(−1 + 6 + 0.5 − 0.5·4) = −3.5
    assert abs(float(t.energy(x)) - (-3.5)) < 1e-12


def test_manywell_log_z_by_quadrature_matches_literature():
    t = ManyWell()
    assert abs(t.log_Z - 16 * double_well_log_z()) < 1e-12
    assert abs(t.log_Z - MANYWELL32_LOG_Z_LITERATURE) < 1e-4


def test_manywell_exact_moments(gen):
    t = ManyWell(dim=4)
    x = t.sample(200_000, gen)
    f = lambda v: math.exp(-(-0.5 * v - 6 * v**2 + v**4))  # noqa: E731
    z = integrate.quad(f, -6, 6)[0]
    mean = integrate.quad(lambda v: v * f(v), -6, 6)[0] / z
    second = integrate.quad(lambda v: v * v * f(v), -6, 6)[0] / z
    x1 = x[:, 0::2].ravel()
    sd = math.sqrt(second - mean**2)
    assert abs(float(x1.mean()) - mean) < 4 * sd / math.sqrt(len(x1))
    assert abs(float((x1**2).mean()) - second) < 0.01
    assert abs(float(x[:, 1::2].var()) - 1) < 0.01
    # the right well holds P(x1 > 0), also by quadrature
    p_right = integrate.quad(f, 0, 6)[0] / z
    assert abs(float((x1 > 0).double().mean()) - p_right) < 0.005


def test_gaussian_log_z_closed_form():
    t = Gaussian(dim=3, scale=2.0, rho=0.5)
    cov = t.cov.numpy()
    assert abs(t.log_Z - 0.5 * math.log(np.linalg.det(2 * math.pi * cov))) < 1e-12


@pytest.mark.parametrize(
    "dim, scale, rho", [(1, 1.5, 0.7), (2, 2.0, 0.5), (50, 1.0, 0.5), (7, 0.7, -0.9)]
)
def test_gaussian_precision_is_the_exact_inverse_and_its_gradient_one_product(dim, scale, rho):
    """The closed-form AR(1) precision inverts Σ (to 1e-12), is symmetric bit for bit
    and exactly zero off the band; the one-product gradient equals autograd's."""
    t = Gaussian(dim=dim, scale=scale, rho=rho)
    assert torch.allclose(t.precision @ t.cov, torch.eye(dim, dtype=torch.float64), atol=1e-12)
    assert torch.equal(t.precision, t.precision.T)
    band = (torch.arange(dim)[:, None] - torch.arange(dim)[None, :]).abs() <= 1
    assert not t.precision[~band].any()
    x = torch.randn(64, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    energy, grad = t.energy_and_grad(x)
    assert torch.equal(energy, t.energy(x))
    auto = torch.func.grad(lambda y: t.energy(y).sum())(x)
    assert torch.allclose(grad, auto, rtol=1e-12, atol=1e-12)


def test_manywell_energy_is_the_pairwise_double_well():
    """The per-column polynomial equals Σ_pairs −log p(x₁, x₂) of the pairs' form
    (float64, to 1e-12 relative), and stays finite wherever x² is (|x| = 1e18)."""
    t = ManyWell(dim=8)
    x = 3 * torch.randn(500, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x1, x2 = x[:, 0::2], x[:, 1::2]
    pairs = (-0.5 * x1 - 6.0 * x1**2 + x1**4 + 0.5 * x2**2).sum(-1)
    assert torch.allclose(t.energy(x), pairs, rtol=1e-12, atol=1e-12)
    far = torch.zeros(1, 8, dtype=torch.float64)
    far[0, 1] = 1e18  # an x₂: ½ x² = 5e35 is finite in float64, so is the energy
    assert torch.isfinite(t.energy(far)).all()
    assert t.energy(x.float()).dtype == torch.float32  # the dtype of x, as before


# Gradients against autograd and central differences, for every registered target:
# boltzbench.testing.check_target, walked over TARGETS in test_conformance.py.


def test_counting_wrapper_counts_energy_and_gradients(gen):
    c = CountingTarget(Gaussian(dim=2))
    x = torch.randn(7, 2, generator=gen)
    c.energy(x)
    assert (c.counts.energy, c.counts.grad) == (7, 0)
    c.energy_and_grad(x)
    assert (c.counts.energy, c.counts.grad) == (14, 7)
    xr = x.clone().requires_grad_(True)
    c.energy(xr).sum().backward()
    assert (c.counts.energy, c.counts.grad) == (21, 14)


def test_counting_wrapper_counts_nonfinite_and_enforces_budget():
    c = CountingTarget(Gaussian(dim=2), budget=5)
    c.energy(torch.tensor([[float("nan"), 0.0], [0.0, 0.0]]))
    assert c.counts.nonfinite == 1
    with pytest.raises(RuntimeError, match="budget of 5"):
        c.energy(torch.zeros(4, 2))
    assert c.counts.energy == 2


def test_user_target_from_callable():
    t = build_target({"callable": "custom_target:make_shifted_gaussian", "params": {"dim": 2}})
    assert t.dim == 2 and t.exact_sampling


# ------------------------------------------------------------ optional hooks
HOOKS = ("ParticleSystem", "LatticeField", "Molecule", "InvariantFeatures", "DescribesCOM")


@pytest.mark.parametrize(
    "spec,provides",
    [
        ({"kind": "gmm40"}, set()),
        ({"kind": "gaussian", "params": {"dim": 2}}, set()),
        ({"kind": "dw4"}, {"ParticleSystem", "InvariantFeatures", "DescribesCOM"}),
        ({"kind": "phi4", "params": {"L": 4}}, {"LatticeField"}),
    ],
)
def test_targets_declare_their_optional_hooks(spec, provides):
    """Each hook is a Protocol of targets.base, checked by isinstance, also through the
    counting wrapper a method sees; the Target docstring lists every one."""
    from boltzbench.targets import base

    target = build_target(spec)
    for wrapped in (target, CountingTarget(target)):
        found = {name for name in HOOKS if isinstance(wrapped, getattr(base, name))}
        assert found == provides
    for name in (*HOOKS, "MDSystem"):
        assert f":class:`{name}`" in base.Target.__doc__
    assert not isinstance(target, base.MDSystem)
