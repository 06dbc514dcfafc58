"""MD replicas of alanine dipeptide: energies, equipartition, checkpoint/resume, platforms."""

import subprocess
import sys

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from boltzbench.md.simulate import (
    MDSettings,
    _StopRequested,
    openmm_seed,
    resolve_platform,
    run_replica,
)
from boltzbench.md.system import build_system, data_dir

#: the molar gas constant, kJ/(mol K) (CODATA 2018: k_B N_A exactly)
R_KJ = 0.00831446261815324
N_ATOMS = 22

SHORT = dict(
    solvent="vacuum",
    platform="Reference",
    equilibration_steps=300,
    production_steps=2000,
    save_every_steps=100,
    seed=7,
)


def _independent_context(solvent: str) -> openmm.Context:
    """The system built here straight from the prmtop, on the Reference platform."""
    prmtop = app.AmberPrmtopFile(str(data_dir() / "alanine-dipeptide.prmtop"))
    kwargs = {"implicitSolvent": app.OBC2} if solvent == "implicit" else {}
    system = prmtop.createSystem(nonbondedMethod=app.NoCutoff, constraints=None, **kwargs)
    integrator = openmm.VerletIntegrator(1.0 * unit.femtosecond)
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))


def _energy_kJ(context: openmm.Context, positions_nm: np.ndarray) -> float:
    context.setPositions(positions_nm)
    energy = context.getState(getEnergy=True).getPotentialEnergy()
    return energy.value_in_unit(unit.kilojoule_per_mole)


@pytest.mark.parametrize("solvent", ["implicit", "vacuum"])
def test_frame_energies_match_an_independent_system(solvent):
    shipped = app.AmberInpcrdFile(str(data_dir() / "alanine-dipeptide.crd"))
    crd = np.asarray(shipped.getPositions().value_in_unit(unit.nanometer))
    ref = _independent_context(solvent)
    ours = build_system(solvent)
    assert np.array_equal(ours.positions_nm, crd)
    integ = openmm.VerletIntegrator(1.0 * unit.femtosecond)
    ctx = openmm.Context(ours.system, integ, openmm.Platform.getPlatformByName("Reference"))
    assert abs(_energy_kJ(ctx, crd) - _energy_kJ(ref, crd)) < 1e-9

    frames = run_replica(**{**SHORT, "solvent": solvent, "production_steps": 500})
    assert frames.positions_nm.shape == (5, N_ATOMS, 3) and frames.positions_nm.dtype == np.float64
    assert np.allclose(frames.time_ps, [0.1, 0.2, 0.3, 0.4, 0.5], rtol=0, atol=1e-12)
    for i in (0, 4):  # the saved energy is the energy of the saved positions
        assert abs(frames.potential_kJ[i] - _energy_kJ(ref, frames.positions_nm[i])) < 1e-8
    assert np.allclose(frames.reduced_potential(), frames.potential_kJ / (R_KJ * 300.0), rtol=1e-14)
    minimized = frames.stats["minimized_potential_kJ"]
    assert minimized < _energy_kJ(ref, crd)  # minimization lowered the shipped energy


