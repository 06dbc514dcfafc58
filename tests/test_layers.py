"""The package is layered: a module imports only from its own layer and those below.

Bottom up: the core types and helpers (``core``, ``hashing``, ``registry``,
``checkpoint``, ``physics``, …); the MD bridge and the targets; the MCMC kernels and loops
(``mcmc``); the samplers (``methods``); the metrics and references; the config,
the report (leaderboard, sweep, figures), the ΔF task (``free_energy``) and the
job helpers (``jobs``); the
pipeline steps and the public checker; the command line. Within ``steps``, a
step module calls only the library: it imports no other step module. Imports under
``if TYPE_CHECKING:`` are for readers and type checkers only and are skipped.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import boltzbench

ROOT = Path(boltzbench.__file__).parent

#: the layer of each top-level module or package of boltzbench (bottom: 0)
LAYERS = {
    "core": 0,
    "hashing": 0,
    "registry": 0,
    "checkpoint": 0,
    "reproducible": 0,
    "estimators": 0,
    "physics": 0,  # independent anchors (equations of state): no boltzbench imports
    "io": 1,
    "md": 1,
    "provenance": 1,
    "targets": 2,
    "external": 3,
    "mcmc": 3,
    "methods": 4,
    "metrics": 4,
    "references": 4,
    "audit": 4,
    "export": 5,
    "free_energy": 5,  # the ΔF task: MD windows, estimators, flow maps (methods)
    "config": 5,
    "compare": 5,
    "status": 5,
    "report": 5,
    "jobs": 5,
    "steps": 6,
    "testing": 6,
    "cli": 7,
    "boltzbench": 0,  # the package's own __init__ (version, lazy names)
}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "boltzbench"


def _runtime_imports(tree: ast.AST):
    """Every ``boltzbench`` module imported outside ``if TYPE_CHECKING:`` blocks."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("boltzbench"):
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("boltzbench"):
                    yield node.lineno, alias.name


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        yield ".".join(("boltzbench", *parts)), path


def test_every_module_has_a_layer():
    missing = {_unit(m) for m, _ in _modules()} - set(LAYERS)
    assert not missing, f"give these modules a layer in LAYERS: {sorted(missing)}"


@pytest.mark.parametrize("module,path", list(_modules()), ids=lambda v: str(v))
def test_no_upward_import(module, path):
    unit = _unit(module)
    upward = [
        f"{path.name}:{line} imports {imported} (layer {LAYERS[_unit(imported)]} > {LAYERS[unit]})"
        for line, imported in _runtime_imports(ast.parse(path.read_text()))
        if LAYERS.get(_unit(imported), 99) > LAYERS[unit]
    ]
    assert not upward, "\n".join(upward)


#: modules of ``steps`` that are plumbing shared by the steps, not steps
STEP_PLUMBING = {"boltzbench.steps", "boltzbench.steps.adapter"}


def _step_modules():
    return [(m, p) for m, p in _modules() if _unit(m) == "steps" and m not in STEP_PLUMBING]


def test_there_are_step_modules():
    names = {m for m, _ in _step_modules()}
    assert {"boltzbench.steps.aggregate", "boltzbench.steps.evaluate"} <= names


@pytest.mark.parametrize("module,path", _step_modules(), ids=lambda v: str(v))
def test_no_step_imports_another_step(module, path):
    """A step calls the library, never another step (the leaderboard, figures and
    sweep are :mod:`boltzbench.report`; the job helpers :mod:`boltzbench.jobs`)."""
    steps = [
        f"{path.name}:{line} imports {imported}"
        for line, imported in _runtime_imports(ast.parse(path.read_text()))
        if imported.startswith("boltzbench.steps")
    ]
    assert not steps, "\n".join(steps)
