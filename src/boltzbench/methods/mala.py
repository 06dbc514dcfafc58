"""MALA as a benchmark method: parallel chains with warm-up, burn-in and thinning.

``n_chains`` chains start from N(0, init_scale² I) and run the MALA kernel of
:mod:`boltzbench.mcmc.mala` in three phases:

1. warm-up, ``n_warmup`` steps: each chain adapts its own step size towards
   ``target_accept`` by dual averaging on log ε (Hoffman & Gelman 2014), and
   keeps the averaged step size ε̄ afterwards;
2. burn-in, ``n_burnin`` steps at the fixed step sizes, discarded;
3. sampling: K = ⌈n / n_chains⌉ kept draws per chain, one every ``thinning``
   steps. The n returned samples are the first n of the draws ordered
   draw-major (draw 1 of every chain, then draw 2, …).

Every step costs one energy-and-gradient evaluation per chain, so a call costs
n_chains · (1 + n_warmup + n_burnin + K · thinning) of each, all through the
target passed to :meth:`MALA.sample` (and so counted by a CountingTarget).

Diagnostics are computed on all n_chains × K kept draws: ``ess_per_dim`` is the
autocorrelation ESS of Vehtari et al. 2021 (:mod:`boltzbench.mcmc.diagnostics`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from boltzbench.mcmc import adaptation, diagnostics, mala, proposal
from boltzbench.methods.base import Method, SampleSet, resolve_dtype
from boltzbench.targets.base import Target

__all__ = ["MALA"]

#: one kernel step at a given step size, (state, step_size) -> (state, info)
Advance = Callable[[proposal.State, Tensor], tuple[proposal.State, mala.Info]]


class MALA(Method):
    """Metropolis-adjusted Langevin algorithm over parallel chains (Roberts & Tweedie 1996).

    Parameters
    ----------
    n_chains
        Number of independent chains.
    n_warmup
        Steps of step-size adaptation per chain (discarded).
    n_burnin
        Further steps at the adapted step size (discarded).
    thinning
        Steps between kept draws.
    step_size
        Initial step size ε₀ (units of x): the proposal is
        y = x − (ε²/2) ∇E(x) + ε ξ.
    target_accept
        Acceptance rate aimed at during warm-up (0.574: Roberts & Rosenthal 1998).
    init_scale
        Chains start from N(0, init_scale² I).
    dtype
        "float32" or "float64": the dtype of positions (the target should match).
    """

    #: small settings for the conformance suite (CI)
    fast_params = {"n_chains": 8, "n_warmup": 50, "n_burnin": 10, "thinning": 1}

    def __init__(
        self,
        n_chains: int = 64,
        n_warmup: int = 500,
        n_burnin: int = 200,
        thinning: int = 5,
        step_size: float = 0.1,
        target_accept: float = 0.574,
        init_scale: float = 1.0,
        dtype: str = "float32",
    ):
        if n_chains < 1 or thinning < 1 or n_warmup < 0 or n_burnin < 0:
            raise ValueError("need n_chains >= 1, thinning >= 1, n_warmup >= 0, n_burnin >= 0")
        if not (step_size > 0 and 0 < target_accept < 1):
            raise ValueError("need step_size > 0 and 0 < target_accept < 1")
        resolve_dtype(dtype)
        self.n_chains, self.n_warmup, self.n_burnin = n_chains, n_warmup, n_burnin
        self.thinning, self.step_size, self.target_accept = thinning, step_size, target_accept
        self.init_scale, self.dtype = init_scale, dtype

    def n_steps(self, n: int) -> int:
        """Kernel steps per chain for ``n`` samples (each one evaluation per chain)."""
        return self.n_warmup + self.n_burnin + math.ceil(n / self.n_chains) * self.thinning

    def sample(self, target: Target, n: int, generator: torch.Generator) -> SampleSet:
        """Run the chains and return the ``n`` draws (see the module docstring)."""
        dtype = resolve_dtype(self.dtype)
        potential = proposal.potential_from(target.energy_and_grad)
        x0 = torch.randn(self.n_chains, target.dim, generator=generator, dtype=dtype)
        state = mala.init(self.init_scale * x0, potential)
        step_size = torch.full((self.n_chains,), self.step_size, dtype=dtype)
        n_draws = math.ceil(n / self.n_chains)
        kernel = mala.build_kernel()
        with tqdm(total=self.n_steps(n), desc="mala", disable=None, leave=False) as bar:

            def advance(state, step_size):
                bar.update()
                return kernel(generator, state, potential, step_size)

            state, step_size = warmup(advance, state, step_size, self.n_warmup, self.target_accept)
            state, _, accept_burn = run(advance, state, step_size, self.n_burnin, thinning=0)
            state, draws, accept = run(
                advance, state, step_size, n_draws * self.thinning, self.thinning
            )
        acceptance = (accept_burn + accept) / (self.n_burnin + n_draws * self.thinning)
        return self._sample_set(draws, n, acceptance, step_size)

    def _sample_set(
        self, draws: proposal.State, n: int, acceptance: Tensor, step_size: Tensor
    ) -> SampleSet:
        """The first ``n`` draws (``draws`` fields of shape (K, chains, ...)) with diagnostics."""
        dim = draws.position.shape[-1]
        chains_first = draws.position.transpose(0, 1)
        ess = diagnostics.effective_sample_size(chains_first)
        rhat = (
            diagnostics.split_rhat(chains_first) if chains_first.shape[1] >= 4 else ess * math.nan
        )
        attrs = {
            "acceptance": float(acceptance.mean()),
            "step_size": float(step_size.mean()),
            "n_chains": self.n_chains,
            "n_steps": self.n_steps(n),
            "n_draws_per_chain": draws.position.shape[0],
            "n_samples": n,
            "ess_min": float(ess.min()),
            "ess_mean": float(ess.mean()),
            "rhat_max": float(rhat.max()),
        }
        return SampleSet(
            x=draws.position.reshape(-1, dim)[:n],
            energy=draws.energy.reshape(-1)[:n],
            diagnostics={
                "ess_per_dim": ess,
                "rhat_per_dim": rhat,
                "acceptance_per_chain": acceptance,
                "step_size_per_chain": step_size,
            },
            attrs=attrs,
        )


def warmup(
    advance: Advance, state: proposal.State, step_size: Tensor, n_steps: int, target_accept: float
) -> tuple[proposal.State, Tensor]:
    """``n_steps`` steps adapting each chain's step size by dual averaging.

    Returns the last state and the averaged step sizes ε̄, shape ``(chains,)``.
    """
    da = adaptation.dual_averaging_init(step_size)
    for _ in range(n_steps):
        state, info = advance(state, torch.exp(da.log_step_size))
        da = adaptation.dual_averaging_update(da, info.acceptance_rate, target_accept)
    return state, adaptation.dual_averaging_final(da)


def run(
    advance: Advance, state: proposal.State, step_size: Tensor, n_steps: int, thinning: int
) -> tuple[proposal.State, proposal.State | None, Tensor]:
    """``n_steps`` steps keeping every ``thinning``-th state (none when ``thinning`` is 0).

    Returns the last state, the kept states stacked along a new first axis
    (K, chains, ...) or None, and the summed acceptance rates per chain.
    """
    kept, accept = [], torch.zeros_like(step_size)
    for i in range(n_steps):
        state, info = advance(state, step_size)
        accept = accept + info.acceptance_rate.to(accept)
        if thinning and (i + 1) % thinning == 0:
            kept.append(state)
    stacked = type(state)(*map(torch.stack, zip(*kept, strict=True))) if kept else None
    return state, stacked, accept
