# Helpers shared by every rule: the validated config, the run matrix, params slices.
#
# Nothing here imports torch, a target or a method while the Snakefile is parsed,
# except the full validation in Snakemake's main process: every start parses the
# workflow, and so does each job's own Snakemake (twice per SLURM job).

import inspect
import sys
from pathlib import Path

SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)

from boltzbench.steps.adapter import export_source

export_source(SRC)  # jobs run this src/ too: the code hashed here is the code run
from boltzbench.config import (
    eval_size,
    reference_sizes,
    sweep_members,
    sweep_methods,
    validate_config,
)
from boltzbench.hashing import closure_hash
from boltzbench.methods import METHODS as METHOD_REGISTRY
from boltzbench.methods import method_factory
from boltzbench.methods.tags import method_tags
from boltzbench.targets import TARGETS as TARGET_REGISTRY
from boltzbench.targets import target_factory

# Full validation (it builds every target and method, so imports torch) once per
# `snakemake` invocation, in the main process; a job's re-parse (local
# `--mode subprocess`, SLURM's `--mode remote`) runs only the static checks of
# the config that its main process validated in full before submitting it.
# A full validation that passed is recorded under a key of the config, the
# source and the files it names (boltzbench.config.validation_key), so a later
# invocation on the same key runs the static checks only.
CFG = validate_config(
    config,
    full=workflow.is_main_process,
    cache=Path(".snakemake/boltzbench/validated"),
)
RESULTS = CFG.results_dir.rstrip("/")
LOGS = f"{RESULTS}/logs"
TARGETS = list(CFG.targets)
METHODS = list(CFG.methods)
SEEDS = list(CFG.seeds)
# the budget sweep's runs are methods of their own, named '<method>-budget<N>'
SWEEP = sweep_members(CFG)
SWEEP_SEEDS = (CFG.budget_sweep.seeds or SEEDS) if CFG.budget_sweep else []
SWEEP_TARGETS = [CFG.budget_sweep.target] if CFG.budget_sweep else []
ALL_METHODS = {**CFG.methods, **sweep_methods(CFG)}
NAME_RE = r"[A-Za-z0-9][A-Za-z0-9_-]*"


def source(step):
    """A params function: the hash of the code a job of ``step`` runs.

    Snakemake's code trigger does not see modules imported from src/, so each
    rule gets, as a param, the hash of the boltzbench files its step imports
    (found statically), plus the modules of the job's method and target (a
    lazily registered one, such as aldp, is not in any step's imports), or the
    file of a user method or target. A sample job's hash also covers the files
    from outside the pipeline that its method reads (``Method.input_files``: an
    external sample file). Changing code reruns exactly the jobs that run it;
    so does turning the reproducible mode on or off (it changes the kernels).
    """

    def params(wildcards):
        modules = [f"boltzbench.steps.{step}", "boltzbench.steps.adapter"]
        extra = []
        if "method" in wildcards.keys():
            spec = ALL_METHODS[wildcards.method]
            if spec.kind:  # a registered method, imported lazily
                modules.append(METHOD_REGISTRY.module_of(spec.kind))
            else:  # a user method: its file
                extra.append(inspect.getfile(method_factory(spec.entry())))
            if step == "sample":
                extra += method_inputs(wildcards).values()
        if "target" in wildcards.keys():
            kind = CFG.targets[wildcards.target].kind
            if kind:  # a registered target, possibly imported lazily (aldp)
                modules.append(TARGET_REGISTRY.module_of(kind))
            else:  # a user target: its file
                extra.append(inspect.getfile(target_factory(target_spec(wildcards))))
        code = closure_hash(*modules, extra_files=tuple(extra))
        # the reproducible mode changes the kernels jobs run: toggling it reruns them
        return f"{code}+reproducible" if CFG.reproducible else code

    return params


def canonical(obj):
    """``obj`` with every dict's keys sorted, so params compare equal across configs."""
    if isinstance(obj, dict):
        return {k: canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    return obj


def target_spec(wildcards):
    return canonical(CFG.targets[wildcards.target].model_dump())


def method_spec(wildcards):
    """The method's kind (or callable) and its effective params on this target
    (overrides applied)."""
    return canonical(ALL_METHODS[wildcards.method].entry(wildcards.target))


def method_inputs(wildcards):
    """Files from outside the pipeline that the method's sampling reads, by role
    (an external sample file); inputs of the sample job."""
    return method_tags(method_spec(wildcards)).input_files


def method_budget(wildcards):
    """The method's evaluation budget on this target (None: none)."""
    return ALL_METHODS[wildcards.method].budget_for(wildcards.target)


def method_targets(method):
    return CFG.methods[method].targets or TARGETS


def runs():
    """Every (target, method, seed) of the leaderboard's run matrix."""
    return [(t, m, s) for m in METHODS for t in method_targets(m) for s in SEEDS]


def sweep_runs():
    """Every (target, method, seed) of the budget sweep."""
    return [(ALL_METHODS[m].targets[0], m, s) for m in SWEEP for s in SWEEP_SEEDS]


def needs_data(wildcards):
    return method_tags(method_spec(wildcards)).needs_data


def run_paths(pattern, seeds=None, matrix=runs):
    return [
        pattern.format(target=t, method=m, seed=s)
        for t, m, s in matrix()
        if seeds is None or s in seeds
    ]


def reference_size(wildcards):
    return reference_sizes(CFG, wildcards.target)[wildcards.split]


def reference_kind(target):
    spec = CFG.targets[target].reference
    return spec.kind if spec else "exact"


def reference_inputs(wildcards):
    """The MD replica stores an ``md`` reference split merges (none for other kinds)."""
    if reference_kind(wildcards.target) != "md":
        return {}
    n = CFG.targets[wildcards.target].reference.params.get("n_replicas", 1)
    return {
        "replicas": [
            f"{RESULTS}/{wildcards.target}/md/{wildcards.split}/replica{r}.zarr"
            for r in range(n)
        ]
    }


def md_gpu_request(wildcards):
    """MD replicas ask for a GPU only when their OpenMM platform is CUDA or OpenCL."""
    platform = CFG.targets[wildcards.target].reference.params.get("platform", "auto")
    return 1 if platform in ("CUDA", "OpenCL") else 0


def gpu_request(wildcards):
    """GPUs a train or sample job requests: none when ``device: cpu``, else one."""
    return 0 if CFG.device == "cpu" else 1


def has_density(wildcards):
    return method_tags(method_spec(wildcards)).has_density


def evaluate_inputs(wildcards):
    """The model store, for a method whose density the forward metrics evaluate."""
    if has_density(wildcards):
        w = wildcards
        return {"model": f"{RESULTS}/{w.target}/{w.method}/seed{w.seed}/model.zarr"}
    return {}


def floor_paths(targets, seeds):
    """The noise-floor files of every (target, seed)."""
    return [f"{RESULTS}/{t}/noise_floor/seed{s}.json" for t in targets for s in seeds]


def train_inputs(wildcards):
    if needs_data(wildcards):
        return {"reference": f"{RESULTS}/{wildcards.target}/reference/train.zarr"}
    return {}
