"""The alanine dipeptide target against OpenMM evaluated directly in the test.

Reference energies come from a system built here (AmberPrmtopFile, NoCutoff,
OBC2 or vacuum) divided by R·T with R = 0.00831446261815324 kJ/(mol K).
"""

import math
import multiprocessing

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch

from boltzbench.md.system import data_dir
from boltzbench.targets import TARGETS, CountingTarget
from boltzbench.targets.aldp import AlanineDipeptide

R_KJ_PER_MOL_K = 0.00831446261815324


def _openmm_energy(pos_nm: np.ndarray, solvent: str, temperature_K: float = 300.0) -> np.ndarray:
    """U/(R·T) of each configuration (n, 22, 3), from a Context built here."""
    prmtop = app.AmberPrmtopFile(str(data_dir() / "alanine-dipeptide.prmtop"))
    extra = {"implicitSolvent": app.OBC2} if solvent == "implicit" else {}
    system = prmtop.createSystem(nonbondedMethod=app.NoCutoff, **extra)
    ctx = openmm.Context(
        system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference")
    )
    out = []
    for x in pos_nm:
        ctx.setPositions(x * unit.nanometer)
        u = ctx.getState(getEnergy=True).getPotentialEnergy()
        out.append(u.value_in_unit(unit.kilojoule_per_mole) / (R_KJ_PER_MOL_K * temperature_K))
    return np.array(out)


def _shipped_nm() -> np.ndarray:
    crd = app.AmberInpcrdFile(str(data_dir() / "alanine-dipeptide.crd"))
    return np.asarray(crd.getPositions().value_in_unit(unit.nanometer))


@pytest.fixture(scope="module")
def target():
    return AlanineDipeptide()


def test_building_is_cheap_and_registered():
    before = set(multiprocessing.active_children())
    t = TARGETS.build("aldp", n_workers=2)
    assert t.bridge._local is None and t.bridge._pool is None  # no Context, no pool
    assert set(multiprocessing.active_children()) == before
    assert t.dim == 66 and t.n_atoms == 22 and not t.exact_sampling and t.log_Z is None
    assert t.translation_invariant and "not removed" in t.com_treatment
    assert "OBC2" in t.description and "OBC1" in t.description and "300 K" in t.description
    with pytest.raises(ValueError, match="coordinates"):
        AlanineDipeptide(coordinates="polar")


@pytest.mark.parametrize("solvent", ["implicit", "vacuum"])
def test_energy_at_shipped_structure_matches_openmm(solvent):
    x = torch.from_numpy(_shipped_nm()).reshape(1, 66)
    e = AlanineDipeptide(solvent=solvent).energy(x)
    assert np.allclose(e.numpy(), _openmm_energy(_shipped_nm()[None], solvent), rtol=1e-10, atol=0)


def test_vacuum_and_implicit_differ_and_temperature_scales(target):
    x = torch.from_numpy(_shipped_nm()).reshape(1, 66)
    e_imp = float(target.energy(x))
    e_vac = float(AlanineDipeptide(solvent="vacuum").energy(x))
    assert abs(e_imp - e_vac) > 1.0  # the GB/SA solvation energy, tens of k_BT
    e_hot = float(AlanineDipeptide(temperature_K=600.0).energy(x))
    assert math.isclose(e_hot, e_imp / 2, rel_tol=1e-12)


def test_base_location_is_a_minimum(target):
    b = target.base_location()
    assert b.shape == (66,) and b.dtype == torch.float64
    e, g = target.energy_and_grad(b[None])
    x0 = torch.from_numpy(_shipped_nm()).reshape(1, 66)
    e0, g0 = target.energy_and_grad(x0)
    assert g.abs().max() < 5e-3 < 1e-3 * g0.abs().max()  # k_BT/nm; ~300 at the shipped one
    assert float(e) < float(e0)
    v = torch.randn(8, 66, generator=torch.Generator().manual_seed(0))
    v /= v.norm(dim=1, keepdim=True)
    for h in (1e-3, -1e-3):  # every direction goes uphill
        assert torch.all(target.energy(b + h * v) > e)


def test_positions_and_topology(target):
    x = torch.from_numpy(_shipped_nm()).reshape(1, 66).repeat(3, 1)
    assert torch.equal(target.positions(x)[1], torch.from_numpy(_shipped_nm()))
    top = target.mdtraj_topology
    assert top.n_atoms == 22 and [r.name for r in top.residues] == ["ACE", "ALA", "NME"]
    assert target.mdtraj_topology is top  # cached


