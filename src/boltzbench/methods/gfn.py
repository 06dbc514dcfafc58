"""GFlowNet diffusion samplers: trajectory balance, sub-trajectory balance, VarGrad.

A diffusion sampler viewed as a GFlowNet (Lahlou et al. 2023; Zhang et al. 2024;
Sendera et al. 2024). The state space is (x, t), t_k = k h with h = 1/N
(N = ``n_steps``); a trajectory τ = (X_0, X_1, …, X_N) starts at X_0 = loc (the
target's base location, a Dirac) and the *forward policy* is the Euler–Maruyama
step of dX = f_θ(X, t) dt + σ dW,

    P_F(X_{k+1} | X_k) = N(X_{k+1}; X_k + h f_θ(X_k, t_k), σ² h I),

with f_θ the :class:`~boltzbench.methods.diffusion_util.ControlNet` (with
``langevin=True`` the Langevin-parametrized drift f = NN₁(x, t) + NN₂(t) ⊙ ∇log p̃(x),
the target's score clipped to ±``score_clip``). The *backward policy* is fixed:
the Brownian bridge of σW pinned at X_0 = loc, i.e. the exact time reversal of the
zero-drift forward process,

    P_B(X_k | X_{k+1}) = N(X_k; loc + (k / (k + 1)) (X_{k+1} − loc), σ² h k / (k + 1) I),

for k = 1..N−1 (P_B(X_0 | X_1) is the Dirac at loc). The reward is p̃ = exp(−E).
A trajectory's log importance weight is

    log w(τ) = −E(X_N) + log P_B(τ | X_N) − log P_F(τ),                  (1)

with E_{P_F}[w] = Z exactly for any drift and any N (P_B(· | x) is a normalized
density of the path given its end). With f = 0, log P_B − log P_F =
−log N(X_N; loc, σ² I), the weight of PIS's reference process.

Losses (``loss``), each on a batch of trajectories that carry no gradient (the
policy's density is re-evaluated on them, so they may come from any behaviour):

``"tb"``
    trajectory balance (Malkin et al. 2022, eq. 14) with a learned scalar log Z_θ:
    mean over the batch of (log Z_θ + log P_F(τ) − log P_B(τ | X_N) + E(X_N))².
    At the optimum log Z_θ = log Z and P_F is the exact sampler.
``"vargrad"``
    the batch variance of log w (1): TB with log Z_θ replaced by the batch mean
    (Richter et al. 2020, "VarGrad"; the log-variance loss of Richter & Berner
    2023; Sendera et al. 2024's "TB-VarGrad"); no log Z_θ.
``"subtb"``
    sub-trajectory balance with a learned flow (Madan et al. 2023, eq. 8; DGFS,
    Zhang et al. 2024): with log F_0 = log Z_θ, log F_k = F_θ(X_k, t_k) for
    0 < k < N (an MLP of x and the time embedding) and the terminal flow fixed to
    log F_N = −E(X_N), the loss is

        Σ_{0≤i<j≤N} λ^{j−i} (log F_i + Σ_{k=i}^{j−1} [log P_F − log P_B]_k − log F_j)²
        / Σ_{0≤i<j≤N} λ^{j−i},

    averaged over the batch (``subtb_lambda`` = λ; λ → ∞ is TB, λ → 0 detailed
    balance).

    ``flow_parametrization`` chooses how F_θ enters log F_k, 0 < k < N:
    ``"plain"``: log F_k = F_θ(X_k, t_k). ``"forward_looking"``: the learned flow is
    the residual of a known interpolation between the reference process's marginal
    and the reward,

        log F_k(x) = F_θ(x, t_k) + t_k (−E(x)) + (1 − t_k) log N(x; loc, σ² t_k I),   (2)

    N(loc, σ² t_k I) being the marginal at t_k of the reference process σW from the
    Dirac at loc (the zero-drift policy). This is DGFS's way of feeding the
    intermediate energies into SubTB (Zhang et al. 2024; the form pinned from the
    authors' code, ``fl_inter_logr``, the paper's text not being at hand), the
    forward-looking (FL) trick of Pan et al. 2023 (F(s) = F̃(s) R(s) with an
    intermediate reward) carried over to diffusion samplers, and the FL-SubTB of
    Sendera et al. 2024 (``partial_energy`` in their code, the same interpolation).
    Both codes also put the term on k = 0 with the reference variance floored at
    one step's; here X_0 is the Dirac at loc, the term there is a constant, and
    log F_0 = log Z_θ is kept so that log Z_θ still estimates log Z. (2) costs E at
    X_1..X_{N−1}: N − 1 energy evaluations per trajectory, none with
    ``langevin_preconditioning`` (the energy-and-gradient evaluations of the drift's
    score already give them). Rows with E = +∞ at any state are left out of the loss.

Training (Sendera et al. 2024, "On diffusion models for amortized inference:
benchmarking and improving stochastic control and sampling", NeurIPS, Sec. 3–4):

* *off-policy exploration*: forward trajectories are simulated with the step
  noise widened to σ√h · √(1 + e²), e = ``exploration`` decaying linearly to 0
  over the first ``exploration_decay`` fraction of ``n_iter``, and their loss is
  evaluated under the on-policy densities above;
* *replay buffer and local search* (``replay``): iterations alternate between an
  on-policy-style forward batch (its terminal samples go into a FIFO buffer of
  ``buffer_size`` rows with their energies) and a *backward* batch: X_N drawn from
  the buffer (``priority``: ``"rank"``, weight ∝ 1 / (10⁻² M + rank of E) over the
  M buffered rows, as in Sendera et al.; or ``"uniform"``), the trajectory drawn
  from P_B. With ``local_search``, every ``ls_every``-th backward iteration first
  draws ``batch_size`` buffered rows, runs ``ls_steps`` MALA steps on them (step
  ε adapted towards acceptance 0.574, ×1.05 or ÷1.05 after each step) and adds
  the end states to the buffer.

Costs, all through the target passed (so a CountingTarget counts them): a
forward trajectory takes one energy evaluation at X_N, plus one
energy-and-gradient evaluation per step with ``langevin_preconditioning`` (the score at
X_0..X_{N−1}); a backward trajectory takes only those N score evaluations (its
reward is the buffered energy); the forward-looking flow (2) adds N − 1 energy
evaluations (at X_1..X_{N−1}) to every training trajectory, forward or backward,
without ``langevin_preconditioning`` and none with it; a local search takes
(``ls_steps`` + 1) energy-and-gradient evaluations per chain. Sampling never
evaluates the flow. :meth:`GFN.training_cost` is their
exact sum for a given ``n_iter``.

Evaluation budget (:meth:`GFN.plan_budget`): the budget decides ``n_iter`` only:
the most iterations whose exact cost, plus ``sample_cost(n_samples)``, fits in it.
Under the cap itself training stops before the first iteration the budget
cannot pay for, and sampling simulates as many paths as the rest allows.

Sampling: on-policy forward trajectories (no exploration), x = X_N with log w (1);
``attrs`` holds ``log_Z_hat`` = log mean w (importance-weighted), ``log_Z_elbo`` =
mean log w (≤ log_Z_hat), ``ess_kish`` and ``log_Z_learned`` (log Z_θ for tb/subtb).

References
----------
Pan, Malkin, Zhang & Bengio 2023, "Better training of GFlowNets with local credit and
incomplete trajectories" (forward-looking GFlowNets), ICML, arXiv:2302.01687.
Malkin, Jain, Bengio, Sun & Bengio 2022, "Trajectory balance: improved credit
assignment in GFlowNets", NeurIPS, arXiv:2201.13259.
Madan et al. 2023, "Learning GFlowNets from partial episodes for improved
convergence and stability", ICML, arXiv:2209.12782.
Lahlou et al. 2023, "A theory of continuous generative flow networks", ICML,
arXiv:2301.12594.
Zhang, Chen, Liu, Courville & Bengio 2024, "Diffusion generative flow samplers:
improving learning signals through partial trajectory optimization" (DGFS), ICLR,
arXiv:2310.02679.
Sendera, Kim, Mittal, Lemos, Scimeca, Rector-Brooks, Adam, Bengio & Malkin 2024,
"On diffusion models for amortized inference: benchmarking and improving
stochastic control and sampling", NeurIPS, arXiv:2402.05098.
Richter, Boustati, Nüsken, Ruiz & Akyildiz 2020, "VarGrad: a low-variance
gradient estimator for variational inference", NeurIPS, arXiv:2010.10436.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from boltzbench.core import (
    BUDGET_SPEND_MIN,
    DTYPES,
    BudgetPlan,
    affordable,
    start_location,
)
from boltzbench.estimators import log_mean_exp
from boltzbench.mcmc import mala
from boltzbench.mcmc.proposal import potential_from
from boltzbench.methods.diffusion_util import (
    ControlNet,
    clipped_score,
    masked_log_weights,
    mlp,
    time_embedding,
)
from boltzbench.methods.paths import PathSampler
from boltzbench.methods.training import Objective, Trainer, forked_seed
from boltzbench.targets.base import Target
from boltzbench.targets.counting import BudgetExceeded

__all__ = ["GFN", "GFNModel", "ReplayBuffer", "forward_looking_log_flow", "subtb_weights"]

LOSSES = ("tb", "subtb", "vargrad")
FLOW_PARAMETRIZATIONS = ("plain", "forward_looking")
PRIORITIES = ("rank", "uniform")
#: the rank-prioritized buffer's weight 1 / (RANK_WEIGHT · M + rank) (Sendera et al.)
RANK_WEIGHT = 1e-2
#: MALA acceptance that the local search's step size is adapted towards
LS_ACCEPTANCE = 0.574
LOG_2PI = math.log(2 * math.pi)


def _choice(name: str, value: Any, valid) -> None:
    if value not in valid:
        raise ValueError(f"gfn: unknown {name} {value!r}; valid choices: {', '.join(valid)}")


def subtb_weights(n_steps: int, lam: float) -> Tensor:
    """The SubTB weights λ^{j−i} / Σ_{i'<j'} λ^{j'−i'} for 0 ≤ i < j ≤ N, zero on and below
    the diagonal; shape ``(N + 1, N + 1)``, float64, summing to 1 (Madan et al. 2023)."""
    k = torch.arange(n_steps + 1, dtype=torch.float64)
    gap = k[None, :] - k[:, None]
    log_w = torch.where(gap > 0, gap * math.log(lam), torch.full_like(gap, -math.inf))
    return torch.exp(log_w - torch.logsumexp(log_w.reshape(-1), 0))


def forward_looking_log_flow(
    x: Tensor, energy: Tensor, times: Tensor, loc: Tensor, sigma: float
) -> Tensor:
    """The known part of the forward-looking log flow (2),
    t (−E(x)) + (1 − t) log N(x; loc, σ² t I), float64 ``(K, n)`` for states ``x``
    ``(K, n, dim)``, their energies ``(K, n)`` and times ``t`` ``(K,)`` in (0, 1]
    (Zhang et al. 2024, DGFS; Sendera et al. 2024, FL-SubTB)."""
    t = times.to(torch.float64)[:, None]
    var = sigma**2 * t
    sq = ((x.to(torch.float64) - loc.to(torch.float64)) ** 2).sum(-1)
    log_ref = -0.5 * sq / var - 0.5 * x.shape[-1] * torch.log(2 * math.pi * var)
    return t * -energy.to(torch.float64) + (1 - t) * log_ref


class GFNModel(nn.Module):
    """What the GFlowNet trains: the drift f_θ, the scalar log Z_θ and, for SubTB,
    the flow log F_θ(x, t) (an MLP of x and the time embedding, starting at 0).

    Parameters
    ----------
    dim
        Dimension of x.
    hidden_features
        Hidden widths of the drift (and flow) MLPs.
    langevin
        Langevin-parametrized drift f = NN₁(x, t) + NN₂(t) ⊙ ∇log p̃(x).
    flow
        Build the flow network (the ``subtb`` loss).
    """

    def __init__(self, dim: int, hidden_features: list[int], langevin: bool, flow: bool):
        super().__init__()
        self.net = ControlNet(dim, hidden_features, langevin)
        self.log_z = nn.Parameter(torch.zeros(()))
        emb = time_embedding(torch.zeros(1)).shape[-1]
        self.flow = mlp([dim + emb, *hidden_features, 1]) if flow else None

    def log_flow(self, x: Tensor, emb: Tensor) -> Tensor:
        """log F_θ at ``x`` ``(n, dim)`` and time embedding ``emb`` ``(n, ·)``; ``(n,)``."""
        return self.flow(torch.cat([x, emb], dim=-1)).squeeze(-1)


class _Path(NamedTuple):
    """A batch of trajectories without gradient: states X_0..X_N ``(N + 1, n, dim)``
    float64, the clipped scores at X_0..X_{N−1} ``(N, n, dim)`` (or None),
    E(X_N) ``(n,)`` float64 and E(X_1..X_{N−1}) ``(N − 1, n)`` float64 (or None: not
    evaluated; the Langevin drift's score evaluations give them)."""

    states: Tensor
    scores: Tensor | None
    energy: Tensor
    inner_energy: Tensor | None = None

    def rows(self, keep: Tensor) -> _Path:
        """The trajectories where ``keep`` ``(n,)`` is True."""
        pick = lambda t: None if t is None else t[:, keep]  # noqa: E731
        return _Path(self.states[:, keep], pick(self.scores), self.energy[keep],
                     pick(self.inner_energy))  # fmt: skip


class _Policy:
    """The forward and backward policies bound to a target and a model (see the
    module docstring); states are float64, the networks run in the model's dtype."""

    def __init__(self, model: GFNModel, n_steps: int, sigma: float, loc: Tensor, clip: float):
        self.model, self.n_steps, self.clip, self.sigma = model, n_steps, clip, sigma
        self.dtype = model.log_z.dtype
        self.h = 1.0 / n_steps
        self.step_std = sigma * math.sqrt(self.h)
        times = torch.arange(n_steps + 1, dtype=torch.float64) * self.h
        self.emb = time_embedding(times).to(self.dtype)
        self.loc = loc.to(torch.float64)
        k = torch.arange(n_steps, dtype=torch.float64)
        #: k / (k + 1), the bridge's contraction from X_{k+1} to X_k, shape (N,)
        self.ratio = k / (k + 1)

    def score(self, target: Target, x: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """(E(x) float64 ``(n,)``, clipped ∇log p̃ in the model's dtype ``(n, dim)``) at
        ``x`` (one energy-and-gradient evaluation per row), or (None, None) without
        the Langevin drift."""
        if not self.model.net.langevin:
            return None, None
        energy, grad = target.energy_and_grad(x)
        return energy.to(torch.float64), clipped_score(grad, self.clip, self.dtype)

    def drift(self, k: int, x: Tensor, score: Tensor | None) -> Tensor:
        """f_θ(x, t_k) as float64 ``(n, dim)``."""
        emb = self.emb[k].expand(x.shape[0], -1)
        return self.model.net(x.to(self.dtype), emb, score).to(torch.float64)

    @torch.no_grad()
    def forward(self, target: Target, n: int, generator, explore: float = 0.0) -> _Path:
        """``n`` trajectories from X_0 = loc, step noise σ√h √(1 + explore²)."""
        x = self.loc.expand(n, -1).clone()
        std = self.step_std * math.sqrt(1 + explore**2)
        states, scores, energies = [x], [], []
        for k in range(self.n_steps):
            energy, score = self.score(target, x)
            scores.append(score)
            energies.append(energy)
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
            x = x + self.h * self.drift(k, x, score) + std * noise
            states.append(x)
        if scores[0] is None:
            return _Path(torch.stack(states), None, target.energy(x))
        inner = torch.stack(energies[1:]) if self.n_steps > 1 else x.new_zeros(0, n)
        return _Path(torch.stack(states), torch.stack(scores), target.energy(x), inner)

    @torch.no_grad()
    def backward(self, target: Target, x: Tensor, energy: Tensor, generator) -> _Path:
        """Trajectories ending at ``x`` ``(n, dim)`` drawn from the Brownian bridge P_B
        (E(x) = ``energy`` given, not evaluated); the scores along them are evaluated.
        (The same law as :func:`~boltzbench.methods.diffusion_util.reference_bridge`
        with the PIS scheme, to 1e-15, but that also draws the zero-variance noise of
        X_0, which would shift the generator's stream and so change training.)"""
        states = [x]
        for k in range(self.n_steps - 1, 0, -1):
            r = float(self.ratio[k])
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
            x = self.loc + r * (x - self.loc) + self.step_std * math.sqrt(r) * noise
            states.append(x)
        states.append(self.loc.expand_as(x).clone())
        states = torch.stack(states[::-1])
        if not self.model.net.langevin:
            return _Path(states, None, energy)
        n_steps, n, dim = states[:-1].shape
        energies, flat = self.score(target, states[:-1].reshape(n_steps * n, dim))
        inner = energies.reshape(n_steps, n)[1:]
        return _Path(states, flat.reshape(n_steps, n, dim), energy, inner)

    def log_pf(self, path: _Path) -> Tensor:
        """log P_F(X_{k+1} | X_k) for k = 0..N−1 under the current drift, ``(N, n)``
        float64, differentiable in the model's parameters."""
        states = path.states
        n_steps, n, dim = states[:-1].shape
        width = self.emb.shape[-1]  # explicit sizes: a batch may have no rows left
        emb = self.emb[:-1, None, :].expand(n_steps, n, width).reshape(n_steps * n, width)
        scores = None if path.scores is None else path.scores.reshape(n_steps * n, dim)
        x = states[:-1].reshape(n_steps * n, dim).to(self.dtype)
        f = self.model.net(x, emb, scores).to(torch.float64).reshape(n_steps, n, dim)
        z = (states[1:] - states[:-1] - self.h * f) / self.step_std
        return -0.5 * (z**2).sum(-1) - dim * (math.log(self.step_std) + 0.5 * LOG_2PI)

    def log_pb(self, states: Tensor) -> Tensor:
        """log P_B(X_k | X_{k+1}) for k = 0..N−1 (0 for the Dirac at k = 0), ``(N, n)``."""
        dim = states.shape[-1]
        r = self.ratio[1:, None, None]
        std = self.step_std * torch.sqrt(r)
        z = (states[1:-1] - self.loc - r * (states[2:] - self.loc)) / std
        log_p = -0.5 * (z**2).sum(-1) - dim * (torch.log(std[..., 0]) + 0.5 * LOG_2PI)
        return torch.cat([torch.zeros_like(log_p[:1]), log_p])

    def log_flows(
        self, states: Tensor, log_reward: Tensor, inner_energy: Tensor | None = None
    ) -> Tensor:
        """log F_0..log F_N ``(N + 1, n)``: log Z_θ, F_θ(X_k, t_k) (plus the
        forward-looking term (2) when ``inner_energy`` = E(X_1..X_{N−1}) is given), and
        −E(X_N)."""
        inner = states[1:-1]
        n_steps, n, dim = inner.shape
        width = self.emb.shape[-1]
        emb = self.emb[1:-1, None, :].expand(n_steps, n, width).reshape(n_steps * n, width)
        flows = self.model.log_flow(inner.reshape(n_steps * n, dim).to(self.dtype), emb)
        flows = flows.to(torch.float64).reshape(n_steps, n)
        if inner_energy is not None:
            times = torch.arange(1, self.n_steps, dtype=torch.float64) * self.h
            flows = flows + forward_looking_log_flow(
                inner, inner_energy, times, self.loc, self.sigma
            )
        start = self.model.log_z.to(torch.float64).expand(1, n)
        return torch.cat([start, flows, log_reward[None]])


class ReplayBuffer:
    """A FIFO buffer of terminal samples and their energies, float64, with the local
    search's adapted step size; its state goes into training checkpoints.

    Parameters
    ----------
    capacity
        Rows kept (the oldest are dropped first).
    priority
        ``"rank"``: row j drawn with weight 1 / (10⁻² M + rank_j), rank 0 the lowest
        energy among the M rows (Sendera et al. 2024); ``"uniform"``.
    step_size
        The initial MALA step ε of the local search (units of x).
    """

    def __init__(self, capacity: int, priority: str, step_size: float):
        self.capacity, self.priority, self.step_size = capacity, priority, step_size
        self.x: Tensor | None = None
        self.energy = torch.empty(0, dtype=torch.float64)

    def __len__(self) -> int:
        return self.energy.shape[0]

    def add(self, x: Tensor, energy: Tensor) -> None:
        """Append the rows of finite energy, dropping the oldest past ``capacity``."""
        ok = torch.isfinite(energy)
        x, energy = x[ok].detach(), energy[ok].detach()
        self.x = (x if self.x is None else torch.cat([self.x, x]))[-self.capacity :]
        self.energy = torch.cat([self.energy, energy])[-self.capacity :]

    def draw(self, n: int, generator) -> tuple[Tensor, Tensor]:
        """``n`` rows (x ``(n, dim)``, E ``(n,)``) drawn with replacement."""
        if len(self) == 0:
            raise RuntimeError("gfn: the replay buffer is empty (no finite energy seen yet)")
        weights = torch.ones_like(self.energy)
        if self.priority == "rank":
            rank = torch.argsort(torch.argsort(self.energy)).to(torch.float64)
            weights = 1.0 / (RANK_WEIGHT * len(self) + rank)
        idx = torch.multinomial(weights, n, replacement=True, generator=generator)
        return self.x[idx], self.energy[idx]

    def state_dict(self) -> dict[str, Any]:
        return {"x": self.x, "energy": self.energy, "step_size": self.step_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x, self.energy = state["x"], state["energy"]
        self.step_size = float(state["step_size"])


def local_search(
    target: Target, x: Tensor, n_steps: int, step_size: float, generator
) -> tuple[Tensor, Tensor, float]:
    """``n_steps`` MALA steps from ``x`` ``(m, dim)`` (Sendera et al. 2024, Sec. 4: local
    search on buffered samples); ε ×1.05 after a step of mean acceptance above 0.574,
    ÷1.05 otherwise. Costs (n_steps + 1) energy-and-gradient evaluations per row.
    Returns the end states, their energies and the adapted ε."""
    potential = potential_from(target.energy_and_grad)
    state = mala.init(x, potential)
    step = mala.build_kernel()
    for _ in range(n_steps):
        state, info = step(generator, state, potential, step_size)
        step_size *= 1.05 if float(info.acceptance_rate.mean()) > LS_ACCEPTANCE else 1 / 1.05
    return state.position, state.energy, step_size


class GFN(PathSampler):
    """A GFlowNet diffusion sampler (TB, SubTB or VarGrad), trained on the energy;
    weighted samples. See the module docstring for the policies, losses and costs.

    Parameters
    ----------
    loss
        ``"tb"`` (learned log Z), ``"subtb"`` (learned flow, DGFS) or ``"vargrad"``.
    n_steps
        N, the Euler–Maruyama steps on [0, 1].
    sigma
        σ, the diffusion coefficient (units of x): the zero-drift policy ends at
        N(loc, σ² I), so it should cover the target.
    hidden_features
        Hidden widths of the drift MLP (and of the flow MLP for ``subtb``).
    langevin_preconditioning
        Langevin-parametrized drift (N energy-and-gradient evaluations per trajectory).
    n_iter, batch_size
        Optimizer steps (iterations) and trajectories per step.
    lr
        Adam learning rate of the drift.
    lr_flow
        Adam learning rate of log Z_θ and of the flow network.
    subtb_lambda
        λ of the SubTB weights λ^{j−i} (:func:`subtb_weights`).
    flow_parametrization
        ``"plain"`` (log F = F_θ) or ``"forward_looking"`` (log F = F_θ plus the
        reference-to-reward interpolation (2) of DGFS / FL-SubTB; N − 1 energy
        evaluations per training trajectory without the Langevin drift); ``subtb`` only.
    exploration
        e, the initial off-policy widening of the step noise (σ√h √(1 + e²)).
    exploration_decay
        Fraction of ``n_iter`` over which e decays linearly to 0.
    replay
        Alternate forward iterations with backward iterations from the replay buffer.
    buffer_size
        Rows kept in the buffer.
    priority
        ``"rank"`` (reward-rank prioritized) or ``"uniform"`` buffer draws.
    local_search
        Run MALA on buffered samples (needs ``replay``).
    ls_every
        A local search before every ``ls_every``-th backward iteration.
    ls_steps
        MALA steps per local search (on ``batch_size`` chains).
    ls_step_size
        Initial MALA step ε (units of x); None: σ√h, the policy's step noise.
    score_clip
        Elementwise clip of ∇log p̃ in the Langevin drift.
    grad_clip
        Maximum global norm of the parameter gradient, or None.
    sample_batch_size
        Trajectories per batch when sampling.
    dtype
        ``"float32"`` or ``"float64"`` for the networks; states, path densities,
        energies and weights are float64.

    Defaults: tb, 100 steps, σ = 1, (128, 128), no Langevin drift, 2000 steps of
    256 trajectories, lr 1e-3, lr_flow 1e-2 (as in Sendera et al.'s code), λ = 2,
    the plain flow,
    exploration 1 decaying over half the run, rank-prioritized replay of 10⁵
    rows with a local search of 10 MALA steps every 10 backward iterations, score
    clip 100, gradient clip 10, float32.

    Under an evaluation budget the budget decides ``n_iter`` (``budget_settings``;
    the configured value is ignored): see :meth:`plan_budget`.
    """

    name = "gfn"
    divergence_advice = "Try a smaller lr or lr_flow, a grad_clip, or a different sigma."
    #: a tiny configuration for conformance tests (seconds to fit)
    fast_params: dict[str, Any] = {
        "n_steps": 8,
        "hidden_features": [16, 16],
        "n_iter": 10,
        "batch_size": 32,
        "ls_every": 2,
        "ls_steps": 3,
    }

    def __init__(
        self,
        *,
        loss: str = "tb",
        n_steps: int = 100,
        sigma: float = 1.0,
        hidden_features: tuple[int, ...] | list[int] = (128, 128),
        langevin_preconditioning: bool = False,
        n_iter: int = 2000,
        batch_size: int = 256,
        lr: float = 1e-3,
        lr_flow: float = 1e-2,
        subtb_lambda: float = 2.0,
        flow_parametrization: str = "plain",
        exploration: float = 1.0,
        exploration_decay: float = 0.5,
        replay: bool = True,
        buffer_size: int = 100_000,
        priority: str = "rank",
        local_search: bool = True,
        ls_every: int = 10,
        ls_steps: int = 10,
        ls_step_size: float | None = None,
        score_clip: float = 100.0,
        grad_clip: float | None = 10.0,
        sample_batch_size: int = 4096,
        dtype: str = "float32",
    ):
        _choice("loss", loss, LOSSES)
        _choice("priority", priority, PRIORITIES)
        _choice("flow_parametrization", flow_parametrization, FLOW_PARAMETRIZATIONS)
        if flow_parametrization != "plain" and loss != "subtb":
            raise ValueError("gfn: flow_parametrization applies to the subtb loss only")
        _choice("dtype", dtype, DTYPES)
        sizes = (n_steps, n_iter, batch_size, buffer_size, ls_every, sample_batch_size)
        if min(sizes) < 1 or ls_steps < 0:
            raise ValueError(
                "gfn: n_steps, n_iter, batch_size, buffer_size, ls_every and "
                "sample_batch_size must be >= 1, ls_steps >= 0"
            )
        if not (sigma > 0 and lr > 0 and lr_flow > 0 and subtb_lambda > 0 and score_clip > 0):
            raise ValueError("gfn: sigma, lr, lr_flow, subtb_lambda and score_clip must be > 0")
        if exploration < 0 or not 0 < exploration_decay <= 1:
            raise ValueError("gfn: exploration must be >= 0 and exploration_decay in (0, 1]")
        if ls_step_size is not None and not ls_step_size > 0:
            raise ValueError("gfn: ls_step_size must be > 0 (or None)")
        if loss == "vargrad" and batch_size < 2:
            raise ValueError("gfn: the vargrad loss needs batch_size >= 2")
        self.loss, self.n_steps, self.sigma = loss, n_steps, sigma
        self.hidden_features = [int(h) for h in hidden_features]
        self.langevin_preconditioning = bool(langevin_preconditioning)
        self.n_iter, self.batch_size, self.lr, self.lr_flow = n_iter, batch_size, lr, lr_flow
        self.subtb_lambda, self.flow_parametrization = subtb_lambda, flow_parametrization
        self.exploration, self.exploration_decay = exploration, exploration_decay
        self.replay, self.buffer_size, self.priority = bool(replay), buffer_size, priority
        self.local_search = bool(local_search) and self.replay
        self.ls_every, self.ls_steps, self.ls_step_size = ls_every, ls_steps, ls_step_size
        self.score_clip, self.grad_clip = score_clip, grad_clip
        self.sample_batch_size, self.dtype = sample_batch_size, dtype

    # ---------------------------------------------------------------- building

    def _build(self, dim: int) -> GFNModel:
        model = GFNModel(
            dim, self.hidden_features, self.langevin_preconditioning, self.loss == "subtb"
        )
        return model.to(DTYPES[self.dtype])

    def _simulator(self, target: Target) -> _Policy:
        loc = start_location(target, torch.float64)
        return _Policy(self.model_, self.n_steps, self.sigma, loc, self.score_clip)

    # ---------------------------------------------------------------- schedule and costs

    def _is_backward(self, it: int) -> bool:
        return self.replay and it % 2 == 1

    def _searches(self, it: int) -> bool:
        """Whether iteration ``it`` starts with a local search."""
        return self.local_search and it % (2 * self.ls_every) == 1

    def _explore(self, it: int) -> float:
        """e at iteration ``it``: linear from ``exploration`` to 0 over the decay span."""
        span = self.exploration_decay * self.n_iter
        return self.exploration * max(0.0, 1.0 - it / span)

    def _forward_looking(self) -> bool:
        return self.flow_parametrization == "forward_looking"

    def _path_cost(self) -> int:
        """Evaluations per training trajectory besides E(X_N): the N drift scores with
        the Langevin drift (which also give E(X_1..X_{N−1})), else N − 1 energies for
        the forward-looking flow, else none."""
        if self.langevin_preconditioning:
            return self.n_steps
        return self.n_steps - 1 if self._forward_looking() else 0

    def iteration_cost(self, it: int) -> int:
        """Evaluations of training iteration ``it`` (see the module docstring)."""
        scores = self._path_cost()
        if not self._is_backward(it):
            return self.batch_size * (1 + scores)
        search = self.batch_size * (self.ls_steps + 1) if self._searches(it) else 0
        return self.batch_size * scores + search

    def training_cost(self, n_iter: int) -> int:
        """Evaluations of ``n_iter`` training iterations: the exact sum of
        :meth:`iteration_cost` over them (O(1), no loop)."""
        scores = self._path_cost()
        if not self.replay:
            return n_iter * self.batch_size * (1 + scores)
        n_fwd, n_bwd = (n_iter + 1) // 2, n_iter // 2
        cycle = 2 * self.ls_every
        n_ls = (n_iter - 1 + cycle - 1) // cycle if self.local_search and n_iter > 0 else 0
        fwd = n_fwd * self.batch_size * (1 + scores)
        return fwd + n_bwd * self.batch_size * scores + n_ls * self.batch_size * (self.ls_steps + 1)

    # ---------------------------------------------------------------- losses

    def _loss(self, policy: _Policy, path: _Path, first: bool = False) -> tuple[Tensor, Tensor]:
        """(the chosen loss, log w per trajectory (detached)) of a batch of paths.
        Rows of zero reward (E = +∞) are left out; a NaN energy makes the loss NaN.
        On the ``first`` batch log Z_θ starts at the batch's log mean w, not at 0: with
        lr_flow = 10⁻² a log Z of 165 (ManyWell-32) would take 16,500 steps. (Not its
        mean log w: under exploration that is far below log Z, −2.8 against 1.39 on the
        Gaussian of the tests, and the climb back takes most of a short run.)"""
        keep = path.energy != math.inf
        inner_energy = path.inner_energy if self._forward_looking() else None
        if inner_energy is not None:
            keep = keep & (inner_energy != math.inf).all(0)
        path = path.rows(keep)
        log_r = -path.energy
        steps = policy.log_pf(path) - policy.log_pb(path.states)  # (N, n)
        log_w = log_r - steps.sum(0)
        if first and self.loss != "vargrad" and log_w.numel() and torch.isfinite(log_w).all():
            with torch.no_grad():
                self.model_.log_z.fill_(log_mean_exp(log_w))
        if self.loss == "vargrad":
            loss = log_w.var()
        elif self.loss == "tb":
            loss = ((self.model_.log_z.to(torch.float64) - log_w) ** 2).mean()
        else:
            inner_energy = path.inner_energy if self._forward_looking() else None
            flows = policy.log_flows(path.states, log_r, inner_energy)  # (N + 1, n)
            cum = torch.cat([torch.zeros_like(steps[:1]), steps.cumsum(0)])  # (N + 1, n)
            # D_ij = log F_i + cum_j − cum_i − log F_j for every pair (i, j)
            d = (flows - cum)[:, None, :] - (flows - cum)[None, :, :]
            loss = (self._subtb_weights[:, :, None] * d**2).sum((0, 1)).mean()
        return loss, log_w.detach()

    # ---------------------------------------------------------------- training

    def _label(self) -> str:
        return f"gfn ({self.loss})"

    def _batch(self, it: int, policy: _Policy, target: Target, buffer, generator) -> _Path:
        """The trajectories of iteration ``it``, with E(X_1..X_{N−1}) for the
        forward-looking flow (evaluated here unless the Langevin drift gave them)."""
        path = self._trajectories(it, policy, target, buffer, generator)
        if not self._forward_looking() or path.inner_energy is not None:
            return path
        inner = path.states[1:-1]
        k, n, dim = inner.shape
        energy = target.energy(inner.reshape(k * n, dim)) if k else inner.new_zeros(0)
        return path._replace(inner_energy=energy.to(torch.float64).reshape(k, n))

    def _trajectories(self, it: int, policy: _Policy, target: Target, buffer, generator) -> _Path:
        """The trajectories of iteration ``it``: forward (with exploration; their ends go
        into the buffer) or backward from the buffer (after a local search when due)."""
        if not self._is_backward(it):
            path = policy.forward(target, self.batch_size, generator, self._explore(it))
            if buffer is not None:
                buffer.add(path.states[-1], path.energy)
            return path
        if self._searches(it):
            x, _ = buffer.draw(self.batch_size, generator)
            x, energy, buffer.step_size = local_search(
                target, x, self.ls_steps, buffer.step_size, generator
            )
            buffer.add(x, energy)
        x, energy = buffer.draw(self.batch_size, generator)
        return policy.backward(target, x, energy, generator)

    def _iteration(self, target: Target, buffer, generator):
        policy = self._simulator(target)

        def iteration(trainer: Trainer) -> dict[str, float]:
            cost = self.iteration_cost(trainer.it)
            if cost and affordable(target, 1, cost) < 1:
                raise BudgetExceeded(f"gfn: iteration {trainer.it} costs {cost} evaluations")
            path = self._batch(trainer.it, policy, target, buffer, generator)
            loss, log_w = self._loss(policy, path, first=trainer.it == 0)
            trainer.step(loss)
            record = {"log_Z_batch": float(log_w.mean())}
            if self.loss != "vargrad":
                record["log_Z_learned"] = float(self.model_.log_z.detach())
            return record

        return iteration

    def _objective(self, target: Target, data: Tensor | None, generator) -> Objective:
        """A zero-drift model with log Z_θ = the first batch's log mean w (seeded from
        ``generator``), Adam (lr for
        the drift, lr_flow for log Z_θ and the flow), the replay buffer as training
        state. History: ``loss``, ``log_Z_batch`` (mean log w of the batch; the ELBO
        for an on-policy forward batch) and ``log_Z_learned`` (tb, subtb)."""
        with forked_seed(generator):
            self.model_ = self._build(target.dim)
        flow = [
            self.model_.log_z,
            *([] if self.model_.flow is None else self.model_.flow.parameters()),
        ]
        opt = torch.optim.Adam(
            [{"params": self.model_.net.parameters()}, {"params": flow, "lr": self.lr_flow}],
            lr=self.lr,
        )
        self._subtb_weights = subtb_weights(self.n_steps, self.subtb_lambda)
        step = self.ls_step_size or self.sigma / math.sqrt(self.n_steps)
        buffer = ReplayBuffer(self.buffer_size, self.priority, step) if self.replay else None
        return Objective(
            self.model_,
            opt,
            iteration=self._iteration(target, buffer, generator),
            state={} if buffer is None else {"buffer": buffer},
            records=("log_Z_batch",),
        )

    # ---------------------------------------------------------------- sampling

    @torch.no_grad()
    def _sample_batch(self, policy: _Policy, target: Target, n: int, generator) -> tuple:
        """x (float64 ``(n, dim)``), E(x) and log w (``(n,)``) for one batch of paths."""
        path = policy.forward(target, n, generator)
        x = path.states[-1]
        log_w = -path.energy + policy.log_pb(path.states).sum(0) - policy.log_pf(path).sum(0)
        return x, path.energy, masked_log_weights(log_w, x, path.energy)

    def _sample_attrs(self, policy: _Policy) -> dict[str, Any]:
        """The loss, and the learned log Z_θ (TB and SubTB)."""
        attrs: dict[str, Any] = {"loss": self.loss}
        if self.loss != "vargrad":
            attrs["log_Z_learned"] = float(self.model_.log_z.detach())
        return attrs

    def _backward_log_density(
        self, policy: _Policy, target: Target, x: Tensor, generator
    ) -> Tensor:
        """log q̂(x) = log P_F(τ) − log P_B(τ | x) along one Brownian-bridge path per row
        (the fixed backward policy); n_steps gradient evaluations per row with the
        Langevin drift."""
        x = x.to(torch.float64)
        path = policy.backward(target, x, torch.zeros(x.shape[0], dtype=torch.float64), generator)
        return policy.log_pf(path).sum(0) - policy.log_pb(path.states).sum(0)

    def sample_cost(self, n: int) -> int:
        """One energy evaluation per trajectory, plus one per step with the Langevin drift."""
        return n * (1 + (self.n_steps if self.langevin_preconditioning else 0))

    def plan_budget(self, budget: int, n_samples: int) -> BudgetPlan:
        """A copy with ``n_iter`` = the most iterations whose :meth:`training_cost`
        plus S = ``sample_cost(n_samples)`` fits in ``budget`` (a bisection: the cost
        grows with n_iter). The plan leaves less than one iteration's cost unspent
        (a forward batch, or a backward one with its local search); ``note`` says
        when that is below BUDGET_SPEND_MIN of the budget. ValueError when the budget
        cannot pay for S plus the first iteration."""
        reserve = self.sample_cost(n_samples)
        if self.training_cost(1) + reserve > budget:
            raise ValueError(
                f"gfn: a budget of {budget} evaluations cannot pay for sampling {n_samples} "
                f"paths ({reserve} evaluations) plus one training batch "
                f"({self.training_cost(1)}); raise the budget or lower batch_size"
            )
        lo, hi = 1, 2 * budget + 2  # every forward iteration costs >= 1, so hi is too many
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.training_cost(mid) + reserve <= budget else (lo, mid)
        planned = self.training_cost(lo) + reserve
        note = ""
        if planned < BUDGET_SPEND_MIN * budget:
            note = (
                f"gfn: {lo} iterations plus sampling ({reserve}) plan {planned} evaluations "
                f"({100 * planned / budget:.1f} % of {budget}); one iteration costs up to "
                f"{max(self.iteration_cost(0), self.iteration_cost(1))}: lower batch_size "
                "to spend more"
            )
        copy = type(self)(**{**self.get_params(), "n_iter": int(lo)})
        return BudgetPlan(copy, {"n_iter": int(lo)}, int(planned), note)

    # ---------------------------------------------------------------- state

    def _build_model(self, target: Target) -> GFNModel:
        return self._build(target.dim)
