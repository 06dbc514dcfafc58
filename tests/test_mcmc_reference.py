"""Tests of the long-MCMC reference generator (boltzbench.mcmc.reference), float64, seeded.

The bimodal target is p(x) = 0.3 N(x; −5, 0.5²) + 0.7 N(x; 5, 0.5²) in 1-D: the
barrier at x = 0 is about 50 k_BT high, so a MALA chain never crosses it, while
parallel tempering up to T = 100 (barrier ≈ 0.5 k_BT) does. Exact moments:
P(x > 0) = 0.7 (to 1e-20), mean = 0.7·5 − 0.3·5 = 2, E[x²] = 0.25 + 25, so
var = 25.25 − 4 = 21.25. Tolerances are 5 standard errors from the
autocorrelation ESS of the kept draws.
"""

import math

import pytest
import torch

from boltzbench.checkpoint import Checkpoint
from boltzbench.mcmc import diagnostics
from boltzbench.mcmc.reference import ConvergenceError, check_convergence, mcmc_reference
from boltzbench.targets import CountingTarget
from boltzbench.targets.base import Target

N_SE = 5.0
WEIGHT, MEAN, VAR = 0.7, 2.0, 21.25
#: a parallel-tempering run that mixes the two modes of :class:`Bimodal`
PT = dict(n_chains=32, n_warmup=200, n_burnin=100, thinning=4, n_temps=6, t_max=100.0)


class Bimodal(Target):
    """0.3 N(−5, 0.5²) + 0.7 N(5, 0.5²) in 1-D; E = −log p (so log Z = 0)."""

    def __init__(self):
        super().__init__()
        self.dim, self.log_Z = 1, 0.0

    def energy(self, x):
        z = x[:, 0]
        norm = math.log(0.5 * math.sqrt(2 * math.pi))
        comps = [
            math.log(0.3) - 0.5 * ((z + 5) / 0.5) ** 2,
            math.log(0.7) - 0.5 * ((z - 5) / 0.5) ** 2,
        ]
        return -torch.logsumexp(torch.stack(comps, -1), -1) + norm


def _draws(samples, n_chains):
    """Kept draws as (chains, draws) (they are stored draw-major)."""
    return samples.x[:, 0].reshape(-1, n_chains).T


def _assert_close(values, expected, label):
    """Mean of ``values`` (chains, draws) within N_SE standard errors of ``expected``."""
    se = float(values.std()) / math.sqrt(float(diagnostics.effective_sample_size(values)))
    assert abs(float(values.mean()) - expected) < N_SE * se, (label, float(values.mean()), se)


def test_parallel_tempering_recovers_the_mode_weight_and_moments():
    n = PT["n_chains"] * 250
    s = mcmc_reference(Bimodal(), n, torch.Generator().manual_seed(0), **PT)  # R̂ ≤ 1.01
    x = _draws(s, PT["n_chains"])
    assert float(diagnostics.effective_sample_size((x > 0).double())) > 500  # many crossings
    _assert_close((x > 0).double(), WEIGHT, "weight")
    _assert_close(x, MEAN, "mean")
    _assert_close((x - MEAN) ** 2, VAR, "variance")
    assert s.attrs["reference_method"] == "parallel_tempering" and s.attrs["rhat_max"] <= 1.01
    assert s.x.shape == (n, 1) and torch.allclose(s.energy, Bimodal().energy(s.x))
    # the local moves were tuned to 0.574 per temperature; every pair swaps often
    assert abs(s.attrs["acceptance"] - 0.574) < 0.05
    assert (s.diagnostics["swap_acceptance_per_pair"] > 0.3).all()
    steps = s.diagnostics["step_size_per_temperature"]
    assert (steps[1:] > steps[:-1]).all()  # hotter replicas take longer steps


def test_plain_mala_stays_in_its_mode_and_fails_the_rhat_gate():
    """MALA chains started near 0 fall into either mode and never cross: R̂ ≫ 1.01."""
    params = {k: PT[k] for k in ("n_chains", "n_warmup", "n_burnin", "thinning")}
    gen = torch.Generator().manual_seed(0)
    s = mcmc_reference(Bimodal(), 32 * 100, gen, algorithm="mala", rhat_max=math.inf, **params)
    x = _draws(s, 32)
    assert s.attrs["reference_method"] == "mala" and s.attrs["n_temps"] == 1
    assert ((x > 0).all(1) | (x < 0).all(1)).all(), "a MALA chain crossed the barrier"
    assert s.attrs["rhat_max"] > 1.1
    with pytest.raises(ConvergenceError, match="rhat_max"):
        mcmc_reference(
            Bimodal(), 32 * 100, torch.Generator().manual_seed(0), algorithm="mala", **params
        )


