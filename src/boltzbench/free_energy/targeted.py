"""Targeted free-energy perturbation with a learned bijection between two states.

Jarzynski 2002 (Phys. Rev. E 65, 046122) and Wirnsberger et al. 2020 ("Targeted
free energy estimation via learned mappings", J. Chem. Phys. 153, 144112): for
an invertible map M and x ~ p_A, the generalized work

    Φ_F(x) = u_B(M(x)) − u_A(x) − log |det ∂M/∂x|

gives ΔF = F_B − F_A = −log E_A[exp(−Φ_F)] exactly, and the closer M pushes
p_A onto p_B, the smaller Var[Φ_F] and the better the FEP estimate; the reverse
work Φ_R(y) = u_A(M⁻¹(y)) − u_B(y) + log |det ∂M/∂x|(M⁻¹(y)) for y ~ p_B
makes a targeted BAR.

The map here is M = g_B⁻¹ ∘ g_A, two coupling flows (:class:`boltzbench.methods.
flows_util.FlowModel`, data → N(0, I)) fitted by maximum likelihood to the
end states' MD frames in alanine dipeptide's internal coordinates (flow B
starts from flow A's parameters). Since q_B = M#q_A exactly,
log |det ∂M/∂x| = log q_A(x) − log q_B(M(x)), so

    Φ_F(x) = u_B(M(x)) + log q_B(M(x)) − u_A(x) − log q_A(x).

Fitting costs no energy evaluation (the frames are the end-state MD's own);
each work costs two (u_A at the frame for its Jacobian term, u_B at the image).
A flow's image can leave the support of the internal coordinates (a dihedral
past ±π): u_B = +inf there, a zero weight (that part of p_B's support is
missed, a bias towards larger ΔF̂ that the fitted flows make small).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch

from boltzbench.free_energy.estimators import Estimate, bar, fep

__all__ = ["MapSettings", "FlowMap", "fit_map", "targeted_estimates"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MapSettings:
    """The flows of the learned map and their maximum-likelihood fit."""

    transforms: int = 4
    hidden_features: tuple[int, ...] = (64, 64)
    n_iter: int = 500
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0


class FlowMap:
    """M = g_B⁻¹ ∘ g_A with the two fitted flows (float64)."""

    def __init__(self, flow_a, flow_b):
        self.flow_a, self.flow_b = flow_a, flow_b

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(M(x), log q_A(x), log q_B(M(x))), shapes (n, d), (n,), (n,)."""
        qa, qb = self.flow_a(), self.flow_b()
        y = qb.transform.inv(qa.transform(x))
        return y, qa.log_prob(x), qb.log_prob(y)

    @torch.no_grad()
    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(M⁻¹(y), log q_B(y), log q_A(M⁻¹(y)))."""
        qa, qb = self.flow_a(), self.flow_b()
        x = qa.transform.inv(qb.transform(y))
        return x, qb.log_prob(y), qa.log_prob(x)


def _fit(flow, data: torch.Tensor, s: MapSettings, gen: torch.Generator):
    opt = torch.optim.Adam(flow.parameters(), lr=s.lr)
    for _ in range(s.n_iter):
        idx = torch.randint(len(data), (min(s.batch_size, len(data)),), generator=gen)
        loss = -flow.log_prob(data[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    log.info("flow fitted: mean log q on its data %.3f", flow.log_prob(data).mean().item())
    return flow


def fit_map(x_a: torch.Tensor, x_b: torch.Tensor, settings: MapSettings) -> FlowMap:
    """Fit flow A to ``x_a`` (n_A, d), then a copy of it to ``x_b`` (n_B, d); float64."""
    from boltzbench.methods.flows_util import FlowModel

    torch.manual_seed(settings.seed)  # the MLP initialization
    gen = torch.Generator().manual_seed(settings.seed)
    pooled = torch.cat([x_a, x_b])
    flow_a = FlowModel(
        x_a.shape[1],
        pooled.mean(0),
        pooled.std(0).clamp_min(1e-6),
        transforms=settings.transforms,
        hidden_features=settings.hidden_features,
    ).double()
    flow_a = _fit(flow_a, x_a.double(), settings, gen)
    flow_b = _fit(copy.deepcopy(flow_a), x_b.double(), settings, gen)
    return FlowMap(flow_a.requires_grad_(False), flow_b.requires_grad_(False))


def targeted_estimates(
    fmap: FlowMap, energy_a, energy_b, x_a: torch.Tensor, x_b: torch.Tensor
) -> tuple[dict[str, Estimate], int]:
    """Targeted FEP (forward) and targeted BAR of F_B − F_A, and the energy evaluations spent.

    ``energy_a``, ``energy_b``: reduced energies (n,) of points (n, d) in k_BT
    (+inf outside the support); ``x_a``, ``x_b``: independent evaluation frames
    of each state (not those the flows were fitted to).
    """
    with torch.no_grad():
        y, lqa, lqb = fmap.forward(x_a)
        phi_f = energy_b(y) + lqb - energy_a(x_a) - lqa
        x, lqb_r, lqa_r = fmap.inverse(x_b)
        phi_r = energy_a(x) + lqa_r - energy_b(x_b) - lqb_r
    phi_f, phi_r = phi_f.double().numpy(), phi_r.double().numpy()
    log.info(
        "targeted works: forward %.3f ± %.3f (%d finite of %d), reverse %.3f ± %.3f",
        *_moments(phi_f),
        np.isfinite(phi_f).sum(),
        len(phi_f),
        *_moments(phi_r),
    )
    out = {"tfep": fep(phi_f), "tbar": bar(phi_f, phi_r)}
    return out, 2 * (len(x_a) + len(x_b))


def _moments(w: np.ndarray) -> tuple[float, float]:
    w = w[np.isfinite(w)]
    return float(w.mean()), float(w.std())
