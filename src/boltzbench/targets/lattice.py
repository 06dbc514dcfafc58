"""The φ⁴ scalar field theory on a 2-D periodic lattice.

Albergo, Kanwar, Shanahan et al. 2021, "Introduction to normalizing flows for
lattice field theory" (arXiv:2101.08176), Sec. II: the Euclidean action, in
lattice units, is the energy in k_BT, p(φ) ∝ exp(-S[φ]).
"""

from __future__ import annotations

import math

import torch

from boltzbench.targets.base import Target

__all__ = ["Phi4", "free_field_matrix"]


def _periodic_difference_matrix(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """K = 2I - S - Sᵀ on a periodic 1-D chain of ``n`` sites (S the unit shift)."""
    shift = torch.roll(torch.eye(n, dtype=dtype), 1, dims=1)
    return 2 * torch.eye(n, dtype=dtype) - shift - shift.T


def free_field_matrix(L: int, m2: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The matrix A with S[φ] = φᵀ A φ at λ = 0, shape ``(L², L²)``.

    A = K ⊗ I + I ⊗ K + m² I with K the periodic 1-D difference matrix, for φ
    flattened row-major from its ``(L, L)`` lattice.
    """
    k, eye = _periodic_difference_matrix(L, dtype), torch.eye(L, dtype=dtype)
    return torch.kron(k, eye) + torch.kron(eye, k) + m2 * torch.eye(L * L, dtype=dtype)


class Phi4(Target):
    """φ⁴ theory on an L×L periodic lattice (Albergo et al. 2021).

    S[φ] = Σ_x [Σ_{μ=1,2} φ(x) (2φ(x) - φ(x+μ̂) - φ(x-μ̂)) + m² φ(x)² + λ φ(x)⁴],

    and E(x) = S[φ] with φ = ``field(x)``; the defaults L = 8, m² = -4, λ = 8 are
    the tutorial's (a broken-symmetry point with two modes related by φ → -φ).
    log Z is unknown, except for the free field (λ = 0, m² > 0): then
    S = φᵀAφ with A = -Δ + m², so p is N(0, (2A)⁻¹),
    log Z = (V/2) log π - ½ log det A with the eigenvalues of A,
    m² + 4 sin²(π k₁/L) + 4 sin²(π k₂/L), and exact samples are drawn.

    Parameters
    ----------
    L
        Lattice extent; dim = L².
    m2
        Bare mass squared m² (may be negative).
    lam
        Quartic coupling λ ≥ 0.
    """

    def __init__(self, L: int = 8, m2: float = -4.0, lam: float = 8.0):
        super().__init__()
        if lam < 0:
            raise ValueError(f"lam must be >= 0 for a normalizable density, got {lam}")
        if lam == 0 and m2 <= 0:
            raise ValueError(f"the free field (lam = 0) needs m2 > 0, got {m2}")
        self.L, self.m2, self.lam = L, m2, lam
        self.dim = L * L
        self.lattice_shape = (L, L)
        self.description = f"phi^4 on a {L}x{L} periodic lattice, m2={m2}, lam={lam}"
        if lam == 0:
            self.exact_sampling = True
            self.log_Z = self.free_field_log_z()

    def field(self, x: torch.Tensor) -> torch.Tensor:
        """The lattice field φ, shape ``(n, L, L)``, from ``x`` of shape ``(n, L²)``."""
        return x.reshape(x.shape[0], self.L, self.L)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """The action S[φ] in k_BT, shape ``(n,)``."""
        phi = self.field(x)
        density = self.m2 * phi**2 + self.lam * phi**4
        for mu in (1, 2):
            neighbours = torch.roll(phi, 1, dims=mu) + torch.roll(phi, -1, dims=mu)
            density = density + phi * (2 * phi - neighbours)
        return density.sum(dim=(1, 2))

    def free_field_log_z(self) -> float:
        """log Z = (V/2) log π - ½ Σ_k log(m² + 4 sin²(πk₁/L) + 4 sin²(πk₂/L)), λ = 0."""
        k = torch.arange(self.L, dtype=torch.float64)
        s = 4 * torch.sin(math.pi * k / self.L) ** 2
        log_det = torch.log(self.m2 + s[:, None] + s[None, :]).sum()
        return 0.5 * self.dim * math.log(math.pi) - 0.5 * float(log_det)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Exact samples φ ~ N(0, (2A)⁻¹) of the free field (λ = 0 only)."""
        if self.lam != 0:
            raise NotImplementedError("Phi4 has an exact sampler only for lam = 0")
        chol = torch.linalg.cholesky(2 * free_field_matrix(self.L, self.m2))  # 2A = C Cᵀ
        eps = torch.randn(self.dim, n, generator=generator, dtype=torch.float64)
        return torch.linalg.solve_triangular(chol.T, eps, upper=True).T  # cov C⁻ᵀC⁻¹
