"""Canonical orientation and labelling of particle configurations: alignment to a template.

The energy of a particle system (DW-4, LJ-13/55) is invariant under the group
G = O(d) × S_N of rotations, reflections and permutations of identical
particles (translations are already removed by the CoM-free chart). Sample W2
on raw coordinates therefore measures, besides the distribution of shapes, how
well orientations and labellings have mixed. :func:`align_to_template` maps
every configuration P (N, d), centroid 0, to a canonical representative of its
orbit,

    f(P) = Π*ᵀ P R*,   (Π*, R*) = argmin_{Π ∈ S_N, R ∈ O(d)} ‖Πᵀ P R − T‖²_F,

the element of the orbit closest to a fixed template T (N, d): Πᵀ P reorders
the particles so that row j is the one matched with template particle j. For
fixed Π the best R is the orthogonal Procrustes solution (Schönemann 1966):
R = U Vᵀ from the SVD U Σ Vᵀ = (Πᵀ P)ᵀ T, reflections allowed (det R = ±1, no
sign correction as in Kabsch 1976, since the energy is O(d)-invariant), with
cost ‖P‖² + ‖T‖² − 2 Σ σ.

* N ≤ :data:`EXHAUSTIVE_MAX_PARTICLES` (DW-4): exact, every one of the N!
  orders with its Procrustes solution.
* Larger N (LJ-13, LJ-55): a local search alternating the two exact partial
  problems, neither of which can raise the cost: the permutation for fixed R,
  a linear assignment on ‖(P R)_i − T_j‖² (Hungarian method, Kuhn 1955;
  ``scipy.optimize.linear_sum_assignment``), and R for fixed Π (Procrustes),
  until the assignment no longer changes (at most :data:`ALIGN_ROUNDS`
  rounds), from 2^d starts: P's principal axes (eigenvectors of Pᵀ P) turned
  onto T's, with each of the 2^d sign patterns of the axes. The best of the 2^d
  local minima is kept. It can miss the global minimum; f is still a
  well-defined invariant map, which is all the metric built on it needs (see
  :func:`boltzbench.metrics.particles.w2_aligned`).

Every step is equivariant, so f(g·P) = f(P) for every g ∈ G up to
floating-point rounding, as long as no ties occur (measure zero for continuous
samples) and T has no symmetry: the template's particles lie at distinct
distances from its centroid, and any g mapping T to itself preserves these
distances, hence is the identity.

The alignment optimum is unchanged when T or P is scaled by a positive factor
(both partial problems maximize ⟨Πᵀ P R, T⟩), so T needs only a shape:
:func:`template_positions` uses the first N points of a unit grid (as
``ParticleTarget.base_location``), stretched away from the centroid by a factor
growing with the particle index to break the grid's symmetries.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import scipy.optimize

__all__ = [
    "ALIGN_ROUNDS",
    "EXHAUSTIVE_MAX_PARTICLES",
    "TEMPLATE_STRETCH",
    "template_positions",
    "align_to_template",
]

#: most alternating (assignment, Procrustes) rounds per start
ALIGN_ROUNDS = 20

#: up to this many particles the alignment enumerates all N! permutations (exact)
EXHAUSTIVE_MAX_PARTICLES = 6

#: template particle i (0-based) is moved to (1 + TEMPLATE_STRETCH·(i+1)/N) times its
#: distance from the grid's centroid
TEMPLATE_STRETCH = 0.2


def template_positions(n_particles: int, spatial_dim: int) -> np.ndarray:
    """The alignment template T, shape ``(N, d)``, centroid 0, unit-free.

    The first N points of the grid {0, …, s−1}^d, s = ⌈N^(1/d)⌉, in
    lexicographic order (last axis fastest, as ``torch.cartesian_prod``),
    centred; point i (0-based) scaled by 1 + 0.2 (i+1)/N about the centroid,
    and the result centred again. DW-4: a distorted unit square; LJ-13: a
    3×3 layer and four points of the next, distorted.
    """
    side = math.ceil(n_particles ** (1 / spatial_dim) - 1e-9)
    grid = np.array(list(itertools.product(range(side), repeat=spatial_dim))[:n_particles])
    grid = grid.astype(np.float64) - grid.mean(axis=0)
    stretch = 1 + TEMPLATE_STRETCH * np.arange(1, n_particles + 1) / n_particles
    t = grid * stretch[:, None]
    return t - t.mean(axis=0)


def _principal_axes(p: np.ndarray) -> np.ndarray:
    """Eigenvectors (columns, ascending eigenvalue) of Pᵀ P, shape ``(..., d, d)``."""
    return np.linalg.eigh(np.swapaxes(p, -1, -2) @ p)[1]


def _assign(y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per row b, the particle order that matches ``y[b]`` (B, N, d) to ``t`` (N, d):
    ``order[b, j]`` is the particle assigned to template particle j, shape ``(B, N)``.

    Minimizes Σ_i ‖y_i − t_π(i)‖²; the terms ‖y_i‖² and ‖t_j‖² are the same for every
    assignment, so the cost matrix is −y_i·t_j.
    """
    cost = -y @ t.T
    order = np.empty(cost.shape[:2], dtype=np.intp)
    for b in range(cost.shape[0]):
        _, col = scipy.optimize.linear_sum_assignment(cost[b])
        order[b] = np.argsort(col)
    return order


