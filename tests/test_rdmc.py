"""Reverse diffusion Monte Carlo (Huang et al., ICLR 2024): moments, modes, costs, budget.

Every run is seeded and in float64. The tolerances combine the statistical error
of the n samples with the scheme's own bias, computed in closed form for a
Gaussian target (:func:`scheme_moments`: the exponential integrator with the
exact score), and an allowance for the inner sampler's noise in the score.
"""

import math

import pytest
import torch
from helpers import correlated_gaussian

from boltzbench.mcmc.denoise import Inner, importance_start
from boltzbench.methods.rdmc import RDMC, exponential_step
from boltzbench.metrics.distributional import wasserstein2
from boltzbench.targets.analytic import GMM
from boltzbench.targets.counting import CountingTarget

GAUSSIAN_RUN = dict(n_steps=40, T=3.0, n_chains=4, n_proposals=16, n_burnin=8, n_draws=8)


def scheme_moments(mean: torch.Tensor, cov: torch.Tensor, T: float, n_steps: int):
    """Mean and covariance of rdMC's output on N(mean, cov) with the *exact* score:
    x_{k+1} = A_k x_k + b_k + noise, A_k = e^η I − 2(e^η − 1) Σ_t⁻¹,
    b_k = 2(e^η − 1) Σ_t⁻¹ e^{−t} μ, Σ_t = e^{−2t} Σ + (1 − e^{−2t}) I, from N(0, I)."""
    eye = torch.eye(len(mean), dtype=torch.float64)
    m, c, eta = torch.zeros_like(mean), eye.clone(), T / n_steps
    for k in range(n_steps):
        t = T - k * eta
        inv = torch.linalg.inv(math.exp(-2 * t) * cov + (1 - math.exp(-2 * t)) * eye)
        a = math.exp(eta) * eye - 2 * math.expm1(eta) * inv
        m = a @ m + 2 * math.expm1(eta) * math.exp(-t) * inv @ mean
        c = a @ c @ a.T + math.expm1(2 * eta) * eye
    return m, c


def test_exponential_step_is_exact_for_a_frozen_drift():
    """One step from x with v frozen: mean e^η x + 2(e^η − 1) v, variance e^{2η} − 1."""
    gen = torch.Generator().manual_seed(0)
    x, v = torch.full((200_000, 1), 0.5, dtype=torch.float64), torch.tensor([[-1.0]])
    y = exponential_step(x, v.double(), 0.3, gen)
    se = math.sqrt(math.expm1(0.6) / 200_000)
    assert float(y.mean()) == pytest.approx(math.exp(0.3) * 0.5 - 2 * math.expm1(0.3), abs=5 * se)
    assert float(y.var()) == pytest.approx(math.expm1(0.6), rel=0.01)  # SE 0.3 %


def test_recovers_mean_and_covariance_of_a_correlated_gaussian():
    """4-D N(1, Σ), Σ_ij = 1.5² · 0.7^|i−j|, n = 2000 samples, 40 outer steps.

    The exact-score scheme's bias at 40 steps (closed form) is < 0.09 on Σ's
    entries; the sample covariance's SE is ≤ 0.071 (√((Σ_ii Σ_jj + Σ_ij²)/n)), the
    mean's 0.034. Mean: within 4 SE + 0.05 (score noise). Covariance: within the
    scheme's bias + 4 SE + 0.1 (the inner chains' lag and noise: seeds 1, 2 gave
    errors ≤ 0.12 in all, of which the scheme's bias is +0.08 on the diagonal).
    A wrong drift factor (v instead of 2v) doubles the variances: caught by far."""
    g = correlated_gaussian()
    target = CountingTarget(g)
    method = RDMC(**GAUSSIAN_RUN, step_size=1.0, dtype="float64")
    n = 2000
    s = method.sample(target, n, torch.Generator().manual_seed(1))
    assert target.counts.energy == method.sample_cost(n) == n * (1 + 40 * (16 + 4 * 17))
    m_exact, c_exact = scheme_moments(g.mean, g.cov, 3.0, 40)
    bias = (c_exact - g.cov).abs()
    assert float(bias.max()) < 0.09 and float((m_exact - g.mean).abs().max()) < 0.015
    se_mean = torch.sqrt(torch.diag(g.cov) / n)
    assert torch.all((s.x.mean(0) - g.mean).abs() < 4 * se_mean + 0.05), s.x.mean(0)
    d = torch.diag(g.cov)
    se_cov = torch.sqrt((d[:, None] * d[None, :] + g.cov**2) / n)
    err = (torch.cov(s.x.T) - g.cov).abs()
    assert torch.all(err < bias + 4 * se_cov + 0.1), (torch.cov(s.x.T), g.cov)
    assert 0.5 < s.attrs["acceptance"] <= 1.0 and s.attrs["t_stop"] == 0.0


