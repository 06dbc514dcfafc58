"""Score step: a file of samples made elsewhere beside a target's noise floor, for a
one-off check (``boltzbench score --config CONFIG --target NAME FILE``).

It scores exactly as the pipeline does. The file is read and checked
(:func:`boltzbench.external.load_samples`: its first ``sampling.n_samples``
rows, energies checked against the target's). Its metrics are the evaluate
step's (:func:`boltzbench.metrics.evaluate`), against the seed's N_eval rows
of the 'eval' reference split drawn by the same generator; the noise floor is
the noise-floor step's (:func:`boltzbench.metrics.noise_floor`:
``evaluation.floor_replicates`` perfect samplers of ``n_samples`` rows from the
'floor' split, against the same rows). The splits are read from the config's
``results_dir`` (relative to the current directory). Where they do not exist,
a target whose reference is ``exact`` gets them built in memory exactly as
the reference step builds them (the same seeds, so the same rows); for any
other target that is a :class:`ScoreError` saying how to make them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from boltzbench.config import Config, eval_size, reference_sizes
from boltzbench.core import SampleSet
from boltzbench.external import load_samples
from boltzbench.hashing import derive_seed
from boltzbench.io import dataset_to_samples, read_store
from boltzbench.jobs import generator
from boltzbench.metrics import evaluate, noise_floor
from boltzbench.references import exact_reference, resolve_reference
from boltzbench.targets import Target, build_target

__all__ = ["ScoreError", "ScoreReport", "FloorStats", "score_file", "reference_split"]


class ScoreError(ValueError):
    """The file cannot be scored on this config (unknown target, no reference)."""


@dataclass(frozen=True)
class FloorStats:
    """A metric's noise floor over its replicates: mean, sample std and count."""

    mean: float
    std: float
    n: int

    def excess_sigma(self, value: float | None) -> float:
        """(value − mean) / std; NaN where undefined."""
        if value is None or not math.isfinite(value) or not self.std > 0:
            return math.nan
        return (value - self.mean) / self.std


@dataclass
class ScoreReport:
    """What ``boltzbench score`` prints: the file's metrics and their floors."""

    target: str
    path: str
    seed: int
    n_eval: int
    n_samples: int
    replicates: int
    metrics: dict[str, float | None]
    floor: dict[str, FloorStats]
    reference: str
    attrs: dict[str, Any] = field(default_factory=dict)
    n_rows: int = 0


def reference_split(cfg: Config, target_name: str, target: Target, split: str) -> tuple:
    """(the split as a float64 sample set, where it came from): the pipeline's store
    under ``results_dir``, or, for an exact reference, built as the reference step
    builds it."""
    store = Path(cfg.results_dir) / target_name / "reference" / f"{split}.zarr"
    if store.exists():
        return dataset_to_samples(read_store(store)), str(store)
    spec = cfg.targets[target_name].model_dump().get("reference")
    if resolve_reference(target, spec)["kind"] != "exact":
        raise ScoreError(
            f"no reference store at {store}, and target {target_name!r} has no exact "
            "reference to build it from: make its 'eval' and 'floor' splits with the "
            f"pipeline first (snakemake --configfile CONFIG {store} "
            f"{store.with_name('floor.zarr')}), and run this command where they are"
        )
    n = reference_sizes(cfg, target_name)[split]
    gen = torch.Generator().manual_seed(derive_seed("reference", target_name, split))
    return exact_reference(target, n, gen), "built in memory from the exact sampler"


def _floor_stats(replicates: list[dict[str, float | None]]) -> dict[str, FloorStats]:
    """Each metric's mean, sample std and count over the replicates' finite values."""
    out = {}
    for name in replicates[0]:
        values = [v for r in replicates if (v := r.get(name)) is not None and math.isfinite(v)]
        if values:
            t = torch.tensor(values, dtype=torch.float64)
            std = float(t.std()) if len(values) > 1 else 0.0
            out[name] = FloorStats(float(t.mean()), std, len(values))
    return out


def _reference(cfg: Config, name: str, target: Target) -> tuple[SampleSet, SampleSet, str]:
    """The 'eval' and 'floor' splits and where they came from."""
    eval_set, where = reference_split(cfg, name, target, "eval")
    floor_set, floor_where = reference_split(cfg, name, target, "floor")
    return eval_set, floor_set, where if where == floor_where else f"{where}; {floor_where}"


def score_file(
    cfg: Config,
    target_name: str,
    path: str | Path,
    seed: int | None = None,
    method_name: str = "external",
) -> ScoreReport:
    """Score the sample file ``path`` on ``target_name`` of ``cfg`` (see the module
    docstring); ``seed`` (default: the config's first) picks the reference rows
    and the floor, as the pipeline's seed does. Raises :class:`ScoreError` or
    :class:`~boltzbench.external.ExternalSamplesError` for bad input."""
    if target_name not in cfg.targets:
        raise ScoreError(f"unknown target {target_name!r}; valid choices: {', '.join(cfg.targets)}")
    seed = cfg.seeds[0] if seed is None else int(seed)
    target = build_target(cfg.targets[target_name].model_dump()).double()
    n, n_eval = cfg.sampling.n_samples, eval_size(cfg, target_name)
    samples = load_samples(path, target, n, target_name=f"target {target_name!r}")
    samples.attrs["costs_declared"] = 1  # as the sample step marks a file's samples
    reference, floor, where = _reference(cfg, target_name, target)
    ref_rows = generator("reference_rows", target_name, seed)
    gen = generator("evaluate", target_name, method_name, seed)
    metrics = evaluate(samples, target, reference, n_eval, gen, ref_rows)
    replicates = cfg.evaluation.floor_replicates
    floor_gen = generator("noise_floor", target_name, seed)
    ref_rows = generator("reference_rows", target_name, seed)  # the same rows again
    draws = noise_floor(floor, reference, target, n_eval, n, replicates, floor_gen, ref_rows)
    return ScoreReport(
        target=target_name,
        path=str(path),
        seed=seed,
        n_eval=n_eval,
        n_samples=n,
        replicates=replicates,
        metrics=metrics,
        floor=_floor_stats(draws),
        reference=where,
        attrs=dict(samples.attrs),
        n_rows=int(samples.x.shape[0]),
    )
