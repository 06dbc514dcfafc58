"""Distributional sample metrics: W2 on samples, W1 on energies, and MMD.

Each compares n samples ``x`` (shape ``(n, dim)``) with m reference samples
``ref_x`` (shape ``(m, dim)``), both treated as uniform empirical measures, in
float64. The metric functions follow the ``"sample"`` signature of
:class:`~boltzbench.metrics.base.Metric`:
``fn(x, energy, ref_x, ref_energy, target, generator) -> float``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.spatial.distance
import scipy.stats
import torch

from boltzbench.targets.base import Target

__all__ = [
    "EMD_NUM_ITER_MAX",
    "OTNotConverged",
    "wasserstein2",
    "w2_from_cost",
    "gaussian_mmd",
    "median_bandwidth",
    "w2",
    "energy_w1",
    "mmd",
]

#: cap on network-simplex iterations for :func:`wasserstein2`; 2000 × 2000 in
#: 32-D converges in about 10⁶, so this leaves a wide margin
EMD_NUM_ITER_MAX = 100_000_000

#: POT's network-simplex result code for an optimal solution
_EMD_OPTIMAL = 1


class OTNotConverged(RuntimeError):
    """The exact OT solver stopped before optimality (e.g. ``numItermax`` reached)."""


def _numpy64(x: torch.Tensor) -> np.ndarray:
    """A detached, C-contiguous float64 NumPy copy of ``x``."""
    return np.ascontiguousarray(x.detach().cpu().to(torch.float64).numpy())


def wasserstein2(x: torch.Tensor, y: torch.Tensor, num_iter_max: int = EMD_NUM_ITER_MAX) -> float:
    """Exact W2 between the uniform empirical measures on ``x`` (n, d) and ``y`` (m, d).

    W2 = sqrt(min_γ Σ_ij γ_ij ‖x_i − y_j‖²) over couplings γ with marginals
    (1/n, …) and (1/m, …), solved exactly by POT's network simplex
    (``ot.emd2``). This is W2, not W2². The cost matrix is the squared-Euclidean
    one of ``ot.dist(x, y, metric="sqeuclidean")``, but computed pair by pair
    (``scipy.spatial.distance.cdist``) rather than through the expansion
    ‖x‖² + ‖y‖² − 2x·y, so coincident points cost exactly 0 and W2(x, x) = 0
    (the expansion leaves ~1e-16 ‖x‖² per pair, ~1e-8 after the square root).
    Raises :class:`OTNotConverged` when the solver does not report an
    optimal solution within ``num_iter_max`` iterations.
    """
    xs, ys = _numpy64(x), _numpy64(y)
    cost = scipy.spatial.distance.cdist(xs, ys, metric="sqeuclidean")
    return w2_from_cost(cost, num_iter_max)


def w2_from_cost(cost: np.ndarray, num_iter_max: int = EMD_NUM_ITER_MAX) -> float:
    """sqrt of the exact OT cost between uniform measures for a squared-distance ``cost``
    matrix (n, m): POT ``ot.emd2`` (network simplex). Raises :class:`OTNotConverged`
    when the solver does not report an optimal solution within ``num_iter_max``."""
    a = np.full(cost.shape[0], 1.0 / cost.shape[0])
    b = np.full(cost.shape[1], 1.0 / cost.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # replaced by the check below
        import ot  # imported here: POT pulls in scikit-learn, ~1 s per job

        w2_sq, log = ot.emd2(a, b, cost, numItermax=num_iter_max, log=True)
    if log["result_code"] != _EMD_OPTIMAL:
        raise OTNotConverged(
            f"ot.emd2 on {cost.shape[0]}×{cost.shape[1]} points did not converge "
            f"(result_code={log['result_code']}: {log['warning']}); raise num_iter_max"
        )
    return math.sqrt(max(float(w2_sq), 0.0))


def median_bandwidth(z: torch.Tensor) -> float:
    """Median heuristic h = median{‖z_i − z_j‖ : i < j} over the rows of ``z`` (k, d).

    The median of the k(k−1)/2 distinct pairwise Euclidean distances
    (``numpy.median``: the mean of the two middle values when their number is
    even). Falls back to h = 1 when that median is 0 (at least half the pairs
    coincide), so the kernel stays defined.
    """
    if z.shape[0] < 2:
        return 1.0
    h = float(np.median(torch.pdist(z.to(torch.float64)).numpy()))
    return h if h > 0 else 1.0


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances, shape ``(n, m)``, clamped at 0."""
    return (a.pow(2).sum(-1)[:, None] + b.pow(2).sum(-1)[None, :] - 2 * a @ b.T).clamp_min(0)


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> float:
    """MMD with a Gaussian kernel, biased V-statistic (Gretton et al. 2012, eq. 5).

    k(a, b) = exp(−‖a − b‖² / (2h²)), with h = :func:`median_bandwidth` of the
    pooled sample x ∪ y unless ``bandwidth`` is given, and

        MMD²_b = (1/n²) Σ_ij k(x_i, x_j) + (1/m²) Σ_ij k(y_i, y_j) − (2/nm) Σ_ij k(x_i, y_j),

    diagonal terms included. Returns MMD = sqrt(max(MMD²_b, 0)) (≥ 0, and 0
    for identical sets).
    """
    xs, ys = x.detach().to(torch.float64), y.detach().to(torch.float64)
    h = median_bandwidth(torch.cat([xs, ys])) if bandwidth is None else bandwidth

    def mean_k(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.exp(-_sq_dist(a, b) / (2 * h * h)).mean())

    mmd_sq = mean_k(xs, xs) + mean_k(ys, ys) - 2 * mean_k(xs, ys)
    return math.sqrt(max(mmd_sq, 0.0))


def w2(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
) -> float:
    """Sample W2 between ``x`` and ``ref_x`` (see :func:`wasserstein2`)."""
    return wasserstein2(x, ref_x)


def energy_w1(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
) -> float:
    """1-D W1 between the energy values, ∫ |F_E(t) − F_Eref(t)| dt in k_BT.

    Uniform empirical measures, ``scipy.stats.wasserstein_distance``; for equal
    sizes this is mean_i |E_(i) − Eref_(i)| over the sorted values.
    """
    return float(scipy.stats.wasserstein_distance(_numpy64(energy), _numpy64(ref_energy)))


def mmd(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
) -> float:
    """Gaussian-kernel MMD between ``x`` and ``ref_x`` (see :func:`gaussian_mmd`)."""
    return gaussian_mmd(x, ref_x)
