"""Reverse diffusion Monte Carlo (rdMC): the reverse OU process with scores from inner MCMC.

Huang, Dong, Hao, Ma & Zhang, "Reverse diffusion Monte Carlo", ICLR 2024
(arXiv:2307.02037). The Ornstein–Uhlenbeck process dX = −X dt + √2 dB started
at X₀ ~ p has the marginals p_t, with p_t → N(0, I). Its time reversal
Y_s = X_{T−s} solves

    dY = (Y + 2 ∇log p_{T−s}(Y)) ds + √2 dB,

and the score needs no training: with the posterior of the start given X_t,

    q_t(x₀ | x_t) ∝ p(x₀) N(x_t; e^{−t} x₀, (1 − e^{−2t}) I),

Tweedie's formula gives ∇log p_t(x_t) = (e^{−t} E_{q_t}[x₀] − x_t) / (1 − e^{−2t}),
a mean that an inner sampler estimates (:func:`boltzbench.mcmc.denoise.posterior_mean`:
MALA chains on q_t; the paper's inner loop is ULA, MALA removes its bias).

Warm starts: at every outer step the ``n_chains`` inner chains of every sample
start afresh from importance sampling: ``n_proposals`` draws of
N(e^{t} x_t, (e^{2t} − 1) I) per sample, pooled over blocks of ``pool`` samples by
the balance heuristic and resampled by their weights
(:func:`boltzbench.mcmc.denoise.importance_start`), then n_burnin + n_draws MALA
steps. Why, measured on the 4-mode 2-D mixture of tests/test_rdmc.py (800
samples, 40 steps, T = 3, exact posterior means of the mixture in closed form to
compare): chains continued across outer steps from one warm start (the previous
scheme) gave mode shares 0.17/0.49/0.20/0.14. Two causes: (b) at t = T, s = 20 in
the process's coordinates, so 32 (and 1024) proposals of one sample rarely land
in a mode and 59 % (50 %) of the samples had all 4 chains in one mode, chosen by
the basins' geometry; (a) continued MALA chains do not cross between modes, so
even chains started from exact draws of q_T could not follow q_t's mode weights
as the tilt moved (shares 0.19/0.15/0.55/0.11). The outer integrator (c) was not
the cause: the exact score gave 0.23/0.24/0.29/0.24 at 40 steps. The score error
that decides the shares is at t ≈ 0.25–2 (the exact score above t = 0.25 and
chains below gave 0.26/0.26/0.26/0.22). Fresh per-sample importance starts at
every step were not enough (32 proposals: up to 0.32; 256: 0.24–0.26 at 4 times
the cost); pooling 64 samples' proposals gives every sample G · n_proposals
draws at no further evaluations and shares within 0.25 ± 0.035 (seeds 2–4).
Reweighting continued chains by N(x; c′, s′²)/N(x; c, s²) and resampling them
(SMC across steps) fixes (a) but not (b), and was not kept. Still measured: 21 %
of the samples lie farther than 4 std from every centre (exact: 0.03 %), with
the exact score too (400 steps: 0.1 %): the uniform steps' last one adds noise
of std √(e^{2η} − 1) = 0.4 against the modes' 0.16, a blur the W2 shows.

The sampler here: every one of the n samples is an outer particle, started from
N(0, I) (the paper's p_∞; its bias on p_T is e^{−T}), and moved by ``n_steps``
steps of η = T / n_steps from t_k = T − kη to t_{k+1}, the score v_k frozen at t_k
and the linear part integrated exactly (the exponential integrator of the paper):

    x_{k+1} = e^{η} x_k + 2 (e^{η} − 1) v_k + √(e^{2η} − 1) ξ,   ξ ~ N(0, I).

Coordinates: the process runs on u = (x − loc) / init_scale (loc the target's
base location, or 0), so that its stationary law is N(loc, init_scale² I) in x;
the target is evaluated at loc + init_scale · u (gradients scaled by init_scale).

Costs: every sample costs n_proposals + n_chains · (1 + n_burnin + n_draws)
evaluations per outer step (the warm start's proposals, then each chain's start
and steps) and one final evaluation for its energy: sample_cost(n) = n · (1 +
n_steps · (n_proposals + n_chains · (1 + n_burnin + n_draws))). Under an evaluation budget
:meth:`RDMC.plan_budget` chooses ``n_steps``; the run stops before an outer step
the budget cannot pay for (keeping the n final evaluations), and returns the
particles where they are (at t > 0: ``t_stop`` says where).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from boltzbench.checkpoint import NO_CHECKPOINT, Checkpoint
from boltzbench.core import (
    BudgetPlan,
    SampleSet,
    affordable,
    remaining_budget,
    resolve_dtype,
    shortfall_note,
    start_location,
)
from boltzbench.mcmc.denoise import Inner, posterior_mean
from boltzbench.methods.base import Method
from boltzbench.targets.base import Target

__all__ = ["RDMC", "ScaledTarget", "exponential_step"]


class ScaledTarget:
    """E and ∇E of ``target`` in the coordinates u = (x − loc) / scale (every call counted
    by ``target``): E_u(u) = E(loc + scale · u), ∇E_u = scale · ∇E."""

    def __init__(self, target: Target, loc: Tensor, scale: float):
        self.target, self.loc, self.scale = target, loc, scale

    def x(self, u: Tensor) -> Tensor:
        """loc + scale · u."""
        return self.loc + self.scale * u

    def energy(self, u: Tensor) -> Tensor:
        return self.target.energy(self.x(u))

    def energy_and_grad(self, u: Tensor) -> tuple[Tensor, Tensor]:
        energy, grad = self.target.energy_and_grad(self.x(u))
        return energy, self.scale * grad


def exponential_step(x: Tensor, score: Tensor, eta: float, generator: torch.Generator) -> Tensor:
    """One step of dY = (Y + 2 v) ds + √2 dB over η with v frozen, integrated exactly:
    e^{η} x + 2 (e^{η} − 1) v + √(e^{2η} − 1) ξ."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return math.exp(eta) * x + 2 * math.expm1(eta) * score + math.sqrt(math.expm1(2 * eta)) * noise


