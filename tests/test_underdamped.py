"""Underdamped Langevin: the OBABO (GHMC) and randomized-midpoint kernels and the method.

Every check is against an exact value with a stated tolerance, in float64 and
seeded: OBABO keeps a correlated Gaussian invariant and its acceptance equals
E[min(1, exp(−ΔH))] computed independently from the closed-form leapfrog map;
the randomized midpoint's OU noise has the covariance Itô's isometry gives,
its stationary moments are close to the truth at a small step and measurably
biased at a large one; both kernels sample a three-mode mixture to within the
W2 a wrong mode weight would exceed. (The method's conformance with its
default kernel is in test_conformance.py; its budget plans in test_budget.py.)
"""

import math

import pytest
import torch

from boltzbench.mcmc import proposal, underdamped
from boltzbench.methods.underdamped import Underdamped
from boltzbench.metrics.distributional import wasserstein2
from boltzbench.targets import CountingTarget
from boltzbench.targets.analytic import GMM
from boltzbench.targets.gaussian import Gaussian
from boltzbench.testing import check_method


def _chains_at_equilibrium(target: Gaussian, n: int, gen: torch.Generator):
    """n chains at exact draws of (x, p) ~ N(μ, Σ) × N(0, I), and their potential."""
    potential = proposal.potential_from(target.energy_and_grad)
    p = torch.randn(n, target.dim, generator=gen, dtype=torch.float64)
    return underdamped.init(target.sample(n, gen), p, potential), potential


def _run(kernel: str, state, potential, steps: int, h: float, gamma: float, gen):
    step = underdamped.build_kernel(kernel)
    infos = []
    for _ in range(steps):
        state, info = step(gen, state, potential, h, gamma)
        infos.append(info)
    return state, infos


def test_obabo_keeps_a_correlated_gaussian_invariant(gen):
    """5,000 chains started at exact draws of a 3-D Gaussian (ρ = 0.6) stay exact after
    30 OBABO steps with h = 0.6, γ = 0.5 (acceptance ≈ 0.8: rejections and momentum
    flips happen): every mean and covariance entry of x, and the covariance of p,
    within 5 standard errors of the truth."""
    target, n = Gaussian(dim=3, rho=0.6), 5000
    state, potential = _chains_at_equilibrium(target, n, gen)
    state, infos = _run("obabo", state, potential, 30, 0.6, 0.5, gen)
    accept = torch.stack([i.acceptance_rate for i in infos]).mean()
    assert 0.6 < accept < 0.95  # the Metropolis test is exercised
    sigma = target.cov
    se_mean = torch.sqrt(torch.diagonal(sigma) / n)
    assert ((state.position.mean(0) - target.mean).abs() <= 5 * se_mean).all()
    for x, cov in ((state.position, sigma), (state.momentum, torch.eye(3, dtype=torch.float64))):
        se_cov = torch.sqrt((torch.outer(cov.diagonal(), cov.diagonal()) + cov**2) / n)
        assert ((torch.cov(x.T) - cov).abs() <= 5 * se_cov).all(), torch.cov(x.T)


def _leapfrog_energy_error(x: torch.Tensor, p: torch.Tensor, precision: torch.Tensor, h: float):
    """ΔH of one leapfrog step of size h for E(x) = ½ xᵀ P x, written out as the linear map
    p½ = p − (h/2) P x, x' = x + h p½, p' = p½ − (h/2) P x' (no kernel code involved)."""
    p_half = p - 0.5 * h * x @ precision
    x_new = x + h * p_half
    p_new = p_half - 0.5 * h * x_new @ precision
    quad = lambda y: 0.5 * ((y @ precision) * y).sum(-1)  # noqa: E731
    return quad(x_new) - quad(x) + 0.5 * (p_new**2).sum(-1) - 0.5 * (p**2).sum(-1)


