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
