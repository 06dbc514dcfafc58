"""Flow-matching likelihood cost: wall seconds per evaluation of 10⁴ samples.

One "likelihood evaluation" is :meth:`FlowMatching.sample` of ``N_SAMPLES``
rows in one batch: the RK4 integration of x and of log q (``N_ODE_STEPS``
steps, 4 field evaluations each) plus the target's energy (a Gaussian, whose
cost is negligible). It is timed with the exact divergence (one backward pass
per coordinate, ``DIM`` of them per field evaluation) and with Hutchinson's
estimator (``N_PROBES`` backward pass per field evaluation), on the same
MLP field (``HIDDEN`` wide, ``N_LAYERS`` hidden layers, float32) in ``DIM``
dimensions. The field is freshly built (one training step): the cost does not
depend on the weights. Reported: the median over ``REPEATS`` runs of each, and
their ratio.

Run: ``.venv/bin/python benchmarks/bench_flow_matching.py`` (under two minutes on 2 busy cores).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks._common import write_result  # noqa: E402
from boltzbench.methods.flow_matching import FlowMatching  # noqa: E402
from boltzbench.targets.gaussian import Gaussian  # noqa: E402

DIM, N_SAMPLES, N_ODE_STEPS, HIDDEN, N_LAYERS, N_PROBES, REPEATS = 10, 10_000, 10, 32, 2, 1, 3


def _method(exact: bool, target: Gaussian, gen: torch.Generator) -> FlowMatching:
    method = FlowMatching(
        hidden_features=HIDDEN,
        n_layers=N_LAYERS,
        n_iter=1,
        n_ode_steps=N_ODE_STEPS,
        n_probes=N_PROBES,
        exact_trace_max_dim=DIM if exact else 0,
        sample_batch_size=N_SAMPLES,
    )
    return method.fit(target, target.sample(256, gen), gen)


def _seconds(method: FlowMatching, target: Gaussian, gen: torch.Generator) -> float:
    t0 = time.perf_counter()
    s = method.sample(target, N_SAMPLES, gen)
    seconds = time.perf_counter() - t0
    assert torch.isfinite(s.log_q).all()
    return seconds


def main() -> dict:
    gen = torch.Generator().manual_seed(0)
    target = Gaussian(dim=DIM)
    methods = {"exact": _method(True, target, gen), "hutchinson": _method(False, target, gen)}
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(REPEATS):  # interleaved, so both see the same machine load
        for name, method in methods.items():
            times[name].append(_seconds(method, target, gen))
    med = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "what": f"wall s per flow-matching likelihood evaluation of {N_SAMPLES} samples",
        "dim": DIM,
        "n_ode_steps": N_ODE_STEPS,
        "network": f"MLP {N_LAYERS}x{HIDDEN} SiLU, float32",
        "n_probes": N_PROBES,
        "exact_trace_s_median": med["exact"],
        "hutchinson_s_median": med["hutchinson"],
        "exact_over_hutchinson": med["exact"] / med["hutchinson"],
        "repeats": REPEATS,
        "torch_threads": torch.get_num_threads(),
    }
    write_result("flow_matching", result)
    return result


if __name__ == "__main__":
    main()
