"""``check_target``: the contract every target must keep, on a few typical points.

Checks, registered in :data:`TARGET_CHECKS` and run in order: the interface
(``dim``, ``log_Z``), energies (shapes, finite at typical points, ``log_prob``),
float32, gradients (``energy_and_grad`` against autograd and central
differences), declared hooks (base location, modes, lattice), the exact sampler
(shapes, seeding, and Stein's identity E_p[x ∇E(x)ᵀ] = I, E_p[∇E] = 0), and
log Z against importance sampling from a Gaussian fitted to exact samples.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor

from boltzbench.targets.base import LatticeField, ParticleChart, ParticleSystem, Target
from boltzbench.testing.common import require, run_checks, typical_points

__all__ = ["check_target", "TARGET_CHECKS", "STEIN_SIGMAS", "LOG_Z_SIGMAS"]

#: Stein's identity holds to this many standard errors of :data:`N_STEIN` exact samples
STEIN_SIGMAS = 6.0
N_STEIN = 10_000
#: log Z agrees with importance sampling to this many standard errors (+ 1e-3)
LOG_Z_SIGMAS = 5.0
#: fewest effective samples (of 4000) for the importance-sampling log Z check
MIN_ESS = 200
#: coordinates whose gradients and Stein identity are checked (the first ones)
MAX_DIMS = 6

TARGET_CHECKS: dict[str, Callable[[Target, str], str | None]] = {}


def _check(fn):
    TARGET_CHECKS[fn.__name__] = fn
    return fn


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@_check
def interface(t: Target, name: str) -> str | None:
    """A Target of positive integer ``dim``; ``log_Z`` a float or None."""
    require(isinstance(t, Target), name, "interface", f"is a {type(t).__name__}, not a Target")
    require(isinstance(t.dim, int) and t.dim > 0, name, "interface", f"dim is {t.dim!r}")
    require(
        t.log_Z is None or isinstance(t.log_Z, float),
        name,
        "interface",
        f"log_Z is {t.log_Z!r}, not a float or None",
    )


@_check
def energy(t: Target, name: str) -> str | None:
    """Energies of 16 typical points: shape (16,), finite; log_prob = −E − log Z."""
    x = typical_points(t, 16, _gen())
    require(
        x.shape == (16, t.dim) and x.dtype == torch.float64,
        name,
        "energy",
        f"typical points have shape {tuple(x.shape)} and dtype {x.dtype}",
    )
    e = t.energy(x)
    require(e.shape == (16,), name, "energy", f"energy of (16, {t.dim}) has shape {tuple(e.shape)}")
    require(bool(torch.isfinite(e).all()), name, "energy", "energy is not finite at typical points")
    lp = t.log_prob(x)
    require(torch.allclose(lp, -e - (t.log_Z or 0.0)), name, "energy", "log_prob is not −E − log Z")


@_check
def float32(t: Target, name: str) -> str | None:
    """A float32 copy gives float32 energies close to the float64 ones."""
    x = typical_points(t, 16, _gen())
    e = t.energy(x)
    with _as_float32(t):
        e32 = t.energy(x.float())
    require(e32.dtype == torch.float32, name, "float32", f"float32 input gives {e32.dtype}")
    require(
        torch.allclose(e32.double(), e, rtol=1e-4, atol=1e-3),
        name,
        "float32",
        f"float32 energies differ: {e32.tolist()[:3]} against {e.tolist()[:3]}",
    )


@contextlib.contextmanager
def _as_float32(t: Target) -> Iterator[None]:
    """``t`` in float32 inside the block, restored exactly after it (targets that
    wrap a simulation engine cannot be deep-copied)."""
    params = [(p, p.data) for p in t.parameters()]
    buffers = [(m, k, b) for m in t.modules() for k, b in m._buffers.items()]
    t.float()
    try:
        yield
    finally:
        for p, data in params:
            p.data = data
        for m, k, b in buffers:
            m._buffers[k] = b


@_check
def gradient(t: Target, name: str) -> str | None:
    """``energy_and_grad`` equals autograd of ``energy`` and central differences
    (h = 1e-6, tolerance 1e-5 (1 + |E|), first :data:`MAX_DIMS` coordinates)."""
    x = typical_points(t, 4, _gen())
    e, grad = t.energy_and_grad(x)
    xr = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(t.energy(xr).sum(), xr)
    require(torch.allclose(e, t.energy(x)), name, "gradient", "energy_and_grad's energy differs")
    require(
        torch.allclose(grad, auto, rtol=1e-6, atol=1e-6),
        name,
        "gradient",
        "energy_and_grad's gradient differs from autograd's",
    )
    h, atol = 1e-6, 1e-5 * (1 + e.abs())  # central differences: rounding ≈ |E| 1e-16 / h
    for d in range(min(t.dim, MAX_DIMS)):
        step = torch.zeros(t.dim, dtype=x.dtype)
        step[d] = h
        fd = (t.energy(x + step) - t.energy(x - step)) / (2 * h)
        require(
            bool(((grad[:, d] - fd).abs() <= atol + 1e-5 * fd.abs()).all()),
            name,
            "gradient",
            f"∂E/∂x_{d} = {grad[:, d].tolist()} but central differences give {fd.tolist()}",
        )


@_check
def hooks(t: Target, name: str) -> str | None:
    """Declared hooks keep their shapes: base location (finite energy there), modes
    (labels in [0, n_modes), weights summing to 1), lattice shape."""
    loc = t.base_location()
    if loc is not None:
        require(tuple(loc.shape) == (t.dim,), name, "hooks", f"base_location has shape {loc.shape}")
        e = t.energy(loc.double().reshape(1, -1))
        require(
            bool(torch.isfinite(e).all()), name, "hooks", "energy at base_location is not finite"
        )
    if t.n_modes > 0:
        _check_modes(t, name)
    if isinstance(t, LatticeField):
        shape = tuple(t.lattice_shape)
        require(math.prod(shape) == t.dim, name, "hooks", f"lattice_shape {shape} ≠ dim {t.dim}")
    if isinstance(t, ParticleSystem):
        _check_particles(t, name)


def _check_particles(t: Target, name: str) -> None:
    """The particle hooks' shapes, and coordinates(positions(x)) = x for a chart."""
    x = typical_points(t, 8, _gen())
    pos = t.positions(x)
    n, d = t.n_particles, t.spatial_dim
    require(tuple(pos.shape) == (8, n, d), name, "hooks", f"positions: shape {tuple(pos.shape)}")
    pairs = t.pair_distances(x)
    want = (8, n * (n - 1) // 2)
    require(tuple(pairs.shape) == want, name, "hooks", f"pair_distances: {tuple(pairs.shape)}")
    if isinstance(t, ParticleChart):
        back = t.coordinates(pos)
        require(
            torch.allclose(back, x, rtol=1e-6, atol=1e-6),
            name,
            "hooks",
            "coordinates(positions(x)) differs from x (coordinates must invert positions)",
        )


def _check_modes(t: Target, name: str) -> None:
    labels = t.assign_modes(typical_points(t, 32, _gen()))
    ok = labels.shape == (32,) and not labels.is_floating_point()
    require(ok, name, "hooks", f"assign_modes gives {labels.dtype} of shape {tuple(labels.shape)}")
    inside = bool(((labels >= 0) & (labels < t.n_modes)).all())
    require(inside, name, "hooks", f"assign_modes labels outside [0, {t.n_modes})")
    w = t.mode_weights()
    if w is not None:
        ok = w.shape == (t.n_modes,) and bool((w >= 0).all()) and abs(float(w.sum()) - 1) < 1e-9
        require(ok, name, "hooks", "mode_weights is not a probability vector over the modes")


@_check
def exact_sampler(t: Target, name: str) -> str | None:
    """Exact samples: shape (n, dim), the same for the same seed, and Stein's identity
    E_p[∇E] = 0, E_p[x_i ∂_j E] = δ_ij within :data:`STEIN_SIGMAS` standard errors
    (on periodic coordinates E_p[sin x_i ∂_j E] = δ_ij E_p[cos x_i], see
    :func:`_stein_test_function`)."""
    if not t.exact_sampling:
        return "the target has no exact sampler"
    x = t.sample(N_STEIN, _gen(1))
    require(x.shape == (N_STEIN, t.dim), name, "exact_sampler", f"sample gives shape {x.shape}")
    require(
        torch.equal(t.sample(16, _gen(3)), t.sample(16, _gen(3))),
        name,
        "exact_sampler",
        "the same seed gives different samples",
    )
    _, g = t.energy_and_grad(x.double())
    k = min(t.dim, MAX_DIMS)
    f, df = _stein_test_function(t, x.double()[:, :k])
    stein = f[:, :, None] * g[:, None, :k] - torch.diag_embed(df)  # mean 0 under p
    terms = torch.cat([g[:, :k], stein.flatten(1)], 1)
    z = terms.mean(0).abs() / (terms.std(0) / math.sqrt(N_STEIN) + 1e-12)
    require(
        float(z.max()) <= STEIN_SIGMAS,
        name,
        "exact_sampler",
        f"exact samples break Stein's identity E[x ∇Eᵀ] = I, E[∇E] = 0 by {float(z.max()):.1f} "
        "standard errors: the sampler and the energy disagree",
    )


def _stein_test_function(t: Target, x: Tensor) -> tuple[Tensor, Tensor]:
    """f(x_i) and f′(x_i) of the first coordinates ``x`` ``(n, k)``: f(x) = x, or
    f(x) = sin x on periodic coordinates (``periodic_mask``: angles of period 2π),
    where x itself would leave a boundary term of the integration by parts
    (E[f(x_i) ∂_j E] = E[f′(x_i)] δ_ij needs f periodic there)."""
    mask = getattr(t, "periodic_mask", None)  # the PeriodicCoordinates hook
    if mask is None:
        return x, torch.ones_like(x)
    periodic = mask[: x.shape[1]].to(x.device)
    return torch.where(periodic, torch.sin(x), x), torch.where(
        periodic, torch.cos(x), torch.ones_like(x)
    )


@_check
def log_z(t: Target, name: str) -> str | None:
    """log Z agrees with importance sampling from N(mean, (1.5)² cov) of 2000 exact
    samples (4000 draws) within :data:`LOG_Z_SIGMAS` standard errors (+ 1e-3)."""
    if t.log_Z is None or not t.exact_sampling:
        return "needs both a log Z and an exact sampler"
    mask = getattr(t, "periodic_mask", None)  # the PeriodicCoordinates hook
    if mask is not None and bool(mask.any()):
        return "periodic coordinates: log Z is over the torus, a Gaussian on R^dim misses it"
    fit = t.sample(2000, _gen(2)).double()
    q = torch.distributions.MultivariateNormal(
        fit.mean(0), 2.25 * torch.cov(fit.T).reshape(t.dim, t.dim) + 1e-9 * torch.eye(t.dim)
    )
    torch.manual_seed(0)  # q draws through the global generator: fix it for the check
    y = q.sample((4000,))
    log_w = -t.energy(y).double() - q.log_prob(y)
    w = torch.exp(log_w - log_w.max())
    ess = float(w.sum() ** 2 / (w**2).sum())
    if ess < MIN_ESS:
        return f"importance sampling from a fitted Gaussian is too poor here (ESS {ess:.0f})"
    estimate = float(torch.logsumexp(log_w, 0) - math.log(4000))
    se = float(w.std() / w.mean()) / math.sqrt(4000)
    err = abs(estimate - t.log_Z)
    require(
        err <= LOG_Z_SIGMAS * se + 1e-3,
        name,
        "log_z",
        f"log_Z = {t.log_Z:.6g} but importance sampling gives {estimate:.6g} ± {se:.2g}",
    )
    return None


def check_target(
    target: Target, name: str | None = None, checks: Iterable[str] | None = None
) -> dict[str, str]:
    """Check that ``target`` keeps boltzbench's target contract; raise
    :class:`~boltzbench.testing.ConformanceError` naming the target, the check and
    why at the first failure. ``checks``: names from :data:`TARGET_CHECKS` (default
    all). Returns ``{check: "passed" | "skipped: why"}``. Cheap: a few points, and
    10 000 exact samples where the target has an exact sampler.
    """
    subject = f"target {name or type(target).__name__}"
    return run_checks(TARGET_CHECKS, checks, subject, target, subject)
