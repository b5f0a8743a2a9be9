r"""Aligned-MTL: make the task gradients orthogonal and of equal norm (Senushkin et al., 2023)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .base import GramianWeightedAggregator, gramian64, gramian_to_numpy

ScaleMode = Literal["min", "median", "rmse"]
SCALE_MODES = ("min", "median", "rmse")


class AlignedMTL(GramianWeightedAggregator):
    r"""Aligned-MTL (Algorithm 1 of the paper): make the condition number of the task gradients 1.

    With the eigendecomposition :math:`G = J J^\top = V \Lambda V^\top` restricted to its :math:`r` nonzero
    eigenvalues :math:`\lambda_1 \ge \dots \ge \lambda_r > 0`, the balance transformation

    .. math::

        B = \sqrt{\sigma}\, V \Lambda^{-1/2} V^\top, \qquad w = B\,p, \qquad d = J^\top w,

    turns :math:`J` into :math:`\hat J = B J`, whose Gramian :math:`B G B = \sigma\, V V^\top` has all its
    nonzero eigenvalues equal to :math:`\sigma` (condition number 1: the gradients are orthogonal and of
    equal norm within the span of the rows, "aligned"). :math:`p` is the preference vector (default
    :math:`\frac1m \mathbf 1`) and :math:`\sigma` the scale: the smallest eigenvalue :math:`\lambda_r`
    (``scale_mode="min"``, the paper's default), the median (``"median"``: ``torch.median``, the lower of
    the two middle values when :math:`r` is even) or the mean (``"rmse"``: the mean eigenvalue, i.e. the
    squared root-mean-square singular value, as in the official implementation). Since :math:`B G B` does
    not depend on the scale of :math:`J`, neither does :math:`w`: Aligned-MTL is positively homogeneous,
    and permutation-equivariant for the default preference vector. With all rows zero, :math:`B = I`.

    An eigenvalue counts as nonzero when it exceeds :math:`\lambda_1\, m\, \varepsilon`, with
    :math:`\varepsilon` the machine epsilon of the *input*: of ``J``'s dtype in :meth:`weights`, of
    ``G``'s dtype in :meth:`weights_from_gramian` (the solve itself is in float64). A float32 ``J`` of
    rank :math:`r` has :math:`m - r` singular values at the level of its rounding errors; they are noise,
    not directions to amplify by :math:`\sqrt{\sigma / \lambda}`.

    Notes
    -----
    Same definition, rank cutoff and scale modes as ``torchjd.aggregation.AlignedMTL`` (0.18), which works
    in the Gramian's dtype (a float32 ``J`` gives a float32 Gramian, so its eigenvalues are accurate to
    :math:`\sim 10^{-7} \lambda_1` only). LibMTL's ``Aligned_MTL`` uses :math:`p = \mathbf 1` (weights
    :math:`m` times ours), only the ``"min"`` scale, and float32's epsilon for the cutoff whatever the
    dtype.

    Parameters
    ----------
    pref_vector
        The preference vector :math:`p` (length :math:`m`); default :math:`\frac1m \mathbf 1`.
    scale_mode
        ``"min"`` (default), ``"median"`` or ``"rmse"``.

    References
    ----------
    D. Senushkin, N. Patakin, A. Kuznetsov, A. Konushin. *Independent Component Alignment for Multi-Task
    Learning*. CVPR 2023. https://arxiv.org/abs/2305.19000
    """

    def __init__(
        self, pref_vector: Sequence[float] | Tensor | None = None, scale_mode: ScaleMode = "min"
    ) -> None:
        if scale_mode not in SCALE_MODES:
            raise ValueError(f"scale_mode must be one of {SCALE_MODES}, got {scale_mode!r}")
        self.pref_vector = _check_pref_vector(pref_vector)
        self.scale_mode = scale_mode

    def weights(self, J: Tensor) -> Tensor:
        w = self._weights(gramian64(J).cpu().numpy(), torch.finfo(J.dtype).eps)
        return torch.as_tensor(w, dtype=J.dtype, device=J.device)

    def weights_from_gramian(self, G: Tensor) -> Tensor:
        w = self._weights(gramian_to_numpy(G), torch.finfo(G.dtype).eps)
        return torch.as_tensor(w, dtype=G.dtype, device=G.device)

    def _weights(self, G: np.ndarray, eps: float) -> np.ndarray:
        m = G.shape[0]
        p = np.full(m, 1.0 / m) if self.pref_vector is None else _pref_for(self.pref_vector, m)
        lam, V = np.linalg.eigh(G)
        lam, V = lam[::-1], V[:, ::-1]  # descending
        keep = lam > lam[0] * m * eps
        if not keep.any():  # all rows are zero (or G is not PSD at all): B = I
            return p
        lam, V = lam[keep], V[:, keep]
        if self.scale_mode == "min":
            scale = lam[-1]
        elif self.scale_mode == "median":
            scale = np.sort(lam)[(len(lam) - 1) // 2]  # torch.median: the lower middle value
        else:
            scale = lam.mean()
        return V @ (np.sqrt(scale / lam) * (V.T @ p))

    def __repr__(self) -> str:
        pref = None if self.pref_vector is None else self.pref_vector.tolist()
        return f"AlignedMTL(pref_vector={pref}, scale_mode={self.scale_mode!r})"


def _check_pref_vector(pref_vector: Sequence[float] | Tensor | None) -> np.ndarray | None:
    """``None``, or the preference vector as a finite 1-D float64 array (raises otherwise)."""
    if pref_vector is None:
        return None
    p = np.asarray(pref_vector.detach().cpu() if isinstance(pref_vector, Tensor) else pref_vector, float)
    if p.ndim != 1 or p.size == 0 or not np.isfinite(p).all():
        raise ValueError(f"pref_vector must be a non-empty 1-D vector of finite numbers, got {pref_vector!r}")
    return p


def _pref_for(p: np.ndarray, m: int) -> np.ndarray:
    if len(p) != m:
        raise ValueError(f"pref_vector has {len(p)} entries for a Jacobian with {m} rows")
    return p
