"""The torch → OpenMM bridge against a plain single-Context loop written here.

The reference system is built independently of boltzbench.md (AmberPrmtopFile,
createSystem with OBC2 and no cutoff) and evaluated one configuration at a time;
energies are divided by R·T with R = 0.00831446261815324 kJ/(mol K).
"""

import multiprocessing
import subprocess
import sys
import textwrap

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch

from boltzbench.md.bridge import OpenMMBridge, bridge_energy
from boltzbench.md.system import data_dir

R_KJ_PER_MOL_K = 0.00831446261815324
T = 300.0
KT = R_KJ_PER_MOL_K * T
BAD_ROWS = (2, 7, 12)  # NaN coordinate, coincident atoms, inf coordinate


def _reference_context() -> tuple[openmm.Context, np.ndarray]:
    prmtop = app.AmberPrmtopFile(str(data_dir() / "alanine-dipeptide.prmtop"))
    crd = app.AmberInpcrdFile(str(data_dir() / "alanine-dipeptide.crd"))
    system = prmtop.createSystem(nonbondedMethod=app.NoCutoff, implicitSolvent=app.OBC2)
    platform = openmm.Platform.getPlatformByName("Reference")
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3), platform)
    return context, np.asarray(crd.getPositions().value_in_unit(unit.nanometer))


def _reference_loop(context, pos):
    """Energies (n,) in k_BT and forces (n, 22, 3) in k_BT/nm, one setPositions each."""
    energy, forces = [], []
    for x in pos:
        context.setPositions(x * unit.nanometer)
        s = context.getState(getEnergy=True, getForces=True)
        energy.append(s.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KT)
        f = s.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        forces.append(np.asarray(f) / KT)
    return np.array(energy), np.array(forces)


@pytest.fixture(scope="module")
def batch():
    """16 structures perturbed by 0.01 nm, the reference results, and 3 bad rows added."""
    context, shipped = _reference_context()
    rng = np.random.default_rng(7)
    pos = shipped + 0.01 * rng.standard_normal((16, 22, 3))
    e_ref, f_ref = _reference_loop(context, pos)
    bad = pos.copy()
    bad[BAD_ROWS[0], 3, 1] = np.nan
    bad[BAD_ROWS[1], 9] = bad[BAD_ROWS[1], 8]  # HA on top of CA
    bad[BAD_ROWS[2], 0, 2] = np.inf
    return pos, bad, e_ref, f_ref


@pytest.fixture(scope="module")
def bridges():
    """One bridge per n_workers in (0, 1, 2), shared by the tests (two pool starts)."""
    made = {n: OpenMMBridge("implicit", T, n_workers=n) for n in (0, 1, 2)}
    yield made
    for b in made.values():
        b.close()


def test_building_starts_nothing():
    before = set(multiprocessing.active_children())
    b = OpenMMBridge(n_workers=2)
    assert b._pool is None and b._local is None
    assert set(multiprocessing.active_children()) == before


@pytest.mark.parametrize("n_workers", [0, 1, 2])
def test_matches_single_context_loop(batch, bridges, n_workers):
    pos, _, e_ref, f_ref = batch
    e, f = bridges[n_workers].energy_forces(pos)
    assert e.dtype == np.float64 and e.shape == (16,) and f.shape == (16, 22, 3)
    assert np.allclose(e, e_ref, rtol=1e-10, atol=0)
    assert np.allclose(f, f_ref, rtol=1e-10, atol=1e-10 * np.abs(f_ref).max())
    assert bridges[n_workers].n_nonfinite_last == 0


