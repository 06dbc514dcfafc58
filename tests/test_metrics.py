"""Metrics against closed forms, the evaluate/noise-floor contract, and a
conformance walk over the METRICS registry. Seeded, float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from boltzbench.core import SampleSet
from boltzbench.metrics import METRICS, evaluate, noise_floor
from boltzbench.metrics.distributional import (
    OTNotConverged,
    energy_w1,
    gaussian_mmd,
    median_bandwidth,
    wasserstein2,
)
from boltzbench.metrics.evaluate import reference_rows, score, subsample
from boltzbench.metrics.modes import mode_coverage, normalized_mode_entropy
from boltzbench.metrics.weights import kish_ess, log_z_error, log_z_hat
from boltzbench.targets.analytic import GMM
from boltzbench.targets.gaussian import Gaussian
from boltzbench.testing import check_metric

SAMPLE_METRICS = {"w2", "energy_w1", "energy_w2", "mmd"}
WHOLE_SET_METRICS = {
    "nonfinite_fraction",
    "log_z_hat",
    "log_z_error",
    "elbo_gap",
    "ess",
    "ess_per_1e6_evals",
}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=torch.float64)


def exact_set(target, n: int, seed: int = 0) -> SampleSet:
    """Exact, unweighted samples of ``target``."""
    x = target.sample(n, gen(seed))
    return SampleSet(x=x, energy=target.energy(x))


def weighted_set(log_w: torch.Tensor) -> SampleSet:
    """A sample set that only carries the given log weights (x, energy are dummies)."""
    n = log_w.shape[0]
    return SampleSet(x=torch.zeros(n, 1), energy=torch.zeros(n), log_weight=log_w)


def importance_set(target, n: int, q_scale: float, seed: int = 0) -> SampleSet:
    """x ~ q = N(0, q_scale² I) with log w = -E(x) - log q(x)."""
    x = q_scale * randn(n, target.dim, seed=seed)
    log_q = target._normal_log_prob(x, math.log(q_scale)).sum(-1)
    energy = target.energy(x)
    return SampleSet(x=x, energy=energy, log_weight=-energy - log_q, log_q=log_q)


# --------------------------------------------------------------------- W2
def test_w2_gaussian_shift_is_norm_of_shift():
    # W2(N(0, I), N(m, I)) = ‖m‖ = 5. At n = 2000 the empirical means differ from m
    # by sd sqrt(2/2000) ≈ 0.03 and the finite-sample W2 of the centred parts
    # (≈ 0.2) adds only ≈ 0.2²/10 in quadrature, so 5 ± 0.1 is a > 3σ band.
    m = torch.tensor([3.0, 4.0], dtype=torch.float64)
    x, y = randn(2000, 2, seed=1), randn(2000, 2, seed=2) + m
    assert wasserstein2(x, y) == pytest.approx(5.0, abs=0.1)


def test_w2_gaussian_scale_change():
    # W2(N(0, I), N(0, 4 I)) = ‖(2 - 1) I‖_F = √d = √2 in 2-D. Five seeds at n = 2000
    # gave 1.411-1.455 (the finite-sample bias is positive), so ±0.08 is a wide band.
    x, y = randn(2000, 2, seed=3), 2 * randn(2000, 2, seed=4)
    assert wasserstein2(x, y) == pytest.approx(math.sqrt(2), abs=0.08)


def test_w2_of_a_set_with_itself_is_zero():
    x = randn(300, 3)
    assert wasserstein2(x, x) == pytest.approx(0.0, abs=1e-12)


def test_w2_one_dimensional_is_sorted_matching():
    x, y = randn(200, 1, seed=3), 0.5 * randn(200, 1, seed=4) + 1.0
    expected = math.sqrt(float(((x.sort(0).values - y.sort(0).values) ** 2).mean()))
    assert wasserstein2(x, y) == pytest.approx(expected, rel=1e-12)


def test_w2_is_symmetric_and_accepts_float32():
    x, y = randn(100, 2, seed=5), randn(100, 2, seed=6) + 1
    assert wasserstein2(x.float(), y.float()) == pytest.approx(wasserstein2(y, x), rel=1e-6)


def test_w2_raises_when_the_solver_stops_early():
    x, y = randn(200, 32, seed=7), randn(200, 32, seed=8)
    with pytest.raises(OTNotConverged, match="num_iter_max"):
        wasserstein2(x, y, num_iter_max=10)


# -------------------------------------------------------------- energy W1
def test_energy_w1_of_shifted_energies_is_the_shift():
    e = randn(500, seed=9)
    value = energy_w1(None, e, None, e + 0.7, None, gen())
    assert value == pytest.approx(0.7, abs=1e-12)


# -------------------------------------------------------------------- MMD
def test_median_bandwidth_by_hand():
    # distances between 0, 1, 3 are 1, 3, 2 → median 2
    assert median_bandwidth(torch.tensor([[0.0], [1.0], [3.0]])) == 2.0


def test_mmd_zero_for_identical_sets_and_grows_with_shift():
    x = randn(400, 2, seed=10)
    y = randn(400, 2, seed=11)
    assert gaussian_mmd(x, x) == pytest.approx(0.0, abs=1e-12)
    values = [gaussian_mmd(x, y + s) for s in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[-1] > 5 * values[0]


def test_mmd_matches_a_direct_v_statistic():
    x, y, h = randn(30, 2, seed=12), randn(20, 2, seed=13) + 0.3, 0.9

    def k(a, b):
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * h * h)).mean()

    a, b = x.numpy(), y.numpy()
    expected = math.sqrt(k(a, a) + k(b, b) - 2 * k(a, b))
    assert gaussian_mmd(x, y, bandwidth=h) == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------- weights
def test_ess_uniform_is_exactly_one_and_one_hot_is_one_over_n():
    n = 64
    assert kish_ess(weighted_set(torch.full((n,), -3.2)), None) == 1.0
    one_hot = torch.full((n,), -math.inf)
    one_hot[5] = 10.0
    assert kish_ess(weighted_set(one_hot), None) == 1.0 / n
    one_hot[7] = math.nan  # non-finite log weight: zero weight
    assert kish_ess(weighted_set(one_hot), None) == 1.0 / n


def test_ess_kish_formula_by_hand():
    # w = (1, 2, 3, 4): (Σw)² / (N Σw²) = 100 / (4 · 30) = 5/6, for any scale of w
    log_w = torch.log(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)) + 700.0
    assert kish_ess(weighted_set(log_w), None) == pytest.approx(5 / 6, rel=1e-14)


def test_weight_metrics_are_none_without_weights():
    s = exact_set(Gaussian(), 10)
    assert kish_ess(s, None) is None
    assert log_z_hat(s, Gaussian()) is None and log_z_error(s, Gaussian()) is None


def test_log_z_hat_importance_sampling_gaussian():
    # p̃(x) = exp(-½‖x - 1‖²) in 2-D, log Z = log 2π; q = N(0, 1.5² I)
    target, n = Gaussian(dim=2, mean=1.0), 20_000
    assert target.log_Z == pytest.approx(math.log(2 * math.pi), abs=1e-12)
    s = importance_set(target, n, q_scale=1.5, seed=14)
    w = torch.exp(s.log_weight)
    rel_sd = float(w.std() / w.mean()) / math.sqrt(n)  # sd of Ẑ/Z, ≈ log Ẑ's sd
    assert log_z_error(s, target) < 5 * rel_sd
    assert log_z_hat(s, target) == pytest.approx(target.log_Z, abs=5 * rel_sd)


def test_log_z_hat_is_exact_when_q_is_p():
    target = Gaussian(dim=2, mean=1.0, rho=0.3)
    x = target.sample(500, gen(15))
    log_q = target.log_prob(x)  # normalized: log Z is known
    s = SampleSet(x=x, energy=target.energy(x), log_weight=-target.energy(x) - log_q)
    assert log_z_hat(s, target) == pytest.approx(target.log_Z, abs=1e-10)
    assert log_z_error(s, target) < 1e-10


def test_log_z_hat_prefers_the_methods_own_estimate():
    s = weighted_set(torch.zeros(4))
    s.attrs["log_Z_hat"] = np.float64(1.25)
    assert log_z_hat(s, Gaussian()) == 1.25
    assert log_z_error(s, Gaussian(dim=1)) == pytest.approx(abs(1.25 - 0.5 * math.log(2 * math.pi)))


def test_nonfinite_log_weights_count_as_zero():
    log_w = torch.tensor([0.0, 0.0, math.nan, math.inf], dtype=torch.float64)
    assert log_z_hat(weighted_set(log_w), None) == pytest.approx(math.log(0.5), abs=1e-15)


# ------------------------------------------------------------------ modes
def test_mode_coverage_exact_gmm_samples_is_near_one():
    # E[H] ≈ log K - (K - 1)/(2n) for n draws of K equal modes: 1 - 0.0013 at n = 4000
    target = GMM()
    s = exact_set(target, 4000, seed=16)
    assert mode_coverage(s.x, s.energy, None, None, target, gen()) > 0.99


def test_mode_coverage_one_mode_is_zero_and_two_modes_exact():
    target = GMM()
    x = target.means[3] + 0.1 * randn(500, 2, seed=17)
    assert mode_coverage(x, None, None, None, target, gen()) == 0.0
    labels = torch.tensor([0, 1] * 50)
    assert normalized_mode_entropy(labels, 40) == pytest.approx(math.log(2) / math.log(40))


# --------------------------------------------------------------- evaluate
def test_evaluate_drops_and_counts_nonfinite_rows():
    target = Gaussian(dim=2)
    s = exact_set(target, 100, seed=18)
    s.energy[:3] = math.nan
    s.x[3, 1] = math.inf
    s.energy[4] = math.inf
    out = evaluate(s, target, exact_set(target, 300, seed=19), n_eval=200, generator=gen())
    assert out["nonfinite_fraction"] == pytest.approx(5 / 100)
    assert out["n_eval_samples"] == 95 and out["n_eval_reference"] == 200
    assert all(math.isfinite(out[k]) for k in SAMPLE_METRICS)


def test_evaluate_unweighted_keys():
    target = Gaussian(dim=2)
    out = evaluate(exact_set(target, 200), target, exact_set(target, 200, 1), 100, gen())
    expected = WHOLE_SET_METRICS | SAMPLE_METRICS | {"n_eval_samples", "n_eval_reference"}
    assert set(out) == expected
    assert out["ess"] is None and out["log_z_hat"] is None
    assert all(type(out[k]) is float for k in SAMPLE_METRICS | {"nonfinite_fraction"})


def test_evaluate_weighted_reports_raw_and_reweighted():
    # q = N(0, 2² I) for p = N(0, I): raw samples are too wide, resampled ones are not
    target = Gaussian(dim=2)
    s = importance_set(target, 4000, q_scale=2.0, seed=20)
    out = evaluate(s, target, exact_set(target, 1000, seed=21), 500, gen())
    reweighted = {f"{k}_reweighted" for k in SAMPLE_METRICS}
    assert set(out) == WHOLE_SET_METRICS | SAMPLE_METRICS | reweighted | {
        "n_eval_samples",
        "n_eval_reference",
    }
    assert out["w2_reweighted"] < 0.5 * out["w2"]
    assert out["mmd_reweighted"] < 0.5 * out["mmd"]
    assert 0 < out["ess"] < 1 and out["log_z_error"] < 0.1


def test_evaluate_with_float32_inputs_and_gmm_target():
    target = GMM()
    s, ref = exact_set(target, 300, 22), exact_set(target, 300, 23)
    s32 = SampleSet(x=s.x.float(), energy=s.energy.float())
    out = evaluate(s32, target, ref, 200, gen())
    assert "mode_coverage" in out and type(out["mode_coverage"]) is float


def test_evaluate_all_zero_weights_gives_none_reweighted():
    target = Gaussian(dim=2)
    s = exact_set(target, 50)
    s.log_weight = torch.full((50,), -math.inf, dtype=torch.float64)
    out = evaluate(s, target, exact_set(target, 50, 1), 50, gen())
    assert out["w2_reweighted"] is None and out["ess"] == 0.0
    assert out["log_z_hat"] == -math.inf


def test_evaluate_is_deterministic_given_the_generator():
    target = Gaussian(dim=2)
    s = importance_set(target, 300, q_scale=1.5)
    ref = exact_set(target, 300, 1)
    assert evaluate(s, target, ref, 100, gen(3)) == evaluate(s, target, ref, 100, gen(3))


def test_reference_rows_are_shared_across_methods():
    target = Gaussian(dim=2)
    ref = exact_set(target, 1000, 1)
    s1, s2 = exact_set(target, 500, 2), exact_set(target, 500, 3)
    a = evaluate(s1, target, ref, 100, gen(7), gen(99))
    b = evaluate(s1, target, ref, 100, gen(8), gen(99))
    c = evaluate(s2, target, ref, 100, gen(7), gen(99))
    assert a["energy_w1"] != b["energy_w1"]  # a different subsample of the samples ...
    ref_rows = subsample(ref, 100, gen(99))  # ... but always these reference rows
    assert c["energy_w1"] == pytest.approx(
        METRICS.build("energy_w1").fn(
            subsample(s2, 100, gen(7)).x,
            subsample(s2, 100, gen(7)).energy,
            ref_rows.x,
            ref_rows.energy,
            target,
            gen(7),
        )
    )


def test_noise_floor_keys_match_sample_metrics():
    for target in (Gaussian(dim=2), GMM()):
        floor_split, ref = exact_set(target, 3 * 200, 24), exact_set(target, 300, 25)
        floor = noise_floor(floor_split, ref, target, 100, 200, 3, gen())
        names = {n for n in METRICS.names() if METRICS.build(n).kind == "sample"}
        names = {n for n in names if METRICS.build(n).applies(target)}
        assert len(floor) == 3
        for values in floor:
            assert set(values) == names | {f"{n}_reweighted" for n in names}
            assert all(type(v) is float and math.isfinite(v) for v in values.values())


def test_noise_floor_scores_like_a_method_against_the_same_rows():
    """Replicate r is chunk r of the floor split scored by evaluate's own path, with
    uniform weights, against the rows the seed's reference generator draws."""
    target = Gaussian(dim=2)
    floor_split, ref = exact_set(target, 2 * 150, 30), exact_set(target, 400, 31)
    floor = noise_floor(floor_split, ref, target, 100, 150, 2, gen(5), gen(99))
    chunk = SampleSet(x=floor_split.x[150:], energy=floor_split.energy[150:])
    chunk.log_weight = torch.zeros(150, dtype=torch.float64)
    g = gen(5)
    score(  # replicate 0 consumed the generator first
        SampleSet(floor_split.x[:150], floor_split.energy[:150], torch.zeros(150)),
        target,
        reference_rows(ref, 100, gen(99)),
        100,
        g,
    )
    again = score(chunk, target, reference_rows(ref, 100, gen(99)), 100, g)
    again.pop("n_eval_samples")
    assert floor[1] == again


