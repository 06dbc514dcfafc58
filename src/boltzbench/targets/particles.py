"""Particle systems with pair potentials: DW-4, LJ-13 and LJ-55.

Energies are reduced (k_BT = 1), and lengths are in the reduced units of each
paper. The potentials are invariant under translations, so a density over raw
Cartesian coordinates cannot be normalized. A configuration is held instead by
the ``(N-1)·d`` coordinates of the centre-of-mass-free subspace, in the
orthonormal Helmert basis Q of shape ``(N, N-1)`` (columns orthonormal and
orthogonal to the all-ones vector):

    P = Q Z,    Z = Qᵀ (P - 1 p̄ᵀ),

where P ``(N, d)`` holds the positions, p̄ is their centroid and Z ``(N-1, d)``
is flattened row-major to ``x``. The chart is an isometry of the centroid-free
subspace onto R^{(N-1)d}, so pairwise distances, Euclidean norms and W2
distances are preserved and the density over ``x`` is proper (for LJ, thanks
to its harmonic tether; for DW-4 the pair potential confines the distances,
which fix the configuration up to rotation and reflection).

Overlap. A row with two particles closer than
:meth:`ParticleTarget.overlap_distance` (``r_floor`` = 1e-12 reduced lengths,
raised by LJ in float32 to where r⁻¹² would overflow; coincident particles
included) gets energy ``+inf``; its gradient is finite
(only the one-body term contributes). A row with a NaN coordinate gets energy
NaN. No other row is affected: each row's pair term is computed on distances
in which a bad row's are replaced by 1 before the potential is applied, so no
NaN or infinity reaches the autograd graph of another row (the
``torch.where`` NaN-gradient trap).
"""

from __future__ import annotations

import math

import torch

from boltzbench.targets.base import Target

__all__ = ["ParticleTarget", "DoubleWell4", "LennardJones", "helmert_basis"]


