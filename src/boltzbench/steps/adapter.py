"""The one adapter between a Snakemake rule and a step function.

A rule script is two lines::

    from boltzbench.steps.adapter import run_rule
    run_rule(snakemake, "train")

:func:`run_rule` sends logging (and any traceback) to the rule's log, caps torch
threads at the rule's ``threads``, turns on torch's deterministic algorithms in
the reproducible mode (:func:`boltzbench.reproducible.apply_torch`), and calls
the step with named inputs, outputs and params as keyword arguments.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from typing import Any

from boltzbench.reproducible import apply_torch

__all__ = ["run_rule", "call_step", "export_source"]


def export_source(src: str) -> None:
    """Put ``src`` first on ``PYTHONPATH``, which every job inherits (locally and
    through SLURM), so that jobs import boltzbench from the workflow's own
    ``src/`` even when the environment holds an editable install of another
    checkout: the code the workflow hashes is the code its jobs run."""
    others = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != src]
    os.environ["PYTHONPATH"] = os.pathsep.join([src, *others])


def call_step(step: str, inputs: dict, outputs: dict, params: dict) -> Any:
    """Call ``boltzbench.steps.<step>.run(inputs=..., outputs=..., **params)``."""
    module = importlib.import_module(f"boltzbench.steps.{step}")
    return module.run(inputs=inputs, outputs=outputs, **params)


def _plain(named: Any) -> dict[str, Any]:
    """Named inputs/outputs as str (one file) or list[str] (a named list of files)."""
    return {k: v if isinstance(v, str) else [str(p) for p in v] for k, v in named.items()}


def run_rule(smk: Any, step: str) -> None:
    import torch  # here, not at the top: the Snakefile imports this module (export_source)

    log_path = smk.log[0] if len(smk.log) else None
    handler = logging.FileHandler(log_path, mode="w") if log_path else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    torch.set_num_threads(max(1, int(smk.threads)))
    apply_torch()
    try:
        call_step(step, _plain(smk.input), _plain(smk.output), dict(smk.params.items()))
    except Exception:
        logging.getLogger("boltzbench").error("step %s failed:\n%s", step, traceback.format_exc())
        print(f"boltzbench step {step!r} failed; see {log_path}", file=sys.stderr)
        raise
