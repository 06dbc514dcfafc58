"""A correlated Gaussian target: every quantity is known in closed form.

E(x) = ½ (x - μ)ᵀ Σ⁻¹ (x - μ), unnormalized, so
log Z = ½ log det(2π Σ). Used by statistical tests of every sampler.
"""

from __future__ import annotations

import math

import torch

from boltzbench.targets.base import Target

__all__ = ["Gaussian", "ar1_precision"]


def ar1_precision(dim: int, scale: float, rho: float) -> torch.Tensor:
    """The inverse of Σ_ij = scale² ρ^|i−j| in closed form: tridiagonal, with
    diagonal (1, 1 + ρ², …, 1 + ρ², 1) and off-diagonal −ρ, over scale² (1 − ρ²).

    Exact zeros off the band, and symmetric bit for bit: a numerical inverse
    leaves entries of order 1e-17 there, which in float32 include subnormal
    numbers that slow a matrix product about tenfold.
    """
    if dim == 1:
        return torch.full((1, 1), 1 / scale**2, dtype=torch.float64)
    diag = torch.full((dim,), 1 + rho**2, dtype=torch.float64)
    diag[0] = diag[-1] = 1.0
    off = torch.full((dim - 1,), -rho, dtype=torch.float64)
    precision = torch.diag(diag) + torch.diag(off, 1) + torch.diag(off, -1)
    return precision / (scale**2 * (1 - rho**2))


class Gaussian(Target):
    """N(μ, Σ) with μ = ``mean`` · 1 and Σ_ij = scale² · ρ^|i-j| (an AR(1) covariance).

    Parameters
    ----------
    dim
        Dimension.
    mean
        Every coordinate of μ.
    scale
        Marginal standard deviation.
    rho
        Correlation between neighbouring coordinates, |rho| < 1.
    """

    exact_sampling = True
    description = "correlated Gaussian, Σ_ij = scale² ρ^|i-j|"

    def __init__(self, dim: int = 2, mean: float = 0.0, scale: float = 1.0, rho: float = 0.0):
        super().__init__()
        if not abs(rho) < 1:
            raise ValueError(f"rho must satisfy |rho| < 1, got {rho}")
        self.dim = dim
        idx = torch.arange(dim, dtype=torch.float64)
        cov = scale**2 * rho ** (idx[:, None] - idx[None, :]).abs()
        self.register_buffer("mean", torch.full((dim,), float(mean), dtype=torch.float64))
        self.register_buffer("cov", cov)
        self.register_buffer("chol", torch.linalg.cholesky(cov))
        self.register_buffer("precision", ar1_precision(dim, scale, rho))
        self.log_Z = 0.5 * float(torch.logdet(2 * math.pi * cov))

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        d = x - self.mean.to(x)
        return 0.5 * ((d @ self.precision.to(x)) * d).sum(-1)

    def energy_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """½ dᵀPd and its gradient Pd, d = x − μ, both detached: one matrix product
        (P is symmetric bit for bit), where autograd takes two."""
        d = (x - self.mean.to(x)).detach()
        pd = d @ self.precision.to(x)
        return 0.5 * (pd * d).sum(-1), pd

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.mean + eps @ self.chol.T
