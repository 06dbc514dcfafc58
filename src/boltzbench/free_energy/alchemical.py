"""The λ-path from vacuum to OBC2 implicit solvent for alanine dipeptide.

U_λ(x) = U_vac(x) + λ·U_GB(x), where U_vac is the vacuum force field (AMBER
ff96, no cutoff, no constraints: :func:`boltzbench.md.system.build_system`)
and U_GB is the energy of OpenMM's ``GBSAOBCForce`` (OBC2 generalized Born
plus the ACE surface-area term) that ``implicitSolvent=OBC2`` adds. The
implicit system's other forces are the vacuum ones, so U_1 is the implicit
system's energy and U_0 the vacuum one (:func:`end_state_errors` checks both).

The scaling is a ``CustomCVForce`` with energy ``lambda_solvent * gb`` whose
one collective variable ``gb`` is the ``GBSAOBCForce``, put in its own force
group so that each frame's (U_vac, U_GB) are read off one Context:
:func:`components`. Reduced energies at any λ then follow without another
energy evaluation, u_λ(x) = (U_vac(x) + λ·U_GB(x)) / (k_B T).
"""

from __future__ import annotations

import copy

import numpy as np
import openmm
import openmm.unit as unit

from boltzbench.md.system import AldpSystem, build_system

__all__ = [
    "LAMBDA",
    "GB_GROUP",
    "lambda_system",
    "components",
    "set_lambda",
    "end_state_errors",
]

#: the name of the Context's global parameter λ
LAMBDA = "lambda_solvent"
#: the force group of the scaled solvent force (every other force is in group 0)
GB_GROUP = 1


def lambda_system(lambda_: float = 1.0) -> AldpSystem:
    """The implicit-solvent system with its ``GBSAOBCForce`` scaled by the parameter λ.

    Returns an :class:`~boltzbench.md.system.AldpSystem` whose system has every
    vacuum force in group 0 and one ``CustomCVForce`` (group 1, energy
    ``lambda_solvent * gb``) holding the ``GBSAOBCForce``; ``lambda_`` is the
    parameter's default value.
    """
    aldp = build_system("implicit", "none")
    system = aldp.system
    gb_index = [i for i, f in enumerate(system.getForces()) if isinstance(f, openmm.GBSAOBCForce)]
    if len(gb_index) != 1:
        raise RuntimeError(f"expected one GBSAOBCForce, found {len(gb_index)}")
    gb = copy.deepcopy(system.getForce(gb_index[0]))
    system.removeForce(gb_index[0])
    for force in system.getForces():
        force.setForceGroup(0)
    scaled = openmm.CustomCVForce(f"{LAMBDA}*gb")
    scaled.addGlobalParameter(LAMBDA, float(lambda_))
    scaled.addCollectiveVariable("gb", gb)
    scaled.setForceGroup(GB_GROUP)
    system.addForce(scaled)
    return AldpSystem(system, aldp.topology, aldp.positions_nm, "lambda", "none")


def _scaled_force(system: openmm.System) -> openmm.CustomCVForce:
    return next(f for f in system.getForces() if isinstance(f, openmm.CustomCVForce))


def components(context: openmm.Context) -> tuple[float, float]:
    """(U_vac, U_GB) in kJ/mol at the context's positions (U_GB unscaled by λ)."""
    state = context.getState(getEnergy=True, groups={0})
    u_vac = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    cv = _scaled_force(context.getSystem()).getCollectiveVariableValues(context)
    return float(u_vac), float(cv[0])


def set_lambda(context: openmm.Context, lambda_: float) -> None:
    """Set λ on a context of :func:`lambda_system`."""
    context.setParameter(LAMBDA, float(lambda_))


def _energy(system: openmm.System, positions_nm: np.ndarray, lambda_: float | None = None):
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    if lambda_ is not None:
        set_lambda(context, lambda_)
    context.setPositions(positions_nm)
    state = context.getState(getEnergy=True)
    return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def end_state_errors(positions_nm: np.ndarray) -> dict[str, float]:
    """Relative errors |U_λ − U_ref| / |U_ref| at λ = 0 (vacuum) and λ = 1 (implicit).

    ``positions_nm``: (F, 22, 3). Returns the largest error over the frames of
    each end, keys ``"vacuum"`` and ``"implicit"``, on the Reference platform.
    """
    path = lambda_system().system
    refs = {"vacuum": build_system("vacuum").system, "implicit": build_system("implicit").system}
    out = {}
    for name, lam in (("vacuum", 0.0), ("implicit", 1.0)):
        errs = [
            abs(_energy(path, p, lam) - (ref := _energy(refs[name], p))) / abs(ref)
            for p in positions_nm
        ]
        out[name] = max(errs)
    return out
