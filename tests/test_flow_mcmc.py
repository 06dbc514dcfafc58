"""Tests of flow-proposal MCMC: the IMH and mixed kernels, and the ``FlowMCMC`` method.

Kernel tests use exact Gaussian "flows" (any callable returning draws and log q);
the method test trains a real flow on a two-mode mixture with known weights.
Every statistical check is seeded and states its tolerance.
"""

import math

import pytest
import torch

from boltzbench.checkpoint import Checkpoint
from boltzbench.jobs import job_checkpoint
from boltzbench.mcmc import flow_proposal as fp
from boltzbench.methods.flow_mcmc import FlowMCMC
from boltzbench.methods.mala import MALA
from boltzbench.targets import CountingTarget, Target
from boltzbench.targets.gaussian import Gaussian

# ------------------------------------------------------------------ helpers


def gaussian_proposal(mean: torch.Tensor, chol: torch.Tensor):
    """``(propose, log_prob)`` of N(mean, chol cholᵀ): an exact, closed-form "flow"."""
    dim = mean.shape[0]
    log_det = torch.log(torch.diagonal(chol)).sum()

    def log_prob(x):
        z = torch.linalg.solve_triangular(chol, (x - mean).T, upper=False).T
        return -0.5 * (z**2).sum(-1) - log_det - 0.5 * dim * math.log(2 * math.pi)

    def propose(generator, n):
        y = mean + torch.randn(n, dim, generator=generator) @ chol.T
        return y, log_prob(y)

    return propose, log_prob


class TwoModes(Target):
    """w N((−6, 0), I) + (1 − w) N((6, 0), I) in 2-D, normalized (log Z = 0).

    The modes are 12 standard deviations apart: the energy barrier at x₀ = 0 is
    about 18 k_BT above the minima, which MALA does not cross in a test's length.
    """

    dim = 2
    exact_sampling = True
    log_Z = 0.0

    def __init__(self, w: float = 0.3, sep: float = 6.0):
        super().__init__()
        self.w, self.sep = w, sep

    def energy(self, x):
        base = -0.5 * x[:, 1] ** 2 - math.log(2 * math.pi)
        left = base - 0.5 * (x[:, 0] + self.sep) ** 2 + math.log(self.w)
        right = base - 0.5 * (x[:, 0] - self.sep) ** 2 + math.log(1 - self.w)
        return -torch.logaddexp(left, right)

    def sample(self, n, generator):
        side = torch.where(torch.rand(n, generator=generator) < self.w, -1.0, 1.0)
        x = torch.randn(n, 2, generator=generator)
        return x + torch.stack([side * self.sep, torch.zeros(n)], 1)


class NaNAfter(Target):
    """A standard normal whose energy turns NaN from the ``after``-th call on."""

    dim = 2

    def __init__(self, after: int):
        super().__init__()
        self.after, self.calls = after, 0

    def energy(self, x):
        self.calls += 1
        e = 0.5 * (x**2).sum(-1)
        return e * math.nan if self.calls > self.after else e


FLOW = {"mode": "mle", "transforms": 4, "hidden_features": [32, 32], "n_iter": 250}
MIXTURE_WEIGHT_RIGHT = 0.7


@pytest.fixture(scope="module")
def mixture_model():
    """(target, model state) of a flow trained by MLE on 3000 exact mixture samples."""
    target, gen = TwoModes(), torch.Generator().manual_seed(0)
    method = FlowMCMC(flow_params=FLOW).fit(target, target.sample(3000, gen), gen)
    return target, method.model_state()


def fitted(mixture_model, **params) -> FlowMCMC:
    target, state = mixture_model
    return FlowMCMC(flow_params=FLOW, **params).load_model_state(target, state)


# ------------------------------------------------------------------ IMH kernel


