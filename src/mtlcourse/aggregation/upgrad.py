r"""UPGrad: average of the task gradients, each projected onto the dual cone (Quinton & Rey, 2024)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._qp import nonnegative_qp
from .base import GramianWeightedAggregator, gramian_to_numpy


class UPGrad(GramianWeightedAggregator):
    r"""Unconflicting Projection of Gradients, the aggregator of Jacobian descent.

    Each row is projected onto the dual cone of the rows, :math:`C = \{u : J u \ge 0\}` (the directions
    that conflict with no task), and the projections are averaged:

    .. math::

        d = \frac{1}{m} \sum_{i=1}^m \pi_C(g_i), \qquad
        \pi_C(g_i) = J^\top v_i, \quad v_i = \arg\min_{v \ge e_i} v^\top G v, \qquad
        w = \frac{1}{m} \sum_{i=1}^m v_i,

    where the dual problem for :math:`v_i` (Proposition 1 of the paper) only involves :math:`G = J J^\top`.
    Since :math:`d \in C`, :math:`g_i \cdot d \ge 0` for every task. UPGrad is positively homogeneous
    (:math:`A(sJ) = s A(J)` for :math:`s > 0`) and equals the mean when no two rows conflict.

    Each of the :math:`m` small problems is solved **exactly** by an active-set method in float64. Because
    the cone :math:`C` does not change when a row is multiplied by a positive number, the problems are solved
    on the *correlation* matrix :math:`D G D` with :math:`D = \mathrm{diag}(1/\lVert g_i \rVert)` (zero rows
    left as they are) and mapped back. This is an exact change of variables, not a different answer: it
    only keeps the arithmetic well conditioned when task scales differ by many orders of magnitude.
    All-zero rows get the weight :math:`1/m` and do not constrain :math:`d`.

    Notes
    -----
    Same definition and scaling as ``torchjd.aggregation.UPGrad`` (0.18) with its default preference vector
    (mean weights), but not the same numerics. torchjd's ``QuadprogProjector`` (i) sets the Gramian to zero
    when its trace is below an *absolute* ``norm_eps = 1e-4``, which turns UPGrad into the plain mean
    (possibly conflicting) whenever :math:`\lVert J \rVert_F < 10^{-2}`, and (ii) adds ``reg_eps = 1e-4``
    to the diagonal of the trace-normalised Gramian, so the constraint of a task whose gradient is
    :math:`\sim 10^{-2}` times the norm of :math:`J` or smaller is effectively ignored and that task can be
    conflicted; elsewhere it moves the result too (Chapter 7 measures a median relative difference of
    :math:`10^{-3}` on random five-task Jacobians). Here neither threshold exists. With
    ``QuadprogProjector(norm_eps=0, reg_eps=0)`` the two agree to solver precision on well-conditioned
    :math:`J`.

    References
    ----------
    P. Quinton, V. Rey. *Jacobian Descent for Multi-Objective Optimization*. 2024.
    https://arxiv.org/abs/2406.16232
    """

    def weights_from_gramian(self, G: Tensor) -> Tensor:
        dtype, device = G.dtype, G.device
        G = gramian_to_numpy(G)
        norms = np.sqrt(G.diagonal())
        scale = np.where(norms > 0.0, norms, 1.0)
        correlation = G / np.outer(scale, scale)
        # Row i: the unknown v_i - e_i >= 0 of problem i, warm-started on the tasks that conflict with task i.
        V = nonnegative_qp(correlation, correlation, guess=correlation < 0)
        V[np.diag_indices_from(V)] += 1.0
        V *= scale[:, None] / scale[None, :]  # undo the row scaling: v_i = ||g_i|| D v
        return torch.as_tensor(V.mean(axis=0), dtype=dtype, device=device)
