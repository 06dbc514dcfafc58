from boltzbench.steps.adapter import run_rule

run_rule(snakemake, "reference")  # noqa: F821
