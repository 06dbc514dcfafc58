"""The coupling flow of the flow-based methods (:class:`FlowModel`), assembled from zuko parts.

The flow maps data ``x`` to a standard normal ``z`` (zuko's convention: the
transform goes towards the base) through

    x ─ Standardize ─▶ u = (x - shift) / scale ─ ElementwiseAffine ─▶ ─ Coupling₁ … Coupling_T ─▶ z

and its density is the change of variables

    log q(x) = log N(z; 0, I) + log |det ∂z/∂x|.

``Standardize`` is fixed (buffers, part of the state dict); the rest is trained.
Every coupling layer keeps half of the coordinates and transforms the other half
elementwise, with parameters predicted from the kept half by an MLP. The last
layer of each MLP starts at zero, so a fresh flow is exactly
``N(shift, diag(scale²))``.

Sampling runs the flow backwards (z → x). zuko's generic inverse of a coupling
layer evaluates the MLP twice (once to invert, once more for the log-det) and
the spline twice; :class:`FastCoupling` inverts with one MLP call and one
spline pass (:func:`inverse_and_ladj`), which halves the cost of reverse-KL
training and of sampling. The maths is unchanged and is tested against autograd.

**Periodic coordinates** (a target's ``periodic_mask``; see
:class:`~boltzbench.targets.base.PeriodicCoordinates`): given a mask, the flow is
a mixed one on the product of circles [−π, π) and the real line,

    x ─ Standardize (real coordinates only) ─▶ ElementwiseAffine (real only) ─▶ mixed couplings ─▶ z

with the base N(0, 1) on the real coordinates and a von Mises distribution
vM(μ, κ) on each angle, κ = 1/scale² (κ = 0: uniform). In each coupling layer the
kept angles enter the MLP as (cos θ, sin θ), so the conditioner is continuous on
the torus, and a transformed angle goes through a circular rational-quadratic
spline (:class:`CircularSplineTransform`: a monotonic spline of [−π, π] onto
itself whose end derivatives are equal, so it is a diffeomorphism of the circle;
Rezende et al. 2020), a real one through the ordinary spline or affine map. The
Jacobian stays triangular, so log q is exact; samples are wrapped into [−π, π)
(the same points) and log q(x) = log q(wrap(x)) is a density on the circle in
every angle. Without a mask the flow is exactly the one above.

References
----------
Dinh et al. 2016, "Density estimation using Real NVP", arXiv:1605.08803 (affine coupling).
Durkan et al. 2019, "Neural Spline Flows", arXiv:1906.04032 (rational-quadratic splines).
Rezende et al. 2020, "Normalizing Flows on Tori and Spheres", ICML, arXiv:2002.02428
(circular splines; zuko's ``NCSF``).
Best & Fisher 1979, "Efficient simulation of the von Mises distribution",
J. R. Stat. Soc. C 28, 152 (the von Mises sampler).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn
from torch.distributions import AffineTransform, Distribution, Transform, constraints
from torch.distributions.utils import _sum_rightmost
from zuko.distributions import DiagNormal
from zuko.flows.coupling import GeneralCouplingTransform
from zuko.lazy import (
    Flow,
    LazyDistribution,
    LazyTransform,
    UnconditionalDistribution,
    UnconditionalTransform,
)
from zuko.nn import MLP
from zuko.transforms import (
    ComposedTransform,
    CouplingTransform,
    DependentTransform,
    MonotonicAffineTransform,
    MonotonicRQSTransform,
)
from zuko.utils import unpack

from boltzbench.targets.base import wrap_angle  # re-exported: the flows' angle map

__all__ = [
    "ACTIVATIONS",
    "COUPLINGS",
    "Standardize",
    "FastCoupling",
    "inverse_and_ladj",
    "coupling_masks",
    "FlowModel",
    "wrap_angle",
    "circular_moments",
    "CircularSplineTransform",
    "ElementSplit",
    "VonMisesNormal",
    "sample_von_mises",
]

#: activation names accepted by :class:`FlowModel`
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
}

#: elementwise transforms of the coupling layers
COUPLINGS = ("spline", "affine")


def circular_moments(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Circular mean and circular standard deviation of ``angles`` ``(n, k)``, ``(k,)`` each.

    mean = atan2(mean sin θ, mean cos θ); std = sqrt(−2 ln R̄), R̄ = |mean e^{iθ}| the
    mean resultant length (Mardia & Jupp 2000, eqs. 2.2.4 and 2.3.11); +inf when R̄ = 0.
    For a von Mises distribution of large κ, std → 1/sqrt(κ).
    """
    s, c = torch.sin(angles).mean(0), torch.cos(angles).mean(0)
    r = torch.hypot(s, c).clamp(max=1.0)
    return torch.atan2(s, c), torch.sqrt(-2 * torch.log(r))


