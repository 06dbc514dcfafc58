"""Methods: every sampler family behind one interface, one registry.

Build a method from its config entry with ``METHODS.build(kind, **params)``.
"""

from __future__ import annotations

from boltzbench.methods.base import Method, SampleSet
from boltzbench.registry import Registry

__all__ = ["METHODS", "Method", "SampleSet"]

METHODS: Registry[Method] = Registry("method")

# One line per family; a family's module is imported when it is first used.
METHODS.register_lazy("mala", "boltzbench.methods.mala:MALA")
METHODS.register_lazy("smc", "boltzbench.methods.smc:SMC")
METHODS.register_lazy("flow", "boltzbench.methods.flow:FlowMethod")
METHODS.register_lazy("pt", "boltzbench.methods.pt:ParallelTempering")
METHODS.register_lazy("diffusion", "boltzbench.methods.diffusion:DiffusionSampler")
METHODS.register_lazy("fab", "boltzbench.methods.fab:FAB")
METHODS.register_lazy("flow_mcmc", "boltzbench.methods.flow_mcmc:FlowMCMC")
METHODS.register_lazy("flow_matching", "boltzbench.methods.flow_matching:FlowMatching")
