"""Evaluation budgets: exact stopping points, SMC's shortened ladder, the train and
sample steps' split of a budget, budget plans that spend the budget, and
divergence errors that name the run.

(Every registered method is also run under a budget in test_conformance.py.)
"""

import json
import math

import pytest
import torch

from boltzbench.config import ConfigError, sweep_members, validate_config
from boltzbench.core import BUDGET_SPEND_MIN, BudgetPlan, SampleSet, TrainingDiverged
from boltzbench.io import read_store, samples_to_dataset, write_store
from boltzbench.jobs import named_divergence, spending_note, training_budget
from boltzbench.mcmc.runner import plan_chain
from boltzbench.methods import METHODS
from boltzbench.methods.flow import FlowMethod
from boltzbench.methods.mala import MALA
from boltzbench.methods.smc import SMC
from boltzbench.steps import sample as sample_step
from boltzbench.steps import train as train_step
from boltzbench.targets import BudgetExceeded, CountingTarget, Target
from boltzbench.targets.gaussian import Gaussian


def test_counting_target_refuses_before_evaluating():
    t = CountingTarget(Gaussian(dim=2), budget=10)
    t.energy(torch.zeros(6, 2))
    with pytest.raises(BudgetExceeded, match="budget of 10"):
        t.energy(torch.zeros(5, 2))
    assert t.counts.energy == 6 and t.exhausted and t.remaining() == 4
    t.energy(torch.zeros(4, 2))  # exactly up to the budget is allowed
    assert t.counts.energy == 10


