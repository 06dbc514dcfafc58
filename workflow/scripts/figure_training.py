from boltzbench.steps.adapter import run_rule

run_rule(snakemake, "figures_training")  # noqa: F821