class Standardize(LazyTransform):
    """A fixed elementwise affine map u = (x - shift) / scale, the identity on angles.

    Parameters
    ----------
    shift, scale
        Buffers of shape ``(dim,)``; ``scale > 0``. Log-det: -Σᵢ log scaleᵢ over
        the real coordinates.
    periodic
        Bool ``(dim,)`` or None: coordinates left as they are (angles; their
        shift and scale set the base's von Mises instead, see :class:`FlowModel`).
    """

    def __init__(
        self, shift: torch.Tensor, scale: torch.Tensor, periodic: torch.Tensor | None = None
    ):
        super().__init__()
        self.register_buffer("shift", shift)
        self.register_buffer("scale", scale)
        self.register_buffer("periodic", periodic)  # None: not in the state dict

    def forward(self, c: torch.Tensor | None = None) -> Transform:
        shift, scale = self.shift, self.scale
        if self.periodic is not None:
            shift = torch.where(self.periodic, 0.0, shift)
            scale = torch.where(self.periodic, 1.0, scale)
        return AffineTransform(shift, scale).inv


def _rqs_inverse_and_ladj(t: MonotonicRQSTransform, y: torch.Tensor):
    """Inverse of a rational-quadratic spline and its log-det, in one pass.

    In the bin [x₀, x₁] → [y₀, y₁] with slope s = (y₁ − y₀)/(x₁ − x₀) and knot
    derivatives d₀, d₁, the relative position ξ ∈ [0, 1] of x solves
    aξ² + bξ + c = 0 with Δ = y − y₀, a = (y₁ − y₀)(s − d₀) + Δ(d₀ + d₁ − 2s),
    b = (y₁ − y₀)d₀ − Δ(d₀ + d₁ − 2s), c = −sΔ, and the forward derivative is
    dy/dx = s²[d₁ξ² + 2sξ(1 − ξ) + d₀(1 − ξ)²] / [s + (d₀ + d₁ − 2s)ξ(1 − ξ)]²
    (Durkan et al. 2019, eqs. 4–8). Outside [−B, B] the spline is the identity.
    """
    k = t.searchsorted(t.vertical, y) - 1
    inside, x0, x1, y0, y1, d0, d1, s = t.bin(k)
    delta = inside * (y - y0)  # zero outside, so no NaN reaches the gradient
    curve = d0 + d1 - 2 * s
    a = (y1 - y0) * (s - d0) + delta * curve
    b = (y1 - y0) * d0 - delta * curve
    c = -s * delta
    xi = 2 * c / (-b - (b**2 - 4 * a * c).sqrt())
    xi1 = xi * (1 - xi)
    dydx = s**2 * (d1 * xi**2 + 2 * s * xi1 + d0 * (1 - xi) ** 2) / (s + curve * xi1) ** 2
    x = torch.where(inside, x0 + xi * (x1 - x0), y)
    return x, -(inside * dydx.log())


