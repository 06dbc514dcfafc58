"""Tests of the ``flow_matching`` method (OT-path CFM, RK4 likelihood, EGNN field).

The likelihood is checked against the closed form of a Gaussian-to-Gaussian
flow, whose exact marginal field is linear; Hutchinson's estimator against the
exact trace with a stated statistical tolerance; the EGNN's symmetries to 1e-10
in float64. Statistical checks are seeded and state their tolerance.
"""

from __future__ import annotations

import itertools
import math
import time

import pytest
import torch
from torch import nn

from boltzbench.checkpoint import Checkpoint
from boltzbench.methods.egnn import EGNN
from boltzbench.methods.flow_matching import (
    FlowMatching,
    MLPField,
    ParticleField,
    exact_divergence,
    gaussian_log_prob,
    hutchinson_divergence,
    integrate_with_divergence,
    ot_pairing_permutation,
    rademacher,
)
from boltzbench.metrics.distributional import wasserstein2
from boltzbench.targets import CountingTarget, build_target
from boltzbench.targets.analytic import GMM
from boltzbench.targets.gaussian import Gaussian


class GaussianOTField(nn.Module):
    """The exact marginal field of the OT path from N(0, s₀² I) to N(μ, s² I).

    With a(t) = 1 − (1 − σ_min) t, x_t = a x₀ + t x₁ is N(tμ, σ_t² I) with
    σ_t² = a² s₀² + t² s², and E[u_t | x_t = x] = μ + (t s² − (1 − σ_min) a s₀²)/σ_t² (x − tμ)
    (Gaussian conditioning). Its flow is x₁ = μ + sqrt(σ_min² + s²/s₀²) x₀ (s₀ = 1 below).
    """

    def __init__(self, mu: float, s: float, sigma_min: float = 0.0, s0: float = 1.0):
        super().__init__()
        self.mu, self.s, self.sigma_min, self.s0 = mu, s, sigma_min, s0

    def forward(self, x, t):
        a = (1 - (1 - self.sigma_min) * t)[:, None]
        tt = t[:, None]
        cov = tt * self.s**2 - (1 - self.sigma_min) * a * self.s0**2
        return self.mu + cov / (a**2 * self.s0**2 + tt**2 * self.s**2) * (x - tt * self.mu)


def with_field(method: FlowMatching, field: nn.Module, dim: int, s0: float) -> FlowMatching:
    """``method`` with a given field and the base N(0, s₀² I), as if fitted."""
    method.field_ = field
    method.base_loc_, method.base_std_ = torch.zeros(dim), torch.full((dim,), s0)
    return method


def random_mlp_field(dim: int) -> MLPField:
    """A float64 MLP field with N(0, 1) weights: a strongly non-diagonal Jacobian."""
    torch.manual_seed(0)
    field = MLPField(dim, 16, 2, torch.zeros(dim), torch.ones(dim)).double()
    with torch.no_grad():
        for p in field.parameters():
            p.normal_()
    return field


def closed_form_error(n_steps: int, sigma_min: float = 0.0) -> tuple[float, float]:
    """Max errors of the RK4 flow map x₁ and of log q_RK4(x₁) against
    μ + sqrt(σ_min² + s²) x₀ and log N(x₁; μ, (σ_min² + s²) I), over 200 points in 3-D."""
    mu, s = 1.5, 0.7
    x0 = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    x1, integral = integrate_with_divergence(GaussianOTField(mu, s, sigma_min), x0, n_steps)
    width = math.sqrt(sigma_min**2 + s**2)
    log_q = gaussian_log_prob(x0, torch.zeros(3), 1.0) - integral
    log_p = gaussian_log_prob(x1, torch.full((3,), mu), width)
    return float((x1 - mu - width * x0).abs().max()), float((log_q - log_p).abs().max())


# ------------------------------------------------------------------ the likelihood


@pytest.mark.parametrize("sigma_min", [0.0, 0.05])
def test_rk4_log_density_of_the_exact_field_is_the_gaussian_density(sigma_min):
    # 40 RK4 steps: the error is O(h⁴); measured 1e-8 (x₁) and 5e-8 (log q)
    x_error, log_q_error = closed_form_error(40, sigma_min)
    assert x_error < 1e-6 and log_q_error < 1e-6


