"""Metrics: every quality measure of a sample set, one registry.

``METRICS.build(name)`` returns the :class:`Metric` registered under ``name``
(each entry is a factory without parameters). :func:`evaluate` computes every
applicable metric of a sample set, :func:`noise_floor` the floor of every
sample metric, and :func:`metric_docs` the definitions shown in the report.
"""

from __future__ import annotations

from boltzbench.metrics.base import OT_MAX_ROWS, Metric
from boltzbench.metrics.cost import ess_per_1e6_evals
from boltzbench.metrics.distributional import energy_w1, mmd, w2
from boltzbench.metrics.evaluate import evaluate, metric_docs, noise_floor, nonfinite_fraction
from boltzbench.metrics.forward import eubo, forward_ess, forward_kl
from boltzbench.metrics.gauge import (
    chi_q_error,
    has_gauge,
    plaquette_error,
    topo_ess_per_1e6_evals,
    topo_tau_int,
)
from boltzbench.metrics.lattice import has_lattice, magnetization_w1, susceptibility_error
from boltzbench.metrics.liquid import (
    RDF_BINS,
    aligns,
    energy_per_particle_error,
    energy_per_particle_w1,
    is_liquid,
    pressure_error,
    rdf_l2,
)
from boltzbench.metrics.modes import (
    FOUND_FRACTION,
    has_equal_modes,
    has_mode_weights,
    mode_coverage,
    mode_tv,
    modes_found,
)
from boltzbench.metrics.particles import (
    distance_tv,
    distance_w2,
    energy_w2,
    has_particles,
    lacks_particles,
    w2_aligned,
)
from boltzbench.metrics.torsions import (
    PSEUDO_COUNT,
    RAMACHANDRAN_BINS,
    TORSION_BINS,
    has_torsions,
    ramachandran_js,
    ramachandran_kl,
    torsion_kl_other,
    torsion_kl_phi,
    torsion_kl_psi,
    torus_w2,
    wrong_chirality,
)
from boltzbench.metrics.weights import elbo_gap, kish_ess, log_z_error, log_z_hat
from boltzbench.registry import Registry

__all__ = ["METRICS", "Metric", "evaluate", "noise_floor", "metric_docs"]

METRICS: Registry[Metric] = Registry("metric")


