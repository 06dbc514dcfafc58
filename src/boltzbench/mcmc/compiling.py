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

A kernel handed a :class:`CountedPotential` (built by :func:`potential`)
fuses a whole step into ONE compiled graph (:meth:`CountedPotential.fuse`):
the proposal, the energy and gradient, the Hastings ratio and the accept and
select of every field, so that a step is one call into compiled code. The
draws of the step are made eagerly before the call and passed in as tensors;
counting happens outside the graph by shape arithmetic (``n`` rows per
evaluation, charged *before* the graph runs, so that a budget refuses exactly
where an eager run does) and the graph returns its count of non-finite
energies as a tensor, added to the counters lazily (no device synchronisation
per step).

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
import inspect
import itertools
import shutil
import sys
import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from boltzbench.mcmc.proposal import Potential, State, potential_from
from boltzbench.targets.base import Target
from boltzbench.targets.counting import CountingTarget

__all__ = [
    "Switch",
    "SWITCHES",
    "check",
    "resolve",
    "supported",
    "Compiled",
    "signature",
    "CountedPotential",
    "potential",
    "nonfinite",
    "energy_and_grad",
]

#: the values of a ``compile`` setting
Switch = Literal["auto", "true", "false"] | bool
SWITCHES = ("auto", "true", "false")

#: names of the functions that already warned about falling back to eager
_WARNED: set[str] = set()


def check(switch: Switch) -> Switch:
    """``switch`` itself where it is one of :data:`SWITCHES` or a bool, else ValueError
    (for constructors: no compiling, no warning)."""
    if not isinstance(switch, bool) and switch not in SWITCHES:
        raise ValueError(f"compile must be one of {', '.join(SWITCHES)} or a bool, got {switch!r}")
    return switch


def resolve(switch: Switch) -> bool:
    """Whether ``switch`` asks to compile on this platform (see the module docstring).

    ``"true"`` where :func:`supported` is false warns once and gives False.
    ValueError for anything but the values of :data:`SWITCHES` or a bool.
    """
    if isinstance(check(switch), bool):
        switch = "true" if switch else "false"
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
    fullgraph
        Compile ``fn`` as one graph (``torch.compile(fullgraph=True)``): a graph
        break is a compilation failure, and so a fallback to ``eager``.
    skip_guards
        Skip TorchDynamo's guard evaluation
        (``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``, torch ≥ 2.6)
        on a call whose :func:`signature` (the shape, stride, dtype, device and
        ``requires_grad`` of every tensor argument, the value of every other one,
        and the grad mode) equals that of an earlier, guarded call. The graph run
        is then the one the guards chose for that signature: safe for a function
        whose graph depends on nothing else, which holds for ``fn`` bound to
        fixed tensors and numbers (a fused kernel step on a fixed target). It
        saves the guards' cost (tens of µs per call), which dominates a step on
        few chains.

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
        fullgraph: bool = False,
        skip_guards: bool = False,
    ):
        self.name, self.eager = name, fn if eager is None else eager
        if enabled and fullgraph:
            fn = _own_code(fn)
        self.fast = torch.compile(fn, dynamic=False, fullgraph=fullgraph) if enabled else None
        self.skip_guards = skip_guards and _CAN_SKIP_GUARDS
        self._seen: set[tuple] = set()

    def __call__(self, *args):
        if self.fast is not None:
            try:
                return self._fast(args)
            except Exception as err:  # noqa: BLE001 - any failure of the compiler
                self.fast = None
                _warn_once(self.name, f"{type(err).__name__}: {str(err)[:200]}")
        return self.eager(*args)

    def _fast(self, args: tuple):
        """The compiled call; TorchDynamo's guards are skipped where the call's
        :func:`signature` is one already run with them (``skip_guards``)."""
        if not self.skip_guards:
            return self.fast(*args)
        key = signature(args)
        if key in self._seen:
            with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
                return self.fast(*args)
        out = self.fast(*args)  # guarded: compiles or picks the graph for this signature
        self._seen.add(key)
        return out

    @property
    def is_compiled(self) -> bool:
        """Whether calls still go to the compiled version."""
        return self.fast is not None


#: ``torch.compiler.set_stance(skip_guard_eval_unsafe=...)`` exists (torch ≥ 2.6)
_CAN_SKIP_GUARDS = hasattr(torch.compiler, "set_stance") and (
    "skip_guard_eval_unsafe" in inspect.signature(torch.compiler.set_stance).parameters
)


def signature(args: tuple) -> tuple:
    """What TorchDynamo's guards on ``args`` look at (see :class:`Compiled`): per
    tensor (also inside tuples) its shape, stride, dtype, device and
    ``requires_grad``; any other value itself; and whether grad mode is on."""
    key: list = [torch.is_grad_enabled()]
    for a in args:
        if isinstance(a, tuple):
            key.append(signature(a))
        elif isinstance(a, Tensor):
            key.append((a.shape, a.stride(), a.dtype, a.device, a.requires_grad))
        else:
            key.append((type(a), a))
    return tuple(key)


def _own_code(fn: Callable) -> Callable:
    """``fn`` behind a function with a code object of its own.

    TorchDynamo keeps its compiled graphs per code object, at most
    ``recompile_limit`` (8) of them: every fused step of every potential would
    share the code of one wrapper (or of :func:`functools.partial`'s) and, past
    eight potentials in a process, fail to compile.
    """

    def call(*args):
        return fn(*args)

    call.__code__ = call.__code__.replace(co_name=f"fused_{next(_CODES)}")
    return call


