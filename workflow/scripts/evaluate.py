from boltzbench.steps.adapter import run_rule

run_rule(snakemake, "evaluate")  # noqa: F821
