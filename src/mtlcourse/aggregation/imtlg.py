r"""IMTL-G: the direction with the same projection on every task's unit gradient (Liu et al., 2021)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import GramianWeightedAggregator, gramian_to_numpy


class IMTLG(GramianWeightedAggregator):
    r"""Impartial Multi-Task Learning, gradient part: no task is favoured along its own direction.

    IMTL-G looks for :math:`d = J^\top w` with :math:`\mathbf 1^\top w = 1` whose projection on every unit
    gradient :math:`u_i = g_i / \lVert g_i \rVert` is the same, :math:`u_i^\top d = u_j^\top d`. With the
    generalisation of Quinton & Rey (2024) to linearly dependent rows, through the pseudo-inverse:

    .. math::

        v = G^{+} s, \quad s_i = \sqrt{G_{ii}} = \lVert g_i \rVert, \qquad
        w = \frac{v}{\mathbf 1^\top v}, \qquad d = J^\top w .

    When :math:`J` has full row rank, :math:`G w = s / \mathbf 1^\top v`, i.e.
    :math:`u_i^\top d = 1 / \mathbf 1^\top v` for every task. That common value is positive (no task is
    conflicted) exactly when :math:`\mathbf 1^\top v > 0`; it is not always so: with very unequal norms and
    strongly correlated rows it can be negative, and then :math:`d` is an ascent direction for every task
    (IMTL-G promises impartiality, not non-conflict). If :math:`\mathbf 1^\top v = 0` (e.g. two opposite
    rows) the weights are all zero. IMTL-G is positively homogeneous (:math:`w` does not change when
    :math:`J` is scaled) and permutation-equivariant.

    Computed in float64. When the correlation matrix :math:`C = D G D`,
    :math:`D = \mathrm{diag}(1/\lVert g_i \rVert)`, is nonsingular (its smallest eigenvalue above
    :math:`m\,\varepsilon` times its largest), :math:`v = G^{-1} s` is computed as :math:`D C^{-1} \mathbf 1`
    (the same vector, well conditioned when the task norms differ by orders of magnitude, where a
    pseudo-inverse of :math:`G` would truncate a genuine direction); otherwise
    :math:`v = G^+ s` with ``torch.linalg.pinv``'s default cutoff, on :math:`G / \max_i G_{ii}` (scaling
    :math:`G` by a number scales :math:`v` by a positive number, which :math:`w` does not see).

    Notes
    -----
    Same definition as ``torchjd.aggregation.IMTLG`` (0.18), except that torchjd returns zero weights when
    :math:`|\mathbf 1^\top v| < 10^{-12}` in absolute terms, which happens for any :math:`J` whose row
    norms are above :math:`\sim 10^{12}` (here the test is relative: :math:`|\mathbf 1^\top v| \le
    10^{-12} \sum_i |v_i|`). LibMTL's ``IMTL`` solves the same equations through the inverse of an
    :math:`(m-1) \times (m-1)` matrix of gradient differences (it fails on linearly dependent rows) and also
    learns the loss scales of IMTL-L; the official code was not released.

    References
    ----------
    L. Liu, Y. Li, Z. Kuang, J.-H. Xue, Y. Chen, W. Yang, Q. Liao, W. Zhang. *Towards Impartial Multi-task
    Learning*. ICLR 2021. https://openreview.net/forum?id=IMPnRXEWpvr

    P. Quinton, V. Rey. *Jacobian Descent for Multi-Objective Optimization*. 2024.
    https://arxiv.org/abs/2406.16232
    """

    def weights_from_gramian(self, G: Tensor) -> Tensor:
        dtype, device = G.dtype, G.device
        G = torch.from_numpy(gramian_to_numpy(G))
        m = G.shape[0]
        norms = G.diagonal().clamp(min=0.0).sqrt()
        if norms.max() <= 0.0:  # all rows are zero: 1ᵀv = 0
            return torch.zeros(m, dtype=dtype, device=device)
        eigenvalues, Q = torch.linalg.eigh(G / torch.outer(norms, norms)) if norms.min() > 0 else (None, None)
        if eigenvalues is not None and eigenvalues[0] > eigenvalues[-1] * m * torch.finfo(G.dtype).eps:
            v = (Q @ ((Q.T @ torch.ones(m, dtype=G.dtype)) / eigenvalues)) / norms  # D C^{-1} 1
        else:
            scale = norms.max()
            v = torch.linalg.pinv(G / scale**2, hermitian=True) @ (norms / scale)
        total = v.sum()
        if total.abs() <= 1e-12 * v.abs().sum():
            return torch.zeros(m, dtype=dtype, device=device)
        return (v / total).to(dtype=dtype, device=device)
