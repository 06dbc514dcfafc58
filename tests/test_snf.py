"""Tests of the ``snf`` method (stochastic normalizing flows, Wu, Köhler & Noé 2020).

The weight checks are statistical with a tolerance of 4 standard errors computed
from the sample itself (float64, seeded); the training run is seeded, and its
thresholds are stated with the values it reached.
"""

import math

import pytest
import torch

from boltzbench.methods.flow import FlowMethod
from boltzbench.methods.snf import SNF
from boltzbench.targets import CountingTarget
from boltzbench.targets.analytic import GMM
from boltzbench.targets.gaussian import Gaussian
from boltzbench.testing import check_method

MU, S = 0.5, 0.8  # the Gaussian target N(MU·1, S² I)


def gaussian_target() -> Gaussian:
    return Gaussian(dim=2, mean=MU, scale=S)


class FourModes(GMM):
    """(1/4) Σ N(x; (±2, ±2), 0.5² I): four modes 8 sd apart, log Z = 0."""

    def __init__(self):
        super().__init__(dim=2, n_modes=4)
        means = 2.0 * torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
        self._set_components(means, torch.full((2,), 0.5))


def small(**kw) -> SNF:
    base = dict(n_blocks=3, layer_steps=2, step_size=0.5, base_scale=1.2, transforms=1)
    base |= dict(hidden_features=[16], bins=4, dtype="float64")
    return SNF(**(base | kw))


def with_model(method: SNF, target, perturb: float, seed: int = 0) -> SNF:
    """``method`` with a fresh model (identity flows after the standardization) whose
    parameters are moved by ``perturb``·N(0, 1), seeded."""
    g = torch.Generator().manual_seed(seed)
    loc, scale = method.reference(target, None)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = method.build_model(loc, scale)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(perturb * torch.randn(p.shape, generator=g, dtype=p.dtype))
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    return method.load_model_state(target, state)


def assert_mean_one(log_ratio: torch.Tensor, max_se: float = 0.02) -> None:
    """mean exp(log_ratio) = 1 within 4 se, and the se (below ``max_se``) is small
    enough to bite: the mean is within about ±4 ``max_se`` of 1."""
    ratio = torch.exp(log_ratio)
    se = float(ratio.std()) / math.sqrt(ratio.shape[0])
    assert abs(float(ratio.mean()) - 1) < 4 * se
    assert se < max_se


# ------------------------------------------------------------------ the weights


@pytest.mark.parametrize("stochastic", ["langevin", "mala"])
@pytest.mark.parametrize("perturb", [0.0, 0.1])
def test_path_weights_are_unbiased_for_any_flow(stochastic, perturb, gen):
    # E_F[w] = Z exactly, for identity flows (annealed Langevin / MALA from the
    # reference, i.e. AIS without resampling) and for random flows; 20,000 paths
    # of 3 blocks × 2 steps of ε = 0.5
    target = gaussian_target()
    method = with_model(small(stochastic=stochastic), target, perturb)
    s = method.sample(target, 20_000, gen)
    assert_mean_one(s.log_weight - target.log_Z)
    assert abs(s.attrs["log_Z_hat"] - target.log_Z) < 0.1
    assert s.attrs["ess_kish"] > 0.3  # not degenerate, so the sample sd is a fair spread
    if stochastic == "mala":
        assert 0.5 < s.attrs["acceptance"] < 1.0  # the accept step does reject
    if perturb:  # the flows are not trivial: same noise, different weights
        zero = with_model(small(stochastic=stochastic), target, 0.0)
        s0 = zero.sample(target, 20_000, torch.Generator().manual_seed(1234))
        assert float((s.log_weight - s0.log_weight).abs().mean()) > 0.05


@pytest.mark.parametrize("stochastic", ["langevin", "mala"])
def test_backward_path_weights_are_unbiased_from_exact_samples(stochastic, gen):
    # the ML loss's backward paths from x ∼ p, which also give the forward metrics'
    # path density log q̂ (path_log_density): E_B[1/w] = E_B[q̂(x)/p̃(x)] = 1/Z (the same
    # ratio of path densities, integrated the other way); random flows, 40,000 exact
    # samples (1/w has the heavier tail: se 0.03–0.04 here, so within about ±0.16)
    target = gaussian_target()
    method = with_model(small(stochastic=stochastic), target, 0.1)
    x = target.sample(40_000, gen)
    log_w = -target.energy(x) - method.path_log_density(target, x, gen)
    assert_mean_one(-(log_w - target.log_Z), max_se=0.04)