def inverse_and_ladj(t: Transform, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x = t⁻¹(y) and log |det ∂x/∂y|, with one pass for splines and affine maps
    (circular splines, :class:`ElementSplit` and compositions included)."""
    if isinstance(t, DependentTransform):
        x, ladj = inverse_and_ladj(t.base, y)
        return x, _sum_rightmost(ladj, t.reinterpreted)
    if isinstance(t, MonotonicRQSTransform):
        return _rqs_inverse_and_ladj(t, y)
    if isinstance(t, ElementSplit):
        return t.merge([(idx, *inverse_and_ladj(part, y[..., idx])) for idx, part in t.parts])
    if isinstance(t, ComposedTransform):
        ladj = 0
        for part in reversed(t.transforms):
            y, step = inverse_and_ladj(part, y)
            ladj = ladj + step
        return y, ladj
    x = t.inv(y)
    return x, -t.log_abs_det_jacobian(x, y)


class CircularSplineTransform(MonotonicRQSTransform):
    """A circular rational-quadratic spline: a diffeomorphism of the circle [−π, π).

    zuko's :class:`~zuko.transforms.MonotonicRQSTransform` on [−π, π] (``bound = π``),
    whose knot derivatives at the two ends, fixed at 1 there, are here one learned
    value d shared by both ends: the map fixes −π ≡ π and its derivative is
    continuous across it, the condition of Rezende et al. 2020 (§3.2) for a
    spline to be a circle diffeomorphism. All-zero parameters give the identity.
    (zuko's ``NCSF`` composes a half-turn ``CircularShiftTransform`` with a spline
    whose end derivatives are pinned at 1: it starts at a half-turn, not the
    identity, and pins the density ratio at one point per layer.)

    Parameters
    ----------
    widths, heights
        Unconstrained bin widths and heights, shape ``(*, K)``.
    derivatives
        Unconstrained knot derivatives, shape ``(*, K)``: the K − 1 interior
        knots, then the ends' shared d.
    slope
        The minimum slope (derivatives lie in (slope, 1/slope)).
    """

    def __init__(
        self,
        widths: torch.Tensor,
        heights: torch.Tensor,
        derivatives: torch.Tensor,
        slope: float = 1e-3,
    ):
        super().__init__(widths, heights, derivatives[..., :-1], bound=math.pi, slope=slope)
        end = derivatives[..., -1:]
        end = torch.exp(end / (1 + abs(end / math.log(slope))))  # zuko's squashing
        self.derivatives = torch.cat([end, self.derivatives[..., 1:-1], end], dim=-1)

    def bin(self, k: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """zuko's bin lookup with ``k`` clamped to the K bins: −π lies in the first bin
        (zuko's lookup leaves it outside, as the identity with log-det 0, not log d)."""
        return super().bin(k.clamp(0, self.bins - 1))


class ElementSplit(Transform):
    """An elementwise transform made of parts: ``parts[j][1]`` acts on the entries
    ``parts[j][0]`` (a long tensor) of the last axis; the parts partition it.

    Log-det: elementwise, each entry's from its part (shape of ``x``).
    """

    domain = constraints.real
    codomain = constraints.real
    bijective = True

    def __init__(self, parts: list[tuple[torch.Tensor, Transform]]):
        super().__init__()
        self.parts = parts

    @staticmethod
    def merge(
        pieces: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, ladj) assembled from ``(idx, values, ladj)`` pieces on the last axis."""
        size = sum(len(idx) for idx, _, _ in pieces)
        first = pieces[0][1]
        y = first.new_empty((*first.shape[:-1], size))
        ladj = first.new_empty((*first.shape[:-1], size))
        for idx, v, l in pieces:  # noqa: E741
            y[..., idx], ladj[..., idx] = v, l
        return y, ladj

    def call_and_ladj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.merge([(idx, *t.call_and_ladj(x[..., idx])) for idx, t in self.parts])

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return self.call_and_ladj(x)[0]

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return inverse_and_ladj(self, y)[0]

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.call_and_ladj(x)[1]


class FastCoupling(CouplingTransform):
    """zuko's :class:`~zuko.transforms.CouplingTransform` with a one-pass inverse."""

    @property
    def inv(self) -> Transform:
        return _InverseCoupling(self)


class _InverseCoupling(Transform):
    """The inverse of a :class:`FastCoupling`: y ↦ x with one MLP call."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, coupling: FastCoupling):
        super().__init__()
        self.coupling = coupling

    @property
    def inv(self) -> Transform:
        return self.coupling

    def _call(self, y: torch.Tensor) -> torch.Tensor:
        return self.coupling._inverse(y)

    def _inverse(self, x: torch.Tensor) -> torch.Tensor:
        return self.coupling(x)

    def log_abs_det_jacobian(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -self.coupling.log_abs_det_jacobian(x, y)

    def call_and_ladj(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.coupling
        y_a, y_b = c.split(y)
        x_b, ladj = inverse_and_ladj(c.meta(y_a), y_b)
        return c.merge(y_a, x_b, y.shape), ladj


class _CouplingLayer(GeneralCouplingTransform):
    """zuko's lazy coupling layer, returning a :class:`FastCoupling`."""

    def forward(self, c: torch.Tensor | None = None) -> Transform:
        return FastCoupling(partial(self.meta, c), self.mask)


def coupling_masks(dim: int, n: int) -> list[torch.Tensor]:
    """Boolean masks of ``n`` coupling layers (True = the coordinate is kept).

    The masks cycle through odd coordinates, even coordinates, first half and
    second half, so every coordinate is transformed and conditioned on both its
    neighbours and far coordinates. Each has shape ``(dim,)``.
    """
    idx = torch.arange(dim)
    cycle = [idx % 2 == 1, idx % 2 == 0, idx < dim // 2, idx >= dim // 2]
    return [cycle[i % 4] for i in range(n)]


def _univariate(coupling: str, bins: int, bound: float):
    """The zuko elementwise transform and its parameter shapes."""
    if coupling == "spline":
        rqs = partial(MonotonicRQSTransform, bound=bound)
        return rqs, [(bins,), (bins,), (bins - 1,)]
    if coupling == "affine":
        return MonotonicAffineTransform, [(), ()]
    raise ValueError(f"unknown coupling {coupling!r}; valid choices: {', '.join(COUPLINGS)}")


def _zero_last_layer(layer: _CouplingLayer) -> None:
    """Start a coupling layer at the identity by zeroing its MLP's output layer."""
    last = layer.hyper[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)


class _MixedCouplingLayer(LazyTransform):
    """A coupling layer over real coordinates and angles (``periodic``).

    The kept coordinates (``mask``) enter the MLP as themselves (real) and as
    (cos θ, sin θ) (angles); a transformed real coordinate goes through
    ``univariate`` (parameter ``shapes``), a transformed angle through a
    :class:`CircularSplineTransform` of ``bins`` bins. MLP keywords in ``mlp``.
    """

    def __init__(
        self,
        mask: torch.Tensor,
        periodic: torch.Tensor,
        univariate,
        shapes: list[tuple[int, ...]],
        bins: int,
        **mlp,
    ):
        super().__init__()
        self.register_buffer("mask", mask)
        self.register_buffer("periodic", periodic)
        kept, moved = periodic[mask], periodic[~mask]
        self.register_buffer("kept_angles", kept, persistent=False)
        self.register_buffer("moved_real", (~moved).nonzero().squeeze(-1), persistent=False)
        self.register_buffer("moved_angles", moved.nonzero().squeeze(-1), persistent=False)
        self.univariate, self.shapes = univariate, shapes
        self.circular_shapes = [(bins,), (bins,), (bins,)]
        self.sizes = [
            len(self.moved_real) * sum(math.prod(s) for s in shapes),
            len(self.moved_angles) * 3 * bins,
        ]
        n_in = int((~kept).sum()) + 2 * int(kept.sum())
        self.hyper = MLP(n_in, sum(self.sizes), **mlp)

    def features(self, x_a: torch.Tensor) -> torch.Tensor:
        """MLP input ``(*, n_real + 2 n_angles)`` of the kept coordinates ``x_a``."""
        theta = x_a[..., self.kept_angles]
        return torch.cat([x_a[..., ~self.kept_angles], torch.cos(theta), torch.sin(theta)], -1)

    def meta(self, x_a: torch.Tensor) -> Transform:
        phi_real, phi_angle = self.hyper(self.features(x_a)).split(self.sizes, dim=-1)
        parts = []
        if len(self.moved_real):
            phi = unpack(phi_real.unflatten(-1, (len(self.moved_real), -1)), self.shapes)
            parts.append((self.moved_real, self.univariate(*phi)))
        if len(self.moved_angles):
            phi = phi_angle.unflatten(-1, (len(self.moved_angles), -1))
            phi = unpack(phi, self.circular_shapes)
            parts.append((self.moved_angles, CircularSplineTransform(*phi)))
        return DependentTransform(ElementSplit(parts), 1)

    def forward(self, c: torch.Tensor | None = None) -> Transform:
        return FastCoupling(self.meta, self.mask)


class _RealAffine(LazyTransform):
    """The trainable elementwise affine map u ↦ exp(a) u + b on the real coordinates,
    the identity on the angles (``periodic``); starts at the identity."""

    def __init__(self, periodic: torch.Tensor):
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(len(periodic)))
        self.log_scale = nn.Parameter(torch.zeros(len(periodic)))
        self.register_buffer("periodic", periodic)

    def forward(self, c: torch.Tensor | None = None) -> Transform:
        real = (~self.periodic).to(self.shift.dtype)
        return MonotonicAffineTransform(self.shift * real, self.log_scale * real)


def sample_von_mises(
    loc: torch.Tensor, concentration: torch.Tensor, n: int, generator: torch.Generator | None
) -> torch.Tensor:
    """``n`` draws of k independent von Mises angles vM(loc, κ), shape ``(n, k)``, in [−π, π).

    Exact rejection samplers, vectorized, all randomness from ``generator``:
    κ < 1, proposals uniform on the circle accepted with probability
    exp(κ (cos θ − 1)) (acceptance I₀(κ)e^{−κ} ≥ 0.46); κ ≥ 1, Best & Fisher's
    (1979) wrapped-Cauchy envelope (acceptance ≥ 0.65). float64 throughout.
    """
    kappa = concentration.to(torch.float64)
    k = len(kappa)
    out = torch.zeros(n, k, dtype=torch.float64)
    todo = torch.ones(n, k, dtype=torch.bool)
    tau = 1 + torch.sqrt(1 + 4 * kappa.clamp(min=1.0) ** 2)
    rho = (tau - torch.sqrt(2 * tau)) / (2 * kappa.clamp(min=1.0))
    r = (1 + rho**2) / (2 * rho)
    while todo.any():
        u1, u2, u3 = torch.rand(3, n, k, generator=generator, dtype=torch.float64)
        # κ < 1: uniform proposals
        small = torch.log(u2) <= kappa * (torch.cos(2 * math.pi * u1) - 1)
        theta_small = 2 * math.pi * u1
        # κ ≥ 1: Best & Fisher
        z = torch.cos(math.pi * u1)
        f = (1 + r * z) / (r + z)
        c = kappa * (r - f)
        large = (c * (2 - c) - u2 > 0) | (torch.log(c / u2) + 1 - c >= 0)
        theta_large = torch.sign(u3 - 0.5) * torch.acos(f.clamp(-1.0, 1.0))
        use_small = kappa < 1
        ok = torch.where(use_small, small, large) & todo
        out = torch.where(ok, torch.where(use_small, theta_small, theta_large), out)
        todo &= ~ok
    return wrap_angle(out + loc.to(torch.float64))


class VonMisesNormal(Distribution):
    """The mixed flow's base: N(0, 1) on the real coordinates, vM(loc, κ) on the angles.

    log p(z) = Σ_real log N(zᵢ; 0, 1) + Σ_angles [κᵢ cos(zᵢ − locᵢ) − log(2π I₀(κᵢ))],
    with log I₀(κ) = log i0e(κ) + κ (stable for large κ). κ = 0: uniform on [−π, π).

    Parameters
    ----------
    periodic
        Bool ``(dim,)``: the angles.
    loc, concentration
        ``(dim,)`` each; read on the angles only.
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, periodic: torch.Tensor, loc: torch.Tensor, concentration: torch.Tensor):
        super().__init__(event_shape=periodic.shape, validate_args=False)
        self.periodic, self.loc, self.concentration = periodic, loc, concentration

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        kappa = self.concentration
        normal = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
        log_norm = math.log(2 * math.pi) + torch.log(torch.special.i0e(kappa))
        circle = kappa * (torch.cos(z - self.loc) - 1) - log_norm
        return torch.where(self.periodic, circle, normal).sum(-1)

    def draw(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """``n`` draws ``(n, dim)`` in the dtype of ``loc``, all randomness from ``generator``
        (the normals first, then the angles)."""
        dim, dtype = len(self.periodic), self.loc.dtype
        z = torch.randn(n, dim, generator=generator, dtype=dtype)
        idx = self.periodic.nonzero().squeeze(-1)
        theta = sample_von_mises(self.loc[idx], self.concentration[idx], n, generator)
        z[:, idx] = theta.to(dtype)
        return z

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        n = math.prod(sample_shape)
        return self.draw(n, None).reshape(*sample_shape, len(self.periodic))


class _VonMisesNormalBase(LazyDistribution):
    """The lazy :class:`VonMisesNormal` (fixed buffers ``periodic``, ``loc``, ``concentration``)."""

    def __init__(self, periodic: torch.Tensor, loc: torch.Tensor, concentration: torch.Tensor):
        super().__init__()
        self.register_buffer("periodic", periodic)
        self.register_buffer("loc", loc)
        self.register_buffer("concentration", concentration)

    def forward(self, c: torch.Tensor | None = None) -> VonMisesNormal:
        return VonMisesNormal(self.periodic, self.loc, self.concentration)


def _mixed_layers(
    shift: torch.Tensor,
    scale: torch.Tensor,
    periodic: torch.Tensor,
    masks: list[torch.Tensor],
    univariate,
    shapes,
    bins: int,
    mlp: dict,
) -> tuple[list[LazyTransform], LazyDistribution]:
    """The layers and base of the mixed flow (module docstring): the angles' shift and
    scale become the base's von Mises loc and κ = 1/scale²."""
    layers: list[LazyTransform] = [Standardize(shift, scale, periodic), _RealAffine(periodic)]
    for mask in masks:
        layer = _MixedCouplingLayer(mask, periodic, univariate, shapes, bins, **mlp)
        _zero_last_layer(layer)
        layers.append(layer)
    loc = torch.where(periodic, wrap_angle(shift), 0.0)
    concentration = torch.where(periodic, scale.pow(-2), 0.0)
    return layers, _VonMisesNormalBase(periodic, loc, concentration)


class FlowModel(Flow):
    """The coupling flow q of the flow-based methods, as the module that owns its parameters.

    zuko's split: the module holds the parameters and the fixed standardization
    (its ``state_dict``), and calling it, ``model()``, returns the distribution q
    (the maths object, with ``log_prob`` and the transform). The methods below
    are what ``flow``, ``fab`` and ``flow_mcmc`` use: :meth:`sample` (draws with
    log q, differentiable for reverse KL), :meth:`log_prob` and
    :attr:`standardization`.

    Parameters
    ----------
    dim
        Number of coordinates, at least 2.
    shift, scale
        The fixed standardization, shape ``(dim,)`` each.
    transforms
        Number of coupling layers T.
    hidden_features
        Widths of each coupling MLP's hidden layers.
    coupling
        ``"spline"`` (monotonic rational-quadratic spline with ``bins`` bins on
        ``[-bound, bound]``, identity outside; Durkan et al. 2019) or ``"affine"``
        (u ↦ exp(a) u + b; Dinh et al. 2016).
    bins, bound
        Spline bins and half-width of the spline's domain (standardized units).
    activation
        A key of :data:`ACTIVATIONS`.
    periodic
        Bool ``(dim,)`` or None: the coordinates that are angles on [−π, π)
        (a target's ``periodic_mask``). With any True, the mixed flow of the
        module docstring: on the angles, ``shift`` and ``scale`` are the base's
        von Mises loc and 1/sqrt(κ) (``scale = inf``: uniform), a circular spline
        of ``bins`` bins moves them (``coupling`` applies to the real ones).
        None or all False: the flow above, exactly.
    """

    def __init__(
        self,
        dim: int,
        shift: torch.Tensor,
        scale: torch.Tensor,
        transforms: int = 8,
        hidden_features: tuple[int, ...] | list[int] = (128, 128),
        coupling: str = "spline",
        bins: int = 8,
        bound: float = 5.0,
        activation: str = "relu",
        periodic: torch.Tensor | None = None,
    ):
        if dim < 2:
            raise ValueError(f"a coupling flow needs dim >= 2, got {dim}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; valid choices: {', '.join(ACTIVATIONS)}"
            )
        univariate, shapes = _univariate(coupling, bins, bound)
        mlp = {"hidden_features": list(hidden_features), "activation": ACTIVATIONS[activation]}
        masks = coupling_masks(dim, transforms)
        if periodic is not None and bool(periodic.any()):
            if periodic.shape != (dim,):
                raise ValueError(f"periodic must have shape ({dim},), got {tuple(periodic.shape)}")
            periodic = periodic.to(torch.bool)
            spline = (univariate, shapes, bins)
            layers, base = _mixed_layers(shift, scale, periodic, masks, *spline, mlp)
            super().__init__(layers, base)
            return
        layers = [
            Standardize(shift, scale),
            UnconditionalTransform(MonotonicAffineTransform, torch.zeros(dim), torch.zeros(dim)),
        ]
        for mask in masks:
            layer = _CouplingLayer(dim, mask=mask, univariate=univariate, shapes=shapes, **mlp)
            _zero_last_layer(layer)
            layers.append(layer)
        base = UnconditionalDistribution(DiagNormal, torch.zeros(dim), torch.ones(dim), buffer=True)
        super().__init__(layers, base)

    @property
    def periodic(self) -> torch.Tensor | None:
        """Bool ``(dim,)``: the angles of a mixed flow, or None (no angle)."""
        return self.transform.transforms[0].periodic

    @property
    def standardization(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(shift, scale) of the fixed first layer, shape ``(dim,)`` each."""
        first = self.transform.transforms[0]
        return first.shift, first.scale

    @property
    def dim(self) -> int:
        return self.standardization[0].shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.standardization[0].dtype

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x = g(z), z ∼ N(0, I) drawn from ``generator``, and log q(x) = log N(z) −
        log |det ∂g/∂z|: shapes ``(n, dim)`` and ``(n,)``, in the model's dtype.

        Reparameterized: gradients reach the parameters unless under ``no_grad``.
        A mixed flow draws its base with :meth:`VonMisesNormal.draw` and returns
        its angles wrapped into [−π, π).
        """
        q = self()
        if self.periodic is None:
            z = torch.randn(n, self.dim, generator=generator, dtype=self.dtype)
        else:
            z = q.base.draw(n, generator)
        x, ladj = q.transform.inv.call_and_ladj(z)
        return self._wrap(x), q.base.log_prob(z) - ladj

    def _wrap(self, x: torch.Tensor) -> torch.Tensor:
        """x with its angles wrapped into [−π, π) (the same points of the circle)."""
        periodic = self.periodic
        return x if periodic is None else torch.where(periodic, wrap_angle(x), x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log q(x) for ``x`` of shape ``(n, dim)`` in the model's dtype; shape ``(n,)``.
        A mixed flow reads its angles modulo 2π (a density on the circle in each)."""
        return self().log_prob(self._wrap(x))
