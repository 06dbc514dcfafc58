"""One-dimensional Wasserstein metrics and the interatomic-distance metrics of particle systems.

:func:`wasserstein_1d` is the exact 1-D W_p between two uniform empirical
measures of any sizes (POT). On it rest :func:`energy_w2` (every target) and
:func:`distance_w2` (particle targets); :func:`distance_tv` compares histograms
of the same pooled distances.

Particle targets (DW-4, LJ-13/55; Köhler et al. 2020, arXiv:2006.02425;
Klein et al. 2023, arXiv:2306.15030) expose ``n_particles``, ``spatial_dim``,
``positions(x) -> (n, N, d)`` and ``pair_distances(x) -> (n, N(N-1)/2)``. The
distance metrics pool every pair distance of every row into one 1-D sample, as
in the DW-4/LJ-13 evaluations of Klein et al. 2023: they are invariant under
rotations, reflections, translations and permutations of identical particles.
Distances are in the target's length unit.
"""

from __future__ import annotations

import numpy as np
import torch

from boltzbench.targets.base import Target

__all__ = [
    "DISTANCE_BINS",
    "has_particles",
    "wasserstein_1d",
    "histogram_tv",
    "pooled_distances",
    "energy_w2",
    "distance_tv",
    "distance_w2",
]

#: number of equal-width bins of :func:`distance_tv` over the common range
DISTANCE_BINS = 200


def has_particles(target: Target) -> bool:
    """Whether ``target`` is a particle system (has ``n_particles`` and ``pair_distances``)."""
    return hasattr(target, "n_particles") and hasattr(target, "pair_distances")


def _flat64(v: torch.Tensor) -> np.ndarray:
    """A detached float64 NumPy copy of ``v``, flattened."""
    return v.detach().cpu().to(torch.float64).reshape(-1).numpy()


def wasserstein_1d(u: torch.Tensor, v: torch.Tensor, p: float = 2.0) -> float:
    """Exact W_p between the uniform empirical measures on the values of ``u`` and ``v``.

    In 1-D the optimal coupling is monotone, so
    W_p^p = ∫_0^1 |F_u⁻¹(t) − F_v⁻¹(t)|^p dt over the empirical quantile
    functions, an exact finite sum (POT's ``ot.wasserstein_1d``, which returns
    W_p^p). Returns W_p = (W_p^p)^(1/p), not W_p^p, in the unit of the values.
    Both inputs are flattened; both must be non-empty.
    """
    import ot

    return float(ot.wasserstein_1d(_flat64(u), _flat64(v), p=p)) ** (1.0 / p)


def histogram_tv(u: torch.Tensor, v: torch.Tensor, bins: int = DISTANCE_BINS) -> float:
    """Total variation ½ Σ_k |p_k − q_k| between histograms of ``u`` and ``v``.

    ``bins`` equal-width bins over the common range [min, max] of the pooled
    values (the last bin closed, as ``numpy.histogram``); p and q are counts
    divided by each set's size. In [0, 1]: 0 for identical sets, 1 when no bin
    holds values of both. When all pooled values coincide both histograms are
    one bin and TV = 0.
    """
    a, b = _flat64(u), _flat64(v)
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.array([lo - 0.5, lo + 0.5])
    p = np.histogram(a, edges)[0] / a.size
    q = np.histogram(b, edges)[0] / b.size
    return 0.5 * float(np.abs(p - q).sum())


def pooled_distances(x: torch.Tensor, target: Target) -> torch.Tensor:
    """All pair distances of all rows: ``target.pair_distances(x)`` flat, ``(n·N(N−1)/2,)``."""
    with torch.no_grad():
        return target.pair_distances(x.detach().to(torch.float64)).reshape(-1)


def energy_w2(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
) -> float:
    """1-D W2 (k_BT) between the sample and reference energies (see :func:`wasserstein_1d`)."""
    return wasserstein_1d(energy, ref_energy, p=2.0)


def distance_tv(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
) -> float:
    """TV between histograms of the pooled pair distances (see :func:`histogram_tv`)."""
    return histogram_tv(pooled_distances(x, target), pooled_distances(ref_x, target))


def distance_w2(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
) -> float:
    """1-D W2 between the pooled pair distances (see :func:`wasserstein_1d`)."""
    return wasserstein_1d(pooled_distances(x, target), pooled_distances(ref_x, target), p=2.0)
