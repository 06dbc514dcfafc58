# Sampling: draw from each fitted method; the store records every evaluation.


rule sample:
    input:
        unpack(method_inputs),
        model=rules.train.output.model,
    output:
        samples=directory(f"{RESULTS}/{{target}}/{{method}}/seed{{seed}}/samples.zarr"),
    log:
        f"{LOGS}/sample/{{target}}_{{method}}_seed{{seed}}.log",
    benchmark:
        f"{LOGS}/benchmarks/sample/{{target}}_{{method}}_seed{{seed}}.tsv"
    conda:
        "../../envs/boltzbench.yaml"
    resources:
        gpu=gpu_request,
    params:
        target_name="{target}",
        target=target_spec,
        method_name="{method}",
        method=method_spec,
        seed=lambda w: int(w.seed),
        n_samples=CFG.sampling.n_samples,
        budget=method_budget,
        device=CFG.device,
        checkpoint=f"{RESULTS}/checkpoints/{{target}}/{{method}}/seed{{seed}}/sample.pt",
        checkpoint_every=CFG.checkpoint.every,
        source=source("sample"),
    script:
        "../scripts/sample.py"
