"""Observables of lattice gauge targets, scored against their exact values.

For a :class:`~boltzbench.targets.gauge.GaugeObservables` target (2-D U(1),
Kanwar et al. 2020, PRL 125, 121601) with V plaquettes:

    P̂ = mean over samples and plaquettes of cos θ_P          (plaquette)
    χ̂_Q = mean over samples of Q² / V                         (⟨Q⟩ = 0 exactly)

and the errors |P̂ − ⟨cos θ_P⟩| and |χ̂_Q − χ_Q| / χ_Q against the exact
character-expansion values (not against the reference samples).

**Topological freezing.** For chains (a sample set with ``n_chains`` and
``n_draws_per_chain`` attrs: MALA, parallel tempering / HMC, underdamped
Langevin, flow-MCMC, the MCMC reference), whose rows are stored draw-major
(draw 1 of every chain, then draw 2, …), the rows are put back in chain order
and the integrated autocorrelation time of Q is

    τ_int(Q) = 1/2 + Σ_{t≥1} ρ_Q(t) = M N / (2 ESS_Q)

(Sokal's convention: 1/2 for independent draws), with ESS_Q the pooled
multi-chain autocorrelation ESS of Vehtari et al. 2021
(:func:`boltzbench.mcmc.diagnostics.effective_sample_size`: Geyer's initial
monotone sequence). τ_int is in **kept draws**: a chain that keeps every k-th
step has τ_int in steps k times larger. The cost-fair number is ESS_Q per 10⁶
energy evaluations. Chains whose Q never changes give τ_int = ∞ and ESS 0.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from boltzbench.mcmc.diagnostics import effective_sample_size
from boltzbench.metrics.cost import total_energy_evaluations
from boltzbench.targets.base import Target
from boltzbench.targets.gauge import GaugeObservables

if TYPE_CHECKING:  # only for annotations: metrics never import the sampler families
    from boltzbench.core import SampleSet

__all__ = [
    "has_gauge",
    "plaquette_error",
    "chi_q_error",
    "chain_order",
    "charge_ess",
    "topo_tau_int",
    "topo_ess_per_1e6_evals",
]


def has_gauge(target: Target) -> bool:
    """Whether ``target`` offers the gauge observables and their exact values."""
    return isinstance(target, GaugeObservables)


def _float64(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float64)


def plaquette_error(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
) -> float:
    """|P̂ − ⟨cos θ_P⟩_exact| (dimensionless); the reference is not used."""
    with torch.no_grad():
        p = target.plaquettes(_float64(x)).mean()
    return abs(float(p) - target.exact_plaquette())


def chi_q_error(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
) -> float:
    """|χ̂_Q − χ_Q| / χ_Q with χ̂_Q = mean(Q²) / V; the reference is not used."""
    with torch.no_grad():
        q = target.topological_charge(_float64(x))
    chi, exact = float((q * q).mean()) / target.volume, target.exact_topological_susceptibility()
    return abs(chi - exact) / exact


def chain_order(values: torch.Tensor, samples: SampleSet) -> torch.Tensor | None:
    """Per-row ``values`` ``(rows,)`` of a draw-major chain sample set as ``(chains, draws)``.

    Uses the attrs ``n_chains`` and ``n_draws_per_chain``; a last, partial draw
    (rows not a multiple of the chains) is dropped. None when the set is not
    chains or has fewer than 4 whole draws per chain.
    """
    chains, draws = samples.attrs.get("n_chains"), samples.attrs.get("n_draws_per_chain")
    if chains is None or draws is None:
        return None
    chains = int(chains)
    whole = min(values.shape[0] // chains, int(draws))
    if whole < 4:
        return None
    return values[: whole * chains].reshape(whole, chains).T


def charge_ess(samples: SampleSet, target: Target) -> tuple[float, int] | None:
    """(ESS of Q, rows used) over the chains of ``samples``; None when not chains.

    ESS 0 when Q is constant within every chain (a frozen chain: no draw moved it).
    """
    with torch.no_grad():
        q = target.topological_charge(_float64(samples.x))
    q = chain_order(torch.round(q), samples)
    if q is None:
        return None
    if bool((q == q[:, :1]).all()):
        return 0.0, q.numel()
    return float(effective_sample_size(q)), q.numel()


def topo_tau_int(samples: SampleSet, target: Target) -> float | None:
    """τ_int(Q) = rows / (2 ESS_Q) in kept draws (module docstring); None when not chains."""
    ess = charge_ess(samples, target)
    if ess is None:
        return None
    value, rows = ess
    return rows / (2 * value) if value > 0 else math.inf


def topo_ess_per_1e6_evals(samples: SampleSet, target: Target) -> float | None:
    """ESS_Q per 10⁶ counted energy evaluations (fit + sample); None when not chains,
    NaN when no evaluation was counted."""
    ess = charge_ess(samples, target)
    if ess is None:
        return None
    evals = total_energy_evaluations(samples.attrs)
    return 1e6 * ess[0] / evals if evals > 0 else math.nan