def test_a_far_too_short_tempering_run_raises_convergence_error():
    short = {**PT, "n_warmup": 5, "n_burnin": 0, "thinning": 1}
    with pytest.raises(ConvergenceError, match=r"rhat_max = 1\.01.*n_warmup"):
        mcmc_reference(Bimodal(), 4 * PT["n_chains"], torch.Generator().manual_seed(1), **short)


def test_check_convergence_thresholds():
    check_convergence(1.005, 1.01)
    check_convergence(math.nan, math.inf)  # inf: no check
    for bad in (1.02, math.nan):
        with pytest.raises(ConvergenceError, match="R-hat"):
            check_convergence(bad, 1.01)


@pytest.mark.parametrize(
    "kernel, n_leapfrog, n_temps", [("mala", 1, 3), ("hmc", 3, 3), ("mala", 1, 1)]
)
def test_energy_evaluations_attr_equals_the_counted_gradients(kernel, n_leapfrog, n_temps):
    target = CountingTarget(Bimodal())
    n, params = 4 * 5 + 3, dict(n_chains=5, n_warmup=7, n_burnin=3, thinning=2)
    s = mcmc_reference(
        target,
        n,
        torch.Generator().manual_seed(2),
        kernel=kernel,
        n_leapfrog=n_leapfrog,
        n_temps=n_temps,
        rhat_max=math.inf,
        **params,
    )
    steps = 7 + 3 + 5 * 2  # ⌈23 / 5⌉ = 5 draws per chain
    assert s.attrs["n_steps"] == steps and s.attrs["n_draws_per_chain"] == 5
    assert s.attrs["energy_evaluations"] == n_temps * 5 * (1 + steps * n_leapfrog)
    assert target.counts.grad == s.attrs["energy_evaluations"]
    assert s.x.shape == (n, 1) and s.energy.shape == (n,)
    assert s.diagnostics["swap_acceptance_per_pair"].shape == (n_temps - 1,)
    assert not any(k.startswith(("fit_", "sample_")) for k in s.attrs)


class _Killed(Exception):
    pass


def _dies_after_saving(ckpt: Checkpoint, at: int) -> Checkpoint:
    """``ckpt``, made to raise right after it saved step ``at`` (a kill, in-process)."""
    save = ckpt.save

    def save_then_die(step, state):
        save(step, state)
        if step == at:
            raise _Killed

    ckpt.save = save_then_die
    return ckpt


@pytest.mark.parametrize("at", [10, 30, 50], ids=["warm-up", "burn-in", "sampling"])
def test_a_resumed_run_equals_an_uninterrupted_one(at, tmp_path):
    params = dict(n_chains=4, n_warmup=20, n_burnin=15, thinning=3, n_temps=3, rhat_max=math.inf)

    def run(ckpt=None):
        kwargs = {"checkpoint": ckpt} if ckpt else {}
        return mcmc_reference(
            Bimodal(), 4 * 10, torch.Generator().manual_seed(3), **params, **kwargs
        )

    path = tmp_path / "pt.pt"
    with pytest.raises(_Killed):
        run(_dies_after_saving(Checkpoint(path, every=10, key="k"), at))
    again = Checkpoint(path, every=10, key="k")
    resumed, ref = run(again), run()
    assert again.resumed_from == at
    assert torch.equal(resumed.x, ref.x) and torch.equal(resumed.energy, ref.energy)
    assert resumed.attrs == ref.attrs
    for k, v in ref.diagnostics.items():
        assert torch.equal(resumed.diagnostics[k], v), k


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="4 \\* n_chains"):
        mcmc_reference(Bimodal(), 10, torch.Generator(), n_chains=4)
    with pytest.raises(ValueError, match="algorithm"):
        mcmc_reference(Bimodal(), 40, torch.Generator(), algorithm="nuts")
