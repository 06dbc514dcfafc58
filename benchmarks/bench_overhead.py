"""Per-job overhead of Snakemake's local executor on a trivial step.

The step: ``reference`` (N = 200 exact samples of a 2-d Gaussian, written as a
Zarr store with provenance). Ours: a Snakemake run of that one rule job,
``snakemake --cores 1 --forceall results/g0/reference/eval.zarr`` (the job
runs whether or not its output exists). Peer: the same step called in-process
with ``boltzbench.steps.adapter.call_step`` and the job's very arguments (named
inputs, outputs, params, threads): they are unpickled from the job's own
generated script (``--skip-script-cleanup`` on an untimed warm-up run), so
params that others add to the rule are picked up. Only the output path differs
(a scratch store per call). The in-process call runs in a fresh helper process
with the same ``PYTHONPATH``: one untimed first call (which pays the per-process
caches: git state, package versions, lazy imports), then ``CALLS`` timed warm
calls, median.

Reported (medians of ``REPEATS`` rounds, each round interleaving every
measurement): the one-job run ÷ the warm in-process call, and the marginal
cost of one more job, (t(6 jobs) − t(1 job)) / 5 with the six reference jobs of
two targets, ÷ the same call. Where the time of the one-job run goes:
``snakemake -n`` of the job (start-up, Snakefile parse, config validation,
DAG), and ``snakemake --touch`` of it (all of Snakemake's own work, scheduling,
output checks and metadata included, but no job process; the touch executor's
0.1 s sleep set to 0); the job's own wall time from its ``benchmark:`` TSV, and
of that the interpreter start-up (``python -c pass``) and, timed in the helper
in the job's order, the import of ``snakemake.iocontainers``, the preamble
(which unpickles the job's arguments), the import of torch, of the step's
modules, and the first call. ``job_rest_s`` is what is left of the job (the
rule script, logging set-up, exit) and ``run_rest_s`` = run − touch run − job
(spawning the job: writing its script, the benchmark thread, waiting), both
per round, so noisy. Runs on a snapshot of the workflow
(:func:`benchmarks._common.snapshot_workflow`; not a git checkout, so the
step's provenance skips its ~20 ms of git calls).

Run: ``.venv/bin/python -m benchmarks.bench_overhead`` from the repository root
(or ``.venv/bin/python benchmarks/bench_overhead.py``), 3 to 4 minutes on 2 busy
cores.
"""

from __future__ import annotations

import json
import os
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
    planned_total,
    snakemake,
    snapshot_workflow,
    write_config,
    write_result,
)

STEP, N_REF, REPEATS, CALLS = "reference", 200, 3, 5
TARGETS = ("g0", "g1")
ONE = ["results/g0/reference/eval.zarr"]
SIX = [f"results/{t}/reference/{s}.zarr" for t in TARGETS for s in ("train", "eval", "floor")]

#: the in-process peer, run as ``python -c INPROC STEP SCRIPT SCRATCH CALLS`` in the workdir:
#: import times, the job's arguments from its generated script, one first call and
#: CALLS warm calls of call_step; prints a JSON line
INPROC = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
import snakemake.iocontainers, snakemake.logging  # what a job's preamble imports
t1 = time.perf_counter()
import torch
t2 = time.perf_counter()
from boltzbench.steps.adapter import _plain, call_step
step, script, scratch, calls = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
import importlib; importlib.import_module("boltzbench.steps." + step)
t3 = time.perf_counter()
lines = script.read_text().splitlines()
start = next(i for i, s in enumerate(lines) if "snakemake preamble start" in s)
end = next(i for i, s in enumerate(lines) if "snakemake preamble end" in s)
ns = {"__file__": str(script)}
t4 = time.perf_counter()
exec("\\n".join(lines[start + 1 : end]), ns)  # the job's preamble: unpickles its arguments
t5 = time.perf_counter()
smk = ns["snakemake"]
torch.set_num_threads(max(1, int(smk.threads)))
inputs, outputs, params = _plain(smk.input), _plain(smk.output), dict(smk.params.items())
times = []
for i in range(1 + calls):
    out = {k: str(scratch / f"call{i}" / v) for k, v in outputs.items()}
    for v in out.values():
        Path(v).parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    call_step(step, inputs, out, params)
    times.append(time.perf_counter() - t)
print(json.dumps({"snakemake_import_s": t1 - t0, "torch_import_s": t2 - t1, "preamble_s": t5 - t4,
                  "step_import_s": t3 - t2, "first_call_s": times[0], "warm_calls_s": times[1:]}))
