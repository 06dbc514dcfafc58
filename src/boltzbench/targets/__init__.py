"""Targets: densities p(x) ∝ exp(-E(x)) in reduced units, one registry.

Build a target from its config entry with :func:`build_target`. A config entry
either names a registered ``kind`` or a user ``callable`` (``"module:function"``)
that returns a :class:`Target`; both take ``params`` as keyword arguments.

Importing this package imports no target and not torch: every entry is
registered lazily and the classes below are imported when first read, so the
workflow checks a config's kinds and parameter names (from the registry's
metadata) without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from boltzbench.registry import Registry, build_spec, lazy_exports, spec_factory

if TYPE_CHECKING:  # imported lazily (see __getattr__); listed for readers and hashing
    from boltzbench.targets.analytic import GMM, GMM25, Funnel, ManyWell
    from boltzbench.targets.base import (
        DescribesCOM,
        InvariantFeatures,
        LatticeField,
        MDSystem,
        Molecule,
        ParticleChart,
        ParticleSystem,
        Target,
    )
    from boltzbench.targets.counting import BudgetExceeded, CountingTarget, EvalCounts
    from boltzbench.targets.gauge import U1, GaugeObservables
    from boltzbench.targets.gaussian import Gaussian
    from boltzbench.targets.lattice import Phi4
    from boltzbench.targets.liquid import KobAndersenMixture, LennardJonesLiquid
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
    "GMM",
    "GMM25",
    "Funnel",
    "ManyWell",
    "Gaussian",
    "DoubleWell4",
    "LennardJones",
    "Phi4",
    "LennardJonesLiquid",
    "KobAndersenMixture",
    # optional hooks a target may provide (see boltzbench.targets.base)
    "ParticleSystem",
    "ParticleChart",
    "LatticeField",
    "Molecule",
    "InvariantFeatures",
    "DescribesCOM",
    "MDSystem",
    "U1",
    "GaugeObservables",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "GMM": "boltzbench.targets.analytic",
        "GMM25": "boltzbench.targets.analytic",
        "Funnel": "boltzbench.targets.analytic",
        "ManyWell": "boltzbench.targets.analytic",
        "Target": "boltzbench.targets.base",
        "ParticleSystem": "boltzbench.targets.base",
        "ParticleChart": "boltzbench.targets.base",
        "LatticeField": "boltzbench.targets.base",
        "Molecule": "boltzbench.targets.base",
        "InvariantFeatures": "boltzbench.targets.base",
        "DescribesCOM": "boltzbench.targets.base",
        "MDSystem": "boltzbench.targets.base",
        "BudgetExceeded": "boltzbench.targets.counting",
        "CountingTarget": "boltzbench.targets.counting",
        "EvalCounts": "boltzbench.targets.counting",
        "Gaussian": "boltzbench.targets.gaussian",
        "Phi4": "boltzbench.targets.lattice",
        "DoubleWell4": "boltzbench.targets.particles",
        "LennardJones": "boltzbench.targets.particles",
        "ParticleTarget": "boltzbench.targets.particles",
        "LennardJonesLiquid": "boltzbench.targets.liquid",
        "KobAndersenMixture": "boltzbench.targets.liquid",
        "U1": "boltzbench.targets.gauge",
        "GaugeObservables": "boltzbench.targets.gauge",
    },
)

TARGETS: Registry[Target] = Registry("target")
TARGETS.register_lazy("gmm40", "boltzbench.targets.analytic:GMM")
TARGETS.register_lazy("funnel", "boltzbench.targets.analytic:Funnel")
TARGETS.register_lazy("manywell", "boltzbench.targets.analytic:ManyWell")
TARGETS.register_lazy("gaussian", "boltzbench.targets.gaussian:Gaussian")
TARGETS.register_lazy("dw4", "boltzbench.targets.particles:DoubleWell4")
TARGETS.register_lazy("lj", "boltzbench.targets.particles:LennardJones")
TARGETS.register_lazy("phi4", "boltzbench.targets.lattice:Phi4")
TARGETS.register_lazy("aldp", "boltzbench.targets.aldp:AlanineDipeptide")
TARGETS.register_lazy("gmm25", "boltzbench.targets.analytic:GMM25")
TARGETS.register_lazy("lj_liquid", "boltzbench.targets.liquid:LennardJonesLiquid")
TARGETS.register_lazy("ka_mixture", "boltzbench.targets.liquid:KobAndersenMixture")
TARGETS.register_lazy("u1", "boltzbench.targets.gauge:U1")


def target_factory(spec: dict[str, Any]):
    """The factory a target config entry names (``kind`` or ``callable``)."""
    return spec_factory(TARGETS, spec)


def build_target(spec: dict[str, Any]) -> Target:
    """Build the target of a config entry ``{kind|callable, params}``."""
    from boltzbench.targets.base import Target

    return build_spec(TARGETS, spec, Target)
