"""``check_method``: the contract every sampler must keep, checked on small targets.

Each check is a small function of a :class:`~boltzbench.testing.runs.Case` (a
method on one target), registered in :data:`METHOD_CHECKS`; it returns None
when the method passes, the reason when the check does not apply (printed), and
raises :class:`~boltzbench.testing.ConformanceError` naming the method, the
target and what went wrong when it fails. They share one unbudgeted run
(``Case.main``, fit + sample of ``n`` rows); the budget, seed and checkpoint
checks run the method again.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from boltzbench.core import BUDGET_SPEND_MIN, SampleSet
from boltzbench.methods.base import Method
from boltzbench.targets.base import Target
from boltzbench.targets.counting import BudgetExceeded, CountingTarget
from boltzbench.targets.gaussian import Gaussian
from boltzbench.testing.common import require, run_checks
from boltzbench.testing.runs import (
    Case,
    Killed,
    KilledAfter,
    Run,
    counted,
    fit_generator,
    raw_counts,
    sample_generator,
)

__all__ = ["check_method", "METHOD_CHECKS", "default_method_targets", "LOG_Z_TOL"]

#: |log Ẑ − log Z| allowed on the 2-D Gaussian (nats): a few n = 64 standard errors
#: of a fair proposal, far below a missing normalization of log q (log 2π = 1.84)
LOG_Z_TOL = 0.5

#: relative and absolute tolerance of reported energies, by the samples' dtype
ENERGY_TOL = {torch.float64: 1e-6, torch.float32: 1e-4}

METHOD_CHECKS: dict[str, Callable[[Case], str | None]] = {}


def _check(fn: Callable[[Case], str | None]) -> Callable[[Case], str | None]:
    METHOD_CHECKS[fn.__name__] = fn
    return fn


def default_method_targets() -> list[Target]:
    """The small target a method is checked on by default: a correlated 2-D
    Gaussian (exact samples, closed-form log Z)."""
    return [Gaussian(dim=2, rho=0.5)]


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Equal bit for bit (NaN equal to NaN), or both None."""
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def _differences(a: SampleSet, b: SampleSet) -> list[str]:
    fields = ("x", "energy", "log_weight", "log_q")
    return [f for f in fields if not _same(getattr(a, f), getattr(b, f))]


@_check
def params(case: Case) -> str | None:
    """The constructor keywords round-trip: ``type(m)(**m.get_params())``."""
    try:
        p = case.method.get_params()
        again = type(case.method)(**p).get_params()
    except Exception as err:  # noqa: BLE001 (any failure is the finding)
        require(False, case.name, "params", f"get_params() does not rebuild it: {err!r}")
    require(again == p, case.name, "params", f"get_params() gives {p}, its copy {again}")


@_check
def samples(case: Case) -> str | None:
    """fit returns self; n rows of the right shapes and dtypes; the reported energies
    are the target's own; every evaluation went through the counting target."""
    run, name = case.main, case.name
    require(isinstance(run.method.history_, dict), name, "samples", "fit sets no history_ dict")
    s = run.samples
    require(isinstance(s, SampleSet), name, "samples", f"sample returned {type(s).__name__}")
    dim = case.target.dim
    require(
        s.x.shape == (case.n, dim),
        name,
        "samples",
        f"x has shape {tuple(s.x.shape)}, expected ({case.n}, {dim})",
    )
    for f in ("x", "energy", "log_weight", "log_q"):
        v = getattr(s, f)
        if v is not None:
            require(v.dtype in ENERGY_TOL, name, "samples", f"{f} has dtype {v.dtype}")
    _check_energies(case, s)
    _check_counted(case, run)


def _check_energies(case: Case, s: SampleSet) -> None:
    tol = ENERGY_TOL[s.x.dtype]
    with torch.no_grad():
        true = case.target.energy(s.x.double())
    got = s.energy.double()
    ok = torch.isclose(got, true, rtol=tol, atol=tol, equal_nan=True)
    rows = (~ok).nonzero().flatten()[:5].tolist()
    require(
        not rows,
        case.name,
        "samples",
        f"reported energies differ from the target's at rows "
        f"{rows}: {got[rows].tolist()} reported, {true[rows].tolist()} true",
    )
    require(bool(torch.isfinite(got).any()), case.name, "samples", "no sample has a finite energy")


