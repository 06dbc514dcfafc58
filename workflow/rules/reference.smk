# Reference data: exact samples of each target, in three independent splits:
# 'train' (data for data-based training), and 'eval' and 'floor', whose
# distance to each other is every sample metric's noise floor.


rule reference:
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
        source=source("reference"),
    script:
        "../scripts/reference.py"