"""


def config() -> dict:
    return {
        "results_dir": "results",
        "device": "cpu",
        "seeds": [0],
        "reference": {"n_train": N_REF, "n_eval": N_REF},
        "sampling": {"n_samples": N_REF},
        "evaluation": {"n_eval": N_REF},
        "targets": {t: {"kind": "gaussian", "params": {"dim": 2}} for t in TARGETS},
        "methods": {
            "mala": {
                "kind": "mala",
                "params": {"n_chains": 4, "n_warmup": 2, "n_burnin": 1, "thinning": 1},
            }
        },
    }


def _run(
    snakefile: Path, work: Path, cfg: Path, targets: list[str], *extra: str, **kw: str
) -> float:
    seconds, out = snakemake(snakefile, work, cfg, "--forceall", *extra, *targets, cores=1, **kw)
    n = len(targets)
    if f"{n} of {n} steps (100%) done" not in out:
        raise RuntimeError(f"expected {n} jobs:\n{out[-3000:]}")
    return seconds


def _job_seconds(work: Path) -> float:
    """Wall seconds of the last g0/eval reference job, from its benchmark TSV."""
    (tsv,) = [p for p in work.rglob("*.tsv") if p.parent.name == STEP and "g0_eval" in p.name]
    header, row = tsv.read_text().splitlines()[:2]
    return float(dict(zip(header.split("\t"), row.split("\t")))["s"])


def _python(code: str, *args: str, cwd: Path, snapshot: Path) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(snapshot / "src")}
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return seconds, out.stdout


def main() -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_overhead_"))
    rows: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    try:
        snakefile = snapshot_workflow(tmp / "repo")
        cfg = write_config(tmp / "overhead.yaml", config())
        work = tmp / "work"
        work.mkdir()
        # untimed warm-up that keeps the job's generated script (its arguments)
        _run(snakefile, work, cfg, ONE, "--skip-script-cleanup")
        (script,) = (work / ".snakemake/scripts").glob(f"*.{STEP}.py")
        kept = tmp / "job_script.py"
        shutil.copy(script, kept)
        shutil.rmtree(work / ".snakemake/scripts")
        for rep in range(REPEATS):
            seconds, out = snakemake(snakefile, work, cfg, "-n", "--forceall", *ONE, cores=1)
            if planned_total(out) != 1:
                raise RuntimeError(f"expected a one-job plan:\n{out[-3000:]}")
            add("dag", seconds)
            add("touch", _run(snakefile, work, cfg, ONE, "--touch", python_code=NO_SLEEP_TOUCH))
            add("run1", _run(snakefile, work, cfg, ONE))
            add("job", _job_seconds(work))
            add("run6", _run(snakefile, work, cfg, SIX))
            scratch = tmp / f"scratch{rep}"
            _, line = _python(
                INPROC, STEP, str(kept), str(scratch), str(CALLS), cwd=work, snapshot=tmp / "repo"
            )
            res = json.loads(line.strip().splitlines()[-1])
            for k in ("snakemake_import_s", "preamble_s", "torch_import_s", "step_import_s"):
                add(k, res[k])
            add("first_call_s", res["first_call_s"])
            add("warm", statistics.median(res["warm_calls_s"]))
            add("python", _python("pass", cwd=work, snapshot=tmp / "repo")[0])
            # this round's residuals: of the job, and of the run
            parts = ("python", "snakemake_import_s", "preamble_s", "torch_import_s")
            parts += ("step_import_s", "first_call_s")
            add("job_rest", rows["job"][-1] - sum(rows[k][-1] for k in parts))
            add("run_rest", rows["run1"][-1] - rows["touch"][-1] - rows["job"][-1])
            shutil.rmtree(scratch)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in rows.items()}
    marginal = [(b - a) / (len(SIX) - 1) for a, b in zip(rows["run1"], rows["run6"])]
    result = {
        "what": f"snakemake job of rule {STEP} (N={N_REF}) vs call_step in-process, --cores 1",
        "snakemake_1_job_s": med["run1"],
        "in_process_call_s": med["warm"],
        "ratio_1_job": statistics.median(a / b for a, b in zip(rows["run1"], rows["warm"])),
        "marginal_job_s": statistics.median(marginal),
        "ratio_marginal_job": statistics.median(a / b for a, b in zip(marginal, rows["warm"])),
        # where the one-job run goes (each a median over rounds, so they need not add up)
        "snakemake_dry_run_s": med["dag"],  # start-up, parse, DAG: snakemake -n of the job
        "snakemake_touch_run_s": med["touch"],  # all but the job process: --touch of the job
        "job_s": med["job"],  # the job's process, from its benchmark TSV; of which:
        "job_python_startup_s": med["python"],
        "job_snakemake_import_s": med["snakemake_import_s"],
        "job_preamble_s": med["preamble_s"],
        "job_torch_import_s": med["torch_import_s"],
        "job_step_import_s": med["step_import_s"],
        "job_first_call_s": med["first_call_s"],
        "job_rest_s": med["job_rest"],
        "run_rest_s": med["run_rest"],  # run − touch run − job: spawning the job
        "repeats": REPEATS,
        "all_s": {k: [round(x, 3) for x in v] for k, v in rows.items()},
    }
    write_result("overhead", result)
    return result


if __name__ == "__main__":
    main()