def _check_counted(case: Case, run: Run) -> None:
    counts = run.fit_counts.energy + run.sample_counts.energy
    grads = run.fit_counts.grad + run.sample_counts.grad
    raw = run.raw
    require(
        (raw.energy, raw.grad) == (counts, grads),
        case.name,
        "samples",
        f"the energy was evaluated on {raw.energy} rows (gradient on {raw.grad}) but only "
        f"{counts} ({grads}) went through the counting target it was given: it evaluates "
        "the energy outside the counting target",
    )
    require(
        run.sample_counts.energy >= run.samples.x.shape[0],
        case.name,
        "samples",
        f"{run.samples.x.shape[0]} energies reported, {run.sample_counts.energy} evaluated "
        "while sampling",
    )


@_check
def weights(case: Case) -> str | None:
    """Weights iff the method says ``weighted``; log w finite or −inf; log w = −E − log q."""
    s, name = case.main.samples, case.name
    weighted = bool(case.method.weighted)
    require(
        (s.log_weight is not None) == weighted,
        name,
        "weights",
        f"weighted = {weighted} but log_weight is {'absent' if s.log_weight is None else 'set'}",
    )
    if s.log_weight is None:
        return "the method gives no weights"
    bad = s.log_weight.isnan() | (s.log_weight == math.inf)
    require(not bad.any(), name, "weights", f"{int(bad.sum())} log weights are NaN or +inf")
    if s.log_q is not None:
        ok = torch.isclose(s.log_weight, -s.energy - s.log_q, atol=1e-4, equal_nan=True)
        ok |= s.log_weight == -math.inf
        require(bool(ok.all()), name, "weights", "log_weight is not −energy − log_q")
    return None


@_check
def log_z(case: Case) -> str | None:
    """On a Gaussian, log Ẑ (the method's own estimate, else log-mean-exp of the
    weights) is within :data:`LOG_Z_TOL` nats of the closed-form log Z."""
    from boltzbench.metrics.weights import log_z_hat

    if not isinstance(case.target, Gaussian):
        return "log Z is checked on a Gaussian target only"
    estimate = log_z_hat(case.main.samples, case.target)
    if estimate is None:
        return "the method gives neither weights nor a log Z estimate"
    err = abs(estimate - case.target.log_Z)
    require(
        err <= LOG_Z_TOL,
        case.name,
        "log_z",
        f"log Ẑ = {estimate:.4f} but log Z = "
        f"{case.target.log_Z:.4f} (|Δ| = {err:.3g} > {LOG_Z_TOL}): the weights are inconsistent",
    )
    return None


@_check
def seeded(case: Case) -> str | None:
    """A fixed seed gives identical results, whatever the global random state."""
    a, b = case.main, case.run(global_seed_=2)
    diff = _differences(a.samples, b.samples)
    require(
        not diff,
        case.name,
        "seeded",
        f"two runs with the same seed differ in {diff}: "
        "it draws from an unseeded (global) random generator",
    )
    require(
        a.fit_counts == b.fit_counts and a.sample_counts == b.sample_counts,
        case.name,
        "seeded",
        "two runs with the same seed made different evaluations",
    )


@_check
def model_round_trip(case: Case) -> str | None:
    """The model state round-trips through the Zarr artifact and reproduces the samples."""
    from boltzbench.io import load_model, save_model

    run = case.main
    with tempfile.TemporaryDirectory() as tmp:
        save_model(Path(tmp) / "model.zarr", run.model, run.method.history_, {})
        state, _, _ = load_model(Path(tmp) / "model.zarr")
    target = CountingTarget(case.target)
    restored = case.fitted_from(state, target)
    a = run.method.sample(target, 32, torch.Generator().manual_seed(5))
    b = restored.sample(target, 32, torch.Generator().manual_seed(5))
    diff = _differences(a, b)
    require(
        not diff,
        case.name,
        "model_round_trip",
        f"a copy restored from model_state() samples differently ({diff})",
    )


