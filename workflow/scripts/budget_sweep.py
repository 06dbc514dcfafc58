from boltzbench.steps.adapter import run_rule

run_rule(snakemake, "budget_sweep")  # noqa: F821
