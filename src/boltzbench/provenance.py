"""Provenance attributes: written by :func:`provenance_attrs` and nothing else.

Every Zarr store and metrics file boltzbench writes carries these attributes
(values are strings or numbers; nested values are canonical JSON strings):

``boltzbench_step``, ``boltzbench_version``
    The step that wrote the artifact and the package version.
``config``, ``config_sha256``
    The resolved config slice for that job and its sha256.
``source_sha256``, ``git_commit``, ``git_dirty``
    Hash of the boltzbench source, the git commit of the checkout and whether
    it had uncommitted changes ("unknown" outside a git checkout).
``packages``
    Versions of python and the key packages.
``cpu_model``, ``torch_cpu_capability``, ``blas``, ``libc``
    What decides floating-point rounding on a CPU, so that a difference between
    two machines' results can be traced: the CPU ("AMD EPYC (x86_64)"), the
    instruction set of ATen's vectorized kernels
    (``torch.backends.cpu.get_cpu_capability()``: DEFAULT, AVX2, AVX512 …), the
    BLAS torch was built with ("mkl 2024.2, onednn 3.12.0") and the C library
    whose libm computes float64 exp, log, sin … ("glibc 2.36").
``num_threads``, ``reproducibility_env``
    torch's intra-op threads when the artifact was written (reductions and MKL
    split their sums by thread), and canonical JSON of the environment variables
    that pin code paths (:data:`boltzbench.reproducible.RECORDED`, only those
    set) plus ``deterministic_algorithms`` ("true", "warn_only" or "false"); see
    :mod:`boltzbench.reproducible`.
``seed``, ``inputs``
    The job's seed and ``{role: {"path": ..., "sha256": ...}}`` of every input
    artifact (:func:`boltzbench.hashing.hash_path`).
``host``, ``started_at``, ``finished_at``
    Where and when.
``slurm_job_id``, ``slurm_gpus``
    Under SLURM, the job id (``SLURM_JOB_ID``) and the indices of the GPUs
    SLURM allocated to the job step (``SLURM_STEP_GPUS``, or ``SLURM_JOB_GPUS``
    in a batch script; set only where GPUs were granted); empty strings elsewhere.

:mod:`boltzbench.io` adds one more when it writes the artifact: ``data_hash``,
the seal over the artifact's content without its attrs, which
``boltzbench audit`` verifies.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import re
import socket
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from boltzbench import __version__
from boltzbench.hashing import PACKAGE_ROOT, canonical_json, hash_json, hash_path, source_hash
from boltzbench.reproducible import RECORDED, deterministic_state

__all__ = [
    "provenance_attrs",
    "now",
    "package_versions",
    "git_state",
    "machine_info",
    "runtime_info",
]

PACKAGES = ("torch", "zuko", "pot", "numpy", "scipy", "xarray", "zarr", "snakemake", "pydantic")


def now() -> str:
    """The current UTC time, ISO 8601."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else ``platform``) and architecture."""
    name = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", text, flags=re.M)
        name = found.group(1).strip() if found else ""
    except OSError:
        pass
    name = name or platform.processor() or "unknown"
    return f"{name} ({platform.machine() or 'unknown'})"


def _blas(config: str) -> str:
    """The BLAS (and oneDNN) of torch's build, from ``torch.__config__.show()``."""
    info = re.search(r"BLAS_INFO=(\w+)", config)
    name = info.group(1) if info else "unknown"
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", config)
    parts = [f"mkl {mkl.group(1)}" if name == "mkl" and mkl else name]
    onednn = re.search(r"MKL-DNN v([\d.]+)", config)
    if onednn:
        parts.append(f"onednn {onednn.group(1)}")
    return ", ".join(parts)


@lru_cache(maxsize=1)
def machine_info() -> dict[str, str]:
    """``cpu_model``, ``torch_cpu_capability``, ``blas`` and ``libc`` of this process.

    Fixed for a process's lifetime (ATen picks its kernels once), hence cached.
    """
    import torch

    libc, version = platform.libc_ver()
    return {
        "cpu_model": _cpu_model(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": _blas(torch.__config__.show()),
        "libc": f"{libc} {version}".strip() or "unknown",
    }


def runtime_info() -> dict[str, str]:
    """``num_threads`` and ``reproducibility_env`` now (they may change in a process)."""
    import torch

    env = {k: os.environ[k] for k in RECORDED if k in os.environ}
    env["deterministic_algorithms"] = deterministic_state()
    return {
        "num_threads": str(torch.get_num_threads()),
        "reproducibility_env": canonical_json(env),
    }


@lru_cache(maxsize=1)
def git_state() -> tuple[str, str]:
    """(commit, dirty) of the checkout holding the boltzbench source, or "unknown"."""

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", *args], cwd=PACKAGE_ROOT, capture_output=True, text=True, timeout=10
        )
        if out.returncode:
            raise RuntimeError(out.stderr)
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = "true" if git("status", "--porcelain", "--untracked-files=no") else "false"
        return commit, dirty
    except (RuntimeError, OSError, subprocess.SubprocessError):
        return "unknown", "unknown"


def provenance_attrs(
    step: str,
    config: dict[str, Any],
    seed: int | None,
    inputs: dict[str, str | Path] | None = None,
    started_at: str | None = None,
    directory: str | Path | None = None,
) -> dict[str, Any]:
    """The provenance attributes of one artifact (see the module docstring).

    ``inputs`` maps an input's role (e.g. ``"reference"``) to its path; its
    content hash is computed here. The paths are recorded as given, and read
    relative to ``directory`` (default: the current directory).
    """
    commit, dirty = git_state()
    base = Path(directory if directory is not None else ".")
    hashed = {
        role: {"path": str(p), "sha256": hash_path(base / p)} for role, p in (inputs or {}).items()
    }
    return {
        "boltzbench_step": step,
        "boltzbench_version": __version__,
        "config": canonical_json(config),
        "config_sha256": hash_json(config),
        "source_sha256": source_hash(),
        "git_commit": commit,
        "git_dirty": dirty,
        "packages": canonical_json(package_versions()),
        **machine_info(),
        **runtime_info(),
        "seed": -1 if seed is None else int(seed),
        "inputs": canonical_json(hashed),
        "host": socket.gethostname(),
        "started_at": started_at or now(),
        "finished_at": now(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
        "slurm_gpus": os.environ.get("SLURM_STEP_GPUS") or os.environ.get("SLURM_JOB_GPUS", ""),
    }
