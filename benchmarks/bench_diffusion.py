"""Diffusion-sampler training speed: boltzbench's ``diffusion`` method ÷ a bare torch loop.

Both sides train the same control MLP (x and a 16-feature time embedding in,
two hidden SiLU layers of 128, drift out) with Adam and the reverse-KL loss on
ManyWell-32, for ``STEPS`` steps of ``BATCH`` trajectories of ``N_SDE`` SDE
steps, in float32, side by side in one process, interleaved, ``REPEATS`` times.
The reported ratio is the median over repeats of (ours it/s ÷ bare it/s);
above 1 means boltzbench is faster.

``pis``
    Euler–Maruyama of dX = f dt + σ dW on [0, 1] from 0; loss mean[Σ½|u|² h-terms
    + E(X_1) + log N(X_1; 0, σ²)].
``dds``
    the exponential integrator X' = √(1−α) X + 2σ²(1−√(1−α)) f + σ√α ε on a
    cosine schedule, from N(0, σ²); same loss.

The bare loop is the textbook one written inline (no boltzbench code but the
target's energy). Ours adds the path weights and ESS per step (the history),
gradient clipping, divergence checks, the counting hooks and tqdm.

Both run on one torch thread. Run: ``.venv/bin/python benchmarks/bench_diffusion.py``
(about a minute on 2 cores).
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks._common import write_result  # noqa: E402
from boltzbench.methods.diffusion import DiffusionSampler  # noqa: E402
from boltzbench.targets.analytic import ManyWell  # noqa: E402

DIM, BATCH, N_SDE, STEPS, REPEATS = 32, 256, 50, 10, 3
HIDDEN, SIGMA, LR, N_FREQ = 128, 1.0, 1e-3, 8
CONFIG = {
    "n_steps": N_SDE,
    "hidden_features": [HIDDEN, HIDDEN],
    "batch_size": BATCH,
    "sigma": SIGMA,
    "lr": LR,
}


def _bare_coefficients(kind: str) -> tuple[list[float], list[float], list[float], float]:
    """(a_k, c_k, s_k, std of X_0) of the chain X' = a X + c f + s ε, written out inline."""
    if kind == "pis":
        h = 1.0 / N_SDE
        return [1.0] * N_SDE, [h] * N_SDE, [SIGMA * math.sqrt(h)] * N_SDE, 0.0
    s = [j / N_SDE for j in range(N_SDE + 1)]
    abar = [math.cos(0.5 * math.pi * (v + 0.008) / 1.008) ** 2 for v in s]
    alpha = [min(max(1 - abar[j + 1] / abar[j], 1e-8), 0.999) for j in range(N_SDE)][::-1]
    a = [math.sqrt(1 - al) for al in alpha]
    c = [2 * SIGMA**2 * (1 - ak) for ak in a]
    return a, c, [SIGMA * math.sqrt(al) for al in alpha], SIGMA


def _bare(kind: str, target: ManyWell, generator: torch.Generator) -> None:
    torch.manual_seed(int(torch.randint(2**31, (), generator=generator)))
    net = nn.Sequential(
        nn.Linear(DIM + 2 * N_FREQ, HIDDEN),
        nn.SiLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.SiLU(),
        nn.Linear(HIDDEN, DIM),
    )
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    a, c, s, std0 = _bare_coefficients(kind)
    freqs = math.pi * torch.arange(1, N_FREQ + 1, dtype=torch.float32)
    t = torch.arange(N_SDE, dtype=torch.float32)[:, None] / N_SDE
    emb = torch.cat([torch.sin(t * freqs), torch.cos(t * freqs)], -1)
    for _ in range(STEPS):
        x = std0 * torch.randn(BATCH, DIM, generator=generator)
        cost = torch.zeros(BATCH)
        for k in range(N_SDE):
            f = net(torch.cat([x, emb[k].expand(BATCH, -1)], -1))
            u = (c[k] / s[k]) * f
            x = a[k] * x + s[k] * (u + torch.randn(BATCH, DIM, generator=generator))
            cost = cost + 0.5 * (u**2).sum(-1)
        log_ref = -0.5 * (x**2).sum(-1) / SIGMA**2 - DIM * (
            math.log(SIGMA) + 0.5 * math.log(2 * math.pi)
        )
        loss = (cost + target.energy(x) + log_ref).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _ours(kind: str, target: ManyWell, generator: torch.Generator) -> None:
    DiffusionSampler(kind=kind, n_iter=STEPS, **CONFIG).fit(target, None, generator)


def _its(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return STEPS / (time.perf_counter() - t0)


def _compare(kind: str, target: ManyWell, gen: torch.Generator) -> dict:
    _ours(kind, target, gen)  # warm-up, not timed
    _bare(kind, target, gen)
    ours, bare = [], []
    for _ in range(REPEATS):
        ours.append(_its(_ours, kind, target, gen))
        bare.append(_its(_bare, kind, target, gen))
    ratios = [a / b for a, b in zip(ours, bare, strict=True)]
    return {
        f"{kind}_boltzbench_it_per_s": statistics.median(ours),
        f"{kind}_bare_torch_it_per_s": statistics.median(bare),
        f"{kind}_ratio_median": statistics.median(ratios),
    }


def main() -> dict:
    # one intra-op thread, as in the tests: the small per-step ops of an SDE loop
    # gain nothing from a second thread on a shared 2-core machine, only noise
    torch.set_num_threads(1)
    target = ManyWell(DIM)
    gen = torch.Generator().manual_seed(0)
    result = {"what": f"diffusion training it/s (reverse KL), ManyWell-{DIM}, {CONFIG}"}
    result["steps"] = STEPS
    with torch.random.fork_rng(devices=[]):
        for kind in ("pis", "dds"):
            result |= _compare(kind, target, gen)
    result |= {"repeats": REPEATS, "torch_threads": torch.get_num_threads()}
    write_result("diffusion", result)
    return result


if __name__ == "__main__":
    main()