def test_weighs_the_modes_of_a_mixture():
    """4 equal modes (std 0.31) in [−3, 3]², n = 800, 40 outer steps.

    Every mode's share within 0.25 ± 0.05: the binomial SE is 0.0153, so 0.05 is
    3.3 SE (a two-sided 0.1 % chance per mode for exact samples, 0.4 % for any of
    the four); seeds 2, 3, 4 gave shares in 0.223–0.284. The previous scheme
    (inner chains continued across outer steps) gave (0.17, 0.49, 0.20, 0.14) at
    seed 2: caught. W2 against 800 exact samples below 0.8: seeds 2–4 gave
    0.61–0.66, of which exact-vs-exact samples give 0.17–0.34 and the rest is the
    blur of the uniform time grid's last step (see the module docstring); a run
    that put 0.24 of the mass on the wrong mode, ~3 apart, would pay ≈ √(0.24 · 9)."""
    gmm = GMM(dim=2, n_modes=4, loc_scaling=3.0, log_var_scaling=-1.0)
    params = {**GAUSSIAN_RUN, "n_proposals": 32}
    method = RDMC(**params, step_size=0.3, init_scale=2.0, dtype="float64")
    target = CountingTarget(gmm)
    s = method.sample(target, 800, torch.Generator().manual_seed(2))
    assert target.counts.energy == method.sample_cost(800)
    shares = torch.bincount(gmm.assign_modes(s.x), minlength=4) / 800.0
    assert torch.all((shares - 0.25).abs() < 0.05), shares
    exact = gmm.sample(800, torch.Generator().manual_seed(102))
    assert wasserstein2(s.x, exact) < 0.8


def test_plan_spends_the_budget_in_whole_outer_steps():
    method = RDMC(**RDMC.fast_params)
    n, per_step = 64, 64 * (8 + 4 * (1 + 1 + 2))
    plan = method.plan_budget(100_000, n)
    steps = (100_000 - n) // per_step
    assert plan.settings == {"n_steps": steps} and plan.note == ""
    assert plan.planned == plan.method.sample_cost(n) == n + steps * per_step
    assert 0.95 * 100_000 <= plan.planned <= 100_000
    with pytest.raises(ValueError, match="one outer step"):
        method.plan_budget(n + per_step - 1, n)


def test_stops_before_the_step_the_budget_cannot_pay_for():
    """A budget for 3 outer steps (warm starts included) and the final energies: 3 steps."""
    method = RDMC(**RDMC.fast_params, dtype="float64")
    n = 16
    budget = n + 3 * n * (8 + 4 * 4) + 10
    target = CountingTarget(correlated_gaussian(), budget)
    s = method.sample(target, n, torch.Generator().manual_seed(0))
    assert s.attrs["n_steps"] == 3 and target.exhausted and s.x.shape == (n, 4)
    assert target.counts.energy == budget - 10
    assert s.attrs["t_stop"] == pytest.approx(2.0 * (1 - 3 / 8))


def test_pooled_warm_start_draws_the_posterior():
    """pool = rows: each row's starts are resampled from every row's proposals by the
    balance heuristic. On p = N(0, 1) with centres ±3 and s = 1 the posterior is
    N(c/2, 1/2): the mean of 512 starts per row within 4 SE (0.125) of ±1.5 (the
    pooled weights' ESS is in the thousands, so resampling dominates the error;
    seeds 0–2 gave errors ≤ 0.04). Each row's own 4096 proposals, N(±3, 1) weighted
    by p, have an ESS of tens: seed 1 of pool = 1 missed by 0.13."""
    energy = lambda x: 0.5 * (x**2).sum(-1)  # noqa: E731
    center = torch.tensor([[-3.0], [3.0]], dtype=torch.float64)
    inner = Inner(512, 4096, 0, 1, 1.0, pool=2)
    x = importance_start(energy, center, 1.0, inner, torch.Generator().manual_seed(1))
    err = x.reshape(512, 2).mean(0) + torch.tensor([1.5, -1.5], dtype=torch.float64)
    assert torch.all(err.abs() < 4 * math.sqrt(0.5 / 512)), err
