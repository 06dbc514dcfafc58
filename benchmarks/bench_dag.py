"""Snakemake dry run and no-op rerun of the real workflow on ~100 and ~1,000 jobs.

Two grid configs of the boltzbench workflow (targets × methods × seeds), written
to a temp dir and validated as the workflow validates them: targets are entries
of the registered kinds under distinct names (``gaussian_0``, ``funnel_1``…),
methods small ``mala_j`` / ``smc_j`` entries, sizes the smallest the schema
allows to be cheap. A run is train + sample + evaluate, each target adds its
'eval' and 'floor' references and its noise floor, and aggregate, figures and
``all`` close the DAG: 3·T·M·S + 3·T + 3 jobs, so (T, M, S) = (3, 2, 5) plans
102 jobs and (9, 6, 6) plans 1,002 (the count reported is what ``snakemake -n``
plans). Everything runs on a snapshot of ``Snakefile``, ``workflow/`` and
``src/`` (:func:`benchmarks._common.snapshot_workflow`): code edits made by
others during the benchmark would change the rules' ``source`` params.

Timed, ``REPEATS`` times, both grids interleaved, medians reported:

(a) ``snakemake -n --cores 2`` in a fresh, empty working directory (no
    ``results/``, no ``.snakemake/``): parse, validate, build the DAG of every
    job, print the plan.
(b) ``snakemake --cores 2`` with every output present and up to date, so it
    finds nothing to do (checked: it must print "Nothing to be done").

How (b)'s state is made without running 1,000 real jobs: from the dry run's
plan, every output is created empty (a directory for each ``.zarr`` store, an
empty file otherwise); then ``snakemake --touch --forceall`` runs every job
through Snakemake's touch executor, which, in DAG order, touches each job's
outputs and records its metadata in ``.snakemake/metadata`` (rule, input list,
params incl. each rule's ``source`` code hash, software stack, input
checksums), exactly as a real run records it. (Snakemake 9's ``--touch`` alone
only warns about missing outputs and creates none, and on outputs created
without ``--forceall`` it finds nothing to do and records no metadata, so the
params/code/input triggers would have nothing to compare against.) So the rerun
makes every check a rerun after a real run makes (mtime, params, input, code,
software-env); only the outputs' bytes are placeholders, which no trigger reads.
A changed method param on such a tree replans that method's chain (checked by
hand). The touch executor sleeps 0.1 s per job so that touched files get
increasing mtimes; here that sleep is set to 0 (setup only, not timed): files
touched later still never get an older mtime, and Snakemake reruns a job only
if an input is strictly newer than its outputs, which the "Nothing to be done"
check confirms.

Run: ``.venv/bin/python -m benchmarks.bench_dag`` from the repository root
(or ``.venv/bin/python benchmarks/bench_dag.py``), 2 to 4 minutes on 2 busy cores.
"""

from __future__ import annotations

import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a file: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (  # noqa: E402
    NO_SLEEP_TOUCH,
    planned_total,
    snakemake,
    snapshot_workflow,
    write_config,
    write_result,
)

#: grid name -> (targets, methods, seeds)
GRIDS = {"100": (3, 2, 5), "1000": (9, 6, 6)}
REPEATS = 3
#: registered target kinds and cheap params, cycled over the targets
KINDS = (
    ("gaussian", {"dim": 2}),
    ("funnel", {"dim": 3}),
    ("manywell", {"dim": 2}),
    ("gmm40", {}),
)


def grid_config(n_targets: int, n_methods: int, n_seeds: int) -> dict:
    """A config of the workflow with the given grid, every size as small as allowed."""
    targets = {}
    for i in range(n_targets):
        kind, params = KINDS[i % len(KINDS)]
        targets[f"{kind}_{i}"] = {"kind": kind, "params": dict(params)}
    methods = {}
    for j in range(n_methods):
        step = round(0.1 * (j + 1), 3)
        if j % 2 == 0:
            params = {"n_chains": 4, "n_warmup": 2, "n_burnin": 1, "thinning": 1}
            methods[f"mala_{j}"] = {"kind": "mala", "params": {**params, "step_size": step}}
        else:
            params = {"n_temps": 2, "n_moves": 1, "step_size": step}
            methods[f"smc_{j}"] = {"kind": "smc", "params": params}
    return {
        "results_dir": "results",
        "device": "cpu",
        "seeds": list(range(n_seeds)),
        "reference": {"n_train": 10, "n_eval": 10},
        "sampling": {"n_samples": 10},
        "evaluation": {"n_eval": 10},
        "targets": targets,
        "methods": methods,
    }


