"""A correlated Gaussian target: every quantity is known in closed form.

E(x) = ½ (x - μ)ᵀ Σ⁻¹ (x - μ), unnormalized, so
log Z = ½ log det(2π Σ). Used by statistical tests of every sampler.
"""

from __future__ import annotations

import math

import torch

from boltzbench.targets.base import Target

__all__ = ["Gaussian"]


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
        self.register_buffer("precision", torch.linalg.inv(cov))
        self.log_Z = 0.5 * float(torch.logdet(2 * math.pi * cov))

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        d = x - self.mean.to(x)
        return 0.5 * ((d @ self.precision.to(x)) * d).sum(-1)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.mean + eps @ self.chol.T
