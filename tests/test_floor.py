"""The noise floor: unbiased (a perfect sampler lands on it), with its own spread.

A perfect sampler's metrics must be distributed as the floor's draws: the raw
metrics of exact sample sets, and the `_reweighted` metrics of exact sets
carrying uniform weights, against the same N_eval reference rows. The test
compares the mean over K independent exact sets with the mean over R floor
replicates: under the null both estimate the same number, and the difference
is within 4.5 standard errors with probability 1 − 7·10⁻⁶ per check
(normal approximation; 42 checks below, so a false failure once in ~3,000 runs).
The floor as it was built before (the reweighted floor resampled from only
N_eval floor rows, so with more duplicates than a weighted sampler of
n_samples rows has) fails it: see test_old_reweighted_floor_was_biased.
"""

from __future__ import annotations

import math

import pytest
import torch

from boltzbench.core import SampleSet
from boltzbench.metrics import evaluate, noise_floor
from boltzbench.metrics.evaluate import floor_chunks, reference_rows, resample, score
from boltzbench.targets.analytic import GMM
from boltzbench.targets.gaussian import Gaussian
from boltzbench.targets.particles import ParticleTarget

N_SAMPLES, N_EVAL, K, R = 500, 100, 30, 30
Z_MAX = 4.5


class HarmonicParticles(ParticleTarget):
    """4 particles in 2-D with u(r) = r²/2: on the CoM-free chart E = (N/2)|x|², so
    x ∼ N(0, I/N) exactly (the chart is an isometry and Σ_{i<j} r_ij² = N Σ_i |p_i|²)."""

    exact_sampling = True

    def __init__(self):
        super().__init__(n_particles=4, spatial_dim=2)
        self.log_Z = 0.5 * self.dim * math.log(2 * math.pi / self.n_particles)

    def pair_potential(self, r):
        return 0.5 * r**2

    def sample(self, n, generator):
        x = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return x / math.sqrt(self.n_particles)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def exact(target, n: int, seed: int) -> SampleSet:
    x = target.sample(n, gen(seed))
    return SampleSet(x=x, energy=target.energy(x))


def uniform_weights(s: SampleSet) -> SampleSet:
    s.log_weight = torch.zeros_like(s.energy)
    return s


CASES = {
    "gaussian": (lambda: Gaussian(dim=2, rho=0.5), ["w2", "energy_w1", "energy_w2", "mmd"]),
    "gmm40": (GMM, ["w2", "energy_w1", "energy_w2", "mmd"]),
    "particles": (
        HarmonicParticles,
        ["w2_aligned", "energy_w1", "mmd", "distance_tv", "distance_w2"],
    ),
}


def _column(values: list[dict], key: str) -> torch.Tensor:
    return torch.tensor([v[key] for v in values], dtype=torch.float64)


def _z(a: torch.Tensor, b: torch.Tensor) -> float:
    """(mean a − mean b) / its standard error."""
    se = math.sqrt(a.var() / a.numel() + b.var() / b.numel())
    return float(a.mean() - b.mean()) / se


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    make, names = CASES[request.param]
    target = make()
    reference = exact(target, 2000, seed=1)
    floor_split = exact(target, R * N_SAMPLES, seed=2)
    floor = noise_floor(floor_split, reference, target, N_EVAL, N_SAMPLES, R, gen(3), gen(99))
    methods = [
        evaluate(
            uniform_weights(exact(target, N_SAMPLES, 100 + k)),
            target,
            reference,
            N_EVAL,
            gen(200 + k),
            gen(99),
        )
        for k in range(K)
    ]
    return target, names, floor, methods


@pytest.mark.parametrize("form", ["", "_reweighted"])
def test_a_perfect_sampler_is_at_the_floor(case, form):
    target, names, floor, methods = case
    for name in names:
        key = name + form
        z = _z(_column(methods, key), _column(floor, key))
        assert abs(z) < Z_MAX, f"{target.__class__.__name__} {key}: z = {z:.2f}"


def test_the_floor_has_a_spread_and_replicates_are_independent(case):
    target, names, floor, _ = case
    assert len(floor) == R
    for name in names:
        values = _column(floor, name)
        assert values.std() > 0, name  # distinct draws, not one draw repeated
    # each replicate uses its own chunk of N_SAMPLES rows: disjoint, consecutive
    chunks = floor_chunks(exact(target, 3 * N_SAMPLES, seed=5), N_SAMPLES, 3)
    assert [c.x.shape[0] for c in chunks] == [N_SAMPLES] * 3
    assert torch.equal(torch.cat([c.x for c in chunks]), exact(target, 3 * N_SAMPLES, 5).x)


def test_floor_split_too_short_is_an_error():
    t = Gaussian(dim=2)
    with pytest.raises(ValueError, match="need 1500"):
        noise_floor(exact(t, 1000, 1), exact(t, 1000, 2), t, 50, 500, 3, gen(0))


def test_old_reweighted_floor_was_biased():
    """The floor as built before: the reweighted form resampled N_eval rows from the
    N_eval-row floor subset. Its W2 sits well above a perfect weighted sampler's (its
    MMD, energy W1/W2 too, less clearly at this size), so the comparison above would
    have failed on it: this is the test's power."""
    target = GMM()
    reference = exact(target, 2000, seed=1)
    ref = reference_rows(reference, N_EVAL, gen(99))
    old = []
    for r in range(R):
        a = exact(target, N_EVAL, seed=300 + r)  # the N_eval floor rows
        rw = resample(uniform_weights(a), N_EVAL, gen(400 + r))
        old.append(score(rw, target, ref, N_EVAL, gen(500 + r)))
    perfect = [
        score(uniform_weights(exact(target, N_SAMPLES, 600 + k)), target, ref, N_EVAL, gen(k))
        for k in range(K)
    ]
    z = _z(_column(old, "w2"), _column(perfect, "w2_reweighted"))
    assert z > Z_MAX