class RDMC(Method):
    """Reverse diffusion Monte Carlo (Huang, Dong, Hao, Ma & Zhang, ICLR 2024).

    Parameters
    ----------
    n_steps
        Outer steps of the reverse OU process from t = T to 0 (η = T / n_steps).
    T
        Terminal time of the forward OU process; the start N(0, I) differs from
        p_T by O(e^{−T}).
    n_chains
        Inner MALA chains per sample and outer step.
    n_proposals
        Importance-sampling proposals per sample and outer step (warm start of the
        inner chains; 0 starts them at e^{t} x_t).
    pool
        Samples whose proposals are pooled for every sample's warm start (the
        balance heuristic of :func:`boltzbench.mcmc.denoise.importance_start`; 1:
        each sample its own n_proposals). Costs no evaluations: ~pool · n_proposals
        · dim flops per sample and step.
    n_burnin
        Discarded inner MALA steps per chain.
    n_draws
        Kept inner MALA steps per chain: the score averages n_chains · n_draws draws.
    step_size
        Inner MALA step size for p alone, in units of x (the chains on q_t use
        (ε⁻² + (e^{2t} − 1)⁻¹)^{−1/2} in the process's coordinates).
    init_scale
        The OU's stationary standard deviation in units of x (see the module docstring).
    dtype
        "float32" or "float64".

    Under an evaluation budget, the budget decides ``n_steps`` (:meth:`plan_budget`).
    """

    fast_params = {"n_steps": 8, "n_chains": 4, "n_proposals": 8, "n_burnin": 1, "n_draws": 2}
    budget_settings = ("n_steps",)

    def __init__(
        self,
        n_steps: int = 50,
        T: float = 2.0,
        n_chains: int = 4,
        n_proposals: int = 32,
        n_burnin: int = 8,
        n_draws: int = 8,
        step_size: float = 0.5,
        init_scale: float = 1.0,
        pool: int = 64,
        dtype: str = "float32",
    ):
        if n_steps < 1 or not T > 0 or not init_scale > 0:
            raise ValueError("rdmc: need n_steps >= 1, T > 0 and init_scale > 0")
        resolve_dtype(dtype)
        self.n_steps, self.T, self.init_scale, self.dtype = n_steps, T, init_scale, dtype
        self.n_chains, self.n_proposals = n_chains, n_proposals
        self.n_burnin, self.n_draws, self.step_size = n_burnin, n_draws, step_size
        self.pool = pool
        self.inner.check()

    @property
    def inner(self) -> Inner:
        """The inner sampler of q_t in the process's coordinates."""
        eps = self.step_size / self.init_scale
        inner = (self.n_chains, self.n_proposals, self.n_burnin, self.n_draws, eps, self.pool)
        return Inner(*inner)

    def _step_cost(self) -> int:
        """Evaluations per sample and outer step: n_proposals + n_chains · (1 + n_burnin
        + n_draws)."""
        return self.inner.start_cost() + self.inner.chain_cost()

    def sample_cost(self, n: int) -> int:
        """n · (1 + n_steps · (n_proposals + n_chains · (1 + n_burnin + n_draws)))."""
        return n * (1 + self.n_steps * self._step_cost())

    def plan_budget(self, budget: int, n_samples: int) -> BudgetPlan:
        """n_steps = ⌊(budget − n) / (n · (n_proposals + n_chains · (1 + n_burnin +
        n_draws)))⌋ outer steps; ValueError when the budget cannot pay for one step and
        the final evaluations."""
        per_step = n_samples * self._step_cost()
        steps = (budget - n_samples) // per_step
        if steps < 1:
            raise ValueError(
                f"RDMC: a budget of {budget} evaluations cannot pay for one outer step "
                f"({per_step}) and the final energies ({n_samples})"
            )
        plan = type(self)(**{**self.get_params(), "n_steps": steps})
        planned = plan.sample_cost(n_samples)
        why = f"an outer step costs {per_step} evaluations; whole steps leave the rest"
        return BudgetPlan(plan, {"n_steps": steps}, planned, shortfall_note(planned, budget, why))

    def sample(
        self,
        target: Target,
        n: int,
        generator: torch.Generator,
        checkpoint: Checkpoint = NO_CHECKPOINT,
    ) -> SampleSet:
        """Run the reverse process for ``n`` particles (see the module docstring); saves
        ``{u, accept}`` and the generator every ``checkpoint.every`` outer steps."""
        dtype = resolve_dtype(self.dtype)
        scaled = ScaledTarget(target, start_location(target, dtype), self.init_scale)
        u = torch.randn(n, target.dim, generator=generator, dtype=dtype)
        step, accept = 0, torch.zeros((), dtype=dtype)
        saved = checkpoint.restore()
        if saved is not None:
            step, s = saved
            u, accept = s["u"], s["accept"]
            generator.set_state(s["generator"])
        eta = self.T / self.n_steps
        while step < self.n_steps and self._affordable(target, n):
            t = self.T - step * eta
            u, acc = self._outer_step(scaled, u, t, eta, generator)
            step, accept = step + 1, accept + acc
            if checkpoint.due(step) and step < self.n_steps:
                state = {"u": u, "accept": accept}
                checkpoint.save(step, {**state, "generator": generator.get_state()})
        return self._sample_set(target, scaled, u, step, accept)

    def _affordable(self, target: Target, n: int) -> bool:
        """Whether the budget pays for an outer step and the n final evaluations;
        marks the target exhausted when not."""
        left = remaining_budget(target)
        need = n * (1 + self._step_cost())
        if left is None or left >= need:
            return True
        target.exhausted = True
        return False

    def _outer_step(
        self,
        scaled: ScaledTarget,
        u: Tensor,
        t: float,
        eta: float,
        generator: torch.Generator,
    ) -> tuple[Tensor, Tensor]:
        """Estimate the score at time ``t`` (inner chains from a fresh pooled warm
        start) and take one exponential-integrator step; (u, acceptance)."""
        s = math.sqrt(math.expm1(2 * t))  # q_t(· | u) = π(· | e^t u, s)
        center = math.exp(t) * u
        fns = (scaled.energy, scaled.energy_and_grad)
        mean, acceptance, _ = posterior_mean(*fns, center, s, self.inner, generator)
        score = (math.exp(-t) * mean - u) / -math.expm1(-2 * t)
        return exponential_step(u, score, eta, generator), acceptance

    def _sample_set(
        self, target: Target, scaled: ScaledTarget, u: Tensor, step: int, accept: Tensor
    ) -> SampleSet:
        """The particles in x with their energies (as many as the budget pays for)."""
        x = scaled.x(u)[: affordable(target, u.shape[0])]
        with torch.no_grad():
            energy = target.energy(x)
        attrs = {
            "n_steps": step,
            "n_steps_planned": self.n_steps,
            "t_stop": self.T * (1 - step / self.n_steps),
            "acceptance": float(accept / step) if step else math.nan,
        }
        return SampleSet(x=x, energy=energy, attrs=attrs)
