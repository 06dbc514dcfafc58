"""Figure steps (PNG): samples against the reference, and training curves.

* ``samples`` — for a 2-D target, a scatter of each method's samples next to the
  reference; otherwise histograms of the marginals of x₀ and x₁ (Funnel: x₀, x₁;
  ManyWell: the first double-well pair). Weighted sample sets are resampled by
  their normalized weights first (the panel title says so).
* ``training`` — the training loss of every trainable method, one panel per target.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from boltzbench.io import dataset_to_samples, load_model, read_store  # noqa: E402
from boltzbench.methods.base import SampleSet  # noqa: E402

__all__ = ["run", "run_training", "resample_by_weight"]

N_SHOW = 2000


def resample_by_weight(s: SampleSet, n: int, seed: int = 0) -> tuple[np.ndarray, bool]:
    """Up to ``n`` rows of ``s.x``; resampled by normalized weight when weighted."""
    g = torch.Generator().manual_seed(seed)
    ok = torch.isfinite(s.x).all(1) & torch.isfinite(s.energy)
    x = s.x[ok]
    if s.log_weight is not None:
        lw = s.log_weight[ok]
        lw = torch.where(torch.isfinite(lw), lw, torch.tensor(-torch.inf, dtype=lw.dtype))
        if torch.isfinite(lw).any():
            idx = torch.multinomial(torch.softmax(lw, 0), n, replacement=True, generator=g)
            return x[idx].numpy(), True
    idx = torch.randperm(len(x), generator=g)[:n]
    return x[idx].numpy(), False


def _label(path: str) -> str:
    return Path(path).parent.parent.name


def _scatter(ax, x: np.ndarray, title: str, lim: tuple[float, float]) -> None:
    ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4)
    ax.set(title=title, xlim=lim, ylim=lim, aspect="equal")


def _marginals(axes, ref: np.ndarray, x: np.ndarray, title: str) -> None:
    for d, ax in enumerate(axes):
        lo, hi = np.quantile(ref[:, d], [0.001, 0.999])
        bins = np.linspace(lo, hi, 60)
        ax.hist(ref[:, d], bins=bins, density=True, histtype="step", color="k", label="reference")
        ax.hist(x[:, d], bins=bins, density=True, alpha=0.5, label="samples")
        ax.set(title=f"{title}: x{d}")
    axes[0].legend(fontsize=7)


def run(*, inputs: dict, outputs: dict, target_name: str, source: str = "") -> None:
    ref = dataset_to_samples(read_store(inputs["reference"]))
    ref_x, _ = resample_by_weight(ref, N_SHOW)
    sets = [(_label(p), *resample_by_weight(dataset_to_samples(read_store(p)), N_SHOW))
            for p in inputs["samples"]]
    ncol = 1 + len(sets)
    if ref_x.shape[1] == 2:
        lim = (float(ref_x.min()) - 5, float(ref_x.max()) + 5)
        fig, axes = plt.subplots(1, ncol, figsize=(3.2 * ncol, 3.4), squeeze=False)
        _scatter(axes[0, 0], ref_x, "reference", lim)
        for ax, (name, x, rw) in zip(axes[0, 1:], sets):
            _scatter(ax, x, name + (" (resampled)" if rw else ""), lim)
    else:
        fig, axes = plt.subplots(2, len(sets), figsize=(3.4 * len(sets), 5.6), squeeze=False)
        for j, (name, x, rw) in enumerate(sets):
            _marginals(axes[:, j], ref_x, x, name + (" (resampled)" if rw else ""))
    fig.suptitle(f"{target_name}: samples (first seed) vs exact reference")
    fig.tight_layout()
    fig.savefig(outputs["figure"], dpi=110)
    plt.close(fig)


def run_training(*, inputs: dict, outputs: dict, source: str = "") -> None:
    curves: dict[str, list[tuple[str, np.ndarray]]] = {}
    for path in inputs["models"]:
        _, history, attrs = load_model(path)
        if "loss" in history:
            target = Path(path).parent.parent.parent.name
            curves.setdefault(target, []).append((_label(path), history["loss"]))
    n = max(1, len(curves))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, (target, items) in zip(axes[0], sorted(curves.items())):
        for name, loss in items:
            ax.plot(loss, label=name, lw=0.8)
        ax.set(title=target, xlabel="iteration", ylabel="training loss")
        ax.legend(fontsize=7)
    if not curves:
        axes[0, 0].text(0.5, 0.5, "no trainable methods", ha="center")
    fig.tight_layout()
    fig.savefig(outputs["figure"], dpi=110)
    plt.close(fig)
