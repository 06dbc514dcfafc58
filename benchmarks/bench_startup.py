"""Workflow start-up: Snakemake's parse of the workflow, before and after a change.

Every Snakemake start parses the Snakefile, which validates the config, and
builds its DAG; so does the Snakemake that runs each job (a SLURM job runs two:
``--mode remote`` in the batch script, and the job step's own). Timed, on
snapshots of the workflow (:func:`benchmarks._common.snapshot_workflow`):

``dry_run``
    ``snakemake -n --cores 2`` on ``config.yaml`` (the default run, 283 jobs)
    in a fresh, empty working directory: parse, full validation, the DAG.
``noop_rerun``
    ``snakemake --cores 2`` on the 1,002-job grid of :mod:`benchmarks.bench_dag`
    with every output present and its metadata recorded (made as bench_dag
    makes it: placeholders, then ``--touch --forceall``), so it finds
    "Nothing to be done".
``main_parse``
    ``snakemake --list-rules`` on ``config.yaml``: Snakemake's start and the
    parse of the workflow in a main process (full validation), no DAG.
``main_parse_recorded``
    the same in a directory where an earlier invocation recorded the config's
    full validation (``.snakemake/boltzbench/validated``): every invocation
    after the first on an unchanged config and source, e.g. a no-op rerun.
``job_reparse``
    the command Snakemake runs for one job, as a SLURM job runs it:
    ``--mode remote --target-jobs train:target=gmm40,method=flow_rkl,seed=0
    --allowed-rules train --force --nolock …`` on ``config.yaml``, with ``-n``
    so that it parses, validates and plans the job without running it.
``snakemake_import``
    ``python -c "import snakemake.cli"``: Snakemake's own start, the floor of
    every measurement above.

Each is reported as the median wall time and the median CPU time (user + sys
of the child) of ``REPEATS`` rounds; each round runs every measurement on
every tree back to back, so a baseline (``--baseline DIR``: another checkout,
e.g. ``git worktree add ../base <commit>``) is measured in the same conditions
and the ratios compare like with like on a busy machine.

One thing of the host is taken out: the SLURM executor plugin runs ``scontrol
show config`` (timeout 10 s) when Snakemake imports it, to word its help. Where
SLURM's client is installed but no controller answers (this project's machines,
where ``make slurm-packages`` installed it for the SLURM test), that takes about
9 s of waiting at every start; with a live controller, or without SLURM, it is
instant. The commands run with a stub ``scontrol`` that fails at once first on
``PATH``; ``slurm_probe_s`` reports what the real one takes here.

Run: ``.venv/bin/python -m benchmarks.bench_startup [--baseline DIR]`` from the
repository root, 5 to 10 minutes on 2 busy cores with a baseline.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a file: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (  # noqa: E402
    NO_SLEEP_TOUCH,
    REPO,
    planned_total,
    snakemake,
    snapshot_workflow,
    write_config,
    write_result,
)
from benchmarks.bench_dag import GRIDS, grid_config, make_placeholders, planned_outputs  # noqa: E402

REPEATS = 5
#: the job whose re-parse is timed, and Snakemake's arguments for a job of it
#: (snakemake_interface_executor_plugins: RealExecutor.get_job_args, general_args)
JOB = "train:target=gmm40,method=flow_rkl,seed=0"
JOB_ARGS = (
    "--target-jobs",
    JOB,
    "--allowed-rules",
    "train",
    "--force",
    "--target-files-omit-workdir-adjustment",
    "--max-inventory-time",
    "0",
    "--nocolor",
    "--no-hooks",
    "--nolock",
    "--ignore-incomplete",
    "--mode",
    "remote",
    "-n",
)
MEASUREMENTS = (
    "dry_run",
    "noop_rerun",
    "main_parse",
    "main_parse_recorded",
    "job_reparse",
    "snakemake_import",
)
#: Snakemake's arguments of each measurement on config.yaml in an empty directory
DEFAULT_CONFIG_ARGS = {
    "dry_run": ("-n",),
    "main_parse": ("--list-rules",),
    "main_parse_recorded": ("--list-rules",),
    "job_reparse": JOB_ARGS,
}


def recorded_dir(snakefile: Path) -> Path:
    """The working directory of ``main_parse_recorded``: one per tree, kept between
    rounds, where a first ``--list-rules`` (untimed) recorded the full validation."""
    return snakefile.parent / "recorded"


def timed(fn, *args, **kwargs) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of the children, result) of ``fn(*args, **kwargs)``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result


def stub_slurm_probe(tmp: Path) -> float | None:
    """Put a failing ``scontrol`` first on ``PATH``; return what the real one's
    ``scontrol show config`` takes (None without SLURM)."""
    real = shutil.which("scontrol")
    seconds = None
    if real:
        t0 = time.perf_counter()
        try:
            subprocess.run([real, "show", "config"], capture_output=True, timeout=15)
        except subprocess.TimeoutExpired:
            pass
        seconds = time.perf_counter() - t0
    stub = tmp / "bin" / "scontrol"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    os.environ["PATH"] = f"{stub.parent}{os.pathsep}{os.environ['PATH']}"
    return seconds


def noop_state(snakefile: Path, work: Path, grid: Path) -> int:
    """Make ``work`` a finished run of ``grid`` (bench_dag's way); return its job count."""
    _, plan = snakemake(snakefile, work / "plan", grid, "-n")
    shutil.rmtree(work / "plan", ignore_errors=True)
    make_placeholders(work, planned_outputs(plan))
    _, out = snakemake(snakefile, work, grid, "--touch", "--forceall", python_code=NO_SLEEP_TOUCH)
    if "not touched" in out:
        raise RuntimeError(f"--touch left outputs missing:\n{out[-3000:]}")
    return planned_total(plan)


def measure(name: str, snakefile: Path, tmp: Path, cfgs: dict[str, Path], rep: int):
    """One (wall, CPU) sample of measurement ``name`` on the tree of ``snakefile``."""
    if name == "snakemake_import":
        cmd = [sys.executable, "-c", "import snakemake.cli"]
        wall, cpu, _ = timed(subprocess.run, cmd, check=True, capture_output=True)
        return wall, cpu
    if name == "noop_rerun":
        wall, cpu, (_, out) = timed(snakemake, snakefile, snakefile.parent / "noop", cfgs["grid"])
        if "Nothing to be done" not in out:
            raise RuntimeError(f"the no-op rerun ran jobs:\n{out[-3000:]}")
        return wall, cpu
    args = DEFAULT_CONFIG_ARGS[name]
    if name == "main_parse_recorded":
        wall, cpu, _ = timed(snakemake, snakefile, recorded_dir(snakefile), cfgs["default"], *args)
        return wall, cpu
    work = tmp / f"{name}_{snakefile.parent.name}_{rep}"
    wall, cpu, (_, out) = timed(snakemake, snakefile, work, cfgs["default"], *args)
    shutil.rmtree(work, ignore_errors=True)
    if name == "job_reparse" and "rule train:" not in out:
        raise RuntimeError(f"the job's re-parse planned no train job:\n{out[-3000:]}")
    return wall, cpu


def main(baseline: Path | None = None, repeats: int = REPEATS) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    path_before = os.environ["PATH"]
    try:
        probe = stub_slurm_probe(tmp)
        roots = {"after": REPO, **({"before": Path(baseline)} if baseline else {})}
        trees = {name: snapshot_workflow(tmp / name, root) for name, root in roots.items()}
        cfgs = {
            "default": Path(shutil.copy(REPO / "config.yaml", tmp / "config.yaml")),
            "grid": write_config(tmp / "grid1000.yaml", grid_config(*GRIDS["1000"])),
        }
        jobs = {t: noop_state(sf, sf.parent / "noop", cfgs["grid"]) for t, sf in trees.items()}
        for sf in trees.values():
            snakemake(sf, recorded_dir(sf), cfgs["default"], "--list-rules")
        samples = {(t, m): [] for t in trees for m in MEASUREMENTS}
        for rep in range(repeats):
            for m in MEASUREMENTS:
                for t, snakefile in trees.items():
                    samples[t, m].append(measure(m, snakefile, tmp, cfgs, rep))
    finally:
        os.environ["PATH"] = path_before
        shutil.rmtree(tmp, ignore_errors=True)
    return write_result("startup", summary(samples, trees, jobs, probe, repeats))


def summary(samples: dict, trees: dict, jobs: dict, probe: float | None, repeats: int) -> dict:
    """Medians per (tree, measurement), and after/before ratios with a baseline."""
    result = {
        "what": "Snakemake start-up of the real workflow, --cores 2 (see the docstring)",
        "grid_jobs": jobs["after"],
        "job": JOB,
        "repeats": repeats,
        "slurm_probe_s": round(probe, 2) if probe is not None else None,
    }
    med = {
        (t, m, k): statistics.median(s[k] for s in samples[t, m])
        for (t, m) in samples
        for k in (0, 1)
    }
    for m in MEASUREMENTS:
        for t in trees:
            result[f"{m}_wall_s_{t}"] = med[t, m, 0]
            result[f"{m}_cpu_s_{t}"] = med[t, m, 1]
        if "before" in trees:
            for k, unit in ((0, "wall"), (1, "cpu")):
                result[f"{m}_{unit}_ratio"] = med["after", m, k] / med["before", m, k]
    result["all_wall_s"] = {
        f"{t}/{m}": [round(s[0], 2) for s in samples[t, m]] for (t, m) in samples
    }
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout, measured alongside")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    main(args.baseline, args.repeats)
