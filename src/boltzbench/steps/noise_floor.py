"""Noise-floor step: the noise floor of every sample metric for one (target, seed).

It draws the seed's N_eval reference rows with the same generator as the
evaluate step (seeded by target and seed), so a method and its floor are
scored against the same rows (:func:`boltzbench.metrics.noise_floor`).
"""

from __future__ import annotations

import logging
from typing import Any

from boltzbench.io import dataset_to_samples, read_store, write_json
from boltzbench.jobs import generator
from boltzbench.metrics import noise_floor
from boltzbench.provenance import now, provenance_attrs
from boltzbench.targets import build_target

__all__ = ["run"]

log = logging.getLogger(__name__)


def run(
    *,
    inputs: dict,
    outputs: dict,
    target_name: str,
    target: dict[str, Any],
    seed: int,
    n_eval: int,
    n_samples: int,
    replicates: int,
    source: str = "",
) -> None:
    """The noise floor of one (target, seed): ``replicates`` perfect samplers of
    ``n_samples`` rows (disjoint chunks of the 'floor' split), each scored like a
    method against the seed's N_eval rows of the 'eval' split."""
    started = now()
    tgt = build_target(target).double()
    reference = dataset_to_samples(read_store(inputs["eval"]))
    floor = dataset_to_samples(read_store(inputs["floor"]))
    gen = generator("noise_floor", target_name, seed)
    ref_gen = generator("reference_rows", target_name, seed)  # the methods' rows
    values = noise_floor(floor, reference, tgt, n_eval, n_samples, replicates, gen, ref_gen)
    log.info("noise floor on %s (seed %d): %s", target_name, seed, values)
    config = dict(
        target_name=target_name,
        target=target,
        seed=seed,
        n_eval=n_eval,
        n_samples=n_samples,
        replicates=replicates,
    )
    result = {
        "target": target_name,
        "seed": seed,
        "n_samples": n_samples,
        "n_eval": n_eval,
        "replicates": values,
    }
    write_json(
        result, outputs["floor"], provenance_attrs("noise_floor", config, seed, inputs, started)
    )
