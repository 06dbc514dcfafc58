# Aggregation and report: the leaderboard, the resolved config and the figures.
# `snakemake --report report.html` shows the outputs marked report(...) here, with
# every rule's runtime.


rule aggregate:
    input:
        metrics=run_paths(f"{RESULTS}/{{target}}/{{method}}/seed{{seed}}/metrics.json"),
        floors=floor_paths(TARGETS, SEEDS),
    output:
        csv=report(
            f"{RESULTS}/leaderboard.csv",
            category="Leaderboard",
            caption="../report/leaderboard.rst",
        ),
        markdown=f"{RESULTS}/leaderboard.md",
        html=report(
            f"{RESULTS}/leaderboard.html",
            category="Leaderboard",
            caption="../report/leaderboard.rst",
        ),
        config=report(
            f"{RESULTS}/config.resolved.yaml",
            category="Config",
            caption="../report/config.rst",
        ),
        provenance=f"{RESULTS}/leaderboard.provenance.json",
    log:
        f"{LOGS}/aggregate.log",
    benchmark:
        f"{LOGS}/benchmarks/aggregate.tsv"
    conda:
        "../../envs/boltzbench.yaml"
    params:
        n_eval={t: eval_size(CFG, t) for t in TARGETS},
        config=canonical(CFG.model_dump(mode="json")),
        source=source("aggregate"),
    script:
        "../scripts/aggregate.py"


rule figures:
    input:
        references=expand(f"{RESULTS}/{{target}}/reference/eval.zarr", target=TARGETS),
        samples=run_paths(
            f"{RESULTS}/{{target}}/{{method}}/seed{{seed}}/samples.zarr",
            seeds=SEEDS[:1],
        ),
        models=run_paths(
            f"{RESULTS}/{{target}}/{{method}}/seed{{seed}}/model.zarr", seeds=SEEDS[:1]
        ),
    output:
        samples=report(
            expand(f"{RESULTS}/figures/{{target}}_samples.png", target=TARGETS),
            category="Figures",
            caption="../report/samples.rst",
        ),
        training=report(
            f"{RESULTS}/figures/training_curves.png",
            category="Figures",
            caption="../report/training.rst",
        ),
    log:
        f"{LOGS}/figures.log",
    benchmark:
        f"{LOGS}/benchmarks/figures.tsv"
    conda:
        "../../envs/boltzbench.yaml"
    params:
        targets=TARGETS,
        target_specs={t: canonical(CFG.targets[t].model_dump()) for t in TARGETS},
        source=source("figures"),
    script:
        "../scripts/figures.py"


rule budget_sweep:
    input:
        metrics=run_paths(
            f"{RESULTS}/{{target}}/{{method}}/seed{{seed}}/metrics.json",
            matrix=sweep_runs,
        ),
        floors=floor_paths(SWEEP_TARGETS, SWEEP_SEEDS),
    output:
        csv=f"{RESULTS}/budget_sweep.csv",
        figure=report(
            f"{RESULTS}/figures/budget_sweep.png",
            category="Figures",
            caption="../report/budget_sweep.rst",
        ),
        provenance=f"{RESULTS}/budget_sweep.provenance.json",
    log:
        f"{LOGS}/budget_sweep.log",
    benchmark:
        f"{LOGS}/benchmarks/budget_sweep.tsv"
    conda:
        "../../envs/boltzbench.yaml"
    params:
        members=SWEEP,
        target=SWEEP_TARGETS[0] if SWEEP_TARGETS else "",
        metric=CFG.budget_sweep.metric if CFG.budget_sweep else "",
        source=source("budget_sweep"),
    script:
        "../scripts/budget_sweep.py"
