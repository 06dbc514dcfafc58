"""Two-dimensional U(1) lattice gauge theory with the Wilson plaquette action.

Kanwar, Albergo, Boyda, Cranmer, Hackett, Racanière, Rezende & Shanahan 2020,
"Equivariant flow-based sampling for lattice gauge theory", PRL 125, 121601
(arXiv:2003.06413). On an L × L periodic lattice every site x carries two link
angles θ_μ(x), μ ∈ {0, 1}; the plaquette angle at x is

    θ_P(x) = θ_0(x) + θ_1(x + 0̂) − θ_0(x + 1̂) − θ_1(x),

and the energy (the Euclidean action, in k_BT) is S = −β Σ_P cos θ_P over the
V = L² plaquettes. The density lives on the torus [−π, π)^{2V}; the topological
charge is Q = (1/2π) Σ_P wrap(θ_P), wrap to [−π, π), an integer because every
link enters two plaquettes with opposite signs.

**Exact finite-volume values by the character expansion** (e.g. Bonati & Rossi
2019, "Topological susceptibility of two-dimensional U(N) gauge theories",
PRD 100, 054503, Sec. II; Kanwar et al. 2020, supplementary). The map from
links to plaquettes is a homomorphism of tori whose image is {Σ_P θ_P ≡ 0 mod
2π}, so under the Haar measure the V plaquette angles φ_P = wrap(θ_P) are
independent but for that one constraint, δ_2π(Σφ) = (1/2π) Σ_n e^{inΣφ}. With
e^{β cos φ} = Σ_n I_n(β) e^{inφ} this gives, in Lebesgue measure on the links,

    Z = (2π)^{2V} Σ_{n∈ℤ} I_n(β)^V,
    ⟨cos θ_P⟩ = Σ_n I_n^{V−1} I_n′ / Σ_n I_n^V,   I_n′ = (I_{n−1} + I_{n+1}) / 2,

and, from ⟨e^{iνΣφ}⟩ = Σ_n F(n+ν)^V / Σ_n F(n)^V with
F(ν) = (1/2π) ∫_{−π}^{π} e^{β cos φ + iνφ} dφ (the sum over n is the sum over
winding sectors of the Poisson formula),

    ⟨Q²⟩ = (1/4π²) Σ_n [V I_n^{V−1} g₂(n) − V(V−1) I_n^{V−2} g₁(n)²] / Σ_n I_n^V,
    g₂(n) = (1/2π) ∫ φ² cos(nφ) e^{β cos φ} dφ = Σ_k I_k ½ [c₂(n+k) + c₂(n−k)],
    g₁(n) = (1/2π) ∫ φ sin(nφ) e^{β cos φ} dφ = Σ_k I_k ½ [s₁(n+k) + s₁(n−k)],

with c₂(0) = π²/3, c₂(m) = 2(−1)^m/m², s₁(0) = 0, s₁(m) = −(−1)^m/m, and
χ_Q = ⟨Q²⟩/V. As V → ∞ only n = 0 survives: ⟨cos θ_P⟩ → I₁(β)/I₀(β) and
χ_Q → g₂(0) / (4π² I₀(β)) = ⟨φ²⟩_β / 4π². Bessel functions are exponentially
scaled (scipy.special.ive, I_n(β) = e^β ive(n, β)) and the winding sums are
taken in logs, so large V and β do not overflow.

**Exact samples** follow from the same decomposition: φ₁ … φ_{V−1} are drawn
i.i.d. von Mises(0, β) (Best & Fisher 1979) and accepted with probability
exp(β (cos φ_V − 1)), φ_V = wrap(−Σ_{P<V} φ_P), which leaves exactly the
plaquette law above; a link field with those plaquettes is built in an axial
gauge, then a uniform random gauge transformation θ_μ(x) → α(x) + θ_μ(x) −
α(x+μ̂) and uniform random shifts of every link of each direction (the two
holonomies) make it an exact draw of the links.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from scipy.special import ive, logsumexp

from boltzbench.targets.base import Target, wrap_angle

__all__ = [
    "U1",
    "GaugeObservables",
    "plaquette_angles",
    "charge_of_plaquettes",
    "log_partition_function",
    "exact_plaquette",
    "exact_topological_susceptibility",
    "infinite_volume_plaquette",
    "infinite_volume_topological_susceptibility",
    "von_mises",
    "links_with_plaquettes",
]

TWO_PI = 2 * math.pi


@runtime_checkable
class GaugeObservables(Protocol):
    """A lattice gauge target with gauge-invariant observables and their exact values:
    ``plaquettes(x)`` ``(n, V)`` cos θ_P, ``topological_charge(x)`` ``(n,)``,
    ``volume`` V, ``exact_plaquette()`` and ``exact_topological_susceptibility()``.
    Gives the gauge metrics (:mod:`boltzbench.metrics.gauge`)."""

    volume: int

    def plaquettes(self, x: torch.Tensor) -> torch.Tensor: ...

    def topological_charge(self, x: torch.Tensor) -> torch.Tensor: ...

    def exact_plaquette(self) -> float: ...

    def exact_topological_susceptibility(self) -> float: ...


def plaquette_angles(links: torch.Tensor) -> torch.Tensor:
    """θ_P(x) = θ_0(x) + θ_1(x+0̂) − θ_0(x+1̂) − θ_1(x), unwrapped.

    ``links`` has shape ``(n, 2, L, L)`` (direction μ, then the site (x₀, x₁),
    periodic); the result has shape ``(n, L, L)``.
    """
    t0, t1 = links[:, 0], links[:, 1]
    return t0 + torch.roll(t1, -1, dims=1) - torch.roll(t0, -1, dims=2) - t1


def charge_of_plaquettes(theta_p: torch.Tensor) -> torch.Tensor:
    """Q = (1/2π) Σ_P wrap(θ_P) of plaquette angles ``(n, L, L)`` → ``(n,)``
    (an integer up to rounding)."""
    return wrap_angle(theta_p).flatten(1).sum(1) / TWO_PI


# ----------------------------------------------------------- character expansion
def _orders(beta: float) -> np.ndarray:
    """Integer orders n = −N … N with ive(N, β) negligible (N = ⌈2β⌉ + 40)."""
    n_max = math.ceil(2 * beta) + 40
    return np.arange(-n_max, n_max + 1)


def _winding_weights(volume: int, beta: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Orders n, ĩ_n = ive(n, β), and the normalized winding weights
    r_n = ĩ_n^V / Σ_m ĩ_m^V with their log-normalizer log Σ_m ĩ_m^V."""
    n = _orders(beta)
    i_n = ive(n, beta)
    with np.errstate(divide="ignore"):
        log_w = volume * np.log(i_n)
    log_norm = float(logsumexp(log_w))
    return n, np.exp(log_w - log_norm), log_norm


