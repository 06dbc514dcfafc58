"""Torsion-angle metrics of alanine dipeptide: Ramachandran divergences, torus W2, chirality.

Alanine dipeptide targets expose ``positions(x) -> (n, 22, 3)`` in nm and
``mdtraj_topology`` (ACE–ALA–NME, as shipped by openmmtools). Torsions are
dihedral angles in radians from ``mdtraj.compute_dihedrals`` (IUPAC sign
convention), wrapped to [−π, π), on atom quadruples looked up by
(residue name, atom name) in the topology:

=============  ==========================================  ===================
torsion        atoms                                       shipped indices
=============  ==========================================  ===================
φ              ACE C, ALA N, ALA CA, ALA C                 4, 6, 8, 14
ψ              ALA N, ALA CA, ALA C, NME N                 6, 8, 14, 16
ω₁             ACE CH3, ACE C, ALA N, ALA CA               1, 4, 6, 8
ω₂             ALA CA, ALA C, NME N, NME C                 8, 14, 16, 18
ACE methyl     ACE H1, ACE CH3, ACE C, ALA N               0, 1, 4, 6
ALA methyl     ALA N, ALA CA, ALA CB, ALA HB1              6, 8, 10, 11
NME methyl     ALA C, NME N, NME C, NME H1                 14, 16, 18, 19
=============  ==========================================  ===================

φ and ψ are mdtraj's own ``compute_phi``/``compute_psi`` quadruples. mdtraj
finds no ω or χ for the capped residues (its ω needs a CA on both sides), so the
others are defined here.

Chirality is :func:`boltzbench.targets.internal.is_l_form`: L-alanine iff the
improper torsion ζ = dihedral(CA, N, C, CB) (atoms 8, 6, 14, 10) is > 0
(PROCHECK's Cα check; ζ ≈ +0.617 rad on the shipped structure). A mirror
image flips its sign.

Histogram divergences use equal-width bins over [−π, π) per angle plus one
*outside* bin. A sample metric is given the finite rows of a sample set and
``invalid``, the fraction of the set's rows that are not finite (NaN or ±inf
energy or coordinates, e.g. internal coordinates outside the support): the
sample histogram is scaled by (1 − invalid) and the outside bin holds
``invalid``; the reference's outside bin holds 0. Angles have no outliers (the
bins tile [−π, π) and every finite angle is wrapped into it), so the outside bin
holds invalid rows only. KL uses an additive pseudo-count ε on the bin
probabilities, p̃ = (p + ε) / (1 + K ε) for K bins (outside bin included), so
that it stays finite when a bin is empty; invalid mass lowers every in-support
p̃ of the samples and so raises KL(ref ‖ samples): by −log(1 − invalid) when the
finite parts agree and ε → 0.

The pinned variant (:data:`RAMACHANDRAN_BINS`, :data:`TORSION_BINS`,
:data:`PSEUDO_COUNT`; N_eval = 5,000 from ``targets.aldp.n_eval`` in the
default config) was chosen by measuring the noise floor (the same KL between
independent 2 × 1-ns MD reference sets) against faulty samples made from MD
frames (a 0.25-rad blur of φ and ψ, 5.9 % invalid rows): the Ramachandran KL
floor is 0.077 ± 0.008 nats, those faults add 0.05–0.08 nats (7–10 floor
standard deviations); at 36 × 36, ε = 1e-6, N_eval = 2,000 the floor was
0.43 ± 0.07 and the same faults added ≤ 0.05. Basin-population errors (αR
× 1.5) stay within the floor at this MD length: the floor's spread comes from
the MD's own population noise.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from boltzbench.metrics.distributional import EMD_NUM_ITER_MAX, w2_from_cost
from boltzbench.metrics.evaluate import finite_rows
from boltzbench.targets.base import Molecule, Target
from boltzbench.targets.dihedrals import TORSION_ATOMS, dihedrals_nm, torsion_indices, wrap_angle
from boltzbench.targets.internal import is_l_form

if TYPE_CHECKING:  # only for annotations
    from boltzbench.core import SampleSet

__all__ = [
    "TORSION_ATOMS",
    "OTHER_TORSIONS",
    "RAMACHANDRAN_BINS",
    "TORSION_BINS",
    "PSEUDO_COUNT",
    "has_torsions",
    "torsion_indices",
    "torsion_angles",
    "dihedrals_nm",
    "wrap_angle",
    "angle_histogram",
    "with_outside",
    "smooth",
    "kl_divergence",
    "js_divergence",
    "histogram_kl",
    "histogram_js",
    "torus_cost",
    "torus_wasserstein2",
    "ramachandran_kl",
    "ramachandran_js",
    "torsion_kl_phi",
    "torsion_kl_psi",
    "torsion_kl_other",
    "torus_w2",
    "wrong_chirality",
]

#: the torsions averaged by :func:`torsion_kl_other`
OTHER_TORSIONS = ("omega_1", "omega_2", "methyl_ace", "methyl_ala", "methyl_nme")
#: bins per angle of the 2-D (φ, ψ) histogram: 36 × 36 bins of 10°
RAMACHANDRAN_BINS = 36
#: bins of each 1-D torsion histogram: 36 bins of 10°
TORSION_BINS = 36
#: additive pseudo-count ε on bin probabilities before renormalizing: half a
#: count per bin at N_eval = 5,000 (the Krichevsky–Trofimov estimator). With
#: ε = 1e-6 and N_eval = 2,000 the floor was 0.43 ± 0.07 nats, mostly from bins
#: seen on one side only; with ε = 1e-4 and N_eval = 5,000 it is 0.077 ± 0.008.
PSEUDO_COUNT = 1e-4


def has_torsions(target: Target) -> bool:
    """Whether ``target`` is a molecule (the :class:`~boltzbench.targets.base.Molecule`
    hooks: ``mdtraj_topology`` and ``positions``)."""
    return isinstance(target, Molecule)


def torsion_angles(x: torch.Tensor, target: Target, names: tuple[str, ...]) -> np.ndarray:
    """Torsions ``names`` of the rows of ``x``, radians in [−π, π), shape ``(n, len(names))``.

    :func:`dihedrals_nm` of ``target.positions(x)`` (nm) with ``target.mdtraj_topology``.
    """
    with torch.no_grad():
        pos = target.positions(x.detach().to(torch.float64)).cpu().numpy()
    return dihedrals_nm(pos, target.mdtraj_topology, names)


def angle_histogram(angles: np.ndarray, bins: int) -> np.ndarray:
    """Normalized histogram of ``angles`` ``(n, k)`` on the k-torus, shape ``(bins**k,)``.

    ``bins`` equal-width bins per angle over [−π, π) (angles are wrapped
    first, so π falls in the first bin); the joint bin index is row-major in
    the k angles. Sums to 1 (n ≥ 1); all zeros when n = 0.
    """
    a = wrap_angle(np.atleast_2d(angles.T).T)
    idx = np.clip(np.floor((a + math.pi) / (2 * math.pi) * bins).astype(np.int64), 0, bins - 1)
    flat = np.ravel_multi_index(tuple(idx.T), (bins,) * a.shape[1])
    return np.bincount(flat, minlength=bins ** a.shape[1]) / max(a.shape[0], 1)


def with_outside(hist: np.ndarray, invalid: float = 0.0) -> np.ndarray:
    """``(1 − invalid) · hist`` with the outside bin ``invalid`` appended, shape ``(K + 1,)``.

    ``hist`` is a normalized histogram of the finite rows (all zeros when there
    are none: then all the mass is outside, whatever ``invalid`` says).
    """
    if not 0.0 <= invalid <= 1.0:
        raise ValueError(f"invalid must be a fraction in [0, 1], got {invalid}")
    if not hist.any():
        invalid = 1.0
    return np.append((1.0 - invalid) * hist, invalid)


def smooth(p: np.ndarray, eps: float = PSEUDO_COUNT) -> np.ndarray:
    """p̃ = (p + ε) / (1 + K ε) for a probability vector ``p`` of K bins."""
    return (p + eps) / (1.0 + p.size * eps)


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p ‖ q) = Σ_k p_k log(p_k / q_k) in nats, with 0 log 0 = 0 (∞ if q_k = 0 < p_k)."""
    m = p > 0
    if np.any(q[m] == 0):
        return math.inf
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q)/2, in nats, ∈ [0, log 2]."""
    m = 0.5 * (p + q)
    return 0.5 * kl_divergence(p, m) + 0.5 * kl_divergence(q, m)


def torus_cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cost C_ij = Σ_k min(|Δθ_k|, 2π − |Δθ_k|)² between rows of ``a`` (n, k) and ``b`` (m, k).

    The squared geodesic distance on the flat torus [−π, π)^k. Inputs are
    wrapped to [−π, π) first, so |Δθ_k| < 2π.
    """
    a, b = wrap_angle(a), wrap_angle(b)
    cost = np.zeros((a.shape[0], b.shape[0]))
    for k in range(a.shape[1]):
        d = np.abs(a[:, k, None] - b[None, :, k])
        cost += np.minimum(d, 2 * math.pi - d) ** 2
    return cost


