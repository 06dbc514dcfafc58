"""Tests of the ``cmcd`` method (controlled Monte Carlo diffusions, Vargas et al. 2024).

The weight checks are statistical with a tolerance of 4 standard errors computed
from the sample itself (float64, seeded); the training run is seeded, and its
thresholds are stated with the values it reached.
"""

import math

import pytest
import torch

from boltzbench.methods.cmcd import CMCD
from boltzbench.targets import CountingTarget, Target
from boltzbench.targets.gaussian import Gaussian

MU, S = 0.5, 0.8  # the Gaussian target N(MU·1, S² I)


def gaussian_target() -> Gaussian:
    return Gaussian(dim=2, mean=MU, scale=S)


class FourModes(Target):
    """(1/4) Σ N(x; (±2.5, ±2.5), 0.5² I): four modes 10 sd apart, log Z = 0."""

    dim = 2
    log_Z = 0.0
    means = torch.tensor([[-2.5, -2.5], [-2.5, 2.5], [2.5, -2.5], [2.5, 2.5]])

    def energy(self, x):
        z = (x[:, None, :] - self.means.to(x)) / 0.5
        log_n = -0.5 * (z**2).sum(-1) - 2 * math.log(0.5) - math.log(2 * math.pi)
        return -(torch.logsumexp(log_n, -1) - math.log(4))

    def modes(self, x):
        return (x[:, None, :] - self.means.to(x)).norm(dim=-1).argmin(-1)


