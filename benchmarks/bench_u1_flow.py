"""U(1) gauge links: log Ẑ of a reverse-KL flow on the torus against one on ℝ^dim.

On `u1` (L = 4, β = 1: 32 links, exact log Z from the character expansion) a
reverse-KL flow (4 coupling layers, MLPs 64 × 64, 400 steps of 256 rows, seed 1)
is trained twice, with ``periodic: circular`` (circular splines: a density on
[−π, π)^32) and ``periodic: interval`` (the links as real numbers), and draws
5,000 samples each (seed 2). Printed per variant: log Ẑ − log Z over the finite
weights, the normalized Kish ESS, the fraction of draws inside [−π, π)^32 and the
seconds. e^{−S} is periodic, so over ℝ^32 it does not integrate, and only the
circular flow's log Ẑ estimates log Z.

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/bench_u1_flow.py`` (about 4
minutes on 1 core). Not part of ``make bench``: it measures estimates, not speed.
"""

from __future__ import annotations

import math
import time

import torch

from boltzbench.methods.flow import FlowMethod
from boltzbench.targets.gauge import U1

SETTINGS = {
    "mode": "reverse_kl",
    "transforms": 4,
    "hidden_features": [64, 64],
    "n_iter": 400,
    "batch_size": 256,
    "init_scale": 1.0,
}


def run(periodic: str, n: int = 5000) -> dict[str, float]:
    target = U1(L=4, beta=1.0)
    method = FlowMethod(**SETTINGS, periodic=periodic)
    start = time.perf_counter()
    method.fit(target, None, torch.Generator().manual_seed(1))
    samples = method.sample(target, n, torch.Generator().manual_seed(2))
    log_w = samples.log_weight.double()
    finite = log_w[torch.isfinite(log_w)]
    w = torch.exp(finite - finite.max())
    inside = ((samples.x >= -math.pi) & (samples.x < math.pi)).all(1).double().mean()
    return {
        "log_Z_error": float(torch.logsumexp(finite, 0) - math.log(n)) - target.log_Z,
        "kish_ess": float(w.sum() ** 2 / (w**2).sum()) / n,
        "inside": float(inside),
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    torch.set_num_threads(1)
    for periodic in ("circular", "interval"):
        r = run(periodic)
        print(
            f"{periodic:>8}: log Ẑ − log Z = {r['log_Z_error']:+.3f}, normalized Kish ESS "
            f"{r['kish_ess']:.3f}, inside [−π, π)^32 {r['inside']:.1%}, {r['seconds']:.0f} s"
        )


if __name__ == "__main__":
    main()
