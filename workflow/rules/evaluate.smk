# Evaluation: one metrics file per (target, method, seed), and the noise floor
# of every sample metric per target.


rule evaluate:
    input:
        samples=rules.sample.output.samples,
        reference=f"{RESULTS}/{{target}}/reference/eval.zarr",
    output:
        metrics=f"{RESULTS}/{{target}}/{{method}}/seed{{seed}}/metrics.json",
    log:
        f"{LOGS}/evaluate/{{target}}_{{method}}_seed{{seed}}.log",
    benchmark:
        f"{LOGS}/benchmarks/evaluate/{{target}}_{{method}}_seed{{seed}}.tsv"
    conda:
        "../../envs/boltzbench.yaml"
    params:
        target_name="{target}",
        target=target_spec,
        method_name="{method}",
        seed=lambda w: int(w.seed),
        n_eval=CFG.evaluation.n_eval,
        source=source("evaluate"),
    script:
        "../scripts/evaluate.py"


rule noise_floor:
    input:
        eval=f"{RESULTS}/{{target}}/reference/eval.zarr",
        floor=f"{RESULTS}/{{target}}/reference/floor.zarr",
    output:
        floor=f"{RESULTS}/{{target}}/noise_floor.json",
    log:
        f"{LOGS}/noise_floor/{{target}}.log",
    benchmark:
        f"{LOGS}/benchmarks/noise_floor/{{target}}.tsv"
    conda:
        "../../envs/boltzbench.yaml"
    params:
        target_name="{target}",
        target=target_spec,
        n_eval=CFG.evaluation.n_eval,
        source=source("noise_floor"),
    script:
        "../scripts/noise_floor.py"
