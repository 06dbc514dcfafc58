"""The typed configuration: one model per section, the schema generated from it.

:func:`validate_config` checks a config dict at workflow start, before any job
runs. Every error names the offending key and, where there is a fixed set, the
valid choices. ``workflow/schemas/config.schema.json`` is generated from
:class:`Config` by ``boltzbench schema`` and a test fails if the two drift.

Validation has two tiers. The *static* checks read only the config and the
registries' metadata (each entry's module and constructor keywords, read from
its source; the methods' planning tags, :mod:`boltzbench.methods.tags`), so
they import no target, no method and not torch: the schema, names and seeds,
kinds and parameter names, the targets a method, override or budget names,
N_eval against the sizes, and the budget sweep's target, methods and seeds.
The *full* checks build what they check: every target, every method on every
target it runs on (a user ``callable`` imported and called, an external
sample file read), reference generation, data for data-based methods, budget
plans, the sweep's metric, and the planning tags against the built methods.
``validate_config(raw)`` runs both; the workflow runs both once, in
Snakemake's main process, and only the static tier in a job's re-parse of the
Snakefile (``workflow/rules/common.smk``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from boltzbench.registry import (
    Params,
    Registry,
    RegistryError,
    check_callable_path,
    check_instance,
    check_kwargs,
    check_params,
    factory_params,
)

__all__ = [
    "Config",
    "ConfigError",
    "validate_config",
    "validation_key",
    "config_schema",
    "reference_sizes",
    "eval_size",
    "sweep_methods",
    "sweep_members",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


class ConfigError(ValueError):
    """A config problem, with the key it concerns in the message."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TargetReferenceSpec(_Section):
    """How a target's reference sets are generated (see :mod:`boltzbench.references`)."""

    kind: Literal["exact", "mcmc", "md"] = Field(
        ...,
        description=(
            "'exact': the target's exact sampler. 'mcmc': long batched MCMC or parallel "
            "tempering with an R-hat gate (boltzbench.mcmc.reference). 'md': independent "
            "OpenMM molecular dynamics replicas, merged (molecular targets)."
        ),
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings of the generator (keyword arguments, units in their names).",
    )
    n_train: PositiveInt | None = Field(
        None, description="Rows in this target's 'train' split (default: reference.n_train)."
    )
    n_eval: PositiveInt | None = Field(
        None,
        description="Rows in this target's 'eval' and 'floor' splits (default: reference.n_eval).",
    )


class TargetSpec(_Section):
    """A target: a registered ``kind`` or a user ``callable``, with ``params``."""

    kind: str | None = Field(None, description="Name of a registered target (boltzbench list).")
    callable: str | None = Field(
        None, description="'module:function' returning a boltzbench Target (a user target)."
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the target's constructor."
    )
    reference: TargetReferenceSpec | None = Field(
        None,
        description=(
            "How its reference sets are made; default: 'exact' for targets with an exact "
            "sampler (required for the others)."
        ),
    )
    n_eval: PositiveInt | None = Field(
        None,
        description=(
            "N_eval for this target's sample metrics (default: evaluation.n_eval), e.g. more "
            "rows for a histogram metric on many bins. At most sampling.n_samples and the "
            "size of the target's 'eval' split."
        ),
    )

    @model_validator(mode="after")
    def _one_source(self) -> TargetSpec:
        if (self.kind is None) == (self.callable is None):
            raise ValueError("give exactly one of 'kind' or 'callable'")
        return self


