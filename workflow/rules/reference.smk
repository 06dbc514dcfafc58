# Reference data, in three independent splits: 'train' (data for data-based
# training), and 'eval' and 'floor', whose distance to each other is every
# sample metric's noise floor. Each target's 'reference' config says how:
# exact sampling or long MCMC here, or MD replicas (one job each) merged here.


rule md_replica:
    output:
        store=directory(f"{RESULTS}/{{target}}/md/{{split}}/replica{{replica}}.zarr"),
    log:
        f"{LOGS}/md/{{target}}_{{split}}_replica{{replica}}.log",
    benchmark:
        f"{LOGS}/benchmarks/md/{{target}}_{{split}}_replica{{replica}}.tsv"
    conda:
        "../../envs/boltzbench.yaml"
    resources:
        gpu=md_gpu_request,
    params:
        target_name="{target}",
        target=target_spec,
        split="{split}",
        replica=lambda w: int(w.replica),
        checkpoint=f"{RESULTS}/checkpoints/{{target}}/md/{{split}}/replica{{replica}}.npz",
        source=source("md"),
    script:
        "../scripts/md.py"


rule reference:
    input:
        unpack(reference_inputs),
    output:
        store=directory(f"{RESULTS}/{{target}}/reference/{{split}}.zarr"),
    log:
        f"{LOGS}/reference/{{target}}_{{split}}.log",
    benchmark:
        f"{LOGS}/benchmarks/reference/{{target}}_{{split}}.tsv"
    conda:
        "../../envs/boltzbench.yaml"
    params:
        target_name="{target}",
        target=target_spec,
        split="{split}",
        n=reference_size,
        checkpoint=f"{RESULTS}/checkpoints/{{target}}/reference/{{split}}.pt",
        checkpoint_every=CFG.checkpoint.every,
        source=source("reference"),
    script:
        "../scripts/reference.py"
