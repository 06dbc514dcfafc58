"""Liquids in a cubic periodic box: the Lennard-Jones fluid and the Kob-Andersen mixture.

Units are reduced (σ = ε = k_B = m = 1 of the A-A interaction): lengths in σ,
energies in ε, temperature T* = k_BT/ε, density ρ* = Nσ³/V, pressure P* = Pσ³/ε.
The target's energy is in k_BT: E(x) = U(x) / T*.

Coordinates
-----------
N particles in a cubic box of side L = (N/ρ*)^{1/3}, periodic in every
direction. Translations of all particles together are a symmetry (the torus
T³), removed by **fixing particle 0 at the origin**: ``x`` holds the
fractional (box-unit) coordinates s_i of particles 1..N-1, flattened row-major,
dim = 3(N-1), and the Cartesian position of particle i is L·wrap(s_i) with
wrap(s) = s − ⌊s + ½⌋ ∈ [−½, ½)³ (particle 0 at 0). Why not the centroid, as
the cluster targets do (:mod:`boltzbench.targets.particles`): on a torus the
centroid of wrapped positions jumps when a particle crosses the boundary, so
the Helmert chart is not periodic; fixing one particle is the exact quotient by
the translation group (Jacobian 1) and keeps the energy periodic in x.

The energy is periodic with period 1 in every coordinate of ``x``: the density
is a proper density on the torus [−½, ½)^dim, and on R^dim it repeats (it is not
normalizable there; log Z is unknown anyway). Every x is a valid configuration,
so samplers started with any spread see finite energies; samples are read
modulo 1 (``positions`` and ``pair_distances`` wrap them), and the MCMC
reference checks R̂ on periodic-invariant statistics (U/N and P,
:meth:`PeriodicPairSystem.invariant_features`), never on raw x.

Pair sums
---------
Pair separations use the minimum image, d = s_j − s_i − round(s_j − s_i) (the
rounding has zero gradient, so forces are exact). When every cutoff is at most
L/2 the minimum image is the only image within the cutoff; otherwise (small
Kob-Andersen boxes) the sum also runs over the 26 neighbouring images, which
holds while the cutoff is below L (checked).

Why an own torch energy rather than openmmtools' ``LennardJonesFluid``:
gradient-based samplers (MALA, HMC, diffusion samplers, flows trained by
reverse KL) need a batched, differentiable E(x) in torch; an OpenMM context
evaluates one configuration at a time on its own platform, with no autograd.
OpenMM is the cross-check instead: ``tests/test_liquid.py`` builds the same
system as an OpenMM ``NonbondedForce`` (``CutoffPeriodic``, dispersion
correction on) and checks both energies agree to 1e-6 relative on random
configurations.
"""

from __future__ import annotations

import math

import torch

from boltzbench.targets.base import Target

__all__ = [
    "PeriodicPairSystem",
    "LennardJonesLiquid",
    "KobAndersenMixture",
    "lj_tail_energy",
    "lj_tail_pressure",
    "wrap",
]


def wrap(s: torch.Tensor) -> torch.Tensor:
    """s − ⌊s + ½⌋: fractional coordinates wrapped into [−½, ½) (elementwise)."""
    return s - torch.floor(s + 0.5)


def lj_tail_energy(density: float, cutoff: float) -> float:
    """Tail correction per particle of the 12-6 LJ potential truncated at r_c (ε = σ = 1).

    u_tail = 2πρ ∫_{r_c}^∞ r² u(r) dr = (8/3) πρ [(1/3) r_c⁻⁹ − r_c⁻³], with g(r) = 1
    beyond r_c (Allen & Tildesley, Computer Simulation of Liquids, 2nd ed., eq. 2.143).
    """
    return 8.0 / 3.0 * math.pi * density * (cutoff**-9 / 3.0 - cutoff**-3)


def lj_tail_pressure(density: float, cutoff: float) -> float:
    """Tail correction of the pressure: P_tail = −(2/3) πρ² ∫_{r_c}^∞ r³ u'(r) dr
    = (16/3) πρ² [(2/3) r_c⁻⁹ − r_c⁻³] (Allen & Tildesley, eq. 2.144)."""
    return 16.0 / 3.0 * math.pi * density**2 * (2.0 / 3.0 * cutoff**-9 - cutoff**-3)


