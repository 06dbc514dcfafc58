"""Compiled kernels: ``torch.compile`` where the platform supports it, eager otherwise.

Eager torch launches one small operation at a time; a MALA step on 4,096
chains is some sixty of them, each reading and writing ``(chains, dim)``
arrays. ``torch.compile`` (TorchInductor) fuses the arithmetic of a step into a
few loops, as XLA does for a JAX sampler. The kernels of this package compile
the *pure* parts of a step only:

* the target's energy and gradient (:func:`energy_and_grad`), through
  ``torch.func.grad_and_value`` of the energy, or the target's own
  ``energy_and_grad`` where it overrides the autograd one;
* the arithmetic around it (the Langevin proposal, the leapfrog kicks, the
  Hastings ratio, the accept/reject of every field).

The random draws stay eager, so that a compiled and an eager run draw the same
numbers from the same generator and differ only by float rounding. Counting
stays exact: a :class:`~boltzbench.targets.counting.CountingTarget` charges
its rows before the compiled inner energy runs (refusing past its budget
exactly as it does eagerly) and counts the gradient rows and non-finite
energies after.

The switch, ``compile``, is one of

``"auto"``
    compile where :func:`supported` (``torch.compile`` exists and, on the CPU,
    a C++ compiler is on the path); eager elsewhere, silently;
``"true"`` (or True)
    compile; where that is not supported, warn once and run eager;
``"false"`` (or False)
    eager, the exact code path of a build without this module.

A compiled function that fails to compile or to run (an energy TorchDynamo
cannot trace, a missing compiler) warns once, naming the function and the
error, and runs eager from then on (:class:`Compiled`).
"""

from __future__ import annotations

import functools
import shutil
import sys
import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from boltzbench.targets.base import Target
from boltzbench.targets.counting import CountingTarget

__all__ = ["Switch", "SWITCHES", "resolve", "supported", "Compiled", "energy_and_grad"]

#: the values of a ``compile`` setting
Switch = Literal["auto", "true", "false"] | bool
SWITCHES = ("auto", "true", "false")

#: names of the functions that already warned about falling back to eager
_WARNED: set[str] = set()


def resolve(switch: Switch) -> bool:
    """Whether ``switch`` asks to compile on this platform (see the module docstring).

    ``"true"`` where :func:`supported` is false warns once and gives False.
    ValueError for anything but the values of :data:`SWITCHES` or a bool.
    """
    if isinstance(switch, bool):
        switch = "true" if switch else "false"
    if switch not in SWITCHES:
        raise ValueError(f"compile must be one of {', '.join(SWITCHES)} or a bool, got {switch!r}")
    if switch == "false":
        return False
    ok = supported()
    if not ok and switch == "true":
        _warn_once("torch.compile", "not supported on this platform")
    return ok


@functools.cache
def supported() -> bool:
    """``torch.compile`` is available and (on the CPU) a C++ compiler is on the path."""
    if not hasattr(torch, "compile") or sys.platform == "win32":
        return False
    return any(shutil.which(cc) for cc in ("c++", "g++", "clang++", "cc"))


def _warn_once(name: str, why: str) -> None:
    if name in _WARNED:
        return
    _WARNED.add(name)
    warnings.warn(f"{name}: compilation unavailable ({why}); running eager", stacklevel=3)


class Compiled:
    """``fn`` compiled by ``torch.compile`` on first call, or ``eager`` where that fails.

    Parameters
    ----------
    fn
        A pure tensor function (no random draws, no Python side effects).
    name
        Names the function in the fallback warning.
    enabled
        False: always run ``eager``.
    eager
        What runs eagerly (default ``fn``); it must compute what ``fn`` does.

    A call whose compiled version raises warns once (per ``name``) and runs
    ``eager`` on the same arguments, and every later call runs ``eager``. An
    error of ``eager`` itself propagates.
    """

    def __init__(
        self,
        fn: Callable,
        name: str,
        enabled: bool = True,
        eager: Callable | None = None,
    ):
        self.name, self.eager = name, fn if eager is None else eager
        self.fast = torch.compile(fn, dynamic=False) if enabled else None

    def __call__(self, *args):
        if self.fast is not None:
            try:
                return self.fast(*args)
            except Exception as err:  # noqa: BLE001 - any failure of the compiler
                self.fast = None
                _warn_once(self.name, f"{type(err).__name__}: {str(err)[:200]}")
        return self.eager(*args)

    @property
    def is_compiled(self) -> bool:
        """Whether calls still go to the compiled version."""
        return self.fast is not None


def _counters(target: Target) -> tuple[list[CountingTarget], Target]:
    """The counting wrappers around ``target`` (outermost first) and the target inside."""
    counters = []
    while isinstance(target, CountingTarget):
        counters.append(target)
        target = target.target
    return counters, target


def _grad_and_value(energy: Callable[[Tensor], Tensor]) -> Callable:
    """x ↦ (E(x), ∇E(x)) by ``torch.func``, which TorchDynamo traces (autograd.grad it does not)."""

    def summed(x: Tensor) -> tuple[Tensor, Tensor]:
        e = energy(x)
        return e.sum(), e

    grad_and_value = torch.func.grad_and_value(summed, has_aux=True)

    def evaluate(x: Tensor) -> tuple[Tensor, Tensor]:
        grad, (_, e) = grad_and_value(x)
        return e, grad

    return evaluate


def energy_and_grad(target: Target, switch: Switch = "false") -> Callable:
    """``target.energy_and_grad``, with the energy inside its counting wrappers compiled.

    Off (``resolve(switch)`` false) this *is* ``target.energy_and_grad``. On, a
    call x ↦ (E(x), ∇E(x)) (shapes ``(n,)`` and ``(n, dim)``, detached) charges
    every :class:`~boltzbench.targets.counting.CountingTarget` around the
    target n rows (outermost first, raising
    :class:`~boltzbench.targets.counting.BudgetExceeded` before evaluating, as
    the eager call does), evaluates the inner target compiled (its own
    ``energy_and_grad`` where it overrides the autograd one, else
    ``torch.func.grad_and_value`` of its energy), then adds n gradient rows and
    the non-finite energies to every counter: the counts of an eager call.
    """
    if not resolve(switch):
        return target.energy_and_grad
    counters, inner = _counters(target)
    own = type(inner).energy_and_grad is not Target.energy_and_grad
    fn = inner.energy_and_grad if own else _grad_and_value(inner.energy)
    name = f"{type(inner).__name__}.energy_and_grad"
    fast = Compiled(fn, name, eager=inner.energy_and_grad)

    def evaluate(x: Tensor) -> tuple[Tensor, Tensor]:
        n = x.shape[0]
        for counter in counters:
            counter._charge(n)  # the counter's own budget check, before evaluating
        e, g = fast(x.detach())
        nonfinite = int((~torch.isfinite(e)).sum()) if counters else 0
        for counter in counters:
            counter.counts.grad += n
            counter.counts.nonfinite += nonfinite
        return e.detach(), g.detach()

    return evaluate