class MethodSpec(_Section):
    """A method: a registered ``kind`` or a user ``callable``, with its hyperparameters."""

    kind: str | None = Field(
        None,
        description=(
            "Name of a registered method (boltzbench list); 'external' scores samples made "
            "elsewhere, read from the file its params name."
        ),
    )
    callable: str | None = Field(
        None,
        description=(
            "'module:function' (or a class) returning a boltzbench Method (a user method); "
            "its file is part of its jobs' code hash."
        ),
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the method's constructor."
    )
    targets: list[str] | None = Field(
        None, description="Run only on these targets (default: every target)."
    )
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-target parameter overrides: {target name: {param: value}}.",
    )
    budget: PositiveInt | dict[str, PositiveInt] | None = Field(
        None,
        description=(
            "Evaluation budget: the most target energy evaluations (rows, with or without "
            "gradient) that training and sampling together may make, one number for every "
            "target or {target name: number}. Training gets what sampling n_samples does "
            "not need; a method stops where the next evaluation would exceed it. "
            "Default: no budget."
        ),
    )

    @model_validator(mode="after")
    def _one_source(self) -> MethodSpec:
        if (self.kind is None) == (self.callable is None):
            raise ValueError("give exactly one of 'kind' or 'callable'")
        return self

    def params_for(self, target: str) -> dict[str, Any]:
        """The effective parameters on ``target``: ``params`` updated by its override."""
        return {**self.params, **self.overrides.get(target, {})}

    def entry(self, target: str | None = None) -> dict[str, Any]:
        """``{kind|callable, params}`` of the method (on ``target``: overrides applied),
        as :func:`boltzbench.methods.build_method` takes it."""
        params = self.params if target is None else self.params_for(target)
        source = {"callable": self.callable} if self.callable else {"kind": self.kind}
        return {**source, "params": params}

    def budget_for(self, target: str) -> int | None:
        """The evaluation budget on ``target`` (None: none)."""
        if isinstance(self.budget, dict):
            return self.budget.get(target)
        return self.budget


class BudgetSweepSpec(_Section):
    """Runs of some methods on one target at several budgets (the metric-vs-budget figure)."""

    target: str = Field(..., description="The target of the sweep.")
    budgets: list[PositiveInt] = Field(
        ..., min_length=3, description="Evaluation budgets, at least three, e.g. [1e4, 1e5, 1e6]."
    )
    methods: list[str] | None = Field(
        None, description="Methods swept (default: every method that runs on the target)."
    )
    seeds: list[int] | None = Field(None, description="Seeds of the sweep (default: seeds).")
    metric: str = Field(
        "w2", description="Metric on the figure's y axis (its _reweighted form for weighted sets)."
    )


class ReferenceSpec(_Section):
    """Sizes of the reference sets generated for every target."""

    n_train: PositiveInt = Field(
        10_000, description="Samples in the 'train' split (data for data-based training)."
    )
    n_eval: PositiveInt = Field(
        5_000, description="Samples in each of the two independent sets 'eval' and 'floor'."
    )


class SamplingSpec(_Section):
    n_samples: PositiveInt = Field(5_000, description="Samples each method draws per run.")


class EvaluationSpec(_Section):
    n_eval: PositiveInt = Field(
        2_000,
        description=(
            "N_eval: samples and reference samples compared by sample metrics (a target may "
            "set its own, targets.<name>.n_eval). At most sampling.n_samples."
        ),
    )
    floor_replicates: PositiveInt = Field(
        5,
        description=(
            "Independent draws of the noise floor per seed: each is a perfect sampler's "
            "n_samples rows (a disjoint chunk of the 'floor' reference split, which is made "
            "floor_replicates × n_samples rows long) scored exactly as a method's samples "
            "are, against the seed's N_eval reference rows. The leaderboard shows the floor "
            "as mean ± std over seeds and replicates."
        ),
    )


class CheckpointSpec(_Section):
    """Periodic checkpoints of long loops, so a killed job resumes where it was."""

    every: NonNegativeInt = Field(
        200,
        description=(
            "Save the loop state every this many steps (flow optimizer steps, MALA kernel "
            "steps); 0 turns checkpoints off. A killed job run again resumes from it and, "
            "on CPU with the same seed, ends with the result of an uninterrupted run."
        ),
    )


