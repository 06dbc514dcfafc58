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
    (:func:`boltzbench.md.simulate.run_replica`, the other ``params`` but
    ``rhat_max``), each its own job, merged by :func:`merge_md`. The solvent and
    temperature are the target's own. The merge raises when the replicas
    disagree on the slow variables: R̂ above ``rhat_max`` (default
    :data:`MD_RHAT_MAX`, see :func:`md_convergence`).

Every split (``train``, ``eval``, ``floor``) is generated independently, with
its own seed, so the 'eval' vs 'floor' distance is a noise floor.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, NamedTuple

import numpy as np
import torch

from boltzbench.core import SampleSet
from boltzbench.registry import check_kwargs
from boltzbench.targets.base import MDSystem, Molecule, Target

__all__ = [
    "KINDS",
    "resolve_reference",
    "check_reference",
    "exact_reference",
    "md_frames_per_replica",
    "md_replica_kwargs",
    "md_series",
    "md_convergence",
    "check_md_convergence",
    "merge_md",
    "MD_RHAT_MAX",
    "MD_RHAT_OF",
    "Trajectories",
]

KINDS = ("exact", "mcmc", "md")
#: run_replica keywords that the pipeline sets, not the config
_MD_FIXED = ("solvent", "temperature_K", "seed", "checkpoint_path")
#: params of an ``md`` reference that are not run_replica keywords
_MD_OWN = ("n_replicas", "rhat_max")
#: default ``rhat_max`` of an ``md`` reference (see :func:`md_convergence`). Not
#: 1.01: a few replicas of ~1 ns hold only ~100–300 effective samples of the
#: torsions (ESS of sin φ, cos ψ), so R̂ of mixed replicas scatters up to ~1.02
#: (measured max 1.013 over eight 2 × 1-ns OBC2 groups); replicas that have not
#: mixed give ≥ 1.1 (1.13–1.35 for 2 × 20-ps vacuum replicas).
MD_RHAT_MAX = 1.05
#: the per-frame series whose R̂ across MD replicas is gated: the MD energy (k_BT)
#: and sin, cos of the backbone torsions φ and ψ
MD_RHAT_OF = ("energy", "sin_phi", "cos_phi", "sin_psi", "cos_psi")


class Trajectories(NamedTuple):
    """Reference rows with the MD replica and frame each one came from (their time order).

    What :meth:`Method.fit <boltzbench.methods.base.Method.fit>` receives as
    ``data`` when the method ``uses_time_order`` and the reference is ``md``
    (:func:`merge_md` stores ``md_replica`` and ``md_frame`` per row).

    Attributes
    ----------
    x
        The rows, shape ``(n, dim)``, in the target's coordinates.
    replica
        The replica of each row (0, 1, …), int64 ``(n,)``.
    frame
        Its frame index in that replica (frames are ``save_every_steps`` MD steps
        apart), int64 ``(n,)``.
    """

    x: torch.Tensor
    replica: torch.Tensor
    frame: torch.Tensor


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

    if not isinstance(target, MDSystem):
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
    rhat_max = float(params.get("rhat_max", MD_RHAT_MAX))
    if not rhat_max >= 1.0:
        raise ValueError(f"rhat_max must be >= 1 (inf: no gate), got {rhat_max}")
    frames = md_frames_per_replica(params) * int(params.get("n_replicas", 1))
    for split, n in sizes.items():
        if frames < n:
            raise ValueError(
                f"{frames} MD frames per split (n_replicas × production_steps / "
                f"save_every_steps) are fewer than the {n} rows of split {split!r}"
            )


def md_replica_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """The ``run_replica`` keywords of an ``md`` reference's params (all but ``_MD_OWN``)."""
    return {k: v for k, v in params.items() if k not in _MD_OWN}


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


def md_series(replicas: list[dict[str, np.ndarray]], target: Target) -> dict[str, np.ndarray]:
    """The series of :data:`MD_RHAT_OF` of each replica's frames, each ``(R, F)``.

    ``R`` replicas cut to the shortest one's ``F`` frames: the MD energy
    ``energy_kT`` (k_BT) and sin, cos of φ and ψ (radians, mdtraj quadruples
    of :mod:`boltzbench.targets.dihedrals`) of ``positions_nm``. Without a
    ``mdtraj_topology`` on the target only the energy.
    """
    from boltzbench.targets.dihedrals import dihedrals_nm

    per = min(len(r["energy_kT"]) for r in replicas)
    out = {"energy": np.stack([r["energy_kT"][:per] for r in replicas])}
    if not isinstance(target, Molecule):
        return out
    top = target.mdtraj_topology
    ang = np.stack([dihedrals_nm(r["positions_nm"][:per], top, ("phi", "psi")) for r in replicas])
    for k, name in enumerate(("phi", "psi")):
        out[f"sin_{name}"], out[f"cos_{name}"] = np.sin(ang[..., k]), np.cos(ang[..., k])
    return out


