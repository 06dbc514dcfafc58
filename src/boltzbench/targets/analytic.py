"""Analytic targets with exact samplers: GMM-40, the 25-mode grid GMM, Neal's funnel
and ManyWell.

All energies are reduced (k_BT = 1): p(x) = exp(-E(x)) / Z.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from boltzbench.targets.base import Target

__all__ = [
    "GMM",
    "GMM25",
    "Funnel",
    "ManyWell",
    "double_well_log_z",
    "double_well_barrier",
    "double_well_right_mass",
]


class GMM(Target):
    """Equal-weight Gaussian mixture with diagonal covariance (FAB's GMM-40).

    E(x) = -log (1/K) Σ_k N(x; μ_k, σ² I), so log Z = 0. The means are uniform in
    [-loc_scaling, loc_scaling]^dim, drawn as ``(torch.rand(K, dim) - 0.5) * 2 *
    loc_scaling`` from a CPU generator seeded with ``seed``; the per-dimension std
    is σ = softplus(log_var_scaling), ≈ 1.3133 for the default 1.0. These are the
    settings of Midgley et al. 2023 (FAB), also used by iDEM (Akhound-Sadegh et
    al. 2024): K = 40, dim = 2, loc_scaling = 40, seed = 0.
    """

    exact_sampling = True
    log_Z = 0.0
    description = "Gaussian mixture, 40 modes in [-40, 40]^2 (Midgley et al. 2023)"

    def __init__(
        self,
        dim: int = 2,
        n_modes: int = 40,
        loc_scaling: float = 40.0,
        log_var_scaling: float = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        # float32 explicitly: torch.rand draws different numbers under float64
        u = torch.rand(n_modes, dim, generator=g, dtype=torch.float32)
        means = (u - 0.5) * 2 * loc_scaling
        std = F.softplus(torch.tensor(log_var_scaling)) * torch.ones(dim)
        self._set_components(means, std)

    def _set_components(self, means: torch.Tensor, std: torch.Tensor) -> None:
        """The K means ``(K, dim)`` and the per-dimension std ``(dim,)``, stored in float64."""
        self.n_modes, self.dim = means.shape
        self.register_buffer("means", means.double())
        self.register_buffer("std", std.double())

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; μ_k, σ²) for every component, shape ``(n, K)``."""
        z = (x[:, None, :] - self.means.to(x)) / self.std.to(x)
        log_norm = torch.log(self.std.to(x)).sum() + 0.5 * self.dim * math.log(2 * math.pi)
        return -0.5 * (z**2).sum(-1) - log_norm

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        lp = torch.logsumexp(self.component_log_prob(x), dim=-1) - math.log(self.n_modes)
        return -lp

    def assign_modes(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the most likely component for each row, shape ``(n,)``."""
        return self.component_log_prob(x).argmax(-1)

    def mode_weights(self) -> torch.Tensor:
        """Equal weights 1/K: the components (its modes) are equally weighted."""
        return torch.full((self.n_modes,), 1.0 / self.n_modes, dtype=torch.float64)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.randint(self.n_modes, (n,), generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + self.std * eps


class GMM25(GMM):
    """The 25-mode grid GMM of Sendera et al. 2024 ("On diffusion models for
    amortized inference: benchmarking and improving stochastic control and
    sampling", arXiv:2402.05098): 2-D, means on the grid {−2, …, 2}² × ``spacing``
    ({−10, −5, 0, 5, 10}² by default), covariance ``variance`` · I (0.3 · I),
    equal weights 1/25, so E(x) = −log (1/25) Σ_k N(x; μ_k, 0.3 I) and log Z = 0.

    Checked against the authors' public code (GFNOrg/gfn-diffusion,
    ``energy_sampling/energies/twenty_five_gmm.py``): modes
    ``[(a, b) for a in [-10, -5, 0, 5, 10] for b in [-10, -5, 0, 5, 10]]``
    (the same order as here, so mode k is (a, b) with a the slower index),
    ``covariance_matrix=0.3 * eye(2)`` (a variance, std √0.3 ≈ 0.548), the
    log-sum-exp over the components less log 25, and ``gt_logz() = 0``. The
    paper's text itself was not available to check.

    The modes are 5 / √0.3 ≈ 9.1 standard deviations apart; exact samples pick
    a component uniformly. Mode labels, weights and sampling are GMM's.
    """

    description = "Gaussian mixture, 25 modes on a 5x5 grid of spacing 5 (Sendera et al. 2024)"

    def __init__(self, spacing: float = 5.0, variance: float = 0.3):
        Target.__init__(self)
        side = spacing * torch.arange(-2, 3, dtype=torch.float64)
        means = torch.cartesian_prod(side, side)
        self._set_components(means, math.sqrt(variance) * torch.ones(2, dtype=torch.float64))


class Funnel(Target):
    """Neal's funnel (Neal 2003, "Slice sampling").

    x₀ ~ N(0, scale²) with scale = 3, and x_i | x₀ ~ N(0, e^{x₀}) for i ≥ 1, so the
    conditional std is e^{x₀/2}. E(x) = -log p(x) is normalized: log Z = 0.
    """

    exact_sampling = True
    log_Z = 0.0
    description = "Neal's funnel, x0 ~ N(0, 3^2), xi | x0 ~ N(0, exp(x0))"

    def __init__(self, dim: int = 10, scale: float = 3.0):
        super().__init__()
        self.dim, self.scale = dim, scale

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        x0, rest = x[:, 0], x[:, 1:]
        lp0 = self._normal_log_prob(x0, math.log(self.scale))
        lp = self._normal_log_prob(rest, 0.5 * x0[:, None]).sum(-1)
        return -(lp0 + lp)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x0 = self.scale * eps[:, :1]
        return torch.cat([x0, torch.exp(0.5 * x0) * eps[:, 1:]], dim=1)


def _double_well_log_density(x: np.ndarray | float, a: float, b: float, c: float):
    """Unnormalized 1-D log density -(a x + b x² + c x⁴)."""
    return -(a * x + b * x**2 + c * x**4)


def _double_well_mass(a: float, b: float, c: float, lo: float, hi: float) -> tuple[float, float]:
    """(∫_lo^hi exp(-(a x + b x² + c x⁴) − peak) dx, peak) by adaptive quadrature."""
    peak = float(np.max(_double_well_log_density(np.linspace(-4, 4, 8001), a, b, c)))

    def f(x):
        return math.exp(_double_well_log_density(x, a, b, c) - peak)

    from scipy import integrate  # imported here: only ManyWell needs it

    val, _ = integrate.quad(f, lo, hi, epsabs=0, epsrel=1e-13, limit=500)
    return val, peak


def double_well_log_z(a: float = -0.5, b: float = -6.0, c: float = 1.0) -> float:
    """log ∫ exp(-(a x + b x² + c x⁴)) dx + log √(2π), by adaptive quadrature.

    This is the log normalizer of one 2-D ManyWell factor (the second coordinate
    is a standard normal).
    """
    val, peak = _double_well_mass(a, b, c, -np.inf, np.inf)
    return math.log(val) + peak + 0.5 * math.log(2 * math.pi)


def double_well_barrier(a: float = -0.5, b: float = -6.0, c: float = 1.0) -> float:
    """The barrier top x_b of E₁(x) = a x + b x² + c x⁴ between its two wells: the
    middle real root of E₁'(x) = a + 2b x + 4c x³ (≈ −0.0417 for ManyWell)."""
    roots = np.roots([4 * c, 0.0, 2 * b, a])
    real = np.sort(roots[np.abs(roots.imag) < 1e-9].real)
    if real.size != 3:
        raise ValueError(f"E1 = {a} x + {b} x^2 + {c} x^4 has no barrier between two wells")
    return float(real[1])


def double_well_right_mass(a: float = -0.5, b: float = -6.0, c: float = 1.0) -> float:
    """P(x > x_b) under the 1-D factor ∝ exp(−E₁(x)): the exact occupation of the
    right well (≈ 0.85 for ManyWell, whose 0.5 x tilt favours it), by quadrature."""
    xb = double_well_barrier(a, b, c)
    right, _ = _double_well_mass(a, b, c, xb, np.inf)
    total, _ = _double_well_mass(a, b, c, -np.inf, np.inf)
    return right / total


class ManyWell(Target):
    """ManyWell: dim/2 independent 2-D double wells (Midgley et al. 2023, FAB).

    log p̃(x) = Σ_{pairs} [-x₁⁴ + 6x₁² + 0.5x₁ - 0.5x₂²], i.e. a = -0.5, b = -6,
    c = 1 in E₁(x₁) = a x₁ + b x₁² + c x₁⁴. E(x) = -log p̃(x) is unnormalized; log Z
    is dim/2 times the log normalizer of one pair, computed by quadrature
    (≈ 164.6957 for dim = 32). Exact samples come from rejection sampling of the
    1-D double-well factor under a two-Gaussian envelope.

    Modes: each pair's x₁ sits in the left or the right well (split at the
    barrier top x_b ≈ −0.0417), so there are 2^(dim/2) modes (65,536 for
    dim = 32), labelled by the bits [x₁ > x_b] of the pairs. Their exact
    weights are products of the right-well occupation P(x₁ > x_b) ≈ 0.85 and
    its complement, by quadrature.
    """

    exact_sampling = True
    description = "ManyWell: 16 independent 2-D double wells (Midgley et al. 2023)"

    def __init__(self, dim: int = 32, a: float = -0.5, b: float = -6.0, c: float = 1.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"ManyWell needs an even dim, got {dim}")
        self.dim, self.a, self.b, self.c = dim, a, b, c
        self.n_modes = 2 ** (dim // 2)
        # E = Σ_i x_i (A_i + x_i (B_i + C_i x_i²)): (a, b, c) on each pair's x₁, (0, ½, 0) on its x₂
        first = torch.arange(dim) % 2 == 0
        for name, on_first, on_second in (("A", a, 0.0), ("B", b, 0.5), ("C", c, 0.0)):
            column = torch.where(first, on_first, on_second).double()
            self.register_buffer(f"_{name}", column, persistent=False)

    @cached_property
    def log_Z(self) -> float:  # type: ignore[override]
        """dim/2 × the log normalizer of one pair, by quadrature on first use (it
        imports scipy.integrate, which config validation need not pay)."""
        return self.dim // 2 * double_well_log_z(self.a, self.b, self.c)

    @cached_property
    def _envelope(self) -> _Envelope:
        """Fitted on first use: most jobs never sample (~0.1 s of grid work)."""
        a, b, c = self.a, self.b, self.c
        return _Envelope.fit(lambda x: _double_well_log_density(x, a, b, c))

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        # One polynomial per coordinate with per-column coefficients: every
        # operation reads x contiguously, so TorchInductor compiles the energy and
        # its gradient to full-width vector loops (pairs or strided slices compile
        # to scalar ones). Where x² is finite, so is each term. In x's dtype.
        a, b, c = self._A.to(x), self._B.to(x), self._C.to(x)
        sq = x * x
        return (((b + c * sq) * sq) + a * x).sum(-1)

    def assign_modes(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_j [x₁⁽ʲ⁾ > x_b] 2^j over the pairs j: the well of every pair, shape ``(n,)``."""
        right = (x[:, 0::2] > double_well_barrier(self.a, self.b, self.c)).long()
        return (right << torch.arange(self.dim // 2, device=x.device)).sum(-1)

    def mode_weights(self) -> torch.Tensor:
        """Π_j P(well of pair j), shape ``(2^(dim/2),)``, in the labels of :meth:`assign_modes`."""
        p = double_well_right_mass(self.a, self.b, self.c)
        bits = torch.arange(self.n_modes)[:, None] >> torch.arange(self.dim // 2) & 1
        n_right = bits.sum(-1).to(torch.float64)
        return p**n_right * (1 - p) ** (self.dim // 2 - n_right)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        m = self.dim // 2
        x1 = self._envelope.sample(n * m, generator).reshape(n, m)
        x2 = torch.randn(n, m, generator=generator, dtype=torch.float64)
        return torch.stack([x1, x2], dim=-1).reshape(n, self.dim)


class _Envelope:
    """Rejection sampler for a 1-D density under a two-Gaussian mixture envelope.

    The envelope has one component per local maximum, with std 2× the local
    Laplace std (acceptance ≈ 0.49 for ManyWell), and is scaled by
    log M = max(log p̃ - log q) on a dense grid plus a 5 % margin. The density
    has x⁴ tails and the envelope Gaussian tails, so the ratio p̃/q is largest
    near the modes, which the grid resolves.
    """

    def __init__(self, log_p, locs, scales, weights, log_m):
        self.log_p, self.log_m = log_p, log_m
        self.locs, self.scales, self.weights = locs, scales, weights

    @classmethod
    def fit(cls, log_p, lo: float = -6.0, hi: float = 6.0, n_grid: int = 240_001):
        grid = np.linspace(lo, hi, n_grid)
        lp = log_p(grid)
        idx = 1 + np.flatnonzero((lp[1:-1] >= lp[:-2]) & (lp[1:-1] > lp[2:]))
        h = grid[1] - grid[0]
        curv = -(lp[idx + 1] - 2 * lp[idx] + lp[idx - 1]) / h**2
        locs, scales = grid[idx], 2.0 / np.sqrt(curv)
        mass = np.exp(lp[idx] - lp[idx].max()) * scales
        weights = mass / mass.sum()
        env = cls(log_p, locs, scales, weights, 0.0)
        env.log_m = float(np.max(lp - env.log_q(grid))) + math.log(1.05)
        return env

    def log_q(self, x: np.ndarray) -> np.ndarray:
        z = (x[..., None] - self.locs) / self.scales
        comp = -0.5 * z**2 - np.log(self.scales * math.sqrt(2 * math.pi)) + np.log(self.weights)
        return np.logaddexp.reduce(comp, axis=-1)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        out: list[np.ndarray] = []
        have = 0
        while have < n:
            m = int(1.3 * (n - have)) + 16
            k = torch.multinomial(torch.tensor(self.weights), m, True, generator=generator).numpy()
            eps = torch.randn(m, generator=generator, dtype=torch.float64).numpy()
            x = self.locs[k] + self.scales[k] * eps
            u = torch.rand(m, generator=generator, dtype=torch.float64).numpy()
            keep = np.log(u) < self.log_p(x) - self.log_q(x) - self.log_m
            out.append(x[keep])
            have += int(keep.sum())
        return torch.from_numpy(np.concatenate(out)[:n])
