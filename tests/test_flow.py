"""Tests of the ``flow`` method (a zuko coupling-flow Boltzmann generator).

Statistical checks are seeded and state their tolerance; the maths checks
(change of variables, inverse, normalization) run in float64.
"""

import math

import pytest
import torch

from boltzbench.checkpoint import NO_CHECKPOINT
from boltzbench.methods import METHODS
from boltzbench.methods.flow import FlowMethod
from boltzbench.methods.flows_util import FlowModel
from boltzbench.methods.training import Minibatches, Objective
from boltzbench.targets import CountingTarget, Target
from boltzbench.targets.analytic import GMM
from boltzbench.targets.gaussian import Gaussian

SMALL = {"transforms": 4, "hidden_features": [32, 32], "batch_size": 256}


def kish_ess(log_w: torch.Tensor) -> float:
    """Normalized Kish ESS (Σw)² / (N Σw²)."""
    w = torch.exp(log_w - log_w.max())
    return float(w.sum() ** 2 / (len(w) * (w**2).sum()))


def log_mean_exp(a: torch.Tensor) -> float:
    return float(torch.logsumexp(a, 0) - math.log(len(a)))


def perturbed_flow(coupling: str, dim: int = 2, scale: float = 0.3):
    """A float64 flow with random (non-identity) weights and a non-trivial standardization."""
    torch.manual_seed(0)
    flow = FlowModel(
        dim,
        torch.linspace(-1.0, 2.0, dim),
        torch.linspace(0.5, 3.0, dim),
        transforms=4,
        hidden_features=[16, 16],
        coupling=coupling,
        bins=6,
    ).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return flow


class NaNAfter(Target):
    """A standard normal whose energy turns NaN from the ``after``-th call on."""

    def __init__(self, after: int, dim: int = 2):
        super().__init__()
        self.dim, self.after, self.calls = dim, after, 0

    def energy(self, x):
        self.calls += 1
        e = 0.5 * (x**2).sum(-1)
        return e * math.nan if self.calls > self.after else e


class HalfInfinite(Target):
    """A standard normal with infinite energy wherever x₀ > 1."""

    dim = 2

    def energy(self, x):
        e = 0.5 * (x**2).sum(-1)
        return torch.where(x[:, 0] > 1, math.inf, e)


def test_mle_on_gmm_reaches_high_ess(gen):
    target = GMM(n_modes=4, loc_scaling=5.0)
    data = target.sample(4000, gen)
    flow = FlowMethod(mode="mle", n_iter=300, **SMALL).fit(target, data, gen)
    s = flow.sample(target, 4000, gen)
    assert kish_ess(s.log_weight) > 0.5
    assert s.attrs["ess_kish"] == pytest.approx(kish_ess(s.log_weight))
    assert abs(log_mean_exp(s.log_weight) - target.log_Z) < 0.1


def test_reverse_kl_on_gaussian_estimates_log_z(gen):
    target = Gaussian(dim=2, rho=0.5)
    flow = FlowMethod(mode="reverse_kl", n_iter=200, lr=3e-3, **SMALL).fit(target, None, gen)
    s = flow.sample(target, 10_000, gen)
    # ESS ≈ 1 after training, so the standard error of log Ẑ is ~1e-3; tolerance 0.02
    assert abs(log_mean_exp(s.log_weight) - target.log_Z) < 0.02
    assert flow.history_["loss"][-1] < flow.history_["loss"][0]
    assert len(flow.history_["ess"]) == 200