def planned_outputs(dry_run_output: str) -> list[str]:
    """Every output path of every job of a dry run (its ``output:`` lines)."""
    paths: dict[str, None] = {}
    for m in re.finditer(r"^\s*output: (.*)$", dry_run_output, flags=re.M):
        paths.update(dict.fromkeys(p.strip() for p in m.group(1).split(", ")))
    return list(paths)


def make_placeholders(workdir: Path, outputs: list[str]) -> None:
    """An empty directory for each ``.zarr`` store, an empty file for the rest."""
    for rel in outputs:
        path = workdir / rel
        if rel.endswith(".zarr"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()


def main() -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_dag_"))
    try:
        snakefile = snapshot_workflow(tmp / "repo")
        configs = {
            name: write_config(tmp / f"grid{name}.yaml", grid_config(*shape))
            for name, shape in GRIDS.items()
        }
        # (a) dry runs, each in a fresh empty working directory
        dry: dict[str, list[float]] = {name: [] for name in GRIDS}
        jobs, plans = {}, {}
        for rep in range(REPEATS):
            for name, cfg in configs.items():
                work = tmp / f"dry{name}_{rep}"
                work.mkdir()
                seconds, out = snakemake(snakefile, work, cfg, "-n")
                dry[name].append(seconds)
                jobs[name], plans[name] = planned_total(out), out
                if not jobs[name]:
                    raise RuntimeError(f"no job count in the dry run:\n{out[-3000:]}")
                shutil.rmtree(work, ignore_errors=True)
        # (b) setup: placeholder outputs, then --touch --forceall records metadata
        setup = {}
        for name, cfg in configs.items():
            work = tmp / f"noop{name}"
            make_placeholders(work, planned_outputs(plans[name]))
            t0 = time.perf_counter()
            _, out = snakemake(
                snakefile, work, cfg, "--touch", "--forceall", python_code=NO_SLEEP_TOUCH
            )
            setup[name] = time.perf_counter() - t0
            if "not touched" in out:
                raise RuntimeError(f"--touch left outputs missing:\n{out[-3000:]}")
            if (n := len(list((work / ".snakemake/metadata").iterdir()))) < jobs[name]:
                raise RuntimeError(f"only {n} metadata records for {jobs[name]} jobs")
        # (b) no-op reruns
        noop: dict[str, list[float]] = {name: [] for name in GRIDS}
        for _ in range(REPEATS):
            for name, cfg in configs.items():
                seconds, out = snakemake(snakefile, tmp / f"noop{name}", cfg)
                if "Nothing to be done" not in out:
                    raise RuntimeError(f"the no-op rerun of grid {name} ran jobs:\n{out[-3000:]}")
                noop[name].append(seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    small, large = GRIDS
    med = {
        k: {name: statistics.median(v[name]) for name in GRIDS}
        for k, v in (("dry", dry), ("noop", noop))
    }
    result = {"what": "snakemake -n and no-op rerun, real workflow, --cores 2"}
    for name, (t, m, s) in GRIDS.items():
        result[f"grid{name}"] = f"{t} targets x {m} methods x {s} seeds = {jobs[name]} jobs"
    for name in GRIDS:
        result[f"dry_run_s_{jobs[name]}_jobs"] = med["dry"][name]
    for name in GRIDS:
        result[f"noop_rerun_s_{jobs[name]}_jobs"] = med["noop"][name]
    result["job_ratio"] = jobs[large] / jobs[small]
    result["dry_run_scaling"] = med["dry"][large] / med["dry"][small]
    result["noop_rerun_scaling"] = med["noop"][large] / med["noop"][small]
    # a straight line through the two points: fixed cost + per-job cost
    for k in ("dry", "noop"):
        per_job = (med[k][large] - med[k][small]) / (jobs[large] - jobs[small])
        result[f"{k}_ms_per_job"] = 1000 * per_job
        result[f"{k}_fixed_s"] = med[k][small] - per_job * jobs[small]
    result["repeats"] = REPEATS
    result["dry_run_all_s"] = {jobs[n]: [round(x, 2) for x in dry[n]] for n in GRIDS}
    result["noop_rerun_all_s"] = {jobs[n]: [round(x, 2) for x in noop[n]] for n in GRIDS}
    result["touch_setup_s"] = {jobs[n]: round(setup[n], 1) for n in GRIDS}
    write_result("dag", result)
    return result


if __name__ == "__main__":
    main()
