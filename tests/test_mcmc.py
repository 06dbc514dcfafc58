"""Statistical and contract tests of the MCMC kernels, adaptation, diagnostics and
the "mala" method. All in float64 with seeded generators.

Tolerances on moments come from the chains' own autocorrelation ESS: a sample
mean has standard error σ/√ESS and, for a Gaussian, a sample covariance entry
has standard error √((Σ_ii Σ_jj + Σ_ij²)/ESS_ij), where ESS_ij is the ESS of the
products (x_i − μ_i)(x_j − μ_j). Every check allows 5 standard errors.
"""

import math

import pytest
import torch
from helpers import Walled, correlated_gaussian

from boltzbench.mcmc import adaptation, diagnostics, hmc, integrators, mala, proposal
from boltzbench.methods import METHODS
from boltzbench.targets import CountingTarget

N_SE = 5.0  # standard errors allowed on every moment


def run_kernel(step, state, potential, params, n_burnin, n_draws, generator):
    """Burn in, then return draws of shape (chains, draws, dim) and mean acceptance."""
    for _ in range(n_burnin):
        state, _ = step(generator, state, potential, **params)
    draws, accept = [], 0.0
    for _ in range(n_draws):
        state, info = step(generator, state, potential, **params)
        draws.append(state.position)
        accept += float(info.acceptance_rate.mean()) / n_draws
    return torch.stack(draws, 1), accept


def assert_gaussian_moments(draws, target):
    """Mean and covariance of ``draws`` (chains, draws, dim) within N_SE standard errors."""
    mu, cov = target.mean, target.cov
    flat = draws.reshape(-1, draws.shape[-1])
    ess = diagnostics.effective_sample_size(draws)
    se_mean = cov.diagonal().sqrt() / ess.sqrt()
    assert ((flat.mean(0) - mu).abs() < N_SE * se_mean).all(), (flat.mean(0), se_mean)

    centred = draws - mu
    products = centred[..., :, None] * centred[..., None, :]  # (chains, draws, dim, dim)
    ess_prod = diagnostics.effective_sample_size(products)
    se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / ess_prod).sqrt()
    cov_hat = products.reshape(-1, *cov.shape).mean(0)
    assert ((cov_hat - cov).abs() < N_SE * se_cov).all(), (cov_hat, se_cov)
    return ess


# (name, kernel, numeric step parameters, chains, burn-in steps, kept draws)
KERNEL_CASES = [
    ("mala", mala.build_kernel(), {"step_size": 0.9}, 64, 300, 1000),
    ("hmc", hmc.build_kernel(), {"step_size": 0.5, "n_leapfrog": 8}, 64, 100, 300),
]


@pytest.mark.parametrize(
    "name, step, params, chains, n_burnin, n_draws", KERNEL_CASES, ids=[c[0] for c in KERNEL_CASES]
)
def test_kernel_recovers_correlated_gaussian(name, step, params, chains, n_burnin, n_draws, gen):
    target = correlated_gaussian()
    potential = proposal.potential_from(target.energy_and_grad)
    state = proposal.init(torch.randn(chains, target.dim, generator=gen), potential)
    draws, accept = run_kernel(step, state, potential, params, n_burnin, n_draws, gen)
    ess = assert_gaussian_moments(draws, target)
    assert ess.min() > 2000, ess  # the tolerances are tight enough to mean something
    assert 0.3 < accept < 0.99


def test_mala_equals_hmc_with_one_leapfrog_step():
    """MALA's Langevin Hastings ratio equals −ΔH of one leapfrog step (same noise)."""
    target = correlated_gaussian()
    potential = proposal.potential_from(target.energy_and_grad)
    x0 = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
    state_m = state_h = proposal.init(x0, potential)
    step_m, step_h = mala.build_kernel(), hmc.build_kernel()
    gen_m, gen_h = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    eps = torch.linspace(0.2, 2.0, 256)  # one step size per chain
    for _ in range(5):
        state_m, info_m = step_m(gen_m, state_m, potential, eps)
        state_h, info_h = step_h(gen_h, state_h, potential, eps, 1)
        torch.testing.assert_close(info_m.acceptance_rate, info_h.acceptance_rate)
        assert torch.equal(info_m.is_accepted, info_h.is_accepted)
        torch.testing.assert_close(state_m.position, state_h.position)