def _procrustes(pm: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthogonal R (B, d, d) minimizing ‖pm R − t‖, and Σ σ = max tr(Rᵀ pmᵀ t) (B,)."""
    u, s, vt = np.linalg.svd(np.swapaxes(pm, -1, -2) @ t)
    return u @ vt, s.sum(-1)


def _align_from(p: np.ndarray, t: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Alternate assignment and Procrustes from rotations ``r`` (B, d, d).

    Returns the aligned configurations Πᵀ P R (B, N, d) and their costs
    ‖Πᵀ P R − T‖² (B,).
    """
    rows = np.arange(p.shape[0])[:, None]
    order = np.full(p.shape[:2], -1, dtype=np.intp)
    active = np.ones(p.shape[0], dtype=bool)
    trace = np.zeros(p.shape[0])
    for _ in range(ALIGN_ROUNDS):
        idx = np.nonzero(active)[0]
        new = _assign(p[idx] @ r[idx], t)
        active[idx] = (new != order[idx]).any(-1)
        order[idx] = new
        r[idx], trace[idx] = _procrustes(p[rows[idx], new], t)
        if not active.any():
            break
    aligned = p[rows, order] @ r
    cost = (p**2).sum((1, 2)) + (t**2).sum() - 2 * trace
    return aligned, cost


def _align_exhaustive(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The exact f(P): every one of the N! orders, each with its Procrustes R; (n, N, d)."""
    best, best_trace = p.copy(), np.full(p.shape[0], -np.inf)
    for perm in itertools.permutations(range(p.shape[1])):
        pm = p[:, list(perm)]
        r, trace = _procrustes(pm, t)
        better = trace > best_trace
        best[better], best_trace[better] = (pm @ r)[better], trace[better]
    return best


def _align_multistart(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The best of the 2^d alternating searches from principal-axes starts; (n, N, d)."""
    axes_p, axes_t = _principal_axes(p), _principal_axes(t)
    best, best_cost = p.copy(), np.full(p.shape[0], np.inf)
    for signs in itertools.product((1.0, -1.0), repeat=t.shape[1]):
        # start: P's principal axes, with these signs, onto T's
        aligned, cost = _align_from(p, t, (axes_p * np.array(signs)) @ axes_t.T)
        better = cost < best_cost
        best[better], best_cost[better] = aligned[better], cost[better]
    return best


def align_to_template(positions: np.ndarray, template: np.ndarray) -> np.ndarray:
    """The canonical representatives f(P) of ``positions`` (n, N, d), shape ``(n, N, d)``.

    ``positions`` must have centroid 0 per row (as ``ParticleTarget.positions``)
    and ``template`` (N, d) centroid 0. See the module docstring for f: exact
    for N ≤ :data:`EXHAUSTIVE_MAX_PARTICLES` (all N! permutations, each with its
    orthogonal Procrustes solution), else the best of 2^d starts (principal
    axes matched with every sign pattern) of alternating Hungarian assignment
    and orthogonal Procrustes. Float64.
    """
    p = np.asarray(positions, dtype=np.float64)
    t = np.asarray(template, dtype=np.float64)
    if t.shape[0] <= EXHAUSTIVE_MAX_PARTICLES:
        return _align_exhaustive(p, t)
    return _align_multistart(p, t)
