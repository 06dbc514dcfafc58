from boltzbench.steps.adapter import run_rule

run_rule(snakemake, "md")  # noqa: F821
