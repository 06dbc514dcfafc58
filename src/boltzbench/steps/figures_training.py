"""Training-curve figure step (see :mod:`boltzbench.steps.figures`)."""

from boltzbench.steps.figures import run_training as run

__all__ = ["run"]
