r"""CAGrad: the best worst-case improvement in a ball around the mean gradient (Liu et al., 2021)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._qp import min_norm_simplex, nonnegative_qp, solve_psd, whole_definite
from .base import GramianWeightedAggregator, gramian_to_numpy

_EPS = float(np.finfo(np.float64).eps)


class CAGrad(GramianWeightedAggregator):
    r"""Conflict-Averse Gradient descent.

    With :math:`g_0 = \frac1m \sum_i g_i` and radius :math:`\rho = c \lVert g_0 \rVert`, CAGrad maximises the
    worst improvement rate in a ball around :math:`g_0`:

    .. math::

        d = \arg\max_{\lVert d - g_0 \rVert \le \rho} \; \min_i g_i \cdot d
          = g_0 + \frac{\rho}{\lVert g_w \rVert} g_w, \qquad
        w = \arg\min_{w \in \Delta_m} g_w \cdot g_0 + \rho \lVert g_w \rVert, \quad g_w = J^\top w,

    so the weights are :math:`\frac1m \mathbf 1 + \frac{\rho}{\lVert g_w \rVert} w`. One task gives
    :math:`(1 + c)\, g_1`; ``c = 0`` gives the mean.

    The problem is solved in float64 on the Gramian :math:`G = J J^\top` divided by its trace, through the
    primal form: for a level :math:`\tau`, the squared distance :math:`D(\tau)` from :math:`g_0` to
    :math:`\{d : J d \ge \tau \mathbf 1\}` is a convex, piecewise-quadratic function of :math:`\tau`, whose
    pieces are read off an exact active-set solve of the dual (a nonnegative QP on :math:`G`). The optimum is
    the largest :math:`\tau` with :math:`D(\tau) = \rho^2`; it is located by a safeguarded root search that
    lands exactly on it once the right piece is found. If :math:`d^\star - g_0 = J^\top \nu` is the
    projection at that level, the weights are :math:`\frac1m \mathbf 1 + \nu`. No QP library is needed.

    Parameters
    ----------
    c : float, default 0.5
        Radius of the ball relative to :math:`\lVert g_0 \rVert`; must be nonnegative. The paper's
        convergence guarantee to a stationary point of the average loss requires ``c < 1``.

    Notes
    -----
    Conventions follow ``torchjd.aggregation.CAGrad`` (0.18): no final rescaling, i.e. the official code's
    ``rescale=0``. The official implementation defaults to ``rescale=1``, dividing :math:`d` by
    :math:`1 + c^2` (``rescale=2`` divides by :math:`1 + c`). torchjd solves the dual problem with cvxpy
    (Clarabel) and agrees with this class to solver precision, except when the convex hull of the rows
    (nearly) contains 0: torchjd then returns :math:`d = 0` once :math:`\lVert g_w \rVert` falls below
    ``norm_eps`` times :math:`\lVert J \rVert_F`, whereas here the maximiser of the worst improvement
    closest to :math:`g_0` is returned. The weights themselves may differ where they are not unique
    (linearly dependent rows); the direction does not.

    References
    ----------
    B. Liu, X. Liu, X. Jin, P. Stone, Q. Liu. *Conflict-Averse Gradient Descent for Multi-task Learning*.
    NeurIPS 2021. https://arxiv.org/abs/2110.14048
    """

    def __init__(self, c: float = 0.5) -> None:
        if not c >= 0.0:
            raise ValueError(f"c must be nonnegative, got {c}.")
        self.c = c

    def __repr__(self) -> str:
        return f"CAGrad(c={self.c})"

    def weights_from_gramian(self, G: Tensor) -> Tensor:
        dtype, device = G.dtype, G.device
        G = gramian_to_numpy(G)
        m = G.shape[0]
        mean = np.full(m, 1.0 / m)
        trace = G.trace()
        if trace > 0.0:
            mean = mean + _ball_step(G / trace, mean, self.c)
        return torch.as_tensor(mean, dtype=dtype, device=device)


def _ball_step(G: np.ndarray, mean: np.ndarray, c: float) -> np.ndarray:
    """Weights ``nu >= 0`` with ``J^T nu = d* - g_0`` (see :class:`CAGrad`), for a trace-normalised ``G``."""
    b = G @ mean  # b_i = g_i . g_0
    rho2 = c * c * (mean @ b)
    m = len(mean)
    if rho2 <= 0.0:  # c = 0 or g_0 = 0: the ball is the point g_0
        return np.zeros(m)
    rho2_bound = c * c * (mean @ np.abs(G) @ mean)  # bounds the rounding of rho2, with m·eps
    lo = b.min()  # g_0 itself reaches this level: D(lo) = 0
    hi = (b + np.sqrt(rho2 * G.diagonal())).min()  # no point of the ball does better than this
    if hi > 0.0 and (w := min_norm_simplex(G)) @ G @ w <= 1e-14:
        hi = 0.0  # 0 is in the convex hull of the rows: no direction improves every task
    tau, nu = hi, np.zeros(m)
    definite = whole_definite(G)  # once: every problem below is on this G
    nu_lo = nu  # the solution at lo, inside the ball
    for _ in range(100):
        # Projection of g_0 onto {J d >= tau 1} is g_0 + J^T nu; warm-started on the previous support.
        try:
            nu = nonnegative_qp(G, b - tau, guess=nu > 0, definite=definite)[0]
        except ValueError:  # unbounded dual: {J d >= tau 1} is empty, tau is too high
            hi, tau = tau, 0.5 * (lo + tau)
            continue
        dist2 = nu @ G @ nu
        # On the boundary to rounding: a quadratic form in m terms, dist2 carries an error of up to about
        # m·eps |nu|ᵀ|G||nu| (rho2 likewise), far above 1e-13 rho2 when |g_0| is small against the rows
        # and nu large: on a strongly stationary J at c = 1 the answer lies on the boundary at tau = 0,
        # and dist2 - rho2 there is rounding of either sign.
        if abs(dist2 - rho2) <= max(1e-13 * rho2, m * _EPS * (nu @ np.abs(G) @ nu + rho2_bound)):
            return nu
        if dist2 < rho2:
            lo, nu_lo = tau, nu
        else:
            hi = tau
        if hi - lo <= 1e-15 * max(abs(lo), abs(hi)):
            break
        # On the current piece, nu(tau + t) = nu + t s with G_PP s_P = 1, so D(tau + t) = dist2 + 2tB + t²A.
        free = np.flatnonzero(nu > 0)
        s = solve_psd(G[np.ix_(free, free)][None], np.ones((1, free.size)), estimate=not definite)[0]
        A, B = s.sum(), nu.sum()
        denominator = B + np.sqrt(max(B * B + A * (rho2 - dist2), 0.0))
        new_tau = tau + (rho2 - dist2) / denominator if denominator > 0.0 else lo
        tau = new_tau if lo < new_tau < hi else 0.5 * (lo + hi)
    return nu_lo
