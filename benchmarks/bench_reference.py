"""Reference-generation cost: energy evaluations to reach R̂ < 1.01, DW-4 and LJ-13.

For each target, parallel tempering and plain MALA
(:func:`boltzbench.mcmc.reference.mcmc_reference`, ``algorithm="pt"`` and
``"mala"``) run in rounds of increasing length: round r keeps D = 32·2^r draws
per chain from ``CHAINS`` chains, one every ``thinning`` steps, after
D·thinning/2 steps of warm-up (at least 200) and as many of burn-in. Each round
is a fresh run with the same seed, through a
:class:`~boltzbench.targets.CountingTarget`. Rounds stop once both criteria
below are met, or when the next round would take the evaluations summed over
the rounds past ``BUDGET`` (the same cap for both algorithms).

Two criteria, on the kept draws of the β = 1 chains (Vehtari et al. 2021):

* ``energy``: the rank-normalized split R̂ of the energy < 1.01;
* ``all``: the gate of ``mcmc_reference``: the largest R̂ over the energy and
  the target's invariant features < 1.01. For DW-4 and LJ-13 these are the
  sorted interatomic distances, invariant under rotations and permutations
  like the density (the raw coordinates mix only as fast as the cluster's
  orientation diffuses, which no metric looks at).

For each (target, algorithm, criterion) the table gives the evaluations of the
first passing round (all temperatures counted), the evaluations summed over the
rounds up to it, and R̂ and the energy ESS of that round; ``pt/mala`` is the
ratio of the first column (``<x`` or ``>x`` where only one side met the
criterion: a bound). A criterion not met within the budget shows ``>`` and the
evaluations of the last round. ``--budget=N`` sets another cap. Run:
``.venv/bin/python -m benchmarks.bench_reference`` from the repository root
(about 3 minutes on 2 cores; ``--dev`` runs ManyWell-8 instead).
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
from boltzbench.mcmc.reference import mcmc_reference  # noqa: E402
from boltzbench.targets import CountingTarget, build_target  # noqa: E402

CHAINS, FIRST_DRAWS, THRESHOLD, THREADS, SEED = 16, 32, 1.01, 1, 0
#: evaluations summed over the rounds of one (target, algorithm), at most
BUDGET = 700_000
#: per target: its config entry and the settings of the runs
TARGETS = {
    "DW-4": {
        "spec": {"kind": "dw4"},
        "run": {"thinning": 5, "n_temps": 4, "t_max": 4.0, "init_scale": 0.3},
    },
    "LJ-13": {
        "spec": {"kind": "lj", "params": {"n_particles": 13}},
        "run": {"thinning": 5, "n_temps": 4, "t_max": 3.0, "init_scale": 0.1},
    },
}
#: the development target (``--dev``): ManyWell-8, four double wells of ~9 k_BT barriers
DEV_TARGETS = {
    "ManyWell-8": {
        "spec": {"kind": "manywell", "params": {"dim": 8}},
        "run": {"thinning": 5, "n_temps": 6, "t_max": 10.0, "init_scale": 1.0},
    },
}
ALGORITHMS = ("pt", "mala")
CRITERIA = {"energy": "rhat_energy", "all": "rhat_max"}


def schedule(draws: int, thinning: int) -> dict:
    """The phases of a round keeping ``draws`` draws per chain."""
    half = draws * thinning // 2
    return {"n_warmup": max(200, half), "n_burnin": half}


def evaluations(algorithm: str, draws: int, run: dict) -> int:
    """Energy-and-gradient evaluations of one round (MALA: one per chain and step)."""
    steps = sum(schedule(draws, run["thinning"]).values()) + draws * run["thinning"]
    temps = run["n_temps"] if algorithm == "pt" else 1
    return temps * CHAINS * (1 + steps)


def one_round(target, algorithm: str, draws: int, run: dict) -> dict:
    """Run one round; its attrs with the counted evaluations and the wall time."""
    counting = CountingTarget(target)
    t0 = time.perf_counter()
    s = mcmc_reference(
        counting,
        CHAINS * draws,
        torch.Generator().manual_seed(SEED),
        algorithm=algorithm,
        n_chains=CHAINS,
        rhat_max=math.inf,
        **schedule(draws, run["thinning"]),
        **run,
    )
    assert counting.counts.grad == s.attrs["energy_evaluations"]
    return {**s.attrs, "draws": draws, "seconds": time.perf_counter() - t0}


def rounds(target, algorithm: str, run: dict, name: str) -> list[dict]:
    """Rounds of doubling length until both criteria pass or the budget is spent."""
    out, spent, draws = [], 0, FIRST_DRAWS
    while spent + evaluations(algorithm, draws, run) <= BUDGET:
        r = one_round(target, algorithm, draws, run)
        spent += r["energy_evaluations"]
        out.append({**r, "cumulative": spent})
        print(
            f"  {name:<10} {algorithm:<4} D={draws:<5} evals={r['energy_evaluations']:>9,} "
            f"R̂_E={r['rhat_energy']:.4f} R̂_max={r['rhat_max']:.4f} "
            f"ESS_E={r['ess_energy']:.0f} acc={r['acceptance']:.2f} "
            f"swap={r['swap_acceptance_mean']:.2f} ({r['seconds']:.1f} s)",
            flush=True,
        )
        if all(r[key] < THRESHOLD for key in CRITERIA.values()):
            break
        draws *= 2
    return out


def first_passing(history: list[dict], key: str) -> tuple[dict, bool]:
    """The first round with ``key`` < THRESHOLD (True), else the last round (False)."""
    for r in history:
        if r[key] < THRESHOLD:
            return r, True
    return history[-1], False


def summarize(name: str, histories: dict[str, list[dict]]) -> list[dict]:
    """One row per (algorithm, criterion) of one target, with the PT ÷ MALA ratio."""
    rows = []
    for criterion, key in CRITERIA.items():
        found = {alg: first_passing(h, key) for alg, h in histories.items()}
        for alg, (r, ok) in found.items():
            rows.append(
                {
                    "target": name,
                    "algorithm": alg,
                    "criterion": criterion,
                    "reached": ok,
                    "draws": r["draws"],
                    "evaluations": r["energy_evaluations"],
                    "cumulative": r["cumulative"],
                    "rhat": r[key],
                    "ess_energy": r["ess_energy"],
                    "pt_over_mala": _ratio(found) if alg == "pt" else None,
                }
            )
    return rows


def _ratio(found: dict[str, tuple[dict, bool]]) -> tuple[str, float] | None:
    """PT ÷ MALA evaluations with its kind: '=' measured, '<' or '>' a bound, None if neither
    reached the criterion."""
    (pt, pt_ok), (mala, mala_ok) = found["pt"], found["mala"]
    if not (pt_ok or mala_ok):
        return None
    kind = "=" if pt_ok and mala_ok else "<" if pt_ok else ">"
    return kind, pt["energy_evaluations"] / mala["energy_evaluations"]


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'target':<11}{'method':<7}{'R̂ of':<8}{'D/chain':>8}{'evaluations':>14}"
        f"{'cumulative':>13}{'R̂':>8}{'ESS_E':>8}{'pt/mala':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        mark = "" if r["reached"] else ">"
        ratio = "n/a" if r["algorithm"] == "pt" else ""
        if r["pt_over_mala"] is not None:
            kind, value = r["pt_over_mala"]
            ratio = f"{'' if kind == '=' else kind}{value:.3g}"
        print(
            f"{r['target']:<11}{r['algorithm']:<7}{r['criterion']:<8}{r['draws']:>8}"
            f"{mark + format(r['evaluations'], ','):>14}{r['cumulative']:>13,}"
            f"{r['rhat']:>8.4f}{r['ess_energy']:>8.0f}{ratio:>10}"
        )
    print(f"'>': R̂ < {THRESHOLD} not reached within {BUDGET:,} evaluations (last round shown);")
    print("pt/mala: '<x' or '>x' is a bound (one side not reached), n/a: neither reached")


def main(targets: dict | None = None) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return _run(TARGETS if targets is None else targets)
    finally:
        torch.set_num_threads(threads)


def _run(targets: dict) -> dict:
    rows = []
    for name, entry in targets.items():
        target = build_target(entry["spec"]).double()
        histories = {alg: rounds(target, alg, entry["run"], name) for alg in ALGORITHMS}
        rows += summarize(name, histories)
    print_table(rows)
    result = {"what": f"energy evaluations to R̂ < {THRESHOLD}, {CHAINS} chains, float64"}
    for r in rows:
        key = f"{r['target']}/{r['algorithm']}/{r['criterion']}"
        result[f"{key}/evaluations"] = r["evaluations"]
        result[f"{key}/reached"] = r["reached"]
        result[f"{key}/rhat"] = r["rhat"]
        result[f"{key}/ess_energy"] = r["ess_energy"]
        if r["algorithm"] == "pt":
            kind, value = r["pt_over_mala"] or ("n/a", None)
            result[f"{r['target']}/{r['criterion']}/pt_over_mala"] = value
            result[f"{r['target']}/{r['criterion']}/pt_over_mala_kind"] = kind
    result.update(budget_evaluations=BUDGET, torch_threads=THREADS, torch=torch.__version__)
    write_result("reference", result)
    return result


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        if arg.startswith("--budget="):
            BUDGET = int(arg.split("=", 1)[1])
    main(DEV_TARGETS if "--dev" in sys.argv else None)
