"""Reference step: N exact samples of a target and their energies."""

from __future__ import annotations

import logging
from typing import Any

import torch

from boltzbench.hashing import derive_seed
from boltzbench.io import samples_to_dataset, write_store
from boltzbench.methods.base import SampleSet
from boltzbench.provenance import now, provenance_attrs
from boltzbench.targets import build_target

__all__ = ["run", "exact_reference"]

log = logging.getLogger(__name__)


def exact_reference(target_spec: dict[str, Any], n: int, gen: torch.Generator) -> SampleSet:
    """``n`` i.i.d. samples from the target's exact sampler, in float64."""
    target = build_target(target_spec).double()
    if not target.exact_sampling:
        raise ValueError(f"target {target_spec} has no exact sampler")
    x = target.sample(n, gen).double()
    with torch.no_grad():
        energy = target.energy(x)
    return SampleSet(x=x, energy=energy, attrs={"reference_method": "exact", "n_samples": n})


def run(
    *,
    inputs: dict,
    outputs: dict,
    target_name: str,
    target: dict[str, Any],
    split: str,
    n: int,
    source: str = "",
) -> None:
    started = now()
    seed = derive_seed("reference", target_name, split)
    samples = exact_reference(target, n, torch.Generator().manual_seed(seed))
    samples.attrs.update(target_name=target_name, split=split)
    log.info("reference %s/%s: %d exact samples", target_name, split, n)
    config = {"target_name": target_name, "target": target, "split": split, "n": n}
    attrs = provenance_attrs("reference", config, seed=seed, started_at=started)
    write_store(samples_to_dataset(samples), outputs["store"], attrs)