class FreeEnergyMDSpec(_Section):
    """The Langevin MD of every λ-window (OpenMM ``LangevinMiddleIntegrator``)."""

    timestep_fs: float = Field(1.0, gt=0, description="Integrator time step, fs.")
    friction_per_ps: float = Field(1.0, gt=0, description="Langevin friction, 1/ps.")
    platform: str = Field(
        "auto", description="OpenMM platform: 'auto' (CUDA if present, else Reference) or a name."
    )
    equilibration_steps: NonNegativeInt = Field(
        10_000, description="Steps after minimization before the first saved frame."
    )
    production_steps: PositiveInt = Field(
        100_000, description="Production steps; a multiple of save_every_steps."
    )
    save_every_steps: PositiveInt = Field(
        100, description="A frame (positions, U_vac, U_GB) is saved every this many steps."
    )
    checkpoint_every_frames: NonNegativeInt = Field(
        200, description="Checkpoint the window every this many frames (0: never)."
    )

    @model_validator(mode="after")
    def _whole_frames(self):
        if self.production_steps % self.save_every_steps:
            raise ValueError(
                f"production_steps ({self.production_steps}) must be a multiple of "
                f"save_every_steps ({self.save_every_steps})"
            )
        return self


class FreeEnergyMapSpec(_Section):
    """The learned map of targeted FEP: two coupling flows fitted by maximum likelihood."""

    transforms: PositiveInt = Field(4, description="Coupling layers of each flow.")
    hidden_features: list[PositiveInt] = Field(
        [64, 64], min_length=1, description="Hidden widths of each coupling MLP."
    )
    n_iter: PositiveInt = Field(500, description="Adam steps per flow.")
    batch_size: PositiveInt = Field(256, description="Frames per Adam step.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")


class FreeEnergySpec(_Section):
    """A free-energy task: ΔF between two thermodynamic states (see boltzbench.free_energy)."""

    kind: Literal["aldp-solvation"] = Field(
        "aldp-solvation",
        description=(
            "'aldp-solvation': alanine dipeptide (AMBER ff96) from vacuum (λ = 0) to OBC2 "
            "implicit solvent (λ = 1), U_λ = U_vac + λ U_GB."
        ),
    )
    temperature_K: float = Field(300.0, gt=0, description="Temperature, K.")
    lambdas: list[float] = Field(
        [0.0, 0.25, 0.5, 0.75, 1.0],
        min_length=2,
        description="The λ grid, increasing from 0 to 1; each λ is one MD job.",
    )
    seed: NonNegativeInt = Field(0, description="Seeds every window's MD and the flows.")
    md: FreeEnergyMDSpec = Field(default_factory=FreeEnergyMDSpec)
    map: FreeEnergyMapSpec | None = Field(
        default_factory=FreeEnergyMapSpec,
        description="The targeted-FEP flows; null leaves the learned estimators out.",
    )

    @field_validator("lambdas")
    @classmethod
    def _grid(cls, lam: list[float]) -> list[float]:
        if lam[0] != 0.0 or lam[-1] != 1.0 or any(b <= a for a, b in zip(lam, lam[1:])):
            raise ValueError(f"lambdas must increase strictly from 0 to 1, got {lam}")
        return lam


class Config(_Section):
    """The whole boltzbench configuration."""

    results_dir: str = Field("results", description="Where every artifact is written.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description=(
            "Where training and sampling run. 'cpu': on CPU, no GPU requested. 'cuda': "
            "train and sample jobs request one GPU (resource 'gpu') and fail without "
            "CUDA. 'auto': they request one GPU and use CUDA where the job finds it, "
            "else the CPU (on a CPU-only cluster set 'cpu', or the jobs cannot be placed)."
        ),
    )
    seeds: list[int] = Field([0], min_length=1, description="Seeds; each runs every method.")
    reference: ReferenceSpec = Field(default_factory=ReferenceSpec)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    reproducible: bool = Field(
        False,
        description=(
            "Pin the CPU code paths that decide floating-point rounding, so that training "
            "reproduces bit for bit across x86-64 CPUs of different instruction sets: jobs "
            "run with ATEN_CPU_CAPABILITY=default (torch's portable kernels instead of "
            "AVX2/AVX-512 ones), MKL_CBWR=COMPATIBLE and deterministic torch algorithms. "
            "Slower; see the README for what reproduces with and without it."
        ),
    )
    targets: dict[str, TargetSpec] = Field(..., min_length=1, description="Targets by name.")
    methods: dict[str, MethodSpec] = Field(..., min_length=1, description="Methods by name.")
    budget_sweep: BudgetSweepSpec | None = Field(
        None,
        description=(
            "Extra runs of methods on one target at several evaluation budgets; they are "
            "named '<method>-budget<N>', kept out of the leaderboard's tables and shown in "
            "budget_sweep.csv and figures/budget_sweep.png."
        ),
    )
    free_energy: dict[str, FreeEnergySpec] | None = Field(
        None,
        description=(
            "Free-energy tasks by name: each estimates ΔF between two states with MBAR over "
            "λ-windows (the reference) and FEP, BAR and targeted FEP; results in "
            "free_energy.csv and free_energy.md."
        ),
    )