class PeriodicPairSystem(Target):
    """N particles in a cubic periodic box with 12-6 LJ pair potentials (see the module docstring).

    U(x) = Σ_{i<j} Σ_images u_ij(r) [r < r_c,ij] + N u_tail,
    u_ij(r) = 4ε_ij [(σ_ij/r)¹² − (σ_ij/r)⁶] − shift_ij,

    with the per-pair ε_ij, σ_ij, r_c,ij and shift_ij given by the subclass
    (:meth:`_pair_table`) and a constant tail term u_tail per particle.
    E(x) = U(x)/T* in k_BT. A row with two particles (or images) closer than
    ``r_floor`` gets energy +inf with a finite gradient, as for the cluster targets.

    Parameters
    ----------
    n_particles
        N.
    density
        ρ* = N σ³ / V.
    temperature
        T* = k_BT / ε.
    """

    r_floor: float = 1e-6
    com_treatment = (
        "particle 0 is fixed at the origin; x holds the fractional coordinates of particles "
        "1..N-1 relative to it (periodic with period 1: read modulo 1)"
    )
    spatial_dim = 3

    def __init__(self, n_particles: int, density: float, temperature: float):
        super().__init__()
        if n_particles < 2 or density <= 0 or temperature <= 0:
            raise ValueError(
                f"need n_particles >= 2, density > 0, temperature > 0; got {n_particles}, "
                f"{density}, {temperature}"
            )
        self.n_particles, self.density, self.temperature = n_particles, density, temperature
        self.dim = 3 * (n_particles - 1)
        self.box_length = (n_particles / density) ** (1.0 / 3.0)
        self.volume = self.box_length**3
        i, j = torch.triu_indices(n_particles, n_particles, offset=1)
        self.register_buffer("pair_i", i, persistent=False)
        self.register_buffer("pair_j", j, persistent=False)
        eps, sig, cut, shift = self._pair_table(i, j)
        if float(cut.max()) >= self.box_length:
            cmax = float(cut.max())
            raise ValueError(f"a cutoff {cmax:.4g} ≥ the box side {self.box_length:.4g}")
        for name, v in (("_eps", eps), ("_sig2", sig**2), ("_cut2", cut**2), ("_shift", shift)):
            self.register_buffer(name, v.to(torch.float64), persistent=False)
        self.register_buffer("_images", self._image_shifts(float(cut.max())), persistent=False)

    # -- subclass hooks ----------------------------------------------------------
    def _pair_table(self, i: torch.Tensor, j: torch.Tensor):
        """(ε_ij, σ_ij, r_c,ij, shift_ij) of the pairs (i, j), each shape ``(P,)``."""
        raise NotImplementedError

    def tail_energy(self) -> float:
        """Tail correction per particle u_tail (ε); 0 unless overridden."""
        return 0.0

    def tail_pressure(self) -> float:
        """Tail correction of the pressure (ε/σ³); 0 unless overridden."""
        return 0.0

    # -- geometry ----------------------------------------------------------------
    def _image_shifts(self, cutoff: float) -> torch.Tensor:
        """Integer image shifts n ``(K, 3)`` that can hold a separation below ``cutoff``:
        only (0, 0, 0) when cutoff ≤ L/2, else the 27 of {−1, 0, 1}³."""
        if cutoff <= self.box_length / 2:
            return torch.zeros(1, 3, dtype=torch.float64)
        r = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
        return torch.cartesian_prod(r, r, r)

    def fractional(self, x: torch.Tensor) -> torch.Tensor:
        """Fractional coordinates of all N particles, unwrapped, ``(n, N, 3)`` (row 0 = 0)."""
        s = x.reshape(x.shape[0], self.n_particles - 1, 3)
        return torch.cat([torch.zeros_like(s[:, :1]), s], dim=1)

    def positions(self, x: torch.Tensor) -> torch.Tensor:
        """Cartesian positions L·wrap(s) in [−L/2, L/2)³ (σ), shape ``(n, N, 3)``."""
        return self.box_length * wrap(self.fractional(x))

    def _separations(self, x: torch.Tensor) -> torch.Tensor:
        """Minimum-image separations s_j − s_i − round(s_j − s_i) (box units), ``(n, P, 3)``."""
        s = self.fractional(x)
        d = s[:, self.pair_j] - s[:, self.pair_i]
        return d - torch.round(d)

    def _image_sq_distances(self, x: torch.Tensor) -> torch.Tensor:
        """r² of every pair and image, ``(n, P, K)`` (σ²)."""
        d = self._separations(x)[:, :, None, :] + self._images.to(x)
        return (self.box_length**2) * d.pow(2).sum(-1)

    def pair_distances(self, x: torch.Tensor) -> torch.Tensor:
        """Minimum-image distances r_ij (σ) for i < j in ``torch.triu_indices`` order,
        shape ``(n, N(N−1)/2)``."""
        return self.box_length * self._separations(x).pow(2).sum(-1).sqrt()

    # -- energy and virial -------------------------------------------------------
    def _masked(self, r2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(σ²/r²)³ on pairs inside the cutoff, the inside mask, and each row's overlap flag."""
        overlap = (r2 < self.r_floor**2).flatten(1).any(-1)
        inside = r2 < self._cut2.to(r2)[:, None]
        safe = torch.where(inside & ~overlap[:, None, None], r2, torch.ones_like(r2))
        s6 = (self._sig2.to(r2)[:, None] / safe) ** 3
        return s6, inside, overlap

    def pair_energy(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_{pairs, images, r < r_c} u_ij(r) per row (ε), shape ``(n,)``; +inf on overlap."""
        s6, inside, overlap = self._masked(self._image_sq_distances(x))
        eps, shift = self._eps.to(s6)[:, None], self._shift.to(s6)[:, None]
        u = torch.where(inside, 4 * eps * s6 * (s6 - 1) - shift, torch.zeros_like(s6))
        e = u.flatten(1).sum(-1)
        return torch.where(overlap, torch.full_like(e, math.inf), e)

    def potential_energy(self, x: torch.Tensor) -> torch.Tensor:
        """U(x) = pair sum + N u_tail (ε), shape ``(n,)``."""
        return self.pair_energy(x) + self.n_particles * self.tail_energy()

    def potential_energy_per_particle(self, x: torch.Tensor) -> torch.Tensor:
        """U(x)/N (ε), shape ``(n,)``: the excess internal energy per particle."""
        return self.potential_energy(x) / self.n_particles

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) = U(x)/T* in k_BT, shape ``(n,)``."""
        return self.potential_energy(x) / self.temperature

    def virial(self, x: torch.Tensor) -> torch.Tensor:
        """W = Σ r·f = Σ_{r < r_c} 24 ε_ij [2 (σ_ij/r)¹² − (σ_ij/r)⁶] (ε), shape ``(n,)``."""
        s6, inside, _ = self._masked(self._image_sq_distances(x))
        w = torch.where(inside, 24 * self._eps.to(s6)[:, None] * s6 * (2 * s6 - 1), 0 * s6)
        return w.flatten(1).sum(-1)

    def pressure(self, x: torch.Tensor) -> torch.Tensor:
        """Instantaneous virial pressure P* = ρT* + W/(3V) + P_tail (ε/σ³), shape ``(n,)``.

        Its NVT average is the pressure (Allen & Tildesley, eq. 2.61); the kinetic
        part ρT* is exact. Truncated and not shifted, the sampled system's own
        pressure would also carry the impulsive term of the step at r_c; the tail
        correction instead estimates the full potential's pressure from the
        structure below r_c, as the tail energy does (Frenkel & Smit, Sec. 3.2.2).
        """
        return (
            self.density * self.temperature
            + self.virial(x) / (3 * self.volume)
            + (self.tail_pressure())
        )

    def invariant_features(self, x: torch.Tensor) -> torch.Tensor:
        """(U/N, P*) of each row, shape ``(n, 2)``: periodic- and permutation-invariant, the
        statistics on which an MCMC reference checks its R̂."""
        return torch.stack([self.potential_energy_per_particle(x), self.pressure(x)], dim=-1)

    def base_location(self) -> torch.Tensor:
        """A cubic grid of m³ cells (m = ⌈N^{1/3}⌉) filled in order, shifted so that
        particle 0 sits at the origin: no overlaps, so samplers start at finite energy."""
        m = math.ceil(self.n_particles ** (1 / 3) - 1e-9)
        axis = torch.arange(m, dtype=torch.float64) / m
        grid = torch.cartesian_prod(axis, axis, axis)[: self.n_particles]
        return wrap(grid[1:] - grid[0]).reshape(-1)

    def extra_repr(self) -> str:
        return (
            f"n_particles={self.n_particles}, density={self.density}, "
            f"temperature={self.temperature}, box_length={self.box_length:.4f}"
        )


class LennardJonesLiquid(PeriodicPairSystem):
    """The 12-6 Lennard-Jones fluid at (ρ*, T*), truncated (not shifted) at r_c, tail-corrected.

    u(r) = 4[(1/r)¹² − (1/r)⁶] for r < r_c, 0 beyond (ε = σ = 1); the analytic tail
    corrections :func:`lj_tail_energy` and :func:`lj_tail_pressure` (g = 1 beyond r_c)
    are added to U and P, so U/N and P estimate the full potential's and compare with
    the JZG equation of state (:mod:`boltzbench.physics.lj_eos`). Needs r_c ≤ L/2:
    the minimum image only. The defaults, N = 108 at T* = 2.0, ρ* = 0.5 (L = 6σ), are a
    supercritical fluid that equilibrates in a few hundred HMC steps; JZG give
    U/N = −3.145, P* = 1.077 there.

    Parameters
    ----------
    n_particles
        N.
    density
        ρ* = Nσ³/V.
    temperature
        T* = k_BT/ε.
    cutoff
        r_c (σ), at most L/2.
    """

    def __init__(
        self,
        n_particles: int = 108,
        density: float = 0.5,
        temperature: float = 2.0,
        cutoff: float = 2.5,
    ):
        self.cutoff = cutoff
        super().__init__(n_particles, density, temperature)
        if cutoff > self.box_length / 2:
            raise ValueError(
                f"cutoff {cutoff} > L/2 = {self.box_length / 2:.4g}: the minimum image "
                "needs more particles or a smaller cutoff"
            )
        self.description = (
            f"LJ liquid: {n_particles} Lennard-Jones particles in a periodic box, "
            f"ρ*={density}, T*={temperature}, r_c={cutoff}σ + tail corrections"
        )

    def _pair_table(self, i: torch.Tensor, j: torch.Tensor):
        ones = torch.ones(i.shape[0], dtype=torch.float64)
        return ones, ones, self.cutoff * ones, 0 * ones

    def tail_energy(self) -> float:
        return lj_tail_energy(self.density, self.cutoff)

    def tail_pressure(self) -> float:
        return lj_tail_pressure(self.density, self.cutoff)


class KobAndersenMixture(PeriodicPairSystem):
    """The Kob-Andersen 80:20 binary LJ mixture, a model supercooled liquid.

    W. Kob and H. C. Andersen, Phys. Rev. E 51, 4626 (1995): particles 0..N_A−1 are
    A, the rest B (N_A = round(0.8 N)); ε_AA = 1, ε_AB = 1.5, ε_BB = 0.5,
    σ_AA = 1, σ_AB = 0.8, σ_BB = 0.88, masses 1; each pair truncated and shifted
    at r_c = 2.5 σ_αβ (so no tail correction). ρ* = 1.2; the mode-coupling
    temperature is T_MCT ≈ 0.435 for large N. At small N (the default 64: L = 3.76σ
    < 2r_c) the sum runs over the neighbouring images, not the minimum image only.

    Parameters
    ----------
    n_particles
        N.
    density
        ρ* = Nσ_AA³/V.
    temperature
        T* = k_BT/ε_AA.
    fraction_a
        Fraction of A particles.
    """

    EPSILON = {"AA": 1.0, "AB": 1.5, "BB": 0.5}
    SIGMA = {"AA": 1.0, "AB": 0.8, "BB": 0.88}
    CUTOFF = 2.5

    def __init__(
        self,
        n_particles: int = 64,
        density: float = 1.2,
        temperature: float = 0.8,
        fraction_a: float = 0.8,
    ):
        self.n_a = round(fraction_a * n_particles)
        super().__init__(n_particles, density, temperature)
        self.description = (
            f"Kob-Andersen 80:20 LJ mixture: {self.n_a} A + {n_particles - self.n_a} B in a "
            f"periodic box, ρ*={density}, T*={temperature} (Kob & Andersen 1995)"
        )

    def _pair_table(self, i: torch.Tensor, j: torch.Tensor):
        kind = (i >= self.n_a).long() + (j >= self.n_a).long()  # 0 AA, 1 AB, 2 BB
        eps = torch.tensor([self.EPSILON[k] for k in ("AA", "AB", "BB")], dtype=torch.float64)
        sig = torch.tensor([self.SIGMA[k] for k in ("AA", "AB", "BB")], dtype=torch.float64)
        cut = self.CUTOFF * sig
        shift = 4 * eps * (self.CUTOFF**-12 - self.CUTOFF**-6)
        return eps[kind], sig[kind], cut[kind], shift[kind]

    def species(self) -> torch.Tensor:
        """0 for A, 1 for B, shape ``(N,)``."""
        return (torch.arange(self.n_particles) >= self.n_a).long()