def test_leapfrog_is_reversible_and_nearly_conserves_energy():
    target = correlated_gaussian()
    potential = proposal.potential_from(target.energy_and_grad)
    gen = torch.Generator().manual_seed(2)
    start = proposal.init(torch.randn(32, 4, generator=gen), potential)
    p0 = torch.randn(32, 4, generator=gen)
    end, p1 = integrators.leapfrog(start, p0, potential, 0.05, 40)
    back, p2 = integrators.leapfrog(end, -p1, potential, 0.05, 40)
    torch.testing.assert_close(back.position, start.position, rtol=0, atol=1e-10)
    torch.testing.assert_close(-p2, p0, rtol=0, atol=1e-10)
    dh = end.energy + integrators.kinetic_energy(p1) - start.energy - integrators.kinetic_energy(p0)
    assert dh.abs().max() < 1e-2  # O(ε²) energy error


@pytest.mark.parametrize("bad", [math.inf, math.nan], ids=["inf", "nan"])
@pytest.mark.parametrize("name", ["mala", "hmc"])
def test_non_finite_proposals_are_rejected(name, bad):
    target = Walled(bad)
    potential = proposal.potential_from(target.energy_and_grad)
    gen = torch.Generator().manual_seed(3)
    state = proposal.init(torch.full((128, 2), -0.5), potential)
    step = mala.build_kernel() if name == "mala" else hmc.build_kernel()
    params = {"step_size": 1.5} | ({} if name == "mala" else {"n_leapfrog": 3})
    rejected_bad = 0
    for _ in range(50):
        state, info = step(gen, state, potential, **params)
        bad_proposal = ~torch.isfinite(info.proposal.energy)
        assert not info.is_accepted[bad_proposal].any()
        assert (info.acceptance_rate[bad_proposal] == 0).all()
        rejected_bad += int(bad_proposal.sum())
        assert torch.isfinite(state.energy).all() and (state.position[:, 0] <= 0.5).all()
    assert rejected_bad > 100  # the wall was actually hit


def test_metropolis_accept_decides_in_log_space():
    gen = torch.Generator().manual_seed(4)
    log_ratio = torch.tensor([0.0, 5.0, -torch.inf, math.nan, 1.0, -1e6])
    energy = torch.tensor([0.0, 0.0, 0.0, 0.0, -torch.inf, 0.0])
    accepted, rate = proposal.metropolis_accept(log_ratio, energy, gen)
    assert accepted.tolist() == [True, True, False, False, False, False]
    torch.testing.assert_close(rate, torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0]))
    # the acceptance frequency at log_ratio = log 0.3 is 0.3
    accepted, _ = proposal.metropolis_accept(
        torch.full((20000,), math.log(0.3)), torch.zeros(20000), gen
    )
    assert abs(accepted.double().mean() - 0.3) < 5 * math.sqrt(0.3 * 0.7 / 20000)


def test_dual_averaging_finds_each_chains_step_size():
    """Synthetic acceptance α(ε) = exp(−ε/s) per chain: the fixed point is ε* = −s log δ."""
    scales = torch.tensor([0.5, 1.0, 4.0])
    gen = torch.Generator().manual_seed(5)
    da = adaptation.dual_averaging_init(torch.full((3,), 0.1))
    for _ in range(2000):
        eps = torch.exp(da.log_step_size)
        noise = 0.05 * torch.randn(3, generator=gen)
        acceptance = (torch.exp(-eps / scales) + noise).clamp(0, 1)
        da = adaptation.dual_averaging_update(da, acceptance, 0.574)
    expected = -scales * math.log(0.574)
    torch.testing.assert_close(adaptation.dual_averaging_final(da), expected, rtol=0.05, atol=0)


def test_robbins_monro_moves_towards_target():
    log_eps = torch.zeros(2)
    out = adaptation.robbins_monro_update(log_eps, torch.tensor([0.9, 0.1]), 0.5, gain=1.0)
    torch.testing.assert_close(out, torch.tensor([0.4, -0.4]))


# ------------------------------------------------------------------ diagnostics


def ar1(phi, chains, n, generator):
    """Stationary AR(1) chains x_t = φ x_{t−1} + √(1−φ²) ε_t, shape (chains, n)."""
    eps = torch.randn(chains, n, generator=generator)
    x = torch.empty(chains, n)
    x[:, 0] = eps[:, 0]
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + math.sqrt(1 - phi**2) * eps[:, t]
    return x


# (φ, relative tolerance): ≈ 4 sd of the estimator, whose spread over 20 seeds
# was measured as 1.5 %, 3 %, 4 % and 2.3 % for these φ (4 chains × 10⁴ draws)
AR1_CASES = [(0.0, 0.06), (0.5, 0.12), (0.8, 0.16), (-0.3, 0.10)]


