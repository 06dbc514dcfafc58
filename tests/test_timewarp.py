"""Timewarp (Klein et al. 2023): the conditional MH kernel is exact, the method's costs are
counted, and MD time order reaches ``fit``.

Every run is seeded and in float64. Moments are checked within 4 standard errors
(two-sided, ≈ 6·10⁻⁵ per check for a Gaussian estimator), with the standard error
from the chains' autocorrelation ESS (Vehtari et al. 2021). The proposals are
deliberately wrong, so only the Metropolis–Hastings correction can make the moments
right; each test states where the uncorrected chain would go.
"""

import math

import pytest
import torch

from boltzbench.io import samples_to_dataset, write_store
from boltzbench.mcmc import conditional_proposal as cp
from boltzbench.mcmc.diagnostics import effective_sample_size
from boltzbench.mcmc.flow_proposal import energy_only
from boltzbench.methods.timewarp import Timewarp, training_pairs
from boltzbench.references import Trajectories
from boltzbench.steps.train import _training_data
from boltzbench.targets.counting import CountingTarget
from boltzbench.targets.gaussian import Gaussian

#: the target: N(0, Σ), Σ = [[1, ½], [½, 1]]
RHO = 0.5


def assert_moments(chains: torch.Tensor, what: str) -> None:
    """Mean, variances and covariance of ``chains`` (chains, draws, 2) against N(0, Σ),
    each within 4 standard errors (ESS-based; var of a Gaussian estimator: 2σ⁴/ESS,
    of the cross moment x₀x₁: (1 + ρ²)/ESS)."""
    flat = chains.reshape(-1, 2)
    stats = {
        "mean": (chains, torch.zeros(2), torch.ones(2)),
        "var": (chains**2, torch.ones(2), torch.full((2,), math.sqrt(2.0))),
        "cov": ((chains[..., :1] * chains[..., 1:]), torch.tensor([RHO]), None),
    }
    for name, (series, exact, sd) in stats.items():
        ess = effective_sample_size(series)
        sd = torch.full_like(exact, math.sqrt(1 + RHO**2)) if sd is None else sd
        got = series.reshape(-1, series.shape[-1]).mean(0)
        se = sd / ess.sqrt()
        assert ((got - exact).abs() < 4 * se).all(), (what, name, got, exact, se, ess)
    assert flat.shape[0] > 0


def ar1_trajectories(mean: float, scale: float, a: float, replicas: int, frames: int, seed: int):
    """AR(1) trajectories x_{k+1} = m + a (x_k − m) + s√(1 − a²) ξ (stationary N(m, s² I)),
    rows shuffled as ``merge_md`` shuffles them, with their replica and frame."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.empty(replicas, frames, 2, dtype=torch.float64)
    x[:, 0] = mean + scale * torch.randn(replicas, 2, generator=gen, dtype=torch.float64)
    for k in range(1, frames):
        noise = torch.randn(replicas, 2, generator=gen, dtype=torch.float64)
        x[:, k] = mean + a * (x[:, k - 1] - mean) + scale * math.sqrt(1 - a * a) * noise
    replica = torch.arange(replicas).repeat_interleave(frames)
    frame = torch.arange(frames).repeat(replicas)
    perm = torch.randperm(replicas * frames, generator=gen)
    return Trajectories(x.reshape(-1, 2)[perm], replica[perm], frame[perm])


def test_conditional_kernel_is_exact_with_a_wrong_gaussian_proposal():
    """q(y | x) = N(0.5 x + 0.7, 0.9² I) on N(0, Σ): 400 chains × 300 steps after 50.

    Uncorrected, the AR(1) proposal alone converges to N(1.4, 1.08 I) (mean
    b/(1 − a), variance s²/(1 − a²), no correlation): 1.4 off in the mean and
    0.5 off in the covariance, both > 40 SE here. With the MH correction the
    mean, variances and covariance are N(0, Σ)'s within 4 SE."""
    gen = torch.Generator().manual_seed(1)
    target = Gaussian(dim=2, rho=RHO)
    a, b, s = 0.5, 0.7, 0.9

    def propose(generator, x):
        return a * x + b + s * torch.randn(x.shape, generator=generator, dtype=x.dtype)

    def log_prob(y, x):
        z = (y - a * x - b) / s
        return (-0.5 * z**2 - math.log(s) - 0.5 * math.log(2 * math.pi)).sum(-1)

    evaluate = energy_only(target.energy)
    step = cp.build_kernel(propose, log_prob)
    state = cp.init(torch.randn(400, 2, generator=gen, dtype=torch.float64), evaluate)
    kept, accepted = [], 0.0
    for k in range(350):
        state, info = step(gen, state, evaluate)
        if k >= 50:
            kept.append(state.position)
            accepted += float(info.is_accepted.double().mean())
    assert 0.05 < accepted / 300 < 0.9  # rejections happen: the correction is at work
    assert_moments(torch.stack(kept, 1), "conditional kernel")