@pytest.mark.parametrize("h", [0.5, 1.0])
def test_obabo_acceptance_is_the_expected_metropolis_rate(h, gen):
    """At equilibrium the BAB proposal starts at (x, p) ~ N(0, Σ) × N(0, I), so the kernel's
    mean acceptance is E[min(1, exp(−ΔH))] over that law. Computed here from 10⁶ exact
    draws through the closed-form linear leapfrog map (standard error < 0.001), it must
    match the kernel's mean acceptance over 4,000 chains × 40 steps within 0.01
    (≈ 5 standard errors of the kernel's average; h = 0.5 gives ≈ 0.89, h = 1.0 ≈ 0.39,
    so a wrong ΔH would miss)."""
    target = Gaussian(dim=2, rho=0.8)
    x, p = target.sample(10**6, gen), torch.randn(10**6, 2, generator=gen, dtype=torch.float64)
    rates = torch.exp(-_leapfrog_energy_error(x, p, target.precision, h).clamp_min(0.0))
    expected = float(rates.mean())
    state, potential = _chains_at_equilibrium(target, 4000, gen)
    _, infos = _run("obabo", state, potential, 40, h, 1.0, gen)
    observed = float(torch.stack([i.acceptance_rate for i in infos]).mean())
    assert abs(observed - expected) < 0.01, (observed, expected)
    assert expected == pytest.approx({0.5: 0.89, 1.0: 0.39}[h], abs=0.03)


def test_randomized_midpoint_noise_has_the_ito_covariance(gen):
    """(W₁, W₂, W₃) for α = 0.3, h = 0.5, γ = 1.3 against Itô's isometry evaluated by the
    trapezoid rule on 20,001 points: s² ∫ f_i f_j dt with s = √(2γ),
    f₁ = φ(αh − t) on [0, αh], f₂ = φ(h − t), f₃ = e^{−γ(h − t)}; every entry of the
    empirical covariance of 200,000 draws within 5 standard errors."""
    alpha, h, gamma, n = 0.3, 0.5, 1.3, 200_000
    phi = lambda tau: (1 - torch.exp(-gamma * tau)) / gamma  # noqa: E731
    t = torch.linspace(0, h, 20_001, dtype=torch.float64)
    f = torch.stack(
        [
            torch.where(t < alpha * h, phi((alpha * h - t).clamp_min(0)), torch.zeros_like(t)),
            phi(h - t),
            torch.exp(-gamma * (h - t)),
        ]
    )
    exact = 2 * gamma * torch.trapezoid(f[:, None, :] * f[None, :, :], t)
    full = lambda v: torch.full((n,), v, dtype=torch.float64)  # noqa: E731
    w = underdamped.ou_noise(full(alpha), full(h), gamma, torch.Size((n, 1)), gen)
    empirical = torch.cov(torch.cat(w, dim=1).T)
    se = torch.sqrt((torch.outer(exact.diagonal(), exact.diagonal()) + exact**2) / n)
    assert ((empirical - exact).abs() <= 5 * se).all(), (empirical, exact)


