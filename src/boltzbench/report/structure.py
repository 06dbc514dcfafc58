"""Sample figures for structured targets: molecules, particle systems, lattices.

Each function draws one row of panels, the reference first and then each
method (first seed; weighted sets resampled by weight, as the metrics do):

* :func:`ramachandran_row` — free-energy maps F(φ, ψ) = −log p(φ, ψ) in k_BT
  (minimum 0; empty bins blank), dihedrals by mdtraj;
* :func:`distance_row` — histograms of all interatomic distances, reference as
  a black line;
* :func:`magnetization_row` — histograms of the magnetization M = (1/V) Σ φ;
* :func:`topological_charge_row` — histograms of a gauge field's topological
  charge Q (integer bins), each panel with its mean plaquette beside the exact
  value (raw link angles are gauge-dependent and show nothing).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from boltzbench.targets.base import LatticeField, Molecule, ParticleSystem
from boltzbench.targets.gauge import GaugeObservables

__all__ = ["structured_kind", "structure_figure"]

RAMA_BINS = 60


def structured_kind(target) -> str | None:
    """'molecule', 'particles', 'lattice', 'gauge' or None, from the target's hooks
    (:class:`~boltzbench.targets.base.Molecule`, :class:`~boltzbench.targets.base.ParticleSystem`,
    :class:`~boltzbench.targets.base.LatticeField`,
    :class:`~boltzbench.targets.gauge.GaugeObservables`)."""
    if isinstance(target, GaugeObservables):
        return "gauge"
    if isinstance(target, Molecule):
        return "molecule"
    if isinstance(target, ParticleSystem):
        return "particles"
    if isinstance(target, LatticeField):
        return "lattice"
    return None


def _phi_psi(target, x: np.ndarray) -> np.ndarray:
    import mdtraj

    pos = target.positions(torch.as_tensor(x, dtype=torch.float64)).detach().numpy()
    traj = mdtraj.Trajectory(pos, target.mdtraj_topology)
    return np.stack([mdtraj.compute_phi(traj)[1][:, 0], mdtraj.compute_psi(traj)[1][:, 0]], 1)


def _free_energy(angles: np.ndarray) -> np.ndarray:
    edges = np.linspace(-np.pi, np.pi, RAMA_BINS + 1)
    h, _, _ = np.histogram2d(angles[:, 0], angles[:, 1], bins=[edges, edges], density=True)
    with np.errstate(divide="ignore"):
        f = -np.log(h)
    f[np.isinf(f)] = np.nan
    return f - np.nanmin(f)


def ramachandran_row(axes, target, sets) -> None:
    for ax, (title, x) in zip(axes, sets):
        img = ax.imshow(
            _free_energy(_phi_psi(target, x)).T,
            origin="lower",
            extent=(-np.pi, np.pi, -np.pi, np.pi),
            cmap="viridis",
            vmin=0,
            vmax=12,
        )
        ax.set(title=title, xlabel="φ (rad)", ylabel="ψ (rad)")
    fig = axes[0].figure
    fig.subplots_adjust(right=0.9)
    cax = fig.add_axes((0.92, 0.16, 0.012, 0.66))
    fig.colorbar(img, cax=cax, label="−log p(φ, ψ) (k_BT)")


def distance_row(axes, target, sets) -> None:
    dist = [
        target.pair_distances(torch.as_tensor(x, dtype=torch.float64)).reshape(-1).numpy()
        for _, x in sets
    ]
    bins = np.linspace(0, np.quantile(dist[0], 0.999) * 1.2, 100)
    for ax, (title, _), d in zip(axes, sets, dist):
        ax.hist(dist[0], bins=bins, density=True, histtype="step", color="k", label="reference")
        ax.hist(d, bins=bins, density=True, alpha=0.5)
        ax.set(title=title, xlabel="interatomic distance")
    axes[0].legend(fontsize=7)


def magnetization_row(axes, target, sets) -> None:
    mags = [
        target.field(torch.as_tensor(x, dtype=torch.float64)).mean((-1, -2)).numpy()
        for _, x in sets
    ]
    bins = np.linspace(min(m.min() for m in mags), max(m.max() for m in mags), 60)
    for ax, (title, _), m in zip(axes, sets, mags):
        ax.hist(mags[0], bins=bins, density=True, histtype="step", color="k", label="reference")
        ax.hist(m, bins=bins, density=True, alpha=0.5)
        ax.set(title=title, xlabel="magnetization M")
    axes[0].legend(fontsize=7)


def topological_charge_row(axes, target, sets) -> None:
    exact = target.exact_plaquette()
    xs = [torch.as_tensor(x, dtype=torch.float64) for _, x in sets]
    charges = [target.topological_charge(x).round().numpy() for x in xs]
    plaquettes = [float(target.plaquettes(x).mean()) for x in xs]
    top = max(int(np.abs(q).max()) for q in charges)
    bins = np.arange(-top - 0.5, top + 1.5)
    for ax, (title, _), q, p in zip(axes, sets, charges, plaquettes):
        ax.hist(charges[0], bins=bins, density=True, histtype="step", color="k", label="reference")
        ax.hist(q, bins=bins, density=True, alpha=0.5)
        ax.set(title=title, xlabel="charge Q")
        note = f"⟨cos θ_P⟩ {p:.4f}\nexact {exact:.4f}"
        ax.text(0.03, 0.97, note, transform=ax.transAxes, va="top", fontsize=7)
    axes[0].legend(fontsize=7)


ROWS = {
    "molecule": ramachandran_row,
    "particles": distance_row,
    "lattice": magnetization_row,
    "gauge": topological_charge_row,
}


def structure_figure(target_name: str, target, sets: list[tuple[str, np.ndarray]]) -> plt.Figure:
    """One row: ``sets`` = [("reference", x), (method, x), ...] for a structured target."""
    kind = structured_kind(target)
    fig, axes = plt.subplots(1, len(sets), figsize=(3.4 * len(sets), 3.4), squeeze=False)
    fig.subplots_adjust(top=0.82, bottom=0.16)
    drawn = [(ax, s) for ax, s in zip(axes[0], sets) if len(s[1])]
    for ax, (title, x) in zip(axes[0], sets):
        if not len(x):
            ax.text(0.5, 0.5, "no finite samples", ha="center", transform=ax.transAxes)
            ax.set(title=title)
    ROWS[kind]([ax for ax, _ in drawn], target, [s for _, s in drawn])
    fig.suptitle(f"{target_name}: samples (first seed) vs reference")
    return fig