def test_imh_with_the_exact_target_as_proposal_accepts_every_jump(gen):
    target = Gaussian(dim=2, mean=1.0, scale=1.5, rho=0.7)
    propose, _ = gaussian_proposal(target.mean, target.chol)
    evaluate = fp.energy_only(target.energy)
    state = fp.init(*propose(gen, 500), evaluate)
    step = fp.build_kernel(propose)
    for _ in range(20):
        state, info = step(gen, state, evaluate)
        assert info.is_accepted.all()  # w = p̃/q = Z is the same everywhere
        assert torch.equal(state.position, info.proposal.position)
        assert torch.allclose(info.acceptance_rate, torch.ones(500), rtol=0, atol=1e-12)


def test_closed_form_imh_acceptance_agrees_with_monte_carlo(gen):
    """For p = N(0, 1) and q = N(0, σ²), with x ∼ p and y ∼ q independent,
    E[min(1, w(y)/w(x))] = (4/π) arctan(1/σ) (derived in
    :func:`test_imh_acceptance_and_moments_with_a_wider_proposal`). 10⁶ draws:
    the standard error is < 0.0005; tolerance 0.003."""
    x, y = torch.randn(10**6, generator=gen), 2.0 * torch.randn(10**6, generator=gen)
    a = 0.5 * (1 - 1 / 4.0)  # log w(x) = −a x² + const
    mc = torch.exp(torch.clamp(-a * y**2 + a * x**2, max=0.0)).mean()
    assert float(mc) == pytest.approx(4 / math.pi * math.atan(0.5), abs=3e-3)


