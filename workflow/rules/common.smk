# Helpers shared by every rule: the validated config, the run matrix, params slices.

import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from boltzbench.config import validate_config
from boltzbench.hashing import source_hash

CFG = validate_config(config)
RESULTS = CFG.results_dir.rstrip("/")
LOGS = f"{RESULTS}/logs"
TARGETS = list(CFG.targets)
METHODS = list(CFG.methods)
SEEDS = list(CFG.seeds)
NAME_RE = r"[A-Za-z0-9][A-Za-z0-9_-]*"

# Snakemake's code trigger does not see modules imported from src/, so each rule
# gets the hash of the source it depends on as a param: changing that code
# reruns exactly the jobs it affects.
SOURCE = {
    "reference": source_hash(("targets",)),
    "train": source_hash(("targets", "methods", "mcmc", "steps")),
    "evaluate": source_hash(("targets", "metrics", "steps")),
    "report": source_hash(("metrics", "steps")),
}


def target_spec(wildcards):
    return CFG.targets[wildcards.target].model_dump()


def method_spec(wildcards):
    """The method's kind and its effective params on this target (overrides applied)."""
    spec = CFG.methods[wildcards.method]
    return {"kind": spec.kind, "params": spec.params_for(wildcards.target)}


def method_targets(method):
    return CFG.methods[method].targets or TARGETS


def runs():
    """Every (target, method, seed) in the run matrix."""
    return [(t, m, s) for m in METHODS for t in method_targets(m) for s in SEEDS]


def needs_data(wildcards):
    from boltzbench.steps.common import build_method

    method = build_method(method_spec(wildcards))
    return getattr(method, "needs_data", False)


def run_paths(pattern, seeds=None):
    return [
        pattern.format(target=t, method=m, seed=s)
        for t, m, s in runs()
        if seeds is None or s in seeds
    ]


def reference_size(wildcards):
    if wildcards.split == "train":
        return CFG.reference.n_train
    return CFG.reference.n_eval


def train_inputs(wildcards):
    if needs_data(wildcards):
        return {"reference": f"{RESULTS}/{wildcards.target}/reference/train.zarr"}
    return {}


def figure_samples(wildcards):
    first = [SEEDS[0]]
    return [
        f"{RESULTS}/{wildcards.target}/{m}/seed{s}/samples.zarr"
        for t, m, s in runs()
        if t == wildcards.target and s in first
    ]
