"""Observables of the φ⁴ lattice field: magnetization and two-point susceptibility.

Definitions of Albergo, Kanwar & Shanahan 2019 (arXiv:1904.12072, Sec. IV) as
used in the tutorial of Albergo et al. 2021 (arXiv:2101.08176), for a field
φ on a periodic lattice Λ of V sites (a torus, so y + x wraps):

    M = (1/V) Σ_x φ(x)                                            (per configuration)
    G_c(x) = (1/V) Σ_y [⟨φ(y) φ(y+x)⟩ − ⟨φ(y)⟩⟨φ(y+x)⟩]
    χ₂ = Σ_x G_c(x)

Lattice targets expose ``lattice_shape`` (e.g. ``(L, L)``) and
``field(x) -> (n, *lattice_shape)``. φ is dimensionless (lattice units).
"""

from __future__ import annotations

import math

import torch

from boltzbench.metrics.particles import wasserstein_1d
from boltzbench.targets.base import LatticeField, Target

__all__ = [
    "has_lattice",
    "magnetization",
    "connected_two_point",
    "susceptibility",
    "magnetization_w1",
    "susceptibility_error",
]


def has_lattice(target: Target) -> bool:
    """Whether ``target`` is a lattice field (the
    :class:`~boltzbench.targets.base.LatticeField` hooks)."""
    return isinstance(target, LatticeField)


def _fields(x: torch.Tensor, target: Target) -> torch.Tensor:
    """``target.field(x)`` in float64, detached, shape ``(n, *lattice_shape)``."""
    with torch.no_grad():
        return target.field(x.detach().to(torch.float64)).to(torch.float64)


def magnetization(phi: torch.Tensor) -> torch.Tensor:
    """M = (1/V) Σ_x φ(x) of each configuration: ``phi`` ``(n, *lattice)`` → ``(n,)``."""
    return phi.reshape(phi.shape[0], -1).mean(dim=1)


def connected_two_point(phi: torch.Tensor) -> torch.Tensor:
    """G_c(x) on a periodic lattice, shape ``lattice`` (see the module docstring).

    The expectations ⟨·⟩ are sample means over the n configurations of
    ``phi`` ``(n, *lattice)`` (1/n, no Bessel correction); y + x wraps around
    every lattice direction. Computed by FFT: for each configuration the
    circular autocorrelation Σ_y φ(y) φ(y+x) is IFFT(|FFT φ|²), and likewise for
    the mean field. O(n V log V).
    """
    dims = tuple(range(1, phi.ndim))
    f = torch.fft.fftn(phi, dim=dims)
    corr = torch.fft.ifftn(f.conj() * f, dim=dims).real.mean(dim=0)
    fm = torch.fft.fftn(phi.mean(dim=0))
    corr_mean = torch.fft.ifftn(fm.conj() * fm).real
    return (corr - corr_mean) / math.prod(phi.shape[1:])


def susceptibility(phi: torch.Tensor) -> float:
    """Two-point susceptibility χ₂ = Σ_x G_c(x) of the configurations ``phi`` ``(n, *lattice)``.

    Summing G_c over all shifts x of the torus gives χ₂ = V (⟨M²⟩ − ⟨M⟩²),
    which is what is computed (sample means, 1/n; the same number as
    ``connected_two_point(phi).sum()`` up to rounding).
    """
    m = magnetization(phi)
    volume = math.prod(phi.shape[1:])
    return float(volume * ((m * m).mean() - m.mean() ** 2))


def magnetization_w1(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
) -> float:
    """1-D W1 between the signed magnetizations M of the samples and of the reference.

    Signed M, not |M|: φ⁴ is Z2-symmetric (φ → −φ), so in the broken phase
    the reference M is bimodal at ±|M|; a sampler that collapses onto one sign
    (the usual failure of flows there) scores W1 ≈ |M| here, while |M| would
    hide it. See :func:`~boltzbench.metrics.particles.wasserstein_1d`.
    """
    m = magnetization(_fields(x, target))
    return wasserstein_1d(m, magnetization(_fields(ref_x, target)), p=1.0)


def susceptibility_error(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
) -> float:
    """Relative error |χ₂(samples) − χ₂(ref)| / |χ₂(ref)| (see :func:`susceptibility`).

    Infinite when χ₂(ref) = 0 and χ₂(samples) ≠ 0, 0 when both are 0.
    """
    chi, chi_ref = susceptibility(_fields(x, target)), susceptibility(_fields(ref_x, target))
    if chi_ref == 0.0:
        return 0.0 if chi == 0.0 else math.inf
    return abs(chi - chi_ref) / abs(chi_ref)
