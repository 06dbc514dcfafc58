from boltzbench.steps.adapter import run_rule

run_rule(snakemake, "aggregate")  # noqa: F821
