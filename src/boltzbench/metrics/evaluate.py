"""Evaluate a sample set against reference samples with every applicable metric.

:func:`evaluate` is the single entry point of the evaluate step:

1. ``"sampleset"`` metrics on the sample set as given (e.g. ``nonfinite_fraction``).
2. ``"weights"`` metrics on all rows (log Ẑ, Δlog Z, ESS; None without weights).
3. Rows whose energy or any coordinate of x is non-finite are dropped.
   ``n = min(n_eval, finite rows)`` of them are drawn uniformly without
   replacement, and ``min(n_eval, finite reference rows)`` reference rows the
   same way; every ``"sample"`` metric compares the two → key ``"<name>"``.
4. With ``log_weight``, n rows are also drawn from the finite rows by
   multinomial resampling (with replacement) with probabilities w_i / Σ_j w_j
   (non-finite log weights count as zero) → key ``"<name>_reweighted"``,
   against the same reference rows.

:func:`noise_floor` is step 3 between two independent reference sets: what a
perfect sampler scores at this n_eval.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from boltzbench.metrics.base import Metric
from boltzbench.metrics.weights import clean_log_weights
from boltzbench.targets.base import Target

if TYPE_CHECKING:  # only for annotations: metrics never import the sampler families
    from boltzbench.methods.base import SampleSet

__all__ = [
    "evaluate",
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


def _sample_metrics(
    samples: SampleSet | None, reference: SampleSet, target: Target, generator: torch.Generator
) -> dict[str, float | None]:
    """Every applicable ``"sample"`` metric; None for all when either set is empty."""
    metrics = applicable_metrics(target, "sample")
    if samples is None or samples.x.shape[0] == 0 or reference.x.shape[0] == 0:
        return {m.name: None for m in metrics}
    return {
        m.name: float(
            m.fn(samples.x, samples.energy, reference.x, reference.energy, target, generator)
        )
        for m in metrics
    }


def _whole_set_metrics(samples: SampleSet, target: Target) -> dict[str, float | None]:
    """Every applicable ``"sampleset"`` and ``"weights"`` metric, on all rows."""
    out: dict[str, float | None] = {}
    for kind in ("sampleset", "weights"):
        for m in applicable_metrics(target, kind):
            value = m.fn(samples, target)
            out[m.name] = None if value is None else float(value)
    return out


def evaluate(
    samples: SampleSet,
    target: Target,
    reference: SampleSet,
    n_eval: int,
    generator: torch.Generator,
    reference_generator: torch.Generator | None = None,
) -> dict[str, float | None]:
    """Every applicable metric of ``samples`` on ``target`` (see the module docstring).

    ``reference_generator`` (default: ``generator``) draws the n_eval reference
    rows; the pipeline seeds it by (target, seed) only, so every method on a
    target and seed is compared against the same reference rows.

    Returns the ``"sampleset"`` and ``"weights"`` metric names, each ``"sample"``
    metric name, ``"<name>_reweighted"`` for each ``"sample"`` metric when
    ``samples.log_weight`` is given (None when every weight is zero), and
    ``n_eval_samples`` / ``n_eval_reference`` (ints: the rows actually compared).
    Values are Python floats or None.
    """
    out = _whole_set_metrics(samples, target)
    finite = finite_rows(samples)
    ref = subsample(finite_rows(reference), n_eval, reference_generator or generator)
    raw = subsample(finite, n_eval, generator)
    out.update(_sample_metrics(raw, ref, target, generator))
    if samples.log_weight is not None:
        reweighted = resample(finite, raw.x.shape[0], generator)
        rw = _sample_metrics(reweighted, ref, target, generator)
        out.update({f"{name}_reweighted": v for name, v in rw.items()})
    out["n_eval_samples"] = int(raw.x.shape[0])
    out["n_eval_reference"] = int(ref.x.shape[0])
    return out


def noise_floor(
    reference_a: SampleSet,
    reference_b: SampleSet,
    target: Target,
    n_eval: int,
    generator: torch.Generator,
) -> dict[str, float]:
    """Every applicable ``"sample"`` metric between ``n_eval`` rows of each reference set.

    Rows are drawn uniformly without replacement from the finite rows of
    ``reference_a`` (as the samples) and ``reference_b`` (as the reference).
    ``"<name>_reweighted"`` is the floor of the reweighted variant: the rows of
    ``reference_a`` resampled multinomially with uniform weights (so with the
    duplicates a resample by weight brings) against the same reference rows.
    Raises ValueError when either has no finite rows.
    """
    a = subsample(finite_rows(reference_a), n_eval, generator)
    b = subsample(finite_rows(reference_b), n_eval, generator)
    if a.x.shape[0] == 0 or b.x.shape[0] == 0:
        raise ValueError("noise_floor needs finite rows in both reference sets")
    floor = _sample_metrics(a, b, target, generator)
    uniform = replace(a, log_weight=torch.zeros_like(a.energy))
    rw = _sample_metrics(resample(uniform, a.x.shape[0], generator), b, target, generator)
    floor.update({f"{name}_reweighted": v for name, v in rw.items()})
    return floor  # type: ignore[return-value]
