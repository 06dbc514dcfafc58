# Evaluation: one metrics file per (target, method, seed), and the noise floor
# of every sample metric per (target, seed), against the same reference rows.


rule evaluate:
    input:
        unpack(evaluate_inputs),
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
        method=method_spec,
        seed=lambda w: int(w.seed),
        n_eval=lambda w: eval_size(CFG, w.target),
        source=source("evaluate"),
    script:
        "../scripts/evaluate.py"


rule noise_floor:
    input:
        eval=f"{RESULTS}/{{target}}/reference/eval.zarr",
        floor=f"{RESULTS}/{{target}}/reference/floor.zarr",
    output:
        floor=f"{RESULTS}/{{target}}/noise_floor/seed{{seed}}.json",
    log:
        f"{LOGS}/noise_floor/{{target}}_seed{{seed}}.log",
    benchmark:
        f"{LOGS}/benchmarks/noise_floor/{{target}}_seed{{seed}}.tsv"
    conda:
        "../../envs/boltzbench.yaml"
    params:
        target_name="{target}",
        target=target_spec,
        seed=lambda w: int(w.seed),
        n_eval=lambda w: eval_size(CFG, w.target),
        n_samples=CFG.sampling.n_samples,
        replicates=CFG.evaluation.floor_replicates,
        source=source("noise_floor"),
    script:
        "../scripts/noise_floor.py"