def torus_wasserstein2(a: np.ndarray, b: np.ndarray, num_iter_max: int = EMD_NUM_ITER_MAX) -> float:
    """Exact W2 (radians, not W2²) on the flat torus between uniform measures on ``a`` and ``b``.

    sqrt of POT ``ot.emd2`` (network simplex) with :func:`torus_cost`. Raises
    :class:`~boltzbench.metrics.distributional.OTNotConverged` when the solver
    does not report an optimal solution.
    """
    return w2_from_cost(torus_cost(a, b), num_iter_max)


def histogram_kl(ref: np.ndarray, ang: np.ndarray, bins: int, invalid: float = 0.0) -> float:
    """KL(ref ‖ samples) in nats between ε-smoothed angle histograms with an outside bin.

    ``ref`` and ``ang`` are angles ``(n, k)`` or ``(n,)`` (radians), ``bins``
    per angle; the samples' histogram is :func:`with_outside` of ``invalid``,
    the reference's of 0; K = bins^k + 1 in :func:`smooth`.
    """
    p = smooth(with_outside(angle_histogram(ref, bins)))
    q = smooth(with_outside(angle_histogram(ang, bins), invalid))
    return kl_divergence(p, q)


def histogram_js(ref: np.ndarray, ang: np.ndarray, bins: int, invalid: float = 0.0) -> float:
    """JS divergence in nats between unsmoothed angle histograms with an outside bin.

    As :func:`histogram_kl`, without pseudo-count.
    """
    p = with_outside(angle_histogram(ref, bins))
    return js_divergence(p, with_outside(angle_histogram(ang, bins), invalid))


