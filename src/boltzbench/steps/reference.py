"""Reference step: one split of a target's reference samples, by its reference kind.

``exact`` and ``mcmc`` references are generated here; an ``md`` reference is
merged here from the replica stores of :mod:`boltzbench.steps.md`, and the rule
fails (ConvergenceError) when the replicas' R̂ of the energy or of sin/cos φ, ψ
is above the reference's ``rhat_max``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import SampleSet
from boltzbench.hashing import derive_seed, hash_json
from boltzbench.io import read_store, samples_to_dataset, write_store
from boltzbench.provenance import now, provenance_attrs
from boltzbench.references import MD_RHAT_MAX, exact_reference, merge_md, resolve_reference
from boltzbench.targets import build_target
from boltzbench.targets.base import DescribesCOM, Target

__all__ = ["run", "generate"]

log = logging.getLogger(__name__)


def _mcmc(target: Target, n: int, gen: torch.Generator, params: dict, checkpoint: Checkpoint):
    from boltzbench.mcmc.reference import mcmc_reference

    return mcmc_reference(target, n, gen, checkpoint=checkpoint, **params)


def _md(
    target: Target, n: int, gen: torch.Generator, replicas: list[str], params: dict
) -> SampleSet:
    frames = []
    for path in replicas:
        ds = read_store(path)
        frames.append({k: ds[k].values for k in ("positions_nm", "energy_kT", "potential_kJ")})
    return merge_md(frames, target, n, float(params.get("rhat_max", MD_RHAT_MAX)), gen)


def generate(
    target: Target,
    spec: dict[str, Any] | None,
    n: int,
    gen: torch.Generator,
    replicas: list[str] = (),
    checkpoint: Checkpoint = NO_CHECKPOINT,
) -> SampleSet:
    """``n`` reference samples of ``target`` as its reference ``spec`` says."""
    ref = resolve_reference(target, spec)
    if ref["kind"] == "exact":
        return exact_reference(target, n, gen)
    if ref["kind"] == "mcmc":
        return _mcmc(target, n, gen, ref["params"], checkpoint)
    return _md(target, n, gen, list(replicas), ref["params"])


def _describe(target: Target) -> dict[str, Any]:
    """What was done about the target's symmetries (stored with the samples)."""
    com = target.com_treatment if isinstance(target, DescribesCOM) else None
    return {"com_treatment": com} if com else {}


def run(
    *,
    inputs: dict,
    outputs: dict,
    target_name: str,
    target: dict[str, Any],
    split: str,
    n: int,
    checkpoint: str | None = None,
    checkpoint_every: int = 0,
    source: str = "",
) -> None:
    started = now()
    seed = derive_seed("reference", target_name, split)
    built = build_target(target).double()
    config = {"target_name": target_name, "target": target, "split": split, "n": n}
    ckpt = Checkpoint(checkpoint, checkpoint_every, hash_json(["reference", config, source]))
    samples = generate(
        built,
        target.get("reference"),
        n,
        torch.Generator().manual_seed(seed),
        replicas=inputs.get("replicas", []),
        checkpoint=ckpt,
    )
    samples.attrs.update(target_name=target_name, split=split, **_describe(built))
    log.info("reference %s/%s: %d samples (%s)", target_name, split, n, samples.attrs)
    replicas = {f"replica{i}": p for i, p in enumerate(inputs.get("replicas", []))}
    attrs = provenance_attrs("reference", config, seed, replicas, started)
    write_store(samples_to_dataset(samples), outputs["store"], attrs)
    ckpt.clear()
