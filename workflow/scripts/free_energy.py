from boltzbench.steps.adapter import run_rule

run_rule(snakemake, "free_energy")  # noqa: F821
