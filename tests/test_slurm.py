"""boltzbench on a real SLURM cluster: the tiny config through the slurm profile.

The ``cluster`` fixture brings up a single-node SLURM on this machine from
Debian's packages (``tests/slurm/cluster.sh``: munged, ``slurmctld -D``,
``slurmd -D``; one fake GPU; no accounting database), installing the packages
with apt-get where they are missing, and tears the daemons down by PID however
the test ends. The profile is installed as the README says (``make profile``,
here into a temporary ``XDG_CONFIG_HOME``) and the workflow is run with
``snakemake --profile slurm``; a local run of the same config runs beside it.
The tests check that

1. every job ran in a SLURM job that slurmctld ran to completion, one SLURM
   job per job, but for the job groups of the profile (profiles/slurm: every
   evaluate job and the noise floor of one target and seed in one SLURM job;
   aggregate and figures in one): the job id in each artifact's provenance is
   the same for two artifacts exactly when the profile groups their jobs;
2. the jobs of the rules that request a GPU (train and sample, as the config
   says ``device: auto``) were submitted with a GPU request and granted one
   (slurmctld's ``TresPerJob``; ``SLURM_STEP_GPUS`` in the job, recorded in the
   provenance), and the other jobs requested none;
3. the leaderboard equals the local run's in every column but the wall-clock
   ``total_seconds_*``;
4. a failed member of a group costs a rerun of itself only: the others ran
   and kept their outputs, and the next dry run plans the failed job alone
   (with the target rule).

The test cluster keeps no accounting database, so SLURM's records of the
jobs are read from slurmctld (``scontrol show job``, kept for MinJobAge), not
``sacct``.

Skipped, with the reason, only where the packages are missing and apt-get
cannot install them. Every subprocess has a timeout.
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from boltzbench.io import read_store

REPO = Path(__file__).resolve().parent.parent


#: the targets of tests/configs/tiny.yaml kept here: every rule and every kind of
#: job (exact and user targets; MCMC, SMC, reverse-KL and MLE flows) in half the jobs
SLURM_TARGETS = ("gmm40", "user")


def _tiny_without_sweep() -> Path:
    """tests/configs/tiny.yaml less its budget sweep (covered by test_pipeline.py) and
    less two of its analytic targets: each SLURM job costs 10-15 s of CPU here."""
    cfg = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    cfg.pop("budget_sweep", None)
    cfg["targets"] = {t: spec for t, spec in cfg["targets"].items() if t in SLURM_TARGETS}
    for spec in cfg["methods"].values():
        spec["overrides"] = {
            t: o for t, o in (spec.get("overrides") or {}).items() if t in SLURM_TARGETS
        }
    path = Path(tempfile.mkdtemp(prefix="boltzbench-slurm-config-")) / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


TINY = _tiny_without_sweep()
CLUSTER = REPO / "tests/slurm/cluster.sh"
STATE = Path(os.environ.get("BOLTZBENCH_SLURM_STATE", "/tmp/boltzbench-slurm"))
SLURM_RUN_TIMEOUT = 1500  # seconds; the run takes about 10 minutes on 2 busy cores
WALL_CLOCK = re.compile(r"^total_seconds_")  # leaderboard columns that may differ

pytestmark = [pytest.mark.slurm, pytest.mark.pipeline, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module", autouse=True)
def _real_scontrol():
    """This module talks to a real cluster: the real PATH, without the failing
    ``scontrol`` that tests/conftest.py puts first for every other test."""
    from conftest import REAL_PATH

    stubbed, os.environ["PATH"] = os.environ["PATH"], REAL_PATH
    yield
    os.environ["PATH"] = stubbed


def sh(*cmd, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def snakemake_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *map(str, args)]


def env_for(xdg: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    if xdg is not None:
        env["XDG_CONFIG_HOME"] = str(xdg)
    return env


def cluster_sh(command: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "BOLTZBENCH_SLURM_STATE": str(STATE)}
    return sh("bash", CLUSTER, command, timeout=timeout, env=env)


def ensure_packages() -> None:
    """Install the SLURM packages where missing; skip only if apt cannot."""
    out = cluster_sh("install", timeout=1500)
    if out.returncode == 3:
        pytest.skip(f"SLURM packages missing and apt unavailable: {out.stderr.strip()}")
    assert out.returncode == 0, out.stdout + out.stderr


def exclusive_lock(path: Path, timeout: float):
    """An flock on ``path``: one test cluster on this machine at a time."""
    handle = open(path, "w")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                pytest.fail(f"another test cluster held {path} for {timeout} s")
            time.sleep(2)


def kill_by_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def cluster():
    """A running single-node SLURM; yields the daemons' PIDs by name."""
    ensure_packages()
    lock = exclusive_lock(Path(f"{STATE}.lock"), timeout=1200)
    pids: dict[str, int] = {}
    try:
        up = cluster_sh("up", timeout=180)
        for line in up.stdout.splitlines():  # "name pid", one daemon a line
            name, _, pid = line.partition(" ")
            if pid.strip().isdigit():
                pids[name] = int(pid)
        assert up.returncode == 0, f"cluster did not come up:\n{up.stdout}\n{up.stderr}"
        assert set(pids) == {"munged", "slurmctld", "slurmd"}, up.stdout
        yield pids
    finally:
        try:
            cluster_sh("down", timeout=120)
        except subprocess.TimeoutExpired:
            pass
        for pid in pids.values():  # whatever `down` left, by PID
            kill_by_pid(pid)
        lock.close()


