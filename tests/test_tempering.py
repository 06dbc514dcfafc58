"""Tests of the parallel-tempering kernel (boltzbench.mcmc.tempering), float64, seeded.

Swap acceptance on a Gaussian, in closed form. For E(x) = x²/2 in 1-D and two
replicas at β₁ = 1 > β₂ = β, in equilibrium x₁ ~ N(0, 1), x₂ ~ N(0, 1/β) and the
swap log ratio is Δ = (1 − β)(x₁² − x₂²)/2. Swapping (x₁, x₂) → (x₂, x₁) maps
the product density π to π·e^Δ, so E_π[e^Δ 1{Δ<0}] = P_π(Δ > 0) and

    E_π[min(1, e^Δ)] = 2 P(|x₁| > |x₂|) = 2 P(|z₂/z₁| < √β) = (4/π) arctan √β,

the last step because z₂/z₁ of two standard normals is standard Cauchy. The test
also checks this formula by quadrature. Moment tolerances are 5 standard errors
from the chains' autocorrelation ESS, as in test_mcmc.py.
"""

import math

import pytest
import torch
from helpers import Walled

from boltzbench.mcmc import diagnostics, proposal, tempering
from boltzbench.targets import CountingTarget
from boltzbench.targets.gaussian import Gaussian

N_SE = 5.0


def expected_swap_acceptance(beta: float) -> float:
    """(4/π) arctan √β: the equilibrium swap acceptance of x²/2 between β = 1 and β."""
    return 4 / math.pi * math.atan(math.sqrt(beta))


def quadrature_swap_acceptance(beta: float, half_width: float = 12.0, m: int = 2001) -> float:
    """E[min(1, exp((1 − β)(x₁² − x₂²)/2))] by the trapezoid rule on a 2-D grid."""
    u = torch.linspace(-half_width, half_width, m)
    x1, x2 = u[:, None], u[None, :] / math.sqrt(beta)  # x₂ = z / √β
    integrand = torch.clamp(torch.exp(0.5 * (1 - beta) * (x1**2 - x2**2)), max=1.0)
    weight = torch.exp(-0.5 * u**2) / math.sqrt(2 * math.pi)
    inner = torch.trapezoid(integrand * weight[None, :], u, dim=1)
    return float(torch.trapezoid(inner * weight, u))


def test_geometric_ladder_runs_from_one_to_one_over_t_max():
    assert torch.allclose(tempering.geometric_ladder(3, 4.0), torch.tensor([1.0, 0.5, 0.25]))
    assert torch.equal(tempering.geometric_ladder(1, 10.0), torch.ones(1))
    with pytest.raises(ValueError):
        tempering.geometric_ladder(3, 0.5)


def test_closed_form_swap_acceptance_matches_quadrature():
    # the kink of min(1, ·) limits the trapezoid rule to O(h²) ≈ 1e-5 at h = 0.012
    for beta in (0.1, 0.25, 0.6):
        assert abs(expected_swap_acceptance(beta) - quadrature_swap_acceptance(beta)) < 2e-5


def _stationary_run(local, step_sizes, n_leapfrog, chains, n_steps, betas, gen):
    """Run from the exact tempered marginals; return positions (K, C, steps) and swap rates."""
    target = Gaussian(dim=1)
    potential = proposal.potential_from(target.energy_and_grad)
    x0 = torch.randn(len(betas), chains, 1, generator=gen) / betas.sqrt()[:, None, None]
    state = tempering.init(x0, potential)
    step = tempering.build_kernel(betas, local)
    xs, swap_rates, swapped, accept = [], [], [], 0.0
    for _ in range(n_steps):
        state, info = step(gen, state, potential, step_sizes, n_leapfrog)
        xs.append(state.position[..., 0])
        accept += float(info.acceptance_rate.mean()) / n_steps
        if info.swap_proposed[0]:
            swap_rates.append(info.swap_acceptance_rate[0])
            swapped.append(info.is_swapped[0].double())
    return torch.stack(xs, -1), torch.stack(swap_rates, 1), torch.stack(swapped, 1), accept


