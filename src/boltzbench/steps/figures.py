"""Figures step (PNG): samples against the reference, and training curves.

One job draws them all (a job costs ~3 s of imports on a small machine); the
figures are library code (:mod:`boltzbench.report.figures`).
"""

from __future__ import annotations

from boltzbench.provenance import now, provenance_attrs
from boltzbench.report.figures import samples_figure, save_figure, target_of, training_figure

__all__ = ["run"]


def run(
    *,
    inputs: dict,
    outputs: dict,
    targets: list[str],
    target_specs: dict[str, dict] | None = None,
    source: str = "",
) -> None:
    """Every figure: one samples figure per target, and the training curves.

    Each PNG carries the provenance attributes as JSON in its ``boltzbench``
    text chunk (``PIL.Image.open(path).text["boltzbench"]``).
    """
    started = now()
    files = [*inputs["references"], *inputs["samples"], *inputs["models"]]
    attrs = provenance_attrs(
        "figures",
        {"targets": targets, "target_specs": target_specs},
        None,
        {f"input_{i}": p for i, p in enumerate(files)},
        started,
    )
    for target, ref, out in zip(targets, inputs["references"], outputs["samples"]):
        mine = [p for p in inputs["samples"] if target_of(p) == target]
        spec = (target_specs or {}).get(target)
        save_figure(samples_figure(target, ref, mine, spec), out, attrs)
    save_figure(training_figure(inputs["models"]), outputs["training"], attrs)
