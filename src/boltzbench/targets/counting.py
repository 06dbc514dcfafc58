"""Counting every evaluation of a target's energy and gradient.

:class:`CountingTarget` wraps any :class:`~boltzbench.targets.base.Target`. Each
row passed to ``energy`` adds one energy evaluation; each row whose gradient is
taken (through ``energy_and_grad`` or through autograd's backward pass) adds one
gradient evaluation. Non-finite energies are counted too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from boltzbench.targets.base import Target

__all__ = ["CountingTarget", "EvalCounts", "BudgetExceeded"]


class BudgetExceeded(RuntimeError):
    """Raised when a call would take the counted evaluations past the budget."""


@dataclass
class EvalCounts:
    """Evaluation counts: rows of energy, rows of gradient, non-finite energies."""

    energy: int = 0
    grad: int = 0
    nonfinite: int = 0

    def as_dict(self, prefix: str = "") -> dict[str, int]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


class _CountBackward(torch.autograd.Function):
    """Identity in the forward pass; counts rows when the gradient flows back."""

    @staticmethod
    def forward(ctx, e: torch.Tensor, counts: EvalCounts) -> torch.Tensor:  # type: ignore[override]
        ctx.counts = counts
        return e.view_as(e)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        ctx.counts.grad += grad.shape[0]
        return grad, None


#: lazily noted non-finite counts are summed into one tensor every this many notes
_COLLAPSE = 256


class CountingTarget(Target):
    """A target that counts its own use. It forwards every attribute to ``target``.

    Parameters
    ----------
    target
        The wrapped target.
    budget
        The most energy evaluations allowed, or None for no cap. A call that
        would exceed it raises :class:`BudgetExceeded` before it evaluates
        (and sets ``exhausted``), so ``counts.energy`` never exceeds it. Every
        gradient row comes with its energy row, so the budget caps both.
    """

    def __init__(self, target: Target, budget: int | None = None):
        super().__init__()
        self.target = target
        self.dim = target.dim
        self.exact_sampling = target.exact_sampling
        self.log_Z = target.log_Z
        self.description = target.description
        self.budget = budget
        self._counts = EvalCounts()
        #: non-finite energies counted on the device (0-d tensors), not yet in ``counts``
        self._pending: list[torch.Tensor] = []
        #: True once a call was refused because it would exceed the budget
        self.exhausted = False

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["target"], name)

    def base_location(self) -> torch.Tensor | None:
        return self.target.base_location()

    @property
    def counts(self) -> EvalCounts:
        """The counts so far (non-finite energies noted lazily are added on reading)."""
        if self._pending:
            self._counts.nonfinite += int(torch.stack(self._pending).sum())
            self._pending = []
        return self._counts

    @counts.setter
    def counts(self, counts: EvalCounts) -> None:
        self._counts, self._pending = counts, []

    def reset(self) -> EvalCounts:
        """Return the counts so far and start again from zero."""
        old, self.counts = self.counts, EvalCounts()
        return old

    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.counts.energy

    def charge(self, n: int, grad: bool = False) -> None:
        """Count ``n`` energy rows (and ``n`` gradient rows where ``grad``) about to be
        evaluated outside :meth:`energy`, e.g. by a compiled kernel.

        Raises :class:`BudgetExceeded` (and sets ``exhausted``), counting nothing,
        when they would exceed the budget: call it *before* evaluating.
        """
        counts = self._counts
        if self.budget is not None and counts.energy + n > self.budget:
            self.exhausted = True
            raise BudgetExceeded(
                f"{n} more energy evaluations would exceed the budget of {self.budget} "
                f"({counts.energy} used)"
            )
        counts.energy += n
        if grad:
            counts.grad += n

    def note_nonfinite(self, count: torch.Tensor) -> None:
        """Add ``count`` (a 0-d integer tensor) non-finite energies, lazily: no device
        synchronisation until ``counts`` is read, and no tensor operation per call but
        one per :data:`_COLLAPSE` calls (a list append: kernels call it every step)."""
        pending = self._pending
        pending.append(count.detach())
        if len(pending) >= _COLLAPSE:
            self._pending = [torch.stack(pending).sum()]

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        self.charge(x.shape[0])
        e = self.target.energy(x)
        self.counts.nonfinite += int((~torch.isfinite(e.detach())).sum())
        if e.requires_grad:
            e = _CountBackward.apply(e, self.counts)
        return e

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.target.sample(n, generator)
