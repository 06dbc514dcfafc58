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

Job groups (issue 17). The SLURM profile groups the short jobs
(``profiles/slurm/config.yaml``: ``groups``, ``group-components``); a local run
ignores groups. So the 1,000-job grid is also timed, (a) and (b) alike, as a
cluster invocation plans it: ``--profile profiles/slurm`` (Snakemake's SLURM
executor; a dry run submits nothing, and the no-op rerun finds nothing to
submit), once with the profile as shipped ("grouped") and once with its
grouping keys removed ("ungrouped", the profile before issue 17). Reported
with them: the SLURM jobs each would submit (jobs outside groups, plus one
per group, from the dry run's plan). The SLURM executor plugin runs
``scontrol show config`` (timeout 10 s) at every start; here a stub that fails
at once is first on ``PATH`` (:func:`benchmarks.bench_startup.stub_slurm_probe`,
whose note says why), for every mode.

Run: ``.venv/bin/python -m benchmarks.bench_dag`` from the repository root
(or ``.venv/bin/python benchmarks/bench_dag.py``), 4 to 8 minutes on 2 busy cores.
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

import yaml  # noqa: E402

from benchmarks._common import (  # noqa: E402
    NO_SLEEP_TOUCH,
    REPO,
    planned_total,
    snakemake,
    snapshot_workflow,
    write_config,
    write_result,
)

#: grid name -> (targets, methods, seeds)
GRIDS = {"100": (3, 2, 5), "1000": (9, 6, 6)}
REPEATS = 3
#: the keys of the SLURM profile that make job groups
GROUPING_KEYS = ("groups", "group-components", "keep-incomplete", "keep-going")
#: profile mode -> grids it is timed on ("local": no profile, ``--cores 2``)
MODES = {"local": tuple(GRIDS), "slurm grouped": ("1000",), "slurm ungrouped": ("1000",)}
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


def profiles(tmp: Path) -> dict[str, tuple[str, ...]]:
    """mode -> Snakemake arguments: none, the SLURM profile, and it without groups."""
    shipped = REPO / "profiles/slurm"
    ungrouped = tmp / "profiles/slurm_ungrouped"
    ungrouped.mkdir(parents=True)
    settings = yaml.safe_load((shipped / "config.yaml").read_text())
    for key in GROUPING_KEYS:
        settings.pop(key)
    (ungrouped / "config.yaml").write_text(yaml.safe_dump(settings))
    return {
        "local": (),
        "slurm grouped": ("--profile", str(shipped)),
        "slurm ungrouped": ("--profile", str(ungrouped)),
    }


def submissions(dry_run_output: str) -> int:
    """SLURM jobs a dry run's plan submits: each job outside a group (``rule``
    at the line start; ``localrule`` runs in the main process), and each group."""
    rules = re.findall(r"^rule (\w+):", dry_run_output, flags=re.M)
    groups = re.findall(r"Group job ", dry_run_output)
    return sum(rule != "all" for rule in rules) + len(groups)  # `all` runs nothing


def main() -> dict:
    from benchmarks.bench_startup import stub_slurm_probe  # it imports this module

    tmp = Path(tempfile.mkdtemp(prefix="bench_dag_"))
    try:
        stub_slurm_probe(tmp)
        snakefile = snapshot_workflow(tmp / "repo")
        configs = {
            name: write_config(tmp / f"grid{name}.yaml", grid_config(*shape))
            for name, shape in GRIDS.items()
        }
        args = profiles(tmp)
        runs = [(mode, name) for mode, grids in MODES.items() for name in grids]
        # (a) dry runs, each in a fresh empty working directory
        dry: dict[tuple, list[float]] = {run: [] for run in runs}
        jobs, plans, submitted = {}, {}, {}
        for rep in range(REPEATS):
            for mode, name in runs:
                work = tmp / f"dry{name}_{rep}"
                work.mkdir()
                seconds, out = snakemake(snakefile, work, configs[name], "-n", *args[mode])
                dry[mode, name].append(seconds)
                submitted[mode, name] = submissions(out)
                if mode == "local":
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
        noop: dict[tuple, list[float]] = {run: [] for run in runs}
        for _ in range(REPEATS):
            for mode, name in runs:
                seconds, out = snakemake(snakefile, tmp / f"noop{name}", configs[name], *args[mode])
                if "Nothing to be done" not in out:
                    raise RuntimeError(f"the no-op rerun of grid {name} ran jobs:\n{out[-3000:]}")
                noop[mode, name].append(seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    profile_rows = {
        f"{mode}, {jobs[name]} jobs": {
            "slurm_jobs": submitted[mode, name],
            "dry_run_s": statistics.median(dry[mode, name]),
            "noop_rerun_s": statistics.median(noop[mode, name]),
        }
        for mode, name in runs
        if mode != "local"
    }
    dry = {name: dry["local", name] for name in GRIDS}
    noop = {name: noop["local", name] for name in GRIDS}

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
    result["slurm_profile"] = profile_rows
    print("| invocation | SLURM jobs | dry run s | no-op rerun s |\n|---|---|---|---|")
    for n in GRIDS:
        print(
            f"| local --cores 2, {jobs[n]} jobs | - | {med['dry'][n]:.2f} | {med['noop'][n]:.2f} |"
        )
    for row, r in profile_rows.items():
        print(f"| {row} | {r['slurm_jobs']} | {r['dry_run_s']:.2f} | {r['noop_rerun_s']:.2f} |")
    write_result("dag", result)
    return result


if __name__ == "__main__":
    main()