def config_schema() -> dict[str, Any]:
    """The JSON schema of :class:`Config`."""
    return Config.model_json_schema()


#: pydantic's names of the members of a union, which it puts into an error's location
_UNION_TAG = re.compile(r"^(constrained-\w+|int|str|float|bool|none|\w+\[.*\])$")


def _format_error(err: dict[str, Any], model: type[BaseModel]) -> str:
    loc = [str(p) for p in err["loc"] if not _UNION_TAG.match(str(p))]
    key = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        parent = _model_at(model, err["loc"][:-1])
        valid = ", ".join(parent.model_fields) if parent else "?"
        return f"config key '{key}': unknown key; valid keys here: {valid}"
    if err["type"] == "literal_error":
        return f"config key '{key}': {err['msg']}"
    return f"config key '{key}': {err['msg']} (got {err.get('input')!r})"


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that the path ``loc`` points into, if any."""
    current: Any = model
    for part in loc:
        current = _optional_inner(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif getattr(current, "__origin__", None) is dict:
            current = current.__args__[1]
        else:
            return None
    current = _optional_inner(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _optional_inner(annotation: Any) -> Any:
    """``X`` of ``X | None`` (an optional section such as ``free_energy``); else as is."""
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    if type(None) in getattr(annotation, "__args__", ()) and len(args) == 1:
        return args[0]
    return annotation


def _check_positive_seeds(cfg: Config) -> None:
    for i, s in enumerate(cfg.seeds):
        if s < 0:
            raise ConfigError(f"config key 'seeds.{i}': seeds must be >= 0 (got {s})")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"config key 'seeds': seeds must be distinct (got {cfg.seeds})")


def _check_names(section: str, names: list[str]) -> None:
    for name in names:
        if not re.match(NAME_PATTERN, name):
            raise ConfigError(
                f"config key '{section}.{name}': names may hold only letters, digits, '_' and "
                "'-' (they become wildcards in file paths)"
            )


def _build_targets(cfg: Config) -> dict[str, Any]:
    """Build every target once, so a bad kind, callable or parameter fails now."""
    from boltzbench.targets import build_target

    built = {}
    for name, spec in cfg.targets.items():
        try:
            built[name] = build_target(spec.model_dump())
        except RegistryError as err:
            raise ConfigError(f"config key 'targets.{name}': {err}") from None
        except (TypeError, ValueError) as err:
            raise ConfigError(f"config key 'targets.{name}.params': {err}") from None
    return built


def _check_references(cfg: Config, built: dict[str, Any]) -> None:
    """Check how every target's reference sets are made."""
    from boltzbench.references import check_reference

    for name, spec in cfg.targets.items():
        sizes = reference_sizes(cfg, name)
        try:
            check_reference(built[name], spec.model_dump().get("reference"), sizes)
        except (RegistryError, TypeError, ValueError) as err:
            raise ConfigError(f"config key 'targets.{name}.reference': {err}") from None


