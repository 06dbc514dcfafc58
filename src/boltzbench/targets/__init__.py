"""Targets: densities p(x) ∝ exp(-E(x)) in reduced units, one registry.

Build a target from its config entry with :func:`build_target`. A config entry
either names a registered ``kind`` or a user ``callable`` (``"module:function"``)
that returns a :class:`Target`; both take ``params`` as keyword arguments.
"""

from __future__ import annotations

from typing import Any

from boltzbench.registry import Registry, build_spec, spec_factory
from boltzbench.targets.analytic import GMM, Funnel, ManyWell
from boltzbench.targets.base import Target
from boltzbench.targets.counting import BudgetExceeded, CountingTarget, EvalCounts
from boltzbench.targets.gaussian import Gaussian
from boltzbench.targets.lattice import Phi4
from boltzbench.targets.particles import DoubleWell4, LennardJones, ParticleTarget

__all__ = [
    "TARGETS",
    "Target",
    "CountingTarget",
    "EvalCounts",
    "BudgetExceeded",
    "build_target",
    "target_factory",
    "ParticleTarget",
    "DoubleWell4",
    "LennardJones",
    "Phi4",
]

TARGETS: Registry[Target] = Registry("target")
TARGETS.register("gmm40")(GMM)
TARGETS.register("funnel")(Funnel)
TARGETS.register("manywell")(ManyWell)
TARGETS.register("gaussian")(Gaussian)
TARGETS.register("dw4")(DoubleWell4)
TARGETS.register("lj")(LennardJones)
TARGETS.register("phi4")(Phi4)
TARGETS.register_lazy("aldp", "boltzbench.targets.aldp:AlanineDipeptide")


def target_factory(spec: dict[str, Any]):
    """The factory a target config entry names (``kind`` or ``callable``)."""
    return spec_factory(TARGETS, spec)


def build_target(spec: dict[str, Any]) -> Target:
    """Build the target of a config entry ``{kind|callable, params}``."""
    return build_spec(TARGETS, spec, Target)
