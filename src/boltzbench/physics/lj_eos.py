"""The Lennard-Jones equation of state of Johnson, Zollweg & Gubbins (1993).

J. K. Johnson, J. A. Zollweg and K. E. Gubbins, "The Lennard-Jones equation
of state revisited", Mol. Phys. 78, 591-618 (1993): a 33-parameter modified
Benedict-Webb-Rubin (MBWR) equation fitted to MD and MC data of the **full**
(untruncated) 12-6 potential u(r) = 4ε[(σ/r)¹² − (σ/r)⁶], in reduced units
(ρ* = ρσ³, T* = k_BT/ε, P* = Pσ³/ε, energies in ε). With F = exp(−γρ²):

    P   = ρT + Σ_{i=1}^{8} a_i ρ^{i+1} + F Σ_{i=1}^{6} b_i ρ^{2i+1}      (eq. 5)
    A_ex/N = Σ_{i=1}^{8} a_i ρ^i / i + Σ_{i=1}^{6} b_i G_i                (eq. 6)
    U_ex/N = Σ_{i=1}^{8} c_i ρ^i / i + Σ_{i=1}^{6} d_i G_i                (eq. 9)
    G_1 = (1 − F) / (2γ),  G_i = −(F ρ^{2(i−1)} − 2(i−1) G_{i−1}) / (2γ)

The a_i, b_i are sums x_k T^p (Table 5) of the parameters x_1..x_32 of
Table 10, γ = 3. Since U = ∂(A/T)/∂(1/T), a term x T^p of a_i or b_i gives
(1 − p) x T^p in c_i or d_i (Table 7): the c_i, d_i are derived here from the
(k, p) table rather than typed a second time. The fit covers
0.7 ≤ T* ≤ 6 and the fluid densities (the paper reports ~1-2 % accuracy in P
away from the critical point); its own critical point is T* = 1.313,
ρ* = 0.310.
"""

from __future__ import annotations

import math

__all__ = [
    "JZG_X",
    "JZG_GAMMA",
    "excess_free_energy",
    "excess_energy",
    "pressure",
]

#: x_1..x_32 of JZG 1993, Table 10 (the 33rd parameter is γ)
JZG_X = (
    0.8623085097507421,
    2.976218765822098,
    -8.402230115796038,
    0.1054136629203555,
    -0.8564583828174598,
    1.582759470107601,
    0.7639421948305453,
    1.753173414312048,
    2798.291772190376,
    -0.048394220260857657,
    0.9963265197721935,
    -36.98000291272493,
    20.84012299434647,
    83.05402124717285,
    -957.4799715203068,
    -147.7746229234994,
    63.98607852471505,
    16.03993673294834,
    68.05916615864377,
    -2791.293578795945,
    -6.245128304568454,
    -8116.836104958410,
    14.88735559561229,
    -10593.46754655084,
    -113.1607632802822,
    -8867.771540418822,
    -39.86982844450543,
    -4689.270299917261,
    259.3535277438717,
    -2694.523589434903,
    -721.8487631550215,
    172.1802063863269,
)
#: γ of the Gaussian factor F = exp(−γρ²)
JZG_GAMMA = 3.0

# a_i and b_i as lists of (k, p): the term x_k T^p (JZG 1993, Table 5)
_A_TERMS = (
    ((1, 1.0), (2, 0.5), (3, 0.0), (4, -1.0), (5, -2.0)),
    ((6, 1.0), (7, 0.0), (8, -1.0), (9, -2.0)),
    ((10, 1.0), (11, 0.0), (12, -1.0)),
    ((13, 0.0),),
    ((14, -1.0), (15, -2.0)),
    ((16, -1.0),),
    ((17, -1.0), (18, -2.0)),
    ((19, -2.0),),
)
_B_TERMS = (
    ((20, -2.0), (21, -3.0)),
    ((22, -2.0), (23, -4.0)),
    ((24, -2.0), (25, -3.0)),
    ((26, -2.0), (27, -4.0)),
    ((28, -2.0), (29, -3.0)),
    ((30, -2.0), (31, -3.0), (32, -4.0)),
)


def _coefficients(terms, temperature: float, energy: bool) -> list[float]:
    """Σ x_k T^p per coefficient (a_i, b_i), or Σ (1 − p) x_k T^p (c_i, d_i) with ``energy``."""
    return [
        sum((1.0 - p if energy else 1.0) * JZG_X[k - 1] * temperature**p for k, p in row)
        for row in terms
    ]


def _g_functions(density: float) -> list[float]:
    """G_1..G_6 of eq. 6 at ρ*."""
    f = math.exp(-JZG_GAMMA * density**2)
    g = [(1.0 - f) / (2.0 * JZG_GAMMA)]
    for i in range(2, 7):
        g.append(-(f * density ** (2 * (i - 1)) - 2 * (i - 1) * g[-1]) / (2.0 * JZG_GAMMA))
    return g


def _check(density: float, temperature: float) -> None:
    if not (density >= 0 and temperature > 0):
        raise ValueError(f"need density >= 0 and temperature > 0, got {density}, {temperature}")


def _series(density: float, temperature: float, energy: bool) -> float:
    """Σ coef_i ρ^i / i + Σ coef'_i G_i: A_ex/N, or U_ex/N with ``energy``."""
    _check(density, temperature)
    a = _coefficients(_A_TERMS, temperature, energy)
    b = _coefficients(_B_TERMS, temperature, energy)
    poly = sum(ai * density ** (i + 1) / (i + 1) for i, ai in enumerate(a))
    return poly + sum(bi * gi for bi, gi in zip(b, _g_functions(density)))


def excess_free_energy(density: float, temperature: float) -> float:
    """Excess Helmholtz free energy per particle A_ex/N (units of ε), eq. 6."""
    return _series(density, temperature, energy=False)


def excess_energy(density: float, temperature: float) -> float:
    """Excess (potential) internal energy per particle U_ex/N (units of ε), eq. 9."""
    return _series(density, temperature, energy=True)


def pressure(density: float, temperature: float) -> float:
    """Pressure P* = Pσ³/ε (ideal part ρT included), eq. 5."""
    _check(density, temperature)
    a = _coefficients(_A_TERMS, temperature, energy=False)
    b = _coefficients(_B_TERMS, temperature, energy=False)
    f = math.exp(-JZG_GAMMA * density**2)
    poly = sum(ai * density ** (i + 2) for i, ai in enumerate(a))
    gauss = f * sum(bi * density ** (2 * i + 3) for i, bi in enumerate(b))
    return density * temperature + poly + gauss