def helmert_basis(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthonormal basis of the sum-zero subspace of R^n, shape ``(n, n-1)``.

    Column k (k = 1, …, n-1) of the Helmert matrix is
    ``(1, …, 1, -k, 0, …, 0) / sqrt(k (k+1))`` with k ones: each column sums
    to zero, and the columns are orthonormal.
    """
    if n < 2:
        raise ValueError(f"a particle system needs at least 2 particles, got {n}")
    k = torch.arange(1, n, dtype=dtype)  # column index k
    i = torch.arange(n, dtype=dtype)[:, None]  # row index
    q = torch.where(i < k, 1.0, torch.where(i == k, -k, 0.0))
    return q / torch.sqrt(k * (k + 1))


class ParticleTarget(Target):
    """N particles in d dimensions, with a pair potential and a one-body term.

    E(x) = (1/τ) [Σ_{i<j} u(r_ij) + V₁(P)],  with P = positions(x),

    where u is :meth:`pair_potential` and V₁ is :meth:`one_body_energy` (zero
    unless a subclass overrides it). Subclasses set the parameters and
    implement :meth:`pair_potential`; see the module docstring for the chart
    from ``x`` to positions and for the handling of overlapping particles.

    Parameters
    ----------
    n_particles
        Number of particles N.
    spatial_dim
        Spatial dimension d.
    tau
        Temperature factor τ dividing the energy (1 in the papers' runs).
    """

    translation_invariant = True
    com_treatment = (
        "x holds the (N-1)*d Helmert coordinates of the centre-of-mass-free subspace; "
        "positions(x) are Cartesian with the centroid at the origin; the CoM is removed"
    )
    #: pair distances below this (reduced length units) count as an overlap: energy +inf
    r_floor: float = 1e-12

    def __init__(self, n_particles: int, spatial_dim: int, tau: float = 1.0):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.n_particles, self.spatial_dim, self.tau = n_particles, spatial_dim, tau
        self.dim = (n_particles - 1) * spatial_dim
        k = torch.arange(1, n_particles, dtype=torch.float64)
        self.register_buffer("_k", k, persistent=False)  # Helmert column index k = 1..N-1
        self.register_buffer("_c", 1 / torch.sqrt(k * (k + 1)), persistent=False)
        i, j = torch.triu_indices(n_particles, n_particles, offset=1)
        self.register_buffer("pair_i", i, persistent=False)
        self.register_buffer("pair_j", j, persistent=False)

    #: nearest-neighbour spacing of :meth:`base_location`'s grid (subclasses set it)
    lattice_spacing: float = 1.0

    def base_location(self) -> torch.Tensor:
        """The first N points of a square/cubic grid with spacing :attr:`lattice_spacing`,
        centred, in chart coordinates: no overlaps, so samplers start at finite energy."""
        side = math.ceil(self.n_particles ** (1 / self.spatial_dim) - 1e-9)
        axes = [torch.arange(side, dtype=torch.float64)] * self.spatial_dim
        grid = torch.cartesian_prod(*axes).reshape(-1, self.spatial_dim)[: self.n_particles]
        return self.coordinates(self.lattice_spacing * grid[None])[0]

    def invariant_features(self, x: torch.Tensor) -> torch.Tensor:
        """The sorted interatomic distances, shape ``(n, N(N-1)/2)``: invariant under
        rotations, reflections and permutations, like the density. MCMC references
        check their R̂ on these rather than on the coordinates."""
        return self.pair_distances(x).sort(dim=-1).values

    # -- the chart ---------------------------------------------------------------
    def positions(self, x: torch.Tensor) -> torch.Tensor:
        """Cartesian positions P = Q Z with centroid 0, shape ``(n, N, d)``.

        ``x`` has shape ``(n, dim)`` with dim = (N-1)·d. With the Helmert columns
        (see :func:`helmert_basis`) and c_k = 1/sqrt(k(k+1)), this is
        p_i = Σ_{k>i} c_k z_k - i c_i z_i: a reversed cumulative sum, O(N d), whose
        result for a row does not depend on the other rows of the batch.
        """
        z = x.reshape(x.shape[0], self.n_particles - 1, self.spatial_dim)
        w = z * self._c.to(x)[:, None]  # c_k z_k, k = 1..N-1
        tail = w.flip(1).cumsum(1).flip(1)  # tail[:, k-1] = Σ_{k' ≥ k} c_k' z_k'
        zero = torch.zeros_like(w[:, :1])
        own = self._k.to(x)[:, None] * w  # k c_k z_k
        return torch.cat([tail, zero], dim=1) - torch.cat([zero, own], dim=1)

    def coordinates(self, positions: torch.Tensor) -> torch.Tensor:
        """Chart coordinates x = Qᵀ (P - p̄), shape ``(n, dim)``.

        ``positions`` has shape ``(n, N, d)``; the centroid p̄ is removed first.
        Column k of Qᵀ P is z_k = c_k (Σ_{i<k} p_i - k p_k), a cumulative sum.
        """
        p = positions - positions.mean(dim=1, keepdim=True)
        k, c = self._k.to(p)[:, None], self._c.to(p)[:, None]
        z = c * (p.cumsum(1)[:, :-1] - k * p[:, 1:])
        return z.reshape(positions.shape[0], self.dim)

    # -- distances ---------------------------------------------------------------
    def _pair_sq_distances(self, positions: torch.Tensor) -> torch.Tensor:
        """Squared distances r_ij² for i < j (row-major pair order), shape ``(n, N(N-1)/2)``."""
        diff = positions[:, self.pair_j] - positions[:, self.pair_i]
        return diff.pow(2).sum(-1)

    def pair_distances(self, x: torch.Tensor) -> torch.Tensor:
        """Distances r_ij for i < j, in the order of ``torch.triu_indices(N, N, 1)``.

        Shape ``(n, N(N-1)/2)`` for ``x`` of shape ``(n, dim)``. The gradient of a
        zero distance is NaN (that of sqrt at 0); :meth:`energy` does not use this.
        """
        return torch.sqrt(self._pair_sq_distances(self.positions(x)))

    # -- energy ------------------------------------------------------------------
    def overlap_distance(self, dtype: torch.dtype) -> float:
        """Pair distance below which a row counts as an overlap (energy +inf)."""
        return self.r_floor

    def pair_potential(self, r: torch.Tensor) -> torch.Tensor:
        """Pair potential u(r), elementwise, before the 1/τ factor."""
        raise NotImplementedError

    def one_body_energy(self, positions: torch.Tensor) -> torch.Tensor:
        """One-body term V₁(P), shape ``(n,)``; zero unless overridden."""
        return positions.new_zeros(positions.shape[0])

    def pair_energy(self, positions: torch.Tensor) -> torch.Tensor:
        """Σ_{i<j} u(r_ij) per row, shape ``(n,)``, before the 1/τ factor.

        A row with a pair closer than :meth:`overlap_distance` gets ``+inf`` and a
        zero gradient; a row with a NaN position gets NaN. Other rows are unaffected.
        """
        r2 = self._pair_sq_distances(positions)
        # NaN compares False: a NaN row is no overlap and stays NaN
        overlap = (r2 < self.overlap_distance(r2.dtype) ** 2).any(-1)
        safe_r2 = torch.where(overlap[:, None], torch.ones_like(r2), r2)
        e = self.pair_potential(torch.sqrt(safe_r2)).sum(-1)
        return torch.where(overlap, torch.full_like(e, math.inf), e)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) = (1/τ) [Σ_{i<j} u(r_ij) + V₁(P)] in k_BT, shape ``(n,)``."""
        pos = self.positions(x)
        return (self.pair_energy(pos) + self.one_body_energy(pos)) / self.tau

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return f"n_particles={self.n_particles}, spatial_dim={self.spatial_dim}, {base}"


class DoubleWell4(ParticleTarget):
    """DW-4: four particles in 2-D with a double-well pair potential.

    E(x) = (1/τ) Σ_{i<j} [a (r_ij - d0)⁴ + b (r_ij - d0)² + c]

    with a = 0.9, b = -4, c = 0, d0 = 4, τ = 1 (Köhler, Klein & Noé 2020,
    "Equivariant flows: exact likelihood generative learning for symmetric
    densities", ICML, Sec. 6). The paper writes it as
    (1/(2τ)) Σ_{i,j} [a' (d_ij - d0) + b' (d_ij - d0)² + c' (d_ij - d0)⁴], a sum over
    ordered pairs with a' = 0, b' = -4, c' = 0.9: the same energy, since each
    unordered pair appears twice; the i<j form with (a, b, c) = (0.9, -4, 0) is
    the one of the bgflow ``MultiDoubleWellPotential`` used by later work (FAB,
    Midgley et al. 2023; iDEM, Akhound-Sadegh et al. 2024). Each pair term has its
    minima at r = d0 ± sqrt(-b / (2a)) ≈ 2.509 and 5.491.

    Parameters
    ----------
    a
        Quartic coefficient (k_BT per length⁴).
    b
        Quadratic coefficient (k_BT per length²).
    c
        Constant per pair (k_BT).
    d0
        Distance offset of the double well (reduced length).
    tau
        Temperature factor τ.
    """

    description = "DW-4: 4 particles in 2-D, pairwise double well (Köhler et al. 2020)"

    def __init__(
        self, a: float = 0.9, b: float = -4.0, c: float = 0.0, d0: float = 4.0, tau: float = 1.0
    ):
        super().__init__(n_particles=4, spatial_dim=2, tau=tau)
        self.a, self.b, self.c, self.d0 = a, b, c, d0
        self.lattice_spacing = d0

    def pair_potential(self, r: torch.Tensor) -> torch.Tensor:
        """u(r) = a (r - d0)⁴ + b (r - d0)² + c."""
        s = (r - self.d0) ** 2
        return self.a * s**2 + self.b * s + self.c


class LennardJones(ParticleTarget):
    """A Lennard-Jones cluster with a harmonic tether to its centroid (LJ-13, LJ-55).

    E(x) = (1/τ) [ε Σ_{i<j} ((r_m/r_ij)¹² - 2 (r_m/r_ij)⁶) + tether Σ_i ‖x_i - x̄‖²]

    with ε = 1, r_m = 1, tether = 0.5, τ = 1 (Köhler, Klein & Noé 2020, Sec. 6;
    Midgley et al. 2023, "SE(3) equivariant augmented coupling flows", NeurIPS,
    trained with FAB; LJ-55 as in iDEM, Akhound-Sadegh et al. 2024). The pair term
    has its minimum -ε at r = r_m, and the tether is the "harmonic oscillator"
    ½ Σ_i ‖x_i - x̄‖² of those papers. The sum runs over unordered pairs i < j, each
    pair once (some public code sums the ordered pairs without halving, which
    doubles the pair term). In the Helmert chart
    Σ_i ‖x_i - x̄‖² = ‖x‖², so the tether is an isotropic Gaussian factor on x.

    Parameters
    ----------
    n_particles
        Number of particles: 13 for LJ-13, 55 for LJ-55.
    epsilon
        Well depth ε (k_BT).
    r_m
        Distance of the pair minimum (reduced length), r_m = 2^{1/6} σ.
    tether
        Spring constant of the tether to the centroid (k_BT per length²).
    tau
        Temperature factor τ.
    spatial_dim
        Spatial dimension d.
    """

    def __init__(
        self,
        n_particles: int = 13,
        epsilon: float = 1.0,
        r_m: float = 1.0,
        tether: float = 0.5,
        tau: float = 1.0,
        spatial_dim: int = 3,
    ):
        super().__init__(n_particles=n_particles, spatial_dim=spatial_dim, tau=tau)
        self.epsilon, self.r_m, self.tether = epsilon, r_m, tether
        self.lattice_spacing = r_m
        self.description = (
            f"LJ-{n_particles}: Lennard-Jones cluster in {spatial_dim}-D with a harmonic "
            f"tether {tether} to the centroid (Köhler et al. 2020)"
        )

    def pair_potential(self, r: torch.Tensor) -> torch.Tensor:
        """u(r) = ε ((r_m/r)¹² - 2 (r_m/r)⁶)."""
        s6 = (self.r_m / r) ** 6
        return self.epsilon * s6 * (s6 - 2)  # not s6² - 2 s6, which is inf - inf on overflow

    def overlap_distance(self, dtype: torch.dtype) -> float:
        """max(r_floor, r_m · f^(-1/14)) with f the largest float of ``dtype``.

        Below it (r_m/r)¹² or its derivative would overflow: 1.8e-3 r_m in float32,
        where u > 1e33 ε already; 1e-12 (the floor) in float64.
        """
        return max(self.r_floor, self.r_m * torch.finfo(dtype).max ** (-1 / 14))

    def one_body_energy(self, positions: torch.Tensor) -> torch.Tensor:
        """tether · Σ_i ‖x_i - x̄‖², shape ``(n,)``."""
        centred = positions - positions.mean(dim=1, keepdim=True)
        return self.tether * centred.pow(2).sum(dim=(1, 2))