#: why a weight metric is None on a target periodic on all of ℝ (metrics.weights)
_PERIODIC_WEIGHTS = (
    "None on a target whose energy is periodic on all of ℝ (U(1)) unless the method's "
    "density lives on the torus (a circular flow): e^(−E) has no finite integral over "
    "ℝ^dim there, so weights from a density on ℝ^dim (SMC, diffusions, an interval "
    "flow) estimate nothing."
)


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
            "non-finite log weights count as w = 0. None without weights or estimate. "
            + _PERIODIC_WEIGHTS
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
            "log Z. None when either is unknown. " + _PERIODIC_WEIGHTS
        ),
    )
)
_register(
    Metric(
        name="elbo_gap",
        kind="weights",
        fn=elbo_gap,
        doc=(
            "ELBO gap = log Z − ELBO, ELBO = the method's attrs['log_Z_elbo'], the mean log w "
            "over its N independent draws (flows, flow matching, FAB: log w = −E − log q; "
            "path samplers: the path weights): an estimate of the reverse KL(q ‖ p) in nats "
            "(of the path measures for a path sampler). +inf when some log w is not finite. "
            "None when log Z is unknown or the method declares no ELBO (MCMC, SMC, SCLD runs "
            "that resample). " + _PERIODIC_WEIGHTS
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
            "proposal: the two are not comparable. " + _PERIODIC_WEIGHTS
        ),
        better="higher",
    )
)
_register(
    Metric(
        name="ess_per_1e6_evals",
        kind="sampleset",
        fn=ess_per_1e6_evals,
        doc=(
            "The ESS as a number of samples per 10⁶ target energy evaluations (fit + "
            "sample; declared ones for samples made elsewhere): the Kish ESS (Σw)²/Σw² over "
            "all rows for weighted sets, the autocorrelation ESS of the kept chain draws "
            "(smallest over coordinates, Vehtari et al. 2021) for MCMC, else none. SMC's "
            "Kish ESS counts only since its last resampling, so it is an upper bound."
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
            f"On min(N_eval, {OT_MAX_ROWS}) rows of each set (the first of the drawn rows). "
            "Exact 2-Wasserstein distance W2 (not W2²) between n_eval samples and n_eval "
            "reference samples as uniform empirical measures: sqrt of POT ot.emd2 "
            "(network simplex) with squared-Euclidean cost. Not computed for particle "
            "targets (DW-4, LJ): on their raw CoM-free coordinates it measures how far "
            "orientations and labels have mixed, in the reference as in the method (DW-4, "
            "n_eval = 2000, the default run's PT reference: floor 1.6 raw, 0.26 aligned); "
            "their sample W2 is w2_aligned."
        ),
        applies=lacks_particles,
        max_rows=OT_MAX_ROWS,
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
            f"On min(N_eval, {OT_MAX_ROWS}) rows of each set (the first of the drawn rows). "
            "MMD = sqrt(max(MMD²_b, 0)) with the biased V-statistic MMD²_b (diagonal terms "
            "included; Gretton et al. 2012) and Gaussian kernel exp(-‖x-y‖²/(2h²)); "
            "h = median of the pairwise Euclidean distances (i < j) of the pooled "
            "samples and reference samples."
        ),
        max_rows=OT_MAX_ROWS,
    )
)
_MODES = (
    "Modes: target.assign_modes labels (GMM-40: the most likely of its 40 components; "
    "ManyWell-32: the left/right well of each of its 16 pairs, split at the barrier "
    "x₁ = −0.0417, 2^16 modes) of the n_eval raw or reweighted samples; rows that are "
    "not finite count as mass in no mode (raw)"
)
_register(
    Metric(
        name="mode_coverage",
        kind="sample",
        fn=mode_coverage,
        doc=(
            f"H(p̂)/log K, the entropy of the empirical mode weights p̂ over the K equally "
            f"weighted modes, normalized. {_MODES}. 1 = all K modes visited equally; "
            "exp(H) is the number of equally visited modes it corresponds to (K^value: "
            "0.578 on GMM-40 is ≈ 8.4 modes, not half of them). Only for targets whose "
            "modes are equally weighted (GMM-40); the reference is not used."
        ),
        better="higher",
        applies=has_equal_modes,
        counts_invalid=True,
    )
)
_register(
    Metric(
        name="mode_tv",
        kind="sample",
        fn=mode_tv,
        doc=(
            "Total variation ½ (Σ_k |p̂_k − π_k| + invalid) ∈ [0, 1] between the empirical "
            "mode weights p̂ of the samples and the exact weights π (GMM-40: 1/40 each; "
            "ManyWell: products of each well's exact occupation, 0.8443 for the right "
            f"well, by quadrature of the 1-D factor), invalid rows as an extra category. "
            f"{_MODES}. Only for targets with known mode weights; the reference is not used."
        ),
        applies=has_mode_weights,
        counts_invalid=True,
    )
)
_register(
    Metric(
        name="modes_found",
        kind="sample",
        fn=modes_found,
        doc=(
            "Number of modes k holding at least a tenth of their exact weight, "
            f"p̂_k ≥ {FOUND_FRACTION} π_k, and at least one sample. {_MODES}. With n_eval "
            "samples an exact sampler finds all 40 GMM-40 modes but only a fraction of "
            "ManyWell-32's 65,536 (most have weight < 1/n_eval): read it beside its floor."
        ),
        better="higher",
        applies=has_mode_weights,
        counts_invalid=True,
    )
)
_FORWARD = (
    "at the N_eval reference rows x_i ∼ p (the rows the sample metrics use), with the "
    "method's normalized log density log q (flows, FAB, flow matching; Blessing et al. "
    "2024, arXiv:2406.07423) and log w = −E − log q"
)
_register(
    Metric(
        name="eubo",
        kind="density",
        fn=eubo,
        doc=(
            f"EUBO = mean_i log w(x_i) {_FORWARD}: an estimate of log Z + KL(p ‖ q), an "
            "upper bound on log Z in expectation, which a q that misses a mode of p "
            "cannot keep tight. +inf when log q is not finite at some reference row."
        ),
    )
)
_register(
    Metric(
        name="forward_kl",
        kind="density",
        fn=forward_kl,
        doc=(
            f"EUBO − log Z {_FORWARD}: an estimate of the forward KL(p ‖ q) in nats. None "
            "when log Z is unknown."
        ),
    )
)
_register(
    Metric(
        name="forward_ess",
        kind="density",
        fn=forward_ess,
        doc=(
            f"Forward ESS = 1 / (mean_i w(x_i) · mean_i 1/w(x_i)) ∈ (0, 1] {_FORWARD}. Its "
            "population value equals the reverse (Kish) normalized ESS of importance "
            "sampling from q, but it is estimated on p's samples, so a mode that q "
            "misses drives it to 0 while the reverse ESS can stay near 1."
        ),
        better="higher",
    )
)
_register(
    Metric(
        name="nonfinite_fraction",
        kind="sampleset",
        fn=nonfinite_fraction,
        doc=(
            "Fraction of all rows whose energy or any coordinate of x is NaN or ±inf. "
            "Histogram and mode metrics count these rows as mass outside the reference's "
            "support; the other sample metrics (W2, energy W1/W2, MMD, …) are computed on "
            "the finite rows only, and the leaderboard marks their cells with the "
            "fraction dropped."
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
            "Total variation ½ (Σ_k |(1-ι) p_k - q_k| + ι + (1-ι) o) ∈ [0, 1] between "
            "histograms of all interatomic distances (the N(N-1)/2 pairs of each of the "
            "n_eval samples, pooled, against the same from n_eval reference samples), each "
            "normalized by its own count. Bins from the reference alone: 200 equal-width "
            "bins over [min, max] of the reference distances (target length units), plus "
            "an outside bin: o is the fraction of sample distances outside that range, ι "
            "the fraction of the sample set's rows that are not finite (no distances "
            "computed); the reference has no mass outside, so TV ≥ ι + (1-ι) o and an "
            "outlier moves no bin edge. Particle targets only."
        ),
        applies=has_particles,
        counts_invalid=True,
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
        name="w2_aligned",
        kind="sample",
        fn=w2_aligned,
        doc=(
            f"On min(N_eval, {OT_MAX_ROWS}) rows of each set (the first of the drawn rows). "
            "Exact 2-Wasserstein distance W2 (not W2², target length units) between n_eval "
            "samples and n_eval reference samples after each configuration is replaced by "
            "the copy of it, under rotations, reflections (O(d)) and permutations of the "
            "particles, closest to a fixed template T: the first N points of a unit grid, "
            "point i (0-based) moved to 1 + 0.2 (i+1)/N times its distance from the "
            "centroid (no symmetry). Argmin over (permutation, O(d)) of ‖Πᵀ P R − T‖², "
            "each R by orthogonal Procrustes (SVD); exact over all N! orders for N ≤ 6 "
            "(DW-4); for larger N (LJ) the best of 2^d local searches alternating "
            "Hungarian assignment and Procrustes, started from the principal axes with "
            "each sign pattern. Then sqrt of POT ot.emd2 on the aligned Cartesian "
            "coordinates (squared-Euclidean cost). Invariant to rotations, reflections and "
            "permutations of any row; ≥ the W2 of the quotient space (pair cost min over "
            "the group of ‖x - g·y‖²). Particle targets in open space only (not a periodic "
            "liquid, whose box fixes the frame)."
        ),
        applies=aligns,
        max_rows=OT_MAX_ROWS,
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
_N_EVAL = (
    "N_eval finite samples and N_eval reference samples (N_eval: targets.<name>.n_eval, "
    "else evaluation.n_eval; 5,000 for aldp in the default config)"
)
_OUTSIDE = (
    "plus one outside bin that holds the fraction of the sample set's rows that are not "
    "finite (non-finite energy or coordinates, e.g. internal coordinates outside the "
    "support), the samples' histogram of finite rows being scaled by (1 - that fraction); "
    "the reference's outside bin is 0 (a finite angle is never outside [-π, π))"
)
_RAMA = (
    "(φ, ψ) from mdtraj.compute_dihedrals on the mdtraj quadruples φ = C(ACE)-N-CA-C, "
    f"ψ = N-CA-C-N(NME), in radians wrapped to [-π, π), of {_N_EVAL}; histogram of "
    f"{RAMACHANDRAN_BINS} × {RAMACHANDRAN_BINS} equal bins ({360 / RAMACHANDRAN_BINS:g}°) "
    f"over [-π, π)², {_OUTSIDE}"
)
_SMOOTH = (
    f"bin probabilities smoothed as p̃ = (p + ε) / (1 + K ε) with ε = {PSEUDO_COUNT:g}, "
    "K bins counting the outside bin"
)
_register(
    Metric(
        name="ramachandran_kl",
        kind="sample",
        fn=ramachandran_kl,
        doc=(
            f"KL(ref ‖ samples) = Σ p̃_ref log(p̃_ref / p̃_samples) in nats, {_RAMA}; "
            f"{_SMOOTH}, K = {RAMACHANDRAN_BINS**2 + 1}. Alanine dipeptide only."
        ),
        applies=has_torsions,
        counts_invalid=True,
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
        counts_invalid=True,
    )
)
_TORSION_1D = (
    f"{TORSION_BINS} equal bins ({360 / TORSION_BINS:g}°) over [-π, π) plus the outside "
    "bin of ramachandran_kl (invalid rows), dihedrals from mdtraj.compute_dihedrals of "
    f"{_N_EVAL}; {_SMOOTH}, K = {TORSION_BINS + 1}"
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
        counts_invalid=True,
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
        counts_invalid=True,
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
        counts_invalid=True,
    )
)
_register(
    Metric(
        name="torus_w2",
        kind="sample",
        fn=torus_w2,
        doc=(
            f"On min(N_eval, {OT_MAX_ROWS}) rows of each set (the first of the drawn rows). "
            "Exact 2-Wasserstein distance W2 (not W2², radians) on the flat torus between "
            "the (φ, ψ) of n_eval samples and n_eval reference samples (mdtraj dihedrals "
            "as in ramachandran_kl), uniform empirical measures, cost "
            "Σ_k min(|Δθ_k|, 2π - |Δθ_k|)²: sqrt of POT ot.emd2 (network simplex). "
            "Alanine dipeptide only."
        ),
        applies=has_torsions,
        max_rows=OT_MAX_ROWS,
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

_LIQUID = (
    "Periodic liquids only (LJ liquid, Kob-Andersen); n_eval samples against n_eval "
    "reference samples"
)
_register(
    Metric(
        name="rdf_l2",
        kind="sample",
        fn=rdf_l2,
        doc=(
            "L2 distance sqrt(∫_0^{L/2} (g(r) − g_ref(r))² dr) (σ^{1/2}) between the radial "
            f"distribution functions of the samples and of the reference, each from all "
            f"minimum-image pair distances on {RDF_BINS} equal bins over [0, L/2), "
            "g = n_k / [N(N−1)/2 · shell volume / V] averaged over configurations (total g "
            f"of all pairs for a mixture). {_LIQUID}."
        ),
        applies=is_liquid,
    )
)
_register(
    Metric(
        name="energy_per_particle_w1",
        kind="sample",
        fn=energy_per_particle_w1,
        doc=(
            "1-D 1-Wasserstein distance (ε, not k_BT) between the potential energies per "
            f"particle U/N (tail correction included) of the samples and of the reference. "
            f"{_LIQUID}."
        ),
        applies=is_liquid,
    )
)
_register(
    Metric(
        name="energy_per_particle_error",
        kind="sample",
        fn=energy_per_particle_error,
        doc=(
            "|⟨U/N⟩ − ⟨U/N⟩_ref| (ε), sample means of the potential energy per particle "
            f"(tail correction included). {_LIQUID}."
        ),
        applies=is_liquid,
    )
)
_register(
    Metric(
        name="pressure_error",
        kind="sample",
        fn=pressure_error,
        doc=(
            "|⟨P⟩ − ⟨P⟩_ref| (ε/σ³), sample means of the instantaneous virial pressure "
            f"P = ρT + W/(3V) + P_tail. {_LIQUID}."
        ),
        applies=is_liquid,
    )
)
_GAUGE = (
    "U(1) gauge targets only (Kanwar et al. 2020); exact values from the character "
    "expansion (boltzbench.targets.gauge), not from the reference"
)
_register(
    Metric(
        name="plaquette_error",
        kind="sample",
        fn=plaquette_error,
        doc=(
            "|P̂ − ⟨cos θ_P⟩| with P̂ the mean of cos θ_P over the V plaquettes and the "
            f"n_eval samples, θ_P = θ_0(x) + θ_1(x+0̂) − θ_0(x+1̂) − θ_1(x); {_GAUGE}."
        ),
        applies=has_gauge,
    )
)
_register(
    Metric(
        name="chi_q_error",
        kind="sample",
        fn=chi_q_error,
        doc=(
            "Relative error |χ̂_Q − χ_Q| / χ_Q of the topological susceptibility, "
            "χ̂_Q = mean(Q²) / V over the n_eval samples (⟨Q⟩ = 0 exactly), "
            f"Q = (1/2π) Σ_P wrap(θ_P), wrap to [−π, π); {_GAUGE}."
        ),
        applies=has_gauge,
    )
)
_CHAINS = (
    "over the kept draws of MCMC chains (sample sets with n_chains and n_draws_per_chain, "
    "rows draw-major, put back in chain order; None for other methods), ESS_Q the pooled "
    "autocorrelation ESS of Q (Vehtari et al. 2021)"
)
_register(
    Metric(
        name="topo_tau_int",
        kind="sampleset",
        fn=topo_tau_int,
        doc=(
            "Integrated autocorrelation time of the topological charge, τ_int(Q) = 1/2 + "
            f"Σ_t ρ_Q(t) = rows / (2 ESS_Q), in kept draws (× thinning for steps), {_CHAINS}; "
            "∞ when no chain's Q ever changed. Its growth with β is topological freezing. "
            "U(1) gauge targets only."
        ),
        applies=has_gauge,
    )
)
_register(
    Metric(
        name="topo_ess_per_1e6_evals",
        kind="sampleset",
        fn=topo_ess_per_1e6_evals,
        doc=(
            f"ESS_Q per 10⁶ counted energy evaluations (fit + sample), {_CHAINS}: the "
            "cost-fair view of topological freezing. U(1) gauge targets only."
        ),
        better="higher",
        applies=has_gauge,
    )
)