def reference_sizes(cfg: Config, target: str) -> dict[str, int]:
    """Rows of each split ('train', 'eval', 'floor') of ``target``'s reference sets.

    The 'floor' split holds ``evaluation.floor_replicates`` disjoint chunks of
    ``sampling.n_samples`` rows (one perfect sampler's run each), or the 'eval'
    split's size when that is larger.
    """
    ref = cfg.targets[target].reference
    n_train = (ref and ref.n_train) or cfg.reference.n_train
    n_eval = (ref and ref.n_eval) or cfg.reference.n_eval
    n_floor = max(n_eval, cfg.evaluation.floor_replicates * cfg.sampling.n_samples)
    return {"train": n_train, "eval": n_eval, "floor": n_floor}


def eval_size(cfg: Config, target: str) -> int:
    """N_eval of ``target``: ``targets.<name>.n_eval``, else ``evaluation.n_eval``."""
    return cfg.targets[target].n_eval or cfg.evaluation.n_eval


def _check_eval_sizes(cfg: Config) -> None:
    """N_eval fits in a run's samples and in the target's 'eval' split."""
    n = cfg.sampling.n_samples
    for name in cfg.targets:
        n_eval = eval_size(cfg, name)
        key = f"targets.{name}.n_eval" if cfg.targets[name].n_eval else "evaluation.n_eval"
        split = reference_sizes(cfg, name)["eval"]
        if n_eval > min(n, split):
            raise ConfigError(
                f"config key '{key}': N_eval = {n_eval} for target {name!r} exceeds "
                f"sampling.n_samples = {n} or its 'eval' split of {split} rows"
            )


def _check_methods(cfg: Config, targets: dict[str, Any]) -> None:
    """Every method builds (a registered kind, or a user callable that imports and
    returns a Method) with its params, and with each target's override, and
    accepts each target it runs on (:meth:`~boltzbench.methods.Method.check_target`)."""
    for name, spec in cfg.methods.items():
        key = f"methods.{name}"
        runs_on = spec.targets or list(cfg.targets)
        required = factory_params(_method_factory(spec, key)).required
        if _builds_alone(required, spec, runs_on):
            _build_method(spec.entry(), f"{key}.params", f"{key}.callable")
        for t in runs_on:
            sub = f"{key}.overrides.{t}" if t in spec.overrides else f"{key}.params"
            method = _build_method(spec.entry(t), sub, f"{key}.callable")
            try:
                method.check_target(targets[t])
            except ValueError as err:
                raise ConfigError(f"config key '{sub}': on target {t!r}: {err}") from None


def _builds_alone(required: tuple[str, ...], spec: MethodSpec, runs_on: list[str]) -> bool:
    """Whether ``params`` are checked on their own (errors then name ``methods.X.params``):
    not when a ``required`` parameter is missing from them but every target's override
    gives it (an external sample file per target)."""
    missing = set(required) - set(spec.params)
    return not missing or not all(missing <= set(spec.overrides.get(t, {})) for t in runs_on)


def _method_factory(spec: MethodSpec, key: str):
    """The method's factory: an unknown kind names ``methods.X``, a callable that
    does not import or is not callable names ``methods.X.callable``."""
    from boltzbench.methods import method_factory

    try:
        return method_factory(spec.entry())
    except RegistryError as err:
        where = f"{key}.callable" if spec.callable else key
        raise ConfigError(f"config key '{where}': {err}") from None


def _check_data(cfg: Config, built: dict[str, Any]) -> None:
    """Refuse a data-based method on a target that has no reference data to train on."""
    from boltzbench.methods import build_method

    for name, spec in cfg.methods.items():
        for t in spec.targets or list(cfg.targets):
            has_data = cfg.targets[t].reference is not None or built[t].exact_sampling
            method = build_method(spec.entry(t))
            if getattr(method, "needs_data", False) and not has_data:
                raise ConfigError(
                    f"config key 'methods.{name}': it trains on reference samples, but target "
                    f"{t!r} has none (no exact sampler and no 'targets.{t}.reference'); add "
                    f"one or leave {t!r} out of 'methods.{name}.targets'"
                )


