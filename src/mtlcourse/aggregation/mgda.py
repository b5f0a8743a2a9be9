r"""MGDA: the minimum-norm point of the convex hull of the task gradients (Désidéri, 2012)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._qp import min_norm_simplex
from .base import GramianWeightedAggregator, gramian_to_numpy


class MGDA(GramianWeightedAggregator):
    r"""Multiple-Gradient Descent Algorithm: the common descent direction of minimum norm.

    .. math::

        w = \arg\min_{w \in \Delta_m} w^\top G w, \qquad G = J J^\top, \qquad d = J^\top w,

    with :math:`\Delta_m = \{w \ge 0, \mathbf 1^\top w = 1\}`. By the KKT conditions,
    :math:`g_i \cdot d = \min_k (Gw)_k = \lVert d \rVert^2 \ge 0` for every task in the support of
    :math:`w` and :math:`g_i \cdot d \ge \lVert d \rVert^2` for the others: :math:`d` conflicts with no task,
    and :math:`d = 0` exactly when the current point is Pareto-stationary.

    The quadratic program is solved **exactly** (active set on the reduction of the simplex problem to
    nonnegative least squares, in float64, after dividing :math:`G` by its largest diagonal entry). With all
    rows zero, the weights are uniform and :math:`d = 0`.

    Notes
    -----
    ``torchjd.aggregation.MGDA`` (0.18) runs the Frank–Wolfe iterations of Sener & Koltun (2018) and stops
    once a step is shorter than ``epsilon = 1e-3`` (or after 100 iterations), so its weights are only
    approximately optimal; the two agree up to that stopping tolerance and ours satisfies the KKT conditions
    to rounding error. Both use weights on the simplex (no rescaling).

    References
    ----------
    J.-A. Désidéri. *Multiple-gradient descent algorithm (MGDA) for multiobjective optimization*. Comptes
    Rendus Mathématique 350(5-6), 2012. https://doi.org/10.1016/j.crma.2012.03.014

    O. Sener, V. Koltun. *Multi-Task Learning as Multi-Objective Optimization*. NeurIPS 2018.
    https://arxiv.org/abs/1810.04650
    """

    def weights_from_gramian(self, G: Tensor) -> Tensor:
        G64 = gramian_to_numpy(G)
        scale = G64.diagonal().max()
        m = G64.shape[0]
        if scale <= 0.0:  # all rows are zero: every weighting gives d = 0
            return torch.full((m,), 1.0 / m, dtype=G.dtype, device=G.device)
        return torch.as_tensor(min_norm_simplex(G64 / scale), dtype=G.dtype, device=G.device)