@pytest.mark.parametrize("n_workers", [0, 2])
def test_bad_rows_give_inf_and_zero_force(batch, bridges, n_workers):
    _, bad, e_ref, f_ref = batch
    b = bridges[n_workers]
    total = b.n_nonfinite_total
    e, f = b.energy_forces(bad)  # no exception
    good = np.setdiff1d(np.arange(16), BAD_ROWS)
    assert np.all(e[list(BAD_ROWS)] == np.inf) and np.all(f[list(BAD_ROWS)] == 0)
    assert np.allclose(e[good], e_ref[good], rtol=1e-10, atol=0)
    assert np.allclose(f[good], f_ref[good], rtol=1e-10, atol=1e-10 * np.abs(f_ref).max())
    assert b.n_nonfinite_last == 3 and b.n_nonfinite_total == total + 3
    e2, _ = b.energy_forces(bad[good])  # the Context is still sound afterwards
    assert np.allclose(e2, e_ref[good], rtol=1e-10, atol=0)


def test_workers_do_not_import_torch(bridges):
    info = bridges[2].worker_info()
    assert len(info) == 2 and not any(i["torch_imported"] for i in info)


def test_unguarded_main_script_is_not_rerun_by_workers(tmp_path):
    """A script without a __main__ guard (as Snakemake runs them) that imports torch."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            """
            import numpy as np
            import torch  # noqa: F401
            from boltzbench.md.bridge import OpenMMBridge
            from boltzbench.md.system import build_system

            print("script body ran")
            b = OpenMMBridge(n_workers=1)
            e, _ = b.energy_forces(build_system().positions_nm[None])
            print("torch in worker:", b.worker_info()[0]["torch_imported"], "energy:", e[0])
            b.close()
            """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("script body ran") == 1
    assert "torch in worker: False" in out.stdout


def test_autograd_gradient_is_minus_forces(batch, bridges):
    _, bad, _, _ = batch
    x = torch.tensor(bad.reshape(16, 66), requires_grad=True)
    e = bridge_energy(x, bridges[0])
    w = torch.linspace(0.5, 2.0, 16)
    (e * w).sum().backward()
    _, f = bridges[0].energy_forces(bad)
    assert torch.equal(x.grad, -torch.from_numpy(f.reshape(16, 66)) * w[:, None])
    assert torch.all(x.grad[list(BAD_ROWS)] == 0)


def test_gradient_matches_finite_differences(batch, bridges):
    pos, _, _, _ = batch
    x = torch.tensor(pos[:4].reshape(4, 66), requires_grad=True)
    bridge_energy(x, bridges[0]).sum().backward()
    v = torch.randn(4, 66, generator=torch.Generator().manual_seed(3))
    v /= v.norm(dim=1, keepdim=True)
    h = 1e-5  # nm
    with torch.no_grad():
        fd = (bridge_energy(x + h * v, bridges[0]) - bridge_energy(x - h * v, bridges[0])) / (2 * h)
    directional = (x.grad * v).sum(1)
    assert torch.allclose(fd, directional, rtol=3e-5, atol=0)


def test_dtype_and_empty_batch(batch, bridges):
    pos, _, e_ref, _ = batch
    e32 = bridge_energy(torch.tensor(pos.reshape(16, 66), dtype=torch.float32), bridges[0])
    assert e32.dtype == torch.float32
    assert np.allclose(e32.numpy(), e_ref, rtol=1e-5)  # float32 rounding of x and of E
    e, f = bridges[0].energy_forces(np.zeros((0, 22, 3)))
    assert e.shape == (0,) and f.shape == (0, 22, 3)


def test_close_and_restart(batch, bridges):
    pos, _, e_ref, _ = batch
    b = bridges[1]
    b.energy_forces(pos[:2])
    b.close()
    assert b._pool is None
    e, _ = b.energy_forces(pos)  # a new pool
    assert np.allclose(e, e_ref, rtol=1e-10, atol=0)
    with OpenMMBridge(n_workers=1) as unused:  # never evaluated: nothing to shut down
        assert unused._pool is None


def test_invalid_arguments():
    with pytest.raises(ValueError, match="solvent"):
        OpenMMBridge(solvent="explicit")
    with pytest.raises(ValueError, match="platform"):
        OpenMMBridge(platform="NoSuchPlatform")
    with pytest.raises(ValueError, match="n_workers"):
        OpenMMBridge(n_workers=-1)