def test_rk4_is_fourth_order():
    # halving h divides the error by 2⁴ = 16 asymptotically (measured: 13.9 from 40
    # to 80 steps, 11.3 from 20 to 40, still pre-asymptotic); allow 12-20
    ratio = closed_form_error(40)[1] / closed_form_error(80)[1]
    assert 12 < ratio < 20


def test_hutchinson_is_unbiased_for_the_divergence_and_the_log_density():
    field, k = random_mlp_field(4), 20_000
    x = torch.randn(1, 4, generator=torch.Generator().manual_seed(1)).expand(k, 4)
    t = torch.full((k,), 0.3)
    _, exact = exact_divergence(field, x, t)
    probes = rademacher((1, k, 4), torch.Generator().manual_seed(2), torch.float64)
    _, est = hutchinson_divergence(probes)(field, x, t)
    assert est.std() > 1.0, "a non-diagonal Jacobian: the estimate is random"
    # the mean of k independent estimates is within 5 standard errors of the trace
    assert abs(float(est.mean() - exact[0])) < 5 * float(est.std()) / math.sqrt(k)

    # integrated along the trajectory with the probe fixed: the same x₁, and ∫ div
    # unbiased (each row is one draw of the probe)
    x1_exact, int_exact = integrate_with_divergence(field, x[:1], 8)
    x1, integral = integrate_with_divergence(field, x, 8, hutchinson_divergence(probes))
    assert torch.allclose(x1, x1_exact.expand(k, 4), atol=1e-12)
    se = float(integral.std()) / math.sqrt(k)
    assert abs(float(integral.mean() - int_exact[0])) < 5 * se


def test_log_w_is_log_Z_when_the_field_is_exact():
    # q = p exactly (up to RK4 error): every log weight equals log Z; base N(0, 0.5² I)
    target = Gaussian(dim=2, mean=1.5, scale=0.7)
    method = FlowMatching(dtype="float64", n_ode_steps=40, sample_batch_size=300)
    with_field(method, GaussianOTField(1.5, 0.7, s0=0.5), 2, 0.5)
    s = method.sample(target, 1000, torch.Generator().manual_seed(0))
    assert s.attrs["trace_estimator"] == "exact"
    assert float((s.log_weight - target.log_Z).abs().max()) < 1e-6
    assert s.attrs["log_Z_hat"] == pytest.approx(target.log_Z, abs=1e-6)


def test_the_log_Z_estimator_is_unbiased_when_q_differs_from_p():
    # q = N(μ, s² I) from the exact field, p correlated (ρ = 0.5): mean w = Z in
    # expectation; tolerance 4 standard errors of the mean of w
    target = Gaussian(dim=2, mean=1.5, scale=0.7, rho=0.5)
    method = FlowMatching(dtype="float64", n_ode_steps=20, sample_batch_size=4000)
    with_field(method, GaussianOTField(1.5, 0.8), 2, 1.0)
    s = method.sample(target, 20_000, torch.Generator().manual_seed(3))
    w = torch.exp(s.log_weight - target.log_Z)  # w / Z, mean 1
    assert w.std() > 0.1, "the weights vary: the test is not trivial"
    assert abs(float(w.mean()) - 1) < 4 * float(w.std()) / math.sqrt(len(w))


# ------------------------------------------------------------------ training


def test_ot_pairing_is_the_optimal_permutation():
    gen = torch.Generator().manual_seed(4)
    x0, x1 = torch.randn(6, 2, generator=gen), torch.randn(6, 2, generator=gen)

    def cost(p):
        return float((x0 - x1[list(p)]).pow(2).sum())

    best = min(cost(p) for p in itertools.permutations(range(6)))
    assert cost(ot_pairing_permutation(x0, x1).tolist()) == pytest.approx(best, rel=1e-12)


