"""Helpers shared by the steps: generators, dtypes, timing, building parts."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any

import torch

from boltzbench.hashing import derive_seed
from boltzbench.methods import METHODS, Method
from boltzbench.targets import CountingTarget, Target, build_target

__all__ = ["generator", "build_counted_target", "build_method", "timed"]


def generator(*keys: Any) -> torch.Generator:
    """A CPU generator seeded by :func:`~boltzbench.hashing.derive_seed` of ``keys``."""
    return torch.Generator().manual_seed(derive_seed(*keys))


def build_counted_target(spec: dict[str, Any]) -> CountingTarget:
    """The target of a config entry, wrapped to count its evaluations.

    Its buffers stay float64; energies come out in the dtype of ``x``, which
    each method chooses (its ``dtype`` parameter).
    """
    target: Target = build_target(spec)
    return CountingTarget(target)


def build_method(spec: dict[str, Any]) -> Method:
    return METHODS.build(spec["kind"], **(spec.get("params") or {}))


@contextmanager
def timed(record: dict[str, float], key: str):
    """Add the wall seconds spent in the block to ``record[key]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        record[key] = record.get(key, 0.0) + time.perf_counter() - t0