def _check_budgets(cfg: Config, methods: dict[str, MethodSpec], sweep: bool = False) -> None:
    """Every (method, target) with a budget can plan a run that spends it
    (:meth:`~boltzbench.methods.Method.plan_budget`) and leaves an energy-trained
    method something to train on."""
    from boltzbench.methods import build_method

    n = cfg.sampling.n_samples
    for name, spec in methods.items():
        key = "budget_sweep.budgets" if sweep else f"methods.{name}.budget"
        for t in spec.targets or list(cfg.targets):
            budget = spec.budget_for(t)
            if budget is None:
                continue
            where = f"config key '{key}': {budget} evaluations for {name!r} on {t!r}"
            try:
                plan = build_method(spec.entry(t)).plan_budget(budget, n)
            except ValueError as err:
                raise ConfigError(f"{where} cannot be planned: {err}") from None
            _check_training_share(plan.method, budget, n, where)


def _check_training_share(method, budget: int, n: int, where: str) -> None:
    """An energy-trained method's plan leaves training at least one evaluation."""
    energy_trained = method.trainable and not getattr(method, "needs_data", False)
    if energy_trained and budget <= method.sample_cost(n):
        raise ConfigError(
            f"{where} leave none for training: drawing sampling.n_samples = {n} samples "
            f"costs {method.sample_cost(n)}"
        )


def sweep_methods(cfg: Config) -> dict[str, MethodSpec]:
    """The runs of ``budget_sweep``: ``{"<method>-budget<N>": its spec at budget N}``."""
    sweep = cfg.budget_sweep
    if sweep is None:
        return {}
    names = sweep.methods or [
        m
        for m, spec in cfg.methods.items()
        if sweep.target in (spec.targets or cfg.targets) and not _declares_costs(spec, sweep.target)
    ]
    return {
        f"{m}-budget{b}": cfg.methods[m].model_copy(update={"budget": b, "targets": [sweep.target]})
        for m in names
        for b in sweep.budgets
    }


def _declares_costs(spec: MethodSpec, target: str) -> bool:
    """Whether the method scores samples made elsewhere (costs declared, not counted)."""
    from boltzbench.methods.tags import method_tags

    return method_tags(spec.entry(target)).declares_costs


def sweep_members(cfg: Config) -> dict[str, dict[str, Any]]:
    """``{sweep run name: {"method": base method, "budget": N}}``."""
    return {
        name: {"method": name.rsplit("-budget", 1)[0], "budget": spec.budget}
        for name, spec in sweep_methods(cfg).items()
    }


def _check_sweep(cfg: Config) -> None:
    """The sweep's target, methods and seeds, and no name clash (static)."""
    sweep = cfg.budget_sweep
    if sweep is None:
        return
    if sweep.target not in cfg.targets:
        raise ConfigError(
            f"config key 'budget_sweep.target': unknown target {sweep.target!r}; valid "
            f"choices: {', '.join(cfg.targets)}"
        )
    for m in sweep.methods or []:
        spec = cfg.methods.get(m)
        if spec is None or sweep.target not in (spec.targets or cfg.targets):
            raise ConfigError(
                f"config key 'budget_sweep.methods': {m!r} is not a method that runs on "
                f"{sweep.target!r}"
            )
        if _declares_costs(spec, sweep.target):
            raise ConfigError(
                f"config key 'budget_sweep.methods': {m!r} scores samples made elsewhere "
                "(its costs are declared, not counted): a budget cannot change them"
            )
    if any(s < 0 for s in sweep.seeds or []):
        raise ConfigError(
            f"config key 'budget_sweep.seeds': seeds must be >= 0 (got {sweep.seeds})"
        )
    clash = set(sweep_methods(cfg)) & set(cfg.methods)
    if clash:
        raise ConfigError(f"config key 'methods': names {sorted(clash)} are taken by budget_sweep")


def _check_sweep_metric(cfg: Config) -> None:
    """The sweep's metric is a registered one (imports the metrics)."""
    sweep = cfg.budget_sweep
    if sweep is None:
        return
    from boltzbench.metrics import METRICS

    if sweep.metric.removesuffix("_reweighted") not in METRICS:
        raise ConfigError(
            f"config key 'budget_sweep.metric': unknown metric {sweep.metric!r}; valid "
            f"choices: {', '.join(METRICS.names())}"
        )