def test_trains_on_a_gaussian_mixture_within_a_cpu_minute(gen):
    target = GMM(n_modes=4, loc_scaling=5.0)
    data = target.sample(4000, gen)
    t0 = time.process_time()
    params = dict(hidden_features=64, n_layers=3, n_iter=1000, batch_size=256, lr=3e-3)
    method = FlowMatching(**params).fit(target, data, gen)
    s = method.sample(target, 2000, gen)
    assert time.process_time() - t0 < 60
    # measured: ESS 0.91, W2 0.44, 4 CPU s (W2 of 2000 vs 2000 exact samples: ~0.3)
    assert s.attrs["ess_kish"] > 0.6
    assert wasserstein2(s.x, target.sample(2000, gen)) < 0.8
    assert s.attrs["log_Z_hat"] == pytest.approx(target.log_Z, abs=0.1)


def test_base_scale_data_is_the_rms_deviation_from_the_base_centre(gen):
    # MLP: per coordinate, about the target's base location (0 here)
    data = torch.randn(400, 2, generator=gen) * torch.tensor([0.01, 2.0]) + 0.5
    method = FlowMatching(**TINY, base_scale="data").fit(Gaussian(dim=2), data, gen)
    assert torch.allclose(method.base_std_, data.pow(2).mean(0).sqrt(), rtol=1e-12)
    # EGNN: pooled over the coordinates (an isotropic base) and centred at 0
    dw4 = build_target({"kind": "dw4"})
    data = dw4.base_location() + 0.3 * torch.randn(100, dw4.dim, generator=gen)
    method = FlowMatching(**{**TINY, "n_iter": 2}, base_scale="data").fit(dw4, data, gen)
    assert torch.equal(method.base_loc_, torch.zeros(dw4.dim))
    assert torch.allclose(method.base_std_, data.pow(2).mean().sqrt().expand(dw4.dim))


TINY = dict(hidden_features=16, n_layers=2, n_iter=60, batch_size=32, n_ode_steps=4)


class _Killed(Exception):
    pass


def test_resumed_training_equals_an_uninterrupted_one(tmp_path):
    target = Gaussian(dim=2, mean=1.0, rho=0.5)
    data = target.sample(500, torch.Generator().manual_seed(0))

    def run(ckpt):
        gen = torch.Generator().manual_seed(3)
        return FlowMatching(**TINY, ot_pairing=True).fit(target, data, gen, ckpt)

    ckpt = Checkpoint(tmp_path / "c.pt", every=10, key="k")
    save = ckpt.save

    def save_then_die(step, state):
        save(step, state)
        if step == 30:
            raise _Killed

    ckpt.save = save_then_die
    with pytest.raises(_Killed):
        run(ckpt)
    again = Checkpoint(tmp_path / "c.pt", every=10, key="k")
    resumed, ref = run(again), run(Checkpoint(None))
    assert again.resumed_from == 30
    for k, v in ref.field_.state_dict().items():
        assert torch.equal(v, resumed.field_.state_dict()[k]), k
    assert resumed.history_ == ref.history_ and len(ref.history_["loss"]) == 60


def test_divergence_raises_a_clear_error(gen):
    target = Gaussian(dim=2)
    data = target.sample(200, gen)
    with pytest.raises(RuntimeError, match=r"flow_matching diverged at step \d+ .*last finite"):
        FlowMatching(**TINY, lr=1e6).fit(target, data, gen)
    bad = data.clone()
    bad[:, 0] = math.nan
    with pytest.raises(RuntimeError, match=r"diverged at step 0 of 60: loss is nan"):
        FlowMatching(**TINY).fit(target, bad, gen)


def test_model_state_round_trip_samples_identically(gen):
    target = Gaussian(dim=3, mean=2.0)
    method = FlowMatching(**TINY, exact_trace_max_dim=2).fit(target, target.sample(300, gen), gen)
    state = method.model_state()
    restored = FlowMatching(**TINY, exact_trace_max_dim=2).load_model_state(target, state)
    a = method.sample(target, 50, torch.Generator().manual_seed(7))
    b = restored.sample(target, 50, torch.Generator().manual_seed(7))
    assert a.attrs["trace_estimator"] == "hutchinson"  # dim 3 > 2
    assert torch.equal(a.x, b.x) and torch.equal(a.log_q, b.log_q)
    assert torch.allclose(a.log_weight, -a.energy - a.log_q)
    for bad in ({**TINY, "hidden_features": 8}, {**TINY, "equivariant": True}):
        with pytest.raises(ValueError, match="does not match|particle target"):
            FlowMatching(**bad).load_model_state(target, state)
    with pytest.raises(ValueError, match="needs reference samples"):
        FlowMatching(**TINY).fit(target, None, gen)


