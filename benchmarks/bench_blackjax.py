"""boltzbench's chain kernels against blackjax under ``jax.jit``: steps per second.

MALA (ε = 0.2 on ManyWell-32, 0.3 on the Gaussian) and HMC (5 leapfrog steps
of ε = 0.1 on ManyWell-32, 0.2 on the Gaussian) on ManyWell-32 and on a 50-D
Gaussian (AR(1) covariance, ρ = 0.5), at 64, 1,024 and 4,096 chains, float32,
every chain starting from the same N(0, I) draws. blackjax's MALA step size is
s = ε²/2 (its proposal is y = x + s ∇log p + √(2s) ξ, ours y = x − (ε²/2) ∇E + ε ξ);
its HMC takes the same ε and L with a unit inverse mass matrix.

boltzbench runs compiled (``compile="true"``: :mod:`boltzbench.mcmc.compiling`),
through a :class:`~boltzbench.targets.counting.CountingTarget` as a method
does, stepping from Python; blackjax runs ``jax.vmap`` of its kernel over the
chains inside a ``jax.lax.fori_loop`` under ``jax.jit`` (its best case: no
Python per step). Both on one thread of one core: ``torch.set_num_threads(1)``,
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``
(set before jax is imported) and the process pinned to one CPU while it runs.
``REPEATS`` interleaved repeats after an untimed burn-in of the same
``BURN_IN`` steps for both (which also compiles); the ratio is the median over
repeats of ours ÷ blackjax. The mean acceptance rates of both over the timed
steps are reported with the standard error of their difference over chains
(per-chain mean acceptance, chains independent): from the same start, after
the same burn-in, with the same step size they must agree
(``acceptance_agree``: within 4 standard errors). The burn-in matters: from
N(0, I) MALA's acceptance on ManyWell-32 falls from 0.67 over the first 60
steps to 0.61 at equilibrium, so two windows of different steps differ
though the kernels are the same.

Rows ``pt``, ``smc_move`` and ``flow_mixed`` time boltzbench's compiled
parallel tempering (8 temperatures), SMC move (MALA at β = 0.5 along the
Gaussian path) and flow-proposal mixed kernel (4 MALA steps and an IMH jump
from a Gaussian proposal) against the same kernels eager (blackjax has no
direct peer of these), on ManyWell-32 with 1,024 chains.

Without jax and blackjax (``pip install -e '.[bench]'``) it prints why and
skips the blackjax rows. Run: ``.venv/bin/python -m benchmarks.bench_blackjax``,
a few minutes on 2 shared cores (most of it compiling); ``--quick``: ManyWell-32
only, 3 repeats, no compiled-÷-eager rows.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

if not __package__:  # run as a file: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_result  # noqa: E402
from boltzbench.mcmc import (  # noqa: E402
    annealing,
    compiling,
    flow_proposal,
    hmc,
    mala,
    tempering,
)
from boltzbench.targets.analytic import ManyWell  # noqa: E402
from boltzbench.targets.counting import CountingTarget  # noqa: E402
from boltzbench.targets.gaussian import Gaussian  # noqa: E402

CHAINS, REPEATS, L = (64, 1024, 4096), 5, 5
#: untimed MALA steps (HMC: ÷ L) of both before timing: past the transient
BURN_IN = 300
#: kernel steps per timed repeat, by chain count (about 0.1–0.5 s each)
STEPS = {64: 200, 1024: 40, 4096: 12}
#: (MALA ε, HMC ε) per target
STEP_SIZES = {"manywell32": (0.2, 0.1), "gauss50": (0.3, 0.2)}
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def targets() -> dict:
    return {"manywell32": ManyWell(32).float(), "gauss50": Gaussian(50, rho=0.5).float()}


# --- boltzbench -------------------------------------------------------------------


class Ours:
    """Compiled (or eager) boltzbench chains of one kernel, stepped from Python."""

    def __init__(self, target, kind: str, x0: torch.Tensor, eps: float, compile="true"):
        self.potential = compiling.potential(CountingTarget(target), compile)
        self.kernel = (
            mala.build_kernel(compile) if kind == "mala" else hmc.build_kernel(compile=compile)
        )
        self.args = (eps,) if kind == "mala" else (eps, L)
        self.state = mala.init(x0.clone(), self.potential)
        self.generator = torch.Generator().manual_seed(0)
        self.accept = []

    def __call__(self, steps: int) -> float:
        acc = torch.zeros(self.state.energy.shape)
        t0 = time.perf_counter()
        for _ in range(steps):
            self.state, info = self.kernel(self.generator, self.state, self.potential, *self.args)
            acc += info.acceptance_rate
        seconds = time.perf_counter() - t0
        self.accept.append(acc.double() / steps)
        return steps / seconds


# --- blackjax ---------------------------------------------------------------------


def _jax():
    """jax and blackjax on one thread, or None (and why) where they are absent."""
    flags = os.environ.get("XLA_FLAGS", "")
    if XLA_ONE_THREAD not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_ONE_THREAD}".strip()
    try:
        import blackjax
        import jax
    except ImportError as err:
        return None, f"blackjax/jax not installed ({err}); pip install -e '.[bench]'"
    jax.config.update("jax_platform_name", "cpu")
    return (jax, blackjax), ""


def _logdensity(name: str, target, jnp):
    """log p of one position (shape ``(dim,)``), the negative of boltzbench's energy."""
    if name == "manywell32":
        a, b, c = target.a, target.b, target.c

        def logdensity(x):
            x1, x2 = x[0::2], x[1::2]
            return (-(a * x1 + b * x1**2 + c * x1**4) - 0.5 * x2**2).sum()

        return logdensity
    precision, mean = jnp.asarray(target.precision.numpy()), jnp.asarray(target.mean.numpy())

    def logdensity(x):
        d = x - mean
        return -0.5 * d @ precision @ d

    return logdensity