def _build_method(entry: dict[str, Any], key: str, callable_key: str):
    """Build a method entry: a parameter it does not take, or one its constructor
    refuses, names ``key``; a callable that returns no Method names ``callable_key``."""
    from boltzbench.methods import Method, method_factory

    name = entry.get("kind") or entry["callable"]
    factory = method_factory(entry)
    try:
        check_kwargs(factory, entry["params"], f"method {name!r}")
        method = factory(**entry["params"])
    except (RegistryError, TypeError, ValueError) as err:
        raise ConfigError(f"config key '{key}': {err}") from None
    try:
        return check_instance(method, Method, name)
    except RegistryError as err:
        raise ConfigError(f"config key '{callable_key}': {err}") from None


def _static_params(
    registry: Registry, spec: TargetSpec | MethodSpec, key: str, callable_key: str
) -> Params | None:
    """The :class:`~boltzbench.registry.Params` of an entry's registered kind, from
    the registry's metadata (None where it does not say; None for a user callable,
    of which only the ``'module:callable'`` form is checked here)."""
    try:
        if spec.callable:
            check_callable_path(spec.callable)
            return None
        return registry.params(spec.kind)
    except RegistryError as err:
        raise ConfigError(f"config key '{callable_key if spec.callable else key}': {err}") from None


def _check_params(params: Params, kwargs: dict[str, Any], what: str, key: str, bad: str) -> None:
    """``kwargs`` are keywords ``params`` takes (else an error naming ``key``) and give
    every keyword it needs (else an error naming ``bad``)."""
    try:
        check_params(params, kwargs, what)
    except RegistryError as err:
        raise ConfigError(f"config key '{key}': {err}") from None
    missing = [p for p in params.required if p not in kwargs]
    if missing:
        names = ", ".join(repr(p) for p in missing)
        raise ConfigError(f"config key '{bad}': {what} needs parameter(s) {names}")


def _check_static_targets(cfg: Config) -> None:
    """Every target names a registered kind that takes its params (and gets those it
    needs), or a ``'module:callable'``; from the registry's metadata."""
    from boltzbench.targets import TARGETS

    for name, spec in cfg.targets.items():
        key = f"targets.{name}"
        params = _static_params(TARGETS, spec, key, key)
        if params is not None:
            _check_params(params, spec.params, f"target {spec.kind!r}", key, f"{key}.params")


def _check_static_methods(cfg: Config) -> None:
    """Every method names known targets (``targets``, ``overrides``, ``budget``), and a
    registered kind whose constructor takes its params and each target's override,
    and gets those it needs; or a ``'module:callable'``. From the registry's metadata."""
    from boltzbench.methods import METHODS

    for name, spec in cfg.methods.items():
        key = f"methods.{name}"
        _check_known_targets(cfg, spec.targets or [], f"{key}.targets")
        _check_known_targets(cfg, spec.overrides, f"{key}.overrides")
        if isinstance(spec.budget, dict):
            _check_known_targets(cfg, spec.budget, f"{key}.budget")
        params = _static_params(METHODS, spec, key, f"{key}.callable")
        if params is None:
            continue
        what, runs_on = f"method {spec.kind!r}", spec.targets or list(cfg.targets)
        if _builds_alone(params.required, spec, runs_on):
            _check_params(params, spec.params, what, f"{key}.params", f"{key}.params")
        for t in runs_on:
            sub = f"{key}.overrides.{t}" if t in spec.overrides else f"{key}.params"
            _check_params(params, spec.params_for(t), what, sub, sub)


def _check_known_targets(cfg: Config, names: Any, key: str) -> None:
    """Every name in ``names`` is a target of the config."""
    for t in names:
        if t not in cfg.targets:
            raise ConfigError(
                f"config key '{key}': unknown target {t!r}; valid choices: {', '.join(cfg.targets)}"
            )


