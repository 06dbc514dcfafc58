# Training: fit each method on each target (a no-op fit for MCMC and SMC).


rule train:
    input:
        unpack(train_inputs),
    output:
        model=directory(f"{RESULTS}/{{target}}/{{method}}/seed{{seed}}/model.zarr"),
    log:
        f"{LOGS}/train/{{target}}_{{method}}_seed{{seed}}.log",
    benchmark:
        f"{LOGS}/benchmarks/train/{{target}}_{{method}}_seed{{seed}}.tsv"
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
        checkpoint=f"{RESULTS}/checkpoints/{{target}}/{{method}}/seed{{seed}}/train.pt",
        checkpoint_every=CFG.checkpoint.every,
        source=source("train"),
    script:
        "../scripts/train.py"
