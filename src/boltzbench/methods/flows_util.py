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

References
----------
Dinh et al. 2016, "Density estimation using Real NVP", arXiv:1605.08803 (affine coupling).
Durkan et al. 2019, "Neural Spline Flows", arXiv:1906.04032 (rational-quadratic splines).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.distributions import AffineTransform, Transform, constraints
from torch.distributions.utils import _sum_rightmost
from zuko.distributions import DiagNormal
from zuko.flows.coupling import GeneralCouplingTransform
from zuko.lazy import Flow, LazyTransform, UnconditionalDistribution, UnconditionalTransform
from zuko.transforms import (
    CouplingTransform,
    DependentTransform,
    MonotonicAffineTransform,
    MonotonicRQSTransform,
)

__all__ = [
    "ACTIVATIONS",
    "COUPLINGS",
    "Standardize",
    "FastCoupling",
    "inverse_and_ladj",
    "coupling_masks",
    "FlowModel",
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


class Standardize(LazyTransform):
    """A fixed elementwise affine map u = (x - shift) / scale.

    Parameters
    ----------
    shift, scale
        Buffers of shape ``(dim,)``; ``scale > 0``. Log-det: -Σᵢ log scaleᵢ.
    """

    def __init__(self, shift: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("shift", shift)
        self.register_buffer("scale", scale)

    def forward(self, c: torch.Tensor | None = None) -> Transform:
        return AffineTransform(self.shift, self.scale).inv


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
    """x = t⁻¹(y) and log |det ∂x/∂y|, with one pass for splines and affine maps."""
    if isinstance(t, DependentTransform):
        x, ladj = inverse_and_ladj(t.base, y)
        return x, _sum_rightmost(ladj, t.reinterpreted)
    if isinstance(t, MonotonicRQSTransform):
        return _rqs_inverse_and_ladj(t, y)
    x = t.inv(y)
    return x, -t.log_abs_det_jacobian(x, y)


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
    ):
        if dim < 2:
            raise ValueError(f"a coupling flow needs dim >= 2, got {dim}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; valid choices: {', '.join(ACTIVATIONS)}"
            )
        univariate, shapes = _univariate(coupling, bins, bound)
        layers: list[LazyTransform] = [
            Standardize(shift, scale),
            UnconditionalTransform(MonotonicAffineTransform, torch.zeros(dim), torch.zeros(dim)),
        ]
        for mask in coupling_masks(dim, transforms):
            layer = _CouplingLayer(
                dim,
                mask=mask,
                univariate=univariate,
                shapes=shapes,
                hidden_features=list(hidden_features),
                activation=ACTIVATIONS[activation],
            )
            _zero_last_layer(layer)
            layers.append(layer)
        base = UnconditionalDistribution(DiagNormal, torch.zeros(dim), torch.ones(dim), buffer=True)
        super().__init__(layers, base)

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
        """
        z = torch.randn(n, self.dim, generator=generator, dtype=self.dtype)
        q = self()
        x, ladj = q.transform.inv.call_and_ladj(z)
        return x, q.base.log_prob(z) - ladj

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log q(x) for ``x`` of shape ``(n, dim)`` in the model's dtype; shape ``(n,)``."""
        return self().log_prob(x)
