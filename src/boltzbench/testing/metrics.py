"""``check_metric``: a metric is documented, and a number that can be wrong.

Each kind of metric (``Metric.kind``) has one check in :data:`METRIC_CHECKS`:

``sample``
    On identical inputs (a reference set against itself) it takes its ideal
    value (0 for a ``lower`` metric unless told otherwise); it is worse when half
    the rows come from a known perturbation of the target (:data:`PERTURBATIONS`)
    and worse again when all do; a metric that ``counts_invalid`` is worse by
    more than 0.1 when a fraction of the rows is invalid.
``weights``
    None without weights; its ideal on q = p (log w = −E − log p), worse on
    importance weights from q = N(0, 2² I).
``density``
    Its ideal for log q = log p at exact samples, worse for another q.
``sampleset``
    Its ideal on typical rows (read as 4 chains of 25 draws where a metric asks).

The inputs are tiny (≤ 400 rows); the target is the first of
:func:`metric_targets` the metric applies to, unless one is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from boltzbench.core import SampleSet
from boltzbench.estimators import mean_log_weight
from boltzbench.metrics.base import Metric
from boltzbench.metrics.liquid import PeriodicLiquid
from boltzbench.targets.base import LatticeField, Molecule, ParticleChart, Target
from boltzbench.targets.gauge import GaugeObservables
from boltzbench.targets.gaussian import Gaussian
from boltzbench.testing.common import require, typical_points

__all__ = ["check_metric", "METRIC_CHECKS", "PERTURBATIONS", "metric_targets", "Expected"]

#: a value expected on given inputs: a number, or one computed from the target, to
#: 1e-9; or (either, tolerance) for a value known only within a sampling error (a
#: metric scored against exact values, not the reference, e.g. the gauge metrics)
Expected = float | Callable[[Target], float] | tuple | None

METRIC_CHECKS: dict[str, Callable[..., None]] = {}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def metric_targets() -> Iterator[Target]:
    """One target of each kind a metric may apply to (plain, modes, lattice,
    gauge, particles, molecule), cheapest first."""
    from boltzbench.targets import TARGETS

    yield Gaussian(dim=2)
    yield TARGETS.build("gmm40")
    yield TARGETS.build("phi4", L=4, m2=1.0, lam=0.0)  # the free field: exact samples
    yield TARGETS.build("u1", L=4, beta=2.0)  # exact samples
    yield TARGETS.build("dw4")
    yield TARGETS.build("aldp", solvent="vacuum")
    yield TARGETS.build("lj_liquid", n_particles=32, density=0.2)  # a periodic liquid


def _with_energy(target: Target, x: torch.Tensor) -> SampleSet:
    return SampleSet(x=x, energy=target.energy(x).detach())


def _modes_sorted(target: Target, n: int) -> SampleSet:
    """Every mode's mean ``n // n_modes`` times, sorted by mode: exactly equal weights."""
    return _with_energy(target, target.means.repeat_interleave(n // target.n_modes, 0))


def _collapsed(target: Target, ref: SampleSet) -> SampleSet:
    return _with_energy(target, target.means[:1].expand_as(ref.x).clone())


#: (applies to the target, reference set of n rows, its known perturbation), first match
PERTURBATIONS: list[tuple[Callable, Callable, Callable]] = [
    (  # equal modes: every mode exactly, against all rows in mode 0
        lambda t: t.n_modes > 0 and hasattr(t, "means"),
        _modes_sorted,
        _collapsed,
    ),
    (  # a lattice field doubled
        lambda t: isinstance(t, LatticeField),
        None,
        lambda t, ref: _with_energy(t, 2.0 * ref.x),
    ),
    (  # a periodic liquid compressed about particle 0 (fractional coordinates × 0.8):
        # shifting x by 1 would be the same configuration
        lambda t: isinstance(t, PeriodicLiquid),
        None,
        lambda t, ref: _with_energy(t, 0.8 * ref.x),
    ),
    (  # gauge links scaled by 0.3: plaquettes colder, Q mostly 0 (a constant shift
        # of every link would leave every plaquette unchanged)
        lambda t: isinstance(t, GaugeObservables),
        None,
        lambda t, ref: _with_energy(t, 0.3 * ref.x),
    ),
    (  # particle positions scaled by 1.3
        lambda t: isinstance(t, ParticleChart),
        None,
        lambda t, ref: _with_energy(t, t.coordinates(1.3 * t.positions(ref.x))),
    ),
    (  # a molecule's coordinates 30 times noisier
        lambda t: isinstance(t, Molecule),
        None,
        lambda t, ref: _with_energy(t, typical_points(t, ref.x.shape[0], _gen(41), noise=0.3)),
    ),
    (lambda t: True, None, lambda t, ref: _with_energy(t, ref.x + 1.0)),  # shifted by 1
]


def reference_and_perturbed(target: Target, n: int = 200) -> tuple[SampleSet, SampleSet]:
    """A reference set of ``target`` (exact samples or points near its base location)
    and a set wrong in a known way (:data:`PERTURBATIONS`)."""
    for applies, reference, perturb in PERTURBATIONS:
        if applies(target):
            if reference is None:
                ref = _with_energy(target, typical_points(target, n, _gen(26), noise=0.01))
            else:
                ref = reference(target, n)
            return ref, perturb(target, ref)
    raise AssertionError("unreachable: the last perturbation applies to every target")


def _mix(a: SampleSet, b: SampleSet, frac: float) -> SampleSet:
    """The first ``frac`` of the rows from ``b``, the rest from ``a``."""
    k = int(frac * a.x.shape[0])
    return SampleSet(torch.cat([b.x[:k], a.x[k:]]), torch.cat([b.energy[:k], a.energy[k:]]))


def _value(m: Metric, s: SampleSet, ref: SampleSet, target: Target, invalid: float = 0.0):
    args = (s.x, s.energy, ref.x, ref.energy, target, _gen())
    return m.fn(*args, invalid=invalid) if m.counts_invalid else m.fn(*args)


def _worse(m: Metric, a: float, b: float) -> bool:
    """Whether ``a`` is strictly worse than ``b`` (different, for ``neither``)."""
    return {"lower": a > b, "higher": a < b}.get(m.better, a != b)


def _expect(subject: str, check: str, value, expected: Expected, target: Target, what: str):
    if expected is None:
        return
    expected, tol = expected if isinstance(expected, tuple) else (expected, 1e-9)
    want = expected(target) if callable(expected) else expected
    require(
        value is not None and abs(value - want) <= tol,
        subject,
        check,
        f"{what}: {value!r}, expected {want!r}",
    )


def _kind(fn):
    METRIC_CHECKS[fn.__name__] = fn
    return fn


@_kind
def sample(m, target, subject, ideal, perturbed, invalid_fraction) -> None:
    ref, wrong = reference_and_perturbed(target)
    best = _value(m, ref, ref, target)
    if ideal is None and m.better == "lower":
        ideal = 0.0
    _expect(subject, "ideal", best, ideal, target, "value on identical inputs")
    half, full = _value(m, _mix(ref, wrong, 0.5), ref, target), _value(m, wrong, ref, target)
    require(
        _worse(m, half, best) and _worse(m, full, half),
        subject,
        "perturbation",
        f"not worse as more rows are perturbed: {best} (none), {half} (half), {full} (all)",
    )
    _expect(subject, "perturbation", full, perturbed, target, "value on the perturbed set")
    if m.counts_invalid:  # invalid rows are a mismatch, never ignored
        bad = _value(m, ref, ref, target, invalid=invalid_fraction)
        worse_by = (bad - best) * {"lower": 1, "higher": -1}.get(m.better, 0)
        require(
            worse_by > 0.1,
            subject,
            "invalid",
            f"with {invalid_fraction:.0%} invalid rows it is {bad}, against {best} without",
        )


def _exact_weighted(target: Gaussian, n: int, seed: int) -> SampleSet:
    """Exact samples with log w = −E − log p (q = p: every weight is Z), independent
    draws, so their ELBO is declared as a method would (``log_Z_elbo``)."""
    x = target.sample(n, _gen(seed))
    e = target.energy(x)
    lw = -e - target.log_prob(x)
    return SampleSet(x=x, energy=e, log_weight=lw, attrs={"log_Z_elbo": mean_log_weight(lw)})


def _wide_weighted(target: Gaussian, n: int, seed: int, scale: float = 2.0) -> SampleSet:
    """x ~ q = N(0, scale² I) with log w = −E − log q (and its declared ELBO)."""
    x = scale * torch.randn(n, target.dim, generator=_gen(seed), dtype=torch.float64)
    log_q = target._normal_log_prob(x, math.log(scale)).sum(-1)
    e = target.energy(x)
    lw = -e - log_q
    attrs = {"log_Z_elbo": mean_log_weight(lw)}
    return SampleSet(x=x, energy=e, log_weight=lw, log_q=log_q, attrs=attrs)


@_kind
def weights(m, target, subject, ideal, perturbed, invalid_fraction) -> None:
    target = target if isinstance(target, Gaussian) else Gaussian(dim=2, mean=1.0)
    exact, wide = _exact_weighted(target, 400, 50), _wide_weighted(target, 400, 51)
    plain = SampleSet(x=exact.x, energy=exact.energy)
    require(m.fn(plain, target) is None, subject, "no weights", "not None without weights")
    best, other = m.fn(exact, target), m.fn(wide, target)
    _expect(subject, "ideal", best, ideal, target, "value for q = p")
    require(
        _worse(m, other, best) and abs(other - best) > 1e-3,
        subject,
        "perturbation",
        f"q = p gives {best}, q = N(0, 4 I) gives {other}",
    )


@_kind
def density(m, target, subject, ideal, perturbed, invalid_fraction) -> None:
    target = target if isinstance(target, Gaussian) else Gaussian(dim=2, mean=1.0)
    x = target.sample(300, _gen(52))
    e, log_p = target.energy(x), target.log_prob(x)
    best = m.fn(e, log_p, target)
    _expect(subject, "ideal", best, ideal, target, "value for log q = log p")
    other = m.fn(e, log_p - 0.5 * (x**2).sum(-1) + 0.3, target)
    require(
        _worse(m, other, best) and abs(other - best) > 1e-2,
        subject,
        "perturbation",
        f"q = p gives {best}, another q {other}",
    )


@_kind
def sampleset(m, target, subject, ideal, perturbed, invalid_fraction) -> None:
    s = _with_energy(target, typical_points(target, 100, _gen(), noise=0.01))
    s.attrs.update(n_chains=4, n_draws_per_chain=25)  # draw-major: read as 4 chains
    if ideal is None and m.better == "lower":
        ideal = 0.0
    _expect(subject, "ideal", m.fn(s, target), ideal, target, "value on typical rows")


def _documented(m: Metric, subject: str) -> None:
    from boltzbench.metrics import METRICS, metric_docs

    require(isinstance(m, Metric), subject, "interface", f"is a {type(m).__name__}, not a Metric")
    require(
        m.kind in METRIC_CHECKS,
        subject,
        "interface",
        f"kind {m.kind!r} is not one of {', '.join(METRIC_CHECKS)}",
    )
    require(
        m.better in ("lower", "higher", "neither"), subject, "interface", f"better={m.better!r}"
    )
    documented = bool(m.doc.strip()) and bool((m.fn.__doc__ or "").strip())
    require(documented, subject, "interface", "has no doc, or its function no docstring")
    if m.name in METRICS.names():
        doc = metric_docs()[m.name]
        require(
            doc.startswith(m.doc) and doc != m.doc,
            subject,
            "interface",
            "its report definition does not extend its doc",
        )


def check_metric(
    metric: Metric,
    target: Target | None = None,
    *,
    ideal: Expected = None,
    perturbed: Expected = None,
    invalid_fraction: float = 0.5,
) -> str:
    """Check ``metric``; raise :class:`~boltzbench.testing.ConformanceError` naming it,
    the check and why at the first failure. Returns the name of the target used.

    Parameters
    ----------
    target
        Where to check it (default: the first of :func:`metric_targets` it applies to).
    ideal
        Its value on ideal inputs (identical sets; q = p), a number or a function of
        the target, or (either, tolerance) when known only within a sampling error;
        default 0 for a ``lower`` sample or sample-set metric, else unchecked.
    perturbed
        Its value, in closed form, on the fully perturbed set (sample metrics).
    invalid_fraction
        The fraction of invalid rows that must make a ``counts_invalid`` metric worse
        by more than 0.1.
    """
    subject = f"metric {getattr(metric, 'name', metric)!r}"
    _documented(metric, subject)
    if target is None:
        target = next((t for t in metric_targets() if metric.applies(t)), None)
        require(target is not None, subject, "applies", "applies to none of metric_targets()")
    METRIC_CHECKS[metric.kind](metric, target, subject, ideal, perturbed, invalid_fraction)
    return type(target).__name__