# ------------------------------------------------------------------ particles


def random_rotation(d: int, gen: torch.Generator) -> torch.Tensor:
    """A random orthogonal matrix (QR of a Gaussian matrix; may be a reflection)."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
    return q


def perturbed_egnn(n_particles: int) -> EGNN:
    """A float64 EGNN whose small initial coordinate layers are made order one."""
    torch.manual_seed(0)
    egnn = EGNN(n_particles, in_features=3, hidden_features=16, n_layers=3).double()
    with torch.no_grad():
        for layer in egnn.layers:
            layer.coord[-1].weight.normal_()
    return egnn


@pytest.mark.parametrize("d", [2, 3])
def test_egnn_is_rotation_translation_and_permutation_equivariant(d, gen):
    n_particles = 5
    egnn = perturbed_egnn(n_particles)
    x = torch.randn(8, n_particles, d, generator=gen)
    h = torch.randn(8, 1, 3, generator=gen).expand(-1, n_particles, -1)  # identical particles
    v = egnn(x, h)
    assert v.abs().mean() > 0.01, "the field is not trivially small"
    assert v.mean(dim=1).abs().max() < 1e-12  # mean-free
    r, c = random_rotation(d, gen), torch.randn(d, generator=gen)
    assert (egnn(x @ r + c, h) - v @ r).abs().max() < 1e-10
    perm = torch.randperm(n_particles, generator=gen)
    assert (egnn(x[:, perm], h) - v[:, perm]).abs().max() < 1e-10


def test_the_chart_flow_commutes_with_rotations_and_keeps_log_q(gen):
    # φ₁(R x₀) = R φ₁(x₀) and the same ∫ div, so log q is rotation-invariant
    target = build_target({"kind": "dw4"})
    field = ParticleField(target, hidden_features=16, n_layers=2).double()
    with torch.no_grad():
        for layer in field.egnn.layers:
            layer.coord[-1].weight.normal_()
    r = random_rotation(2, gen)

    def rotate(x):
        return target.coordinates(target.positions(x) @ r)

    x0 = torch.randn(16, target.dim, generator=gen)
    assert torch.allclose(rotate(x0).norm(dim=1), x0.norm(dim=1))  # the base is invariant
    x1, integral = integrate_with_divergence(field, x0, 6)
    x1r, integral_r = integrate_with_divergence(field, rotate(x0), 6)
    assert (x1r - rotate(x1)).abs().max() < 1e-10
    assert (integral_r - integral).abs().max() < 1e-10
    assert (x1 - x0).abs().mean() > 0.1, "the flow moves the particles"


def test_the_equivariant_model_runs_on_dw4_and_lj13(gen):
    target = CountingTarget(build_target({"kind": "dw4"}))
    data = target.base_location() + 0.3 * torch.randn(500, target.dim, generator=gen)
    method = FlowMatching(**{**TINY, "n_iter": 30}, ot_pairing=True).fit(target, data, gen)
    assert target.counts.energy == 0  # training uses the data only
    s = method.sample(target, 64, gen)
    assert s.attrs["vector_field"] == "egnn" and s.attrs["trace_estimator"] == "exact"
    assert torch.isfinite(s.log_q).all() and target.counts.energy == 64
    assert torch.allclose(s.log_weight, -s.energy - s.log_q)

    lj = build_target({"kind": "lj"})  # dim 36 > 10: Hutchinson
    data = lj.base_location() + 0.05 * torch.randn(200, lj.dim, generator=gen)
    s = FlowMatching(**{**TINY, "n_iter": 5}).fit(lj, data, gen).sample(lj, 16, gen)
    assert s.attrs["trace_estimator"] == "hutchinson" and torch.isfinite(s.log_q).all()
    with pytest.raises(ValueError, match="particle target"):
        FlowMatching(equivariant=True).fit(Gaussian(dim=2), torch.zeros(4, 2), gen)
