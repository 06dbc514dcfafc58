"""MCMC kernels batched over chains in torch, in the shape of blackjax.

Each algorithm module (:mod:`~boltzbench.mcmc.mala`, :mod:`~boltzbench.mcmc.hmc`,
:mod:`~boltzbench.mcmc.underdamped`, whose state also carries the momenta) has
the same surface: a ``State`` (a NamedTuple caching position, energy and
gradient), an ``Info``, ``init(position, potential)`` and
``build_kernel(...) -> step(generator, state, potential, *numeric) -> (state, info)``.
Structural choices go to ``build_kernel``, numeric parameters (step size,
number of leapfrog steps) to ``step``. Shared parts live in
:mod:`~boltzbench.mcmc.proposal` (state, potentials, Metropolis accept/reject)
and :mod:`~boltzbench.mcmc.integrators` (leapfrog). Step-size adaptation is in
:mod:`~boltzbench.mcmc.adaptation`, ESS and R̂ in :mod:`~boltzbench.mcmc.diagnostics`.

The loops live beside the kernels: :mod:`~boltzbench.mcmc.runner` runs chains of
any kernel (warm-up, burn-in, thinning, budget stop, checkpoints) for MALA,
parallel tempering (:mod:`~boltzbench.mcmc.tempering`), flow-proposal MCMC and
the MCMC reference (:mod:`~boltzbench.mcmc.reference`);
:mod:`~boltzbench.mcmc.annealing` is the SMC/AIS engine (tempered states, paths,
schedules, resampling, the annealing loop) of SMC and FAB;
:mod:`~boltzbench.mcmc.denoise` estimates posterior means under a Gaussian
observation (the scores of training-free diffusion samplers such as rdMC).

Shapes: positions ``(chains, dim)``, per-chain quantities ``(chains,)``.
Energies are reduced (k_BT): p(x) ∝ exp(−E(x)).
"""

from boltzbench.mcmc import (
    adaptation,
    annealing,
    denoise,
    diagnostics,
    hmc,
    integrators,
    mala,
    proposal,
    reference,
    runner,
    tempering,
    underdamped,
)
from boltzbench.mcmc.proposal import State, potential_from

__all__ = [
    "adaptation",
    "annealing",
    "denoise",
    "diagnostics",
    "hmc",
    "integrators",
    "mala",
    "proposal",
    "reference",
    "runner",
    "tempering",
    "underdamped",
    "State",
    "potential_from",
]
