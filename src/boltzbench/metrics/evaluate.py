"""Evaluate a sample set against reference samples with every applicable metric.

:func:`evaluate` is the single entry point of the evaluate step:

1. ``"sampleset"`` metrics on the sample set as given (e.g. ``nonfinite_fraction``).
2. ``"weights"`` metrics on all rows (log Ẑ, Δlog Z, ESS; None without weights).
3. N_eval reference rows are drawn (:func:`reference_rows`), by a generator
   that depends only on (target, seed), so every method of a seed and that
   seed's noise floor are compared with the same rows.
4. :func:`score`: rows whose energy or any coordinate of x is non-finite are
   set aside; ``n = min(n_eval, finite rows)`` of the others are drawn uniformly
   without replacement and every ``"sample"`` metric compares them with the
   reference rows → key ``"<name>"``. Metrics that can (histograms, mode
   metrics: ``counts_invalid``) also count the fraction of non-finite rows as
   mass outside the reference's support; the others are computed on finite
   rows only, and the leaderboard marks them when rows were dropped.
5. With ``log_weight``, n rows are also drawn from the finite rows by
   multinomial resampling (with replacement) with probabilities w_i / Σ_j w_j
   (non-finite log weights count as zero) → key ``"<name>_reweighted"``.
6. With the method's log density, the ``"density"`` (forward) metrics at the
   reference rows.

:func:`noise_floor` scores perfect samplers by the same :func:`score`: each of
``floor_replicates`` disjoint chunks of n_samples exact rows (the 'floor'
split), given uniform weights, against the seed's reference rows. A perfect
sampler's raw and reweighted metrics are thus at their floors by construction,
and the replicates give the floor's spread.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from boltzbench.metrics.base import LogDensity, Metric
from boltzbench.metrics.weights import clean_log_weights
from boltzbench.targets.base import Target

if TYPE_CHECKING:  # only for annotations: metrics never import the sampler families
    from boltzbench.core import SampleSet

__all__ = [
    "evaluate",
    "score",
    "reference_rows",
    "floor_chunks",
    "noise_floor",
    "metric_docs",
    "applicable_metrics",
    "finite_rows",
    "nonfinite_fraction",
    "subsample",
    "resample",
]


def _registered() -> list[Metric]:
    """Every registered metric, in name order (imported lazily: no import cycle)."""
    from boltzbench.metrics import METRICS

    return [METRICS.build(name) for name in METRICS.names()]


def applicable_metrics(target: Target, kind: str) -> list[Metric]:
    """Registered metrics of ``kind`` that apply to ``target``."""
    return [m for m in _registered() if m.kind == kind and m.applies(target)]


def metric_docs() -> dict[str, str]:
    """Name → definition of every registered metric and which way is better, for the report."""
    better = {
        "lower": "Lower is better.",
        "higher": "Higher is better.",
        "neither": "An estimate, not a score: compare it with the exact value.",
    }
    return {m.name: f"{m.doc} {better[m.better]}" for m in _registered()}


def _finite_mask(samples: SampleSet) -> torch.Tensor:
    """Rows whose energy and every coordinate of x are finite, shape ``(n,)``."""
    return torch.isfinite(samples.energy) & torch.isfinite(samples.x).all(dim=-1)


def nonfinite_fraction(samples: SampleSet, target: Target) -> float:
    """Fraction of rows whose energy or any coordinate of x is NaN or ±inf (0 if empty)."""
    n = samples.x.shape[0]
    return float((~_finite_mask(samples)).sum()) / n if n else 0.0


def _take(samples: SampleSet, idx: torch.Tensor) -> SampleSet:
    """Rows ``idx`` of ``samples`` as a float64 sample set (attrs and diagnostics dropped)."""

    def pick(v: torch.Tensor | None) -> torch.Tensor | None:
        return None if v is None else v.detach()[idx].to(torch.float64)

    return replace(
        samples,
        x=pick(samples.x),
        energy=pick(samples.energy),
        log_weight=pick(samples.log_weight),
        log_q=pick(samples.log_q),
        diagnostics={},
        attrs={},
    )


def finite_rows(samples: SampleSet) -> SampleSet:
    """The rows with finite energy and x (see :func:`nonfinite_fraction`), in float64."""
    return _take(samples, torch.nonzero(_finite_mask(samples)).reshape(-1))


def subsample(samples: SampleSet, n: int, generator: torch.Generator) -> SampleSet:
    """``min(n, rows)`` rows drawn uniformly without replacement."""
    idx = torch.randperm(samples.x.shape[0], generator=generator)[:n]
    return _take(samples, idx)


def resample(samples: SampleSet, n: int, generator: torch.Generator) -> SampleSet | None:
    """``n`` rows by multinomial resampling with probabilities w_i / Σ_j w_j.

    Non-finite log weights count as zero weight. None when there are no
    weights, no rows, or every weight is zero. The result has no log weights.
    """
    if samples.log_weight is None or samples.x.shape[0] == 0 or n <= 0:
        return None
    lw = clean_log_weights(samples.log_weight)
    if not torch.isfinite(lw).any():
        return None
    probs = torch.softmax(lw, dim=0)
    idx = torch.multinomial(probs, n, replacement=True, generator=generator)
    return replace(_take(samples, idx), log_weight=None, log_q=None)


def _call(
    m: Metric,
    samples: SampleSet,
    reference: SampleSet,
    target: Target,
    generator: torch.Generator,
    invalid: float,
) -> float:
    """``m`` on the rows of ``samples`` against ``reference`` (``invalid`` passed when it
    counts invalid rows)."""
    k = m.max_rows
    if k is not None:  # the first k rows: uniform draws already
        samples, reference = _take(samples, slice(0, k)), _take(reference, slice(0, k))
    args = (samples.x, samples.energy, reference.x, reference.energy, target, generator)
    return float(m.fn(*args, invalid=invalid) if m.counts_invalid else m.fn(*args))


def _sample_metrics(
    samples: SampleSet | None,
    reference: SampleSet,
    target: Target,
    generator: torch.Generator,
    invalid: float = 0.0,
) -> dict[str, float | None]:
    """Every applicable ``"sample"`` metric; None for all when either set is empty."""
    metrics = applicable_metrics(target, "sample")
    if samples is None or samples.x.shape[0] == 0 or reference.x.shape[0] == 0:
        return {m.name: None for m in metrics}
    return {m.name: _call(m, samples, reference, target, generator, invalid) for m in metrics}


def _whole_set_metrics(samples: SampleSet, target: Target) -> dict[str, float | None]:
    """Every applicable ``"sampleset"`` and ``"weights"`` metric, on all rows."""
    out: dict[str, float | None] = {}
    for kind in ("sampleset", "weights"):
        for m in applicable_metrics(target, kind):
            value = m.fn(samples, target)
            out[m.name] = None if value is None else float(value)
    return out


def _density_metrics(
    reference: SampleSet, log_density: LogDensity, target: Target
) -> dict[str, float | None]:
    """Every applicable ``"density"`` metric at the reference rows (forward metrics)."""
    with torch.no_grad():
        log_q = log_density(reference.x).detach().to(torch.float64).reshape(-1)
    ref_energy = reference.energy.detach().to(torch.float64)
    out: dict[str, float | None] = {}
    for m in applicable_metrics(target, "density"):
        value = m.fn(ref_energy, log_q, target)
        out[m.name] = None if value is None else float(value)
    return out


def reference_rows(reference: SampleSet, n_eval: int, generator: torch.Generator) -> SampleSet:
    """The N_eval reference rows a sample set is scored against: ``min(n_eval, finite
    rows)`` finite rows drawn uniformly without replacement (float64)."""
    return subsample(finite_rows(reference), n_eval, generator)


def score(
    samples: SampleSet, target: Target, ref: SampleSet, n_eval: int, generator: torch.Generator
) -> dict[str, float | None]:
    """Every ``"sample"`` metric of ``samples`` against the fixed reference rows ``ref``.

    Raw (key ``"<name>"``): ``min(n_eval, finite rows)`` finite rows drawn
    uniformly without replacement; metrics with ``counts_invalid`` also get the
    fraction of all rows that are not finite. Reweighted (``"<name>_reweighted"``,
    only with ``log_weight``): as many rows drawn from the finite rows by
    multinomial resampling with probabilities w_i / Σ_j w_j (zero-weight rows
    carry no mass, so nothing is counted as invalid). Also ``n_eval_samples``.
    This is the one path by which both a method and the noise floor are scored.
    """
    finite = finite_rows(samples)
    raw = subsample(finite, n_eval, generator)
    invalid = nonfinite_fraction(samples, target)
    out = _sample_metrics(raw, ref, target, generator, invalid)
    if samples.log_weight is not None:
        reweighted = resample(finite, raw.x.shape[0], generator)
        rw = _sample_metrics(reweighted, ref, target, generator)
        out.update({f"{name}_reweighted": v for name, v in rw.items()})
    out["n_eval_samples"] = int(raw.x.shape[0])
    return out


def evaluate(
    samples: SampleSet,
    target: Target,
    reference: SampleSet,
    n_eval: int,
    generator: torch.Generator,
    reference_generator: torch.Generator | None = None,
    log_density: LogDensity | None = None,
) -> dict[str, float | None]:
    """Every applicable metric of ``samples`` on ``target`` (see the module docstring).

    ``reference_generator`` (default: ``generator``) draws the n_eval reference
    rows (:func:`reference_rows`); the pipeline seeds it by (target, seed) only,
    so every method on a target and seed, and the noise floor of that seed, is
    compared against the same reference rows. ``log_density`` (x ↦ log q(x),
    the method's normalized density) adds the ``"density"`` metrics, evaluated
    at those reference rows.

    Returns the ``"sampleset"`` and ``"weights"`` metric names, each ``"sample"``
    metric name, ``"<name>_reweighted"`` for each ``"sample"`` metric when
    ``samples.log_weight`` is given (None when every weight is zero), the
    ``"density"`` metric names with ``log_density``, and ``n_eval_samples`` /
    ``n_eval_reference`` (ints: the rows actually compared). Values are Python
    floats or None.
    """
    out = _whole_set_metrics(samples, target)
    ref = reference_rows(reference, n_eval, reference_generator or generator)
    out.update(score(samples, target, ref, n_eval, generator))
    if log_density is not None:
        out.update(_density_metrics(ref, log_density, target))
    out["n_eval_reference"] = int(ref.x.shape[0])
    return out


def floor_chunks(floor: SampleSet, n_samples: int, replicates: int) -> list[SampleSet]:
    """``replicates`` disjoint chunks of ``n_samples`` consecutive rows of the 'floor'
    split (each one perfect sampler's run). Raises ValueError when it is too short."""
    if floor.x.shape[0] < n_samples * replicates:
        raise ValueError(
            f"the 'floor' reference split has {floor.x.shape[0]} rows; {replicates} floor "
            f"replicates of {n_samples} samples need {n_samples * replicates}"
        )
    idx = torch.arange(n_samples * replicates).reshape(replicates, n_samples)
    return [_take(floor, i) for i in idx]


def noise_floor(
    floor: SampleSet,
    reference: SampleSet,
    target: Target,
    n_eval: int,
    n_samples: int,
    replicates: int,
    generator: torch.Generator,
    reference_generator: torch.Generator | None = None,
) -> list[dict[str, float | None]]:
    """The metrics of ``replicates`` perfect samplers, one dict per replicate.

    Replicate r is chunk r of ``floor`` (:func:`floor_chunks`: ``n_samples``
    exact rows) given uniform log weights, scored by :func:`score` exactly as a
    method's sample set is, against the N_eval rows of ``reference`` that
    ``reference_generator`` draws (the same rows as every method of the seed).
    So ``"<name>"`` is an exact sampler's raw metric and ``"<name>_reweighted"``
    that of an exactly weighted sampler of the same size: each at its own
    floor, with no extra duplicates. Raises ValueError when either set has no
    finite rows.
    """
    ref = reference_rows(reference, n_eval, reference_generator or generator)
    if ref.x.shape[0] == 0:
        raise ValueError("noise_floor needs finite rows in the reference set")
    out = []
    for chunk in floor_chunks(floor, n_samples, replicates):
        if not bool(_finite_mask(chunk).any()):
            raise ValueError("noise_floor needs finite rows in the floor set")
        uniform = replace(chunk, log_weight=torch.zeros_like(chunk.energy))
        values = score(uniform, target, ref, n_eval, generator)
        values.pop("n_eval_samples")
        out.append(values)
    return out
