"""The conformance checker itself (boltzbench.testing): it passes the README's
example and a user's method, and fails, saying why, on entries broken on purpose.
(The registered entries are walked in test_conformance.py and test_metrics.py.)"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from broken_methods import GlobalRandom, HalfEnergy, IgnoresBudget, UncountedEnergy
from custom_method import GaussianIS
from readme_method import RandomWalkMetropolis

from boltzbench.metrics import METRICS
from boltzbench.targets.gaussian import Gaussian
from boltzbench.testing import ConformanceError, check_method, check_metric, check_target

TESTS = Path(__file__).resolve().parent


def test_the_readme_shows_the_checked_example_verbatim():
    """The README's "Writing a method" block is tests/readme_method.py, byte for byte."""
    readme = (TESTS.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert (TESTS / "readme_method.py").read_text() in blocks


def test_the_readme_example_passes():
    report = check_method(RandomWalkMetropolis(n_steps=20))["Gaussian"]
    assert report["samples"] == report["budget_stop"] == report["seeded"] == "passed"


def test_a_user_importance_sampler_passes_on_two_targets():
    targets = [Gaussian(dim=2, rho=0.5), Gaussian(dim=3, mean=1.0, scale=0.8)]
    report = check_method(GaussianIS(scale=2.0), targets)
    assert report["Gaussian"]["log_z"] == "passed"


@pytest.mark.parametrize(
    "method, check, why",
    [
        (IgnoresBudget, "budget_stop", "asked for more evaluations instead of stopping"),
        (UncountedEnergy, "samples", "evaluates the energy outside the counting target"),
        (HalfEnergy, "samples", "reported energies differ from the target's"),
        (GlobalRandom, "seeded", "unseeded (global) random generator"),
    ],
)
def test_a_broken_method_fails_saying_why(method, check, why):
    with pytest.raises(ConformanceError) as err:
        check_method(method(n_steps=20))
    text = str(err.value)
    assert f"method {method.__name__} on target Gaussian fails {check!r}" in text, text
    assert why in text, text


class BadWeights(GaussianIS):
    """Forgets log q's normalization: log Ẑ is off by (d/2) log 2π."""

    def sample(self, target, n, generator, checkpoint=None):
        s = super().sample(target, n, generator)
        s.log_weight = s.log_weight - target.dim * 0.5 * math.log(2 * math.pi)
        s.log_q = None
        return s


def test_inconsistent_weights_fail_the_log_z_check():
    with pytest.raises(ConformanceError, match="fails 'log_z'.*the weights are inconsistent"):
        check_method(BadWeights(scale=1.5))


def test_unknown_check_names_are_refused():
    with pytest.raises(ValueError, match="unknown checks.*valid: params"):
        check_method(GaussianIS(), checks=["no_such_check"])


class WideSampler(Gaussian):
    """Its exact sampler draws from a distribution 10 % wider than its energy's."""

    def sample(self, n, generator):
        return 1.1 * super().sample(n, generator)


class WrongLogZ(Gaussian):
    def __init__(self):
        super().__init__(dim=2)
        self.log_Z = self.log_Z + 0.1


class WrongGradient(Gaussian):
    def energy_and_grad(self, x):
        e, g = super().energy_and_grad(x)
        return e, 2 * g


@pytest.mark.parametrize(
    "target, check",
    [(WideSampler(dim=2), "exact_sampler"), (WrongLogZ(), "log_z"), (WrongGradient(), "gradient")],
)
def test_a_broken_target_fails_saying_which_check(target, check):
    with pytest.raises(ConformanceError, match=f"target {type(target).__name__} fails {check!r}"):
        check_target(target)


def test_a_metric_blind_to_its_input_fails():
    w2 = METRICS.build("w2")

    def blind(x, energy, ref_x, ref_energy, target, generator):
        """Always 0."""
        return 0.0

    with pytest.raises(ConformanceError, match="metric 'blind' fails 'perturbation'"):
        check_metric(replace(w2, name="blind", fn=blind))


def test_a_metric_with_a_wrong_ideal_fails():
    with pytest.raises(ConformanceError, match="fails 'ideal'.*expected 2.0"):
        check_metric(METRICS.build("ess"), ideal=2.0)


def test_check_target_leaves_the_target_in_float64():
    t = Gaussian(dim=2)
    check_target(t, checks=["float32"])
    assert t.cov.dtype == torch.float64