@_check
def checkpoint(case: Case) -> str | None:
    """A run killed right after a checkpoint and run again ends exactly like the
    uninterrupted run, counts included (for each phase that checkpoints)."""
    run = case.main
    if not run.fit_saves and not run.sample_saves:
        return "the method saves no checkpoint"
    with tempfile.TemporaryDirectory() as tmp:
        if run.fit_saves:
            _resumed_fit(case, run, Path(tmp) / "fit.pt")
        if run.sample_saves:
            _resumed_sample(case, run, Path(tmp) / "sample.pt")
    return None


def _middle(saves: Sequence[int]) -> int:
    return saves[len(saves) // 2]


def _killed_then_resumed(case: Case, path: Path, at: int, phase: str, go) -> tuple:
    """``go(target, ckpt)`` killed after saving step ``at``, then run again; returns
    (its result, the resumed run's counts)."""
    first = counted(case.target)
    try:
        go(first, KilledAfter(path, at, first, kill=True))
    except Killed:
        pass
    else:
        require(
            False,
            case.name,
            "checkpoint",
            f"{phase} saved step {at} in one run but not in another of the same seed",
        )
    again = counted(case.target)
    ckpt = KilledAfter(path, at, again, kill=False)
    result = go(again, ckpt)
    require(
        ckpt.resumed_from == at,
        case.name,
        "checkpoint",
        f"{phase} did not resume from its checkpoint at step {at} ({ckpt.resumed_from})",
    )
    return result, again.counts


def _resumed_fit(case: Case, run: Run, path: Path) -> None:
    at = _middle(run.fit_saves)

    def go(target, ckpt):
        return case.fresh().fit(target, case.data, fit_generator(case.seed), ckpt)

    method, counts = _killed_then_resumed(case, path, at, "fit", go)
    state = method.model_state()
    same = state.keys() == run.model.keys() and all(_same(state[k], run.model[k]) for k in state)
    require(
        same,
        case.name,
        "checkpoint",
        f"fit killed after step {at} and resumed ends with another model than an uninterrupted fit",
    )
    require(
        counts == run.fit_counts,
        case.name,
        "checkpoint",
        f"resumed fit counts {counts}, uninterrupted {run.fit_counts}",
    )


def _resumed_sample(case: Case, run: Run, path: Path) -> None:
    at = _middle(run.sample_saves)

    def go(target, ckpt):
        method = case.fitted_from(run.model, target)
        return method.sample(target, case.n, sample_generator(case.seed), ckpt)

    s, counts = _killed_then_resumed(case, path, at, "sample", go)
    diff = _differences(s, run.samples)
    require(
        not diff,
        case.name,
        "checkpoint",
        f"sampling killed after step {at} and resumed differs from an uninterrupted run in {diff}",
    )
    require(
        counts == run.sample_counts,
        case.name,
        "checkpoint",
        f"resumed sampling counts {counts}, uninterrupted {run.sample_counts}",
    )


def _budgeted(case: Case, method: Method, budget: int, check: str) -> tuple[SampleSet, int, bool]:
    """Fit and sample ``method`` within ``budget`` as the pipeline splits it (training
    gets what sampling does not plan to use); (samples, spent, stopped at the budget)."""
    fit_target = counted(case.target, max(budget - method.sample_cost(case.n), 0))
    try:
        method.fit(fit_target, case.data, fit_generator(case.seed))
        sample_target = counted(case.target, budget - fit_target.counts.energy)
        s = method.sample(sample_target, case.n, sample_generator(case.seed))
    except BudgetExceeded as err:
        require(
            False,
            case.name,
            check,
            f"under a budget of {budget} it asked for more evaluations instead of stopping ({err})",
        )
    spent = fit_target.counts.energy + sample_target.counts.energy
    raw = raw_counts(fit_target).energy + raw_counts(sample_target).energy
    require(
        raw == spent,
        case.name,
        check,
        f"under a budget of {budget} it evaluated {raw} "
        f"rows, {spent} of them counted: it evaluates the energy outside the counting target",
    )
    require(spent <= budget, case.name, check, f"spent {spent} of a budget of {budget}")
    require(
        s.x.shape[0] >= 1 and bool(torch.isfinite(s.energy).any()),
        case.name,
        check,
        f"under a budget of {budget} it returned no finite sample",
    )
    return s, spent, fit_target.exhausted or sample_target.exhausted


@_check
def budget_stop(case: Case) -> str | None:
    """Under half the evaluations its unbudgeted run makes, the method stops at the
    budget: it never asks past it, returns samples, and marks the target exhausted."""
    total = case.main.total
    if total < 2:
        return f"the unbudgeted run makes {total} evaluations"
    budget = total // 2
    _, spent, stopped = _budgeted(case, case.fresh(), budget, "budget_stop")
    require(
        stopped,
        case.name,
        "budget_stop",
        f"spent {spent} of a budget of {budget} (its run "
        f"needs {total}) without stopping at the budget: a method that shortens its run "
        "should say so (CountingTarget.exhausted, see core.affordable)",
    )


@_check
def budget_plan(case: Case) -> str | None:
    """``plan_budget(B, n)`` for B = what the unbudgeted run spends: the planned run
    spends 95–100 % of B, or the plan's note says why not."""
    budget = case.main.total
    if budget < 1:
        return "the unbudgeted run makes no evaluation"
    try:
        plan = case.fresh().plan_budget(budget, case.n)
    except ValueError as err:
        require(
            False,
            case.name,
            "budget_plan",
            f"cannot plan a budget of {budget}, what its own run spends: {err}",
        )
    _, spent, _ = _budgeted(case, plan.method, budget, "budget_plan")
    require(
        spent >= BUDGET_SPEND_MIN * budget or bool(plan.note),
        case.name,
        "budget_plan",
        f"its plan spent {spent} of a budget of {budget} ({spent / budget:.1%}, planned "
        f"{plan.planned}) and its note does not say why",
    )


def check_method(
    method: Method,
    targets: Iterable[Target] | None = None,
    *,
    n: int = 64,
    seed: int = 0,
    data: torch.Tensor | None = None,
    checks: Iterable[str] | None = None,
) -> dict[str, dict[str, str]]:
    """Check that ``method`` keeps boltzbench's method contract; raise
    :class:`~boltzbench.testing.ConformanceError` naming the method, the target, the
    check and why at the first failure.

    Parameters
    ----------
    method
        An instance with small settings (a few steps, chains or iterations: every
        check fits and samples a fresh copy, ``type(m)(**m.get_params())``).
    targets
        Small targets to run on (default :func:`default_method_targets`).
    n
        Samples drawn per run.
    data
        Reference samples for a method that ``needs_data`` (default: exact samples
        or points near the target's base location).
    checks
        Names from :data:`METHOD_CHECKS` (default: all): ``params``, ``samples``
        (shapes, dtypes, energies equal the target's, every evaluation counted),
        ``weights`` (finite or −inf, log w = −E − log q), ``log_z`` (log Ẑ on a
        Gaussian within :data:`LOG_Z_TOL`), ``seeded`` (identical results for a
        fixed seed), ``model_round_trip``, ``checkpoint`` (kill and resume),
        ``budget_stop`` and ``budget_plan`` (95–100 % of a budget, or a note).

    Returns ``{target: {check: "passed" | "skipped: why"}}``. A method whose costs are
    declared (``declares_costs``: samples made elsewhere) is skipped, with the reason.
    """
    name = type(method).__name__
    if getattr(method, "declares_costs", False):
        why = "its costs are declared by the samples it reads, not counted"
        print(f"method {name}: skipped: {why}")
        return {"*": {"*": f"skipped: {why}"}}
    report = {}
    for target in default_method_targets() if targets is None else targets:
        case = Case(method, target, n=n, seed=seed, data=data)
        report[type(target).__name__] = run_checks(METHOD_CHECKS, checks, case.name, case)
    return report
