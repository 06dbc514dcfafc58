"""2-D U(1) lattice gauge theory: exact values, exact sampler, HMC reference, metrics.

Every statistical assertion is within 4 standard errors (two-sided, ≈ 6e-5
false-failure probability each under a normal approximation), float64, seeded.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.special import ive

from boltzbench.core import SampleSet
from boltzbench.mcmc.diagnostics import effective_sample_size
from boltzbench.mcmc.reference import ConvergenceError, mcmc_reference
from boltzbench.metrics import METRICS, evaluate
from boltzbench.metrics.gauge import chi_q_error, plaquette_error, topo_tau_int
from boltzbench.targets import build_target
from boltzbench.targets.base import wrap_angle
from boltzbench.targets.gauge import (
    U1,
    _g_moments,
    exact_plaquette,
    exact_topological_susceptibility,
    infinite_volume_plaquette,
    infinite_volume_topological_susceptibility,
    links_with_plaquettes,
    log_partition_function,
    plaquette_angles,
)

SIGMAS = 4.0


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mean_se(values: torch.Tensor, ess: float | None = None) -> tuple[float, float]:
    """Mean and its standard error (with ``ess`` effective samples, default all)."""
    n = values.numel() if ess is None else ess
    return float(values.mean()), float(values.std()) / math.sqrt(n)


# ------------------------------------------------------------------ exact values
@pytest.mark.parametrize("L,beta", [(2, 1.0), (2, 2.0), (3, 1.0)])
def test_exact_values_against_uniform_monte_carlo(L, beta):
    """log Z, ⟨cos θ_P⟩ and ⟨Q²⟩ by 10⁶ uniform draws of the links on the torus
    (Z = (2π)^{2V} E_unif[e^{−S}], self-normalized for the moments, delta-method
    errors) agree with the character expansion within 4 s.e.; at L = 2 the n ≠ 0
    winding terms are needed (dropping them is off by > 20 s.e.)."""
    t = U1(L, beta)
    x = (torch.rand(10**6, t.dim, generator=_gen(), dtype=torch.float64) - 0.5) * 2 * math.pi
    w = torch.exp(-t.energy(x))
    z_mean, z_se = _mean_se(w)
    log_z = 2 * t.volume * math.log(2 * math.pi) + math.log(z_mean)
    assert abs(log_z - t.log_Z) <= SIGMAS * z_se / z_mean
    plaq, q2 = t.plaquettes(x).mean(1), t.topological_charge(x) ** 2
    for obs, exact, no_winding in [
        (plaq, t.exact_plaquette(), infinite_volume_plaquette(beta)),
        (q2 / t.volume, t.exact_topological_susceptibility(), None),
    ]:
        est, se = _mean_se(w * obs)
        ratio = est / z_mean
        ratio_se = _mean_se(w * (obs - ratio))[1] / z_mean  # delta method
        assert abs(ratio - exact) <= SIGMAS * ratio_se, (ratio, exact, ratio_se)
        if no_winding is not None and L == 2:
            assert abs(ratio - no_winding) > 20 * ratio_se
    if L == 2:  # the n = 0 term alone for χ_Q (the large-volume value) is also far off
        chi_inf = infinite_volume_topological_susceptibility(beta)
        assert abs(t.exact_topological_susceptibility() - chi_inf) > 0.1 * chi_inf


@pytest.mark.parametrize("beta", [0.5, 2.0, 6.0])
def test_bessel_series_against_quadrature(beta):
    """g₂(n) = (1/2π)∫φ² cos(nφ)e^{β cos φ}, g₁(n) = (1/2π)∫φ sin(nφ)e^{β cos φ} and
    I_n(β) = (1/2π)∫cos(nφ)e^{β cos φ} (all × e^{−β}) match scipy quad to 1e-10."""
    n = np.arange(0, 5)
    g2, g1 = _g_moments(n, beta)

    def integral(f):
        return quad(
            lambda p: f(p) * math.exp(beta * (math.cos(p) - 1)),
            -math.pi,
            math.pi,
            epsabs=1e-13,
            limit=200,
        )[0] / (2 * math.pi)

    for k in n:
        assert g2[k] == pytest.approx(integral(lambda p, k=k: p * p * math.cos(k * p)), abs=1e-10)
        assert g1[k] == pytest.approx(integral(lambda p, k=k: p * math.sin(k * p)), abs=1e-10)
        assert ive(k, beta) == pytest.approx(integral(lambda p, k=k: math.cos(k * p)), abs=1e-10)


@pytest.mark.parametrize("beta", [1.0, 2.0, 6.0])
def test_large_volume_limit_is_bessel_ratio(beta):
    """At L = 64 (V = 4096) the finite-volume values equal the infinite-volume
    I₁(β)/I₀(β) and ⟨φ²⟩_β/4π² to 1e-12; at L = 2 the plaquette differs by > 1e-3
    (the winding sectors), so the comparison is not vacuous."""
    v = 64 * 64
    assert exact_plaquette(v, beta) == pytest.approx(infinite_volume_plaquette(beta), abs=1e-12)
    chi = infinite_volume_topological_susceptibility(beta)
    assert exact_topological_susceptibility(v, beta) == pytest.approx(chi, rel=1e-12)
    assert abs(exact_plaquette(4, beta) - infinite_volume_plaquette(beta)) > 1e-3
    assert math.isfinite(log_partition_function(v, beta))
    assert infinite_volume_plaquette(2.0) == pytest.approx(0.697774657964008, abs=1e-12)


def test_log_z_on_one_plaquette():
    """V = 1: every plaquette angle is 0, so Z = (2π)² e^β (Σ_n I_n(β) = e^β)."""
    assert log_partition_function(1, 1.7) == pytest.approx(2 * math.log(2 * math.pi) + 1.7)


# ---------------------------------------------------------------- target, sampler
def test_energy_is_periodic_and_gauge_invariant():
    """S(x + 2π e_i) = S(x); S and Q are invariant under θ_μ(x) → α(x) + θ_μ(x) − α(x+μ̂)."""
    t = U1(4, 2.0)
    x = 3 * torch.randn(8, t.dim, generator=_gen(), dtype=torch.float64)
    shift = torch.zeros(t.dim, dtype=torch.float64)
    shift[5] = 2 * math.pi
    torch.testing.assert_close(t.energy(x + shift), t.energy(x))
    alpha = 4 * torch.randn(8, 4, 4, generator=_gen(1), dtype=torch.float64)
    gauge = torch.stack([alpha - alpha.roll(-1, 1), alpha - alpha.roll(-1, 2)], 1)
    y = x + gauge.reshape(8, -1)
    torch.testing.assert_close(t.energy(y), t.energy(x))
    torch.testing.assert_close(t.topological_charge(y), t.topological_charge(x))
    assert bool(t.periodic_mask.all()) and t.periodic_mask.shape == (t.dim,)


def test_links_with_given_plaquettes_and_integer_charge():
    """The axial-gauge construction reproduces any plaquettes with Σφ ≡ 0 mod 2π,
    and Q of any link field is an integer to 1e-12."""
    phi = (torch.rand(16, 5, 5, generator=_gen(), dtype=torch.float64) - 0.5) * 2 * math.pi
    phi[:, -1, -1] = wrap_angle(-phi.flatten(1)[:, :-1].sum(1))
    back = plaquette_angles(links_with_plaquettes(phi))
    assert wrap_angle(back - phi).abs().max() < 1e-9
    q = U1(5, 1.0).topological_charge(20 * torch.randn(64, 50, generator=_gen(2)).double())
    assert (q - q.round()).abs().max() < 1e-12 and q.abs().max() >= 1


@pytest.mark.parametrize("L,beta", [(4, 3.0), (6, 5.0)])
def test_exact_sampler_matches_exact_values(L, beta):
    """20,000 exact samples: plaquette and χ_Q within 4 s.e. of the exact values,
    samples in [−π, π)."""
    t = U1(L, beta)
    x = t.sample(20_000, _gen())
    assert x.min() >= -math.pi and x.max() < math.pi
    p, se = _mean_se(t.plaquettes(x).mean(1))
    assert abs(p - t.exact_plaquette()) <= SIGMAS * se
    chi, se = _mean_se(t.topological_charge(x) ** 2 / t.volume)
    assert abs(chi - t.exact_topological_susceptibility()) <= SIGMAS * se


# ------------------------------------------------------------------ HMC reference
def _chains(values: torch.Tensor, n_chains: int) -> torch.Tensor:
    return values.reshape(-1, n_chains).T  # draw-major rows → (chains, draws)


def test_hmc_reference_matches_exact_values():
    """The ``mcmc`` reference with HMC moves (``algorithm: pt, n_temps: 1, kernel:
    hmc``) at L = 8, β = 2: R̂ gated on the gauge-invariant features (plaquette, Q),
    samples wrapped to [−π, π), and the plaquette and χ_Q within 4 s.e. of the exact
    values, the s.e. from the autocorrelation ESS (τ_int) of each observable."""
    t, chains = U1(8, 2.0), 16
    s = mcmc_reference(
        t,
        chains * 500,
        _gen(),
        algorithm="pt",
        n_temps=1,
        kernel="hmc",
        n_leapfrog=8,
        n_chains=chains,
        n_warmup=300,
        n_burnin=100,
        thinning=1,
        step_size=0.2,
        rhat_max=1.05,
    )
    assert s.attrs["rhat_of"] == "energy and the target's invariant features"
    assert s.x.min() >= -math.pi and s.x.max() < math.pi
    torch.testing.assert_close(s.energy, t.energy(s.x))
    for obs, exact in [
        (t.plaquettes(s.x).mean(1), t.exact_plaquette()),
        (t.topological_charge(s.x) ** 2 / t.volume, t.exact_topological_susceptibility()),
    ]:
        ess = float(effective_sample_size(_chains(obs, chains)))
        mean, se = _mean_se(obs, ess)
        assert abs(mean - exact) <= SIGMAS * se, (mean, exact, se, ess)


def test_hmc_reference_gate_catches_frozen_topology():
    """At β = 8 chains started far apart (init_scale 3) stay in their topological
    sectors for 200 steps: R̂ on Q is far above 1.01 and the reference refuses."""
    with pytest.raises(ConvergenceError, match="invariant features"):
        mcmc_reference(
            U1(6, 8.0),
            8 * 20,
            _gen(),
            algorithm="pt",
            n_temps=1,
            kernel="hmc",
            n_leapfrog=4,
            n_chains=8,
            n_warmup=100,
            n_burnin=0,
            thinning=5,
            init_scale=3.0,
        )


# ---------------------------------------------------------------------- metrics
def _charge_chain(q: torch.Tensor, L: int = 4) -> torch.Tensor:
    """Link fields whose Q equals ``q`` ``(rows,)``: every plaquette 2πq/V."""
    phi = (2 * math.pi * q / (L * L))[:, None, None].expand(-1, L, L).double()
    return links_with_plaquettes(phi.contiguous()).reshape(q.shape[0], -1)


def test_topo_tau_int_of_a_known_chain():
    """Q flips sign with probability f = 0.1 per draw (ρ(t) = 0.8^t, τ_int = 1/2 +
    0.8/0.2 = 4.5): 16 chains × 4000 draws, stored draw-major, give τ_int within
    15 % (≈ 3 s.e.); the same rows shuffled give ≈ 1/2; a set without chain attrs
    gives None."""
    t, chains, draws, g = U1(4, 1.0), 16, 4000, _gen()
    flips = torch.rand(draws, chains, generator=g) < 0.1
    start = torch.where(torch.rand(1, chains, generator=g) < 0.5, -1.0, 1.0)
    q = start * torch.cumprod(torch.where(flips, -1.0, 1.0), 0)  # (draws, chains)
    x = _charge_chain(q.reshape(-1))
    attrs = {"n_chains": chains, "n_draws_per_chain": draws}
    s = SampleSet(x=x, energy=t.energy(x), attrs=attrs)
    assert topo_tau_int(s, t) == pytest.approx(4.5, rel=0.15)
    perm = torch.randperm(x.shape[0], generator=g)
    shuffled = SampleSet(x=x[perm], energy=s.energy[perm], attrs=attrs)
    assert topo_tau_int(shuffled, t) == pytest.approx(0.5, rel=0.15)
    assert topo_tau_int(SampleSet(x=x, energy=s.energy), t) is None
    frozen = SampleSet(
        x=_charge_chain(torch.ones(64)),
        energy=torch.zeros(64),
        attrs=attrs | {"n_chains": 4, "n_draws_per_chain": 16},
    )
    assert topo_tau_int(frozen, t) == math.inf


def test_gauge_metrics_in_evaluate():
    """Exact samples score plaquette and χ_Q errors within 4 s.e. of 0 (s.e. from the
    samples); the metrics are registered and apply to u1 only."""
    t = build_target({"kind": "u1", "params": {"L": 4, "beta": 2.0}})
    x = t.sample(4000, _gen())
    s = SampleSet(x=x, energy=t.energy(x))
    ref = SampleSet(x=x[:50], energy=t.energy(x[:50]))
    out = evaluate(s, t, ref, 4000, _gen(1))
    se_p = _mean_se(t.plaquettes(x).mean(1))[1]
    se_chi = _mean_se(t.topological_charge(x) ** 2 / t.volume)[1]
    assert out["plaquette_error"] <= SIGMAS * se_p
    assert out["chi_q_error"] <= SIGMAS * se_chi / t.exact_topological_susceptibility()
    assert out["topo_tau_int"] is None and out["topo_ess_per_1e6_evals"] is None
    assert plaquette_error(x, None, None, None, t, None) == pytest.approx(out["plaquette_error"])
    assert chi_q_error(x, None, None, None, t, None) == pytest.approx(out["chi_q_error"])
    gaussian = build_target({"kind": "gaussian", "params": {"dim": 2}})
    for name in ("plaquette_error", "chi_q_error", "topo_tau_int", "topo_ess_per_1e6_evals"):
        assert METRICS.build(name).applies(t) and not METRICS.build(name).applies(gaussian)


def test_weights_on_u1_need_a_density_on_the_torus():
    """e^{−S} of U(1) has no finite integral over ℝ^dim: importance weights from a
    density on ℝ^dim estimate a number that grows with the proposal's width (here
    by more than 3 nats from σ = 3 to σ = 6), so the weight metrics are None for
    such a sample set, and are estimates of the exact log Z from a density on the
    torus (uniform draws, within 4 s.e.)."""
    from boltzbench.metrics.weights import elbo_gap, kish_ess, log_z_error, log_z_hat
    from boltzbench.targets import CountingTarget
    from boltzbench.targets.base import periodic_everywhere

    t = build_target({"kind": "u1", "params": {"L": 2, "beta": 1.0}})
    n, d = 200_000, t.dim
    x = (torch.rand(n, d, generator=_gen(), dtype=torch.float64) * 2 - 1) * math.pi
    log_w = -t.energy(x) + d * math.log(2 * math.pi)
    attrs = {"periodic": "circular", "log_Z_elbo": float(log_w.mean())}
    torus = SampleSet(x=x, energy=t.energy(x), log_weight=log_w, attrs=attrs)
    w = torch.exp(log_w - log_w.max())
    se = float(w.std() / w.mean()) / math.sqrt(n)  # delta method for log mean w
    assert log_z_error(torus, t) <= SIGMAS * se
    assert 0 < kish_ess(torus, t) <= 1 and elbo_gap(torus, t) >= 0
    flat = SampleSet(x=x, energy=t.energy(x), log_weight=log_w, attrs={"log_Z_hat": 1.0})
    for metric in (log_z_hat, log_z_error, kish_ess, elbo_gap):
        assert metric(flat, t) is None
    estimates = []
    for sigma in (3.0, 6.0):
        y = sigma * torch.randn(n, d, generator=_gen(1), dtype=torch.float64)
        log_q = -0.5 * (y / sigma).pow(2).sum(1) - d * math.log(sigma * math.sqrt(2 * math.pi))
        estimates.append(float(torch.logsumexp(-t.energy(y) - log_q, 0)) - math.log(n))
    assert estimates[1] - estimates[0] > 3
    gaussian = build_target({"kind": "gaussian", "params": {"dim": 2}})
    assert periodic_everywhere(CountingTarget(t)) and not periodic_everywhere(gaussian)


def test_the_sample_step_stores_u1_draws_on_the_canonical_domain(tmp_path):
    """MALA moves the links in ℝ^dim, and along the gauge orbits (where S is flat) its
    chains drift past ±π; the sample step stores the draws wrapped into [−π, π), with
    the energies they had (S is periodic)."""
    from boltzbench.io import dataset_to_samples, read_store
    from boltzbench.methods import build_method
    from boltzbench.steps import sample, train

    target = {"kind": "u1", "params": {"L": 2, "beta": 1.0}}
    params = {"n_chains": 8, "n_warmup": 100, "n_burnin": 100, "thinning": 5, "step_size": 0.5}
    method = {"kind": "mala", "params": params}
    t = build_target(target)
    raw = build_method(method).fit(t, None, _gen()).sample(t, 400, _gen())
    assert raw.x.abs().max() > math.pi  # unwrapped, the chains leave [−π, π)
    job = dict(target_name="u1", target=target, method_name="mala", method=method, seed=0)
    out = {k: str(tmp_path / f"{k}.zarr") for k in ("model", "samples")}
    train.run(inputs={}, outputs={"model": out["model"]}, n_samples=400, **job)
    sample.run(
        inputs={"model": out["model"]}, outputs={"samples": out["samples"]}, n_samples=400, **job
    )
    stored = dataset_to_samples(read_store(out["samples"]))
    assert stored.x.min() >= -math.pi and stored.x.max() < math.pi
    assert torch.allclose(stored.energy, t.energy(stored.x), atol=1e-5)
