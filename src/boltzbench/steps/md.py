"""MD step: one independent OpenMM replica of a molecular target's reference.

Each replica of each split is its own job (so on SLURM they go to separate
nodes): minimization, equilibration, production with a
``LangevinMiddleIntegrator`` (:func:`boltzbench.md.simulate.run_replica`),
checkpointed every ``checkpoint_every_steps`` so a killed replica resumes. The
frames go to a Zarr store with positions in nm and energies in kJ/mol and in
k_BT; :mod:`boltzbench.steps.reference` merges the replicas of a split.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import xarray as xr

from boltzbench.hashing import derive_seed
from boltzbench.io import write_store
from boltzbench.md.simulate import run_replica
from boltzbench.md.system import kT
from boltzbench.provenance import now, provenance_attrs
from boltzbench.references import md_replica_kwargs
from boltzbench.targets import build_target

__all__ = ["run", "frames_dataset"]

log = logging.getLogger(__name__)


def frames_dataset(frames, temperature_K: float) -> xr.Dataset:
    """The frames of one replica as a Dataset (dims frame, atom, spatial)."""
    potential = np.asarray(frames.potential_kJ, dtype=np.float64)
    data = {
        "positions_nm": (("frame", "atom", "spatial"), np.asarray(frames.positions_nm)),
        "potential_kJ": ("frame", potential),
        "kinetic_kJ": ("frame", np.asarray(frames.kinetic_kJ, dtype=np.float64)),
        "energy_kT": ("frame", potential / kT(temperature_K)),
        "time_ps": ("frame", np.asarray(frames.time_ps, dtype=np.float64)),
    }
    units = {
        "positions_nm": "nm",
        "potential_kJ": "kJ/mol",
        "kinetic_kJ": "kJ/mol",
        "energy_kT": "k_BT (potential energy / (R T))",
        "time_ps": "ps",
    }
    ds = xr.Dataset(data)
    for name, unit in units.items():
        ds[name].attrs["units"] = unit
    return ds


def _scalars(stats: dict[str, Any]) -> dict[str, Any]:
    """Run statistics as attrs (numbers and strings only), prefixed ``md_``."""
    return {
        f"md_{k}": (v.item() if hasattr(v, "item") else v)
        for k, v in stats.items()
        if isinstance(v, (int, float, str, bool, np.generic))
    }


def run(
    *,
    inputs: dict,
    outputs: dict,
    target_name: str,
    target: dict[str, Any],
    split: str,
    replica: int,
    checkpoint: str | None = None,
    source: str = "",
) -> None:
    started = now()
    params = dict(target["reference"]["params"])
    built = build_target(target)  # cheap: no OpenMM context until an energy is asked for
    solvent, temperature = built.solvent, float(built.temperature_K)
    seed = derive_seed("md", target_name, split, replica) % (2**31 - 1) + 1
    frames = run_replica(
        solvent=solvent,
        temperature_K=temperature,
        seed=seed,
        checkpoint_path=checkpoint,
        **md_replica_kwargs(params),
    )
    log.info("md %s/%s replica %d: %s", target_name, split, replica, frames.stats)
    config = {"target_name": target_name, "target": target, "split": split, "replica": replica}
    attrs = {
        **provenance_attrs("md", config, seed, None, started),
        **_scalars(frames.stats),
        "solvent": solvent,
        "temperature_K": temperature,
        "replica": replica,
        "split": split,
    }
    write_store(frames_dataset(frames, temperature), outputs["store"], attrs)
