"""Tests of the "fab" method (Midgley et al. 2023): the AIS towards p²/q against a
closed form, the zero-move limit against exact importance weights, the replay
buffer, training on a separated 4-mode mixture, checkpoint resume, divergence
and the model round trip. Float64, seeded; tolerances are stated at each test.
"""

import math

import pytest
import torch
from helpers import sampling_methods
from test_checkpoint import _killed_then_resumed, _uninterrupted
from test_flow import NaNAfter

from boltzbench.mcmc.annealing import Annealing, anneal
from boltzbench.methods import METHODS
from boltzbench.methods.fab import FAB, ReplayBuffer, _Run, annealing_path
from boltzbench.methods.flow import FlowMethod
from boltzbench.methods.training import Objective
from boltzbench.targets import CountingTarget
from boltzbench.targets.analytic import GMM
from boltzbench.targets.gaussian import Gaussian

FAST = dict(FAB.fast_params, dtype="float64")


def gaussian_log_q(scale: float):
    """log N(x; 0, scale² I) and its gradient, computed by hand."""

    def log_q(x):
        d = x.shape[-1]
        lq = -0.5 * (x**2).sum(-1) / scale**2 - 0.5 * d * math.log(2 * math.pi * scale**2)
        return lq, -x / scale**2

    return log_q


def ais(n_temps: int, n_moves: int, kernel: str = "mala") -> Annealing:
    return Annealing(
        n_temps=n_temps,
        schedule="linear",
        kernel=kernel,
        n_moves=n_moves,
        step_size=0.5,
        ess_threshold=0.0,
    )


def corners(d: float = 6.0) -> GMM:
    """Equal mixture of N(μ_k, I), μ_k = (±d, ±d): separated modes, log Z = 0."""
    g = GMM(dim=2, n_modes=4)
    g.means.copy_(torch.tensor([[d, d], [d, -d], [-d, d], [-d, -d]]))
    g.std.fill_(1.0)
    return g


# ------------------------------------------------------------------ AIS towards p²/q


@pytest.mark.parametrize("kernel", ["mala", "hmc"])
def test_ais_to_p_squared_over_q_is_unbiased(kernel, gen):
    """q = N(0, s_q² I), p̃ = exp(−|x|²/(2 s_p²)) in d = 2: the normalizing constant
    of p̃²/q is Z_g = (2π s_q²)^{d/2} (π/a)^{d/2}, a = 1/s_p² − 1/(2 s_q²).

    mean(w) over 4000 AIS particles (3 steps, 2 moves each) must lie within 4
    standard errors (estimated from the weights) of Z_g; one standard error is
    1.25 % of Z_g here. Over seeds 0–19 the z-scores had mean −0.2 and sd 0.9
    (max |z| 2.2) for both kernels.
    """
    s_q, s_p, d = 1.5, 1.0, 2
    a = 1 / s_p**2 - 1 / (2 * s_q**2)
    z_g = (2 * math.pi * s_q**2) ** (d / 2) * (math.pi / a) ** (d / 2)
    target = CountingTarget(Gaussian(dim=d, scale=s_p))
    x0 = s_q * torch.randn(4000, d, generator=gen)
    run = anneal(ais(3, 2, kernel), annealing_path(target, gaussian_log_q(s_q)), x0, gen)
    w = run.log_w.exp()
    se = float(w.std() / math.sqrt(len(w)))
    assert abs(float(w.mean()) - z_g) < 4 * se and se < 0.02 * z_g
    per_move = 1 if kernel == "mala" else 5
    assert target.counts.energy == 4000 * (1 + 3 * 2 * per_move)


def test_zero_moves_give_the_exact_importance_weights(gen):
    """With n_moves = 0 AIS is importance sampling: log w = log (p̃²/q)/q at the base
    draws, i.e. −2E(x) − 2 log q(x), to rounding (1e-12 absolute)."""
    s_q = 1.5
    target = Gaussian(dim=3, scale=0.8, rho=0.3)
    x0 = s_q * torch.randn(500, 3, generator=gen)
    run = anneal(ais(4, 0), annealing_path(target, gaussian_log_q(s_q)), x0, gen)
    exact = -2 * target.energy(x0) - 2 * gaussian_log_q(s_q)(x0)[0]
    assert torch.equal(run.state.position, x0)
    torch.testing.assert_close(run.log_w, exact, rtol=0, atol=1e-12)


def test_zero_moves_with_a_flow_base(gen):
    """The same with the flow as base: log w = −2E − 2 log q_flow (1e-10 absolute)."""
    method = FAB(**FAST, n_moves=0)
    model = method._flow_method().build_model(torch.zeros(2), torch.full((2,), 2.0))
    target = Gaussian(dim=2, rho=0.5)
    run = method._anneal(model, target, 300, 0.5, 2.0, gen)
    x = run.state.position
    exact = -2 * target.energy(x) - 2 * model.log_prob(x).detach()
    torch.testing.assert_close(run.log_w, exact, rtol=0, atol=1e-10)
    torch.testing.assert_close(-run.state.base_energy, model.log_prob(x).detach())