# ------------------------------------------------------------ invalid rows
def test_invalid_rows_count_as_outside_mass_for_mode_metrics():
    """Half the rows of a perfectly balanced GMM set made NaN: the mode TV is exactly
    the invalid mass (the finite half has the exact mode weights), not 0."""
    target = GMM()
    x = target.means.repeat(5, 1)  # 5 rows at every mean: p̂ = π exactly
    bad = torch.full_like(x, math.nan)
    s = SampleSet(x=torch.cat([x, bad]), energy=torch.cat([target.energy(x), target.energy(bad)]))
    ref = exact_set(target, 400, 3)
    out = evaluate(s, target, ref, n_eval=400, generator=gen())
    assert out["nonfinite_fraction"] == 0.5
    assert out["mode_tv"] == pytest.approx(0.5, abs=1e-12)  # ½ (Σ|½π − π| + ½)
    assert out["modes_found"] == 40.0  # each mode still holds half its weight ≥ 0.1 π
    # H = −Σ (½/40) log(½/40) = ½ (log 40 + log 2), over log 40
    assert out["mode_coverage"] == pytest.approx(0.5 + 0.5 * math.log(2) / math.log(40))


# ------------------------------------------------------------ conformance
#: closed forms beyond check_metric's defaults: (value on ideal inputs, value on the
#: fully perturbed set). The mode metrics compare with GMM-40's exact mode weights:
#: ideal on every mode equally, the perturbed set collapsed into one mode.
EXPECTED = {
    "mode_tv": (0.0, 1.0 - 1.0 / 40),
    "modes_found": (40.0, 1.0),
    "mode_coverage": (1.0, 0.0),
    "ess": (1.0, None),
    "log_z_error": (0.0, None),
    "log_z_hat": (lambda t: t.log_Z, None),
    "eubo": (lambda t: t.log_Z, None),
    "forward_kl": (0.0, None),
    "forward_ess": (1.0, None),
    # against exact values, not the reference: on 200 exact U(1) samples (L = 4, β = 2)
    # the ideal is 0 within the sampling error (tolerances ≈ the 99.9 % quantile over 200
    # seeds: 0.024, 0.33), and 1/2 for τ_int(Q) of 4 × 25 independent draws (0.25–1.7)
    "plaquette_error": ((0.0, 0.03), None),
    "chi_q_error": ((0.0, 0.4), None),
    "topo_tau_int": ((0.5, 1.25), None),
}
#: modes_found counts a mode holding 10 % of its weight as found: half the rows
#: invalid leave every mode found, 95 % do not
INVALID_FRACTION = {"modes_found": 0.95}


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_conformance(name):
    """Every registered metric: documented, and a number that can be wrong: its ideal
    value on identical (or exact) inputs, and worse under a known perturbation."""
    m = METRICS.build(name)
    assert m.name == name
    ideal, perturbed = EXPECTED.get(name, (None, None))
    check_metric(
        m, ideal=ideal, perturbed=perturbed, invalid_fraction=INVALID_FRACTION.get(name, 0.5)
    )