def test_training_pairs_follow_the_md_time_order():
    """Pairs are (frame f, first frame ≥ f + lag) of the same replica, whatever the row order;
    without time order every row is paired with another row (a permutation)."""
    data = ar1_trajectories(0.0, 1.0, 0.9, replicas=3, frames=50, seed=0)
    pairs = training_pairs(data, 4, torch.Generator().manual_seed(0))
    where = {tuple(r.tolist()): (int(i), int(f)) for r, i, f in zip(data.x, *data[1:])}
    starts = [where[tuple(r.tolist())] for r in pairs.x]
    ends = [where[tuple(r.tolist())] for r in pairs.y]
    assert pairs.kind == "md lag" and len(starts) == 3 * (50 - 4)
    assert all(r0 == r1 and f1 - f0 == 4 for (r0, f0), (r1, f1) in zip(starts, ends))
    plain = training_pairs(data.x, 4, torch.Generator().manual_seed(0))
    assert plain.kind == "independent" and torch.equal(plain.x, data.x)
    assert torch.equal(plain.y.sort(0).values, data.x.sort(0).values)


def test_timewarp_trained_on_the_wrong_process_samples_the_target():
    """The flow learns the lag-2 transitions of an AR(1) process with stationary
    N(1, 1.5² I) (no correlation): uncorrected, its chains would drift to mean 1.
    As the MH proposal on N(0, Σ), 64 chains × 250 kept steps give N(0, Σ)'s
    moments within 4 SE, with rejections (acceptance < 0.95)."""
    data = ar1_trajectories(1.0, 1.5, 0.8, replicas=2, frames=1000, seed=2)
    params = {**Timewarp.fast_params, "n_chains": 64, "n_warmup": 0, "n_burnin": 30}
    method = Timewarp(**{**params, "n_iter": 150}, lag_frames=2, dtype="float64")
    target = Gaussian(dim=2, rho=RHO)
    method.fit(target, data, torch.Generator().manual_seed(3))
    samples = method.sample(target, 64 * 250, torch.Generator().manual_seed(4))
    assert samples.attrs["pairs"] == "md lag"
    assert 0.05 < samples.attrs["acceptance_jump"] < 0.95
    chains = samples.x.reshape(250, 64, 2).transpose(0, 1)  # draw-major rows
    assert_moments(chains, "timewarp")


@pytest.mark.parametrize("kernel", ["conditional", "mixed"])
def test_sample_cost_is_the_counted_evaluations_and_a_budget_is_spent(kernel):
    """sample_cost(n) equals the CountingTarget's count exactly (energy; and gradients
    for "mixed"); a planned run under a budget of 2,000 spends ≥ 95 % of it."""
    target = Gaussian(dim=2, rho=RHO)
    data = ar1_trajectories(0.0, 1.0, 0.9, replicas=2, frames=200, seed=5)
    fast = {**Timewarp.fast_params, "n_iter": 5, "n_local": 2}
    method = Timewarp(**fast, kernel=kernel, lag_frames=3, dtype="float64")
    method.fit(target, data, torch.Generator().manual_seed(0))
    counted = CountingTarget(target)
    method.sample(counted, 50, torch.Generator().manual_seed(1))
    assert counted.counts.energy == method.sample_cost(50)
    assert counted.counts.grad == (0 if kernel == "conditional" else method.sample_cost(50))
    plan = method.plan_budget(2000, 50)
    budgeted = CountingTarget(target, budget=2000)
    plan.method.load_model_state(target, method.model_state())
    samples = plan.method.sample(budgeted, 50, torch.Generator().manual_seed(2))
    assert 0.95 * 2000 <= budgeted.counts.energy == plan.planned <= 2000
    assert samples.attrs["n_energy_evaluations"] == budgeted.counts.energy


def test_checkpointed_run_resumes_to_the_same_draws(tmp_path):
    """A run killed after its checkpoint and resumed gives the uninterrupted draws."""
    from boltzbench.checkpoint import Checkpoint

    target = Gaussian(dim=2, rho=RHO)
    data = ar1_trajectories(0.0, 1.0, 0.9, replicas=1, frames=200, seed=6)
    method = Timewarp(**{**Timewarp.fast_params, "n_iter": 5}, lag_frames=2, dtype="float64")
    method.fit(target, data, torch.Generator().manual_seed(0))
    whole = method.sample(target, 40, torch.Generator().manual_seed(1))
    ckpt = Checkpoint(tmp_path / "ck.pt", 10, "key")
    limited = CountingTarget(target, budget=8 * 16)  # stops after 15 steps (saved at 10)
    method.sample(limited, 40, torch.Generator().manual_seed(1), ckpt)
    resumed = method.sample(target, 40, torch.Generator().manual_seed(1), ckpt)
    assert torch.equal(whole.x, resumed.x)


def test_train_step_hands_md_time_order_to_methods_that_use_it(tmp_path):
    """A reference store with ``md_replica``/``md_frame`` diagnostics gives Trajectories to a
    method that ``uses_time_order`` and the plain rows to every other method."""
    from boltzbench.core import SampleSet

    data = ar1_trajectories(0.0, 1.0, 0.9, replicas=2, frames=10, seed=7)
    samples = SampleSet(
        x=data.x,
        energy=torch.zeros(20, dtype=torch.float64),
        diagnostics={"md_replica": data.replica, "md_frame": data.frame},
    )
    path = write_store(samples_to_dataset(samples), tmp_path / "ref.zarr", {})
    got = _training_data({"reference": str(path)}, time_order=True)
    assert isinstance(got, Trajectories)
    assert all(torch.equal(a, b) for a, b in zip(got, data))
    plain = _training_data({"reference": str(path)}, time_order=False)
    assert isinstance(plain, torch.Tensor) and torch.equal(plain, data.x)