class Theirs:
    """blackjax chains: ``vmap`` of the kernel inside ``fori_loop`` under ``jit``."""

    def __init__(self, libs, name, target, kind: str, x0: torch.Tensor, eps: float, steps: int):
        jax, blackjax = libs
        jnp = jax.numpy
        logdensity = _logdensity(name, target, jnp)
        n = x0.shape[0]
        if kind == "mala":
            kernel, s = blackjax.mala.build_kernel(), eps**2 / 2  # s = ε²/2

            def one(key, state):
                return kernel(key, state, logdensity, s)

            init = blackjax.mala.init
        else:
            kernel, inv_mass = blackjax.hmc.build_kernel(), jnp.ones(x0.shape[1])

            def one(key, state):
                return kernel(key, state, logdensity, eps, inv_mass, L)

            init = blackjax.hmc.init
        many = jax.vmap(one)

        def body(_, carry):
            key, states, acc = carry
            key, sub = jax.random.split(key)
            states, info = many(jax.random.split(sub, n), states)
            return key, states, acc + info.acceptance_rate

        def run(key, states, steps):
            return jax.lax.fori_loop(0, steps, body, (key, states, jnp.zeros(n)))

        self.jax, self.run = jax, jax.jit(run)
        self.states = jax.vmap(init, in_axes=(0, None))(jnp.asarray(x0.numpy()), logdensity)
        self.key, self.accept = jax.random.PRNGKey(0), []

    def __call__(self, steps: int) -> float:
        t0 = time.perf_counter()
        out = self.jax.block_until_ready(self.run(self.key, self.states, steps))
        seconds = time.perf_counter() - t0
        self.key, self.states, acc = out
        self.accept.append(torch.from_numpy(np.asarray(acc, dtype=np.float64)) / steps)
        return steps / seconds


# --- the comparison ---------------------------------------------------------------


def _interleave(a, b, steps: int, burn_in: int) -> tuple[list[float], list[float]]:
    """``burn_in`` untimed steps of both (a first warm-up compiles), then ``REPEATS``
    alternating timed repeats of each."""
    a(burn_in)
    b(steps)  # compiles the timed loop
    b(burn_in - steps)
    a.accept.clear()
    b.accept.clear()
    ra, rb = [], []
    for _ in range(REPEATS):
        ra.append(a(steps))
        rb.append(b(steps))
    return ra, rb


def _row(ra: list[float], rb: list[float], acc_a: list, acc_b: list) -> dict:
    """Medians and range of the ratio; acceptance (per-chain means over the timed
    repeats ``acc_a``, ``acc_b``) with the standard error of the difference."""
    ratios = [u / v for u, v in zip(ra, rb, strict=True)]
    per_a, per_b = torch.stack(acc_a).mean(0), torch.stack(acc_b).mean(0)
    a, b = float(per_a.mean()), float(per_b.mean())
    se = float((per_a.var() / len(per_a) + per_b.var() / len(per_b)).sqrt())
    return {
        "ours_steps_per_s": round(statistics.median(ra), 1),
        "other_steps_per_s": round(statistics.median(rb), 1),
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "ours_acceptance": round(a, 4),
        "other_acceptance": round(b, 4),
        "acceptance_diff_se": round(se, 4),
        "acceptance_agree": abs(a - b) < 4 * se,
    }


