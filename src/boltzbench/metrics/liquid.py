"""Metrics of liquids in a periodic box: g(r), energy per particle, U/N and pressure errors.

They apply to targets with the :class:`PeriodicLiquid` hooks (the LJ liquid and
the Kob-Andersen mixture of :mod:`boltzbench.targets.liquid`). Units: lengths
in σ, energies in ε (not k_BT: U/N is the thermodynamic quantity the
equation of state gives), pressure in ε/σ³.

The radial distribution function of one configuration with N particles in a
box of volume V, from its N(N−1)/2 minimum-image pair distances, on bins of
width Δr over [0, L/2) (beyond L/2 the minimum image misses pairs):

    g(r_k) = n_k / [N(N−1)/2 · 4π ((r_k + Δr)³ − r_k³) / (3V)]

averaged over the configurations (Allen & Tildesley, Computer Simulation of
Liquids, 2nd ed., Sec. 8.2). For a mixture this is the total g(r) of all pairs.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch

from boltzbench.metrics.particles import has_particles, wasserstein_1d
from boltzbench.targets.base import Target

__all__ = [
    "RDF_BINS",
    "PeriodicLiquid",
    "is_liquid",
    "aligns",
    "radial_distribution",
    "rdf_l2",
    "energy_per_particle_w1",
    "energy_per_particle_error",
    "pressure_error",
]

#: equal-width bins of g(r) over [0, L/2)
RDF_BINS = 100


@runtime_checkable
class PeriodicLiquid(Protocol):
    """A liquid in a cubic periodic box: ``n_particles``, ``box_length`` (σ),
    ``pair_distances(x)`` (minimum image, ``(n, N(N−1)/2)``),
    ``potential_energy_per_particle(x)`` (ε, ``(n,)``) and ``pressure(x)``
    (instantaneous virial pressure, ε/σ³, ``(n,)``). Example:
    :class:`boltzbench.targets.liquid.LennardJonesLiquid`."""

    n_particles: int
    box_length: float

    def pair_distances(self, x: torch.Tensor) -> torch.Tensor: ...

    def potential_energy_per_particle(self, x: torch.Tensor) -> torch.Tensor: ...

    def pressure(self, x: torch.Tensor) -> torch.Tensor: ...


def is_liquid(target: Target) -> bool:
    """Whether ``target`` has the :class:`PeriodicLiquid` hooks."""
    return isinstance(target, PeriodicLiquid)


def aligns(target: Target) -> bool:
    """Where ``w2_aligned`` applies: particle systems in open space, whose rotations
    and permutations can be aligned away; not a periodic liquid (its box fixes the
    frame, and aligning N = 108 particles by rotation is slow)."""
    return has_particles(target) and not is_liquid(target)


def _observable(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` in float64, detached."""
    with torch.no_grad():
        return fn(x.detach().to(torch.float64)).to(torch.float64)


def radial_distribution(
    x: torch.Tensor, target: PeriodicLiquid, bins: int = RDF_BINS
) -> tuple[torch.Tensor, torch.Tensor]:
    """(bin edges ``(bins + 1,)``, g(r) ``(bins,)``) over [0, L/2) (see the module docstring)."""
    n, half = target.n_particles, target.box_length / 2
    r = _observable(target.pair_distances, x).reshape(-1)
    edges = torch.linspace(0.0, half, bins + 1, dtype=torch.float64)
    counts = torch.histc(r[r < half], bins=bins, min=0.0, max=half)
    shell = 4.0 * math.pi / 3.0 * (edges[1:] ** 3 - edges[:-1] ** 3)
    ideal = x.shape[0] * n * (n - 1) / 2 * shell / target.box_length**3
    return edges, counts / ideal


def rdf_l2(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
) -> float:
    """L2 distance sqrt(∫_0^{L/2} (g(r) − g_ref(r))² dr) (σ^{1/2}) on :data:`RDF_BINS` bins."""
    edges, g = radial_distribution(x, target)
    _, g_ref = radial_distribution(ref_x, target)
    return float(((g - g_ref) ** 2 * (edges[1] - edges[0])).sum().sqrt())


def energy_per_particle_w1(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
) -> float:
    """1-D W1 (ε) between the U/N of the samples and of the reference."""
    fn = target.potential_energy_per_particle
    return wasserstein_1d(_observable(fn, x), _observable(fn, ref_x), p=1.0)


def _mean_error(fn, x: torch.Tensor, ref_x: torch.Tensor) -> float:
    return abs(float(_observable(fn, x).mean() - _observable(fn, ref_x).mean()))


def energy_per_particle_error(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
) -> float:
    """|⟨U/N⟩ − ⟨U/N⟩_ref| (ε), sample means."""
    return _mean_error(target.potential_energy_per_particle, x, ref_x)


def pressure_error(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
) -> float:
    """|⟨P⟩ − ⟨P⟩_ref| (ε/σ³) of the virial pressure, sample means."""
    return _mean_error(target.pressure, x, ref_x)
