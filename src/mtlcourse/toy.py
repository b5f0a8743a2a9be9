r"""Where can we *see* optimisation? The two-objective 2-D problems of the papers, and their trajectories.

Three problems :math:`f : \mathbb R^2 \to \mathbb R^m` from the papers of the course, each with the papers'
starting points and optimiser settings as class attributes (``STARTS``, ``LR``, ``OPTIMIZER``, ``STEPS``):

* :class:`PCGradToy` (Yu et al., 2020), two log-valleys that meet only at infinity;
* :class:`CAGradToy` (Liu et al., 2021), the same valleys above :math:`x_2 = 0` and two quadratics below,
  with a known Pareto set;
* :class:`EWQ` (Quinton & Rey, 2024), the element-wise quadratic :math:`(x_1^2, x_2^2)`.

:func:`trajectories` runs Jacobian descent with any aggregator from several starts at once; :func:`landscape`
evaluates the losses on a grid for contour plots. Nothing here plots.

The papers' runs are long (250 000 Adam steps for the PCGrad toy), so :func:`trajectories` has two engines:
a generic torch path (autograd and ``aggregator.weights``, about a millisecond per step) and, for these three
problems with Mean, PCGrad, UPGrad, MGDA or CAGrad, a scalar engine on Python floats (analytic gradients
``jacobian_scalar``, two-task closed forms of the weights, Adam or SGD), a few microseconds per step, which
keeps the notebooks within their time budget. The tests tie the scalar engine to the generic path.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Literal

import torch
from torch import Tensor

from .aggregation import MGDA, CAGrad, Mean, PCGrad, UPGrad
from .aggregation.base import Aggregator

__all__ = [
    "EWQ",
    "BatchedAdam",
    "CAGradToy",
    "PCGradToy",
    "ToyProblem",
    "Trajectories",
    "landscape",
    "trajectories",
]

LOWER = 5e-6  # the papers' floor under |.| inside the logarithms


def _check_points(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[-1] != 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (..., 2), got {shape}.")
    return x


def _log_floor(a: Tensor) -> Tensor:
    r""":math:`\log \max(|a|, 5 \cdot 10^{-6})` (zero gradient below the floor)."""
    return a.abs().clamp(min=LOWER).log()


def _log_floor_scalar(a: float) -> float:
    return math.log(max(abs(a), LOWER))


class ToyProblem(ABC):
    """A two-parameter problem with ``m`` objectives; ``problem(x)`` is ``problem.losses(x)``.

    Class attributes give the papers' settings: ``STARTS`` (tuple of ``(x1, x2)``), ``LR``, ``OPTIMIZER``
    (``"adam"`` or ``"sgd"``) and ``STEPS`` (``None`` where the paper does not state it); ``pareto_set``
    describes the Pareto set in words. The three problems below also have ``losses_scalar(x1, x2)`` and
    ``jacobian_scalar(x1, x2)``, the same on Python floats with hand-written derivatives (zero below the
    floors of the clamps, as with autograd), for the scalar engine of :func:`trajectories`.
    """

    name: ClassVar[str]
    m: ClassVar[int] = 2
    STARTS: ClassVar[tuple[tuple[float, float], ...]]
    LR: ClassVar[float]
    OPTIMIZER: ClassVar[Literal["adam", "sgd"]]
    STEPS: ClassVar[int | None] = None
    pareto_set: ClassVar[str]

    @abstractmethod
    def losses(self, x: Tensor) -> Tensor:
        """The ``m`` objectives at ``x`` of shape ``(..., 2)``, stacked in a last dimension: ``(..., m)``."""

    def __call__(self, x: Tensor) -> Tensor:
        return self.losses(x)

    @classmethod
    def starts(cls, dtype: torch.dtype = torch.float64) -> Tensor:
        """The paper's starting points, as a tensor of shape ``(len(STARTS), 2)``."""
        return torch.tensor(cls.STARTS, dtype=dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PCGradToy(ToyProblem):
    r"""The two-objective toy of Yu et al. (2020), Appendix D.

    .. math::

        L_1(\theta) = 20 \log \max(|\tfrac12 \theta_1 + \tanh \theta_2|,\ 5 \cdot 10^{-6}), \qquad
        L_2(\theta) = 25 \log \max(|\tfrac12 \theta_1 - \tanh \theta_2 + 2|,\ 5 \cdot 10^{-6}).

    Each loss is a narrow valley; the two valleys meet only as :math:`\theta_2 \to \infty` (at
    :math:`\theta_1 = -2`). The paper starts at :math:`(0.5, -3)` with Adam, learning rate :math:`10^{-3}`.

    References
    ----------
    T. Yu, S. Kumar, A. Gupta, S. Levine, K. Hausman, C. Finn. *Gradient Surgery for Multi-Task Learning*.
    NeurIPS 2020, Appendix D. https://arxiv.org/abs/2001.06782
    """

    name = "PCGrad toy (Yu et al., 2020)"
    STARTS = ((0.5, -3.0),)
    LR = 1e-3
    OPTIMIZER = "adam"
    pareto_set = (
        "Where both losses sit at their floor 20·log(5e-6), 25·log(5e-6): θ1 ≈ −2 and θ2 ≳ 6.45 (both clamps "
        "active need 1 − tanh θ2 < 5e-6). Elsewhere the gradients are ∝ (0.5, ±sech²θ2), never "
        "anti-parallel, so no other point is Pareto-stationary except on a valley floor, where the "
        "other loss still decreases along the valley."
    )

    def losses(self, x: Tensor) -> Tensor:
        x = _check_points(x)
        t1, t2 = x[..., 0], x[..., 1]
        tanh = torch.tanh(t2)
        return torch.stack([20.0 * _log_floor(0.5 * t1 + tanh), 25.0 * _log_floor(0.5 * t1 - tanh + 2.0)], -1)

    def losses_scalar(self, t1: float, t2: float) -> tuple[float, float]:
        """:meth:`losses` at one point, on Python floats."""
        tanh = math.tanh(t2)
        return 20.0 * _log_floor_scalar(0.5 * t1 + tanh), 25.0 * _log_floor_scalar(0.5 * t1 - tanh + 2.0)

    def jacobian_scalar(self, t1: float, t2: float) -> tuple[tuple[float, float], tuple[float, float]]:
        """The Jacobian of :meth:`losses` at one point, ``((∂L1/∂θ1, ∂L1/∂θ2), (∂L2/∂θ1, ∂L2/∂θ2))``."""
        tanh = math.tanh(t2)
        sech2 = 1.0 - tanh * tanh
        u1, u2 = 0.5 * t1 + tanh, 0.5 * t1 - tanh + 2.0
        k1 = 20.0 / u1 if abs(u1) >= LOWER else 0.0  # dL1/du1: zero below the floor
        k2 = 25.0 / u2 if abs(u2) >= LOWER else 0.0
        return (0.5 * k1, k1 * sech2), (0.5 * k2, -k2 * sech2)


class CAGradToy(ToyProblem):
    r"""The two-objective toy of Liu et al. (2021), Section 5.1 and Figure 1.

    With :math:`\ell(a) = \log \max(|a|, 5 \cdot 10^{-6})`,

    .. math::

        f_1 &= \ell\big(\tfrac12(-x_1 - 7) - \tanh(-x_2)\big) + 6, &
        f_2 &= \ell\big(\tfrac12(-x_1 + 3) + \tanh(-x_2) + 2\big) + 6, \\
        g_1 &= \big((-x_1 + 7)^2 + 0.1 (-x_2 - 8)^2\big) / 10 - 20, &
        g_2 &= \big((-x_1 - 7)^2 + 0.1 (-x_2 - 8)^2\big) / 10 - 20, \\
        c_1 &= \max(\tanh(x_2 / 2), 0), & c_2 &= \max(\tanh(-x_2 / 2), 0),

    and :math:`L_i = c_1 f_i + c_2 g_i`: log-valleys above :math:`x_2 = 0`, quadratics below. The paper
    runs Adam (learning rate :math:`10^{-3}`) from five starts.

    **Pareto set.** For :math:`x_2 < 0`, :math:`L_i = t\, g_i` with :math:`t = \tanh(-x_2/2)`. A convex
    combination :math:`w_1 \nabla L_1 + w_2 \nabla L_2` vanishes in :math:`x_1` iff
    :math:`w_1 = (x_1 + 7)/14 \in [0, 1]`, i.e. :math:`-7 \le x_1 \le 7`, and then in :math:`x_2` iff

    .. math::

        0.02\, t\, (x_2 + 8) + t' \Big(\frac{49 - x_1^2 + 0.1 (x_2 + 8)^2}{10} - 20\Big) = 0,
        \qquad t' = -\tfrac12 (1 - t^2),

    a shallow arc from :math:`x_2 \approx -8.3551` at :math:`x_1 = 0` down to :math:`x_2 \approx -8.4345` at
    :math:`x_1 = \pm 7` (:meth:`pareto_x2` solves it). The paper draws it as the segment
    :math:`x_2 = -8.3552`, :math:`-7 \le x_1 \le 7`: exact at :math:`x_1 = 0` to :math:`10^{-4}`, a good
    approximation for :math:`|x_1| \lesssim 5`.

    References
    ----------
    B. Liu, X. Liu, X. Jin, P. Stone, Q. Liu. *Conflict-Averse Gradient Descent for Multi-task Learning*.
    NeurIPS 2021, Section 5.1. https://arxiv.org/abs/2110.14048
    """

    name = "CAGrad toy (Liu et al., 2021)"
    STARTS = ((-8.5, 7.5), (-8.5, 5.0), (0.0, 0.0), (9.0, 9.0), (10.0, -8.0))
    LR = 1e-3
    OPTIMIZER = "adam"
    PAPER_PARETO_X2: ClassVar[float] = -8.3552  # the paper's segment; see pareto_x2 for the exact arc
    pareto_set = (
        "For x2 < 0, the arc {(x1, pareto_x2(x1)) : −7 ≤ x1 ≤ 7}, from x2 ≈ −8.3551 at x1 = 0 to "
        "x2 ≈ −8.4345 at x1 = ±7; the paper draws it as the segment x2 = −8.3552."
    )

    def losses(self, x: Tensor) -> Tensor:
        x = _check_points(x)
        x1, x2 = x[..., 0], x[..., 1]
        tanh = torch.tanh(-x2)
        f1 = _log_floor(0.5 * (-x1 - 7.0) - tanh) + 6.0
        f2 = _log_floor(0.5 * (-x1 + 3.0) + tanh + 2.0) + 6.0
        shared = 0.1 * (-x2 - 8.0) ** 2
        g1 = ((-x1 + 7.0) ** 2 + shared) / 10.0 - 20.0
        g2 = ((-x1 - 7.0) ** 2 + shared) / 10.0 - 20.0
        c1 = torch.tanh(0.5 * x2).clamp(min=0.0)
        c2 = torch.tanh(-0.5 * x2).clamp(min=0.0)
        return torch.stack([c1 * f1 + c2 * g1, c1 * f2 + c2 * g2], -1)

    def losses_scalar(self, x1: float, x2: float) -> tuple[float, float]:
        """:meth:`losses` at one point, on Python floats."""
        tanh = math.tanh(-x2)
        f1 = _log_floor_scalar(0.5 * (-x1 - 7.0) - tanh) + 6.0
        f2 = _log_floor_scalar(0.5 * (-x1 + 3.0) + tanh + 2.0) + 6.0
        shared = 0.1 * (-x2 - 8.0) ** 2
        g1 = ((-x1 + 7.0) ** 2 + shared) / 10.0 - 20.0
        g2 = ((-x1 - 7.0) ** 2 + shared) / 10.0 - 20.0
        c1, c2 = max(math.tanh(0.5 * x2), 0.0), max(math.tanh(-0.5 * x2), 0.0)
        return c1 * f1 + c2 * g1, c1 * f2 + c2 * g2

    def jacobian_scalar(self, x1: float, x2: float) -> tuple[tuple[float, float], tuple[float, float]]:
        """The Jacobian of :meth:`losses` at one point, ``((∂L1/∂x1, ∂L1/∂x2), (∂L2/∂x1, ∂L2/∂x2))``.

        Only the active side is evaluated; at :math:`x_2 = 0` both are, as torch's ``clamp`` passes the
        derivative of both :math:`c_1` and :math:`c_2` there.
        """
        a = b = p = q = 0.0
        c1, c2 = math.tanh(0.5 * x2), math.tanh(-0.5 * x2)
        if c1 >= 0.0:  # the valleys, c1 f_i
            dc1 = 0.5 * (1.0 - c1 * c1)
            tanh = math.tanh(-x2)
            sech2 = 1.0 - tanh * tanh  # d tanh(-x2) / dx2 = -sech2
            u1, u2 = 0.5 * (-x1 - 7.0) - tanh, 0.5 * (-x1 + 3.0) + tanh + 2.0
            k1 = 1.0 / u1 if abs(u1) >= LOWER else 0.0  # d log max(|u|, floor) / du
            k2 = 1.0 / u2 if abs(u2) >= LOWER else 0.0
            a, b = -0.5 * c1 * k1, dc1 * (_log_floor_scalar(u1) + 6.0) + c1 * k1 * sech2
            p, q = -0.5 * c1 * k2, dc1 * (_log_floor_scalar(u2) + 6.0) - c1 * k2 * sech2
        if c2 >= 0.0:  # the quadratics, c2 g_i
            dc2 = -0.5 * (1.0 - c2 * c2)
            shared = 0.1 * (-x2 - 8.0) ** 2
            g1 = ((-x1 + 7.0) ** 2 + shared) / 10.0 - 20.0
            g2 = ((-x1 - 7.0) ** 2 + shared) / 10.0 - 20.0
            dg_dx2 = 0.02 * (x2 + 8.0)
            a, b = a + c2 * (x1 - 7.0) / 5.0, b + dc2 * g1 + c2 * dg_dx2
            p, q = p + c2 * (x1 + 7.0) / 5.0, q + dc2 * g2 + c2 * dg_dx2
        return (a, b), (p, q)

    @staticmethod
    def pareto_x2(x1: Tensor | float) -> Tensor:
        r"""The Pareto set's :math:`x_2` above each :math:`x_1 \in [-7, 7]` (float64 tensor, shape of ``x1``).

        Solves the stationarity equation of the class docstring by bisection on :math:`[-9, -8]`, where its
        left side changes sign exactly once (to float64 precision).
        """
        x1 = torch.as_tensor(x1, dtype=torch.float64)
        if not bool(((x1 >= -7.0) & (x1 <= 7.0)).all()):
            raise ValueError("The Pareto set of CAGradToy only spans -7 <= x1 <= 7.")

        def residual(x2: Tensor) -> Tensor:
            t, u = torch.tanh(-0.5 * x2), x2 + 8.0
            return 0.02 * t * u - 0.5 * (1.0 - t * t) * ((49.0 - x1 * x1 + 0.1 * u * u) / 10.0 - 20.0)

        lo, hi = torch.full_like(x1, -9.0), torch.full_like(x1, -8.0)  # residual(lo) < 0 < residual(hi)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            negative = residual(mid) < 0.0
            lo, hi = torch.where(negative, mid, lo), torch.where(negative, hi, mid)
        return 0.5 * (lo + hi)

    @classmethod
    def pareto_points(cls, num: int = 100) -> Tensor:
        r"""``num`` points of the Pareto set, evenly spaced in :math:`x_1 \in [-7, 7]`: shape ``(num, 2)``."""
        x1 = torch.linspace(-7.0, 7.0, num, dtype=torch.float64)
        return torch.stack([x1, cls.pareto_x2(x1)], -1)


class EWQ(ToyProblem):
    r"""The element-wise quadratic of Quinton & Rey (2024): :math:`f(x) = (x_1^2, x_2^2)`.

    The Jacobian is :math:`\mathrm{diag}(2x_1, 2x_2)`: the gradients never conflict, the Pareto set is the
    single point :math:`0`, and every point of the two axes is Pareto-stationary (a convex combination of
    the rows vanishes there). The paper runs SGD with learning rate 0.075 for 50 steps from five starts.

    References
    ----------
    P. Quinton, V. Rey. *Jacobian Descent for Multi-Objective Optimization*. 2024.
    https://arxiv.org/abs/2406.16232
    """

    name = "Element-wise quadratic (Quinton & Rey, 2024)"
    STARTS = ((3.0, -2.0), (0.0, -3.0), (-4.0, 4.0), (-3.0, 4.0), (-3.5, -0.75))
    LR = 0.075
    OPTIMIZER = "sgd"
    STEPS = 50
    pareto_set = "The origin (the common minimiser); both axes are Pareto-stationary."

    def losses(self, x: Tensor) -> Tensor:
        return _check_points(x) ** 2

    def losses_scalar(self, x1: float, x2: float) -> tuple[float, float]:
        """:meth:`losses` at one point, on Python floats."""
        return x1 * x1, x2 * x2

    def jacobian_scalar(self, x1: float, x2: float) -> tuple[tuple[float, float], tuple[float, float]]:
        """The Jacobian of :meth:`losses` at one point: ``((2 x1, 0), (0, 2 x2))``."""
        return (2.0 * x1, 0.0), (0.0, 2.0 * x2)


# ---------------------------------------------------------------------------------------------------------
# Optimisers, vectorised over the starts
# ---------------------------------------------------------------------------------------------------------


class BatchedAdam:
    r"""Adam on a batch of independent points, with exactly the arithmetic of ``torch.optim.Adam``.

    .. math::

        \mu_t = \beta_1 \mu_{t-1} + (1 - \beta_1) d_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) d_t^2, \quad
        x_t = x_{t-1} - \frac{\eta}{1 - \beta_1^t} \, \frac{\mu_t}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon},

    element-wise, so every row of ``x`` evolves as if it had its own ``torch.optim.Adam`` (no weight decay,
    no amsgrad). :meth:`step` updates ``x`` in place.
    """

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.lr, self.betas, self.eps = lr, betas, eps
        self.t = 0
        self.exp_avg: Tensor | None = None
        self.exp_avg_sq: Tensor | None = None

    @torch.no_grad()
    def step(self, x: Tensor, direction: Tensor) -> Tensor:
        """Take one step on ``x`` (in place) along ``-direction``, the "gradient"; return ``x``."""
        beta1, beta2 = self.betas
        if self.exp_avg is None or self.exp_avg_sq is None:
            self.exp_avg, self.exp_avg_sq = torch.zeros_like(x), torch.zeros_like(x)
        self.t += 1
        self.exp_avg.lerp_(direction, 1.0 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(direction, direction, value=1.0 - beta2)
        step_size = self.lr / (1.0 - beta1**self.t)
        denominator = (self.exp_avg_sq.sqrt() / (1.0 - beta2**self.t) ** 0.5).add_(self.eps)
        return x.addcdiv_(self.exp_avg, denominator, value=-step_size)


class _BatchedSGD:
    def __init__(self, lr: float) -> None:
        self.lr = lr

    @torch.no_grad()
    def step(self, x: Tensor, direction: Tensor) -> Tensor:
        return x.add_(direction, alpha=-self.lr)


# ---------------------------------------------------------------------------------------------------------
# Trajectories and landscapes
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trajectories:
    """What :func:`trajectories` records, at steps ``0, r, 2r, ...`` (``r = record_every``).

    Attributes
    ----------
    points : Tensor
        ``(S, T, 2)``: the iterates, starting points included.
    losses : Tensor
        ``(S, T, m)``: the losses at those points.
    weights : Tensor or None
        ``(S, T, m)``: the aggregator's weights at those points (the direction taken from there is
        ``weights @ J``); ``None`` for an aggregator given as a plain callable ``J -> d``.
    steps : Tensor
        ``(T,)``: the step index of each recorded point.
    """

    points: Tensor
    losses: Tensor
    weights: Tensor | None
    steps: Tensor


def _jacobians(problem: ToyProblem, x: Tensor, m: int) -> tuple[Tensor, Tensor]:
    r"""Losses ``(S, m)`` and Jacobians ``(S, m, 2)`` at the ``S`` independent points ``x``.

    Each point is repeated ``m`` times, ``x_rep[s, i] = x[s]``, the losses of all copies come from one
    forward pass, and one backward pass of :math:`\sum_{s, i} L_i(x_{rep}[s, i])` gives
    ``grad[s, i] = ∇L_i(x[s])``: the copies are independent, so this is one pass instead of one per objective.
    """
    with torch.enable_grad():
        x_rep = x.detach().unsqueeze(1).expand(-1, m, -1).clone().requires_grad_(True)
        losses = problem.losses(x_rep)  # (S, m copies, m objectives)
        eye = torch.eye(m, dtype=losses.dtype, device=losses.device)
        (J,) = torch.autograd.grad((losses * eye).sum(), x_rep)
    return losses[:, 0].detach(), J


# ---------------------------------------------------------------------------------------------------------
# The scalar engine: two objectives, two parameters, Python floats
# ---------------------------------------------------------------------------------------------------------
#
# The weight functions take the Jacobian's rows g1 = (a, b) and g2 = (p, q) and return the two weights of
# exactly what the aggregators' ``weights`` compute for m = 2 (the tests check it on near-degenerate J too).
# With G = J Jᵀ: PCGrad (1 - G12/G11, 1 - G12/G22) if G12 < 0, else (1, 1), whatever the order of the
# projections; UPGrad half of it; MGDA the min-norm point of the segment [g2, g1]; CAGrad below.


def _mean_weights(a: float, b: float, p: float, q: float) -> tuple[float, float]:
    return 0.5, 0.5


def _pcgrad_weights(a: float, b: float, p: float, q: float) -> tuple[float, float]:
    inner = a * p + b * q
    if inner >= 0.0:  # no conflict (or a zero row): nothing is projected
        return 1.0, 1.0
    return 1.0 - inner / (a * a + b * b), 1.0 - inner / (p * p + q * q)


def _upgrad_weights(a: float, b: float, p: float, q: float) -> tuple[float, float]:
    w1, w2 = _pcgrad_weights(a, b, p, q)
    return 0.5 * w1, 0.5 * w2


def _mgda_weights(a: float, b: float, p: float, q: float) -> tuple[float, float]:
    da, db = a - p, b - q
    gap = da * da + db * db  # ||g1 - g2||²
    if gap <= 0.0:  # g1 = g2: every weighting gives the same direction
        return 0.5, 0.5
    w1 = min(max(-(p * da + q * db) / gap, 0.0), 1.0)  # (G22 - G12) / ||g1 - g2||², clipped
    return w1, 1.0 - w1


def _cagrad_weights(c: float, a: float, b: float, p: float, q: float) -> tuple[float, float]:
    r"""Two-task CAGrad weights :math:`\tfrac12 + \rho w_i / \lVert g_w \rVert`.

    The dual :math:`\min_{w \in [0, 1]} F(w) = g_w \cdot g_0 + \rho \lVert g_w \rVert`, with
    :math:`g_w = g_2 + w (g_1 - g_2)`, is convex; with :math:`s = g_2 \cdot (g_1 - g_2) + w \lVert g_1 - g_2
    \rVert^2` and :math:`\beta = (g_1 - g_2) \cdot g_0`, :math:`F'(w) = 0` reads :math:`s = -\beta
    \sqrt{\det G / (\rho^2 \lVert g_1 - g_2 \rVert^2 - \beta^2)}` when the radicand is positive (otherwise
    :math:`F'` has the sign of :math:`\beta` and the minimiser is an end point); clipping to :math:`[0, 1]`
    gives the minimiser. When 0 is in the convex hull of the rows (the aggregator's tolerance) and the ball
    reaches the cone :math:`\{d : g_i \cdot d \ge 0\}`, the aggregator returns the projection of
    :math:`g_0` onto that cone, i.e. onto the one half-plane that :math:`g_0` violates, if any.
    """
    G11, G12, G22 = a * a + b * b, a * p + b * q, p * p + q * q
    g01, g02 = 0.5 * (a + p), 0.5 * (b + q)
    rho2 = c * c * (g01 * g01 + g02 * g02)
    if not rho2 > 0.0:  # c = 0 or g0 = 0: the mean
        return 0.5, 0.5
    w, _ = _mgda_weights(a, b, p, q)
    n1, n2 = p + w * (a - p), q + w * (b - q)
    if n1 * n1 + n2 * n2 <= 1e-14 * (G11 + G22):  # 0 is in the convex hull of the rows
        nu1 = max(-0.5 * (G11 + G12), 0.0) / G11 if G11 > 0.0 else 0.0  # g0 + nu1 g1 ⟂ g1 if g0·g1 < 0
        nu2 = max(-0.5 * (G12 + G22), 0.0) / G22 if G22 > 0.0 else 0.0
        if nu1 * nu1 * G11 + nu2 * nu2 * G22 <= rho2:
            return 0.5 + nu1, 0.5 + nu2
    da, db = a - p, b - q
    beta = 0.5 * (G11 - G22)
    radicand = rho2 * (da * da + db * db) - beta * beta
    if radicand > 0.0:
        cross = a * q - b * p
        s = -beta * abs(cross) / math.sqrt(radicand)
        w = min(max((s - (p * da + q * db)) / (da * da + db * db), 0.0), 1.0)
    else:
        w = 0.0 if beta > 0.0 else 1.0 if beta < 0.0 else 0.5
    n1, n2 = p + w * (a - p), q + w * (b - q)
    k = math.sqrt(rho2 / (n1 * n1 + n2 * n2))
    return 0.5 + k * w, 0.5 + k * (1.0 - w)


_SCALAR_WEIGHTS = {Mean: _mean_weights, PCGrad: _pcgrad_weights, UPGrad: _upgrad_weights, MGDA: _mgda_weights}
_SCALAR_PROBLEMS = (PCGradToy, CAGradToy, EWQ)


def _scalar_weights(aggregator: object) -> Callable[[float, float, float, float], tuple[float, float]] | None:
    """The two-task weight function of exactly Mean, PCGrad, UPGrad, MGDA or CAGrad; ``None`` otherwise."""
    if type(aggregator) is CAGrad:
        return partial(_cagrad_weights, float(aggregator.c))
    return _SCALAR_WEIGHTS.get(type(aggregator))  # type: ignore[arg-type]


def _scalar_run(
    problem: ToyProblem,
    weigh: Callable[[float, float, float, float], tuple[float, float]],
    starts: list[list[float]],
    steps: int,
    lr: float,
    adam: bool,
    record_every: int,
    eps: float = 1e-8,
) -> list[list[tuple[float, ...]]]:
    """Run each start in turn on Python floats; return, per start, the rows ``(x1, x2, L1, L2, w1, w2)``.

    Same arithmetic as the generic path: the direction is ``w @ J``, and Adam is :class:`BatchedAdam`'s.
    """
    jacobian, losses = problem.jacobian_scalar, problem.losses_scalar  # type: ignore[attr-defined]
    beta1, beta2 = 0.9, 0.999
    last = (steps // record_every) * record_every
    runs = []
    for x1, x2 in starts:
        rows: list[tuple[float, ...]] = []
        m1 = m2 = v1 = v2 = 0.0
        for t in range(last + 1):
            (a, b), (p, q) = jacobian(x1, x2)
            w1, w2 = weigh(a, b, p, q)
            if t % record_every == 0:
                rows.append((x1, x2, *losses(x1, x2), w1, w2))
            if t == last:
                break
            d1, d2 = w1 * a + w2 * p, w1 * b + w2 * q
            if adam:
                m1 += (1.0 - beta1) * (d1 - m1)
                m2 += (1.0 - beta1) * (d2 - m2)
                v1 = beta2 * v1 + (1.0 - beta2) * d1 * d1
                v2 = beta2 * v2 + (1.0 - beta2) * d2 * d2
                step_size = lr / (1.0 - beta1 ** (t + 1))
                root = math.sqrt(1.0 - beta2 ** (t + 1))
                x1 -= step_size * m1 / (math.sqrt(v1) / root + eps)
                x2 -= step_size * m2 / (math.sqrt(v2) / root + eps)
            else:
                x1 -= lr * d1
                x2 -= lr * d2
        runs.append(rows)
    return runs


def trajectories(
    problem: ToyProblem,
    aggregator: Aggregator | Callable[[Tensor], Tensor],
    starts: Tensor | object,
    *,
    steps: int,
    lr: float,
    optimizer: Literal["adam", "sgd"] = "adam",
    record_every: int = 1,
    dtype: torch.dtype | None = None,
    fast: bool = True,
    eps: float = 1e-8,
) -> Trajectories:
    r"""Jacobian descent on a toy problem from several starts at once.

    At every step and for every start, the Jacobian :math:`J \in \mathbb R^{m \times 2}` of the losses is
    aggregated into a direction :math:`d = A(J)`, which the optimiser uses as the gradient:
    :math:`x \leftarrow x - \eta d` (SGD) or an Adam step (:class:`BatchedAdam`, same arithmetic as
    ``torch.optim.Adam`` with its default betas, and its default ``eps`` unless given). The starts never
    interact.

    **Two engines.** The papers' runs are long (250 000 Adam steps for the PCGrad toy, 5 starts × 100 000
    steps for the CAGrad toy) and the notebooks have about a minute in all, but a torch step costs about a
    millisecond of autograd and tiny tensor ops. So, when ``fast`` is true, the problem is exactly
    :class:`PCGradToy`, :class:`CAGradToy` or :class:`EWQ` and the aggregator exactly
    :class:`~mtlcourse.aggregation.Mean`, :class:`~mtlcourse.aggregation.PCGrad`,
    :class:`~mtlcourse.aggregation.UPGrad`, :class:`~mtlcourse.aggregation.MGDA` or
    :class:`~mtlcourse.aggregation.CAGrad`, a scalar engine runs instead, about a hundred times faster:
    the problem's analytic ``jacobian_scalar``, the two-task closed forms of the weights and the optimiser,
    all on Python floats (double precision whatever ``dtype``, which then only sets the returned tensors).
    The tests tie it to the generic path (``fast=False``), which evaluates all starts in one forward and one
    backward pass and calls ``aggregator.weights`` once per start (it is also the path for any other
    problem or aggregator, e.g. a plain callable).

    Parameters
    ----------
    problem : ToyProblem
        E.g. :class:`CAGradToy`; anything with ``losses(x: (S, 2)) -> (S, m)``.
    aggregator : mtlcourse.aggregation.Aggregator or callable
        An :class:`~mtlcourse.aggregation.Aggregator` (its ``weights`` are recorded too), or any callable
        mapping ``J`` of shape ``(m, 2)`` to a direction of shape ``(2,)``, e.g. a torchjd aggregator.
    starts : tensor or array-like
        Starting points, shape ``(S, 2)``, e.g. ``problem.starts()``.
    steps : int
        Number of optimisation steps, at least 1.
    lr : float
        Learning rate, positive.
    optimizer : {"adam", "sgd"}, default "adam"
    record_every : int, default 1
        Record every ``record_every``-th iterate: ``T = steps // record_every + 1`` points per start.
    dtype : torch.dtype, optional
        Precision of the run; default: that of ``starts`` if it is a floating-point tensor, else the
        default dtype.
    fast : bool, default True
        Use the scalar engine where it applies (``PCGrad`` then draws no random numbers: for two tasks the
        order of the projections does not matter).
    eps : float, default 1e-8
        Adam's :math:`\epsilon` (default: ``torch.optim.Adam``'s), positive; ignored by SGD. Where the
        direction is much smaller than ``eps`` (e.g. near a Pareto-stationary point), Adam's step is about
        :math:`\eta d / \epsilon`, a plain gradient step; where it is much larger, about :math:`\eta` per
        coordinate whatever its size.

    Returns
    -------
    Trajectories
        ``points`` ``(S, T, 2)``, ``losses`` ``(S, T, m)``, ``weights`` ``(S, T, m)`` or ``None``, ``steps``,
        all on the device of ``starts`` (whichever engine ran).
    """
    if dtype is None:
        floating = isinstance(starts, Tensor) and starts.is_floating_point()
        dtype = starts.dtype if floating else torch.get_default_dtype()  # type: ignore[union-attr]
    x = torch.as_tensor(starts, dtype=dtype).detach().clone()
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] == 0:
        raise ValueError(f"starts must have shape (S, 2) with S >= 1, got {tuple(x.shape)}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}.")
    if isinstance(record_every, bool) or not isinstance(record_every, int) or record_every < 1:
        raise ValueError(f"record_every must be an integer >= 1, got {record_every!r}.")
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}.")
    if not (isinstance(eps, int | float) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive number, got {eps!r}.")
    if optimizer == "adam":
        opt: BatchedAdam | _BatchedSGD = BatchedAdam(lr, eps=eps)
    elif optimizer == "sgd":
        opt = _BatchedSGD(lr)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}.")
    if not callable(aggregator):
        raise TypeError(f"aggregator must be an Aggregator or a callable J -> d, got {aggregator!r}.")
    weighted = isinstance(aggregator, Aggregator)

    S, T = x.shape[0], steps // record_every + 1
    weigh = _scalar_weights(aggregator) if fast and type(problem) in _SCALAR_PROBLEMS else None
    if weigh is not None:
        rows = _scalar_run(problem, weigh, x.tolist(), steps, lr, optimizer == "adam", record_every, eps)
        table = torch.tensor(rows, dtype=dtype, device=x.device)
        points, losses, weights = (part.contiguous() for part in table.split(2, -1))
        return Trajectories(points, losses, weights, torch.arange(T, device=x.device) * record_every)
    with torch.no_grad():
        m = problem.losses(x).shape[-1]
    points, losses_out = x.new_empty(S, T, 2), x.new_empty(S, T, m)
    weights_out = x.new_empty(S, T, m) if weighted else None
    last = (T - 1) * record_every  # the last recorded step: no need to go further
    for t in range(last + 1):
        losses, J = _jacobians(problem, x, m)
        w = None
        if weighted:
            w = torch.stack([aggregator.weights(J[s]) for s in range(S)])  # type: ignore[union-attr]
        if t % record_every == 0:
            k = t // record_every
            points[:, k], losses_out[:, k] = x, losses
            if weights_out is not None:
                weights_out[:, k] = w
        if t == last:
            break
        if w is not None:
            direction = torch.einsum("sm,smn->sn", w, J)
        else:
            direction = torch.stack([aggregator(J[s]) for s in range(S)])
            if direction.shape != x.shape:
                raise ValueError(f"The aggregator returned directions of shape {tuple(direction.shape[1:])}.")
        opt.step(x, direction)
    return Trajectories(points, losses_out, weights_out, torch.arange(T, device=x.device) * record_every)


def landscape(
    problem: ToyProblem,
    x1_range: tuple[float, float],
    x2_range: tuple[float, float],
    resolution: int = 200,
    *,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor, Tensor]:
    """The losses on a regular grid, for contour plots (``plt.contour(X1, X2, losses[..., i])``).

    Returns
    -------
    X1, X2 : Tensor
        ``(R, R)`` coordinates, ``indexing="xy"``: ``X1[i, j]`` is the ``j``-th value of ``x1``,
        ``X2[i, j]`` the ``i``-th value of ``x2``.
    losses : Tensor
        ``(R, R, m)``, evaluated without autograd.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}.")
    for name, (low, high) in (("x1_range", x1_range), ("x2_range", x2_range)):
        if not low < high:
            raise ValueError(f"{name} must be (low, high) with low < high, got {(low, high)}.")
    X1, X2 = torch.meshgrid(
        torch.linspace(*x1_range, resolution, dtype=dtype),
        torch.linspace(*x2_range, resolution, dtype=dtype),
        indexing="xy",
    )
    with torch.no_grad():
        return X1, X2, problem.losses(torch.stack([X1, X2], -1))
