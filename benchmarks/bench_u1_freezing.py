"""Topological freezing of HMC on 2-D U(1) gauge theory, L = 8, β = 1, 2, 4, 6.

For each β: the ``mcmc`` reference with HMC moves (``algorithm="pt", n_temps=1,
kernel="hmc"``, ``N_LEAPFROG`` leapfrog steps with a step size adapted to
acceptance 0.651), ``CHAINS`` chains of ``DRAWS`` draws (every step kept) after
warm-up and burn-in, no R̂ gate. Reported: acceptance, step size, the plaquette
and χ_Q against their exact values, τ_int of the plaquette and of Q in HMC
trajectories (:func:`boltzbench.metrics.gauge.topo_tau_int`), and the fraction of
trajectories that changed Q. When τ_int(Q) approaches DRAWS / 50 the estimate is a
lower bound (the chains are too short to resolve it). Run:
``.venv/bin/python -m benchmarks.bench_u1_freezing`` (about 8.5 min on the shared
2-core development machine).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

if not __package__:  # run as a file: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_result  # noqa: E402
from boltzbench.mcmc.diagnostics import effective_sample_size  # noqa: E402
from boltzbench.mcmc.reference import mcmc_reference  # noqa: E402
from boltzbench.metrics.gauge import chain_order, topo_tau_int  # noqa: E402
from boltzbench.targets.gauge import U1  # noqa: E402

L, BETAS, CHAINS, DRAWS, N_LEAPFROG = 8, (1.0, 2.0, 4.0, 6.0), 16, 2000, 10


def one_beta(beta: float, seed: int = 0) -> dict[str, float]:
    """The HMC run at ``beta`` and its observables (module docstring)."""
    t = U1(L, beta)
    start = time.perf_counter()
    s = mcmc_reference(
        t,
        CHAINS * DRAWS,
        torch.Generator().manual_seed(seed),
        algorithm="pt",
        n_temps=1,
        kernel="hmc",
        n_leapfrog=N_LEAPFROG,
        n_chains=CHAINS,
        n_warmup=300,
        n_burnin=300,
        thinning=1,
        step_size=0.2,
        rhat_max=math.inf,
    )
    seconds = time.perf_counter() - start
    plaq = chain_order(t.plaquettes(s.x).mean(1), s)
    q = chain_order(torch.round(t.topological_charge(s.x)), s)
    tau_plaq = plaq.numel() / (2 * float(effective_sample_size(plaq)))
    return {
        "beta": beta,
        "acceptance": s.attrs["acceptance"],
        "step_size": s.attrs["step_size"],
        "plaquette": float(plaq.mean()),
        "plaquette_exact": t.exact_plaquette(),
        "chi_q": float((q * q).mean()) / t.volume,
        "chi_q_exact": t.exact_topological_susceptibility(),
        "tau_int_plaquette": tau_plaq,
        "tau_int_q": topo_tau_int(s, t),
        "q_change_rate": float((q[:, 1:] != q[:, :-1]).double().mean()),
        "seconds": seconds,
    }


def main() -> None:
    rows = [one_beta(beta) for beta in BETAS]
    header = (
        "| β | acc. | ε | ⟨cos θ_P⟩ (exact) | χ_Q (exact) | τ_int(plaq.) | τ_int(Q) "
        "| Q changes/traj. |"
    )
    print(header + "\n|" + "---|" * 8)
    for r in rows:
        print(
            f"| {r['beta']:g} | {r['acceptance']:.2f} | {r['step_size']:.3f} | "
            f"{r['plaquette']:.4f} ({r['plaquette_exact']:.4f}) | "
            f"{r['chi_q']:.5f} ({r['chi_q_exact']:.5f}) | {r['tau_int_plaquette']:.1f} | "
            f"{r['tau_int_q']:.1f} | {r['q_change_rate']:.4f} |"
        )
    write_result("u1_freezing", {f"{k}_beta{r['beta']:g}": v for r in rows for k, v in r.items()})


if __name__ == "__main__":
    main()