@dataclasses.dataclass
class Planned:
    """One job of a dry run: its rule, GPUs requested, wildcards and outputs."""

    rule: str
    gpus: int = 0
    wildcards: dict[str, str] = dataclasses.field(default_factory=dict)
    outputs: list[str] = dataclasses.field(default_factory=list)


def planned(workdir: Path, *args) -> list[Planned]:
    """Every job a local dry run of the SLURM test's config plans."""
    out = sh(
        *snakemake_cmd("-n", "--configfile", TINY, "--cores", "2", *args),
        cwd=workdir,
        env=env_for(),
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    jobs: list[Planned] = []
    for line in out.stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):", line):
            jobs.append(Planned(m.group(1)))
        elif not jobs:
            continue
        elif m := re.match(r"^\s+resources: .*\bgpu=(\d+)", line):
            jobs[-1].gpus = int(m.group(1))
        elif m := re.match(r"^\s+wildcards: (.*)$", line):
            jobs[-1].wildcards = dict(kv.split("=", 1) for kv in m.group(1).split(", "))
        elif m := re.match(r"^\s+output: (.*)$", line):
            jobs[-1].outputs = m.group(1).split(", ")
    return jobs


def profile_groups(xdg: Path) -> dict[str, str]:
    """rule -> group name (with wildcards) of the installed slurm profile."""
    profile = yaml.safe_load((xdg / "snakemake/slurm/config.yaml").read_text())
    return dict(profile.get("groups") or {})


def submission(job: Planned, groups: dict[str, str]) -> str:
    """The SLURM job a planned job should run in: its group, or itself."""
    if job.rule in groups:
        return "group " + groups[job.rule].format(**job.wildcards)
    return f"job {job.rule} {sorted(job.wildcards.items())}"


def job_of(path: Path, jobs: list[Planned], workdir: Path) -> Planned:
    """The planned job that wrote ``path`` (an output, or a file inside a store)."""
    rel = path.relative_to(workdir)
    for job in jobs:
        if any(rel == Path(o) or Path(o) in rel.parents for o in job.outputs):
            return job
    raise AssertionError(f"no planned job wrote {rel}")


def slurm_jobs(run_id: str) -> dict[str, dict[str, str]]:
    """slurmctld's record of every job of the run (kept for MinJobAge), by job id."""
    out = sh("scontrol", "show", "job", "--oneliner", timeout=60)
    assert out.returncode == 0, out.stderr
    records = {}
    for line in out.stdout.splitlines():
        record = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        if record.get("JobName") == run_id:
            records[record["JobId"]] = record
    return records


