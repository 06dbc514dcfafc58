"""Building blocks of the ``diffusion`` method: the discretized reference chains,
the control network and the path-space log weights.

Both samplers (PIS and DDS) are simulated as a Gaussian Markov chain of N steps
around the base location ``loc`` (the target's ``base_location()``, shape ``(dim,)``),

    X_{k+1} = loc + a_k (X_k − loc) + c_k f_θ(X_k, t_k) + s_k ε_k,      ε_k ∼ N(0, I),

whose *reference* chain (f = 0) has a Gaussian terminal marginal
N(loc, σ_N² I) known in closed form: the mean of X_k − loc is a product of a_j
times that of X_0 − loc, which is 0, so the chain never drifts from loc (with
a_k < 1 the recursion on X itself, without the recentring, would contract
towards the origin instead). With u_k = c_k f_θ(X_k, t_k) / s_k (the control in
units of the step's noise), the log Radon–Nikodym derivative of the controlled
chain P^u with respect to the reference chain R, along a path
X_{k+1} = loc + a_k (X_k − loc) + s_k (v_k + ε_k) driven by a behaviour control v, is

    log dP^u/dR (X) = Σ_k [u_k · (v_k + ε_k) − ½ |u_k|²]                    (1)

(the ratio of the Gaussian transition densities; with v = u it is
Σ_k [½|u_k|² + u_k · ε_k], the discrete Girsanov formula). The path-space
importance weight of the terminal point is

    log w = −E(X_N) − log N(X_N; loc, σ_N² I) − log dP^u/dR (X),             (2)

and E_{P^u}[w] = Z exactly, for any control and any N: the reference chain's
terminal marginal is exact, so there is no discretization bias in Ẑ (Zhang &
Chen 2022, Sec. 3.3; Vargas et al. 2023, Sec. 3.2). The two kinds differ only in
(a_k, c_k, s_k) and in the initial law (:class:`Scheme`).

References
----------
Zhang & Chen 2022, "Path Integral Sampler: a stochastic control approach for
sampling", ICLR, arXiv:2111.15141.
Vargas, Grathwohl & Doucet 2023, "Denoising Diffusion Samplers", ICLR, arXiv:2302.13834.
Nichol & Dhariwal 2021, "Improved denoising diffusion probabilistic models",
arXiv:2102.09672 (the cosine noise schedule).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from boltzbench.core import BUDGET_SPEND_MIN, BudgetPlan, SampleSet, batch_sizes
from boltzbench.estimators import log_mean_exp, mean_log_weight, normalized_kish_ess

__all__ = [
    "KINDS",
    "Scheme",
    "pis_scheme",
    "dds_scheme",
    "cosine_alphas",
    "time_embedding",
    "mlp",
    "ControlNet",
    "gaussian_log_density",
    "clipped_score",
    "masked_log_weights",
    "batches_budget_plan",
    "weighted_paths",
    "reference_bridge",
    "module_state",
    "load_module_state",
]

#: sampler kinds
KINDS = ("pis", "dds")
#: sin/cos frequency pairs of the time embedding
N_FREQ = 8


class Scheme(NamedTuple):
    """The coefficients of the discretized chain (see the module docstring).

    Attributes
    ----------
    decay, drift, noise
        a_k, c_k and s_k, each of shape ``(N,)`` (float64); a_k acts on X_k − loc.
    times
        t_k ∈ [0, 1), the network's time input at step k, shape ``(N,)``.
    init_std
        Standard deviation of X_0 around ``loc`` (0: a Dirac).
    final_std
        σ_N, the standard deviation of the reference chain's terminal marginal.
    """

    decay: Tensor
    drift: Tensor
    noise: Tensor
    times: Tensor
    init_std: float
    final_std: float

    @property
    def n_steps(self) -> int:
        return self.decay.shape[0]


def pis_scheme(n_steps: int, sigma: float) -> Scheme:
    """PIS (Zhang & Chen 2022, eq. 5 and Sec. 3.3), Euler–Maruyama on [0, 1].

    dX_t = f_θ(X_t, t) dt + σ dW_t from X_0 = loc (a Dirac): h = 1/N, a_k = 1 (so
    the recentring on loc is void),
    c_k = h, s_k = σ√h. The reference chain (f = 0) is Brownian motion, so its
    terminal marginal is exactly N(loc, σ² I) (σ_N = σ).
    """
    h = 1.0 / n_steps
    ones = torch.ones(n_steps, dtype=torch.float64)
    times = torch.arange(n_steps, dtype=torch.float64) * h
    return Scheme(ones, h * ones, sigma * math.sqrt(h) * ones, times, 0.0, sigma)


def cosine_alphas(n_steps: int, offset: float = 0.008, max_alpha: float = 0.999) -> Tensor:
    """Per-step noise fractions α_j of the cosine schedule (Nichol & Dhariwal 2021, eq. 17).

    ᾱ(s) = cos²(π/2 · (s + o)/(1 + o)) / cos²(π/2 · o/(1 + o)) on s = j/N, and
    α_j = 1 − ᾱ(s_{j+1})/ᾱ(s_j), clipped to ``max_alpha``; shape ``(N,)``, float64,
    in the *noising* direction (α grows with j).
    """
    s = torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64)
    abar = torch.cos(0.5 * math.pi * (s + offset) / (1 + offset)) ** 2
    return (1 - abar[1:] / abar[:-1]).clamp(1e-8, max_alpha)


def dds_scheme(n_steps: int, sigma: float) -> Scheme:
    """DDS with the exponential integrator (Vargas et al. 2023, Sec. 3.2).

    The noising process is the Ornstein–Uhlenbeck dY = −β (Y − loc) dt + σ√(2β) dB,
    invariant law N(loc, σ² I). Its exact transition over a step is
    Y' = loc + √(1−α) (Y − loc) + σ√α ε; the sampler runs the reversal from
    X_0 ∼ N(loc, σ² I):

        X_{k+1} = loc + √(1−α_k) (X_k − loc) + 2σ² (1 − √(1−α_k)) f_θ(X_k, t_k)
                  + σ √α_k ε_k,

    with α_k = α_{N−1−k} of :func:`cosine_alphas` (the noising steps run
    backwards) and f_θ ≈ ∇log q_t(x) + (x − loc)/σ² (the score of the noised
    target less that of N(loc, σ² I)). Since a_k² σ² + s_k² = σ², the reference
    chain keeps N(loc, σ² I) at every step, so σ_N = σ. (The recentring on loc is
    applied by the chain, not stored here: a_k = √(1−α_k) multiplies X_k − loc.)
    """
    alpha = cosine_alphas(n_steps).flip(0)
    decay = torch.sqrt(1 - alpha)
    times = torch.arange(n_steps, dtype=torch.float64) / n_steps
    return Scheme(decay, 2 * sigma**2 * (1 - decay), sigma * torch.sqrt(alpha), times, sigma, sigma)


def time_embedding(t: Tensor, n_freq: int = N_FREQ) -> Tensor:
    """Fourier features [sin(π j t), cos(π j t)]_{j=1..n_freq} of t ∈ [0, 1].

    Shape ``(n, 2 n_freq)`` for ``t`` of shape ``(n,)``.
    """
    freqs = math.pi * torch.arange(1, n_freq + 1, dtype=t.dtype)
    arg = t[:, None] * freqs
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers of widths ``sizes`` (input, hidden…, output) with SiLU in between;
    the last layer starts at zero, so the untrained network outputs 0."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    nn.init.zeros_(layers[-1].weight)
    nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


_mlp = mlp


class ControlNet(nn.Module):
    """The drift f_θ(x, t): an MLP of (x, time embedding), optionally Langevin-preconditioned.

    ``langevin=False``: f = NN₁(x, t). ``langevin=True`` (PIS-Grad, Zhang & Chen
    2022, Sec. 4; also used by DDS): f = NN₁(x, t) + NN₂(t) ⊙ ∇log p̃(x), with
    NN₂ a per-coordinate MLP of t alone. The last layers start at zero, so an
    untrained network is the zero control (the sampler is then the reference
    chain, and log w is a plain importance weight).

    Parameters
    ----------
    dim
        Dimension of x.
    hidden_features
        Hidden widths of NN₁ (NN₂ uses the same widths).
    langevin
        Whether to add the NN₂(t) ⊙ ∇log p̃(x) term.
    """

    def __init__(self, dim: int, hidden_features: list[int], langevin: bool):
        super().__init__()
        emb = 2 * N_FREQ
        self.langevin = langevin
        self.net = _mlp([dim + emb, *hidden_features, dim])
        self.coef = _mlp([emb, *hidden_features, dim]) if langevin else None

    def forward(self, x: Tensor, emb: Tensor, score: Tensor | None = None) -> Tensor:
        """f_θ at ``x`` ``(n, dim)``, time embedding ``emb`` ``(n, 2·N_FREQ)``, and
        ``score`` = ∇log p̃(x) ``(n, dim)`` (needed when ``langevin``)."""
        f = self.net(torch.cat([x, emb], dim=-1))
        if self.coef is not None:
            f = f + self.coef(emb) * score
        return f


def gaussian_log_density(x: Tensor, loc: Tensor, std: float) -> Tensor:
    """log N(x; loc, std² I), float64, shape ``(n,)`` for ``x`` of shape ``(n, dim)``."""
    z = (x.to(torch.float64) - loc.to(torch.float64)) / std
    return -0.5 * (z**2).sum(-1) - x.shape[-1] * (math.log(std) + 0.5 * math.log(2 * math.pi))


def clipped_score(grad: Tensor, clip: float, dtype: torch.dtype) -> Tensor:
    """∇log p̃ = −``grad`` clipped elementwise to ±``clip`` (NaN → 0, ±inf → ±clip),
    in ``dtype``; shape that of ``grad``. (PIS clips the target's score at 100.)"""
    return torch.nan_to_num(-grad, nan=0.0, posinf=clip, neginf=-clip).clamp(-clip, clip).to(dtype)


def masked_log_weights(log_w: Tensor, *parts: Tensor) -> Tensor:
    """``log_w`` ``(n,)`` with −inf wherever it or any of ``parts`` (per row) is not finite."""
    ok = torch.isfinite(log_w)
    for p in parts:
        ok &= torch.isfinite(p.reshape(p.shape[0], -1)).all(-1)
    return torch.where(ok, log_w, torch.full_like(log_w, -math.inf))


def batches_budget_plan(
    method, budget: int, n_samples: int, name: str, per_batch: int | None = None
) -> BudgetPlan:
    """A copy of ``method`` (a path sampler trained on batches of ``method.batch_size``
    paths) with ``n_iter`` = the whole training batches that ``budget`` pays for.

    With S = ``sample_cost(n_samples)`` (the sampling reserve) and
    c = ``per_batch`` (one training iteration, energy evaluations; by default
    ``sample_cost(batch_size)``),
    n_iter = ⌊(budget − S) / c⌋ and planned = n_iter · c + S ≤ budget. The plan
    leaves less than c unspent, so it spends at least BUDGET_SPEND_MIN of the
    budget unless one batch is over about 5 % of it; ``note`` then says so.
    Raises ValueError (its message starting with ``name``) when the budget cannot
    pay for S plus one batch.
    """
    reserve = method.sample_cost(n_samples)
    per_batch = method.sample_cost(method.batch_size) if per_batch is None else per_batch
    n_iter = (budget - reserve) // per_batch
    if n_iter < 1:
        raise ValueError(
            f"{name}: a budget of {budget} evaluations cannot pay for sampling "
            f"{n_samples} paths ({reserve} evaluations) plus one training batch of "
            f"{method.batch_size} paths ({per_batch} evaluations); raise the budget to at "
            f"least {reserve + per_batch} or lower batch_size"
        )
    planned = n_iter * per_batch + reserve
    note = ""
    if planned < BUDGET_SPEND_MIN * budget:
        note = (
            f"{name}: one training batch costs {per_batch} evaluations "
            f"({100 * per_batch / budget:.1f} % of the budget of {budget}), so "
            f"{n_iter} whole batches plus sampling ({reserve}) plan {planned} "
            f"({100 * planned / budget:.1f} %); lower batch_size to spend more"
        )
    copy = type(method)(**{**method.get_params(), "n_iter": int(n_iter)})
    return BudgetPlan(copy, {"n_iter": int(n_iter)}, int(planned), note)


def weighted_paths(
    target, n: int, batch: int, per_path: int, draw: Callable[[int], tuple]
) -> SampleSet:
    """``n`` path samples in batches of ``batch`` (fewer when the budget allows fewer),
    ``draw(m) -> (x, E(x), log w)`` simulating ``m`` paths of ``per_path`` evaluations.

    Attrs: ``n_nonfinite`` (rows of log w = −inf), ``log_Z_hat`` (log mean w),
    ``log_Z_elbo`` (mean log w; −inf when any row is non-finite) and ``ess_kish``
    (normalized Kish ESS).
    """
    sizes = batch_sizes(target, n, batch, per_path)
    n = sum(sizes)
    x, energy, log_w = (torch.cat(p) for p in zip(*map(draw, sizes), strict=True))
    attrs = {
        "n_nonfinite": int((~torch.isfinite(log_w)).sum()),
        "log_Z_hat": log_mean_exp(log_w),
        "log_Z_elbo": mean_log_weight(log_w),
        "ess_kish": normalized_kish_ess(log_w),
    }
    return SampleSet(x=x, energy=energy, log_weight=log_w, attrs=attrs)


def reference_bridge(
    scheme: Scheme, x: Tensor, loc: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Paths of the reference chain (f = 0) conditioned on X_N = ``x`` ``(n, dim)``,
    drawn backwards: the backward kernel P_B of the path samplers.

    With Y = X − loc, Y_{k+1} = a_k Y_k + s_k ε_k and marginal variances
    v_0 = init_std², v_{k+1} = a_k² v_k + s_k², the chain is Markov, so
    Y_k | Y_{k+1} = y ∼ N(a_k v_k y / v_{k+1}, v_k s_k² / v_{k+1}) (a Brownian bridge
    for PIS, where v_0 = 0 pins Y_0 = 0). Returns the states X_0..X_{N−1} and the
    standardized increments (X_{k+1} − loc − a_k (X_k − loc)) / s_k, each
    ``(N, n, dim)`` in ``x``'s dtype: the ``v_k + ε_k`` of eq. (1), so with them
    log dP^u/dR is Σ_k [u_k · (v_k + ε_k) − ½|u_k|²] along the bridge.
    """
    a = scheme.decay.to(torch.float64)
    s = scheme.noise.to(torch.float64)
    v = [torch.tensor(float(scheme.init_std) ** 2, dtype=torch.float64)]
    for k in range(scheme.n_steps):
        v.append(a[k] ** 2 * v[k] + s[k] ** 2)
    y = (x - loc).to(torch.float64)
    states, increments = [], []
    for k in reversed(range(scheme.n_steps)):
        mean = a[k] * v[k] / v[k + 1] * y
        std = torch.sqrt(v[k] * s[k] ** 2 / v[k + 1])
        eps = torch.randn(y.shape, generator=generator, dtype=torch.float64)
        prev = mean + std * eps
        increments.append((y - a[k] * prev) / s[k])
        states.append(prev)
        y = prev
    stack = lambda parts: torch.stack(parts[::-1]).to(x.dtype)  # noqa: E731
    return stack(states) + loc.to(x.dtype), stack(increments)


def module_state(module: nn.Module, prefix: str) -> dict[str, Tensor]:
    """``module``'s tensors, detached copies, keys ``<prefix>.<name>``."""
    return {f"{prefix}.{k}": v.detach().clone() for k, v in module.state_dict().items()}


def load_module_state(
    build: Callable[[], nn.Module], state: dict[str, Tensor], prefix: str, name: str
) -> nn.Module:
    """A module from ``build()`` (seeded apart from the global RNG: its initial values
    are overwritten) with the ``<prefix>.*`` tensors of ``state`` loaded; ValueError
    naming the method ``name`` when they do not fit."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = build()
    own = {k.removeprefix(f"{prefix}."): v for k, v in state.items() if k.startswith(f"{prefix}.")}
    try:
        module.load_state_dict(own, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{name}: model state does not match this config: {err}") from None
    return module
