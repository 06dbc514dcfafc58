"""How a target's reference sets are generated: exact sampling, long MCMC, or MD.

A target's config entry may carry ``reference: {kind, params}``:

``exact``
    The target's exact sampler (default for targets that have one).
``mcmc``
    Long batched MCMC or parallel tempering,
    :func:`boltzbench.mcmc.reference.mcmc_reference`, whose ``params`` are its
    keyword arguments; it raises when R̂ is above ``rhat_max``.
``md``
    ``n_replicas`` independent OpenMM MD replicas per split
    (:func:`boltzbench.md.simulate.run_replica`, the other ``params``), each its
    own job, merged by :func:`merge_md`. The solvent and temperature are the
    target's own.

Every split (``train``, ``eval``, ``floor``) is generated independently, with
its own seed, so the 'eval' vs 'floor' distance is a noise floor.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import torch

from boltzbench.methods.base import SampleSet
from boltzbench.registry import check_kwargs
from boltzbench.targets.base import Target

__all__ = [
    "KINDS",
    "resolve_reference",
    "check_reference",
    "exact_reference",
    "md_frames_per_replica",
    "md_replica_kwargs",
    "merge_md",
]

KINDS = ("exact", "mcmc", "md")
#: run_replica keywords that the pipeline sets, not the config
_MD_FIXED = ("solvent", "temperature_K", "seed", "checkpoint_path")


def resolve_reference(target: Target, spec: dict[str, Any] | None) -> dict[str, Any]:
    """``{"kind", "params"}`` of a target's reference (``exact`` when unset and possible)."""
    if spec:
        return {"kind": spec["kind"], "params": dict(spec.get("params") or {})}
    if not target.exact_sampling:
        raise ValueError(
            f"{type(target).__name__} has no exact sampler: set reference: "
            "{kind: mcmc, params: {...}} (or kind: md for a molecular target)"
        )
    return {"kind": "exact", "params": {}}


def check_reference(target: Target, spec: dict[str, Any] | None, sizes: dict[str, int]) -> None:
    """Raise ValueError (or RegistryError) if ``spec`` cannot make ``sizes`` rows for ``target``."""
    ref = resolve_reference(target, spec)
    kind, params = ref["kind"], ref["params"]
    if kind == "exact":
        if not target.exact_sampling:
            raise ValueError(f"kind 'exact', but {type(target).__name__} has no exact sampler")
        if params:
            raise ValueError("kind 'exact' takes no params")
    elif kind == "mcmc":
        from boltzbench.mcmc.reference import mcmc_reference

        check_kwargs(mcmc_reference, params, "mcmc reference")
    elif kind == "md":
        _check_md(target, params, sizes)
    else:
        raise ValueError(f"unknown reference kind {kind!r}; valid choices: {', '.join(KINDS)}")


def _check_md(target: Target, params: dict[str, Any], sizes: dict[str, int]) -> None:
    from boltzbench.md.simulate import run_replica

    if not hasattr(target, "solvent") or not hasattr(target, "temperature_K"):
        raise ValueError(f"kind 'md' needs a molecular target (got {type(target).__name__})")
    fixed = sorted(set(params) & set(_MD_FIXED))
    if fixed:
        raise ValueError(f"{', '.join(fixed)} come from the target or the pipeline, not params")
    check_kwargs(run_replica, md_replica_kwargs(params), "md reference")
    required = [
        name
        for name, p in inspect.signature(run_replica).parameters.items()
        if p.default is inspect.Parameter.empty and name not in _MD_FIXED
    ]
    missing = [name for name in required if name not in params]
    if missing:
        raise ValueError(f"kind 'md' needs params {', '.join(missing)}")
    frames = md_frames_per_replica(params) * int(params.get("n_replicas", 1))
    for split, n in sizes.items():
        if frames < n:
            raise ValueError(
                f"{frames} MD frames per split (n_replicas × production_steps / "
                f"save_every_steps) are fewer than the {n} rows of split {split!r}"
            )


def md_replica_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """The ``run_replica`` keywords of an ``md`` reference's params (all but n_replicas)."""
    return {k: v for k, v in params.items() if k != "n_replicas"}


def md_frames_per_replica(params: dict[str, Any]) -> int:
    """Frames each replica saves: production_steps // save_every_steps."""
    return int(params["production_steps"]) // int(params["save_every_steps"])


def exact_reference(target: Target, n: int, gen: torch.Generator) -> SampleSet:
    """``n`` i.i.d. samples from the target's exact sampler, in float64."""
    x = target.sample(n, gen).double()
    with torch.no_grad():
        energy = target.energy(x)
    return SampleSet(x=x, energy=energy, attrs={"reference_method": "exact", "n_samples": n})


def _even_rows(total: int, n: int) -> np.ndarray:
    """``n`` evenly spaced row indices out of ``total`` (every row when n == total)."""
    return np.unique(np.linspace(0, total - 1, n).round().astype(int))


def merge_md(replicas: list[dict[str, np.ndarray]], target: Target, n: int) -> SampleSet:
    """``n`` frames of the MD ``replicas``, evenly thinned, in the target's coordinates.

    Each replica is a dict with ``positions_nm`` (F, atoms, 3), ``energy_kT``
    and ``potential_kJ`` (F,). ``x`` is ``target.to_coordinates``; ``energy``
    is the target's energy of ``x`` (for internal coordinates it includes −log|J|). Diagnostics: the
    split R̂ of the MD energy across replicas and its autocorrelation ESS, both
    on every frame.
    """
    from boltzbench.mcmc.diagnostics import effective_sample_size, rank_normalized_split_rhat

    per = min(len(r["energy_kT"]) for r in replicas)
    md_energy = torch.as_tensor(np.stack([r["energy_kT"][:per] for r in replicas]))
    positions = np.concatenate([r["positions_nm"][:per] for r in replicas])
    rows = _even_rows(len(positions), n)
    if len(rows) < n:
        raise ValueError(f"{len(positions)} MD frames cannot give {n} distinct rows")
    x = target.to_coordinates(torch.as_tensor(positions[rows], dtype=torch.float64))
    with torch.no_grad():
        energy = target.energy(x)
    rhat = float(rank_normalized_split_rhat(md_energy.unsqueeze(-1)).squeeze())
    ess = float(effective_sample_size(md_energy.unsqueeze(-1)).squeeze())
    attrs = {
        "reference_method": "md",
        "n_samples": len(rows),
        "n_replicas": len(replicas),
        "frames_per_replica": per,
        "thinning_frames": (len(positions) - 1) / max(len(rows) - 1, 1),
        "rhat_energy": rhat,
        "ess_energy": ess if math.isfinite(ess) else math.nan,
    }

    def column(name: str) -> torch.Tensor:
        return torch.as_tensor(np.concatenate([r[name][:per] for r in replicas])[rows])

    return SampleSet(
        x=x,
        energy=energy,
        diagnostics={
            "positions_nm": torch.as_tensor(positions[rows]),
            "md_energy_kT": column("energy_kT"),
            "md_potential_kJ_per_mol": column("potential_kJ"),
        },
        attrs=attrs,
    )
