from boltzbench.steps.adapter import run_rule

run_rule(snakemake, "sample")  # noqa: F821