def test_without_stochastic_layers_it_is_the_flow(gen):
    # one block, no stochastic layer: the same draws and weights as the flow method
    # with that flow (to rounding); several blocks: the forward log w is
    # −E(x) − log q(x) with log q from the inverse pass
    target = gaussian_target()
    snf = with_model(small(n_blocks=1, layer_steps=0), target, 0.1)
    flow = FlowMethod(dtype="float64").use_model(snf.model_.flows[0])
    s = snf.sample(target, 500, torch.Generator().manual_seed(7))
    f = flow.sample(target, 500, torch.Generator().manual_seed(7))
    assert torch.equal(s.x, f.x)
    torch.testing.assert_close(s.log_weight, f.log_weight, rtol=0, atol=1e-12)
    deep = with_model(small(n_blocks=3, layer_steps=0), target, 0.1)
    s = deep.sample(target, 500, gen)
    with torch.no_grad():
        back = deep._paths(target).backward(s.x, gen) - s.energy
    torch.testing.assert_close(back, s.log_weight, rtol=0, atol=1e-9)
    assert float(s.log_weight.std()) > 0.05  # the flows are not the identity


# ------------------------------------------------------------------ costs and budget


@pytest.mark.parametrize(
    "loss, steps, per_iter",
    [("kl", 2, 9), ("ml", 2, 9), ("kl+ml", 2, 18), ("kl", 0, 1), ("ml", 0, 0)],
)
def test_every_evaluation_goes_through_the_target(loss, steps, per_iter, gen):
    # a path through 3 blocks of m steps costs 3 (m + 1) evaluations (1 with m = 0,
    # for E(x) only; a backward path without stochastic layers costs none)
    target = CountingTarget(gaussian_target())
    method = small(loss=loss, layer_steps=steps, n_iter=3, batch_size=4)
    data = gaussian_target().sample(64, gen)
    method.fit(target, data if method.needs_data else None, gen)
    assert method.iteration_cost() == 4 * per_iter
    assert target.counts.energy == target.counts.grad == 3 * 4 * per_iter
    target.reset()
    method.sample(target, 7, gen)
    assert target.counts.energy == method.sample_cost(7) == 7 * (3 * (steps + 1) if steps else 1)


def test_budget_plan_spends_what_it_plans(gen):
    method = small(layer_steps=1, batch_size=8, n_iter=10**6)
    plan = method.plan_budget(2000, 20)  # sampling 20 × 6 = 120, an iteration 8 × 6 = 48
    assert plan.settings == {"n_iter": (2000 - 120) // 48} and plan.planned == 39 * 48 + 120
    target = CountingTarget(gaussian_target(), budget=2000)
    plan.method.fit(target, None, gen)
    plan.method.sample(target, 20, gen)
    assert target.counts.energy == plan.planned
    with pytest.raises(ValueError, match="snf: a budget of 150"):
        method.plan_budget(150, 20)
    ml = small(loss="ml", layer_steps=0).plan_budget(2000, 20)  # training is free
    assert ml.settings == {} and ml.planned == 20


@pytest.mark.parametrize("loss", ["ml", "kl+ml"])
def test_data_variants_pass_the_conformance_checker(loss):
    # the registry walk (tests/test_conformance.py) runs the default KL variant
    cls_params = dict(SNF.fast_params, loss=loss)
    report = check_method(SNF(**cls_params))["Gaussian"]
    assert all(r == "passed" for r in report.values()), report


# ------------------------------------------------------------------ it learns


def test_stochastic_layers_help_on_a_mixture():
    # reverse KL on four modes 8 sd apart, from N(0, 3² I), 300 steps of 64 paths,
    # 3 blocks of one affine coupling layer each, with and without 2 MALA steps of
    # ε = 0.5 per block (equal training steps; the SNF spends 9 evaluations per path,
    # the flow 1). Reached (seeded): SNF log Ẑ = 0.013, ESS 0.224, ELBO −1.87, mode
    # frequencies 0.23–0.28; the flow alone: log Ẑ = −0.275, ESS 0.148, ELBO −3.54,
    # one mode at 0.045 (reverse KL drops mass).
    target = FourModes()
    settings = dict(n_blocks=3, transforms=1, hidden_features=[32], coupling="affine")
    settings |= dict(base_scale=3.0, step_size=0.5, n_iter=300, batch_size=64, lr=3e-3)
    runs = {}
    for steps in (0, 2):
        method = SNF(**settings, layer_steps=steps)
        method.fit(target, None, torch.Generator().manual_seed(0))
        runs[steps] = method.sample(target, 20_000, torch.Generator().manual_seed(1))
        assert method.history_["loss"][-1] < method.history_["loss"][0]
    snf, flow = runs[2].attrs, runs[0].attrs
    assert abs(snf["log_Z_hat"] - target.log_Z) < 0.08
    assert snf["ess_kish"] > 0.18
    freq = torch.bincount(target.assign_modes(runs[2].x), minlength=4) / 20_000
    assert (freq - 0.25).abs().max() < 0.06  # every mode kept
    assert snf["log_Z_elbo"] > flow["log_Z_elbo"] + 1.0
    assert snf["ess_kish"] > flow["ess_kish"] + 0.03