def _stationary_moments(h: float, n_chains: int, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of randomized-midpoint chains (γ = 1) on N(0, Σ), ρ = 0.5,
    averaged over the cross-sections of ⌈50/h⌉ steps after a burn-in of time 10."""
    target = Gaussian(dim=2, rho=0.5)
    state, potential = _chains_at_equilibrium(target, n_chains, gen)
    state, _ = _run("randomized_midpoint", state, potential, math.ceil(10 / h), h, 1.0, gen)
    step, steps = underdamped.build_kernel("randomized_midpoint"), math.ceil(50 / h)
    mean, cov = torch.zeros(2, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)
    for _ in range(steps):
        state, _ = step(gen, state, potential, h, 1.0)
        mean, cov = mean + state.position.mean(0) / steps, cov + torch.cov(state.position.T) / steps
    return mean, cov


def test_randomized_midpoint_stationary_bias_grows_with_the_step(gen):
    """On N(0, Σ) (unit variances, ρ = 0.5, largest curvature 2) with γ = 1, the largest
    error of a covariance entry (time-averaged, standard error ≈ 0.005):

    * h = 0.2: within 0.03 (measured ≤ 0.01 over three seeds), mean within 0.02 of 0;
    * h = 1.0: above 0.07 and above the h = 0.2 error by more than 0.06 (measured
      ≈ 0.11: variances ≈ 1.11, covariance ≈ 0.42 instead of 0.5): the unadjusted
      kernel's step-size bias, which a Metropolis test would remove.
    """
    sigma = Gaussian(dim=2, rho=0.5).cov
    small_mean, small_cov = _stationary_moments(0.2, 4000, gen)
    _, large_cov = _stationary_moments(1.0, 4000, gen)
    small_err, large_err = ((c - sigma).abs().max() for c in (small_cov, large_cov))
    assert small_mean.abs().max() < 0.02 and small_err < 0.03, (small_mean, small_cov)
    assert large_err > 0.07 and large_err > small_err + 0.06, (small_cov, large_cov)


@pytest.mark.parametrize("kernel, h", [("obabo", 0.5), ("randomized_midpoint", 0.3)])
def test_a_three_mode_mixture_is_sampled_to_within_a_wrong_weight(kernel, h, gen):
    """A 2-D mixture of 3 equal modes (σ = 1.31; GMM(n_modes=3, loc_scaling=5): two
    overlapping modes and one 4.4σ away), 1,000 draws of 100 chains: W2 to 1,000 exact
    draws ≤ 0.9 (measured 0.33–0.52 over three seeds). Two independent sets of 1,000
    exact draws are at W2 0.40 on average (99 % quantile 0.63 over 200 pairs); exact
    draws with half of the far mode's mass removed, the error of chains that cross too
    rarely, are at W2 ≥ 1.2 (measured 1.7–2.1; checked here on the same reference)."""
    target = GMM(dim=2, n_modes=3, loc_scaling=5.0)
    settings = dict(n_chains=100, n_warmup=200, n_burnin=300, thinning=10, dtype="float64")
    method = Underdamped(kernel=kernel, step_size=h, **settings)
    x = method.sample(target, 1000, gen).x
    reference = target.sample(1000, gen)
    draws = target.sample(2000, gen)
    far = target.component_log_prob(draws).argmax(-1) == 1
    drop = far & (torch.cumsum(far, 0) <= far.sum() // 2)
    wrong = draws[~drop][:1000]
    assert wasserstein2(wrong, reference) >= 1.2
    assert wasserstein2(x, reference) <= 0.9


def test_the_randomized_midpoint_method_passes_the_conformance_checks():
    """The conformance suite walks the default kernel (OBABO); the other one here.
    Every check passes but those of weights, which this unweighted sampler has not."""
    method = Underdamped(kernel="randomized_midpoint", **Underdamped.fast_params)
    report = check_method(method)["Gaussian"]
    assert {c for c, r in report.items() if r != "passed"} == {"weights", "log_z"}, report


@pytest.mark.parametrize("kernel, per_step", [("obabo", 1), ("randomized_midpoint", 2)])
def test_every_evaluation_is_counted_and_costs_what_it_says(kernel, per_step, gen):
    """n_chains · (1 + c · steps) energy-and-gradient evaluations, c = 1 (OBABO) or 2
    (randomized midpoint), all through the target; the randomized midpoint keeps its
    step size, OBABO adapts it."""
    method = Underdamped(kernel=kernel, n_chains=6, n_warmup=30, n_burnin=5, thinning=2)
    target = CountingTarget(Gaussian(dim=2))
    s = method.sample(target, 30, gen)
    steps = 30 + 5 + 5 * 2
    assert target.counts.energy == target.counts.grad == 6 * (1 + per_step * steps)
    assert method.sample_cost(30) == target.counts.energy == s.attrs["n_grad_evaluations"]
    kept = s.attrs["step_size"] == pytest.approx(0.1, rel=1e-6)
    assert kept == (kernel == "randomized_midpoint") and s.attrs["acceptance"] <= 1
