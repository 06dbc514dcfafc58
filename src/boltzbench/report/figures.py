"""Figures (PNG): samples against the reference, and training curves.

* ``samples`` — for a 2-D target, a scatter of each method's samples next to the
  reference; otherwise histograms of the marginals of x₀ and x₁ (Funnel: x₀, x₁;
  ManyWell: the first double-well pair). Weighted sample sets are resampled by
  their normalized weights first (the panel title says so).
* ``training`` — the training loss of every trainable method, one panel per target.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from boltzbench.core import SampleSet  # noqa: E402
from boltzbench.io import atomic_path, dataset_to_samples, load_model, read_store  # noqa: E402
from boltzbench.metrics.evaluate import finite_rows, resample, subsample  # noqa: E402
from boltzbench.report.structure import structure_figure, structured_kind  # noqa: E402
from boltzbench.targets import build_target  # noqa: E402

__all__ = [
    "samples_figure",
    "training_figure",
    "resample_by_weight",
    "save_figure",
    "target_of",
    "N_SHOW",
]

N_SHOW = 2000


def resample_by_weight(s: SampleSet, n: int, seed: int = 0) -> tuple[np.ndarray, bool]:
    """Up to ``n`` finite rows of ``s.x``, resampled by normalized weight when weighted.

    The same resampling as the ``_reweighted`` metrics
    (:func:`boltzbench.metrics.evaluate.resample`).
    """
    g = torch.Generator().manual_seed(seed)
    finite = finite_rows(s)
    rw = resample(finite, n, g)
    return (rw.x.numpy(), True) if rw is not None else (subsample(finite, n, g).x.numpy(), False)


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


def target_of(path: str) -> str:
    """``results/{target}/{method}/seed{seed}/x.zarr`` -> target."""
    return Path(path).parent.parent.parent.name


def samples_figure(
    target_name: str, reference: str, samples: list[str], target_spec: dict | None = None
) -> plt.Figure:
    """The samples of each method (first seed) against the reference.

    Molecules, particle systems and lattices get the panels of
    :mod:`boltzbench.report.structure`; other targets scatter plots (2-D)
    or marginal histograms.
    """
    ref_x, _ = resample_by_weight(dataset_to_samples(read_store(reference)), N_SHOW)
    sets = [
        (_label(p), *resample_by_weight(dataset_to_samples(read_store(p)), N_SHOW)) for p in samples
    ]
    target = build_target(target_spec) if target_spec else None
    if target is not None and structured_kind(target):
        named = [("reference", ref_x)]
        named += [(name + (" (resampled)" if rw else ""), x) for name, x, rw in sets]
        return structure_figure(target_name, target, named)
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
    return fig


def training_figure(models: list[str]) -> plt.Figure:
    """The training loss of every trainable method, one panel per target."""
    curves: dict[str, list[tuple[str, np.ndarray]]] = {}
    for path in models:
        _, history, _ = load_model(path)
        if "loss" in history:
            curves.setdefault(target_of(path), []).append((_label(path), history["loss"]))
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
    return fig


def save_figure(fig, path: str, attrs: dict) -> None:
    """Write ``fig`` to ``path`` as PNG (atomically), with the provenance ``attrs`` as
    JSON in its ``boltzbench`` text chunk (``PIL.Image.open(path).text["boltzbench"]``),
    and close it."""
    metadata = {"boltzbench": json.dumps(attrs, sort_keys=True)}
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", metadata=metadata)
    plt.close(fig)
