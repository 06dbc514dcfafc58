"""What the conformance checks share: the error they raise, and typical inputs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from boltzbench.targets.base import Target

__all__ = ["ConformanceError", "require", "typical_points", "run_checks"]


class ConformanceError(AssertionError):
    """A method, target or metric broke the contract; the message names it, the
    check that failed and why. An AssertionError, so test runners report it as a
    failed assertion."""


def require(ok: bool, subject: str, check: str, why: str) -> None:
    """Raise :class:`ConformanceError` "<subject> fails <check>: <why>" unless ``ok``."""
    if not ok:
        raise ConformanceError(f"{subject} fails {check!r}: {why}")


def typical_points(
    target: Target, n: int, generator: torch.Generator, noise: float = 0.05
) -> torch.Tensor:
    """Points where ``target`` has finite energy, float64 ``(n, dim)``: exact samples,
    else its base location plus ``noise``·N(0, I) (molecules, particle systems),
    else N(0, I)."""
    if target.exact_sampling:
        return target.sample(n, generator).double()
    loc = target.base_location()
    x = torch.randn(n, target.dim, generator=generator, dtype=torch.float64)
    return x if loc is None else loc.double() + noise * x


def run_checks(
    registry: dict[str, Callable[..., str | None]],
    names: Iterable[str] | None,
    subject: str,
    *args: Any,
) -> dict[str, str]:
    """Run the checks ``names`` (all of ``registry`` when None) on ``args``, in
    registry order; ``{check: "passed" | "skipped: why"}``. A check returns None
    when it passed, or the reason it does not apply; it raises
    :class:`ConformanceError` when it fails. Skips are printed."""
    chosen = list(registry) if names is None else list(names)
    unknown = sorted(set(chosen) - set(registry))
    if unknown:
        raise ValueError(f"unknown checks {unknown}; valid: {', '.join(registry)}")
    report = {}
    for name in (n for n in registry if n in chosen):
        skipped = registry[name](*args)
        report[name] = "passed" if skipped is None else f"skipped: {skipped}"
        if skipped is not None:
            print(f"{subject}: check {name!r} skipped: {skipped}")
    return report
