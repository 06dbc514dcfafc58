# Free-energy tasks (config key 'free_energy'): ΔF between two thermodynamic
# states. Each λ-window's MD is its own job; a task's estimates (the MBAR
# reference, FEP, BAR, targeted FEP) read every window; the table reads every task.

FE_TASKS = CFG.free_energy or {}
FE_DIR = f"{RESULTS}/free_energy"


wildcard_constraints:
    fe_task=NAME_RE,
    window=r"\d+",


rule fe_window:
    output:
        store=directory(f"{FE_DIR}/{{fe_task}}/window{{window}}.zarr"),
    log:
        f"{LOGS}/free_energy/{{fe_task}}_window{{window}}.log",
    benchmark:
        f"{LOGS}/benchmarks/free_energy/{{fe_task}}_window{{window}}.tsv"
    conda:
        "../../envs/boltzbench.yaml"
    params:
        stage="window",
        task_name="{fe_task}",
        task=lambda w: canonical(FE_TASKS[w.fe_task].model_dump()),
        k=lambda w: int(w.window),
        checkpoint=f"{RESULTS}/checkpoints/free_energy/{{fe_task}}/window{{window}}.pt",
        source=source("free_energy"),
    script:
        "../scripts/free_energy.py"


rule fe_estimate:
    input:
        windows=lambda w: [
            f"{FE_DIR}/{w.fe_task}/window{k}.zarr"
            for k in range(len(FE_TASKS[w.fe_task].lambdas))
        ],
    output:
        estimates=f"{FE_DIR}/{{fe_task}}/estimates.json",
    log:
        f"{LOGS}/free_energy/{{fe_task}}_estimate.log",
    benchmark:
        f"{LOGS}/benchmarks/free_energy/{{fe_task}}_estimate.tsv"
    conda:
        "../../envs/boltzbench.yaml"
    params:
        stage="estimate",
        task_name="{fe_task}",
        task=lambda w: canonical(FE_TASKS[w.fe_task].model_dump()),
        source=source("free_energy"),
    script:
        "../scripts/free_energy.py"


rule free_energy:
    input:
        estimates=expand(f"{FE_DIR}/{{fe_task}}/estimates.json", fe_task=list(FE_TASKS)),
    output:
        csv=f"{RESULTS}/free_energy.csv",
        markdown=f"{RESULTS}/free_energy.md",
        provenance=f"{RESULTS}/free_energy.provenance.json",
    log:
        f"{LOGS}/free_energy/table.log",
    benchmark:
        f"{LOGS}/benchmarks/free_energy/table.tsv"
    conda:
        "../../envs/boltzbench.yaml"
    params:
        stage="table",
        tasks={t: canonical(s.model_dump()) for t, s in FE_TASKS.items()},
        source=source("free_energy"),
    script:
        "../scripts/free_energy.py"
