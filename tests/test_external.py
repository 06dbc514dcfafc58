"""Samples made elsewhere: the file format's checks, and ``boltzbench score``.

Every bad input is an error that says what is wrong; energies that disagree
with the target's name the rows and the likely cause; non-finite rows are
kept and counted; exact samples scored by ``boltzbench score`` land on the
noise floor.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
import zarr

from boltzbench.cli import main
from boltzbench.config import validate_config
from boltzbench.external import ExternalSamplesError, load_samples
from boltzbench.io import read_attrs
from boltzbench.metrics.evaluate import nonfinite_fraction
from boltzbench.steps.sample import check_declared_budget
from boltzbench.steps.score import score_file
from boltzbench.targets import CountingTarget, build_target
from boltzbench.targets.gaussian import Gaussian

GMM = {"kind": "gmm40"}


def exact_file(path, target, n=200, seed=7, **extra):
    """``n`` exact samples of ``target`` with their energies (and ``extra`` keys)."""
    x = target.sample(n, torch.Generator().manual_seed(seed))
    np.savez(path, x=x.numpy(), energy=target.energy(x).numpy(), **extra)
    return path


@pytest.fixture
def gauss():
    return Gaussian(dim=2, rho=0.5).double()


@pytest.fixture
def good(tmp_path, gauss):
    return exact_file(tmp_path / "good.npz", gauss)


def npz(tmp_path, **arrays):
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz"


X = np.zeros((10, 2))


@pytest.mark.parametrize(
    "arrays, must_mention",
    [
        ({"y": X}, ["missing key 'x'", "y"]),
        ({"x": X, "log_weights": np.zeros(10)}, ["unknown key", "'log_weights'", "log_weight"]),
        ({"x": np.zeros((10, 3))}, ["'x' has 3 columns", "dim 2"]),
        ({"x": np.zeros(10)}, ["'x' must be 2-D", "(10,)"]),
        ({"x": np.zeros((0, 2))}, ["'x' has no rows"]),
        ({"x": X, "log_weight": np.zeros(9)}, ["'log_weight' has shape (9,)", "expected (10,)"]),
        ({"x": X, "energy": np.zeros((10, 1))}, ["'energy' has shape (10, 1)", "(10,)"]),
        ({"x": X, "log_q": np.zeros(11)}, ["'log_q' has shape (11,)"]),
        ({"x": X, "n_energy": -5}, ["declared 'n_energy'", "non-negative integer"]),
        ({"x": X, "n_grad": 2.5}, ["declared 'n_grad'", "non-negative integer"]),
        ({"x": X, "seconds": np.nan}, ["declared 'seconds'", "non-negative number"]),
        ({"x": X, "device": 3}, ["'device' must be a string"]),
        ({"x": X, "n_energy": np.arange(3)}, ["'n_energy' must be a scalar"]),
        ({"x": np.array([["a", "b"]] * 10)}, ["'x' must hold real numbers"]),
    ],
)
def test_bad_input_says_what_is_wrong(tmp_path, gauss, arrays, must_mention):
    path = npz(tmp_path, **arrays)
    with pytest.raises(ExternalSamplesError) as err:
        load_samples(path, gauss)
    for text in must_mention:
        assert text in str(err.value), str(err.value)
    assert str(path) in str(err.value)


def test_missing_or_foreign_file(tmp_path, gauss):
    with pytest.raises(ExternalSamplesError, match="no sample file at"):
        load_samples(tmp_path / "nope.npz", gauss)
    (tmp_path / "s.csv").write_text("1,2\n")
    with pytest.raises(ExternalSamplesError, match="not an .npz file or a Zarr store"):
        load_samples(tmp_path / "s.csv", gauss)
    (tmp_path / "broken.npz").write_bytes(b"not a zip archive")
    with pytest.raises(ExternalSamplesError, match="unreadable"):
        load_samples(tmp_path / "broken.npz", gauss)


def test_good_file_becomes_a_sample_set(good, gauss):
    counted = CountingTarget(gauss)
    s = load_samples(good, counted, n=150)
    assert s.x.shape == (150, 2) and s.x.dtype == torch.float64
    assert torch.allclose(s.energy, gauss.energy(s.x))
    assert s.log_weight is None and s.log_q is None
    assert s.attrs["external_n_rows"] == 200 and s.attrs["energy_checked"] == 1
    assert s.attrs["n_nonfinite_rows"] == 0 and len(s.attrs["external_sha256"]) == 64
    assert counted.counts.energy == 150  # the check's evaluations, counted


def test_zarr_store_with_declared_costs_as_attrs(tmp_path, gauss):
    x = gauss.sample(50, torch.Generator().manual_seed(1))
    group = zarr.open_group(tmp_path / "s.zarr", mode="w")
    group.create_array("x", data=x.numpy())
    group.create_array("log_weight", data=np.zeros(50))
    group.attrs.update(n_energy=1000, n_grad=500, seconds=12.5, device="1x A100")
    s = load_samples(tmp_path / "s.zarr", gauss)
    assert s.attrs["external_format"] == "zarr" and s.attrs["energy_checked"] == 0
    assert torch.equal(s.x, x) and torch.equal(s.log_weight, torch.zeros(50, dtype=torch.float64))
    declared = {k: v for k, v in s.attrs.items() if k.startswith("declared_")}
    assert declared == {
        "declared_n_energy": 1000,
        "declared_n_grad": 500,
        "declared_seconds": 12.5,
        "declared_device": "1x A100",
    }


def test_nonfinite_rows_are_kept_and_counted(tmp_path, gauss):
    x = gauss.sample(20, torch.Generator().manual_seed(2)).numpy()
    energy = gauss.energy(torch.from_numpy(x)).numpy()
    x[[3, 11], 0] = np.nan
    x[7, 1] = np.inf
    energy[[3, 7, 11]] = np.nan  # the file's own energies there are not checked
    lw = np.zeros(20)
    lw[5] = np.nan
    path = npz(tmp_path, x=x, energy=energy, log_weight=lw)
    s = load_samples(path, gauss)
    assert s.x.shape == (20, 2)  # never dropped
    assert s.attrs["n_nonfinite_rows"] == 3 and s.attrs["n_nonfinite_log_weight"] == 1
    assert torch.isnan(s.energy[[3, 7, 11]]).all()
    assert nonfinite_fraction(s, gauss) == pytest.approx(3 / 20)  # the metrics' accounting


@pytest.mark.parametrize(
    "edit, hint",
    [
        (lambda e: 0.5 * e, "0.5 × the target's"),  # LJ's factor ½
        (lambda e: e + 3.0, "by about 3 k_BT"),
        (lambda e: e + np.sin(7 * e), "a different energy function"),
    ],
)
def test_energy_mismatch_names_rows_and_cause(tmp_path, edit, hint):
    target = build_target(GMM).double()
    x = target.sample(30, torch.Generator().manual_seed(4))
    energy = target.energy(x).numpy()
    path = npz(tmp_path, x=x.numpy(), energy=edit(energy))
    with pytest.raises(ExternalSamplesError) as err:
        load_samples(path, target, target_name="target 'gmm40'")
    text = str(err.value)
    assert "disagrees with the target's own energy" in text and "target 'gmm40'" in text
    assert f"rows 0 (file {edit(energy)[0]:.6g}, target {energy[0]:.6g})" in text
    assert "and 25 more" in text and hint in text


def test_energy_mismatch_in_a_few_rows_names_them(tmp_path):
    target = build_target(GMM).double()
    x = target.sample(30, torch.Generator().manual_seed(4))
    energy = target.energy(x).numpy()
    energy[[4, 17]] += 0.5
    energy[9] *= 1 + 5e-4  # within the tolerance: 1e-3·max(1, |E|)
    with pytest.raises(ExternalSamplesError) as err:
        load_samples(npz(tmp_path, x=x.numpy(), energy=energy), target)
    text = str(err.value)
    assert "at 2 of 30 rows" in text and "rows 4 (file" in text and ", 17 (file" in text
    assert "9 (file" not in text


def test_declared_costs_within_a_budget():
    check_declared_budget({"declared_n_energy": 100}, None)
    check_declared_budget({"declared_n_energy": 100}, 100)
    with pytest.raises(ValueError, match="over the run's budget of 99"):
        check_declared_budget({"declared_n_energy": 100}, 99)
    with pytest.raises(ValueError, match="declare none"):
        check_declared_budget({}, 100)


# boltzbench score -------------------------------------------------------------------

#: 20 floor replicates, so the floor's spread is well estimated
SCORE_CONFIG = {
    "seeds": [0],
    "reference": {"n_train": 500, "n_eval": 500},
    "sampling": {"n_samples": 500},
    "evaluation": {"n_eval": 300, "floor_replicates": 20},
    "targets": {"gmm40": GMM, "g": {"kind": "gaussian", "params": {"dim": 3}}},
    "methods": {"mala": {"kind": "mala"}},
}


@pytest.fixture
def score_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # results_dir 'results' is read from here
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(SCORE_CONFIG))
    return path


@pytest.mark.parametrize("name", ["gmm40", "g"])
def test_exact_samples_score_on_the_floor(score_config, tmp_path, capsys, name):
    cfg = validate_config(SCORE_CONFIG)
    target = build_target(cfg.targets[name].model_dump()).double()
    path = exact_file(tmp_path / f"{name}.npz", target, n=500, seed=11, n_energy=0, device="cpu")
    report = score_file(cfg, name, path)
    assert report.reference == "built in memory from the exact sampler"
    with_floor = [m for m in report.metrics if m in report.floor]
    assert "w2" in with_floor and "energy_w1" in with_floor and "mmd" in with_floor
    for metric in with_floor:
        excess = report.floor[metric].excess_sigma(report.metrics[metric])
        assert abs(excess) <= 3.5, (metric, report.metrics[metric], report.floor[metric])
    assert main(["score", "--config", str(score_config), "--target", name, str(path)]) == 0
    out = capsys.readouterr().out
    assert "≈ floor" in out and "declared costs (not counted by boltzbench): device cpu" in out


def test_score_reads_the_pipelines_reference_stores(score_config, tmp_path):
    """With the reference step's stores under results/, the score is the same as
    with the exact reference built in memory: the same seeds, the same rows."""
    from boltzbench.config import reference_sizes
    from boltzbench.steps.reference import run as reference

    cfg = validate_config(SCORE_CONFIG)
    target = build_target(GMM).double()
    path = exact_file(tmp_path / "s.npz", target, n=500, seed=12)
    in_memory = score_file(cfg, "gmm40", path)
    for split in ("eval", "floor"):
        reference(
            inputs={},
            outputs={"store": f"results/gmm40/reference/{split}.zarr"},
            target_name="gmm40",
            target=cfg.targets["gmm40"].model_dump(),
            split=split,
            n=reference_sizes(cfg, "gmm40")[split],
        )
    stored = score_file(cfg, "gmm40", path)
    stores = [f"results/gmm40/reference/{split}.zarr" for split in ("eval", "floor")]
    assert stored.reference == "; ".join(stores)
    assert stored.metrics == in_memory.metrics and stored.floor == in_memory.floor


def test_score_bad_input_exits_2(score_config, tmp_path, capsys):
    target = build_target(GMM).double()
    x = target.sample(50, torch.Generator().manual_seed(5))
    np.savez(tmp_path / "half.npz", x=x.numpy(), energy=0.5 * target.energy(x).numpy())
    args = ["score", "--config", str(score_config), "--target"]
    assert main([*args, "gmm40", str(tmp_path / "half.npz")]) == 2
    assert "0.5 × the target's" in capsys.readouterr().err
    assert main([*args, "g", str(tmp_path / "half.npz")]) == 2  # 2 columns, dim 3
    assert "'x' has 2 columns, but target 'g' has dim 3" in capsys.readouterr().err
    assert main([*args, "nope", str(tmp_path / "half.npz")]) == 2
    assert "unknown target 'nope'" in capsys.readouterr().err


def test_score_without_a_reference_says_how_to_make_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = {**SCORE_CONFIG, "targets": {"dw": {"kind": "dw4", "reference": {"kind": "mcmc"}}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    np.savez(tmp_path / "dw.npz", x=np.ones((5, build_target({"kind": "dw4"}).dim)))
    assert main(["score", "--config", "c.yaml", "--target", "dw", "dw.npz"]) == 2
    err = capsys.readouterr().err
    assert "no reference store at results/dw/reference/eval.zarr" in err
    assert "snakemake --configfile" in err


def test_weighted_file_gets_weight_metrics(score_config, tmp_path):
    """A file with log weights is scored as a weighted set: Δlog Z, ESS and the
    reweighted metrics (exact samples with their exact log q: log w = log Z)."""
    cfg = validate_config(SCORE_CONFIG)
    g = build_target(cfg.targets["g"].model_dump()).double()
    x = g.sample(500, torch.Generator().manual_seed(3))
    energy = g.energy(x)
    log_q = -energy - g.log_Z
    np.savez(
        tmp_path / "w.npz",
        x=x.numpy(),
        energy=energy.numpy(),
        log_q=log_q.numpy(),
        log_weight=(-energy - log_q).numpy(),
    )
    report = score_file(cfg, "g", tmp_path / "w.npz")
    assert report.metrics["log_z_error"] == pytest.approx(0.0, abs=1e-9)
    assert report.metrics["ess"] == pytest.approx(1.0)
    assert math.isfinite(report.metrics["w2_reweighted"]) and "w2_reweighted" in report.floor


def test_external_through_the_steps_with_a_budget(tmp_path):
    """train → sample → evaluate of ``kind: external`` under a budget: the costs are
    the file's, marked declared; boltzbench's check is recorded apart; declaring more
    evaluations than the budget is an error."""
    from boltzbench.steps import evaluate, reference, sample, train

    target = {"kind": "gaussian", "params": {"dim": 2}}
    g = build_target(target).double()
    path = exact_file(tmp_path / "s.npz", g, n=100, n_energy=800, n_grad=400, seconds=2.0)
    method = {"kind": "external", "params": {"path": str(path)}}
    job = dict(target_name="g", target=target, method_name="ext", method=method, seed=0)
    runs = dict(job, n_samples=100, budget=1000)
    out = {k: str(tmp_path / f"{k}.zarr") for k in ("model", "samples", "eval")}
    train.run(inputs={}, outputs={"model": out["model"]}, **runs)
    inputs = {"model": out["model"], "external_samples": str(path)}
    sample.run(inputs=inputs, outputs={"samples": out["samples"]}, **runs)
    attrs = read_attrs(out["samples"])
    assert attrs["costs_declared"] == 1 and attrs["check_n_energy"] == 100
    assert "sample_n_energy" not in attrs and attrs["declared_n_energy"] == 800
    assert "costs are declared by the file" in attrs["budget_note"]

    reference.run(
        inputs={},
        outputs={"store": out["eval"]},
        target_name="g",
        target=target,
        split="eval",
        n=200,
    )
    metrics_path = tmp_path / "metrics.json"
    evaluate.run(
        inputs={"samples": out["samples"], "reference": out["eval"]},
        outputs={"metrics": str(metrics_path)},
        n_eval=50,
        **job,
    )
    cost = json.loads(metrics_path.read_text())["cost"]
    assert cost["costs_declared"] == 1.0 and cost["total_n_energy"] == 800
    assert cost["total_n_grad"] == 400 and cost["total_seconds"] == 2.0
    assert cost["budget_used"] == 0.8 and cost["check_n_energy"] == 100

    over = dict(runs, budget=700)
    train.run(inputs={}, outputs={"model": out["model"]}, **over)
    with pytest.raises(ValueError, match="declare 800 energy evaluations"):
        sample.run(inputs=inputs, outputs={"samples": out["samples"]}, **over)
