"""Metrics: every quality measure of a sample set, one registry.

``METRICS.build(name)`` returns the :class:`Metric` registered under ``name``
(each entry is a factory without parameters). :func:`evaluate` computes every
applicable metric of a sample set, :func:`noise_floor` the floor of every
sample metric, and :func:`metric_docs` the definitions shown in the report.
"""

from __future__ import annotations

from boltzbench.metrics.base import Metric
from boltzbench.metrics.distributional import energy_w1, mmd, w2
from boltzbench.metrics.evaluate import evaluate, metric_docs, noise_floor, nonfinite_fraction
from boltzbench.metrics.lattice import has_lattice, magnetization_w1, susceptibility_error
from boltzbench.metrics.modes import has_modes, mode_coverage
from boltzbench.metrics.particles import distance_tv, distance_w2, energy_w2, has_particles
from boltzbench.metrics.torsions import (
    has_torsions,
    ramachandran_js,
    ramachandran_kl,
    torsion_kl_other,
    torsion_kl_phi,
    torsion_kl_psi,
    torus_w2,
    wrong_chirality,
)
from boltzbench.metrics.weights import kish_ess, log_z_error, log_z_hat
from boltzbench.registry import Registry

__all__ = ["METRICS", "Metric", "evaluate", "noise_floor", "metric_docs"]

METRICS: Registry[Metric] = Registry("metric")


def _register(metric: Metric) -> None:
    """Register ``metric`` under its name, as a factory without parameters."""
    METRICS.register(metric.name)(lambda: metric)


