from boltzbench.steps.adapter import run_rule

run_rule(snakemake, "train")  # noqa: F821