_PHI_PSI = ("phi", "psi")


def ramachandran_kl(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
    invalid: float = 0.0,
) -> float:
    """KL(ref ‖ samples) on ε-smoothed (φ, ψ) histograms, :data:`RAMACHANDRAN_BINS` per angle.

    ``x`` are the finite rows, ``invalid`` the fraction of the sample set's
    rows that are not (the outside bin, see the module docstring). Nats.
    """
    ref, ang = torsion_angles(ref_x, target, _PHI_PSI), torsion_angles(x, target, _PHI_PSI)
    return histogram_kl(ref, ang, RAMACHANDRAN_BINS, invalid)


def ramachandran_js(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
    invalid: float = 0.0,
) -> float:
    """Jensen–Shannon divergence on unsmoothed (φ, ψ) histograms with an outside bin, nats."""
    ref, ang = torsion_angles(ref_x, target, _PHI_PSI), torsion_angles(x, target, _PHI_PSI)
    return histogram_js(ref, ang, RAMACHANDRAN_BINS, invalid)


def _torsion_kl(
    x: torch.Tensor,
    ref_x: torch.Tensor,
    target: Target,
    names: tuple[str, ...],
    invalid: float,
) -> float:
    """Mean over ``names`` of the 1-D KL(ref ‖ samples), ε-smoothed, :data:`TORSION_BINS` bins."""
    ref, ang = torsion_angles(ref_x, target, names), torsion_angles(x, target, names)
    kls = [histogram_kl(ref[:, k], ang[:, k], TORSION_BINS, invalid) for k in range(len(names))]
    return float(np.mean(kls))


def torsion_kl_phi(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
    invalid: float = 0.0,
) -> float:
    """1-D KL(ref ‖ samples) of φ (see :func:`_torsion_kl`)."""
    return _torsion_kl(x, ref_x, target, ("phi",), invalid)


def torsion_kl_psi(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
    invalid: float = 0.0,
) -> float:
    """1-D KL(ref ‖ samples) of ψ (see :func:`_torsion_kl`)."""
    return _torsion_kl(x, ref_x, target, ("psi",), invalid)


def torsion_kl_other(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
    invalid: float = 0.0,
) -> float:
    """Mean 1-D KL(ref ‖ samples) over :data:`OTHER_TORSIONS` (see :func:`_torsion_kl`)."""
    return _torsion_kl(x, ref_x, target, OTHER_TORSIONS, invalid)


def torus_w2(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
) -> float:
    """W2 on the flat (φ, ψ) torus (see :func:`torus_wasserstein2`), radians."""
    return torus_wasserstein2(
        torsion_angles(x, target, _PHI_PSI), torsion_angles(ref_x, target, _PHI_PSI)
    )


def wrong_chirality(samples: SampleSet, target: Target) -> float:
    """Fraction of the finite rows that are not L-form; 0.0 when there are none.

    Rows whose energy and x are finite (:func:`~boltzbench.metrics.evaluate.finite_rows`);
    L-form by ``is_l_form`` of ``target.positions(x)`` flattened to ``(n, 66)``
    (ζ > 0; a NaN ζ of a degenerate geometry counts as not L).
    """
    finite = finite_rows(samples)
    n = finite.x.shape[0]
    if n == 0:
        return 0.0
    with torch.no_grad():
        pos = target.positions(finite.x).to(torch.float64).reshape(n, -1)
    return float((~is_l_form(pos)).to(torch.float64).mean())
