"""The tags the workflow plans a method's jobs with, read without importing it.

Building the DAG needs four facts of each (method, target) entry: whether it
trains on reference data (``needs_data``: the train job's input), whether it
has a density, exact or a path estimate (``has_density``: the evaluate job
reads its model), whether its
costs are declared (``declares_costs``: it stays out of a budget sweep) and
which outside files it reads (``input_files``: the sample job's inputs). The
classes hold them (:class:`~boltzbench.methods.Method`'s capability tags), but
a class is a module that imports torch, and every Snakemake start, the
re-parse of each SLURM job included, plans jobs.

So each registered family states them here as a function of its params,
without importing it. :func:`method_tags` answers from that table, and builds
the method (imports it) only for an entry it does not know: a user
``callable``, or a family registered without a line here. The table repeats
the classes; ``tests/test_config.py`` checks it against them for every
family, and the full validation of a config (in Snakemake's main process)
checks it against the built method of every entry it runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

__all__ = ["PlanTags", "STATIC_TAGS", "method_tags", "tags_of"]


@dataclass(frozen=True)
class PlanTags:
    """The capability tags of one method entry that decide its jobs' inputs."""

    needs_data: bool = False
    #: an exact (``Method.has_density``) or path (``has_path_density``) density
    has_density: bool = False
    declares_costs: bool = False
    #: ``{role: path}``: files from outside the pipeline that sampling reads
    input_files: dict[str, str] = field(default_factory=dict)


def _fixed(**tags: Any) -> Callable[[dict[str, Any]], PlanTags]:
    """Tags that do not depend on the params."""
    return lambda params: PlanTags(**tags)


def _mle(params: dict[str, Any] | None) -> bool:
    """Whether a flow's params train it by maximum likelihood (on reference data)."""
    return (params or {}).get("mode") == "mle"


#: registered family -> its tags as a function of its params (defaults not filled in)
STATIC_TAGS: dict[str, Callable[[dict[str, Any]], PlanTags]] = {
    "mala": _fixed(),
    "smc": _fixed(),
    "pt": _fixed(),
    "diffusion": _fixed(has_density=True),
    "fab": _fixed(has_density=True),
    "flow": lambda p: PlanTags(needs_data=_mle(p), has_density=True),
    "flow_mcmc": lambda p: PlanTags(needs_data=_mle(p.get("flow_params"))),
    "flow_matching": _fixed(needs_data=True, has_density=True),
    "external": lambda p: PlanTags(
        declares_costs=True, input_files={"external_samples": str(p["path"])}
    ),
    "underdamped": _fixed(),
    "rdmc": _fixed(),
    "cmcd": _fixed(has_density=True),
    "scld": _fixed(),
    "snf": lambda p: PlanTags(needs_data=p.get("loss", "kl") != "kl", has_density=True),
    "walk_jump": _fixed(),
    "gfn": _fixed(has_density=True),
    "idem": _fixed(),
    "timewarp": _fixed(needs_data=True),
}


def tags_of(method: Any) -> PlanTags:
    """The :class:`PlanTags` of a built method."""
    return PlanTags(
        needs_data=bool(getattr(method, "needs_data", False)),
        has_density=bool(method.has_density or getattr(method, "has_path_density", False)),
        declares_costs=bool(method.declares_costs),
        input_files=dict(method.input_files()),
    )


def method_tags(entry: dict[str, Any]) -> PlanTags:
    """The :class:`PlanTags` of a method entry ``{kind|callable, params}``: from
    :data:`STATIC_TAGS` for a registered family (no import), else from the built
    method (a user callable is imported and called). Cached per entry."""
    return _tags(json.dumps(entry, sort_keys=True, default=str))


@cache
def _tags(key: str) -> PlanTags:
    entry = json.loads(key)
    static = STATIC_TAGS.get(entry.get("kind") or "")
    if static is not None:
        return static(entry.get("params") or {})
    from boltzbench.methods import build_method

    return tags_of(build_method(entry))
