r"""Mean: the plain average of the task gradients, i.e. gradient descent on the average loss."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Aggregator, GramianWeightedAggregator, gramian_to_numpy


class Mean(GramianWeightedAggregator):
    r"""Average of the rows of :math:`J`.

    .. math::

        d = \frac{1}{m} \sum_{i=1}^m g_i = J^\top w, \qquad w = \tfrac{1}{m} \mathbf{1}.

    This is the gradient of :math:`\frac1m \sum_i L_i`, the baseline every other aggregator is
    compared to. It needs no Gramian: :meth:`weights` does not form one. Same as ``torchjd.aggregation.Mean``.
    """

    def weights(self, J: Tensor) -> Tensor:
        m = J.shape[0]
        return torch.full((m,), 1.0 / m, dtype=J.dtype, device=J.device)

    def weights_from_gramian(self, G: Tensor) -> Tensor:
        m = gramian_to_numpy(G).shape[0]
        return torch.full((m,), 1.0 / m, dtype=G.dtype, device=G.device)

    # No Gramian, and w @ J in J's dtype (the weights are exact).
    _direction_and_weights = Aggregator._direction_and_weights
