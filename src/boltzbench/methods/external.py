"""Samples made elsewhere, entered into the pipeline as a method (``kind: external``).

The method reads its samples from a file (:mod:`boltzbench.external`: the
format and its checks) instead of drawing them, so a sampler trained in
another codebase reaches the same leaderboard, under the same pinned metrics
and noise floors, as the built-in methods. One method entry per file; a
file per target through ``overrides``::

    methods:
      my_sampler:
        kind: external
        targets: [gmm40, dw4]
        overrides:
          gmm40: {path: samples/gmm40.npz}
          dw4: {path: samples/dw4.npz}
"""

from __future__ import annotations

import torch

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import BudgetPlan, SampleSet
from boltzbench.external import ENERGY_TOL, check_layout, inspect_file, load_samples
from boltzbench.methods.base import Method
from boltzbench.targets.base import Target

__all__ = ["ExternalSamples"]


class ExternalSamples(Method):
    """The samples of a file, checked against the target (see :mod:`boltzbench.external`).

    Parameters
    ----------
    path
        The ``.npz`` file or Zarr store; a relative path is read from the
        workflow's working directory. It is an input of the sample job: its
        sha256 is in the store's provenance, and a change to it reruns the job.
    energy_tol
        Relative tolerance of the check of the file's energies against the
        target's: |ΔE| ≤ energy_tol · max(1, |E|) k_BT.

    Its costs are *declared* (``declares_costs``): the file's ``n_energy``,
    ``n_grad``, ``seconds`` and ``device``, which boltzbench did not count.
    Its own evaluations (the target's energy at each row, to check the file)
    are recorded apart (``check_n_energy``). The sample step takes the
    file's first ``sampling.n_samples`` rows (all of them when it has fewer;
    ``external_n_rows`` records how many it has). Under a budget, the
    declared ``n_energy`` must not exceed it.
    """

    declares_costs = True

    def __init__(self, path: str, energy_tol: float = ENERGY_TOL):
        if not energy_tol > 0:
            raise ValueError(f"energy_tol must be > 0, got {energy_tol}")
        self.path, self.energy_tol = str(path), float(energy_tol)

    def check_target(self, target: Target) -> None:
        """The file exists, its keys and declared costs are valid, and its rows have
        the target's dim (its rows themselves are checked by the sample job)."""
        check_layout(inspect_file(self.path), int(target.dim))

    def input_files(self) -> dict[str, str]:
        return {"external_samples": self.path}

    def plan_budget(self, budget: int, n_samples: int) -> BudgetPlan:
        """Nothing to plan: the file's declared costs are compared with the budget."""
        note = "external samples: the costs are declared by the file, not planned or counted"
        return BudgetPlan(self, {}, 0, note)

    def sample_cost(self, n: int) -> int:
        return 0  # no sampler evaluations: the check's are recorded apart

    def sample(
        self,
        target: Target,
        n: int,
        generator: torch.Generator,
        checkpoint: Checkpoint = NO_CHECKPOINT,
    ) -> SampleSet:
        return load_samples(self.path, target, n, self.energy_tol)