def versus_blackjax(libs, names=None) -> dict:
    rows = {}
    for name, target in targets().items():
        if names and name not in names:
            continue
        for kind, eps in zip(("mala", "hmc"), STEP_SIZES[name], strict=True):
            for n in CHAINS:
                x0 = torch.randn(n, target.dim, generator=torch.Generator().manual_seed(1))
                steps = STEPS[n] if kind == "mala" else max(STEPS[n] // L, 3)
                ours = Ours(target, kind, x0, eps)
                theirs = Theirs(libs, name, target, kind, x0, eps, steps)
                burn_in = BURN_IN if kind == "mala" else BURN_IN // L
                ra, rb = _interleave(ours, theirs, steps, burn_in)
                key = f"{kind}_{name}_{n}"
                rows[key] = _row(ra, rb, ours.accept, theirs.accept)
                print(key, rows[key], flush=True)
    return rows


# --- the other kernels: compiled ÷ eager ------------------------------------------


def _pt(target, x0, compile):
    betas = tempering.geometric_ladder(8, 10.0, torch.float32)
    potential = compiling.potential(CountingTarget(target), compile)
    kernel = tempering.build_kernel(betas, "mala", compile)
    state = tempering.init(x0.reshape(8, -1, x0.shape[1]).clone(), potential)
    eps = torch.full((8,), 0.2)
    return _stepper(lambda g, s: kernel(g, s, potential, eps), state, "acceptance_rate")


def _smc_move(target, x0, compile):
    path = annealing.gaussian_path(CountingTarget(target), 1.0, compile)
    kernel = annealing.Annealing(compile=compile).build_kernel()
    potential = annealing.path_potential(path, 0.5)
    return _stepper(lambda g, s: kernel(g, s, potential, 0.2), potential(x0.clone()), None)


def _flow_mixed(target, x0, compile):
    d, scale = x0.shape[1], 1.5

    def propose(generator, n):
        y = scale * torch.randn(n, d, generator=generator)
        return y, log_prob(y)

    def log_prob(y):
        return -0.5 * (y / scale).pow(2).sum(-1) - d * (0.9189385 + torch.log(torch.tensor(scale)))

    evaluate = compiling.energy_and_grad(CountingTarget(target), compile)
    kernel = flow_proposal.build_mixed_kernel(propose, log_prob, 4, compile)
    state = flow_proposal.init(x0.clone(), log_prob(x0), evaluate)
    return _stepper(lambda g, s: kernel(g, s, evaluate, 0.2), state, None)


def _stepper(step, state, _):
    box = {"state": state, "generator": torch.Generator().manual_seed(0)}

    def run(steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            box["state"], _info = step(box["generator"], box["state"])
        return steps / (time.perf_counter() - t0)

    run.accept = []
    return run


def compiled_vs_eager() -> dict:
    target, n, rows = ManyWell(32).float(), 1024, {}
    x0 = torch.randn(n, 32, generator=torch.Generator().manual_seed(1))
    for name, make in (("pt", _pt), ("smc_move", _smc_move), ("flow_mixed", _flow_mixed)):
        fast, slow = make(target, x0, "true"), make(target, x0, "false")
        ra, rb = _interleave(fast, slow, 10, 20)
        ratios = [u / v for u, v in zip(ra, rb, strict=True)]
        rows[f"{name}_manywell32_{n}"] = {
            "compiled_steps_per_s": round(statistics.median(ra), 1),
            "eager_steps_per_s": round(statistics.median(rb), 1),
            "ratio_median": round(statistics.median(ratios), 3),
        }
        print(name, rows[f"{name}_manywell32_{n}"], flush=True)
    return rows


def main(quick: bool = "--quick" in sys.argv) -> dict:
    global REPEATS
    REPEATS = 3 if quick else REPEATS
    threads, cpus = torch.get_num_threads(), os.sched_getaffinity(0)
    torch.set_num_threads(1)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        return _run(quick)
    finally:
        torch.set_num_threads(threads)
        os.sched_setaffinity(0, cpus)


def _run(quick: bool) -> dict:
    result = {
        "what": "steps/s, boltzbench compiled vs blackjax (jit), float32, 1 thread",
        "compile_supported": compiling.supported(),
        "torch": torch.__version__,
    }
    libs, why = _jax()
    if libs is None:
        print(f"bench_blackjax: skipping the blackjax rows: {why}")
        result["blackjax"] = f"skipped: {why}"
    else:
        result["blackjax"] = libs[1].__version__
        result["jax"] = libs[0].__version__
        result["versus_blackjax"] = versus_blackjax(libs, ("manywell32",) if quick else None)
    if not quick:
        result["compiled_vs_eager"] = compiled_vs_eager()
    result.update(repeats=REPEATS, steps_per_repeat=STEPS, n_leapfrog=L, burn_in=BURN_IN)
    write_result("blackjax_quick" if quick else "blackjax", result)
    return result


if __name__ == "__main__":
    main()
