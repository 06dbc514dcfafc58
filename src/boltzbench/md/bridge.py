"""The batched torch → OpenMM energy bridge, in reduced units.

:class:`OpenMMBridge` evaluates OpenMM energies and forces of the alanine
dipeptide system for a batch of configurations, either in this process (one
Context) or split over a pool of worker processes (one Context each).
:class:`BridgeEnergy` makes it a differentiable torch function: the gradient of
the reduced energy is minus the reduced force.

Units: positions in nm, E/(k_B T), F/(k_B T) in 1/nm, k_B T = R·T.

Worker pool life cycle
----------------------
With ``n_workers ≥ 1`` the pool is started at the first evaluation, not at
construction (config validation builds targets and must not spawn processes).
It uses the "spawn" start method, which is safe when torch has started threads
in this process; the workers run :mod:`boltzbench.md.worker`, which does not
import torch. All workers start together at that first call, with this
process's main script hidden from them (spawn would otherwise re-run an
unguarded script, such as a Snakemake ``script:``, in every worker; see
:func:`_bare_main`). Each worker builds its own Context once, in the pool
initializer. :meth:`OpenMMBridge.close`, leaving a ``with`` block, or
garbage collection of the bridge shut the pool down; a later evaluation starts
a new one.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import types
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from boltzbench.md import worker
from boltzbench.md.system import CONSTRAINTS, SOLVENTS, make_platform

__all__ = ["OpenMMBridge", "BridgeEnergy", "bridge_energy"]

N_ATOMS = 22


class OpenMMBridge:
    """Batched OpenMM energies and forces of alanine dipeptide, in k_BT.

    Parameters
    ----------
    solvent
        "implicit" (OBC GB/SA, ``implicitSolvent=OBC2``) or "vacuum"; see
        :mod:`boltzbench.md.system`.
    temperature_K
        Temperature in kelvin; k_B T = R·T.
    constraints
        "none" or "h-bonds" (the constrained bonds' terms leave the system).
    platform
        OpenMM platform name, one thread per Context.
    n_workers
        0: one Context in this process. ≥ 1: that many worker processes, each
        with its own Context; a batch is cut into contiguous chunks, one per
        worker, and the results are concatenated in order.

    Attributes
    ----------
    n_nonfinite_last, n_nonfinite_total
        Rows given energy +inf and zero forces (non-finite input, OpenMM error,
        or non-finite energy or forces), in the last call and since construction.
    """

    def __init__(
        self,
        solvent: str = "implicit",
        temperature_K: float = 300.0,
        constraints: str = "none",
        platform: str = "Reference",
        n_workers: int = 0,
    ):
        if solvent not in SOLVENTS:
            raise ValueError(f"solvent must be one of {', '.join(SOLVENTS)}, got {solvent!r}")
        if constraints not in CONSTRAINTS:
            raise ValueError(f"constraints must be one of {', '.join(CONSTRAINTS)}")
        if not temperature_K > 0:
            raise ValueError(f"temperature_K must be positive, got {temperature_K}")
        if int(n_workers) != n_workers or n_workers < 0:
            raise ValueError(f"n_workers must be a non-negative integer, got {n_workers}")
        make_platform(platform)  # an unknown platform fails here, not in a worker
        self.solvent, self.temperature_K = solvent, float(temperature_K)
        self.constraints, self.platform, self.n_workers = constraints, platform, int(n_workers)
        self.n_nonfinite_last = 0
        self.n_nonfinite_total = 0
        self._local: worker.Evaluator | None = None
        self._pool: ProcessPoolExecutor | None = None

    # -- evaluation ---------------------------------------------------------

    def energy_forces(self, positions_nm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reduced energies (n,) and forces (n, 22, 3) in 1/nm, float64.

        ``positions_nm`` has shape (n, 22, 3) (or (n, 66)), in nm. Bad rows get
        energy +inf and zero forces (counted in :attr:`n_nonfinite_last`).
        """
        pos = np.ascontiguousarray(positions_nm, dtype=np.float64).reshape(-1, N_ATOMS, 3)
        if self.n_workers == 0 or len(pos) == 0:
            energy, forces, n_bad = self.local_evaluator().evaluate(pos)
        else:
            energy, forces, n_bad = self._evaluate_in_pool(pos)
        self.n_nonfinite_last = n_bad
        self.n_nonfinite_total += n_bad
        return energy, forces

    def _evaluate_in_pool(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        chunks = [c for c in np.array_split(pos, self.n_workers) if len(c)]
        results = list(self._get_pool().map(worker.evaluate_chunk, chunks))
        energy = np.concatenate([r[0] for r in results])
        forces = np.concatenate([r[1] for r in results])
        return energy, forces, sum(r[2] for r in results)

    def local_evaluator(self) -> worker.Evaluator:
        """The Context in this process (built at first use; also used for minimizing)."""
        if self._local is None:
            self._local = worker.Evaluator(
                self.solvent, self.temperature_K, self.constraints, self.platform
            )
        return self._local

    def minimize(self, positions_nm: np.ndarray, tolerance: float = 1e-3) -> np.ndarray:
        """A local energy minimum (22, 3) in nm from ``positions_nm`` (OpenMM's L-BFGS).

        ``tolerance``: root-mean-square force in kJ/(mol nm) at which to stop.
        """
        return self.local_evaluator().minimize(positions_nm, tolerance)

    # -- the worker pool ----------------------------------------------------

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            pool = ProcessPoolExecutor(
                max_workers=self.n_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=worker.init_worker,
                initargs=(self.solvent, self.temperature_K, self.constraints, self.platform),
            )
            with _bare_main():  # every worker starts here, while the main script is hidden
                list(pool.map(worker.worker_info, range(self.n_workers)))
            self._pool = pool
        return self._pool

    def worker_info(self) -> list[dict]:
        """``{"pid", "torch_imported"}`` from the workers (starts the pool)."""
        return list(self._get_pool().map(worker.worker_info, range(self.n_workers)))

    def close(self) -> None:
        """Shut the worker pool down (if running) and drop this process's Context."""
        pool, self._pool, self._local = self._pool, None, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> OpenMMBridge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: modules may be gone already
            pass

    def __repr__(self) -> str:
        return (
            f"OpenMMBridge(solvent={self.solvent!r}, temperature_K={self.temperature_K}, "
            f"constraints={self.constraints!r}, platform={self.platform!r}, "
            f"n_workers={self.n_workers})"
        )


@contextlib.contextmanager
def _bare_main():
    """Hide this process's ``__main__`` from the processes "spawn" starts meanwhile.

    A spawned child re-imports its parent's main script (as ``__mp_main__``)
    unless ``sys.modules["__main__"]`` has neither ``__spec__`` nor
    ``__file__`` (``multiprocessing.spawn.get_preparation_data``). A Snakemake
    ``script:`` has no ``if __name__ == "__main__"`` guard, so its workers
    would run the whole rule again; with the main module swapped for an empty
    one while the pool starts, they import only :mod:`boltzbench.md.worker`.
    """
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = saved


class BridgeEnergy(torch.autograd.Function):
    """E(x) in k_BT for x (n, 66) in nm through an :class:`OpenMMBridge`.

    The backward pass returns ∂E/∂x = −F(x)/(k_B T) times the incoming gradient,
    from the forces computed in the forward pass (no second OpenMM call). The
    computation is in float64; the output has ``x``'s dtype and device. Rows
    the bridge marks bad have energy +inf and gradient zero.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, bridge: OpenMMBridge) -> torch.Tensor:  # type: ignore[override]
        pos = x.detach().to("cpu", torch.float64).numpy()
        energy, forces = bridge.energy_forces(pos)
        ctx.save_for_backward(torch.from_numpy(forces.reshape(len(forces), -1)).to(x))
        return torch.from_numpy(energy).to(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        (forces,) = ctx.saved_tensors
        return -forces * grad_output[:, None], None


def bridge_energy(x: torch.Tensor, bridge: OpenMMBridge) -> torch.Tensor:
    """Reduced energies (n,) of x (n, 66) in nm; differentiable (see :class:`BridgeEnergy`)."""
    return BridgeEnergy.apply(x, bridge)
