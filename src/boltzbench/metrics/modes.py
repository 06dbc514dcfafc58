"""Mode metrics: how a sampler distributes its mass over the modes of a multimodal target.

Defined for targets that label modes (``target.n_modes > 0``: GMM-40's 40
components, ManyWell's 2^(dim/2) well configurations) through
``assign_modes(x) -> (n,)`` labels in ``[0, n_modes)``, with the exact mode
probabilities π from ``target.mode_weights()``.

Every metric here counts the rows the sampler drew but that are not finite
(``invalid``, a fraction of all rows) as mass in no mode: the empirical mode
weights are p̂_k = (1 − invalid) · (count_k / n) over the n finite rows scored.

* :func:`mode_tv` — ½ (Σ_k |p̂_k − π_k| + invalid), the total-variation distance
  between the empirical and the exact mode weights, the invalid mass an extra
  category of exact weight 0.
* :func:`modes_found` — the number of modes k with p̂_k ≥ :data:`FOUND_FRACTION`
  · π_k and at least one sample, i.e. holding at least a tenth of their exact
  weight.
* :func:`mode_coverage` — the normalized entropy H(p̂)/log K (1 when all K
  equally weighted modes are visited equally); only for targets whose modes
  are equally weighted, where it is meaningful. exp(H) is the number of
  equally visited modes it corresponds to: on GMM-40, 0.578 is
  40^0.578 ≈ 8.4 modes.

Each has a noise floor (an exact sampler's value at the same N_eval): with a
finite sample, the floor of modes_found on ManyWell-32 is far below 2^16,
and that of mode TV above 0.
"""

from __future__ import annotations

import math

import torch

from boltzbench.targets.base import Target

__all__ = [
    "FOUND_FRACTION",
    "has_modes",
    "has_mode_weights",
    "has_equal_modes",
    "mode_histogram",
    "normalized_mode_entropy",
    "mode_coverage",
    "mode_tv",
    "modes_found",
]

#: a mode is "found" when it holds at least this fraction of its exact weight
FOUND_FRACTION = 0.1


def has_modes(target: Target) -> bool:
    """Whether ``target`` labels modes (``n_modes > 0``, with ``assign_modes``)."""
    return target.n_modes > 0


def has_mode_weights(target: Target) -> bool:
    """Whether ``target`` labels modes and knows their exact weights."""
    return has_modes(target) and target.mode_weights() is not None


def has_equal_modes(target: Target) -> bool:
    """Whether ``target``'s modes are known to be equally weighted (e.g. GMM-40)."""
    if not has_mode_weights(target):
        return False
    w = target.mode_weights()
    return bool(torch.allclose(w, torch.full_like(w, 1.0 / w.numel())))


def mode_histogram(x: torch.Tensor, target: Target, invalid: float = 0.0) -> torch.Tensor:
    """p̂_k = (1 − invalid) · count_k / n over the n rows of ``x``, shape ``(n_modes,)``.

    All zeros when ``x`` has no rows.
    """
    n_modes = int(target.n_modes)
    if x.shape[0] == 0:
        return torch.zeros(n_modes, dtype=torch.float64)
    with torch.no_grad():
        labels = target.assign_modes(x.detach().to(torch.float64)).reshape(-1).long().cpu()
    counts = torch.bincount(labels, minlength=n_modes).to(torch.float64)
    return (1.0 - invalid) * counts / counts.sum()


def normalized_mode_entropy(labels: torch.Tensor, n_modes: int) -> float:
    """H(p̂) / log K for the histogram p̂_k = #{i : labels_i = k} / n of K modes.

    H(p̂) = −Σ_k p̂_k log p̂_k with 0 log 0 = 0. 1 when every mode is visited
    equally often, 0 when all samples sit in one mode. Defined as 1 for K = 1
    and as 0 for an empty ``labels``.
    """
    if n_modes <= 1:
        return 1.0
    if labels.numel() == 0:
        return 0.0
    counts = torch.bincount(labels.reshape(-1).long(), minlength=n_modes).to(torch.float64)
    return _entropy(counts / counts.sum()) / math.log(n_modes)


def _entropy(p: torch.Tensor) -> float:
    """−Σ p log p over the non-zero entries (nats)."""
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def mode_coverage(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
    invalid: float = 0.0,
) -> float:
    """H(p̂)/log K of the mode histogram (see :func:`mode_histogram`); the invalid mass
    is not a mode, so it only lowers the entropy. The reference is not used."""
    if target.n_modes <= 1:
        return 1.0
    return _entropy(mode_histogram(x, target, invalid)) / math.log(target.n_modes)


def mode_tv(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
    invalid: float = 0.0,
) -> float:
    """½ (Σ_k |p̂_k − π_k| + invalid) ∈ [0, 1], π the exact mode weights."""
    p_hat = mode_histogram(x, target, invalid)
    pi = target.mode_weights().to(torch.float64)
    if x.shape[0] == 0:  # nothing scored: all the mass is missing
        return 1.0
    return 0.5 * (float((p_hat - pi).abs().sum()) + invalid)


def modes_found(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
    invalid: float = 0.0,
) -> float:
    """#{k : p̂_k ≥ FOUND_FRACTION · π_k and p̂_k > 0}, as a float."""
    p_hat = mode_histogram(x, target, invalid)
    pi = target.mode_weights().to(torch.float64)
    return float(((p_hat >= FOUND_FRACTION * pi) & (p_hat > 0)).sum())
