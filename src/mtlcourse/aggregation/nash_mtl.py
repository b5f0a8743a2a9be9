r"""Nash-MTL: the weights of the Nash bargaining solution between the tasks (Navon et al., 2022)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import GramianWeightedAggregator, gramian_to_numpy

SOLVER = "CLARABEL"


def _cvxpy() -> Any:
    """Import cvxpy, or raise an ``ImportError`` that says what to install."""
    try:
        import cvxpy
    except ImportError as error:  # pragma: no cover - cvxpy is in the pinned set
        raise ImportError("NashMTL needs cvxpy (and its Clarabel solver): pip install cvxpy") from error
    return cvxpy


class NashMTL(GramianWeightedAggregator):
    r"""Nash-MTL (Algorithm 1 of the paper): the tasks bargain over the update direction.

    The Nash bargaining solution of the game whose players are the tasks, with utilities
    :math:`g_i^\top d` over the ball :math:`\lVert d \rVert \le \epsilon`, is :math:`d = J^\top \alpha` with

    .. math::

        G \alpha = 1 / \alpha \quad (\text{element-wise}), \qquad \alpha > 0,

    so that :math:`\alpha_i\, g_i^\top d = 1`: a task with a small or conflicting gradient gets a large
    weight. The paper approximates it by a sequence of convex problems (its section 3.3): starting from the
    previous :math:`\alpha`, each solves

    .. math::

        \min_{\alpha \ge 0} \; \mathbf 1^\top \tilde G \alpha + \frac{\nabla\varphi(\alpha_{\rm prev})^\top
        (\alpha - \alpha_{\rm prev})}{\nu} \quad \text{s.t.} \quad
        \log(\nu\,\alpha_i) + \log((\tilde G \alpha)_i) \ge 0,

    with :math:`\tilde G = G / \nu`, :math:`\nu = \lVert G \rVert_F` and
    :math:`\varphi(\alpha) = -\sum_i \log \alpha_i + \log (\tilde G \alpha)_i`, for at most ``optim_niter``
    rounds; it stops early when :math:`\lVert \tilde G \alpha - 1/\alpha \rVert < 10^{-3}` or when a round
    moves :math:`\alpha` by less than :math:`10^{-6}`. The weights are recomputed every
    ``update_weights_every`` calls and reused in between; if :math:`\lVert J^\top \alpha \rVert` exceeds
    ``max_norm`` (``0`` disables this), :math:`\alpha` is scaled down to reach it. The state (the previous
    :math:`\alpha`, the call counter, the compiled problem) is forgotten by :meth:`reset`; calling with
    another number of tasks without :meth:`reset` is an error.

    Notes
    -----
    This is the procedure of ``torchjd.aggregation.NashMTL`` (0.18), itself adapted from the official
    code, with the same defaults (``max_norm=1.0``, ``update_weights_every=1``, ``optim_niter=20``) and
    its quirks kept: the test :math:`\lVert \tilde G \alpha - 1/\alpha \rVert < 10^{-3}` is on the
    *normalised* Gramian while the rounds converge to :math:`G \alpha = 1/\alpha` (the constraint is on
    :math:`\nu \tilde G = G`), so it is met only by chance and the rounds stop when :math:`\alpha` stops
    moving; the stopping test is evaluated at the round's *starting* point, so the returned :math:`\alpha`
    is that of the last round that did not stop; a solver failure keeps the previous :math:`\alpha`; the
    first :math:`\alpha_{\rm prev}` is :math:`\mathbf 1`. One difference: torchjd and the official code
    solve with ECOS (``max_iters=100``), which cvxpy no longer ships (since 1.6; torchjd's ``nash-mtl``
    extra installs it); this class uses Clarabel, cvxpy's default interior-point solver for exponential
    cones, so it needs no extra package. Both solve each round to about :math:`10^{-8}`, and the weights
    agree with torchjd's to about :math:`10^{-7}` over 20 steps (tested). Where the official code and
    LibMTL clip the norm of the shared gradient after ``backward`` (``clip_grad_norm_``), torchjd and this
    class scale :math:`\alpha` instead, which gives the same trunk update. Nash-MTL is not homogeneous:
    the constraint makes :math:`\alpha` scale like :math:`1/\lVert J \rVert`, so :math:`d` does too
    (before the ``max_norm`` cap). When :math:`G` is singular (more tasks than the rank of :math:`J`),
    :math:`G \alpha = 1/\alpha` has no solution: :math:`\alpha` grows along the null space of :math:`G`
    from round to round (which leaves :math:`d` bounded), the solver reports inaccurate solutions, and the
    weights then depend on its rounding, here as in torchjd.

    Parameters
    ----------
    max_norm
        Largest norm of :math:`d`; ``0`` disables the cap.
    update_weights_every
        Recompute the weights every this many calls (reuse the last ones in between).
    optim_niter
        Largest number of convex rounds per update.

    References
    ----------
    A. Navon, A. Shamsian, I. Achituve, H. Maron, K. Kawaguchi, G. Chechik, E. Fetaya. *Multi-Task
    Learning as a Bargaining Game*. ICML 2022. https://arxiv.org/abs/2202.01017
    """

    def __init__(self, max_norm: float = 1.0, update_weights_every: int = 1, optim_niter: int = 20) -> None:
        if not (math.isfinite(max_norm) and max_norm >= 0.0):
            raise ValueError(f"max_norm must be nonnegative and finite, got {max_norm}")
        for name, value in (("update_weights_every", update_weights_every), ("optim_niter", optim_niter)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        _cvxpy()  # fail now, not at the first step, if cvxpy is missing
        self.max_norm = max_norm
        self.update_weights_every = update_weights_every
        self.optim_niter = optim_niter
        self.reset()

    def reset(self) -> None:
        """Forget the previous weights, the call counter and the compiled problem."""
        self.step = 0
        self.alpha: np.ndarray | None = None  # the last weights (before the max_norm cap)
        self._problem: Any = None

    def weights_from_gramian(self, G: Tensor) -> Tensor:
        dtype, device = G.dtype, G.device
        G = gramian_to_numpy(G)
        m = G.shape[0]
        if self._problem is None:
            self._problem = _Problem(m)
            self.alpha = np.ones(m)
        elif self._problem.m != m:
            raise ValueError(f"NashMTL was used with {self._problem.m} tasks, got {m}: call reset() first")
        norm = np.linalg.norm(G)
        if self.step % self.update_weights_every == 0 and norm > 0.0:  # all rows zero: d = 0 anyway
            self.alpha = self._problem.solve(G / norm, norm, self.alpha, self.optim_niter)
        self.step += 1
        alpha = self.alpha
        if self.max_norm > 0.0:
            length = math.sqrt(max(alpha @ G @ alpha, 0.0))  # ||J^T alpha||
            if length > self.max_norm:
                alpha = alpha / length * self.max_norm
        return torch.as_tensor(alpha, dtype=dtype, device=device)

    def __repr__(self) -> str:
        return (
            f"NashMTL(max_norm={self.max_norm}, update_weights_every={self.update_weights_every}, "
            f"optim_niter={self.optim_niter})"
        )


class _Problem:
    """The convex round of Nash-MTL as a parametrised cvxpy problem, compiled once for ``m`` tasks.

    torchjd writes the linearisation :math:`\nabla\varphi(\alpha_{\rm prev})^\top (\alpha -
    \alpha_{\rm prev}) / \nu` with cvxpy expressions of the parameters, which is not DPP (disciplined
    parametrised programming), so cvxpy recompiles the problem at every round. Here its gradient
    :math:`c = \nabla\varphi(\alpha_{\rm prev}) / \nu` is computed in numpy and passed as one parameter,
    and the constant :math:`-c^\top \alpha_{\rm prev}` is dropped: the same minimiser, compiled once.
    """

    def __init__(self, m: int) -> None:
        cp = _cvxpy()
        self.m = m
        self.alpha = cp.Variable(m, nonneg=True)
        self.G = cp.Parameter((m, m), value=np.eye(m))
        self.norm = cp.Parameter(1, nonneg=True, value=np.ones(1))
        self.linear = cp.Parameter(m, value=np.zeros(m))
        G_alpha = self.G @ self.alpha
        constraints = [
            -cp.log(a * self.norm) - cp.log(Ga) <= 0 for a, Ga in zip(self.alpha, G_alpha, strict=True)
        ]
        self.problem = cp.Problem(cp.Minimize(cp.sum(G_alpha) + self.linear @ self.alpha), constraints)
        self.errors = (cp.SolverError, ValueError)

    def solve(self, G: np.ndarray, norm: float, alpha: np.ndarray, rounds: int) -> np.ndarray:
        """Up to ``rounds`` convex rounds from ``alpha`` on the normalised Gramian ``G`` (``norm`` = ν)."""
        self.G.value, self.norm.value = G, np.array([norm])
        for _ in range(rounds):
            with np.errstate(divide="ignore", invalid="ignore"):
                gradient = 1 / alpha + (1 / (G @ alpha)) @ G  # of phi at the round's starting point
            if not np.isfinite(gradient).all():  # as torchjd, whose solve then fails: keep alpha
                break
            self.linear.value = gradient / norm
            self.alpha.value = alpha
            try:
                self.problem.solve(solver=SOLVER)
            except self.errors:  # as torchjd: keep the previous weights
                break
            new = self.alpha.value
            if (
                new is None
                or np.linalg.norm(G @ alpha - 1 / (alpha + 1e-10)) < 1e-3
                or np.linalg.norm(new - alpha) < 1e-6
            ):
                break
            alpha = new
        return alpha
