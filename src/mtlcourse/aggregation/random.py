r"""Random: a random convex combination of the task gradients (RLW, Lin et al., 2022)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import GramianWeightedAggregator, gramian_to_numpy


class Random(GramianWeightedAggregator):
    r"""Random weighting of the gradients: fresh positive weights summing to 1 at every call.

    .. math::

        \lambda \sim \mathcal N(0, I_m), \qquad w = \operatorname{softmax}(\lambda), \qquad d = J^\top w .

    This is Algorithm 2 ("RGW") of the paper, the gradient-space twin of random loss weighting
    (:class:`mtlcourse.weighting.RandomWeighting`): in expectation every task gets :math:`1/m`, and the
    paper finds that this baseline is hard to beat. The weights do not depend on :math:`J` (only on its
    number of rows), so :meth:`weights` forms no Gramian.

    The draws come from the aggregator's own ``torch.Generator`` seeded with ``seed`` (on the CPU, in
    ``J``'s dtype, then moved to its device), not from the global random state; :meth:`reset` re-seeds it,
    so two training runs see the same weights. With the same seed the sequence equals that of
    ``torchjd.aggregation.Random`` (0.18) after ``torch.manual_seed(seed)`` (CPU tensors), which draws from
    the global generator, and of LibMTL's ``RLW`` (loss space; same distribution).

    Parameters
    ----------
    seed
        Seed of the weights' generator.

    References
    ----------
    B. Lin, F. Ye, Y. Zhang, I. W. Tsang. *Reasonable Effectiveness of Random Weighting: A Litmus Test for
    Multi-Task Learning*. TMLR 2022. https://arxiv.org/abs/2111.10603
    """

    def __init__(self, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def _draw(self, m: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        return torch.softmax(torch.randn(m, generator=self.generator, dtype=dtype), dim=0).to(device)

    def weights(self, J: Tensor) -> Tensor:
        return self._draw(J.shape[0], J.dtype, J.device)

    def weights_from_gramian(self, G: Tensor) -> Tensor:
        return self._draw(gramian_to_numpy(G).shape[0], G.dtype, G.device)

    def reset(self) -> None:
        """Re-seed the generator: the next calls give the same weights as a fresh instance."""
        self.generator.manual_seed(self.seed)

    def __repr__(self) -> str:
        return f"Random(seed={self.seed})"
