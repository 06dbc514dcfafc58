"""Methods: every sampler family behind one interface, one registry.

Build a method from its config entry with :func:`build_method`: the entry
names a registered ``kind`` or a user ``callable`` (``"module:function"`` or a
class) that returns a :class:`Method`; both take ``params`` as keyword
arguments.

Importing this package imports no method and not torch (the families are
registered lazily, ``Method`` and ``SampleSet`` are imported when first read):
the workflow checks a config's kinds and parameter names from the registry's
metadata, and reads the tags it plans jobs with from :mod:`boltzbench.methods.tags`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from boltzbench.registry import Registry, build_spec, lazy_exports, spec_factory

if TYPE_CHECKING:  # imported lazily (see __getattr__); listed for readers and hashing
    from boltzbench.core import SampleSet
    from boltzbench.methods.base import Method

__all__ = ["METHODS", "Method", "SampleSet", "build_method", "method_factory"]

__getattr__ = lazy_exports(
    __name__, {"Method": "boltzbench.methods.base", "SampleSet": "boltzbench.methods.base"}
)

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
METHODS.register_lazy("external", "boltzbench.methods.external:ExternalSamples")
METHODS.register_lazy("underdamped", "boltzbench.methods.underdamped:Underdamped")
METHODS.register_lazy("rdmc", "boltzbench.methods.rdmc:RDMC")
METHODS.register_lazy("cmcd", "boltzbench.methods.cmcd:CMCD")
METHODS.register_lazy("scld", "boltzbench.methods.scld:SCLD")
METHODS.register_lazy("snf", "boltzbench.methods.snf:SNF")
METHODS.register_lazy("walk_jump", "boltzbench.methods.walk_jump:WalkJump")
METHODS.register_lazy("gfn", "boltzbench.methods.gfn:GFN")
METHODS.register_lazy("idem", "boltzbench.methods.idem:IDEM")
METHODS.register_lazy("timewarp", "boltzbench.methods.timewarp:Timewarp")


def method_factory(spec: dict[str, Any]) -> Callable[..., Method]:
    """The factory a method config entry names (``kind`` or ``callable``)."""
    return spec_factory(METHODS, spec)


def build_method(spec: dict[str, Any]) -> Method:
    """Build the method of a config entry ``{kind|callable, params}``; a user
    callable must return a :class:`Method` (RegistryError otherwise)."""
    from boltzbench.methods.base import Method

    return build_spec(METHODS, spec, Method)
