"""Forward metrics (EUBO, forward KL, forward ESS) against closed forms, and the
methods' log densities that feed them. Seeded, float64."""

from __future__ import annotations

import math

import pytest
import torch

from boltzbench.core import SampleSet
from boltzbench.methods.fab import FAB
from boltzbench.methods.flow import FlowMethod
from boltzbench.methods.flow_matching import FlowMatching
from boltzbench.metrics import evaluate
from boltzbench.metrics.forward import eubo, forward_ess, forward_kl
from boltzbench.metrics.weights import kish_ess
from boltzbench.targets.base import Target
from boltzbench.targets.gaussian import Gaussian


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian_log_q(x: torch.Tensor, loc: float, scale: float) -> torch.Tensor:
    """log N(x; loc, scale² I), shape (n,)."""
    z = (x - loc) / scale
    return (-0.5 * z**2 - math.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


def test_gaussian_proposal_closed_forms():
    """p = N(0, I₂) (unnormalized, log Z = log 2π), q = N(0, s² I₂) with s = 1.5.

    KL(p ‖ q) = d (log s + 1/(2s²) − ½) = 0.2887 nats; forward ESS = Z / ∫ p̃²/q ·…
    = (√(2s² − 1) / s²)^d = 3.5 / 5.0625 = 0.6914. N = 20,000 reference samples:
    tolerances are 5 standard errors of the estimators (by the delta method for ESS).
    """
    target, s, d, n = Gaussian(dim=2), 1.5, 2, 20_000
    x = target.sample(n, gen(1))
    e, lq = target.energy(x), gaussian_log_q(x, 0.0, s)
    kl = d * (math.log(s) + 1 / (2 * s * s) - 0.5)
    lw = -e - lq
    se_kl = float(lw.std()) / math.sqrt(n)
    assert eubo(e, lq, target) == pytest.approx(target.log_Z + kl, abs=5 * se_kl)
    assert forward_kl(e, lq, target) == pytest.approx(kl, abs=5 * se_kl)
    ess = (math.sqrt(2 * s * s - 1) / s**2) ** d
    w = torch.exp(lw - lw.max())
    rel_se = math.sqrt(float((w / w.mean()).var()) / n)  # mean w dominates the error
    assert forward_ess(e, lq, target) == pytest.approx(ess, rel=5 * rel_se + 0.01)


class TwoModes(Target):
    """p = ½ N(−3, 1) + ½ N(3, 1) in 1-D, normalized: log Z = 0."""

    dim, log_Z, exact_sampling = 1, 0.0, True

    def energy(self, x):
        a = -0.5 * (x[:, 0] + 3) ** 2
        b = -0.5 * (x[:, 0] - 3) ** 2
        return -(torch.logaddexp(a, b) - math.log(2) - 0.5 * math.log(2 * math.pi))

    def sample(self, n, generator):
        sign = 2 * torch.randint(2, (n, 1), generator=generator) - 1
        return 3.0 * sign + torch.randn(n, 1, generator=generator, dtype=torch.float64)


def test_one_mode_proposal_of_two_modes_is_seen_only_by_forward_metrics():
    """q = N(3, 1) covers one mode of p: its own (reverse) Kish ESS is ≈ 1 (p/q ≈ ½ on
    its samples; 0.976 here, the left tail of q seeing the other mode), while the
    forward ESS at p's samples is ≈ 0 (5e-13) and the forward KL ≫ 0 (8.4 nats)."""
    target, n = TwoModes(), 5000
    xq = 3.0 + torch.randn(n, 1, generator=gen(2), dtype=torch.float64)
    lq_q = gaussian_log_q(xq, 3.0, 1.0)
    reverse = SampleSet(x=xq, energy=target.energy(xq), log_weight=-target.energy(xq) - lq_q)
    assert kish_ess(reverse, target) > 0.95
    xp = target.sample(n, gen(3))
    e, lq = target.energy(xp), gaussian_log_q(xp, 3.0, 1.0)
    assert forward_ess(e, lq, target) < 1e-3
    assert forward_kl(e, lq, target) > 5.0


def test_nonfinite_log_q_means_q_misses_the_row():
    target = Gaussian(dim=1)
    e = torch.zeros(4, dtype=torch.float64)
    lq = torch.tensor([0.0, -1.0, -math.inf, 0.5], dtype=torch.float64)
    assert eubo(e, lq, target) == math.inf and forward_ess(e, lq, target) == 0.0


def test_evaluate_adds_forward_metrics_at_the_reference_rows():
    target = Gaussian(dim=2)
    ref = SampleSet(x=target.sample(500, gen(4)), energy=torch.zeros(500))
    ref.energy = target.energy(ref.x)
    s = SampleSet(x=ref.x[:200].clone(), energy=ref.energy[:200].clone())
    out = evaluate(s, target, ref, 300, gen(5), gen(6), log_density=target.log_prob)
    assert out["forward_ess"] == pytest.approx(1.0, abs=1e-12)
    assert out["forward_kl"] == pytest.approx(0.0, abs=1e-12)
    assert out["eubo"] == pytest.approx(target.log_Z, abs=1e-12)
    assert "eubo" not in evaluate(s, target, ref, 300, gen(5), gen(6))


FAST = {"transforms": 2, "hidden_features": [16, 16], "bins": 4, "n_iter": 20, "batch_size": 64}


@pytest.mark.parametrize(
    "method",
    [
        lambda: FlowMethod(mode="reverse_kl", **FAST),
        lambda: FAB(**FAB.fast_params),
        lambda: FlowMatching(hidden_features=16, n_layers=2, n_iter=30, batch_size=64),
    ],
    ids=["flow", "fab", "flow_matching"],
)
def test_log_density_is_the_density_of_the_samples(method):
    """A method's log_density at its own samples equals the log q it drew them with
    (exactly for flows; to the RK4 error, 1e-5 here, for flow matching, whose
    density is integrated backwards)."""
    target = Gaussian(dim=2, mean=1.0)
    m = method()
    assert m.has_density
    data = target.sample(1000, gen(7)) if m.needs_data else None
    m.fit(target, data, gen(8))
    s = m.sample(target, 300, gen(9))
    assert torch.allclose(m.log_density(target, s.x), s.log_q, atol=1e-5, rtol=0)


def test_the_elbo_gap_reads_the_declared_elbo():
    # log Z − mean log w from attrs['log_Z_elbo']; None without it or without log Z
    from boltzbench.core import SampleSet
    from boltzbench.metrics.weights import elbo_gap
    from boltzbench.targets.gaussian import Gaussian

    target = Gaussian(dim=2)
    x = torch.zeros(3, 2, dtype=torch.float64)
    lw = torch.tensor([0.1, -0.4, 0.3], dtype=torch.float64)
    declared = SampleSet(x=x, energy=x[:, 0], log_weight=lw, attrs={"log_Z_elbo": 0.0})
    assert elbo_gap(declared, target) == pytest.approx(target.log_Z)
    assert elbo_gap(SampleSet(x=x, energy=x[:, 0], log_weight=lw), target) is None
    target.log_Z = None
    assert elbo_gap(declared, target) is None


def test_a_path_sampler_gets_forward_metrics_from_its_path_density(tmp_path):
    # the evaluate step's loader: a diffusion sampler has no exact density, so the
    # forward metrics use its path estimate; the path EUBO of a barely trained PIS
    # lies above log Z (4 s.e.), and its ELBO gap is positive
    from boltzbench.io import save_model
    from boltzbench.jobs import fitted_log_density
    from boltzbench.methods.diffusion import DiffusionSampler

    target = Gaussian(dim=2, mean=1.0)
    entry = {"kind": "diffusion", "params": {"n_steps": 8, "hidden_features": [16], "n_iter": 5}}
    method = DiffusionSampler(**entry["params"])
    method.fit(target, None, gen(1))
    path = save_model(tmp_path / "model.zarr", method.model_state(), {}, {})
    density = fitted_log_density(str(path), target, entry, gen(2))
    assert density is not None
    samples = method.sample(target, 1000, gen(3))
    ref = target.sample(1000, gen(4))
    reference = SampleSet(x=ref, energy=target.energy(ref))
    out = evaluate(samples, target, reference, 1000, gen(5), log_density=density)
    lw = -reference.energy - density(ref)
    assert out["eubo"] - target.log_Z > 4 * float(lw.std()) / math.sqrt(1000)
    assert 0 < out["forward_ess"] <= 1 and out["elbo_gap"] > 0
