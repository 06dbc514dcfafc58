"""Config validation: every bad input names its key before any job runs."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from boltzbench.cli import schema_text
from boltzbench.config import ConfigError, validate_config

REPO = Path(__file__).resolve().parent.parent
TINY = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())


def edited(**changes):
    cfg = copy.deepcopy(TINY)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = cfg
        for p in parents:
            node = node[p]
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return cfg


DELETE = object()
#: 2 replicas of 10 frames: fewer than the tiny config's reference splits
MD_SHORT = {
    "n_replicas": 2,
    "equilibration_steps": 10,
    "production_steps": 100,
    "save_every_steps": 10,
}


SHIPPED = [
    REPO / "config.yaml",
    REPO / "config/full.yaml",
    REPO / "config/energy.yaml",
    REPO / "tests/configs/tiny.yaml",
    REPO / "tests/configs/molecular.yaml",
]


def test_shipped_configs_are_valid():
    for path in SHIPPED:
        validate_config(yaml.safe_load(path.read_text()))


def full_only(changes, must_mention):
    """A bad config that only validation's full tier catches: it needs built objects
    (a constructor's own checks, a user callable imported, reference generation,
    budget plans, the metrics). The static tier leaves it alone."""
    return pytest.param(changes, must_mention, marks=pytest.mark.full_only)


BAD_CONFIGS = [
    ({"n_samplez": 3}, ["'n_samplez'", "valid keys here", "sampling"]),
    ({"sampling__n_samplez": 3}, ["'sampling.n_samplez'", "n_samples"]),
    ({"sampling__n_samples": 0}, ["'sampling.n_samples'", "greater than 0"]),
    ({"reference__n_eval": -5}, ["'reference.n_eval'", "greater than 0"]),
    ({"evaluation__n_eval": "many"}, ["'evaluation.n_eval'", "integer"]),
    ({"seeds": [0, -1]}, ["'seeds.1'"]),
    ({"seeds": "zero"}, ["'seeds'", "list"]),
    full_only(
        {"methods__smc__params": {"kernel": "gibbs"}}, ["'methods.smc", "kernel", "mala", "hmc"]
    ),
    ({"targets__gmm40__kind": "gmm41"}, ["'targets.gmm40'", "gmm41", "gmm40", "manywell"]),
    ({"targets__gmm40__params": {"n_modez": 3}}, ["'targets.gmm40'", "n_modez", "n_modes"]),
    ({"methods__mala__kind": "hmcc"}, ["'methods.mala'", "hmcc", "mala", "smc", "flow"]),
    (
        {"methods__mala__params": {"stepsize": 0.1}},
        ["'methods.mala.params'", "stepsize", "step_size"],
    ),
    full_only(
        {"methods__mala__overrides": {"gmm40": {"n_chains": 0}}},
        ["'methods.mala.overrides.gmm40'", "n_chains"],
    ),
    ({"methods__mala__overrides": {"nope": {}}}, ["'methods.mala.overrides'", "nope"]),
    ({"methods__mala__targets": ["nope"]}, ["'methods.mala.targets'", "nope", "gmm40"]),
    ({"targets__user__callable": "custom_target"}, ["'targets.user'", "module:callable"]),
    full_only(
        {"targets__user__callable": "no_such_module:f"}, ["'targets.user'", "no_such_module"]
    ),
    full_only({"targets__user__callable": "custom_target:nope"}, ["'targets.user'", "nope"]),
    full_only(
        {"targets__user": {"callable": "custom_target:not_a_target"}},
        ["'targets.user'", "not a boltzbench Target"],
    ),
    (
        {"targets__gmm40__callable": "custom_target:make_shifted_gaussian"},
        ["'targets.gmm40'", "exactly one"],
    ),
    ({"targets": {}}, ["'targets'"]),
    # a user's method: 'module:callable' (tests/custom_method.py)
    full_only(
        {"methods__mine": {"callable": "no_such_module:f"}},
        ["'methods.mine.callable'", "cannot import", "no_such_module"],
    ),
    ({"methods__mine": {"callable": "custom_method"}}, ["'methods.mine.callable'", "module:"]),
    full_only(
        {"methods__mine": {"callable": "custom_method:nope"}},
        ["'methods.mine.callable'", "no attribute 'nope'"],
    ),
    full_only(
        {"methods__mine": {"callable": "custom_method:NOT_CALLABLE"}},
        ["'methods.mine.callable'", "not callable"],
    ),
    full_only(
        {"methods__mine": {"callable": "custom_method:GaussianIS", "params": {"scal": 1}}},
        ["'methods.mine.params'", "scal", "valid parameters: scale, loc"],
    ),
    full_only(
        {"methods__mine": {"callable": "custom_method:make_gaussian_is", "params": {"s": 1}}},
        ["'methods.mine.params'", "make_gaussian_is", "valid parameters: scale, loc"],
    ),
    full_only(
        {
            "methods__mine": {
                "callable": "custom_method:GaussianIS",
                "overrides": {"user": {"scale": -1.0}},
            }
        },
        ["'methods.mine.overrides.user'", "scale must be > 0"],
    ),
    full_only(
        {"methods__mine": {"callable": "custom_method:not_a_method"}},
        ["'methods.mine.callable'", "returned str", "not a boltzbench Method"],
    ),
    (
        {"methods__mine": {"kind": "mala", "callable": "custom_method:GaussianIS"}},
        ["'methods.mine'", "exactly one of 'kind' or 'callable'"],
    ),
    ({"methods__mine": {"params": {}}}, ["'methods.mine'", "exactly one"]),
    # samples made elsewhere: kind external, its file checked before any job
    ({"methods__ext": {"kind": "external"}}, ["'methods.ext.params'", "path"]),
    full_only(
        {"methods__ext": {"kind": "external", "params": {"path": "/nonexistent/s.npz"}}},
        ["'methods.ext.params'", "on target", "no sample file at '/nonexistent/s.npz'"],
    ),
    # N_eval must fit in a run's samples and the eval split
    ({"evaluation__n_eval": 10**6}, ["'evaluation.n_eval'", "n_samples"]),
    ({"targets__gmm40__n_eval": 10**6}, ["'targets.gmm40.n_eval'", "n_samples"]),
    ({"evaluation__floor_replicates": 0}, ["'evaluation.floor_replicates'", "greater"]),
    # reference generation: every target needs a way to make its reference sets
    full_only({"targets__dw": {"kind": "dw4"}}, ["'targets.dw.reference'", "no exact sampler"]),
    full_only(
        {"targets__dw": {"kind": "dw4", "reference": {"kind": "exact"}}},
        ["'targets.dw.reference'", "no exact sampler"],
    ),
    full_only(
        {
            "targets__dw": {
                "kind": "dw4",
                "reference": {"kind": "mcmc", "params": {"n_chain": 4}},
            }
        },
        ["'targets.dw.reference'", "n_chain", "n_chains"],
    ),
    (
        {"targets__dw": {"kind": "dw4", "reference": {"kind": "gibbs"}}},
        ["'targets.dw.reference.kind'", "exact", "mcmc", "md"],
    ),
    full_only(
        {"targets__dw": {"kind": "dw4", "reference": {"kind": "md", "params": {}}}},
        ["'targets.dw.reference'", "molecular target"],
    ),
    full_only(
        {"targets__ala": {"kind": "aldp", "reference": {"kind": "md", "params": MD_SHORT}}},
        ["'targets.ala.reference'", "MD frames", "fewer than"],
    ),
    full_only(
        {
            "targets__ala": {
                "kind": "aldp",
                "reference": {"kind": "md", "params": {"n_replicas": 2}},
            }
        },
        ["'targets.ala.reference'", "production_steps", "save_every_steps"],
    ),
    # data-based training needs reference data on every target it runs on
    full_only(
        {"targets__dw": {"kind": "dw4"}, "methods__flow_mle__targets": ["user", "dw"]},
        ["'methods.flow_mle'", "reference samples", "'dw'", "targets.dw.reference"],
    ),
    # evaluation budgets
    ({"methods__smc__budget": {"nope": 1000}}, ["'methods.smc.budget'", "nope", "gmm40"]),
    ({"methods__smc__budget": 0}, ["'methods.smc.budget'", "greater than 0"]),
    full_only(
        {"methods__flow_rkl__budget": 500},
        ["'methods.flow_rkl.budget'", "none for training", "n_samples = 500"],
    ),
    (
        {"budget_sweep": {"target": "nope", "budgets": [1, 2, 3]}},
        ["'budget_sweep.target'", "nope", "gmm40"],
    ),
    (
        {"budget_sweep": {"target": "gmm40", "budgets": [1000, 2000]}},
        ["'budget_sweep.budgets'", "at least 3"],
    ),
    (
        {"budget_sweep": {"target": "user", "budgets": [1, 2, 3], "methods": ["flow_rkl"]}},
        ["'budget_sweep.methods'", "flow_rkl", "'user'"],
    ),
    (
        {"budget_sweep": {"target": "gmm40", "budgets": [1, 2, 3], "seeds": [-1]}},
        ["'budget_sweep.seeds'", ">= 0"],
    ),
    full_only(
        {"budget_sweep": {"target": "gmm40", "budgets": [1, 2, 3], "metric": "w3"}},
        ["'budget_sweep.metric'", "w3", "energy_w1"],
    ),
    full_only(
        {"budget_sweep": {"target": "gmm40", "budgets": [400, 2000, 9000]}},
        ["'budget_sweep.budgets'", "'flow_rkl-budget400'", "none for training"],
    ),
]


@pytest.mark.parametrize("changes, must_mention", BAD_CONFIGS)
def test_bad_config_names_the_key(changes, must_mention):
    with pytest.raises(ConfigError) as err:
        validate_config(edited(**changes))
    for text in must_mention:
        assert text in str(err.value), str(err.value)


@pytest.mark.parametrize("changes, must_mention", BAD_CONFIGS)
def test_static_tier_names_the_same_key(changes, must_mention, request):
    """The static tier (what a job's re-parse of the Snakefile runs) catches every
    bad config that needs no built object, with the full tier's message."""
    if request.node.get_closest_marker("full_only"):
        validate_config(edited(**changes), full=False)
        return
    with pytest.raises(ConfigError) as err:
        validate_config(edited(**changes), full=False)
    for text in must_mention:
        assert text in str(err.value), str(err.value)


def test_static_tier_imports_no_torch():
    """Static validation of every shipped config imports no target, method or torch."""
    code = (
        "import sys, yaml\n"
        "from boltzbench.config import validate_config\n"
        f"for path in {[str(p) for p in SHIPPED]!r}:\n"
        "    validate_config(yaml.safe_load(open(path)), full=False)\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'scipy', 'zuko')]\n"
        "assert not heavy, heavy\n"
        "assert not [m for m in sys.modules if m.startswith('boltzbench.targets.')]\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("registry", ["targets", "methods"])
def test_registry_metadata_matches_the_constructors(registry):
    """Every registered entry's keywords, as read from its source without importing
    it, are those of its imported constructor."""
    import importlib

    from boltzbench.registry import factory_params, import_callable, static_params

    reg = getattr(importlib.import_module(f"boltzbench.{registry}"), registry.upper())
    for name in reg.names():
        path = f"{reg.module_of(name)}:{reg.get(name).__name__}"
        assert static_params(path) == factory_params(reg.get(name)), name
    # a user's class and factory function read the same way
    for path in ("custom_method:GaussianIS", "custom_method:make_gaussian_is"):
        assert static_params(path) == factory_params(import_callable(path)), path


def test_planning_tags_match_the_methods():
    """The tags the workflow plans jobs with, read without importing a method
    (STATIC_TAGS), are the built method's, for every family and the params that
    change them."""
    from boltzbench.methods import METHODS, build_method
    from boltzbench.methods.tags import STATIC_TAGS, method_tags, tags_of

    assert set(STATIC_TAGS) == set(METHODS.names())
    variants = {
        "flow": [{}, {"mode": "mle"}],
        "flow_mcmc": [{}, {"flow_params": {"mode": "mle"}}],
        "external": [{"path": "elsewhere/samples.npz"}],
        "snf": [{}, {"loss": "ml"}, {"loss": "kl+ml"}],
    }
    for kind in METHODS.names():
        for extra in variants.get(kind, [{}]):
            entry = {"kind": kind, "params": {**METHODS.get(kind).fast_params, **extra}}
            assert method_tags(entry) == tags_of(build_method(entry)), entry


def test_bad_name_characters():
    cfg = edited()
    cfg["targets"]["bad/name"] = cfg["targets"].pop("gmm40")
    with pytest.raises(ConfigError, match="'targets.bad/name'"):
        validate_config(cfg)


def test_schema_file_matches_models():
    on_disk = (REPO / "workflow/schemas/config.schema.json").read_text()
    assert on_disk == schema_text(), "run `boltzbench schema --write` to regenerate"
    assert "n_samples" in json.loads(on_disk)["$defs"]["SamplingSpec"]["properties"]


def dry_run(workdir, configfile, *python_args, args=()):
    """``snakemake -n`` of the repository's workflow in ``workdir`` (``args``: more
    arguments of Snakemake; ``python_args``: of the interpreter)."""
    cmd = [
        sys.executable,
        *python_args,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-n",
        "--configfile",
        str(configfile),
        "--directory",
        str(workdir),
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_snakemake_refuses_bad_config_before_any_job(tmp_path):
    bad = edited(methods__mala__kind="hmcc")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    out = dry_run(tmp_path, tmp_path / "bad.yaml")
    assert out.returncode != 0
    assert "methods.mala" in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()


#: the arguments with which Snakemake re-runs itself for one job (``--mode remote``: a
#: SLURM job; a local ``run:`` job gets ``--mode subprocess``), with -n
JOB_ARGS = [
    "--target-jobs",
    "train:target=gmm40,method=smc,seed=0",
    "--allowed-rules",
    "train",
    "--force",
    "--nolock",
    "--ignore-incomplete",
    "--max-inventory-time",
    "0",
    "--mode",
    "remote",
]


def test_job_reparse_runs_the_static_checks_only(tmp_path):
    """A job's re-parse of the Snakefile imports no torch and skips the full checks,
    which its main process ran before submitting it: a config that the full checks
    refuse for a constructor's own check (see test_bad_config_names_the_key) passes
    there, and one with a static error does not."""
    bad = edited(methods__smc__params={"kernel": "gibbs"})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    job = dry_run(tmp_path, tmp_path / "bad.yaml", "-X", "importtime", args=JOB_ARGS)
    assert job.returncode == 0, job.stderr[-3000:]
    assert "rule train:" in job.stdout + job.stderr
    imported = [line.rpartition("|")[2].strip() for line in job.stderr.splitlines()]
    assert "torch" not in imported and "boltzbench.methods.smc" not in imported
    static_bad = edited(methods__smc__params={"n_tempz": 3})
    (tmp_path / "static_bad.yaml").write_text(yaml.safe_dump(static_bad))
    job = dry_run(tmp_path, tmp_path / "static_bad.yaml", args=JOB_ARGS)
    assert job.returncode != 0 and "'methods.smc.params'" in job.stdout + job.stderr


def test_configfile_on_the_command_line_replaces_the_default(tmp_path):
    """Snakemake merges --configfile into the Snakefile's configfile; we must not."""
    default = edited()
    default["methods"]["leaky"] = {"kind": "mala", "params": {"n_chains": 3}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(default))
    out = dry_run(tmp_path, REPO / "tests/configs/tiny.yaml")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "method=mala" in out.stdout and "leaky" not in out.stdout


def test_user_method_and_external_samples(tmp_path):
    """A user method (class or factory) and an external sample file validate, with
    budgets and budget-sweep runs of the user method; the file is checked against
    every target it runs on, and it never joins a budget sweep."""
    import numpy as np

    from boltzbench.config import sweep_members

    np.savez(tmp_path / "user.npz", x=np.zeros((10, 3)), n_energy=10)
    cfg = edited(
        methods__mine={"callable": "custom_method:GaussianIS", "budget": {"user": 400}},
        methods__mine_fn={"callable": "custom_method:make_gaussian_is", "targets": ["user"]},
        methods__ext={
            "kind": "external",
            "targets": ["user"],
            "params": {"path": str(tmp_path / "user.npz")},
        },
        budget_sweep={"target": "user", "budgets": [100, 200, 300]},
    )
    validated = validate_config(cfg)
    members = sweep_members(validated)
    assert {m["method"] for m in members.values()} == {"mala", "smc", "flow_mle", "mine", "mine_fn"}
    assert members["mine-budget200"] == {"method": "mine", "budget": 200}

    wrong_dim = copy.deepcopy(cfg)
    wrong_dim["methods"]["ext"]["targets"] = ["user", "gmm40"]
    with pytest.raises(ConfigError) as err:
        validate_config(wrong_dim)
    assert "'methods.ext.params': on target 'gmm40'" in str(err.value)
    assert "'x' has 3 columns, but the target has dim 2" in str(err.value)

    swept = copy.deepcopy(cfg)
    swept["budget_sweep"]["methods"] = ["mine", "ext"]
    with pytest.raises(ConfigError, match="'budget_sweep.methods': 'ext' scores samples made"):
        validate_config(swept)


def test_external_file_per_target_through_overrides(tmp_path):
    import numpy as np

    np.savez(tmp_path / "gmm.npz", x=np.zeros((10, 2)))
    np.savez(tmp_path / "user.npz", x=np.zeros((10, 3)))
    ext = {
        "kind": "external",
        "targets": ["gmm40", "user"],
        "overrides": {
            "gmm40": {"path": str(tmp_path / "gmm.npz")},
            "user": {"path": str(tmp_path / "user.npz")},
        },
    }
    validate_config(edited(methods__ext=ext))
    ext["targets"].append("funnel10")  # no file for it
    with pytest.raises(ConfigError, match="'methods.ext.params'.*'path'"):
        validate_config(edited(methods__ext=ext))


def _count_full_checks(monkeypatch) -> list[int]:
    """Count the calls of the full tier's first check (building the targets)."""
    import boltzbench.config as config

    calls: list[int] = []
    build = config._build_targets

    def counted(cfg):
        calls.append(1)
        return build(cfg)

    monkeypatch.setattr(config, "_build_targets", counted)
    return calls


def test_a_passed_full_validation_is_recorded_and_reused(tmp_path, monkeypatch):
    """The second full validation of the same config and source runs the static
    checks only; a changed config, an edited user callable's file, a touched
    named file each make a new key; a refused config is never recorded."""
    from boltzbench.config import validation_key

    monkeypatch.syspath_prepend(str(REPO / "tests"))
    calls, cache = _count_full_checks(monkeypatch), tmp_path / "validated"
    validate_config(TINY, cache=cache)
    validate_config(TINY, cache=cache)
    assert len(calls) == 1 and len(list(cache.iterdir())) == 1
    validate_config(edited(seeds=[0, 1]), cache=cache)
    assert len(calls) == 2

    user = tmp_path / "my_target_mod.py"
    user.write_text((REPO / "tests/custom_target.py").read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = edited(targets__user__callable="my_target_mod:make_shifted_gaussian")
    key = validation_key(cfg)
    user.write_text(user.read_text() + "\n# edited\n")
    assert validation_key(cfg) != key

    named = tmp_path / "samples.npz"
    named.write_bytes(b"x")
    cfg = edited(methods__mala__params={"note": str(named)})
    key = validation_key(cfg)
    os.utime(named, ns=(1, 1))
    assert validation_key(cfg) != key

    bad = edited(methods__smc__params={"kernel": "gibbs"})
    for _ in range(2):
        with pytest.raises(ConfigError, match="methods.smc"):
            validate_config(bad, cache=cache)
    assert len(list(cache.iterdir())) == 2


def test_snakemake_validates_in_full_once_per_key(tmp_path):
    """Two dry runs of one config: the first records its full validation under
    .snakemake/, the second finds it (a config the full tier refuses is refused
    every time)."""
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    parse_only = ["--list-rules"]  # the parse validates; no DAG is needed here
    imported = []
    for _ in range(2):
        out = dry_run(tmp_path, tmp_path / "tiny.yaml", "-X", "importtime", args=parse_only)
        assert out.returncode == 0, out.stderr[-3000:]
        imported.append({line.rpartition("|")[2].strip() for line in out.stderr.splitlines()})
    assert len(list((tmp_path / ".snakemake/boltzbench/validated").iterdir())) == 1
    # the first parse built the targets and methods (torch); the second found its record
    assert "torch" in imported[0] and "torch" not in imported[1]
    bad = edited(methods__smc__params={"kernel": "gibbs"})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    for _ in range(2):
        out = dry_run(tmp_path, tmp_path / "bad.yaml", args=parse_only)
        assert out.returncode != 0 and "methods.smc" in out.stdout + out.stderr