_register(
    Metric(
        name="log_z_hat",
        kind="weights",
        fn=log_z_hat,
        doc=(
            "Estimate of log Z: the method's own attrs['log_Z_hat'] (SMC) if present, "
            "else log((1/N) Σ_i w_i) over all N rows with log w = -E - log q; "
            "non-finite log weights count as w = 0. None without weights or estimate."
        ),
        better="neither",
    )
)
_register(
    Metric(
        name="log_z_error",
        kind="weights",
        fn=log_z_error,
        doc=(
            "Δlog Z = |log Ẑ - log Z| with log Ẑ as in log_z_hat and the target's exact "
            "log Z. None when either is unknown."
        ),
    )
)
_register(
    Metric(
        name="ess",
        kind="weights",
        fn=kish_ess,
        doc=(
            "Normalized Kish ESS = (Σ_i w_i)² / (N Σ_i w_i²) ∈ [1/N, 1] over all N rows "
            "(non-finite log weights count as w = 0; 0 if all weights are 0). "
            "None without weights. For a flow, w = p/q is the importance weight of "
            "independent proposals; for SMC, w is the final particle weight, so this is "
            "the ESS accumulated since the last resampling step, not an ESS against a "
            "proposal: the two are not comparable."
        ),
        better="higher",
    )
)
_register(
    Metric(
        name="w2",
        kind="sample",
        fn=w2,
        doc=(
            "Exact 2-Wasserstein distance W2 (not W2²) between n_eval samples and n_eval "
            "reference samples as uniform empirical measures: sqrt of POT ot.emd2 "
            "(network simplex) with squared-Euclidean cost. For particle targets x are the "
            "(N-1)·d centre-of-mass-free chart coordinates, an isometry of the CoM-free "
            "subspace, so this is W2 on raw Cartesian coordinates with the CoM removed, "
            "without rotational or permutational alignment."
        ),
    )
)
_register(
    Metric(
        name="energy_w1",
        kind="sample",
        fn=energy_w1,
        doc=(
            "1-D 1-Wasserstein distance (k_BT) between the energies of n_eval samples and "
            "n_eval reference samples (scipy.stats.wasserstein_distance, uniform weights)."
        ),
    )
)
_register(
    Metric(
        name="mmd",
        kind="sample",
        fn=mmd,
        doc=(
            "MMD = sqrt(max(MMD²_b, 0)) with the biased V-statistic MMD²_b (diagonal terms "
            "included; Gretton et al. 2012) and Gaussian kernel exp(-‖x-y‖²/(2h²)); "
            "h = median of the pairwise Euclidean distances (i < j) of the pooled "
            "samples and reference samples."
        ),
    )
)
_register(
    Metric(
        name="mode_coverage",
        kind="sample",
        fn=mode_coverage,
        doc=(
            "Entropy of the histogram of target.assign_modes over n_eval samples divided "
            "by log(n_modes): 1 = all modes visited equally, 0 = one mode. Only for "
            "targets that label modes."
        ),
        better="higher",
        applies=has_modes,
    )
)
_register(
    Metric(
        name="nonfinite_fraction",
        kind="sampleset",
        fn=nonfinite_fraction,
        doc=(
            "Fraction of all rows whose energy or any coordinate of x is NaN or ±inf; "
            "these rows are dropped before the sample metrics."
        ),
    )
)
_register(
    Metric(
        name="energy_w2",
        kind="sample",
        fn=energy_w2,
        doc=(
            "1-D 2-Wasserstein distance W2 (not W2², k_BT) between the energies of n_eval "
            "samples and n_eval reference samples as uniform empirical measures: exact, "
            "sqrt of ∫_0^1 |F⁻¹(t) - G⁻¹(t)|² dt over the empirical quantile functions "
            "(for equal sizes, the root mean squared difference of the sorted energies)."
        ),
    )
)
_register(
    Metric(
        name="distance_tv",
        kind="sample",
        fn=distance_tv,
        doc=(
            "Total variation ½ Σ_k |p_k - q_k| ∈ [0, 1] between histograms of all "
            "interatomic distances (the N(N-1)/2 pairs of each of the n_eval samples, "
            "pooled, against the same from n_eval reference samples), each normalized by "
            "its own count, 200 equal-width bins over the common range [min, max] of the "
            "pooled sample and reference distances (target length units). Particle "
            "targets only."
        ),
        applies=has_particles,
    )
)
_register(
    Metric(
        name="distance_w2",
        kind="sample",
        fn=distance_w2,
        doc=(
            "Exact 1-D 2-Wasserstein distance W2 (not W2², target length units) between "
            "the pooled interatomic distances of n_eval samples (N(N-1)/2 per sample) and "
            "those of n_eval reference samples, as uniform empirical measures. Invariant "
            "to rotations, reflections and permutations. Particle targets only."
        ),
        applies=has_particles,
    )
)
_register(
    Metric(
        name="magnetization_w1",
        kind="sample",
        fn=magnetization_w1,
        doc=(
            "Exact 1-D 1-Wasserstein distance between the signed magnetizations "
            "M = (1/V) Σ_x φ(x) of n_eval sample and n_eval reference configurations "
            "(Albergo et al. 2021, arXiv:2101.08176). Signed M, not |M|: the theory is "
            "Z2-symmetric, so a sampler that covers only one sign of M in the broken phase "
            "scores ≈ ⟨|M|⟩, which |M| would hide. φ⁴ lattice targets only."
        ),
        applies=has_lattice,
    )
)
_register(
    Metric(
        name="susceptibility_error",
        kind="sample",
        fn=susceptibility_error,
        doc=(
            "Relative error |χ₂ - χ₂_ref| / |χ₂_ref| of the two-point susceptibility "
            "χ₂ = Σ_x G_c(x), G_c(x) = (1/V) Σ_y [⟨φ(y)φ(y+x)⟩ - ⟨φ(y)⟩⟨φ(y+x)⟩] on the "
            "periodic lattice (Albergo et al. 2019, arXiv:1904.12072), each on n_eval "
            "configurations, with ⟨·⟩ estimated by sample means (1/n, no Bessel "
            "correction); equivalently χ₂ = V (mean(M²) - mean(M)²). φ⁴ lattice targets "
            "only."
        ),
        applies=has_lattice,
    )
)
_RAMA = (
    "(φ, ψ) from mdtraj.compute_dihedrals on the mdtraj quadruples φ = C(ACE)-N-CA-C, "
    "ψ = N-CA-C-N(NME), in radians wrapped to [-π, π), of n_eval samples and n_eval "
    "reference samples; histogram of 36 × 36 equal bins (10°) over [-π, π)²"
)
_SMOOTH = "bin probabilities smoothed as p̃ = (p + ε) / (1 + K ε) with ε = 1e-6, K bins"
_register(
    Metric(
        name="ramachandran_kl",
        kind="sample",
        fn=ramachandran_kl,
        doc=(
            f"KL(ref ‖ samples) = Σ p̃_ref log(p̃_ref / p̃_samples) in nats, {_RAMA}, "
            f"{_SMOOTH} = 1296. Alanine dipeptide only."
        ),
        applies=has_torsions,
    )
)
_register(
    Metric(
        name="ramachandran_js",
        kind="sample",
        fn=ramachandran_js,
        doc=(
            "Jensen-Shannon divergence ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q)/2, in nats "
            f"(natural log, ∈ [0, log 2]), {_RAMA}, without pseudo-count. Alanine "
            "dipeptide only."
        ),
        applies=has_torsions,
    )
)
_TORSION_1D = (
    "60 equal bins (6°) over [-π, π), dihedrals from mdtraj.compute_dihedrals of n_eval "
    f"samples and n_eval reference samples, {_SMOOTH} = 60"
)
_register(
    Metric(
        name="torsion_kl_phi",
        kind="sample",
        fn=torsion_kl_phi,
        doc=(
            f"1-D KL(ref ‖ samples) in nats of φ = C(ACE)-N-CA-C, {_TORSION_1D}. Alanine "
            "dipeptide only."
        ),
        applies=has_torsions,
    )
)
_register(
    Metric(
        name="torsion_kl_psi",
        kind="sample",
        fn=torsion_kl_psi,
        doc=(
            f"1-D KL(ref ‖ samples) in nats of ψ = N-CA-C-N(NME), {_TORSION_1D}. Alanine "
            "dipeptide only."
        ),
        applies=has_torsions,
    )
)
_register(
    Metric(
        name="torsion_kl_other",
        kind="sample",
        fn=torsion_kl_other,
        doc=(
            "Mean of the 1-D KL(ref ‖ samples) in nats over five torsions (atom indices "
            "of the shipped topology): ω₁ = CH3-C(ACE)-N-CA (1, 4, 6, 8), ω₂ = "
            "CA-C-N(NME)-C(NME) (8, 14, 16, 18), ACE methyl H1-CH3-C-N (0, 1, 4, 6), "
            "ALA methyl N-CA-CB-HB1 (6, 8, 10, 11), NME methyl C(ALA)-N-C-H1 "
            f"(14, 16, 18, 19); {_TORSION_1D}. Alanine dipeptide only."
        ),
        applies=has_torsions,
    )
)
_register(
    Metric(
        name="torus_w2",
        kind="sample",
        fn=torus_w2,
        doc=(
            "Exact 2-Wasserstein distance W2 (not W2², radians) on the flat torus between "
            "the (φ, ψ) of n_eval samples and n_eval reference samples (mdtraj dihedrals "
            "as in ramachandran_kl), uniform empirical measures, cost "
            "Σ_k min(|Δθ_k|, 2π - |Δθ_k|)²: sqrt of POT ot.emd2 (network simplex). "
            "Alanine dipeptide only."
        ),
        applies=has_torsions,
    )
)
_register(
    Metric(
        name="wrong_chirality",
        kind="sampleset",
        fn=wrong_chirality,
        doc=(
            "Fraction of all finite rows (finite energy and x) that are not L-alanine: "
            "improper torsion ζ = dihedral(CA, N, C, CB) (atoms 8, 6, 14, 10) ≤ 0 or "
            "undefined (boltzbench.targets.internal.is_l_form; ζ ≈ +35° for L). 0 when "
            "no row is finite. Alanine dipeptide only."
        ),
        applies=has_torsions,
    )
)
