"""Helpers shared by the steps: generators, dtypes, timing, building parts."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any

import torch

from boltzbench.hashing import derive_seed
from boltzbench.methods import METHODS, Method
from boltzbench.targets import CountingTarget, Target, build_target

__all__ = ["generator", "build_counted_target", "build_method", "timed", "resolve_device"]


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


def resolve_device(setting: str) -> torch.device:
    """The device of a train or sample job for the config's ``device`` setting.

    ``"cpu"`` is the CPU; ``"cuda"`` is the job's GPU and raises when CUDA is
    not available; ``"auto"`` is the GPU when CUDA is available, else the CPU.
    """
    if setting not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {setting!r}")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "config key 'device' is 'cuda' but this job sees no CUDA device "
            "(set device: auto or cpu, or run the job on a GPU node)"
        )
    use_cuda = setting == "cuda" or (setting == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")
