"""The reproducible mode (config ``reproducible: true``): pin the CPU code paths
that decide floating-point rounding.

On one machine a rerun is bit-identical. On another x86-64 machine it need not
be: torch's vectorized ATen kernels (``ATEN_CPU_CAPABILITY``: default, avx2,
avx512), MKL's BLAS, oneDNN and glibc's libm all pick their code by instruction
set, and a different summation order or a fused multiply-add changes the last
bit, which training then amplifies. The mode sets, before torch is imported:

``ATEN_CPU_CAPABILITY=default``
    ATen's portable kernels instead of its AVX2/AVX-512 ones (read once, when
    torch first dispatches).
``MKL_CBWR=COMPATIBLE``, ``MKL_DYNAMIC=FALSE``, ``OMP_DYNAMIC=FALSE``
    MKL's conditional numerical reproducibility on its SSE2 branch (without
    rcpps/rsqrtps), the one branch oneMKL documents for Intel and non-Intel
    CPUs alike, and a thread count MKL may not change at run time (oneMKL
    Developer Guide, "Reproducibility Conditions"). torch's bundled MKL 2024.2
    honours it: ``mkl_serv_cbwr_get`` reads branch 3 (COMPATIBLE) under it and a
    float32 GEMM changes bits; ``MKL_CBWR=AVX2`` falls back to AUTO on AMD.
``ONEDNN_MAX_CPU_ISA=SSE41``
    oneDNN's JIT kernels at SSE4.1 (the flows' float32 training runs no oneDNN
    primitive; convolutions would).
``GLIBC_TUNABLES`` += ``glibc.cpu.hwcaps=-FMA,-FMA4``
    glibc's libm without its FMA variants of exp, log, sin, tanh … in float64
    (glibc ≥ 2.33 spells the names so; older ones ignore them).
``CUBLAS_WORKSPACE_CONFIG=:4096:8``
    what deterministic cuBLAS needs on a GPU.

and in every job (:func:`apply_torch`, called by the rule adapter)
``torch.use_deterministic_algorithms(True, warn_only=True)``: an op without a
deterministic implementation logs a warning instead of failing the job.

What the mode cannot pin: the torch build and library versions, glibc's version,
the CPU architecture (x86-64 vs ARM) and the number of threads a job runs with
(a job's ``threads``, capped by ``--cores``). Provenance records all of these
(:mod:`boltzbench.provenance`).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping, MutableMapping
from typing import Any

__all__ = [
    "ENV",
    "MARKER",
    "GLIBC_HWCAPS",
    "RECORDED",
    "requested",
    "mode_environment",
    "apply_env",
    "active",
    "apply_torch",
    "deterministic_state",
]

#: set in the environment of a process running in the mode (jobs look for it)
MARKER = "BOLTZBENCH_REPRODUCIBLE"
#: the mode's environment variables (GLIBC_TUNABLES is merged, see GLIBC_HWCAPS)
ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "MKL_DYNAMIC": "FALSE",
    "OMP_DYNAMIC": "FALSE",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
    MARKER: "1",
}
#: the glibc tunable that masks FMA from libm's dispatch
GLIBC_HWCAPS = "glibc.cpu.hwcaps=-FMA,-FMA4"
#: environment variables that decide code paths or rounding, recorded when set
RECORDED = (
    *ENV,
    "GLIBC_TUNABLES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_DEBUG_CPU_TYPE",
    "DNNL_MAX_CPU_ISA",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_NUM_THREADS",
    "NVIDIA_TF32_OVERRIDE",
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
)


def requested(config: Mapping[str, Any]) -> bool:
    """Whether a raw (unvalidated) config asks for the mode.

    The value is read as pydantic reads ``Config.reproducible`` (``true``,
    ``"yes"``, ``1`` …); one it cannot read counts as False here and is reported
    by :func:`boltzbench.config.validate_config`.
    """
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(bool).validate_python(config.get("reproducible", False))
    except ValidationError:
        return False


def _merged_tunables(current: str) -> str:
    """``current`` GLIBC_TUNABLES (colon-separated) with :data:`GLIBC_HWCAPS` set."""
    kept = [t for t in current.split(":") if t and not t.startswith("glibc.cpu.hwcaps=")]
    return ":".join([*kept, GLIBC_HWCAPS])


def mode_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables the mode sets, given the current ``environ`` (nothing is changed)."""
    return {**ENV, "GLIBC_TUNABLES": _merged_tunables(environ.get("GLIBC_TUNABLES", ""))}


def apply_env(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Put the mode's variables into ``environ`` (default ``os.environ``); return them.

    Every process started afterwards inherits them: Snakemake's local jobs and,
    through ``sbatch``'s default ``--export=ALL``, its SLURM jobs. Call it before
    torch is imported: ATen reads ``ATEN_CPU_CAPABILITY`` and ld.so reads
    ``GLIBC_TUNABLES`` once per process, so a process that already has torch
    keeps its kernels (only its children get the mode).
    """
    environ = os.environ if environ is None else environ
    changes = mode_environment(environ)
    environ.update(changes)
    if environ is os.environ and "torch" in sys.modules:
        warnings.warn(
            "boltzbench reproducible mode: torch is already imported in this process; "
            "its kernels are chosen, only processes started from now on run in the mode",
            stacklevel=2,
        )
    return changes


def active(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs in the mode (``BOLTZBENCH_REPRODUCIBLE=1``)."""
    return (os.environ if environ is None else environ).get(MARKER) == "1"


def apply_torch() -> bool:
    """In a job of the mode, turn on torch's deterministic algorithms; return ``active()``.

    Also warns when ATen runs other kernels than the mode's (``ATEN_CPU_CAPABILITY``
    set after torch was imported, or overridden).
    """
    if not active():
        return False
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != ENV["ATEN_CPU_CAPABILITY"].upper():
        warnings.warn(
            f"boltzbench reproducible mode: ATen runs {capability} kernels, not DEFAULT",
            stacklevel=2,
        )
    return True


def deterministic_state() -> str:
    """torch's deterministic-algorithms setting: "true", "warn_only" or "false"."""
    import torch

    if not torch.are_deterministic_algorithms_enabled():
        return "false"
    return "warn_only" if torch.is_deterministic_algorithms_warn_only_enabled() else "true"
