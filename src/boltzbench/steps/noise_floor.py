"""Noise-floor step (see :func:`boltzbench.steps.evaluate.run_noise_floor`)."""

from boltzbench.steps.evaluate import run_noise_floor as run

__all__ = ["run"]