def _check(volume: int, beta: float) -> None:
    if volume < 1 or not beta > 0:
        raise ValueError(f"need volume >= 1 and beta > 0, got {volume}, {beta}")


def log_partition_function(volume: int, beta: float) -> float:
    """log Z = 2V log 2π + Vβ + log Σ_n ive(n, β)^V (Lebesgue measure on the 2V links)."""
    _check(volume, beta)
    _, _, log_norm = _winding_weights(volume, beta)
    return 2 * volume * math.log(TWO_PI) + volume * beta + log_norm


def exact_plaquette(volume: int, beta: float) -> float:
    """⟨cos θ_P⟩ = Σ_n r_n (I_{n−1} + I_{n+1}) / (2 I_n), r_n the winding weights."""
    _check(volume, beta)
    n, r, _ = _winding_weights(volume, beta)
    keep = r > 0
    n = n[keep]
    ratio = (ive(n - 1, beta) + ive(n + 1, beta)) / (2 * ive(n, beta))
    return float((r[keep] * ratio).sum())


def _g_moments(n: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """e^{−β} g₂(n) and e^{−β} g₁(n) (module docstring) as Bessel series over k."""
    k = _orders(beta)[None, :]
    i_k = ive(k, beta)
    n = n[:, None]

    def c2(m: np.ndarray) -> np.ndarray:
        safe = np.where(m == 0, 1, m)
        return np.where(m == 0, math.pi**2 / 3, 2.0 * (-1.0) ** m / safe**2)

    def s1(m: np.ndarray) -> np.ndarray:
        safe = np.where(m == 0, 1, m)
        return np.where(m == 0, 0.0, -((-1.0) ** m) / safe)

    g2 = (i_k * 0.5 * (c2(n + k) + c2(n - k))).sum(1)
    g1 = (i_k * 0.5 * (s1(n + k) + s1(n - k))).sum(1)
    return g2, g1


def exact_topological_susceptibility(volume: int, beta: float) -> float:
    """χ_Q = ⟨Q²⟩ / V with the winding sum of the module docstring."""
    _check(volume, beta)
    n, r, _ = _winding_weights(volume, beta)
    keep = r > 0
    n, r = n[keep], r[keep]
    g2, g1 = _g_moments(n, beta)
    i_n = ive(n, beta)
    terms = volume * g2 / i_n - volume * (volume - 1) * (g1 / i_n) ** 2
    return float((r * terms).sum()) / (4 * math.pi**2 * volume)


def infinite_volume_plaquette(beta: float) -> float:
    """lim_{V→∞} ⟨cos θ_P⟩ = I₁(β) / I₀(β)."""
    return float(ive(1, beta) / ive(0, beta))


def infinite_volume_topological_susceptibility(beta: float) -> float:
    """lim_{V→∞} χ_Q = g₂(0) / (4π² I₀(β)) = ⟨φ²⟩ / 4π², φ ~ e^{β cos φ} on [−π, π)."""
    g2, _ = _g_moments(np.array([0]), beta)
    return float(g2[0] / ive(0, beta)) / (4 * math.pi**2)


# --------------------------------------------------------------- exact sampling
def von_mises(shape: tuple[int, ...], kappa: float, generator: torch.Generator) -> torch.Tensor:
    """Draws of the von Mises density ∝ e^{κ cos φ} on [−π, π), float64 of ``shape``.

    Best & Fisher 1979 ("Efficient simulation of the von Mises distribution",
    Appl. Statist. 28, 152), a wrapped-Cauchy envelope, repeated until every
    draw is accepted (acceptance ≥ 0.66 for every κ).
    """
    tau = 1 + math.sqrt(1 + 4 * kappa**2)
    rho = (tau - math.sqrt(2 * tau)) / (2 * kappa)
    r = (1 + rho**2) / (2 * rho)
    out = torch.empty(shape, dtype=torch.float64).reshape(-1)
    todo = torch.arange(out.numel())
    while todo.numel():
        u = torch.rand(3, todo.numel(), generator=generator, dtype=torch.float64)
        z = torch.cos(math.pi * u[0])
        f = (1 + r * z) / (r + z)
        c = kappa * (r - f)
        ok = (c * (2 - c) - u[1] > 0) | (torch.log(c / u[1]) + 1 - c >= 0)
        angle = torch.sign(u[2] - 0.5) * torch.arccos(f.clamp(-1, 1))
        out[todo[ok]] = angle[ok]
        todo = todo[~ok]
    return out.reshape(shape)


def _plaquette_draws(n: int, L: int, beta: float, generator: torch.Generator) -> torch.Tensor:
    """``(n, L, L)`` plaquette angles with the exact joint law (module docstring)."""
    volume, rows = L * L, []
    while sum(len(r) for r in rows) < n:
        m = max(2 * (n - sum(len(r) for r in rows)), 64)
        free = von_mises((m, volume - 1), beta, generator)
        last = wrap_angle(-free.sum(1, keepdim=True))
        u = torch.rand(m, generator=generator, dtype=torch.float64)
        ok = u < torch.exp(beta * (torch.cos(last[:, 0]) - 1))
        rows.append(torch.cat([free, last], 1)[ok])
    return torch.cat(rows)[:n].reshape(n, L, L)


def links_with_plaquettes(phi: torch.Tensor) -> torch.Tensor:
    """A link field ``(n, 2, L, L)`` whose plaquette angles equal ``phi`` ``(n, L, L)``
    mod 2π, given Σ_P φ_P ≡ 0 mod 2π (axial gauge: θ_1(x) = δ_{x₁,0} B(x₀) with
    B(x₀) = Σ_{t<x₀} R(t), R(t) = Σ_s φ(t, s); then θ_0(t, s) = −Σ_{s'<s} D(t, s'),
    D the plaquettes left after the θ_1 terms)."""
    n, L, _ = phi.shape
    row_sums = phi.sum(2)  # R(t), (n, L)
    b = torch.cumsum(row_sums, 1) - row_sums  # B(t) = Σ_{t' < t} R(t')
    t1 = torch.zeros_like(phi)
    t1[:, :, 0] = b
    d = phi - (torch.roll(t1, -1, dims=1) - t1)
    t0 = -(torch.cumsum(d, 2) - d)
    return torch.stack([t0, t1], 1)


def _random_gauge(links: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``links`` ``(n, 2, L, L)`` under a uniform gauge transformation α(x) and
    uniform shifts c_μ of every link of direction μ (plaquettes unchanged)."""
    n, _, L, _ = links.shape
    alpha = TWO_PI * torch.rand(n, L, L, generator=generator, dtype=torch.float64)
    shift = TWO_PI * torch.rand(n, 2, 1, 1, generator=generator, dtype=torch.float64)
    gauge = torch.stack(
        [alpha - torch.roll(alpha, -1, dims=1), alpha - torch.roll(alpha, -1, dims=2)], 1
    )
    return links + gauge + shift


# ----------------------------------------------------------------------- target
class U1(Target):
    """U(1) gauge theory on an L × L periodic lattice, S = −β Σ_P cos θ_P
    (Kanwar et al. 2020; formulas in the module docstring).

    x has shape ``(n, 2L²)``: the link angles θ_μ(x₀, x₁) flattened row-major
    from ``(2, L, L)``, each periodic with period 2π on the canonical domain
    [−π, π) (``periodic_mask``: all True); the energy is 2π-periodic in every
    coordinate, so samplers may move in ℝ^{2L²} and wrap. log Z (Lebesgue
    measure on [−π, π)^{2L²}), ⟨cos θ_P⟩ and χ_Q are exact; exact samples are
    drawn by rejection on the plaquettes.

    Parameters
    ----------
    L
        Lattice extent (L ≥ 2); dim = 2L², V = L² plaquettes.
    beta
        Gauge coupling β > 0 (dimensionless; Kanwar et al. use L = 8…16, β ≤ 7).
    """

    exact_sampling = True
    #: S is 2π-periodic in every link on all of ℝ (``targets.base.periodic_everywhere``)
    periodic_everywhere = True

    def __init__(self, L: int = 8, beta: float = 2.0):
        super().__init__()
        if L < 2 or not beta > 0:
            raise ValueError(f"need L >= 2 and beta > 0, got L={L}, beta={beta}")
        self.L, self.beta = int(L), float(beta)
        self.volume = self.L**2
        self.dim = 2 * self.volume
        self.log_Z = log_partition_function(self.volume, self.beta)
        self.description = f"U(1) gauge theory on a {L}x{L} periodic lattice, beta={beta}"
        #: True for coordinates that are angles of period 2π on [−π, π): all of them
        self.register_buffer("periodic_mask", torch.ones(self.dim, dtype=torch.bool), False)

    def links(self, x: torch.Tensor) -> torch.Tensor:
        """The link angles, shape ``(n, 2, L, L)``, from ``x`` ``(n, 2L²)``."""
        return x.reshape(x.shape[0], 2, self.L, self.L)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """S = −β Σ_P cos θ_P in k_BT, shape ``(n,)``."""
        return -self.beta * torch.cos(plaquette_angles(self.links(x))).flatten(1).sum(1)

    def plaquettes(self, x: torch.Tensor) -> torch.Tensor:
        """cos θ_P of every plaquette, shape ``(n, V)``."""
        return torch.cos(plaquette_angles(self.links(x))).flatten(1)

    def topological_charge(self, x: torch.Tensor) -> torch.Tensor:
        """Q = (1/2π) Σ_P wrap(θ_P), shape ``(n,)`` (integers up to rounding)."""
        return charge_of_plaquettes(plaquette_angles(self.links(x)))

    def invariant_features(self, x: torch.Tensor) -> torch.Tensor:
        """Gauge-invariant features ``(n, 2)``: the mean plaquette (1/V) Σ_P cos θ_P and Q;
        the MCMC reference checks R̂ on these (the links drift along gauge orbits)."""
        return torch.stack([self.plaquettes(x).mean(1), self.topological_charge(x)], 1)

    def exact_plaquette(self) -> float:
        """⟨cos θ_P⟩ at this L and β (character expansion)."""
        return exact_plaquette(self.volume, self.beta)

    def exact_topological_susceptibility(self) -> float:
        """χ_Q = ⟨Q²⟩ / V at this L and β (character expansion)."""
        return exact_topological_susceptibility(self.volume, self.beta)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` exact samples ``(n, 2L²)`` in [−π, π) (module docstring)."""
        phi = _plaquette_draws(n, self.L, self.beta, generator)
        links = _random_gauge(links_with_plaquettes(phi), generator)
        return wrap_angle(links).reshape(n, self.dim)
