"""The cost of the reproducible mode: reverse-KL flow training it/s, mode ÷ default.

Each run is a fresh process (the mode's variables are read when torch is
imported) that trains boltzbench's ``flow`` method in reverse-KL mode on
ManyWell-32 for ``STEPS`` steps with the README's flow benchmark architecture
(6 spline couplings, hidden [128, 128], batch 256), one thread, and reports the
training it/s (import and set-up excluded) and its final parameters. The
environments, interleaved ``REPEATS`` times:

``default``    this machine's own code paths (ATen AVX2/AVX-512, MKL's auto branch)
``mode``       :func:`boltzbench.reproducible.mode_environment` and deterministic
               algorithms, as jobs of ``reproducible: true`` run
``aten``       only ``ATEN_CPU_CAPABILITY=default`` (what the portable kernels cost)
``mkl``        only ``MKL_CBWR=COMPATIBLE`` (what MKL's SSE2 branch costs)

Reported: median it/s of each, by wall clock and by the process's CPU time
(one thread, so CPU time is the work done, less sensitive to other processes on
a shared machine), the median over repeats of the ratios mode ÷ default (below
1: the mode is slower), whether each environment's repeats are
bit-identical, and how far the final parameters of default (this CPU's
kernels) and aten (portable kernels) runs lie apart: the cross-machine effect.

Run: ``.venv/bin/python benchmarks/bench_reproducible.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import REPO, write_result  # noqa: E402
from boltzbench.reproducible import RECORDED, mode_environment  # noqa: E402

DIM, STEPS, REPEATS = 32, 60, 5
CONFIG = {"transforms": 6, "hidden_features": [128, 128], "batch_size": 256, "lr": 1e-3}
ENVS = ("default", "mode", "aten", "mkl")


def worker(params_path: str) -> None:
    """One run (in a fresh process): train, save the flat parameters, print JSON."""
    import torch

    torch.set_num_threads(1)
    from boltzbench.methods.flow import FlowMethod
    from boltzbench.reproducible import apply_torch
    from boltzbench.targets.analytic import ManyWell

    apply_torch()
    method = FlowMethod(mode="reverse_kl", n_iter=STEPS, **CONFIG)
    target, gen = ManyWell(DIM), torch.Generator().manual_seed(0)
    t0, c0 = time.perf_counter(), time.process_time()
    method.fit(target, None, gen)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    flat = torch.cat([v.flatten().double() for v in method.model_state().values()])
    torch.save(flat, params_path)
    info = {
        "it_per_s": STEPS / seconds,
        "it_per_cpu_s": STEPS / cpu_seconds,
        "capability": torch.backends.cpu.get_cpu_capability(),
    }
    print(json.dumps(info))


def _env(name: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in RECORDED}
    base |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    extra = {
        "default": {},
        "mode": mode_environment(base),
        "aten": {"ATEN_CPU_CAPABILITY": "default"},
        "mkl": {"MKL_CBWR": "COMPATIBLE"},
    }[name]
    return base | extra


def _run(name: str, params_path: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(params_path)]
    out = subprocess.run(cmd, env=_env(name), capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise RuntimeError(f"{name} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _apart(a, b) -> str:
    """'bit-identical' or the largest absolute difference of two parameter vectors."""
    import torch

    if torch.equal(a, b):
        return "bit-identical"
    return f"max |Δθ| {(a - b).abs().max().item():.3g} ({int((a != b).sum())}/{a.numel()} differ)"


def _ratio(num: list[float], den: list[float]) -> float:
    """The median over repeats of num ÷ den (paired by repeat)."""
    return statistics.median([a / b for a, b in zip(num, den, strict=True)])


def main() -> dict:
    import torch

    runs: dict[str, list[dict]] = {name: [] for name in ENVS}
    params: dict[str, list] = {name: [] for name in ENVS}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(REPEATS):
            for name in ENVS:
                path = Path(tmp) / f"{name}{rep}.pt"
                runs[name].append(_run(name, path))
                params[name].append(torch.load(path))
    speed = {name: [r["it_per_s"] for r in runs[name]] for name in ENVS}
    cpu = {name: [r["it_per_cpu_s"] for r in runs[name]] for name in ENVS}
    result = {
        "what": f"reverse-KL flow training it/s, ManyWell-{DIM}, {CONFIG}, 1 thread",
        "steps": STEPS,
        **{f"{name}_it_per_s": statistics.median(speed[name]) for name in ENVS},
        **{f"{name}_capability": runs[name][0]["capability"] for name in ENVS},
        **{f"{n}_it_per_cpu_s": statistics.median(cpu[n]) for n in ENVS},
        **{f"{n}_over_default_ratio_median": _ratio(speed[n], speed["default"]) for n in ENVS[1:]},
        **{f"{n}_over_default_cpu_ratio_median": _ratio(cpu[n], cpu["default"]) for n in ENVS[1:]},
        "mode_over_default_cpu_ratios": [
            round(m / d, 3) for m, d in zip(cpu["mode"], cpu["default"], strict=True)
        ],
        **{
            f"{name}_repeats": _apart(params[name][0], params[name][-1])
            for name in ("default", "mode")
        },
        "default_vs_aten_params": _apart(params["default"][0], params["aten"][0]),
        "default_vs_mode_params": _apart(params["default"][0], params["mode"][0]),
        "repeats": REPEATS,
    }
    write_result("reproducible", result)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2])
    else:
        main()
