# Aggregation and report: the leaderboard and the figures.


rule aggregate:
    input:
        metrics=run_paths(f"{RESULTS}/{{target}}/{{method}}/seed{{seed}}/metrics.json"),
        floors=expand(f"{RESULTS}/{{target}}/noise_floor.json", target=TARGETS),
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
        provenance=f"{RESULTS}/leaderboard.provenance.json",
    log:
        f"{LOGS}/aggregate.log",
    benchmark:
        f"{LOGS}/benchmarks/aggregate.tsv"
    conda:
        "../../envs/boltzbench.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        n_eval=CFG.evaluation.n_eval,
        source=SOURCE["report"],
    script:
        "../scripts/aggregate.py"


rule sample_figure:
    input:
        reference=f"{RESULTS}/{{target}}/reference/eval.zarr",
        samples=figure_samples,
    output:
        figure=report(
            f"{RESULTS}/figures/{{target}}_samples.png",
            category="Figures",
            caption="../report/samples.rst",
        ),
    log:
        f"{LOGS}/figures/{{target}}_samples.log",
    benchmark:
        f"{LOGS}/benchmarks/figures/{{target}}_samples.tsv"
    conda:
        "../../envs/boltzbench.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        target_name="{target}",
        source=SOURCE["report"],
    script:
        "../scripts/figure_samples.py"


rule training_figure:
    input:
        models=run_paths(
            f"{RESULTS}/{{target}}/{{method}}/seed{{seed}}/model.zarr", seeds=SEEDS[:1]
        ),
    output:
        figure=report(
            f"{RESULTS}/figures/training_curves.png",
            category="Figures",
            caption="../report/training.rst",
        ),
    log:
        f"{LOGS}/figures/training_curves.log",
    benchmark:
        f"{LOGS}/benchmarks/figures/training_curves.tsv"
    conda:
        "../../envs/boltzbench.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        source=SOURCE["report"],
    script:
        "../scripts/figure_training.py"
