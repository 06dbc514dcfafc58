"""One-dimensional Wasserstein metrics and the metrics of particle systems.

:func:`wasserstein_1d` is the exact 1-D W_p between two uniform empirical
measures of any sizes (POT). On it rest :func:`energy_w2` (every target) and
:func:`distance_w2` (particle targets); :func:`distance_tv` compares histograms
of the same pooled distances on the reference's bins. :func:`w2_aligned` is
the sample W2 of particle targets: exact W2 between configurations aligned to
a fixed template by rotation, reflection and permutation
(:mod:`boltzbench.metrics.alignment`).

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

from boltzbench.metrics.alignment import align_to_template, template_positions
from boltzbench.metrics.distributional import wasserstein2
from boltzbench.targets.base import ParticleSystem, Target

__all__ = [
    "DISTANCE_BINS",
    "has_particles",
    "lacks_particles",
    "wasserstein_1d",
    "histogram_tv",
    "pooled_distances",
    "energy_w2",
    "distance_tv",
    "distance_w2",
    "aligned_positions",
    "w2_aligned",
]

#: number of equal-width bins of :func:`distance_tv` over the reference's range
DISTANCE_BINS = 200


def has_particles(target: Target) -> bool:
    """Whether ``target`` is a particle system (the
    :class:`~boltzbench.targets.base.ParticleSystem` hooks)."""
    return isinstance(target, ParticleSystem)


def lacks_particles(target: Target) -> bool:
    """Not :func:`has_particles`: where raw sample W2 applies (particle targets use
    :func:`w2_aligned` instead)."""
    return not has_particles(target)


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


def histogram_tv(
    u: torch.Tensor, v: torch.Tensor, bins: int = DISTANCE_BINS, invalid: float = 0.0
) -> float:
    """Total variation between the histogram of ``u`` and that of the reference ``v``.

    The bins come from the reference alone: ``bins`` equal-width bins over
    [min v, max v] (the last bin closed, as ``numpy.histogram``; one bin
    holding exactly v when all values of v coincide), plus one "outside" bin.
    With p_k, q_k the fractions of u and v in bin k, o the fraction of u
    outside [min v, max v] (NaN included) and ``invalid`` = ι the fraction of
    the sample set that is not in ``u`` at all (invalid rows),

        TV = ½ [Σ_k |(1−ι) p_k − q_k| + ι + (1−ι) o]  ∈ [0, 1],

    since the reference puts no mass outside. So TV ≥ ι + (1−ι) o: mass
    outside the reference's range is never hidden by the binning, and an
    outlier in ``u`` moves no bin edge. 0 for identical sets with ι = 0; ι for
    identical finite parts. An empty ``u`` counts as wholly outside (TV = 1).
    """
    if not 0.0 <= invalid <= 1.0:
        raise ValueError(f"invalid must be a fraction in [0, 1], got {invalid}")
    a, b = _flat64(u), _flat64(v)
    b = b[np.isfinite(b)]
    if b.size == 0:
        raise ValueError("the reference values have no finite entry")
    lo, hi = float(b.min()), float(b.max())
    q, _ = _bin_fractions(b, lo, hi, bins)
    p, o = _bin_fractions(a, lo, hi, bins) if a.size else (np.zeros_like(q), 1.0)
    outside = invalid + (1 - invalid) * o
    return 0.5 * (float(np.abs((1 - invalid) * p - q).sum()) + outside)


def _bin_fractions(a: np.ndarray, lo: float, hi: float, bins: int) -> tuple[np.ndarray, float]:
    """Fractions of ``a`` (non-empty) in ``bins`` equal bins over [lo, hi] (last closed;
    one bin [lo, lo] when hi = lo), and the fraction outside [lo, hi] (NaN included)."""
    inside = a[(a >= lo) & (a <= hi)]
    if hi > lo:
        counts = np.histogram(inside, np.linspace(lo, hi, bins + 1))[0]
    else:
        counts = np.array([inside.size])
    return counts / a.size, (a.size - inside.size) / a.size


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
    invalid: float = 0.0,
) -> float:
    """TV between histograms of the pooled pair distances on the reference's bins, with
    the fraction ``invalid`` of non-finite sample rows counted as mass outside (see
    :func:`histogram_tv`; the pair distances of an invalid row are not computed)."""
    return histogram_tv(
        pooled_distances(x, target), pooled_distances(ref_x, target), invalid=invalid
    )


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


def aligned_positions(x: torch.Tensor, target: Target) -> torch.Tensor:
    """``target.positions(x)`` aligned to the target's template, flattened, ``(n, N·d)``.

    Each row is replaced by its canonical representative under rotations,
    reflections and permutations (:func:`~boltzbench.metrics.alignment.align_to_template`)
    with the template :func:`~boltzbench.metrics.alignment.template_positions`
    of (``n_particles``, ``spatial_dim``). Float64, target length units.
    """
    with torch.no_grad():
        pos = target.positions(x.detach().to(torch.float64)).cpu().numpy()
    tmpl = template_positions(target.n_particles, target.spatial_dim)
    return torch.from_numpy(align_to_template(pos, tmpl).reshape(pos.shape[0], -1))


def w2_aligned(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
) -> float:
    """Exact W2 (not W2², target length units) between the template-aligned samples and
    reference samples (:func:`aligned_positions`, then
    :func:`~boltzbench.metrics.distributional.wasserstein2`).

    With f the canonicalization, this is W2(f#μ, f#ν): invariant to any rotation,
    reflection or permutation of any row, 0 when the two sets are equal up to
    such motions row by row, and ≥ the W2 of the quotient space (whose pair
    cost is min over the group of ‖x_i − g·y_j‖²), since f aligns each row to
    the template, not to its partner.
    """
    return wasserstein2(aligned_positions(x, target), aligned_positions(ref_x, target))