def test_nonfinite_fraction_counts_nan_rows():
    s = exact_set(Gaussian(dim=2), 100)
    s.energy[:25] = math.nan
    assert METRICS.build("nonfinite_fraction").fn(s, Gaussian(dim=2)) == 0.25


# ------------------------------------------------------------ ManyWell modes
def test_manywell_mode_weights_match_exact_samples():
    """The right-well occupation by quadrature against exact samples (4 standard errors),
    the barrier as the stationary point between the wells, and a closed-form mode TV."""
    from boltzbench.metrics.modes import mode_tv, modes_found
    from boltzbench.targets.analytic import ManyWell, double_well_barrier

    target = ManyWell(dim=8)  # 4 pairs: 16 modes
    xb = double_well_barrier()
    assert -4 * xb**3 + 12 * xb + 0.5 == pytest.approx(0.0, abs=1e-10)  # E₁'(x_b) = 0
    w = target.mode_weights()
    assert w.shape == (16,) and float(w.sum()) == pytest.approx(1.0, abs=1e-12)
    x = target.sample(20_000, gen(60))
    p_right = float(w[1:2].sum() / (w[0:1].sum() + w[1:2].sum()))  # pair 0 alone
    frac = float((x[:, 0] > xb).double().mean())
    assert frac == pytest.approx(p_right, abs=4 * math.sqrt(p_right * (1 - p_right) / 20_000))
    all_right = x[(x[:, 0::2] > xb).all(-1)][:100]
    assert mode_tv(all_right, None, None, None, target, gen()) == pytest.approx(
        1 - float(w[15]), abs=1e-12
    )
    assert modes_found(all_right, None, None, None, target, gen()) == 1.0