@pytest.mark.parametrize(
    "local, scale, n_leapfrog", [("mala", 1.2, 1), ("hmc", 0.6, 3)], ids=["mala", "hmc"]
)
def test_swap_acceptance_and_tempered_marginals_of_a_gaussian(local, scale, n_leapfrog, gen):
    """Two replicas of x²/2 at β = 1 and 0.25: swap rate (4/π) arctan(½), variances 1/β."""
    betas = torch.tensor([1.0, 0.25])
    step_sizes = scale / betas.sqrt()  # the same move in units of each replica's std
    xs, rates, swapped, accept = _stationary_run(
        local, step_sizes, n_leapfrog, 500, 200, betas, gen
    )
    assert 0.3 < accept < 1.0
    expected = expected_swap_acceptance(0.25)  # 0.5903
    for series in (rates, swapped):  # (chains, swap rounds): min(1, e^Δ) and the 0/1 outcome
        se = float(series.std()) / math.sqrt(float(diagnostics.effective_sample_size(series)))
        assert abs(float(series.mean()) - expected) < N_SE * se, (float(series.mean()), se)
    for k, beta in enumerate(betas.tolist()):
        x = xs[k]  # (chains, steps)
        ess_sq = float(diagnostics.effective_sample_size(x**2))
        se_var = math.sqrt(2.0 / ess_sq) / beta  # sd of x² is √2 σ² for a Gaussian
        assert abs(float((x**2).mean()) - 1 / beta) < N_SE * se_var


def test_a_step_evaluates_each_replica_once_and_swaps_carry_the_cache(gen):
    """K·C (MALA) or K·C·L (HMC) evaluations per step; cached E and ∇E stay exact."""
    target = CountingTarget(Gaussian(dim=2, mean=1.0, scale=1.5, rho=0.5))
    potential = proposal.potential_from(target.energy_and_grad)
    betas = tempering.geometric_ladder(4, 8.0)
    state = tempering.init(torch.randn(4, 5, 2, generator=gen), potential)
    assert target.counts.grad == 20
    for local, n_leapfrog in (("mala", 1), ("hmc", 3)):
        step = tempering.build_kernel(betas, local)
        swaps = 0
        for i in range(10):
            before = target.counts.grad
            state, info = step(gen, state, potential, torch.full((4,), 0.8), n_leapfrog)
            assert target.counts.grad - before == 20 * n_leapfrog
            assert state.swap_parity == (i + 1) % 2 and info.swap_proposed[i % 2]
            swaps += int(info.is_swapped.sum())
        assert swaps > 0  # the check below covers swapped replicas
        energy, grad = target.target.energy_and_grad(state.position.reshape(20, 2))
        assert torch.allclose(state.energy, energy.reshape(4, 5), rtol=1e-12, atol=1e-12)
        assert torch.allclose(state.grad, grad.reshape(4, 5, 2), rtol=1e-12, atol=1e-12)


def test_swaps_with_a_non_finite_energy_are_rejected(gen):
    """Replica 0 sits where E = inf (chain 0) or NaN (chain 1); chain 2 is a sure swap."""
    betas = torch.tensor([1.0, 0.5])
    cold = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.4, 3.0]])  # E = inf, NaN, 4.58
    hot = torch.zeros(3, 2)  # E = 0
    for bad, chain in ((math.inf, 0), (math.nan, 1)):
        target = Walled(bad)
        potential = proposal.potential_from(target.energy_and_grad)
        state = tempering.init(torch.stack([cold, hot]), potential)
        step = tempering.build_kernel(betas, "mala")
        # tiny local moves: energies stay within 1e-6 of their start
        new, info = step(gen, state, potential, 1e-8)
        assert not torch.isfinite(new.energy[0, chain]) and not info.is_swapped[0, chain]
        assert info.swap_acceptance_rate[0, chain] == 0.0
        # log α = (1 − 0.5)(4.58 − 0) > 0: always swapped, with its cached energy
        assert info.is_swapped[0, 2] and info.swap_acceptance_rate[0, 2] == 1.0
        assert torch.allclose(new.position[1, 2], cold[2], atol=1e-6)
        assert torch.allclose(new.energy[1, 2], torch.tensor(0.5 * (0.16 + 9.0)), atol=1e-5)


def test_build_kernel_rejects_bad_ladders_and_kernels():
    with pytest.raises(ValueError, match="decrease"):
        tempering.build_kernel(torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="local kernel"):
        tempering.build_kernel(torch.tensor([1.0, 0.5]), "nuts")