@pytest.mark.parametrize("budget", [1000, 1234, 5000])
def test_mala_stops_at_the_last_step_the_budget_pays_for(budget, gen):
    chains = 20
    mala = MALA(n_chains=chains, n_warmup=100, n_burnin=50, thinning=5)
    target = CountingTarget(Gaussian(dim=3), budget)
    s = mala.sample(target, 1000, gen)
    steps = budget // chains - 1  # one evaluation per chain at the start, one per step
    assert s.attrs["n_steps"] == steps and s.attrs["n_steps_planned"] == 100 + 50 + 50 * 5
    assert target.counts.energy == chains * (1 + steps) <= budget
    kept = max((steps - 150) // 5, 1)  # after warm-up and burn-in; the current states if none
    assert s.x.shape == (chains * kept, 3)


def test_mala_without_budget_is_unchanged(gen):
    """No budget: every planned step runs (the default pipeline's results stand)."""
    mala = MALA(n_chains=10, n_warmup=20, n_burnin=10, thinning=2)
    target = CountingTarget(Gaussian(dim=2))
    s = mala.sample(target, 100, gen)
    assert s.attrs["n_steps"] == mala.n_steps(100) and not target.exhausted
    assert target.counts.energy == mala.sample_cost(100)


@pytest.mark.parametrize("budget", [500 * 3, 500 * 23, 500 * 100 + 7])
def test_smc_shortens_its_ladder_to_the_budget(budget, gen):
    smc = SMC(n_temps=50, n_moves=2)
    target = CountingTarget(Gaussian(dim=2, rho=0.5), budget)
    s = smc.sample(target, 500, gen)
    # one evaluation per particle at the start, n_moves per temperature
    temps = min(50, (budget // 500 - 1) // 2)
    assert s.attrs["n_temps"] == temps
    assert target.counts.energy == 500 * (1 + 2 * temps) <= budget
    assert budget - target.counts.energy < 500 * 2  # one more temperature would not fit
    assert target.exhausted == (temps < 50)
    # the estimator stays usable: Δlog Z on this Gaussian is small even at few temperatures
    assert abs(s.attrs["log_Z_hat"] - target.log_Z) < 0.3


def test_smc_with_too_little_for_one_temperature_anneals_fewer_particles(gen):
    smc = SMC(n_temps=10, n_moves=2)
    target = CountingTarget(Gaussian(dim=2), budget=900)
    s = smc.sample(target, 500, gen)
    assert s.attrs["n_temps"] == 1 and s.x.shape[0] == 900 // 3
    assert target.counts.energy == 900


def test_reverse_kl_flow_trains_for_what_the_budget_pays(gen):
    flow = FlowMethod(
        mode="reverse_kl", transforms=2, hidden_features=[16], n_iter=100, batch_size=64
    )
    budget, n = 64 * 7 + 30 + 200, 200
    fit_budget = training_budget(flow, budget, n)
    assert fit_budget == budget - n
    target = CountingTarget(Gaussian(dim=2), fit_budget)
    flow.fit(target, None, gen)
    assert len(flow.history_["loss"]) == 7 and len(flow.history_["lr"]) == 7
    assert target.counts.energy == 64 * 7 and target.exhausted
    rest = CountingTarget(target.target, budget - target.counts.energy)
    s = flow.sample(rest, n, gen)
    assert s.x.shape[0] == n and rest.counts.energy == n  # the reserve pays for every sample


def test_importance_sampling_draws_what_is_left(gen):
    flow = FlowMethod(mode="reverse_kl", transforms=1, hidden_features=[8], n_iter=2)
    flow.fit(CountingTarget(Gaussian(dim=2)), None, gen)
    target = CountingTarget(Gaussian(dim=2), budget=123)
    s = flow.sample(target, 500, gen)
    assert s.x.shape[0] == 123 and target.counts.energy == 123 and target.exhausted
    assert math.isfinite(s.attrs["log_Z_hat"])


class NaNEnergy(Target):
    """A target whose energy is NaN everywhere: every training loss diverges."""

    def __init__(self):
        super().__init__()
        self.dim = 2

    def energy(self, x):
        return x.sum(-1) * math.nan


@pytest.mark.parametrize("name", ["flow", "diffusion", "fab", "cmcd"])
def test_divergence_names_method_target_and_step(name, gen):
    cls = METHODS.get(name)
    params = {**cls.fast_params, **({"mode": "reverse_kl"} if name == "flow" else {})}
    method = cls(**params)
    with pytest.raises(TrainingDiverged) as err:
        with named_divergence(f"my_{name}", "nan_target"):
            method.fit(NaNEnergy(), None, gen)
    text = str(err.value)
    assert f"method 'my_{name}' on target 'nan_target'" in text
    assert "diverged at" in text and "last finite loss" in text
    assert not hasattr(method, "history_")  # nothing that looks like a fitted model


def test_budget_sweep_expands_into_named_runs():
    cfg = validate_config(
        {
            "targets": {"g": {"kind": "gaussian", "params": {"dim": 2}}},
            "methods": {
                "mala": {"kind": "mala"},
                "smc": {"kind": "smc", "budget": 10**6},
            },
            "budget_sweep": {"target": "g", "budgets": [10**4, 10**5, 10**6]},
        }
    )
    members = sweep_members(cfg)
    assert members["mala-budget10000"] == {"method": "mala", "budget": 10**4}
    assert members["smc-budget1000000"] == {"method": "smc", "budget": 10**6}
    assert len(members) == 6
    assert (
        cfg.methods["smc"].budget_for("g") == 10**6 and cfg.methods["mala"].budget_for("g") is None
    )


def test_ess_per_million_evaluations_is_a_metric():
    """The leaderboard's ESS per 10⁶ evaluations (a registered ``sampleset`` metric):
    Kish ESS for weighted sets, the smallest per-coordinate autocorrelation ESS for
    chains, NaN otherwise; the run's costs are totalled from the store's attrs."""
    from boltzbench.core import SampleSet
    from boltzbench.metrics import METRICS
    from boltzbench.metrics.cost import effective_samples, run_costs

    metric = METRICS.build("ess_per_1e6_evals")
    assert metric.kind == "sampleset" and metric.better == "higher"
    x = torch.zeros(4, 2)
    costs = {"fit_n_energy": 1500, "sample_n_energy": 500, "budget": 3000}
    # weights 1, 1, 2, 0: Kish ESS = (Σw)²/Σw² = 16/6
    weighted = SampleSet(x, torch.zeros(4), log_weight=torch.tensor([0, 0, math.log(2), -math.inf]))
    weighted.attrs = dict(costs)
    c = run_costs(weighted.attrs)
    assert c["total_n_energy"] == 2000 and c["budget"] == 3000 and c["budget_used"] == 2000 / 3000
    assert effective_samples(weighted) == pytest.approx(16 / 6)
    assert metric.fn(weighted, None) == pytest.approx(16 / 6 / 2000 * 1e6)
    chains = SampleSet(x, torch.zeros(4), diagnostics={"ess_per_dim": torch.tensor([40.0, 25.0])})
    chains.attrs = dict(costs)
    assert metric.fn(chains, None) == pytest.approx(25 / 2000 * 1e6)
    plain = SampleSet(x, torch.zeros(4), attrs={"sample_n_energy": 4})
    assert math.isnan(metric.fn(plain, None)) and math.isnan(run_costs(plain.attrs)["budget"])
    declared = SampleSet(x, torch.zeros(4), log_weight=torch.zeros(4))
    declared.attrs = {"costs_declared": True, "declared_n_energy": 4e6, "check_n_energy": 4}
    assert metric.fn(declared, None) == pytest.approx(1.0)
    assert run_costs(declared.attrs)["costs_declared"] == 1.0


# ------------------------------------------------------------------ budget plans

TINY_FLOW = {"transforms": 2, "hidden_features": [16, 16], "bins": 4, "batch_size": 64}
TINY_FAB = {**METHODS.get("fab").fast_params, "transforms": 1, "hidden_features": [8]}
N = 64  # samples drawn by every planned run below
FAB_RUN = 32 * (1 + 2 * 5)  # one AIS run of TINY_FAB: 32 particles, 2 temperatures, 5 leapfrog

#: (method spec, budgets): a small budget (MALA, PT, flow-MCMC: warm-up and burn-in
#: shrunk; SMC: one temperature for fewer particles; FAB: the fewest AIS runs that
#: fill its buffer and update once) and a larger one
PLANNED = [
    (
        {"kind": "mala", "params": {"n_chains": 8, "n_warmup": 20, "n_burnin": 10, "thinning": 1}},
        [300, 5000],
    ),
    (
        {"kind": "pt", "params": {"n_chains": 4, "n_temps": 2, "n_warmup": 20, "n_burnin": 5}},
        [300, 3000],
    ),
    (
        {"kind": "pt", "params": {"n_chains": 4, "n_temps": 2, "kernel": "hmc", "n_leapfrog": 3}},
        [2000],
    ),
    ({"kind": "smc", "params": {"n_temps": 8, "n_moves": 2}}, [150, 5000]),
    ({"kind": "flow", "params": {**TINY_FLOW, "mode": "reverse_kl"}}, [64 * 6 + 10, 3000]),
    ({"kind": "fab", "params": TINY_FAB}, [N + 2 * FAB_RUN + 10, 4000]),
    (
        {
            "kind": "flow_mcmc",
            "params": {
                "flow_params": {**TINY_FLOW, "n_iter": 20},
                "n_local": 2,
                "n_chains": 8,
                "n_warmup": 20,
                "n_burnin": 5,
            },
        },
        [1000, 4000],
    ),
    (
        {"kind": "underdamped", "params": {"n_chains": 8, "n_warmup": 20, "n_burnin": 10}},
        [300, 5000],
    ),
    (
        {"kind": "underdamped", "params": {"kernel": "randomized_midpoint", "n_chains": 8}},
        [600, 5000],
    ),
    (
        {"kind": "rdmc", "params": {**METHODS.get("rdmc").fast_params}},
        [64 * 9 + 64 * 16 * 20, 60000],
    ),
]


def _run_steps(tmp_path, spec, budget, n=N, reference=None):
    """Train and sample ``spec`` on a 2-D Gaussian through the steps; the sample store's
    attrs (with ``rows``: the samples drawn) and the model store's attrs."""
    common = dict(
        target_name="g",
        target={"kind": "gaussian", "params": {"dim": 2, "rho": 0.5}},
        method_name="m",
        method=spec,
        seed=0,
        n_samples=n,
        budget=budget,
    )
    model, samples = tmp_path / f"model{budget}.zarr", tmp_path / f"samples{budget}.zarr"
    inputs = {} if reference is None else {"reference": str(reference)}
    train_step.run(inputs=inputs, outputs={"model": str(model)}, **common)
    sample_step.run(inputs={"model": str(model)}, outputs={"samples": str(samples)}, **common)
    drawn = read_store(samples)
    return {**drawn.attrs, "rows": drawn.sizes["sample"]}, read_store(model).attrs


@pytest.mark.parametrize(
    "spec, budget",
    [(spec, b) for spec, budgets in PLANNED for b in budgets],
    ids=lambda v: v["kind"] if isinstance(v, dict) else str(v),
)
def test_a_planned_run_spends_its_budget(spec, budget, tmp_path):
    """Fit + sample spend exactly what the plan says, and that is 95–100 % of the budget
    (every plan here spends it up to less than one step, temperature or AIS run)."""
    attrs, model_attrs = _run_steps(tmp_path, spec, budget)
    total = attrs["fit_n_energy"] + attrs["sample_n_energy"]
    assert total == attrs["budget_planned"] == model_attrs["budget_planned"]
    assert BUDGET_SPEND_MIN * budget <= total <= budget, (total, budget)
    assert attrs["budget_note"] == "" and attrs["budget"] == budget
    settings = json.loads(attrs["budget_settings"])
    assert set(settings) == set(METHODS.get(spec["kind"]).budget_settings)
    assert attrs["budget_settings"] == model_attrs["budget_settings"]
    assert attrs["rows"] == (150 // 3 if spec["kind"] == "smc" and budget == 150 else N)


def test_a_data_based_flow_spends_only_its_samples_and_says_why(tmp_path, gen):
    reference = tmp_path / "reference.zarr"
    x = Gaussian(dim=2, rho=0.5).sample(400, gen)
    write_store(samples_to_dataset(SampleSet(x, torch.zeros(400))), reference, {})
    spec = {"kind": "flow", "params": {**TINY_FLOW, "mode": "mle", "n_iter": 5}}
    for budget in (1000, 50_000):
        attrs, _ = _run_steps(tmp_path, spec, budget, reference=reference)
        assert attrs["fit_n_energy"] == 0 and attrs["sample_n_energy"] == N
        assert attrs["budget_planned"] == N and attrs["budget_settings"] == "{}"
        assert "data-based" in attrs["budget_note"] and f"{N} of {budget}" in attrs["budget_note"]


def test_the_sample_job_refuses_a_model_of_another_plan(tmp_path):
    spec = PLANNED[0][0]
    common = dict(target_name="g", target={"kind": "gaussian", "params": {"dim": 2}})
    common.update(method_name="m", method=spec, seed=0, n_samples=N)
    model = str(tmp_path / "model.zarr")
    train_step.run(inputs={}, outputs={"model": model}, budget=5000, **common)
    with pytest.raises(ValueError, match="trained under the budget plan"):
        out = {"samples": str(tmp_path / "s.zarr")}
        sample_step.run(inputs={"model": model}, outputs=out, budget=6000, **common)


@pytest.mark.parametrize(
    "steps, warmup, burnin, expected",
    [
        (100, 20, 10, (20, 16, 8)),  # thinning ⌊70 / 8⌋ = 8, the 6 steps left to burn-in
        (38, 20, 10, (20, 10, 1)),  # exactly the configured run at thinning 1
        (33, 20, 10, (16, 9, 1)),  # 25 steps shared 20 : 10 (warm-up rounded down)
        (20, 0, 0, (0, 4, 2)),
        (5, 20, 10, (0, 0, 1)),  # fewer steps than draws: the run stops at its budget
    ],
)
def test_plan_chain_lays_out_exactly_the_steps(steps, warmup, burnin, expected):
    plan = plan_chain(steps, warmup, burnin, n_draws=8)
    assert (plan["n_warmup"], plan["n_burnin"], plan["thinning"]) == expected
    total = plan["n_warmup"] + plan["n_burnin"] + 8 * plan["thinning"]
    assert total == max(steps, 8)


def test_spending_note_gives_the_plan_s_reason_or_the_shortfall():
    plan = BudgetPlan(MALA(), {}, planned=990)
    assert spending_note(plan, 990, 1000) == ""
    note = spending_note(plan, 900, 1000)
    assert "900 of 1000" in note and "90.0%" in note and "990 planned" in note
    why = BudgetPlan(MALA(), {}, planned=10, note="data-based")
    assert spending_note(why, 10, 1000) == "data-based"


@pytest.mark.parametrize(
    "method, budget, must_mention",
    [
        ({"kind": "fab", "params": TINY_FAB}, 500, ["min_buffer_size = 64", "need 2"]),
        ({"kind": "mala", "params": {"n_chains": 100}}, 150, ["start (100)", "one step (100)"]),
        ({"kind": "flow", "params": {"batch_size": 64}}, 540, ["none for training"]),
    ],
)
def test_a_budget_that_cannot_be_planned_names_its_key(method, budget, must_mention):
    raw = {
        "targets": {"g": {"kind": "gaussian", "params": {"dim": 2}}},
        "sampling": {"n_samples": 500},
        "evaluation": {"n_eval": 100},
        "methods": {"m": {**method, "budget": budget}},
    }
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    text = str(err.value)
    assert "config key 'methods.m.budget'" in text and "'m' on 'g'" in text, text
    for part in must_mention:
        assert part in text, text