def _check_tags(cfg: Config) -> None:
    """The planning tags read without importing a method
    (:data:`boltzbench.methods.tags.STATIC_TAGS`) are the built method's."""
    from boltzbench.methods import build_method
    from boltzbench.methods.tags import method_tags, tags_of

    for name, spec in {**cfg.methods, **sweep_methods(cfg)}.items():
        for t in spec.targets or list(cfg.targets):
            entry = spec.entry(t)
            static, built = method_tags(entry), tags_of(build_method(entry))
            if static != built:
                raise RuntimeError(
                    f"methods.{name} on {t!r}: boltzbench.methods.tags gives {static}, but "
                    f"the built method has {built}; update STATIC_TAGS[{spec.kind!r}]"
                )


def parse_config(raw: dict[str, Any]) -> Config:
    """The typed config of ``raw``, or :class:`ConfigError` naming every bad key."""
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        lines = list(dict.fromkeys(_format_error(e, Config) for e in err.errors()))
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None


def validate_config(
    raw: dict[str, Any], full: bool = True, cache: str | Path | None = None
) -> Config:
    """Validate ``raw`` and return the typed config, or raise :class:`ConfigError`.

    ``full=False`` runs the static checks only, which import no target, method
    or torch (the module's docstring lists what each tier checks). With a
    ``cache`` folder, a full validation that passed is recorded there under
    :func:`validation_key`, and a later full validation of the same key runs
    the static checks only: the full checks are a function of what the key
    covers, so they would pass again.
    """
    if full and cache is not None:
        record = Path(cache) / validation_key(raw)
        if record.is_file():
            return validate_config(raw, full=False)
        cfg = validate_config(raw, full=True)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(raw, sort_keys=True, default=str, indent=1) + "\n")
        return cfg
    cfg = parse_config(raw)
    _check_positive_seeds(cfg)
    _check_names("targets", list(cfg.targets))
    _check_names("methods", list(cfg.methods))
    _check_names("free_energy", list(cfg.free_energy or {}))
    _check_static_targets(cfg)
    _check_static_methods(cfg)
    _check_eval_sizes(cfg)
    _check_sweep(cfg)
    if not full:
        return cfg
    targets = _build_targets(cfg)
    _check_methods(cfg, targets)
    _check_data(cfg, targets)
    _check_references(cfg, targets)
    _check_sweep_metric(cfg)
    _check_budgets(cfg, cfg.methods)
    _check_budgets(cfg, sweep_methods(cfg), sweep=True)
    _check_tags(cfg)
    return cfg


def validation_key(raw: dict[str, Any]) -> str:
    """sha256 of what the full checks depend on, without importing any of it.

    It covers the config itself; the source of every boltzbench module; the
    source file of every user ``callable`` (found with ``importlib.util.find_spec``,
    which reads no module but a dotted name's parent packages); the size and
    modification time of every file the config names (an external sample
    file); and the versions of Python, torch, NumPy and OpenMM. A change to
    any of these makes a new key, and so a full validation.
    """
    h = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode())
    package = Path(__file__).parent
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    for text in sorted(_strings(raw)):
        h.update(_named_file_stamp(text).encode())
    h.update(sys.version.encode())
    for dist in ("torch", "numpy", "openmm"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            h.update(f"{dist}={importlib.metadata.version(dist)}".encode())
    return h.hexdigest()


def _strings(value: Any) -> set[str]:
    """Every string inside a nested config value (keys excluded)."""
    if isinstance(value, str):
        return {value}
    items = value.values() if isinstance(value, dict) else value
    if isinstance(value, dict | list | tuple):
        return set().union(*(_strings(v) for v in items))
    return set()


def _named_file_stamp(text: str) -> str:
    """What ``text`` names: a user callable's source, a file's size and mtime, or nothing."""
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", text):
        module = text.partition(":")[0]
        with contextlib.suppress(ImportError, ValueError):
            spec = importlib.util.find_spec(module)
            if spec is not None and spec.origin and Path(spec.origin).is_file():
                return f"{text}\0{Path(spec.origin).read_bytes().hex()}"
        return f"{text}\0unresolved"
    with contextlib.suppress(OSError, ValueError):
        stat = Path(text).stat()
        if Path(text).is_file():
            return f"{text}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return ""