_CODES = itertools.count()


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


def _traceable(inner: Target) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """x ↦ (E(x), ∇E(x)) of ``inner`` in a form TorchDynamo traces: its own
    ``energy_and_grad`` where it overrides the autograd one, else ``torch.func``."""
    if type(inner).energy_and_grad is not Target.energy_and_grad:
        return inner.energy_and_grad
    return _grad_and_value(inner.energy)


def nonfinite(energy: Tensor) -> Tensor:
    """The number of non-finite entries of ``energy`` (a 0-d integer tensor)."""
    return (~torch.isfinite(energy)).sum()


class CountedPotential:
    """A potential whose evaluation splits into counting (eager) and a pure tensor function.

    Parameters
    ----------
    pure
        Positions ``(n, dim)`` → :class:`~boltzbench.mcmc.proposal.State` (or a
        state with further fields), a pure tensor function that
        ``torch.compile`` can trace whole: no counting, no randomness.
    counters
        The :class:`~boltzbench.targets.counting.CountingTarget` wrappers to
        charge, outermost first.
    enabled
        Whether :meth:`fuse` compiles (False: the fused step runs eagerly).
    name
        Names the potential in fallback warnings.

    Called on x it is an ordinary potential: it charges every counter
    ``len(x)`` energy and gradient rows (raising
    :class:`~boltzbench.targets.counting.BudgetExceeded` before evaluating, as
    an eager call does), evaluates ``pure`` (compiled) and notes the non-finite
    energies. A kernel uses :meth:`charge`, :meth:`note` and :meth:`fuse`
    instead, to run a whole step as one compiled graph.
    """

    def __init__(
        self,
        pure: Callable[[Tensor], State],
        counters: list[CountingTarget],
        enabled: bool = True,
        name: str = "potential",
    ):
        self.pure, self.counters, self.enabled, self.name = pure, counters, enabled, name
        self._fused: dict[Callable, Compiled] = {}
        self._evaluate = self.fuse(_evaluate)

    def charge(self, n: int) -> None:
        """Count ``n`` rows of energy and gradient on every counter (refusing past a budget)."""
        for counter in self.counters:
            counter.charge(n, grad=True)

    def note(self, count: Tensor) -> None:
        """Add ``count`` non-finite energies (0-d tensor) to every counter, lazily."""
        for counter in self.counters:
            counter.note_nonfinite(count)

    def fuse(self, step: Callable) -> Compiled:
        """``step(pure, *tensors)`` with ``pure`` bound, compiled as one graph (once per step
        function; :class:`Compiled` falls back to eager where compiling fails)."""
        if step not in self._fused:
            name = f"{getattr(step, '__qualname__', 'step')} on {self.name}"
            fn = functools.partial(step, self.pure)
            self._fused[step] = Compiled(fn, name, self.enabled, fullgraph=True, skip_guards=True)
        return self._fused[step]

    def map(self, fn: Callable[[Tensor, State], State], name: str) -> CountedPotential:
        """The potential x ↦ ``fn(x, pure(x))`` on the same counters (one evaluation per
        row, e.g. a tempered potential), with graphs of its own. ``fn`` must be a pure
        tensor function; tensors it closes over must stay the same objects."""
        pure = self.pure

        def mapped(x: Tensor) -> State:
            return fn(x, pure(x))

        return CountedPotential(mapped, self.counters, self.enabled, name)

    def __call__(self, x: Tensor) -> State:
        self.charge(x.shape[0])
        state, count = self._evaluate(x.detach())
        self.note(count)
        return state


def _evaluate(pure: Callable[[Tensor], State], x: Tensor) -> tuple[State, Tensor]:
    """One evaluation and its count of non-finite energies (the graph of a bare call)."""
    state = pure(x)
    return state, nonfinite(state.energy)


def potential(target: Target, switch: Switch = "false") -> Potential:
    """The potential of ``target`` (one energy-and-gradient evaluation per row).

    Off (``resolve(switch)`` false) this is ``potential_from(target.energy_and_grad)``,
    the eager code path. On, a :class:`CountedPotential` of the target inside its
    counting wrappers, which kernels fuse into their compiled step.
    """
    if not resolve(switch):
        return potential_from(target.energy_and_grad)
    counters, inner = _counters(target)
    evaluate = _traceable(inner)

    def pure(x: Tensor) -> State:
        e, g = evaluate(x)
        return State(x, e, g)

    return CountedPotential(pure, counters, name=f"{type(inner).__name__}")


def energy_and_grad(target: Target, switch: Switch = "false") -> Callable:
    """``target.energy_and_grad``, with the energy inside its counting wrappers compiled.

    Off (``resolve(switch)`` false) this *is* ``target.energy_and_grad``. On, a
    call x ↦ (E(x), ∇E(x)) (shapes ``(n,)`` and ``(n, dim)``, detached) is a
    call of :func:`potential`: it charges every counter n rows before
    evaluating, as the eager call does, and notes the non-finite energies.
    """
    if not resolve(switch):
        return target.energy_and_grad
    evaluate = potential(target, switch)

    def energy_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
        state = evaluate(x)
        return state.energy, state.grad

    return energy_and_grad