def with_model(method: CMCD, target: Target, perturb: float, seed: int = 0) -> CMCD:
    """``method`` with a fresh (zero-control, linear-schedule) model whose parameters are
    moved by ``perturb``·N(0, 1), seeded (so the control does not depend on test order)."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = method._build(target.dim)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(perturb * torch.randn(p.shape, generator=g, dtype=p.dtype))
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    return method.load_model_state(target, state)


def small(**kw) -> CMCD:
    base = dict(
        n_steps=10, step_size=math.sqrt(0.2), base_scale=1.2, hidden_features=[32], dtype="float64"
    )
    return CMCD(**(base | kw))


def assert_unbiased(s, log_z: float) -> None:
    """mean(w/Z) = 1 within 4 se, and log Ẑ = log Z within 4 se/Ẑ (delta method)."""
    ratio = torch.exp(s.log_weight - log_z)
    n = ratio.shape[0]
    se = float(ratio.std()) / math.sqrt(n)
    assert abs(float(ratio.mean()) - 1) < 4 * se
    assert abs(s.attrs["log_Z_hat"] - log_z) < 4 * se / float(ratio.mean())
    assert se < 0.02  # the check has teeth: log Ẑ within about ±0.08 of log Z


# ------------------------------------------------------------------ the weights


@pytest.mark.parametrize("schedule", ["linear", "learned"])
@pytest.mark.parametrize("perturb", [0.0, 0.05])
def test_path_weights_are_unbiased_for_any_control(schedule, perturb, gen):
    # E_F[w] = Z exactly in discrete time, for the zero control (annealed ULA and its
    # reversal) and for a random control and schedule; n = 20,000 paths of 10 steps
    target = gaussian_target()
    method = with_model(small(schedule=schedule), target, perturb)
    s = method.sample(target, 20_000, gen)
    assert_unbiased(s, target.log_Z)
    assert s.attrs["ess_kish"] > 0.3  # not degenerate, so the sample sd is a fair spread
    if perturb:  # the control is not trivial: same noise, different weights
        zero = with_model(small(schedule=schedule), target, 0.0)
        s0 = zero.sample(target, 20_000, torch.Generator().manual_seed(1234))
        assert float((s.log_weight - s0.log_weight).abs().mean()) > 0.05
        assert float((s.x - s0.x).abs().mean()) > 0.01
    if schedule == "learned" and perturb:  # and the schedule moved off the linear one
        betas = method.model_.betas().detach()
        assert float(betas[0]) == 0 and float(betas[-1]) == pytest.approx(1.0)
        assert (betas.diff() > 0).all()
        assert float((betas - torch.linspace(0, 1, 11)).abs().max()) > 1e-3


def test_zero_control_on_the_base_itself_gives_exact_weights(gen):
    # target = base: every π_k is the base, and ULA's reversal balances exactly only in
    # the limit, so the weights vary; but E[w] = Z still holds, and with ε → small the
    # chain barely moves, so log w ≈ log Z row by row (|log w − log Z| ≤ 0.05 here)
    target = Gaussian(dim=2, mean=0.0, scale=1.2)
    method = with_model(small(step_size=math.sqrt(2e-4)), target, 0.0)
    s = method.sample(target, 2000, gen)
    assert float((s.log_weight - target.log_Z).abs().max()) < 0.05
    assert_unbiased(s, target.log_Z)


# ------------------------------------------------------------------ costs and budget


@pytest.mark.parametrize("loss", ["kl", "log_variance"])
def test_every_evaluation_goes_through_the_target(loss, gen):
    # a path costs n_steps + 1 = 6 energy-and-gradient evaluations: 3 steps × 4 paths
    target = CountingTarget(gaussian_target())
    method = CMCD(loss=loss, n_steps=5, hidden_features=[8], n_iter=3, batch_size=4)
    method.fit(target, None, gen)
    assert target.counts.energy == target.counts.grad == 3 * 4 * 6
    target.reset()
    method.sample(target, 7, gen)
    assert target.counts.energy == target.counts.grad == 7 * 6 == method.sample_cost(7)


def test_budget_plan_spends_what_it_plans(gen):
    method = CMCD(n_steps=4, hidden_features=[8], batch_size=8, n_iter=10**6)
    plan = method.plan_budget(1000, 20)  # sampling 20 × 5 = 100, a batch 8 × 5 = 40
    assert plan.settings == {"n_iter": (1000 - 100) // 40} and plan.planned == 22 * 40 + 100
    target = CountingTarget(gaussian_target(), budget=1000)
    plan.method.fit(target, None, gen)
    plan.method.sample(target, 20, gen)
    assert target.counts.energy == plan.planned
    with pytest.raises(ValueError, match="cmcd: a budget of 100"):
        method.plan_budget(100, 20)


# ------------------------------------------------------------------ it learns


@pytest.mark.parametrize(
    "loss, n_iter, lr, elbo_gain, ess_gain",
    [("log_variance", 600, 3e-3, 2.5, 0.03), ("kl", 300, 1e-3, 1.0, None)],
)
def test_training_improves_on_the_untrained_control(loss, n_iter, lr, elbo_gain, ess_gain, gen):
    # 8 steps from N(0, 3² I) to four modes: the untrained (zero-control) chain lags
    # behind the annealing path (ELBO −4.87, Kish ESS 0.167, seeded). Reached (seeded):
    # log_variance ELBO −1.14, ESS 0.227, log Ẑ −0.03. The KL loss (whose gradient leaves
    # out the Hessian of E, see the module docstring) raises the ELBO (−3.37) but not
    # the ESS (0.049 here, 0.23 with another seed): no ESS claim for it.
    target = FourModes()
    settings = dict(loss=loss, n_steps=8, step_size=math.sqrt(0.2), base_scale=3.0)
    settings |= dict(hidden_features=[32, 32], batch_size=128, lr=lr, dtype="float32")
    untrained = with_model(CMCD(**settings), target, 0.0)
    trained = CMCD(**settings, n_iter=n_iter).fit(target, None, gen)
    s0 = untrained.sample(target, 20_000, torch.Generator().manual_seed(1))
    s = trained.sample(target, 20_000, torch.Generator().manual_seed(1))
    assert s.attrs["log_Z_elbo"] > s0.attrs["log_Z_elbo"] + elbo_gain
    if ess_gain is not None:
        assert s.attrs["ess_kish"] > s0.attrs["ess_kish"] + ess_gain
    assert abs(s.attrs["log_Z_hat"] - target.log_Z) < 0.1
    freq = torch.bincount(target.modes(s.x), minlength=4) / s.x.shape[0]
    assert (freq - 0.25).abs().max() < 0.05  # every mode kept
    assert trained.history_["loss"][-1] < trained.history_["loss"][0]


# ------------------------------------------------------------------ path density (EUBO)


@pytest.mark.parametrize("perturb", [0.0, 0.05])
def test_the_path_density_is_unbiased_at_reference_samples(perturb, gen):
    # X_K = x ∼ p, backward path X_k ∼ B_{k+1}(· | X_{k+1}): E[q̂(x)/p(x)] = ∫ F = 1 for
    # any control, so mean exp(log q̂ + E + log Z) = 1 within 4 s.e. (20,000 rows);
    # the path EUBO mean(−E − log q̂) lies above log Z by more than 4 s.e.
    target = gaussian_target()
    method = with_model(small(schedule="learned"), target, perturb)
    counting = CountingTarget(target)
    x = target.sample(20_000, gen)
    log_q = method.path_log_density(counting, x, gen)
    assert counting.counts.grad == 20_000 * method.n_steps  # K evaluations per row
    ratio = torch.exp(log_q + target.energy(x) + target.log_Z)
    n = ratio.shape[0]
    assert abs(float(ratio.mean()) - 1) < 4 * float(ratio.std()) / math.sqrt(n)
    lw = -target.energy(x) - log_q
    assert float(lw.mean()) - target.log_Z > 4 * float(lw.std()) / math.sqrt(n)