def _block_standard_error(x: np.ndarray, n_blocks: int = 20) -> float:
    """Standard error of the mean from ``n_blocks`` batch means (Flyvbjerg & Petersen 1989)."""
    means = x[: len(x) // n_blocks * n_blocks].reshape(n_blocks, -1).mean(1)
    return float(means.std(ddof=1) / np.sqrt(n_blocks))


@pytest.mark.parametrize(
    ("constraints", "dof"), [("none", 3 * N_ATOMS), ("h-bonds", 3 * N_ATOMS - 12)]
)
def test_equipartition_of_kinetic_energy(constraints, dof):
    """⟨K⟩ = (n_dof / 2) k_BT with n_dof = 3N − (constraints) (no CMMotionRemover).

    LangevinMiddleIntegrator (LFMiddle, Zhang et al. 2019) stores half-step
    velocities, and OpenMM's kinetic energy is that of the stored velocities;
    OpenMM documents that they "provide a much more accurate sampling of the
    thermal ensemble" than on-step velocities, so at 1 fs the average matches
    equipartition within the noise. 200 ps in vacuum, friction 5/ps, a frame
    every 20 fs; the tolerance is 4 block standard errors, and the standard
    error must be below 1.5 % so that a wrong dof count (3N − 6: −9 %; 66
    instead of 54: +22 %) would fail.
    """
    frames = run_replica(
        solvent="vacuum",
        constraints=constraints,
        friction_per_ps=5.0,
        timestep_fs=1.0,
        platform="Reference",
        equilibration_steps=5000,
        production_steps=200_000,
        save_every_steps=20,
        seed=11,
    )
    assert frames.stats["dof"] == dof
    expected = 0.5 * dof * R_KJ * 300.0
    mean, se = frames.kinetic_kJ.mean(), _block_standard_error(frames.kinetic_kJ)
    assert se < 0.015 * expected
    assert abs(mean - expected) < 4 * se, (mean, expected, se)


def test_resume_gives_exactly_the_uninterrupted_frames(tmp_path):
    plain = run_replica(**SHORT)
    ckpt = tmp_path / "replica.npz"
    with pytest.raises(_StopRequested):  # killed mid-production, 450 steps after a checkpoint
        run_replica(
            **SHORT, checkpoint_path=ckpt, checkpoint_every_steps=500, _stop_after_steps=1700
        )
    with np.load(ckpt, allow_pickle=False) as z:
        assert int(z["step"]) == 1500 and len(z["potential_kJ"]) == (1500 - 300) // 100
    with pytest.raises(_StopRequested):  # resumed, then killed again before the next checkpoint
        run_replica(
            **SHORT, checkpoint_path=ckpt, checkpoint_every_steps=500, _stop_after_steps=1900
        )
    resumed = run_replica(**SHORT, checkpoint_path=ckpt, checkpoint_every_steps=500)
    assert resumed.stats["resumed_from_step"] == 1500
    assert not ckpt.exists()
    for name in ("positions_nm", "potential_kJ", "kinetic_kJ", "time_ps"):
        assert np.array_equal(getattr(plain, name), getattr(resumed, name)), name
    assert resumed.stats["minimized_potential_kJ"] == plain.stats["minimized_potential_kJ"]


def test_resume_from_the_end_of_equilibration(tmp_path):
    plain = run_replica(**SHORT)
    ckpt = tmp_path / "replica.npz"
    with pytest.raises(_StopRequested):  # no periodic checkpoint: only the end of equilibration
        run_replica(**SHORT, checkpoint_path=ckpt, checkpoint_every_steps=0, _stop_after_steps=1000)
    with np.load(ckpt, allow_pickle=False) as z:
        assert int(z["step"]) == 300 and len(z["potential_kJ"]) == 0
    resumed = run_replica(**SHORT, checkpoint_path=ckpt, checkpoint_every_steps=0)
    assert resumed.stats["resumed_from_step"] == 300
    assert np.array_equal(plain.positions_nm, resumed.positions_nm)


def test_stale_or_damaged_checkpoint_is_ignored_and_removed(tmp_path):
    ckpt = tmp_path / "replica.npz"
    with pytest.raises(_StopRequested):  # a checkpoint of seed 7
        run_replica(
            **SHORT, checkpoint_path=ckpt, checkpoint_every_steps=500, _stop_after_steps=1200
        )
    assert ckpt.exists()
    other = {**SHORT, "seed": 8}
    fresh = run_replica(**other)
    ran = run_replica(**other, checkpoint_path=ckpt, checkpoint_every_steps=10_000)
    assert ran.stats["resumed_from_step"] == 0 and not ckpt.exists()
    assert np.array_equal(fresh.positions_nm, ran.positions_nm)
    assert not np.array_equal(fresh.positions_nm, run_replica(**SHORT).positions_nm)

    ckpt.write_bytes(b"not a checkpoint")
    ran = run_replica(**other, checkpoint_path=ckpt)
    assert ran.stats["resumed_from_step"] == 0 and not ckpt.exists()
    assert np.array_equal(fresh.positions_nm, ran.positions_nm)


def test_settings_key_covers_every_setting():
    base = MDSettings()
    keys = {base.key()}
    for name, value in [
        ("seed", 1),
        ("temperature_K", 310.0),
        ("solvent", "vacuum"),
        ("timestep_fs", 2.0),
    ]:
        keys.add(MDSettings(**{name: value}).key())
    assert len(keys) == 5 and MDSettings().key() == base.key()


def test_openmm_seed_is_a_positive_int32():
    seeds = [openmm_seed(s) for s in (0, 1, 2, 2**40, -5)]
    assert all(1 <= s < 2**31 for s in seeds) and len(set(seeds)) == 5
    assert openmm_seed(3) == openmm_seed(3)


def test_auto_platform():
    names = [
        openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
    ]
    expected = "CUDA" if "CUDA" in names else "Reference"
    print(f"platforms here: {names}; auto should pick {expected}")
    assert resolve_platform("auto") == expected
    assert resolve_platform("CPU") == "CPU"
    if expected == "Reference":
        frames = run_replica(**{**SHORT, "platform": "auto", "production_steps": 100})
        assert frames.stats["platform"] == "Reference"
    with pytest.raises(ValueError, match="not available"):
        run_replica(**{**SHORT, "platform": "NoSuchPlatform"})


def test_invalid_settings():
    with pytest.raises(ValueError, match="multiple of save_every_steps"):
        run_replica(**{**SHORT, "production_steps": 250})
    with pytest.raises(ValueError, match="save_every_steps"):
        run_replica(**{**SHORT, "save_every_steps": 0})


def test_md_package_does_not_import_torch():
    code = "import sys, boltzbench.md.simulate; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------- the R-hat gate of an md reference
def _two_replica_rhat(mu: float) -> float:
    """Large-N rank-normalized split R̂ of replicas N(+mu, 1) and N(-mu, 1) (bulk).

    Rank normalization tends to z = Φ⁻¹(F(x)), F = ½Φ(x − mu) + ½Φ(x + mu). The
    two halves of replica a have mean m = E_a[z], those of b −m, so over the 4
    half-replicas B = 4m²/3 (unbiased variance of the means) and W = Var_a[z];
    R̂ = √(((n − 1)/n · W + B) / W), n → ∞. |x| has the same law in both, so the
    tail R̂ → 1 and the bulk is the max.
    """
    from scipy import integrate, stats

    def z(x):
        return stats.norm.ppf(0.5 * stats.norm.cdf(x - mu) + 0.5 * stats.norm.cdf(x + mu))

    pdf = stats.norm(mu, 1.0).pdf
    m = integrate.quad(lambda x: z(x) * pdf(x), -7, 7)[0]
    w = integrate.quad(lambda x: (z(x) - m) ** 2 * pdf(x), -7, 7)[0]
    return float(np.sqrt(1 + 4 * m * m / (3 * w)))


def test_md_rhat_of_shifted_replicas_matches_the_closed_form():
    from boltzbench.references import md_convergence

    rng = np.random.default_rng(0)
    n, mu = 20_000, 0.4
    series = {
        "energy": rng.normal(size=(2, n)),
        "sin_phi": rng.normal(size=(2, n)) + np.array([[mu], [-mu]]),
    }
    diag = md_convergence(series)
    # half-replica means have sd √(W/10⁴) ≈ 0.01, so R̂ carries sd ≈ 0.003: ±0.012 is 4σ
    assert diag["rhat_sin_phi"] == pytest.approx(_two_replica_rhat(mu), abs=0.012)
    assert 1.09 < _two_replica_rhat(mu) < 1.11
    assert diag["rhat_energy"] < 1.005  # i.i.d. replicas: R̂ − 1 ~ 1/(2 · 10⁴)
    assert diag["ess_energy"] == pytest.approx(2 * n, rel=0.1)


def test_md_gate_fails_naming_rhat_max_and_what_to_raise():
    from boltzbench.mcmc.reference import ConvergenceError
    from boltzbench.references import check_md_convergence

    diag = {"rhat_energy": 1.001, "rhat_sin_phi": 1.08, "rhat_cos_psi": 1.02, "ess_energy": 9.0}
    with pytest.raises(ConvergenceError, match="sin_phi > rhat_max = 1.05") as err:
        check_md_convergence(diag, 1.05)
    assert "production_steps" in str(err.value) and "n_replicas" in str(err.value)
    assert "cos_psi" not in str(err.value).split(" > ")[0]
    check_md_convergence(diag, 1.08)  # equal passes
    check_md_convergence({**diag, "rhat_sin_phi": float("nan")}, float("inf"))
    with pytest.raises(ConvergenceError, match="sin_phi"):
        check_md_convergence({**diag, "rhat_sin_phi": float("nan")}, 2.0)


def test_md_reference_params_keep_the_gate_out_of_the_replicas():
    from boltzbench.references import check_reference, md_replica_kwargs
    from boltzbench.targets.aldp import AlanineDipeptide

    params = {
        "n_replicas": 2,
        "rhat_max": 1.05,
        "equilibration_steps": 10,
        "production_steps": 100,
        "save_every_steps": 10,
    }
    assert set(md_replica_kwargs(params)) == {
        "equilibration_steps",
        "production_steps",
        "save_every_steps",
    }
    target, sizes = AlanineDipeptide(solvent="vacuum"), {"eval": 20}
    check_reference(target, {"kind": "md", "params": params}, sizes)
    with pytest.raises(ValueError, match="rhat_max must be >= 1"):
        check_reference(target, {"kind": "md", "params": {**params, "rhat_max": 0.9}}, sizes)


def test_merge_md_gates_short_vacuum_replicas_on_the_torsions():
    import mdtraj
    import torch

    from boltzbench.mcmc.reference import ConvergenceError
    from boltzbench.references import md_series, merge_md
    from boltzbench.targets.aldp import AlanineDipeptide

    target = AlanineDipeptide(solvent="vacuum")
    replicas = []
    for seed in (7, 8):
        fr = run_replica(**{**SHORT, "seed": seed})
        replicas.append(
            {
                "positions_nm": fr.positions_nm,
                "energy_kT": fr.reduced_potential(),
                "potential_kJ": fr.potential_kJ,
            }
        )
    series = md_series(replicas, target)
    traj = mdtraj.Trajectory(replicas[1]["positions_nm"], target.mdtraj_topology)
    phi = mdtraj.compute_phi(traj)[1][:, 0]
    assert np.allclose(series["sin_phi"][1], np.sin(phi), atol=1e-5)
    assert np.array_equal(series["energy"][0], replicas[0]["energy_kT"])

    merged = merge_md(replicas, target, 30, rhat_max=float("inf"))
    rhats = {k: v for k, v in merged.attrs.items() if k.startswith("rhat_") and k[5:] in series}
    assert set(rhats) == {f"rhat_{k}" for k in series} and merged.attrs["rhat_max"] == max(
        rhats.values()
    )
    worst = max(rhats.values())
    merge_md(replicas, target, 30, rhat_max=worst)
    with pytest.raises(ConvergenceError, match="rhat_max"):
        merge_md(replicas, target, 30, rhat_max=worst - 1e-9)
    # a generator shuffles the rows (a block of rows spans both replicas), same frames
    shuffled = merge_md(replicas, target, 30, float("inf"), torch.Generator().manual_seed(0))
    a, b = merged.diagnostics["positions_nm"], shuffled.diagnostics["positions_nm"]
    assert not torch.equal(a, b)
    assert torch.equal(a[torch.argsort(a[:, 0, 0])], b[torch.argsort(b[:, 0, 0])])
