"""Free-energy differences: the λ-path's end states, FEP/BAR/MBAR and targeted FEP
against closed forms, window checkpoints, and the anchor: alanine dipeptide's
solvation ΔF from MBAR stable across two independent window sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from boltzbench.free_energy.estimators import bar, fep, mbar

openmm = pytest.importorskip("openmm", reason="the λ-windows run OpenMM")


def _perturbed(n: int, scale_nm: float = 0.005) -> np.ndarray:
    from boltzbench.md.system import build_system

    p = build_system().positions_nm
    rng = np.random.default_rng(0)
    return np.stack([p + rng.normal(0, scale_nm, p.shape) for _ in range(n)])


def test_end_states_are_the_vacuum_and_implicit_systems():
    from boltzbench.free_energy.alchemical import end_state_errors

    errors = end_state_errors(_perturbed(3))
    assert errors["vacuum"] < 1e-6 and errors["implicit"] < 1e-6, errors


# --- estimators against a closed form ------------------------------------------------

# u_A = |x|²/2 in d dims, u_B = |x − μ|² / (2 s²): ΔF = F_B − F_A = −d log s.
D, MU, S = 3, 0.3, 0.8
EXACT = -D * math.log(S)


def _works(n: int, seed: int):
    rng = np.random.default_rng(seed)
    xa, xb = rng.normal(0, 1, (n, D)), MU + S * rng.normal(0, 1, (n, D))

    def u_a(x):
        return 0.5 * (x**2).sum(-1)

    def u_b(x):
        return 0.5 * ((x - MU) ** 2).sum(-1) / S**2

    return u_b(xa) - u_a(xa), u_a(xb) - u_b(xb), (xa, xb, u_a, u_b)


@pytest.mark.parametrize("seed", [0, 1])
def test_fep_and_bar_recover_the_harmonic_free_energy(seed):
    w_f, w_r, _ = _works(4000, seed)
    forward, reverse, both = fep(w_f), fep(w_r), bar(w_f, w_r)
    for name, delta_f, sigma in [
        ("forward", forward.delta_f, forward.sigma),
        ("reverse", -reverse.delta_f, reverse.sigma),
        ("bar", both.delta_f, both.sigma),
    ]:
        assert abs(delta_f - EXACT) < 4 * sigma, (name, delta_f, sigma, EXACT)
    assert both.sigma < min(forward.sigma, reverse.sigma)


def test_fep_standard_error_matches_the_spread_over_repeats():
    est = [fep(_works(500, s)[0]) for s in range(200)]
    spread = np.std([e.delta_f for e in est])
    assert abs(np.mean([e.sigma for e in est]) / spread - 1) < 0.25  # 200 repeats: ±10 % (2σ)


def test_bar_and_two_state_mbar_agree_with_pymbar():
    from pymbar.other_estimators import bar as pymbar_bar

    w_f, w_r, (xa, xb, u_a, u_b) = _works(1000, 3)
    ours, theirs = bar(w_f, w_r), pymbar_bar(w_f, w_r)
    assert ours.delta_f == pytest.approx(theirs["Delta_f"], abs=1e-8)
    assert ours.sigma == pytest.approx(theirs["dDelta_f"], rel=1e-6)
    x = np.concatenate([xa, xb])
    df, ddf = mbar(np.stack([u_a(x), u_b(x)]), np.array([len(xa), len(xb)]))
    assert df[1] == pytest.approx(ours.delta_f, abs=1e-6)  # MBAR on two states is BAR


def test_targeted_fep_with_a_fitted_flow_map_beats_plain_fep():
    from boltzbench.free_energy.targeted import MapSettings, fit_map, targeted_estimates

    gen = torch.Generator().manual_seed(0)
    mu, s = 2.0, 0.5  # little overlap: plain FEP is poor

    def u_a(x):
        return 0.5 * (x**2).sum(-1)

    def u_b(x):
        return 0.5 * ((x - mu) ** 2).sum(-1) / s**2

    exact = -2 * math.log(s)
    draw = [torch.randn(2000, 2, generator=gen, dtype=torch.float64) for _ in range(4)]
    fit_a, fit_b, ev_a, ev_b = draw[0], mu + s * draw[1], draw[2], mu + s * draw[3]
    fmap = fit_map(fit_a, fit_b, MapSettings(transforms=2, hidden_features=(16,), n_iter=150))
    est, cost = targeted_estimates(fmap, u_a, u_b, ev_a, ev_b)
    plain = fep((u_b(ev_a) - u_a(ev_a)).numpy())
    print(f"exact {exact:.4f}; tfep {est['tfep']}; tbar {est['tbar']}; fep {plain}")
    assert cost == 2 * 4000
    for e in est.values():
        assert abs(e.delta_f - exact) < 4 * e.sigma + 1e-3, (e, exact)
    assert est["tfep"].sigma < plain.sigma / 3


# --- windows --------------------------------------------------------------------------


def test_a_killed_window_resumes_to_the_uninterrupted_frames(tmp_path):
    from boltzbench.checkpoint import Checkpoint
    from boltzbench.free_energy.window import WindowSettings, run_window

    s = WindowSettings(lambda_=0.5, equilibration_steps=200, production_steps=1000,
                       save_every_steps=50, seed=3)  # fmt: skip
    whole = run_window(s)
    ckpt = Checkpoint(tmp_path / "w.pt", every=5, key=s.key())
    with pytest.raises(KeyboardInterrupt):
        run_window(s, checkpoint=ckpt, _stop_after_frames=12)
    resumed = run_window(s, checkpoint=ckpt)
    assert resumed.stats["resumed_from_frame"] == 10
    np.testing.assert_array_equal(resumed.positions_nm, whole.positions_nm)
    np.testing.assert_array_equal(resumed.u_gb_kJ, whole.u_gb_kJ)
    assert not (tmp_path / "w.pt").exists()
    # the stored MBAR columns are (U_vac + λ U_GB) / kT of the frames
    u = whole.reduced(np.array([0.0, 0.5, 1.0]))
    assert u.shape == (3, 20)
    np.testing.assert_allclose(u[2] - u[0], whole.u_gb_kJ / (0.0083144626 * 300.0), rtol=1e-6)


def _mbar_solvation(lambdas, seed, steps):
    from boltzbench.free_energy.solvation import reference, window_dataset
    from boltzbench.free_energy.window import WindowSettings, run_window

    windows = [
        window_dataset(
            run_window(
                WindowSettings(
                    lambda_=lam,
                    equilibration_steps=2000,
                    production_steps=steps,
                    save_every_steps=50,
                    seed=seed + k,
                )
            ),  # fmt: skip
            lambdas,
        )
        for k, lam in enumerate(lambdas)
    ]
    return reference(windows, 300.0)


def test_solvation_free_energy_is_stable_across_independent_window_sets():
    """The anchor: two window sets (other seeds, other λ grids) within 3 joint σ."""
    a = _mbar_solvation([0.0, 0.25, 0.5, 0.75, 1.0], seed=100, steps=40_000)
    b = _mbar_solvation([0.0, 1 / 3, 2 / 3, 1.0], seed=200, steps=50_000)
    joint = math.hypot(a.sigma_kT, b.sigma_kT)
    print(f"ΔF_a = {a.delta_f_kT:.3f} ± {a.sigma_kT:.3f}, ΔF_b = {b.delta_f_kT:.3f} ± "
          f"{b.sigma_kT:.3f} k_BT")  # fmt: skip
    assert abs(a.delta_f_kT - b.delta_f_kT) < 3 * joint
    assert joint < 0.5  # the test means something only if the errors are small


# --- the rules end to end ---------------------------------------------------------------

TINY_TASK = {
    "lambdas": [0.0, 0.5, 1.0],
    "md": {"equilibration_steps": 200, "production_steps": 2000, "save_every_steps": 20,
           "platform": "Reference", "checkpoint_every_frames": 50},
    "map": {"transforms": 1, "hidden_features": [8], "n_iter": 5, "batch_size": 32},
}  # fmt: skip


@pytest.mark.pipeline
@pytest.mark.timeout(600)
def test_rules_write_the_table_with_provenance(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd
    import yaml

    from boltzbench.io import read_attrs, read_json

    repo = Path(__file__).resolve().parent.parent
    cfg = yaml.safe_load((repo / "tests/configs/micro.yaml").read_text())
    cfg["free_energy"] = {"solv": TINY_TASK}
    (tmp_path / "fe.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory",
           str(tmp_path), "--configfile", str(tmp_path / "fe.yaml"), "--cores", "2",
           "results/free_energy.csv"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=580)
    logs = "\n".join(p.read_text()[-2000:] for p in tmp_path.rglob("*.log"))
    assert out.returncode == 0, out.stderr[-4000:] + logs
    table = pd.read_csv(tmp_path / "results/free_energy.csv")
    assert list(table.estimator) == [
        "mbar", "fep_forward", "fep_reverse", "bar", "tfep_flow", "tbar_flow",
    ]  # fmt: skip
    assert np.isfinite(table.delta_f_kT).all() and (table.sigma_kT > 0).all()
    assert (table.md_steps[:4] == [3 * 2200, 2200, 2200, 4400]).all()
    window = read_attrs(tmp_path / "results/free_energy/solv/window1.zarr")
    assert window["boltzbench_step"] == "free_energy_window" and window["lambda"] == 0.5
    est = read_json(tmp_path / "results/free_energy/solv/estimates.json")
    assert set(json_inputs(est["attrs"])) == {"window0", "window1", "window2"}
    assert "mbar" in (tmp_path / "results/free_energy.md").read_text()
    assert not list((tmp_path / "results/checkpoints").rglob("*.pt"))


def json_inputs(attrs: dict) -> dict:
    import json

    return json.loads(attrs["inputs"])