def test_counting_target_counts_rows_and_nonfinite(target):
    rng = np.random.default_rng(1)
    pos = _shipped_nm() + 0.01 * rng.standard_normal((5, 22, 3))
    pos[1, 4, 0] = np.nan
    pos[3, 6] = pos[3, 8]  # N on CA
    counted = CountingTarget(target)
    x = torch.from_numpy(pos.reshape(5, 66)).requires_grad_(True)
    e = counted.energy(x)
    assert counted.counts.energy == 5 and counted.counts.nonfinite == 2
    assert torch.isinf(e[[1, 3]]).all() and torch.isfinite(e[[0, 2, 4]]).all()
    e.sum().backward()
    assert counted.counts.grad == 5 and torch.all(x.grad[[1, 3]] == 0)
    good = [0, 2, 4]
    assert np.allclose(e[good].detach().numpy(), _openmm_energy(pos[good], "implicit"), rtol=1e-10)
    counted.energy_and_grad(x[:2].detach())
    assert counted.counts.as_dict() == {"energy": 7, "grad": 7, "nonfinite": 3}


# --- internal coordinates ------------------------------------------------------


@pytest.fixture(scope="module")
def internal_target():
    return AlanineDipeptide(coordinates="internal")


def test_internal_energy_is_cartesian_minus_log_det(internal_target):
    t = internal_target
    assert t.dim == 60 and "remove the 6 rigid-body" in t.com_treatment
    rng = np.random.default_rng(2)
    pos = _shipped_nm() + 0.005 * rng.standard_normal((4, 22, 3))
    z = t.to_coordinates(torch.from_numpy(pos))
    assert z.shape == (4, 60)
    ic = t.internal
    r, theta = z[:, ic.bond_idx], z[:, ic.angle_idx]
    log_det = 2 * torch.log(r).sum(1) + torch.log(torch.sin(theta)).sum(1)
    x = t.positions(z)  # canonical frame: a rigid motion of pos, same energy
    expected = _openmm_energy(x.numpy(), "implicit") - log_det.numpy()
    assert np.allclose(t.energy(z).numpy(), expected, rtol=1e-9, atol=0)
    assert np.allclose(_openmm_energy(x.numpy(), "implicit"), _openmm_energy(pos, "implicit"))


def test_internal_energy_outside_support_is_inf(internal_target):
    t = internal_target
    z = t.base_location().repeat(3, 1)
    z[0, t.internal.angle_idx[2]] = -0.1  # angle outside (0, π)
    z[1, t.internal.bond_idx[0]] = -0.1  # negative bond
    z = z.requires_grad_(True)
    counted = CountingTarget(t)
    e = counted.energy(z)
    assert torch.isinf(e[:2]).all() and torch.isfinite(e[2])
    assert counted.counts.nonfinite == 2
    e.sum().backward()
    assert torch.all(z.grad[:2] == 0) and torch.isfinite(z.grad[2]).all()


def test_internal_gradient_matches_finite_differences(internal_target):
    t = internal_target
    z = t.base_location()[None].repeat(2, 1)
    z[1] += 0.01 * torch.randn(60, generator=torch.Generator().manual_seed(4))
    d = t.internal.dihedral_idx  # several dihedrals sit near ±π: wrap back into (−π, π]
    z[:, d] = torch.atan2(torch.sin(z[:, d]), torch.cos(z[:, d]))
    assert t.internal.in_support(z).all()
    _, g = t.energy_and_grad(z)
    v = torch.randn(2, 60, generator=torch.Generator().manual_seed(5))
    v /= v.norm(dim=1, keepdim=True)
    h = 1e-6
    fd = (t.energy(z + h * v) - t.energy(z - h * v)) / (2 * h)
    assert torch.allclose(fd, (g * v).sum(1), rtol=1e-5, atol=0)


def test_dihedrals_are_relative_to_the_shipped_structure(internal_target):
    t = internal_target
    ic, d = t.internal, t.internal.dihedral_idx
    shipped = torch.from_numpy(_shipped_nm())[None]
    assert torch.allclose(t.to_coordinates(shipped)[0, d], torch.zeros(len(d)), atol=1e-9)
    # the minimum's dihedrals sit well inside (−π, π], away from the support's edge
    assert t.base_location()[d].abs().max() < 2.0
    # round trip through positions, and φ of the positions is the absolute one
    rng = np.random.default_rng(5)
    pos = torch.from_numpy(_shipped_nm() + 0.01 * rng.standard_normal((3, 22, 3)))
    z = t.to_coordinates(pos)
    assert torch.allclose(t.to_coordinates(t.positions(z)), z, atol=1e-9)
    phi_abs = ic.to_internal(pos.reshape(3, 66))[0][:, ic.dihedral_index(4)]
    phi_rel = z[:, ic.dihedral_index(4)]
    diff = torch.remainder(phi_abs - phi_rel - t.dihedral_offset[ic.dihedral_index(4)], 2 * math.pi)
    assert torch.allclose(torch.minimum(diff, 2 * math.pi - diff), torch.zeros(3), atol=1e-9)


def test_a_batch_wholly_outside_the_support_has_inf_energy_and_zero_gradient(internal_target):
    t = internal_target
    z = t.base_location().repeat(2, 1)
    z[:, t.internal.bond_idx[0]] = -0.1
    z[1, 0] = math.nan
    energy, grad = t.energy_and_grad(z)
    assert torch.isinf(energy).all() and (energy > 0).all()
    assert torch.equal(grad, torch.zeros_like(grad))