# ------------------------------------------------------------------ the replay buffer


def test_buffer_adjusts_weights_by_the_log_q_change():
    buf = ReplayBuffer(4, 1, torch.float64)
    buf.add(
        torch.tensor([[0.0], [1.0], [2.0]]),
        torch.tensor([0.1, 0.2, 0.3]),
        torch.tensor([-1.0, -2.0, -3.0]),
    )
    buf.adjust(torch.tensor([0, 2]), torch.tensor([-1.5, math.nan]))
    # row 0: log w += log q_old − log q_new = −1 − (−1.5); row 2 (NaN) and row 1 untouched
    assert buf.log_w.tolist()[:3] == pytest.approx([0.6, 0.2, 0.3], abs=1e-15)
    assert buf.log_q.tolist()[:3] == [-1.5, -2.0, -3.0]
    buf.add(torch.tensor([[3.0], [4.0]]), torch.zeros(2), torch.zeros(2))  # wraps around
    assert len(buf) == 4 and buf.x[:, 0].tolist() == [4.0, 1.0, 2.0, 3.0]


def test_buffer_draws_distinct_rows_in_proportion_to_the_weights(gen):
    """Single draws (k = 1) from weights 1 : 2 : 5 : 0, 10 000 times: frequencies
    within 0.02 of 1/8, 2/8, 5/8 (binomial sd ≤ 0.005); weight zero never."""
    buf = ReplayBuffer(4, 1, torch.float64)
    buf.add(torch.zeros(4, 1), torch.tensor([1.0, 2.0, 5.0, 0.0]).log(), torch.zeros(4))
    draws = torch.stack([buf.sample(1, gen) for _ in range(10_000)]).flatten()
    freq = torch.bincount(draws, minlength=4) / 10_000.0
    assert (freq - torch.tensor([1 / 8, 2 / 8, 5 / 8, 0.0])).abs().max() < 0.02
    assert sorted(buf.sample(10, gen).tolist()) == [0, 1, 2]  # distinct, weight-0 row left out


def test_replay_steps_reweight_the_drawn_rows(gen):
    """After each gradient step the drawn rows get log w += log q_old − log q_new,
    with log q_new from the updated flow (to 1e-12)."""
    method = FAB(**FAST | {"batch_size": 8, "min_buffer_size": 8, "n_updates_per_batch": 1})
    flow = method._flow_method()
    model = flow.build_model(torch.zeros(2), torch.ones(2))
    opt, sched = flow.optimizer(model)
    buf = ReplayBuffer(16, 2, torch.float64)
    x = torch.randn(8, 2, generator=gen)
    with torch.no_grad():
        log_q_old = model.log_prob(x)
    buf.add(x, torch.randn(8, generator=gen), log_q_old)
    log_w_old = buf.log_w.clone()
    run = _Run(model, buf, 0.5)
    trainer = method._trainer(Objective(model, opt, sched, iteration=lambda _: {}), gen)
    method._replay_steps(trainer, run)  # all 8 rows are drawn (batch_size = 8)
    with torch.no_grad():
        log_q_new = model.log_prob(x)
    assert (log_q_new - log_q_old).abs().max() > 1e-4  # the flow did change
    torch.testing.assert_close(
        buf.log_w[:8], log_w_old[:8] + log_q_old - log_q_new, rtol=0, atol=1e-12
    )
    torch.testing.assert_close(buf.log_q[:8], log_q_new, rtol=0, atol=0)


# ------------------------------------------------------------------ training

TRAIN = dict(
    transforms=4,
    hidden_features=[32, 32],
    bins=8,
    init_scale=3.0,
    batch_size=128,
    n_temps=2,
    kernel="hmc",
    n_leapfrog=3,
    n_moves=1,
    step_size=0.5,
    lr=3e-3,
    buffer_size=4096,
    min_buffer_size=512,
    n_updates_per_batch=4,
    n_iter=80,
)


def test_fab_covers_every_mode_of_a_separated_mixture():
    """4 unit-variance modes at (±6, ±6), flow initially N(0, 3² I).

    FAB (80 AIS runs, 72k evaluations, 13–21 s of CPU): normalized ESS > 0.8
    (0.96–0.97 over seeds 0–3), |log Ẑ| < 0.05 (≤ 0.003), every mode holds
    0.25 ± 0.05 of the weight and ≥ 0.15 of the unweighted flow draws (0.24–0.27).
    Reverse KL with the same flow, init and seed (300 steps, 38k evaluations)
    leaves at least one mode with < 5 % of its draws (it kept 1–2 modes).
    """
    target = CountingTarget(corners())
    m = FAB(**TRAIN).fit(target, None, torch.Generator().manual_seed(0))
    assert target.counts.energy == 80 * 128 * m.evaluations_per_ais_particle() == 71_680
    s = m.sample(target.target, 4000, torch.Generator().manual_seed(1))
    assert s.attrs["ess_kish"] > 0.8 and abs(s.attrs["log_Z_hat"]) < 0.05
    modes = target.target.assign_modes(s.x)
    weight = torch.zeros(4).index_add_(0, modes, torch.softmax(s.log_weight, 0))
    assert (weight - 0.25).abs().max() < 0.05
    assert (torch.bincount(modes, minlength=4) / 4000.0).min() > 0.15

    rkl = FlowMethod(
        mode="reverse_kl",
        **{
            k: TRAIN[k]
            for k in ("transforms", "hidden_features", "bins", "init_scale", "batch_size", "lr")
        },
        n_iter=300,
    )
    rkl.fit(target.target, None, torch.Generator().manual_seed(0))
    r = rkl.sample(target.target, 4000, torch.Generator().manual_seed(1))
    assert (torch.bincount(target.target.assign_modes(r.x), minlength=4) / 4000.0).min() < 0.05


