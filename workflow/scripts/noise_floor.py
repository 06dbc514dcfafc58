from boltzbench.steps.adapter import run_rule

run_rule(snakemake, "noise_floor")  # noqa: F821