def md_convergence(series: dict[str, np.ndarray]) -> dict[str, float]:
    """Rank-normalized split R̂ and autocorrelation ESS of each ``(R, F)`` series.

    Keys ``rhat_<name>`` and ``ess_<name>``
    (:func:`~boltzbench.mcmc.diagnostics.rank_normalized_split_rhat`, Vehtari
    et al. 2021, over the 2R half-replicas; ESS pooled over replicas, NaN when
    undefined). The energy decorrelates in picoseconds; the slow variables are
    the backbone torsions (ψ: αR ↔ β in tens of ps, φ: the rare φ > 0 basins),
    taken as sin and cos so that the ±π wrap does not split a basin and the
    ranks have no ties.
    """
    from boltzbench.mcmc.diagnostics import effective_sample_size, rank_normalized_split_rhat

    out = {}
    for name, values in series.items():
        x = torch.as_tensor(values, dtype=torch.float64).unsqueeze(-1)
        ess = float(effective_sample_size(x).squeeze())
        out[f"rhat_{name}"] = float(rank_normalized_split_rhat(x).squeeze())
        out[f"ess_{name}"] = ess if math.isfinite(ess) else math.nan
    return out


def check_md_convergence(diagnostics: dict[str, float], rhat_max: float) -> None:
    """Raise ConvergenceError unless every ``rhat_*`` of ``diagnostics`` is ≤ ``rhat_max``.

    NaN fails; ``rhat_max = inf`` turns the check off.
    """
    from boltzbench.mcmc.reference import ConvergenceError

    if math.isinf(rhat_max):
        return
    rhat = {k[5:]: v for k, v in diagnostics.items() if k.startswith("rhat_")}
    failing = [k for k, v in rhat.items() if not v <= rhat_max]  # NaN fails
    if not failing:
        return
    values = ", ".join(f"{k} {v:.4g}" for k, v in rhat.items())
    raise ConvergenceError(
        f"MD reference did not converge: R-hat of {', '.join(failing)} > rhat_max = "
        f"{rhat_max:g} (rank-normalized split R-hat across the MD replicas: {values}). "
        "Raise production_steps (longer replicas) or n_replicas."
    )


def merge_md(
    replicas: list[dict[str, np.ndarray]],
    target: Target,
    n: int,
    rhat_max: float = MD_RHAT_MAX,
    generator: torch.Generator | None = None,
) -> SampleSet:
    """``n`` frames of the MD ``replicas``, evenly thinned, in the target's coordinates.

    Each replica is a dict with ``positions_nm`` (F, atoms, 3), ``energy_kT``
    and ``potential_kJ`` (F,). ``x`` is ``target.to_coordinates``; ``energy``
    is the target's energy of ``x`` (for internal coordinates it includes
    −log|J|). With a ``generator`` the rows are put in random order (a
    ``torch.randperm``), so that any block of consecutive rows (a chunk of the
    'floor' split) is a uniform sample of all the frames rather than a stretch
    of one replica; without one they are in replica-then-time order. The
    diagnostics ``md_replica`` and ``md_frame`` keep each row's replica and frame
    index, so the time order survives the shuffle (:class:`Trajectories`).
    Convergence, on every frame of the replicas: :func:`md_convergence` of
    :func:`md_series` (attrs ``rhat_*``, ``ess_*``; ``rhat_max``: the largest R̂,
    ``rhat_threshold``: the gate), checked by :func:`check_md_convergence`.
    """
    per = min(len(r["energy_kT"]) for r in replicas)
    positions = np.concatenate([r["positions_nm"][:per] for r in replicas])
    rows = _even_rows(len(positions), n)
    if len(rows) < n:
        raise ValueError(f"{len(positions)} MD frames cannot give {n} distinct rows")
    if generator is not None:
        rows = rows[torch.randperm(len(rows), generator=generator).numpy()]
    diagnostics = md_convergence(md_series(replicas, target))
    check_md_convergence(diagnostics, rhat_max)
    x = target.to_coordinates(torch.as_tensor(positions[rows], dtype=torch.float64))
    with torch.no_grad():
        energy = target.energy(x)
    rhats = [v for k, v in diagnostics.items() if k.startswith("rhat_")]
    attrs = {
        "reference_method": "md",
        "n_samples": len(rows),
        "n_replicas": len(replicas),
        "frames_per_replica": per,
        "thinning_frames": (len(positions) - 1) / max(len(rows) - 1, 1),
        "row_order": "random" if generator is not None else "replica, time",
        **diagnostics,
        "rhat_max": max(rhats),
        "rhat_threshold": float(rhat_max),
        "rhat_of": ", ".join(k[5:] for k in diagnostics if k.startswith("rhat_")),
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
            "md_replica": torch.as_tensor(rows // per, dtype=torch.int64),
            "md_frame": torch.as_tensor(rows % per, dtype=torch.int64),
        },
        attrs=attrs,
    )