@pytest.mark.parametrize("phi, rtol", AR1_CASES)
def test_ess_matches_ar1_closed_form(phi, rtol):
    """ESS of AR(1) = MN (1 − φ)/(1 + φ) (i.i.d. for φ = 0)."""
    chains, n = 4, 10_000
    x = ar1(phi, chains, n, torch.Generator().manual_seed(6))[..., None]
    ess = diagnostics.effective_sample_size(x)
    expected = chains * n * (1 - phi) / (1 + phi)
    assert ess.shape == (1,)
    assert abs(float(ess[0]) / expected - 1) < rtol, (float(ess[0]), expected)


def test_autocovariance_matches_direct_sum(gen):
    x = torch.randn(3, 50, 2, generator=gen)
    acov = diagnostics.autocovariance(x)
    c = x - x.mean(1, keepdim=True)
    for t in (0, 1, 7, 49):
        direct = (c[:, : 50 - t] * c[:, t:]).sum(1) / 50
        torch.testing.assert_close(acov[:, t], direct)


def test_split_rhat(gen):
    iid = torch.randn(4, 1000, 3, generator=gen)
    assert (diagnostics.split_rhat(iid) < 1.01).all()
    assert (diagnostics.rank_normalized_split_rhat(iid) < 1.01).all()
    shifted = iid + torch.arange(4.0)[:, None, None]  # chains with different means
    assert (diagnostics.split_rhat(shifted) > 1.1).all()
    assert (diagnostics.rank_normalized_split_rhat(shifted) > 1.1).all()
    trend = iid + torch.linspace(0, 3, 1000)[None, :, None]  # a drift within each chain
    assert (diagnostics.split_rhat(trend) > 1.1).all()  # split R̂ catches it


# ------------------------------------------------------------------ the method


@pytest.mark.parametrize("step_size", [0.01, 5.0])
def test_mala_method_adapts_to_target_acceptance(step_size, gen):
    method = METHODS.build(
        "mala", n_chains=32, n_warmup=400, n_burnin=50, thinning=1, step_size=step_size,
        dtype="float64",
    )  # fmt: skip
    s = method.sample(correlated_gaussian(), 32 * 100, gen)
    assert abs(s.attrs["acceptance"] - 0.574) < 0.1
    assert s.diagnostics["acceptance_per_chain"].shape == (32,)
    assert s.diagnostics["step_size_per_chain"].std() > 0  # one step size per chain


def test_mala_method_counts_and_shapes(gen):
    target = CountingTarget(correlated_gaussian())
    method = METHODS.build(
        "mala", n_chains=16, n_warmup=30, n_burnin=10, thinning=3, dtype="float64"
    )
    n = 250  # not a multiple of the 16 chains: 16 draws per chain, 6 dropped
    s = method.sample(target, n, gen)
    steps = 30 + 10 + math.ceil(n / 16) * 3
    assert method.n_steps(n) == steps == s.attrs["n_steps"]
    assert target.counts.energy == target.counts.grad == 16 * (1 + steps)
    assert s.x.shape == (n, 4) and s.energy.shape == (n,)
    assert s.log_weight is None and s.log_q is None
    torch.testing.assert_close(s.energy, target.target.energy(s.x))
    assert s.diagnostics["ess_per_dim"].shape == (4,)
    for key in ("acceptance", "step_size", "n_chains", "n_steps", "ess_min", "rhat_max"):
        assert math.isfinite(s.attrs[key]), key


def test_mala_method_recovers_moments(gen):
    target = correlated_gaussian()
    method = METHODS.build(
        "mala", n_chains=64, n_warmup=300, n_burnin=100, thinning=2, dtype="float64"
    )
    s = method.sample(target, 64 * 400, gen)
    draws = s.x.reshape(400, 64, 4).transpose(0, 1)  # draw-major → (chains, draws, dim)
    torch.testing.assert_close(
        diagnostics.effective_sample_size(draws), s.diagnostics["ess_per_dim"]
    )
    assert_gaussian_moments(draws, target)
    assert s.attrs["rhat_max"] < 1.05


def test_mala_method_float32(gen):
    target = CountingTarget(correlated_gaussian().float())
    method = METHODS.build("mala", n_chains=16, n_warmup=100, n_burnin=20, dtype="float32")
    s = method.sample(target, 160, gen)
    assert s.x.dtype == torch.float32 and torch.isfinite(s.x).all()
    assert abs(s.attrs["acceptance"] - 0.574) < 0.15