def artifacts(results: Path) -> list[tuple[Path, dict]]:
    """(path, provenance attrs) of every store, JSON document and figure."""
    from PIL import Image

    found = [(p, dict(read_store(p).attrs)) for p in results.rglob("*.zarr")]
    for path in results.rglob("*.json"):
        if any(parent.suffix == ".zarr" for parent in path.parents):
            continue  # Zarr's own metadata
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and "attrs" in doc:
            found.append((path, doc["attrs"]))
    for path in results.rglob("*.png"):
        found.append((path, json.loads(Image.open(path).text["boltzbench"])))
    return found


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The tiny config through `snakemake --profile slurm`, and locally."""
    xdg = tmp_path_factory.mktemp("xdg")
    out = sh("make", "-s", "-C", REPO, "profile", env=env_for(xdg), timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (xdg / "snakemake/slurm/config.yaml").is_file(), out.stdout

    slurm_dir = tmp_path_factory.mktemp("slurm_run")
    local_dir = tmp_path_factory.mktemp("local_run")
    jobs = planned(slurm_dir)
    local_log = open(local_dir / "snakemake.out", "w")
    local = subprocess.Popen(  # beside the SLURM run, to use the cores it leaves idle
        snakemake_cmd("--configfile", TINY, "--cores", "2"),
        cwd=local_dir,
        env=env_for(),
        stdout=local_log,
        stderr=subprocess.STDOUT,
    )
    try:
        started = time.monotonic()
        slurm = sh(
            *snakemake_cmd(
                "--profile",
                "slurm",  # a bare name, resolved in $XDG_CONFIG_HOME/snakemake
                "--configfile",
                TINY,
                "--retries",
                "0",  # fail fast here; growth with attempt: test_resources_grow...
                "--slurm-init-seconds-before-status-checks",
                "1",
            ),
            cwd=slurm_dir,
            env=env_for(xdg),
            timeout=SLURM_RUN_TIMEOUT,
        )
        seconds = time.monotonic() - started
        log = slurm.stdout + slurm.stderr
        if slurm.returncode:
            slurm_logs = "\n".join(
                p.read_text()[-3000:] for p in slurm_dir.glob(".snakemake/slurm_logs/**/*.log")
            )
            pytest.fail(f"SLURM run failed:\n{log[-6000:]}\n{slurm_logs}")
        assert local.wait(timeout=600) == 0, (local_dir / "snakemake.out").read_text()[-6000:]
    finally:
        if local.poll() is None:
            local.kill()
            local.wait(timeout=30)
        local_log.close()
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    records = slurm_jobs(run_id)
    n_jobs = sum(job.rule != "all" for job in jobs)
    print(f"SLURM run: {seconds:.0f} s, {n_jobs} jobs in {len(records)} SLURM jobs")
    return {
        "xdg": xdg,
        "slurm": slurm_dir,
        "local": local_dir,
        "planned": jobs,
        "records": records,
        "log": log,
    }


def test_profile_resolves_by_name(runs):
    """`--profile slurm` found the copy `make profile` installed, plus profiles/default."""
    log = runs["log"]
    assert re.search(
        r"^Using profiles slurm and workflow specific profile \S*profiles/default", log, re.M
    )
    assert "SLURM run ID" in log  # the slurm executor ran it
    # the only place a profile named slurm could have come from
    assert (runs["xdg"] / "snakemake/slurm/config.yaml").is_file()
    assert not (runs["slurm"] / "slurm").exists()
    assert not Path("/etc/xdg/snakemake/slurm").exists()


def test_every_job_ran_in_the_slurm_job_of_its_group(runs):
    # the one job Snakemake keeps local: the target rule `all`, which runs nothing
    local_rules = set(re.findall(r"^localrule (\w+):", runs["log"], re.MULTILINE))
    assert local_rules == {"all"}
    records, groups = runs["records"], profile_groups(runs["xdg"])
    assert set(groups) == {"evaluate", "noise_floor", "aggregate", "figures"}
    jobs = [job for job in runs["planned"] if job.rule not in local_rules]
    expected = {submission(job, groups) for job in jobs}
    print(f"tiny config: {len(jobs)} jobs; SLURM jobs: {len(records)} (ungrouped: {len(jobs)})")
    assert len(records) == len(expected) < len(jobs)
    assert all(r["JobState"] == "COMPLETED" and r["ExitCode"] == "0:0" for r in records.values())
    # the artifacts of two jobs name the same SLURM job exactly when the profile
    # groups the two jobs, and every SLURM job left artifacts
    slurm_of: dict[str, str] = {}  # expected submission -> SLURM job id
    for path, attrs in artifacts(runs["slurm"] / "results"):
        job = job_of(path, jobs, runs["slurm"])
        assert attrs["boltzbench_step"] == job.rule, (path, attrs["boltzbench_step"])
        assert (
            slurm_of.setdefault(submission(job, groups), attrs["slurm_job_id"])
            == attrs["slurm_job_id"]
        ), path
    assert set(slurm_of) == expected
    assert len(set(slurm_of.values())) == len(expected)  # distinct submissions, distinct jobs
    assert set(slurm_of.values()) == set(records)


def test_gpu_rules_were_granted_a_gpu(runs):
    gpu_rules = {job.rule for job in runs["planned"] if job.gpus}
    assert gpu_rules == {"train", "sample"}  # tiny.yaml: device auto
    found = artifacts(runs["slurm"] / "results")
    rules_of: dict[str, set[str]] = collections.defaultdict(set)  # SLURM job -> rules
    for _, attrs in found:
        rules_of[attrs["slurm_job_id"]].add(attrs["boltzbench_step"])
    for job_id, record in runs["records"].items():
        requested = record.get("TresPerJob", "")
        if rules_of[job_id] & gpu_rules:
            assert rules_of[job_id] <= gpu_rules, rules_of[job_id]  # no GPU job in a group
            assert requested == "gres:gpu:1", (job_id, record["Comment"], requested)
        else:
            assert "gpu" not in requested, (job_id, record["Comment"], requested)
    for path, attrs in found:
        granted = attrs["slurm_gpus"]  # SLURM_STEP_GPUS inside the job
        assert bool(granted) == (attrs["boltzbench_step"] in gpu_rules), (path, granted)


def test_leaderboard_equals_a_local_run(runs):
    slurm = pd.read_csv(runs["slurm"] / "results/leaderboard.csv")
    local = pd.read_csv(runs["local"] / "results/leaderboard.csv")
    assert list(slurm.columns) == list(local.columns)
    wall_clock = [c for c in slurm.columns if WALL_CLOCK.match(c)]
    assert wall_clock  # the only columns allowed to differ: seconds measured by the clock
    for board in (slurm, local):
        assert board["total_seconds_mean"].gt(0).all()
    # every other column, exactly (both runs on CPU, same config and seeds)
    pd.testing.assert_frame_equal(
        slurm.drop(columns=wall_clock), local.drop(columns=wall_clock), check_exact=True
    )


def test_a_failed_group_member_reruns_alone(runs, tmp_path):
    """On a copy of the SLURM run, the evaluate and noise-floor jobs are forced to
    rerun with GMM-40's MALA samples made unreadable (their root ``zarr.json``
    garbled, its mtime kept): GMM-40's group fails on that one member and stops
    there. What its members wrote before the failure is kept (keep-incomplete),
    the user target's group succeeded, every output but the failed one exists and
    is complete, and a dry run then plans the failed evaluate job alone."""
    work = tmp_path / "run"
    shutil.copytree(runs["slurm"], work, symlinks=True)
    broken = work / "results/gmm40/mala/seed0/samples.zarr/zarr.json"
    stat = broken.stat()
    broken.write_text("not json")
    os.utime(broken, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    evaluate = ("evaluate", "noise_floor")
    outputs = [o for job in runs["planned"] if job.rule in evaluate for o in job.outputs]
    # only the forced jobs rerun (a source edit since the run would rerun the chain,
    # and its sample job would rewrite the broken store)
    forced = collections.Counter(j.rule for j in planned(work, "--forcerun", *evaluate))
    assert forced == {"evaluate": 6, "noise_floor": 2, "aggregate": 1, "all": 1}, forced
    started = time.time()
    rerun = sh(
        *snakemake_cmd(
            "--profile",
            "slurm",
            "--configfile",
            TINY,
            "--retries",
            "0",
            "--slurm-init-seconds-before-status-checks",
            "1",
            "--forcerun",
            *evaluate,
        ),
        cwd=work,
        env=env_for(runs["xdg"]),
        timeout=SLURM_RUN_TIMEOUT,
    )
    log = rerun.stdout + rerun.stderr
    assert rerun.returncode != 0, log[-4000:]
    failed = "results/gmm40/mala/seed0/metrics.json"
    assert not (work / failed).exists()
    assert len(outputs) == 8
    others = [out for out in outputs if out != failed]
    ran = [out for out in others if (work / out).stat().st_mtime > started]
    print(f"members that ran again: {len(ran)} of {len(others)}: {ran}")
    # the user target's group ran whole; GMM-40's kept what ran before its failure,
    # and its members it did not reach keep their earlier, complete outputs
    assert {o for o in others if "/user/" in o} <= set(ran), ran
    assert all((work / o).exists() for o in others)
    again = planned(work)
    assert sorted(
        (j.rule, j.wildcards.get("target"), j.wildcards.get("method")) for j in again
    ) == [
        ("aggregate", None, None),
        ("all", None, None),
        ("evaluate", "gmm40", "mala"),
    ]


def test_resources_grow_with_attempt(tmp_path):
    """The workflow profile's memory and runtime scale with the retry attempt."""

    def resources(attempt: int) -> dict[str, tuple[int, int]]:
        out = sh(
            *snakemake_cmd("-n", "--configfile", TINY, "--cores", "2", "--attempt", str(attempt)),
            cwd=tmp_path,
            env=env_for(),
            timeout=300,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        found, rule = {}, None
        for line in out.stdout.splitlines():
            if m := re.match(r"^rule (\w+):", line):
                rule = m.group(1)
            elif m := re.match(r"^\s+resources: (.*)$", line):
                res = dict(kv.split("=", 1) for kv in m.group(1).split(", "))
                if "runtime" in res:  # not the target rule `all`, which runs nothing
                    found[rule] = (int(res["runtime"]), int(res["mem_mb"]))
        return found

    first, third = resources(1), resources(3)
    assert {"reference", "train", "sample", "evaluate"} <= set(first)
    for rule, (runtime, mem_mb) in first.items():
        assert third[rule] == (3 * runtime, 3 * mem_mb), rule
