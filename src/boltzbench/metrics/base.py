"""The metric interface.

A :class:`Metric` is a named function with one of three kinds:

``"sample"``
    Compares samples with reference samples: ``fn(x, energy, ref_x, ref_energy,
    target, generator) -> float``. It is computed on ``N_eval`` samples against
    ``N_eval`` reference samples, and its **noise floor** is the same metric
    between the two independent reference sets. On a weighted sample set it is
    reported twice: ``raw`` (the samples as drawn, uniform subsample) and
    ``reweighted`` (a multinomial resample of ``N_eval`` by normalized weight).
``"weights"``
    Uses importance weights or a log Z estimate: ``fn(samples, target) -> float``
    or None when the sample set has neither (e.g. MCMC without weights).
``"sampleset"``
    A property of the whole sample set: ``fn(samples, target) -> float``.
``"density"``
    Uses the method's normalized log density log q at the N_eval reference
    samples (forward metrics: EUBO, forward ESS): ``fn(ref_energy, ref_log_q,
    target) -> float | None``, both arguments float64 of shape ``(N_eval,)``.
    Only for methods that have a density (``Method.has_density``).

``applies(target)`` says whether a metric is defined for a target (mode
coverage only for targets with ``assign_modes``). ``counts_invalid`` marks a
``"sample"`` metric that can score rows the sampler drew but that are not
finite (NaN or ±inf energy or coordinates): it is called with the keyword
``invalid``, the fraction of the sample set's rows that are not finite, and
counts that mass as falling outside the reference's support (a histogram
metric's "outside" bin). Every other sample metric is computed on the finite
rows only, and the leaderboard marks its cells whenever rows were dropped.
``max_rows`` caps the rows a metric compares (the first ``max_rows`` of the
N_eval sample and reference rows, themselves uniform draws): the exact OT and
kernel metrics cost O(n²)–O(n³), so they stay at :data:`OT_MAX_ROWS` rows where a
target raises N_eval for its histogram metrics (alanine dipeptide). ``better`` (``"lower"``,
``"higher"``, or ``"neither"`` for an estimate such as log Ẑ) is printed with the
metric's definition under the leaderboard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from boltzbench.targets.base import Target

__all__ = ["Metric", "LogDensity", "OT_MAX_ROWS"]

#: rows compared by the exact OT and kernel metrics (W2, aligned W2, torus W2, MMD)
OT_MAX_ROWS = 2000

#: x ``(n, dim)`` ↦ log q(x) ``(n,)``: a method's normalized log density
LogDensity = Callable[[torch.Tensor], torch.Tensor]


def _always(target: Target) -> bool:
    return True


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Literal["sample", "weights", "sampleset", "density"]
    fn: Callable[..., float | None]
    doc: str
    better: Literal["lower", "higher", "neither"] = "lower"
    applies: Callable[[Target], bool] = _always
    counts_invalid: bool = False
    max_rows: int | None = None
