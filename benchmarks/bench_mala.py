"""MALA steps per second on ManyWell-32 with 4,096 chains in float32.

boltzbench's kernel (:func:`boltzbench.mcmc.mala.build_kernel` through a
potential built from ``ManyWell.energy_and_grad``) ÷ a bare torch loop doing the
same arithmetic: energy and gradient by autograd, the Langevin proposal
y = x − (ε²/2)∇E + εξ, the Hastings ratio and the Metropolis accept with
``torch.where``. Both run in one process, interleaved, ``REPEATS`` times of
``STEPS`` steps after one untimed warm-up each; the ratio is the median over
repeats of (ours ÷ bare) in steps per second, so 1.0 means no overhead. Run:
``.venv/bin/python -m benchmarks.bench_mala`` from the repository root (or
``.venv/bin/python benchmarks/bench_mala.py``), about 30 s on 2 cores.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

if not __package__:  # run as a file: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_result  # noqa: E402
from boltzbench.mcmc import mala, proposal  # noqa: E402
from boltzbench.targets.analytic import ManyWell  # noqa: E402

CHAINS, DIM, STEPS, REPEATS, STEP_SIZE, THREADS = 4096, 32, 100, 11, 0.2, 1


def _energy_and_grad(target, x):
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = target.energy(x)
        (g,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), g


def bare_loop(target, x, n_steps, gen) -> torch.Tensor:
    """The reference: MALA written inline in plain torch."""
    eps = STEP_SIZE
    e, g = _energy_and_grad(target, x)
    for _ in range(n_steps):
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        y = x - 0.5 * eps**2 * g + eps * noise
        e_y, g_y = _energy_and_grad(target, y)
        back = ((x - y + 0.5 * eps**2 * g_y) ** 2).sum(-1) / (2 * eps**2)
        log_ratio = e - e_y - back + 0.5 * (noise**2).sum(-1)
        u = torch.rand(log_ratio.shape, generator=gen, dtype=x.dtype)
        accept = (torch.log(u) < log_ratio) & torch.isfinite(e_y)
        x = torch.where(accept[:, None], y, x)
        e = torch.where(accept, e_y, e)
        g = torch.where(accept[:, None], g_y, g)
    return x


def ours(target, x, n_steps, gen) -> torch.Tensor:
    """The same through boltzbench.mcmc (state caching, potential, shared accept)."""
    potential = proposal.potential_from(target.energy_and_grad)
    step = mala.build_kernel()
    state = mala.init(x, potential)
    for _ in range(n_steps):
        state, _ = step(gen, state, potential, STEP_SIZE)
    return state.position


def _steps_per_second(fn, target, x) -> float:
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    fn(target, x, STEPS, gen)
    return STEPS / (time.perf_counter() - t0)


def main() -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return _run()
    finally:
        torch.set_num_threads(threads)


def _run() -> dict:
    target = ManyWell(DIM).float()
    x = torch.randn(CHAINS, DIM, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    for fn in (ours, bare_loop):  # untimed warm-up
        fn(target, x, 3, torch.Generator().manual_seed(0))
    a, b = [], []
    for _ in range(REPEATS):
        a.append(_steps_per_second(ours, target, x))
        b.append(_steps_per_second(bare_loop, target, x))
    ratios = [u / v for u, v in zip(a, b, strict=True)]
    result = {
        "what": f"MALA steps/s, ManyWell-{DIM}, {CHAINS} chains, float32",
        "boltzbench_steps_per_s": statistics.median(a),
        "bare_torch_steps_per_s": statistics.median(b),
        "ratio_median": statistics.median(ratios),
        "ratio_best": max(a) / max(b),  # fastest repeat of each: least disturbed
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "steps_per_repeat": STEPS,
        "repeats": REPEATS,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    write_result("mala", result)
    return result


if __name__ == "__main__":
    main()