# ------------------------------------------------------------------ resume, divergence, state


@pytest.mark.parametrize("replay", [True, False], ids=["replay", "no-replay"])
def test_resumed_fab_equals_an_uninterrupted_one(replay, tmp_path):
    """Killed after saving iteration 10 of 20 and resumed: the same flow, history
    and evaluation counts as a run that was never stopped (bit for bit)."""
    params = FAST | {"n_iter": 20, "replay": replay, "n_leapfrog": 2}

    def run(target, ckpt):
        return FAB(**params).fit(target, None, torch.Generator().manual_seed(3), ckpt)

    resumed, counts, start = _killed_then_resumed(run, 10, tmp_path / "c.pt")
    ref, ref_counts = _uninterrupted(run)
    assert start == 10 and counts == ref_counts
    for k, v in ref.model_state().items():
        assert torch.equal(v, resumed.model_state()[k]), k
    assert resumed.history_ == ref.history_ and len(ref.history_["ess_ais"]) == 20


@pytest.mark.parametrize("replay", [True, False], ids=["replay", "no-replay"])
def test_diverging_fab_raises_a_clear_error(replay, gen):
    """lr = 1e6 with affine couplings in float32 overflows at the second step.

    (With spline couplings the flow saturates instead: the loss reaches ~1e12 but
    stays finite, so nothing can be detected there; FlowMethod behaves alike.)
    """
    m = FAB(
        **FAB.fast_params
        | {
            "lr": 1e6,
            "grad_clip": None,
            "coupling": "affine",
            "dtype": "float32",
            "n_iter": 30,
            "replay": replay,
        }
    )
    with pytest.raises(RuntimeError, match=r"fab diverged at iteration 1 of 30: .* is inf; last"):
        m.fit(Gaussian(dim=2), None, gen)
    assert not hasattr(m, "flow_"), "no fitted model is left behind"


@pytest.mark.parametrize("replay", [True, False], ids=["replay", "no-replay"])
def test_fab_stops_when_every_weight_is_zero(replay, gen):
    """Energies that turn NaN give weight zero; once no sample (or buffer row) has
    a positive weight there is nothing to train on, and fit says so."""
    m = FAB(**FAST | {"n_iter": 30, "replay": replay})
    what = "buffer row" if replay else "AIS sample"
    with pytest.raises(RuntimeError, match=rf"fab diverged .* no {what} has a finite weight"):
        m.fit(NaNAfter(30), None, gen)


def test_model_state_round_trip_and_sample_time_ais(gen):
    """A saved and reloaded model samples identically (flow draws and the AIS run);
    the AIS run to p costs n · (1 + T · moves · leapfrog) more counted evaluations
    and its log Z on a 2-D Gaussian is within 0.1 of the truth (sd ≈ 0.02)."""
    target = Gaussian(dim=2, rho=0.5)
    m = FAB(**FAST | {"sample_ais": True, "n_iter": 20}).fit(target, None, gen)
    restored = FAB(**m.get_params()).load_model_state(target, m.model_state())
    assert restored.ais_step_size_ == m.ais_step_size_
    counted = CountingTarget(target)
    a = m.sample(counted, 500, torch.Generator().manual_seed(5))
    b = restored.sample(target, 500, torch.Generator().manual_seed(5))
    assert torch.equal(a.x, b.x) and torch.equal(a.log_weight, b.log_weight)
    assert a.attrs == b.attrs and abs(a.attrs["log_Z_ais"] - target.log_Z) < 0.1
    assert counted.counts.energy == 500 + 500 * m.evaluations_per_ais_particle()
    torch.testing.assert_close(a.log_weight, -a.energy - a.log_q)


def test_fab_is_walked_by_the_method_conformance_suite():
    """FAB is registered, so test_conformance runs boltzbench.testing.check_method on it."""
    assert "fab" in sampling_methods() and METHODS.get("fab") is FAB
    with pytest.raises(TypeError, match="no_such_param"):
        FAB(no_such_param=1)


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="min_buffer_size"):
        FAB(batch_size=128, min_buffer_size=64)
    with pytest.raises(ValueError, match="never fill"):
        FAB(n_iter=3, batch_size=10, min_buffer_size=100, buffer_size=200)
    with pytest.raises(ValueError, match="kernel"):
        FAB(kernel="nuts")