def test_imh_acceptance_and_moments_with_a_wider_proposal(gen):
    """p = N(0, 1), q = N(0, 2²) in 1-D: w(x) ∝ exp(−a x²), a = (1 − 1/σ²)/2.

    At stationarity (x ∼ p, y ∼ q) the acceptance rate is
    P(|y| ≤ |x|) + E[w(y)/w(x); |y| > |x|] = (2/π) arctan(1/σ) + (2/π) arctan(1/σ)
    (substituting x = σs in the second term makes both the probability that
    |u| < |v|/σ for independent standard normals u, v), i.e. (4/π) arctan(1/2) = 0.5903.

    2000 chains start at x = 3 and run 50 discarded + 250 kept jumps (500 000
    draws, measured ESS ≈ 2.7·10⁵, so standard errors ≈ 0.002 for the mean and
    0.003 for the variance; the acceptance's spread over seeds is < 0.001): the
    acceptance is checked to ±0.005, the mean to ±0.01 and the variance to ±0.015.
    """
    propose, log_prob = gaussian_proposal(torch.zeros(1), torch.full((1, 1), 2.0))
    evaluate = fp.energy_only(Gaussian(dim=1).energy)
    start = torch.full((2000, 1), 3.0)
    state = fp.init(start, log_prob(start), evaluate)
    step = fp.build_kernel(propose)
    rates, xs = [], []
    for i in range(300):
        state, info = step(gen, state, evaluate)
        if i >= 50:
            rates.append(info.acceptance_rate)
            xs.append(state.position[:, 0])
    x = torch.stack(xs, 1)  # (chains, draws)
    assert float(torch.stack(rates).mean()) == pytest.approx(
        4 / math.pi * math.atan(0.5), abs=0.005
    )
    assert float(x.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(x.var()) == pytest.approx(1.0, abs=0.015)


# ------------------------------------------------------------------ mixed kernel


def test_mixed_kernel_leaves_a_correlated_gaussian_invariant(gen):
    """MALA (2 steps, ε = 0.8) + jumps from a poor proposal N(0, 3² I) on
    N(1, Σ), Σ = 2.25 [[1, 0.7], [0.7, 1]]: the proposal's mean and covariance
    are far from the target's, so a wrong correction would show. 1000 chains
    start at proposal draws; 100 discarded + 200 kept steps (measured ESS ≈
    58 000 per coordinate, so standard errors ≈ 0.006 for the mean and 0.013 for
    a variance). Tolerances: mean ±0.04, covariance entries ±0.08 (≈ 6 standard
    errors; the largest errors over six seeds were 0.016 and 0.023)."""
    target = Gaussian(dim=2, mean=1.0, scale=1.5, rho=0.7)
    propose, log_prob = gaussian_proposal(torch.zeros(2), 3.0 * torch.eye(2))
    state = fp.init(*propose(gen, 1000), target.energy_and_grad)
    step = fp.build_mixed_kernel(propose, log_prob, n_local=2)
    xs, jumps = [], []
    for i in range(300):
        state, info = step(gen, state, target.energy_and_grad, 0.8)
        if i >= 100:
            xs.append(state.position)
            jumps.append(info.jump.is_accepted.double().mean())
    x = torch.cat(xs)
    assert torch.allclose(x.mean(0), target.mean, atol=0.04)
    assert torch.allclose(torch.cov(x.T), target.cov, atol=0.08)
    assert 0.05 < float(torch.stack(jumps).mean()) < 0.95  # both moves do work


def test_mixed_kernel_refuses_zero_local_steps():
    with pytest.raises(ValueError, match="n_local"):
        fp.build_mixed_kernel(lambda g, n: None, lambda x: None, n_local=0)


# ------------------------------------------------------------------ the method


def _chain_sides(s, n_chains: int) -> torch.Tensor:
    """Fraction of each chain's kept draws in the right mode, shape ``(chains,)``."""
    return (s.x[:, 0] > 0).double().reshape(-1, n_chains).mean(0)


def test_flow_jumps_recover_mode_weights_that_mala_cannot(mixture_model, gen):
    """The right mode weighs 0.7. Flow MCMC (IMH and mixed) must give it
    0.7 ± 0.04 (ESS ≈ 3000, standard error ≈ 0.008) with every chain visiting
    both modes; plain MALA chains never leave their starting mode."""
    target = mixture_model[0]
    chains = dict(n_chains=32, n_warmup=50, n_burnin=20, step_size=0.5)
    results = {}
    for kernel in ("imh", "mixed"):
        counted = CountingTarget(target)
        s = fitted(mixture_model, kernel=kernel, n_local=3, **chains).sample(counted, 4000, gen)
        sides = _chain_sides(s, 32)
        assert float(sides.mean()) == pytest.approx(MIXTURE_WEIGHT_RIGHT, abs=0.04), kernel
        assert ((sides > 0) & (sides < 1)).all(), "every chain switches modes"
        assert s.attrs["acceptance_flow"] > 0.5 and s.attrs["rhat_max"] < 1.05
        assert s.attrs["n_energy_evaluations"] == counted.counts.energy
        results[kernel] = s.attrs
    counted = CountingTarget(target)
    plain = MALA(**chains, thinning=1, dtype="float64").sample(counted, 4000, gen)
    assert set(_chain_sides(plain, 32).tolist()) <= {0.0, 1.0}, "no MALA chain crosses"
    mala_ess_per_eval = plain.attrs["ess_min"] / counted.counts.energy
    for kernel, a in results.items():
        print(
            f"{kernel}: acceptance flow {a['acceptance_flow']:.3f} local "
            f"{a['acceptance_local']:.3f}, ESS_min {a['ess_min']:.0f}, "
            f"ESS/energy eval {a['ess_per_energy_evaluation']:.4f}"
        )
    print(
        f"mala: acceptance {plain.attrs['acceptance']:.3f}, ESS_min {plain.attrs['ess_min']:.1f}, "
        f"ESS/energy eval {mala_ess_per_eval:.5f}, R-hat {plain.attrs['rhat_max']:.2f}"
    )
    assert results["imh"]["ess_per_energy_evaluation"] > 20 * mala_ess_per_eval


@pytest.mark.parametrize(
    "kernel, energy, grad",
    # 8 chains, 100 samples: K = 13 draws, S = 5 + 3 + 13·2 = 34 steps per chain
    [("imh", 8 * (1 + 34), 0), ("mixed", 8 * (1 + 34 * 4), 8 * (1 + 34 * 4))],
)
def test_sampling_evaluations_follow_the_formula(mixture_model, gen, kernel, energy, grad):
    method = fitted(
        mixture_model, kernel=kernel, n_local=3, n_chains=8, n_warmup=5, n_burnin=3, thinning=2
    )
    counted = CountingTarget(mixture_model[0])
    s = method.sample(counted, 100, gen)
    assert (counted.counts.energy, counted.counts.grad) == (energy, grad)
    assert s.attrs["n_energy_evaluations"] == energy and s.attrs["n_grad_evaluations"] == grad
    assert s.attrs["ess_per_energy_evaluation"] == pytest.approx(s.attrs["ess_min"] / energy)
    assert s.x.shape == (100, 2) and s.log_weight is None
    assert torch.allclose(s.energy, mixture_model[0].energy(s.x))


# ------------------------------------------------------------------ resume


class _Killed(Exception):
    pass


def _killed_then_resumed(run, target: Target, at: int, path):
    """Run ``run(counted, ckpt)`` until it is killed right after saving step ``at``,
    then again from the checkpoint; returns (result, counts, step resumed from)."""
    times: dict[str, float] = {}
    first = CountingTarget(target)
    ckpt = job_checkpoint(path, 10, ["j"], first, times, "x")
    save = ckpt.save

    def save_then_die(step, state):
        save(step, state)
        if step == at:
            raise _Killed

    ckpt.save = save_then_die
    with pytest.raises(_Killed):
        run(first, ckpt)
    again = CountingTarget(target)
    ckpt = job_checkpoint(path, 10, ["j"], again, times, "x")
    return run(again, ckpt), again.counts, ckpt.resumed_from


@pytest.mark.parametrize("at", [10, 40], ids=["warm-up", "sampling"])
def test_resumed_sampling_equals_an_uninterrupted_run(mixture_model, at, tmp_path):
    method = fitted(mixture_model, n_chains=6, n_warmup=20, n_burnin=10, n_local=2, thinning=2)

    def run(target, ckpt):
        return method.sample(target, 120, torch.Generator().manual_seed(5), ckpt)

    resumed, counts, start = _killed_then_resumed(run, mixture_model[0], at, tmp_path / "c.pt")
    ref_target = CountingTarget(mixture_model[0])
    ref = run(ref_target, Checkpoint(None))
    assert start == at and counts == ref_target.counts
    assert torch.equal(resumed.x, ref.x) and torch.equal(resumed.energy, ref.energy)
    assert resumed.attrs == ref.attrs
    for k, v in ref.diagnostics.items():
        assert torch.equal(resumed.diagnostics[k], v), k


def test_resumed_training_equals_an_uninterrupted_one(tmp_path):
    target = Gaussian(dim=2, rho=0.5)
    params = {"mode": "reverse_kl", "transforms": 2, "hidden_features": [16], "batch_size": 32}
    params["n_iter"] = 40

    def run(counted, ckpt):
        gen = torch.Generator().manual_seed(3)
        return FlowMCMC(flow_params=params).fit(counted, None, gen, ckpt)

    resumed, counts, start = _killed_then_resumed(run, target, 20, tmp_path / "t.pt")
    ref_target = CountingTarget(target)
    ref = run(ref_target, Checkpoint(None))
    assert start == 20 and counts == ref_target.counts
    ref_state = ref.model_state()
    for k, v in resumed.model_state().items():
        assert torch.equal(v, ref_state[k]), k
    assert resumed.history_ == ref.history_


# ------------------------------------------------------------------ the interface


def test_params_round_trip_and_needs_data_follows_the_flow_mode():
    m = FlowMCMC(flow_params={"mode": "mle", "n_iter": 7}, kernel="imh", n_chains=3)
    assert FlowMCMC(**m.get_params()).get_params() == m.get_params()
    assert m.needs_data and not FlowMCMC().needs_data
    with pytest.raises(TypeError, match="no_such"):
        FlowMCMC(flow_params={"no_such": 1})
    with pytest.raises(ValueError, match="kernel"):
        FlowMCMC(kernel="hmc")


def test_a_diverging_flow_raises_and_sampling_needs_a_fit(gen):
    params = {"transforms": 2, "n_iter": 10, "batch_size": 16}
    with pytest.raises(RuntimeError, match=r"diverged at step 3 .*last finite loss -?\d"):
        FlowMCMC(flow_params=params).fit(NaNAfter(3), None, gen)
    with pytest.raises(RuntimeError, match="fit or load_model_state"):
        FlowMCMC().sample(Gaussian(dim=2), 10, gen)
