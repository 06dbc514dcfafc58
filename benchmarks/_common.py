"""Shared helpers of the benchmark scripts: print a table and write JSON."""

from __future__ import annotations

import json
import platform
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def write_result(name: str, result: dict) -> Path:
    """Print ``result`` as a two-column table and write it to ``out/<name>.json``."""
    result = {**result, "host": platform.node(), "cpu": platform.processor() or platform.machine()}
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path


# --- helpers of the workflow benchmarks (bench_dag, bench_overhead) ------------

REPO = Path(__file__).resolve().parent.parent
#: what a run of the workflow needs from the repository (``envs``: the rules' conda files)
WORKFLOW_PARTS = ("Snakefile", "workflow", "src", "envs")
#: ``python_code`` of :func:`snakemake`: Snakemake with the touch executor's sleep
#: of 0.1 s per job (which spaces the touched files' mtimes) set to 0
NO_SLEEP_TOUCH = (
    "import snakemake.executors.touch as t; t.Executor.SLEEPING_TIME = 0; "
    "import sys; from snakemake.cli import main; sys.exit(main())"
)


def snapshot_workflow(dst: Path, root: Path = REPO) -> Path:
    """Copy the workflow and the package source of ``root`` (default: this
    repository) to ``dst``; return its Snakefile.

    Other people edit ``src/`` and the rules while a benchmark runs; a code edit
    changes the rules' ``source`` params and would turn a no-op rerun into a
    real one. A snapshot keeps the code fixed for the whole benchmark.
    """
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = root / part
        if src.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
            shutil.copytree(src, dst / part, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dst / part)
    return dst / "Snakefile"


def snakemake(
    snakefile: Path,
    workdir: Path,
    configfile: Path,
    *args: str,
    cores: int = 2,
    python_code: str | None = None,
    timeout: float = 900,
) -> tuple[float, str]:
    """Run Snakemake on ``snakefile`` in ``workdir``; return (wall seconds, output).

    The jobs import boltzbench from the snapshot next to ``snakefile``
    (``PYTHONPATH``). ``python_code``, if given, replaces ``-m snakemake``: a
    ``-c`` program that ends by calling ``snakemake.cli.main()``. Raises if
    Snakemake fails.
    """
    import os
    import subprocess
    import sys
    import time

    env = {**os.environ, "PYTHONPATH": str(snakefile.parent / "src")}
    entry = ["-m", "snakemake"] if python_code is None else ["-c", python_code]
    cmd = [
        sys.executable,
        *entry,
        "-s",
        str(snakefile),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        str(cores),
        *args,
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    seconds = time.perf_counter() - t0
    text = out.stdout + out.stderr
    if out.returncode:
        raise RuntimeError(f"snakemake {' '.join(args)} failed:\n{text[-4000:]}")
    return seconds, text


def write_config(path: Path, cfg: dict) -> Path:
    """Validate ``cfg`` as the workflow does, then write it as YAML to ``path``."""
    import yaml

    from boltzbench.config import validate_config

    validate_config(cfg)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def planned_total(dry_run_output: str) -> int:
    """The job count of a Snakemake dry run ('total  N' in its job stats); 0 if none."""
    import re

    m = re.search(r"^total\s+(\d+)\s*$", dry_run_output, flags=re.M)
    return int(m.group(1)) if m else 0
