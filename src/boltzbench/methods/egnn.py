"""An E(n)-equivariant graph neural network (EGNN) for particle velocities.

The network of Satorras, Hoogeboom & Welling 2021 ("E(n) equivariant graph
neural networks", ICML, arXiv:2102.09844), on the fully connected graph of N
identical particles in d dimensions, as used for the vector field of
equivariant flow matching (Klein, Krämer & Noé 2023, arXiv:2306.15030). Layer
l maps positions x^l ``(n, N, d)`` and node features h^l ``(n, N, H)`` to

    m_ij      = φ_e(h_i, h_j, ‖x_i − x_j‖², a_ij)                   (eq. 3)
    x_i^{l+1} = x_i + 1/(N−1) Σ_{j≠i} (x_i − x_j)/(‖x_i − x_j‖ + 1) φ_x(m_ij)   (eq. 4)
    h_i^{l+1} = h_i + φ_h(h_i, Σ_{j≠i} m_ij)                          (eqs. 5–6)

with the edge feature a_ij = ‖x_i⁰ − x_j⁰‖² (the input distances). The
division by ‖x_i − x_j‖ + 1 is the paper's normalized coordinate update
(Satorras et al., Sec. 3.1 and App.), which keeps updates bounded. The
output velocity is v = x^L − x^0 with its particle mean removed.

Symmetries (tested numerically in float64): for an orthogonal R, a vector c
and a permutation π of the particles,

    v(x R + 1 cᵀ) = v(x) R,    v(π x) = π v(x),

because every message depends on distances only, every coordinate update is a
sum of difference vectors, and all particles share the same functions.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EGNN", "EGNNLayer", "neighbour_index"]


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """Two-layer SiLU MLP n_in → hidden → n_out."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, n_out))


def neighbour_index(n_particles: int) -> torch.Tensor:
    """For each particle i, the other particles j ≠ i in increasing order, shape ``(N, N-1)``."""
    idx = torch.arange(n_particles)
    full = idx.expand(n_particles, n_particles)
    return full[full != idx[:, None]].reshape(n_particles, n_particles - 1)


class EGNNLayer(nn.Module):
    """One EGNN layer (Satorras et al. 2021, eqs. 3–6) on the complete graph.

    Parameters
    ----------
    hidden_features
        Width H of the node features and messages.
    """

    def __init__(self, hidden_features: int):
        super().__init__()
        h = hidden_features
        self.edge = nn.Sequential(_mlp(2 * h + 2, h, h), nn.SiLU())  # φ_e
        self.coord = _mlp(h, h, 1)  # φ_x
        self.node = _mlp(2 * h, h, h)  # φ_h
        # a small last coordinate layer, so the initial field is small (Satorras et al., App.)
        nn.init.xavier_uniform_(self.coord[-1].weight, gain=1e-3)
        nn.init.zeros_(self.coord[-1].bias)

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, a: torch.Tensor, nbr: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update positions ``(n, N, d)`` and features ``(n, N, H)``.

        ``a`` holds the edge features a_ij, shape ``(n, N, N-1, 1)``; ``nbr`` the
        neighbour index of :func:`neighbour_index`.
        """
        diff = x[:, :, None, :] - x[:, nbr, :]  # x_i - x_j, (n, N, N-1, d)
        d2 = diff.pow(2).sum(-1, keepdim=True)
        h_i = h[:, :, None, :].expand(-1, -1, nbr.shape[1], -1)
        m = self.edge(torch.cat([h_i, h[:, nbr, :], d2, a], dim=-1))  # (n, N, N-1, H)
        # the small constant under the root keeps the gradient finite for coincident particles
        unit = diff / (torch.sqrt(d2 + 1e-12) + 1.0)
        x = x + (unit * self.coord(m)).mean(dim=2)
        h = h + self.node(torch.cat([h, m.sum(dim=2)], dim=-1))
        return x, h


class EGNN(nn.Module):
    """A stack of EGNN layers returning a mean-free velocity per particle.

    Parameters
    ----------
    n_particles
        Number of particles N (at least 2).
    in_features
        Width F of the input node features (e.g. features of the time t).
    hidden_features
        Width H of the hidden node features and messages.
    n_layers
        Number of message-passing layers L.
    """

    def __init__(self, n_particles: int, in_features: int, hidden_features: int, n_layers: int):
        super().__init__()
        if n_particles < 2:
            raise ValueError(f"an EGNN needs at least 2 particles, got {n_particles}")
        self.embed = nn.Linear(in_features, hidden_features)
        self.layers = nn.ModuleList(EGNNLayer(hidden_features) for _ in range(n_layers))
        self.register_buffer("nbr", neighbour_index(n_particles), persistent=False)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Velocity ``(n, N, d)`` at positions ``x`` ``(n, N, d)`` with node features
        ``h`` ``(n, N, F)``; the velocity's mean over particles is zero."""
        x0 = x
        diff = x[:, :, None, :] - x[:, self.nbr, :]
        a = diff.pow(2).sum(-1, keepdim=True)  # a_ij = ‖x_i⁰ − x_j⁰‖²
        h = self.embed(h)
        for layer in self.layers:
            x, h = layer(x, h, a, self.nbr)
        v = x - x0
        return v - v.mean(dim=1, keepdim=True)
