r"""DualProj: the mean gradient, projected onto the dual cone of the task gradients (Quinton & Rey, 2024)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ._qp import nonnegative_qp
from .aligned_mtl import _check_pref_vector, _pref_for
from .base import GramianWeightedAggregator, gramian_to_numpy


class DualProj(GramianWeightedAggregator):
    r"""Projection of a combination of the rows onto the dual cone :math:`C = \{x : J x \ge 0\}`.

    .. math::

        d = \pi_C(J^\top p) = J^\top w, \qquad w = \arg\min_{v \ge p} v^\top G v,

    where :math:`p` is the preference vector (default :math:`\frac1m \mathbf 1`, so :math:`J^\top p` is the
    mean gradient) and the dual problem for :math:`w` is Proposition 1 of Quinton & Rey (2024). This is
    the projection of Gradient Episodic Memory (Lopez-Paz & Ranzato 2017, eq. 11) applied to the mean:
    where :math:`J^\top p` conflicts with no task, :math:`d = J^\top p`; otherwise :math:`d` is the closest
    direction that conflicts with none, :math:`g_i^\top d \ge 0`. DualProj is positively homogeneous and
    (default :math:`p`) permutation-equivariant. Unlike :class:`~mtlcourse.aggregation.UPGrad`, which
    projects every row and averages, it projects once, so the result is not the same.

    The problem is solved **exactly** by the active-set method of
    ``mtlcourse.aggregation._qp.nonnegative_qp`` in float64, as for UPGrad: since :math:`C` does not
    change when a row is multiplied by a positive number, it is solved on the correlation matrix
    :math:`D G D`, :math:`D = \mathrm{diag}(1/\lVert g_i \rVert)`, for :math:`D^{-1} p` (scaled to a largest
    entry of 1), and mapped back (:math:`w = D \tilde v`). An all-zero row keeps its weight :math:`p_i`.

    Notes
    -----
    Same definition as ``torchjd.aggregation.DualProj`` (0.18), not the same numerics: its default
    ``QuadprogProjector`` zeroes the Gramian when its trace is below ``norm_eps = 1e-4`` (plain mean, possibly
    conflicting, whenever :math:`\lVert J \rVert_F < 10^{-2}`) and adds ``reg_eps = 1e-4`` to the diagonal of
    the trace-normalised Gramian (a task whose gradient is small next to the others may be conflicted).
    With ``QuadprogProjector(norm_eps=0, reg_eps=0)`` the two agree to solver precision on
    well-conditioned :math:`J`. LibMTL has no DualProj.

    Parameters
    ----------
    pref_vector
        The preference vector :math:`p` (length :math:`m`); default :math:`\frac1m \mathbf 1`.

    References
    ----------
    P. Quinton, V. Rey. *Jacobian Descent for Multi-Objective Optimization*. 2024.
    https://arxiv.org/abs/2406.16232

    D. Lopez-Paz, M. Ranzato. *Gradient Episodic Memory for Continual Learning*. NeurIPS 2017.
    https://arxiv.org/abs/1706.08840
    """

    def __init__(self, pref_vector: Sequence[float] | Tensor | None = None) -> None:
        self.pref_vector = _check_pref_vector(pref_vector)

    def weights_from_gramian(self, G: Tensor) -> Tensor:
        dtype, device = G.dtype, G.device
        G = gramian_to_numpy(G)
        m = G.shape[0]
        p = np.full(m, 1.0 / m) if self.pref_vector is None else _pref_for(self.pref_vector, m)
        norms = np.sqrt(np.maximum(G.diagonal(), 0.0))
        scale = np.where(norms > 0.0, norms, 1.0)
        correlation = G / np.outer(scale, scale)
        u = scale * p  # J^T p = (D J)^T (D^{-1} p)
        size = np.abs(u).max()
        if size == 0.0:
            return torch.zeros(m, dtype=dtype, device=device)
        u = u / size
        # v = u + x with x >= 0 minimising (u + x)^T C (u + x) / 2, i.e. x^T C x / 2 + (C u)^T x.
        gradient = correlation @ u
        x = nonnegative_qp(correlation, gradient[None, :], guess=(gradient < 0)[None, :])[0]
        w = (u + x) * size / scale
        return torch.as_tensor(w, dtype=dtype, device=device)

    def __repr__(self) -> str:
        pref = None if self.pref_vector is None else self.pref_vector.tolist()
        return f"DualProj(pref_vector={pref})"
