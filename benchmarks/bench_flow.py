"""Flow training speed: boltzbench's ``flow`` method ÷ a bare zuko training loop.

Both sides train the same flow (same architecture, batch size and AdamW
optimizer) on ManyWell-32 for ``STEPS`` steps, side by side in one process,
interleaved, ``REPEATS`` times. The reported ratio is the median over repeats of
(ours it/s ÷ bare it/s); above 1 means boltzbench is faster.

``mle``
    −log q(x_ref) on exact samples. The bare loop is the textbook one: shuffle,
    ``-flow().log_prob(x).mean()``, backward, step. Ours adds gradient
    clipping, a cosine schedule, divergence checks, history and tqdm. Validation
    is switched off (``val_fraction=0``) as the bare loop has none; with the
    default 0.1 it costs 40 evaluations of ≤ 4096 rows per fit, a few percent
    of a 2000-step fit (but most of a 60-step one).
``reverse_kl``
    log q(x) + E(x) on reparameterized flow samples. The bare loop uses zuko's
    stock coupling inverse (``rsample_and_log_prob``), which runs each coupling
    MLP and spline twice; ours uses the one-pass inverse of
    :class:`boltzbench.methods.flows_util.FastCoupling`.

Run: ``.venv/bin/python benchmarks/bench_flow.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from zuko.flows.coupling import GeneralCouplingTransform  # noqa: E402

from benchmarks._common import write_result  # noqa: E402
from boltzbench.methods.flow import FlowMethod  # noqa: E402
from boltzbench.methods.flows_util import coupling_flow  # noqa: E402
from boltzbench.targets.analytic import ManyWell  # noqa: E402

DIM, N_DATA, STEPS, REPEATS = 32, 20_000, 60, 3
CONFIG = {"transforms": 6, "hidden_features": [128, 128], "batch_size": 256, "lr": 1e-3}


def _bare_flow(data: torch.Tensor | None):
    """The same flow as ours, with zuko's stock coupling layers (generic inverse)."""
    shift = data.mean(0) if data is not None else torch.zeros(DIM)
    scale = data.std(0) if data is not None else torch.ones(DIM)
    flow = coupling_flow(
        DIM, shift, scale, **{k: CONFIG[k] for k in ("transforms", "hidden_features")}
    )
    for layer in flow.transform.transforms:
        if isinstance(layer, GeneralCouplingTransform):
            layer.__class__ = GeneralCouplingTransform
    return flow.float()


def _bare_mle(data: torch.Tensor, generator: torch.Generator) -> None:
    flow = _bare_flow(data)
    opt = torch.optim.AdamW(flow.parameters(), lr=CONFIG["lr"])
    perm = torch.randperm(len(data), generator=generator)
    b = CONFIG["batch_size"]
    for i in range(STEPS):
        x = data[perm[(i * b) % len(data) :][:b]]
        loss = -flow().log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _bare_reverse_kl(target: ManyWell, generator: torch.Generator) -> None:
    flow = _bare_flow(None)
    opt = torch.optim.AdamW(flow.parameters(), lr=CONFIG["lr"])
    for _ in range(STEPS):
        x, log_q = flow().rsample_and_log_prob((CONFIG["batch_size"],))
        loss = (log_q + target.energy(x)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _ours(mode: str, target: ManyWell, data, generator: torch.Generator) -> None:
    FlowMethod(mode=mode, n_iter=STEPS, val_fraction=0.0, **CONFIG).fit(target, data, generator)


def _its(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return STEPS / (time.perf_counter() - t0)


def _compare(mode: str, target: ManyWell, data: torch.Tensor, gen: torch.Generator) -> dict:
    ours, bare = [], []
    for _ in range(REPEATS):
        ours.append(_its(_ours, mode, target, data if mode == "mle" else None, gen))
        if mode == "mle":
            bare.append(_its(_bare_mle, data.float(), gen))
        else:
            bare.append(_its(_bare_reverse_kl, target, gen))
    ratios = [a / b for a, b in zip(ours, bare, strict=True)]
    return {
        f"{mode}_boltzbench_it_per_s": statistics.median(ours),
        f"{mode}_bare_zuko_it_per_s": statistics.median(bare),
        f"{mode}_ratio_median": statistics.median(ratios),
    }


def main() -> dict:
    target = ManyWell(DIM)
    gen = torch.Generator().manual_seed(0)
    data = target.sample(N_DATA, gen)
    result = {"what": f"flow training it/s, ManyWell-{DIM}, {CONFIG}", "steps": STEPS}
    for mode in ("mle", "reverse_kl"):
        result |= _compare(mode, target, data, gen)
    result |= {"repeats": REPEATS, "torch_threads": torch.get_num_threads()}
    write_result("flow", result)
    return result


if __name__ == "__main__":
    main()
