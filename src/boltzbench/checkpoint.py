"""Periodic checkpoints of long loops (flow training, MCMC), resumed after a kill.

A :class:`Checkpoint` is one file per job. A loop calls :meth:`Checkpoint.restore`
once before it starts and :meth:`Checkpoint.save` whenever :meth:`Checkpoint.due`
says so; the job removes the file (:meth:`Checkpoint.clear`) once its artifact is
written. A job killed at any moment (even SIGKILL) and run again picks up at the
last saved step, and on CPU with the same seed it ends with exactly the result
of an uninterrupted run, because the loop saves everything its future depends
on: parameters, optimizer and scheduler state, chain states **and the states of
the random generators**.

Besides the loop's own state, the caller can :meth:`~Checkpoint.track` named
extras, such as the evaluation counts of a
:class:`~boltzbench.targets.CountingTarget` and the wall seconds spent so far,
so that the costs recorded in the artifact cover the killed attempts too.

Safety:

* the file is written to a temporary path beside it and renamed into place, so
  a kill during a save leaves the previous checkpoint intact;
* it is read with ``torch.load(weights_only=True)``: tensors, numbers, strings
  and containers only, nothing is unpickled;
* it carries a ``key`` (a hash of the job's config slice, code, input
  content and device); a file with another key is ignored and removed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["Checkpoint", "NO_CHECKPOINT"]

log = logging.getLogger(__name__)


class Checkpoint:
    """The checkpoint file of one job.

    Parameters
    ----------
    path
        Where the file lives, or None for a checkpoint that never saves.
    every
        Save every ``every`` loop steps (0: never).
    key
        Identifies the job's config and code; a file with another key is stale.
    """

    def __init__(self, path: str | Path | None, every: int = 0, key: str = ""):
        if every < 0:
            raise ValueError(f"checkpoint interval must be >= 0, got {every}")
        self.path = None if path is None else Path(path)
        self.every, self.key = int(every), key
        self._extras: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {}
        #: the loop step the last :meth:`restore` resumed from (0: a fresh start)
        self.resumed_from = 0

    @property
    def enabled(self) -> bool:
        return self.path is not None and self.every > 0

    def track(self, name: str, get: Callable[[], Any], set: Callable[[Any], None]) -> None:
        """Save ``get()`` with every checkpoint and hand it to ``set`` on restore."""
        self._extras[name] = (get, set)

    def due(self, step: int) -> bool:
        """Whether to save after ``step`` loop steps are done."""
        return self.enabled and step > 0 and step % self.every == 0

    def save(self, step: int, state: dict[str, Any]) -> None:
        """Write ``state`` (after ``step`` loop steps) with the tracked extras, atomically."""
        if not self.enabled:
            return
        extras = {name: get() for name, (get, _) in self._extras.items()}
        payload = {"key": self.key, "step": int(step), "state": state, "extras": extras}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.path.parent.glob(f".{self.path.name}.tmp-*"):  # of killed saves
            stale.unlink(missing_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        torch.save(payload, tmp)
        os.replace(tmp, self.path)

    def restore(self) -> tuple[int, dict[str, Any]] | None:
        """(step, state) of a valid checkpoint, with the extras handed back; else None."""
        if not self.enabled or not self.path.exists():
            return None
        try:
            payload = torch.load(self.path, weights_only=True, map_location="cpu")
        except Exception as err:  # a foreign or damaged file: start afresh
            log.warning("ignoring unreadable checkpoint %s: %s", self.path, err)
            self.clear()
            return None
        if payload.get("key") != self.key:
            log.warning("ignoring checkpoint %s of another config or code", self.path)
            self.clear()
            return None
        for name, (_, set_) in self._extras.items():
            if name in payload["extras"]:
                set_(payload["extras"][name])
        self.resumed_from = payload["step"]
        log.info("resuming from checkpoint %s at step %d", self.path, payload["step"])
        return payload["step"], payload["state"]

    def clear(self) -> None:
        """Remove the file (after the job's artifact is written)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


#: a checkpoint that never saves or restores (the default of every loop)
NO_CHECKPOINT = Checkpoint(None)
