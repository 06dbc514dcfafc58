"""Conformance suites that walk the target and method registries.

Every registered entry must pass; a new entry is one file, one registration
and a passing suite. (The metric registry is walked in test_metrics.py.)
"""

import pytest
import torch
from helpers import sampling_methods, typical_points

from boltzbench.io import load_model, save_model
from boltzbench.methods import METHODS, SampleSet
from boltzbench.targets import TARGETS, CountingTarget, Target
from boltzbench.targets.gaussian import Gaussian


@pytest.mark.parametrize("name", TARGETS.names())
def test_target_conformance(name, gen):
    t = TARGETS.build(name)  # every target builds with no arguments
    assert isinstance(t, Target) and t.dim > 0
    assert t.log_Z is None or isinstance(t.log_Z, float)
    x = typical_points(t, 16, gen)
    assert x.shape == (16, t.dim) and x.dtype == torch.float64
    e = t.energy(x)
    assert e.shape == (16,) and torch.isfinite(e).all()
    lp = t.log_prob(x)
    assert torch.allclose(lp, -e - (t.log_Z or 0.0))
    e32 = t.float().energy(x.float())  # works in float32 too
    assert e32.dtype == torch.float32 and torch.allclose(e32.double(), e, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", sampling_methods())
def test_method_conformance(name, gen, tmp_path):
    cls = METHODS.get(name)
    method = cls(**cls.fast_params)
    params = method.get_params()
    assert type(method)(**params).get_params() == params  # config round-trips
    target = CountingTarget(Gaussian(dim=2, rho=0.5))
    data = target.sample(512, gen) if method.needs_data else None
    assert method.fit(target, data, gen) is method
    assert isinstance(method.history_, dict)
    target.reset()

    s = method.sample(target, 64, gen)
    assert isinstance(s, SampleSet)
    assert s.x.shape == (64, 2) and s.energy.shape == (64,)
    assert torch.allclose(
        s.energy.double(), target.target.energy(s.x.double()), rtol=1e-4, atol=1e-4
    )
    assert target.counts.energy >= 64  # every energy the sample set carries was counted
    assert (s.log_weight is not None) == method.weighted
    if s.log_weight is not None and s.log_q is not None:
        assert torch.allclose(s.log_weight, -s.energy - s.log_q, atol=1e-4)

    # the model artifact round-trips through Zarr and reproduces the samples
    save_model(tmp_path / "model.zarr", method.model_state(), method.history_, {})
    state, _, _ = load_model(tmp_path / "model.zarr")
    restored = cls(**cls.fast_params).load_model_state(target, state)
    a = method.sample(target, 32, torch.Generator().manual_seed(5))
    b = restored.sample(target, 32, torch.Generator().manual_seed(5))
    assert torch.equal(a.x, b.x)


@pytest.mark.parametrize("name", METHODS.names())
def test_method_refuses_unknown_params(name):
    with pytest.raises(Exception, match="no_such_param"):
        METHODS.build(name, no_such_param=1)


@pytest.mark.parametrize("name", sampling_methods())
def test_method_stops_at_its_budget(name, gen):
    """Fit and sample under a budget cut short on purpose: the counted evaluations
    never exceed it, and the method still returns samples."""
    from boltzbench.steps.common import training_budget

    cls = METHODS.get(name)
    method = cls(**cls.fast_params)
    n = 64
    # energy-trained methods: a little over what sampling needs; others: half of it
    energy_trained = method.trainable and not method.needs_data
    budget = method.sample_cost(n) + 150 if energy_trained else max(method.sample_cost(n) // 2, 1)
    fit_target = CountingTarget(Gaussian(dim=2, rho=0.5), training_budget(method, budget, n))
    data = fit_target.target.sample(512, gen) if method.needs_data else None
    method.fit(fit_target, data, gen)
    used = fit_target.counts.energy
    assert used <= fit_target.budget
    sample_target = CountingTarget(fit_target.target, budget - used)
    s = method.sample(sample_target, n, gen)
    total = used + sample_target.counts.energy
    assert total <= budget, (total, budget)
    assert 1 <= s.x.shape[0] <= n and torch.isfinite(s.energy).any()
    if energy_trained:  # 150 evaluations cannot pay for the whole fast training run
        assert fit_target.exhausted
    elif method.sample_cost(n) > n:  # chains and SMC were cut short or shortened
        assert sample_target.exhausted or s.attrs.get("n_temps", 0) < getattr(method, "n_temps", 0)
