"""Mode coverage: how evenly samples visit the modes of a multimodal target.

Defined only for targets that label modes, i.e. that have
``assign_modes(x) -> (n,)`` integer labels in ``[0, n_modes)`` (e.g. the GMM).
"""

from __future__ import annotations

import math

import torch

from boltzbench.targets.base import Target

__all__ = ["has_modes", "normalized_mode_entropy", "mode_coverage"]


def has_modes(target: Target) -> bool:
    """Whether ``target`` labels modes (has ``assign_modes`` and ``n_modes``)."""
    return hasattr(target, "assign_modes") and hasattr(target, "n_modes")


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
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum()) / math.log(n_modes)


def mode_coverage(
    x: torch.Tensor,
    energy: torch.Tensor,
    ref_x: torch.Tensor,
    ref_energy: torch.Tensor,
    target: Target,
    generator: torch.Generator,
) -> float:
    """Normalized entropy of the mode histogram of ``x`` (see :func:`normalized_mode_entropy`).

    Labels come from ``target.assign_modes(x)``; the reference is not used
    (its own value is the noise floor, slightly below 1 for finite n).
    """
    with torch.no_grad():
        labels = target.assign_modes(x.detach().to(torch.float64))
    return normalized_mode_entropy(labels, int(target.n_modes))
