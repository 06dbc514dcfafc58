"""The target interface: a density p(x) = exp(-E(x)) / Z known up to Z.

Energies are reduced, in units of k_BT. ``energy`` is a batched torch function
of ``x`` with shape ``(n, dim)`` returning shape ``(n,)``, so gradients come from
autograd.

Beyond that interface a target may offer **optional hooks**, each declared
below as a :class:`typing.Protocol` (checked with ``isinstance``, never with
``hasattr``) and listed on :class:`Target`: :class:`ParticleSystem`,
:class:`LatticeField`, :class:`Molecule`, :class:`InvariantFeatures`,
:class:`DescribesCOM`, :class:`MDSystem` and :class:`PeriodicCoordinates`. A
target that provides a hook gets the metrics, figures and reference checks that
need it.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = [
    "Target",
    "ShiftedTarget",
    "ParticleSystem",
    "ParticleChart",
    "LatticeField",
    "Molecule",
    "InvariantFeatures",
    "DescribesCOM",
    "MDSystem",
    "PeriodicCoordinates",
    "periodic_everywhere",
    "wrap_angle",
    "wrap_periodic",
]


def wrap_angle(x: torch.Tensor) -> torch.Tensor:
    """Angles (radians, any shape) to the canonical [−π, π) of
    :class:`PeriodicCoordinates`: x − 2π ⌊(x + π) / 2π⌋.

    π maps to −π (the same point); the gradient is 1 everywhere.
    """
    y = torch.remainder(x + math.pi, 2 * math.pi) - math.pi
    return torch.where(y >= math.pi, y - 2 * math.pi, y)  # remainder may round up to 2π


@runtime_checkable
class ParticleSystem(Protocol):
    """``n_particles`` identical particles in ``spatial_dim`` dimensions.

    ``positions(x)`` maps ``(n, dim)`` to Cartesian positions ``(n, n_particles,
    spatial_dim)`` and ``pair_distances(x)`` gives the ``(n, n_particles
    (n_particles - 1) / 2)`` interatomic distances (target length units). Gives the particle
    metrics (distance TV/W2, aligned W2, energy W2), the distance figure and
    flow matching's E(n)-equivariant field. Example:
    :class:`boltzbench.targets.ParticleTarget`.
    """

    n_particles: int
    spatial_dim: int

    def positions(self, x: torch.Tensor) -> torch.Tensor: ...

    def pair_distances(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ParticleChart(ParticleSystem, Protocol):
    """A :class:`ParticleSystem` whose chart can be inverted: ``coordinates(positions)``
    maps ``(n, n_particles, spatial_dim)`` positions back to ``(n, dim)`` rows, so that
    ``coordinates(positions(x)) == x``. Gives flow matching's E(n)-equivariant field
    (which moves positions) and the particle perturbation of the metric conformance
    checker. Example: :class:`boltzbench.targets.ParticleTarget`."""

    def coordinates(self, positions: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class LatticeField(Protocol):
    """A scalar field on a periodic lattice of ``lattice_shape`` sites
    (``prod(lattice_shape) == dim``); ``field(x)`` has shape ``(n, *lattice_shape)``.
    Gives the magnetization and susceptibility metrics and the magnetization
    figure. Example: :class:`boltzbench.targets.Phi4`."""

    lattice_shape: tuple[int, ...]

    def field(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Molecule(Protocol):
    """A molecule: ``mdtraj_topology`` (an ``mdtraj.Topology``) and ``positions(x)``,
    shape ``(n, n_atoms, 3)`` in nm. Gives the torsion metrics (Ramachandran
    KL/JS, torsion KL, torus W2, chirality), the Ramachandran figure and the
    dihedral R̂ of an MD reference. Example: alanine dipeptide (``kind: aldp``)."""

    mdtraj_topology: Any

    def positions(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class InvariantFeatures(Protocol):
    """``invariant_features(x)``: features of ``(n, dim)`` rows invariant under the
    target's symmetries (e.g. sorted pair distances), shape ``(n, k)``; an MCMC
    reference checks its chains' mixing (R̂) on them instead of on ``x``."""

    def invariant_features(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class DescribesCOM(Protocol):
    """``com_treatment``: a sentence on what the coordinates do about the centre
    of mass and rigid-body motion, stored with the reference samples."""

    com_treatment: str


@runtime_checkable
class MDSystem(Protocol):
    """A molecular system OpenMM can simulate: ``solvent`` and ``temperature_K``;
    needed by the ``md`` reference kind."""

    solvent: str
    temperature_K: float


@runtime_checkable
class PeriodicCoordinates(Protocol):
    """``periodic_mask``: a bool tensor of shape ``(dim,)``, True for the coordinates
    that are angles of period 2π.

    Each such coordinate's canonical domain is [−π, π) and the density is one on
    the circle there: E extends to a 2π-periodic function of it (E(−π) = E(π),
    smoothly), so an angle wrapped into [−π, π) keeps its energy. Outside the
    canonical domain a target may evaluate periodically or return +inf (alanine
    dipeptide does, so that a density on the real line, an interval flow, keeps
    unbiased weights: mass it puts outside [−π, π] gets weight 0). A target with
    no periodic coordinate may set an all-False mask. Gives the flow family's
    circular transforms (``periodic: auto``; Rezende et al. 2020), the MCMC
    reference's wrapping of its draws and the periodic Stein check. Examples:
    alanine dipeptide in internal coordinates (its 19 dihedrals), the U(1) gauge
    links (all of them).

    An optional member, ``periodic_everywhere = True``, says the energy is
    periodic on all of ℝ (U(1)) rather than +inf outside (alanine dipeptide);
    see :func:`periodic_everywhere`."""

    periodic_mask: torch.Tensor


def periodic_everywhere(target: Any) -> bool:
    """Whether ``target`` (or the target a wrapper forwards to) declares
    :class:`PeriodicCoordinates` whose energy is 2π-periodic on all of ℝ
    (``periodic_everywhere = True``).

    Then e^{−E} has no finite integral over ℝ^dim: a sampler that moves in ℝ^dim
    samples the target only once its draws are wrapped into [−π, π)
    (:func:`wrap_periodic`), and importance weights against e^{−E} mean
    something only from a density on the torus (a circular flow), not from a
    density on ℝ^dim (SMC, diffusions, an interval flow).
    """
    return isinstance(target, PeriodicCoordinates) and bool(
        getattr(target, "periodic_everywhere", False)
    )


def wrap_periodic(target: Any, x: torch.Tensor) -> torch.Tensor:
    """``x`` with ``target``'s periodic coordinates wrapped into [−π, π)
    (:func:`wrap_angle`); ``x`` itself for a target without them."""
    mask = target.periodic_mask if isinstance(target, PeriodicCoordinates) else None
    if mask is None or not bool(mask.any()):
        return x
    return torch.where(mask.to(x.device), wrap_angle(x), x)


class Target(torch.nn.Module):
    """Base class for every target.

    Subclasses set :attr:`dim`, implement :meth:`energy` and, where they can,
    :meth:`sample` (exact i.i.d. samples) and :attr:`log_Z`.

    Capability tags (class attributes, not ``isinstance`` checks):

    ``exact_sampling``
        :meth:`sample` draws exact i.i.d. samples.
    ``log_Z``
        The exact log normalizing constant, or None when it is unknown.
    ``n_modes``
        How many modes :meth:`assign_modes` labels (0: the target labels none);
        :meth:`mode_weights` gives their exact probabilities where known. The
        mode metrics (mode TV, modes found, mode coverage) apply only then.

    Optional hooks (provide the members of a protocol and the features that
    need it apply; nothing else is looked up on a target):

    ``assign_modes(x)``, ``mode_weights()``
        With ``n_modes > 0``: the mode of each row and the exact mode weights
        (methods below); mode metrics.
    ``n_particles``, ``spatial_dim``, ``positions(x)``, ``pair_distances(x)``
        :class:`ParticleSystem`: particle metrics and figures, equivariant fields.
    ``lattice_shape``, ``field(x)``
        :class:`LatticeField`: lattice metrics and figures.
    ``mdtraj_topology``, ``positions(x)``
        :class:`Molecule`: torsion metrics, Ramachandran figures, MD R̂ on dihedrals.
    ``invariant_features(x)``
        :class:`InvariantFeatures`: the MCMC reference's R̂ on symmetry-invariant
        features.
    ``com_treatment``
        :class:`DescribesCOM`: how the centre of mass is handled, stored with
        the reference.
    ``solvent``, ``temperature_K``
        :class:`MDSystem`: the ``md`` reference kind.
    ``periodic_mask``
        :class:`PeriodicCoordinates`: which coordinates are angles on the circle
        [−π, π); circular transforms in the flow family.
    """

    dim: int
    exact_sampling: bool = False
    log_Z: float | None = None
    n_modes: int = 0
    #: a short human description, shown in reports
    description: str = ""

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Reduced energy E(x) in k_BT, shape ``(n,)`` for ``x`` of shape ``(n, dim)``."""
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """-E(x) - log Z when log Z is known, else the unnormalized -E(x)."""
        e = self.energy(x)
        return -e - self.log_Z if self.log_Z is not None else -e

    def base_location(self) -> torch.Tensor | None:
        """A typical configuration, shape ``(dim,)``, that samplers start around
        (chains, SMC's base, a reverse-KL flow's initial proposal), or None for
        the origin. Molecular targets return an energy minimum."""
        return None

    def assign_modes(self, x: torch.Tensor) -> torch.Tensor:
        """The mode of each row, integer labels in ``[0, n_modes)``, shape ``(n,)``;
        only when ``n_modes > 0``."""
        raise NotImplementedError(f"{type(self).__name__} labels no modes")

    def mode_weights(self) -> torch.Tensor | None:
        """The exact probability of each mode, shape ``(n_modes,)`` float64 summing to 1,
        or None when unknown."""
        return None

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Exact samples, shape ``(n, dim)``; only when ``exact_sampling``."""
        raise NotImplementedError(f"{type(self).__name__} has no exact sampler")

    def energy_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy and its gradient with respect to ``x`` (both detached)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            e = self.energy(x)
            (g,) = torch.autograd.grad(e.sum(), x)
        return e.detach(), g.detach()

    def extra_repr(self) -> str:
        z = "unknown" if self.log_Z is None else f"{self.log_Z:.6g}"
        return f"dim={self.dim}, log_Z={z}"

    @staticmethod
    def _normal_log_prob(x: torch.Tensor, log_std: torch.Tensor | float) -> torch.Tensor:
        """Elementwise log N(x; 0, exp(log_std)^2)."""
        log_std = torch.as_tensor(log_std, dtype=x.dtype, device=x.device)
        return -0.5 * (x * torch.exp(-log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi)


class ShiftedTarget(Target):
    """``target`` seen from ``loc``: E'(y) = E(y + loc). log Z is unchanged.

    Lets a sampler whose base distribution is centred at the origin (SMC)
    start around a molecular target's energy minimum.
    """

    def __init__(self, target: Target, loc: torch.Tensor):
        super().__init__()
        self.target, self.dim, self.log_Z = target, target.dim, target.log_Z
        self.register_buffer("loc", loc)

    def energy(self, y: torch.Tensor) -> torch.Tensor:
        return self.target.energy(y + self.loc.to(y.dtype))

    def energy_and_grad(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.target.energy_and_grad(y + self.loc.to(y.dtype))
