from boltzbench.steps.adapter import run_rule

run_rule(snakemake, "figures")  # noqa: F821
