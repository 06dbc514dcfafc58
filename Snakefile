# boltzbench: reference data -> training -> sampling -> evaluation -> report.
# This file only wires the stages together; the logic lives in src/boltzbench.

import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("8.20")


# config.yaml is the default; a --configfile on the command line replaces it
# (Snakemake would otherwise merge the two, leaking default method params).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# The reproducible mode (reproducible: true) pins the CPU code paths that decide
# rounding through environment variables: set here, before common.smk imports
# torch, they hold for this process and every job it starts (local or SLURM).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from boltzbench.reproducible import apply_env, requested

if requested(config):
    apply_env()


include: "workflow/rules/common.smk"


wildcard_constraints:
    target=NAME_RE,
    method=NAME_RE,
    seed=r"\d+",
    split=r"train|eval|floor",
    replica=r"\d+",


include: "workflow/rules/reference.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


if CFG.free_energy:

    include: "workflow/rules/free_energy.smk"


rule all:
    default_target: True
    input:
        rules.aggregate.output,
        rules.figures.output,
        rules.budget_sweep.output if SWEEP else [],
        rules.free_energy.output if CFG.free_energy else [],