@pytest.mark.parametrize("coupling", ["spline", "affine"])
def test_log_q_matches_change_of_variables(coupling):
    flow = perturbed_flow(coupling)
    q = flow()
    z = torch.tensor([[0.0, 0.0], [1.5, -0.7], [-2.5, 0.3], [6.0, -7.0]])  # last: outside spline
    x, ladj = q.transform.inv.call_and_ladj(z)
    jac = torch.stack(
        [torch.autograd.functional.jacobian(lambda v: q.transform.inv(v), zi) for zi in z]
    )
    log_q = q.base.log_prob(z) - ladj
    expected = q.base.log_prob(z) - torch.linalg.slogdet(jac)[1]
    torch.testing.assert_close(log_q, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(q.log_prob(x), log_q, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(q.transform(x), z, rtol=1e-9, atol=1e-9)


def test_q_integrates_to_one():
    q = perturbed_flow("spline", scale=0.1)()
    u = torch.linspace(-14.0, 16.0, 601)
    grid = torch.cartesian_prod(u, u)
    with torch.no_grad():
        mass = q.log_prob(grid).exp().sum() * (u[1] - u[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=2e-3)


def test_model_state_round_trips_and_seeding_is_deterministic():
    target = Gaussian(dim=3, rho=0.3)
    flow = FlowMethod(n_iter=5, **SMALL)
    rng_before = torch.random.get_rng_state()
    flow.fit(target, None, torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG untouched

    state = flow.model_state()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert any(k.endswith(".shift") for k in state) and any(k.endswith(".scale") for k in state)
    restored = FlowMethod(**flow.get_params()).load_model_state(target, state)
    a = flow.sample(target, 100, torch.Generator().manual_seed(7))
    b = restored.sample(target, 100, torch.Generator().manual_seed(7))
    assert torch.equal(a.x, b.x) and torch.equal(a.log_q, b.log_q)

    again = FlowMethod(n_iter=5, **SMALL).fit(target, None, torch.Generator().manual_seed(0))
    assert again.history_["loss"] == flow.history_["loss"]
    with pytest.raises(ValueError, match="does not match"):
        FlowMethod(transforms=2).load_model_state(target, state)


def test_mle_state_keeps_data_standardization(gen):
    target = GMM(n_modes=4, loc_scaling=5.0)
    data = target.sample(512, gen)
    flow = FlowMethod(mode="mle", n_iter=2, **SMALL).fit(target, data, gen)
    state = flow.model_state()
    shift = next(v for k, v in state.items() if k.endswith(".shift"))
    torch.testing.assert_close(shift.double(), data.mean(0), rtol=1e-6, atol=1e-6)


def test_mle_keeps_the_parameters_with_the_best_validation_loss(gen):
    target = Gaussian(dim=2, rho=0.5)
    flow = FlowMethod(mode="mle", n_iter=80, **SMALL)
    flow.fit(target, target.sample(400, gen), gen)
    assert flow.history_["val_step"] == list(range(2, 81, 2))  # every n_iter // 40 steps
    assert len(flow.history_["val_loss"]) == 40

    scores, snapshots = iter([3.0, 1.0, 2.0, 5.0]), []

    def validate():  # a fake validation loss: the second check is the best
        snapshots.append({k: v.clone() for k, v in flow.flow_.state_dict().items()})
        return next(scores)

    flow.n_iter = 4  # validate after every step
    opt, sched = flow.optimizer(flow.flow_)
    loss = flow._mle_loss(Minibatches(target.sample(64, gen).float(), flow.batch_size, gen))
    objective = Objective(flow.flow_, opt, sched, loss, validate=validate)
    flow._trainer(objective, gen).run(NO_CHECKPOINT)
    for k, v in flow.flow_.state_dict().items():
        assert torch.equal(v, snapshots[1][k])


@pytest.mark.parametrize("mode", ["reverse_kl", "mle"])
def test_training_evaluations_are_counted(mode, gen):
    target = CountingTarget(Gaussian(dim=2, rho=0.5))
    data = target.sample(100, gen) if mode == "mle" else None
    FlowMethod(mode=mode, n_iter=5, transforms=2, batch_size=32).fit(target, data, gen)
    expected = 5 * 32 if mode == "reverse_kl" else 0
    assert (target.counts.energy, target.counts.grad) == (expected, expected)


def test_divergence_raises_a_clear_error(gen):
    with pytest.raises(RuntimeError, match=r"flow \(reverse_kl\) diverged at step 0 .*loss is nan"):
        FlowMethod(n_iter=10, transforms=2, batch_size=16).fit(NaNAfter(0), None, gen)
    with pytest.raises(RuntimeError, match=r"diverged at step 3 .*last finite loss -?\d"):
        FlowMethod(n_iter=10, transforms=2, batch_size=16).fit(NaNAfter(3), None, gen)


def test_non_finite_energies_get_zero_weight(gen):
    flow = FlowMethod(n_iter=1, transforms=2, batch_size=16)
    flow.fit(Gaussian(dim=2), None, gen)
    s = flow.sample(HalfInfinite(), 500, gen)
    bad = s.x[:, 0] > 1
    assert bad.any() and torch.isneginf(s.log_weight[bad]).all()
    assert torch.isfinite(s.log_weight[~bad]).all()
    assert s.attrs["n_nonfinite"] == int(bad.sum())


def test_config_tags_and_validation(gen):
    assert FlowMethod(mode="mle").needs_data and not FlowMethod().needs_data
    assert FlowMethod.trainable and FlowMethod.weighted
    m = METHODS.build("flow", mode="mle", hidden_features=[8])
    assert type(m)(**m.get_params()).get_params() == m.get_params()
    with pytest.raises(ValueError, match="valid choices: reverse_kl, mle"):
        FlowMethod(mode="forward")
    with pytest.raises(ValueError, match="needs reference data"):
        m.fit(Gaussian(dim=2), None, gen)
    with pytest.raises(RuntimeError, match="fit or load_model_state"):
        FlowMethod().sample(Gaussian(dim=2), 4, gen)


def test_flow_model_samples_with_their_log_density_and_round_trips(gen):
    """FlowModel.sample's log q equals log_prob at the draws (float64, 1e-9); the
    standardization is the one built with; a state dict round trip gives the same draws."""
    shift, scale = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 0.5, 1.0])
    model = FlowMethod(transforms=2, hidden_features=[8], dtype="float64").build_model(shift, scale)
    assert model.dim == 3 and model.dtype == torch.float64
    assert all(torch.equal(a, b.double()) for a, b in zip(model.standardization, (shift, scale)))
    x, log_q = model.sample(50, torch.Generator().manual_seed(1))
    assert x.shape == (50, 3) and log_q.shape == (50,) and log_q.requires_grad
    torch.testing.assert_close(log_q, model.log_prob(x), rtol=1e-9, atol=1e-9)
    copy = FlowModel(3, torch.zeros(3), torch.ones(3), transforms=2, hidden_features=[8]).double()
    copy.load_state_dict(model.state_dict())
    again, _ = copy.sample(50, torch.Generator().manual_seed(1))
    assert torch.equal(again, x)
