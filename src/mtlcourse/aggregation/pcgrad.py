r"""PCGrad: project each task gradient away from the gradients it conflicts with (Yu et al., 2020)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .base import GramianWeightedAggregator, gramian_to_numpy


class PCGrad(GramianWeightedAggregator):
    r"""Projecting Conflicting Gradients, Algorithm 1 of Yu et al. (2020).

    For each task :math:`i`, start from :math:`g_i^{PC} = g_i` and visit the other tasks :math:`j` in a
    random order; whenever :math:`g_i^{PC} \cdot g_j < 0`, remove the conflicting component:

    .. math::

        g_i^{PC} \leftarrow g_i^{PC} - \frac{g_i^{PC} \cdot g_j}{\lVert g_j \rVert^2}\, g_j,
        \qquad d = \sum_{i=1}^m g_i^{PC}.

    Every :math:`g_i^{PC}` stays a combination of the rows, so :math:`d = J^\top w`, and the weights are
    computed from the Gramian alone (in float64). For :math:`m = 2` the order does not matter and
    :math:`d = 2\,\mathrm{UPGrad}(J)`: projecting onto the half-space of the other gradient is then the
    projection onto the dual cone.

    Parameters
    ----------
    generator : torch.Generator, optional
        Source of the random task orders. By default the global torch RNG is used, with exactly the calls
        ``torchjd.aggregation.PCGrad`` makes, so both give the same result after the same
        ``torch.manual_seed``. A generator on another device (e.g. ``torch.Generator("cuda")``) works too: the
        orders are drawn on its device (``torch.randperm`` takes only a generator of the device it draws on).

    Notes
    -----
    Follows torchjd 0.18: the projected gradients are **summed**, as in Algorithm 1 of the paper (so one
    task gives :math:`g_1` and :math:`m` identical tasks give :math:`m g_1`). Some re-implementations (e.g.
    the popular ``Pytorch-PCGrad``) average them instead, which divides :math:`d` by :math:`m`.

    References
    ----------
    T. Yu, S. Kumar, A. Gupta, S. Levine, K. Hausman, C. Finn. *Gradient Surgery for Multi-Task Learning*.
    NeurIPS 2020. https://arxiv.org/abs/2001.06782
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
        self.generator = generator

    def _order(self, m: int) -> list[int]:
        """A random order of the ``m`` tasks, drawn on the generator's device."""
        if self.generator is None:
            return torch.randperm(m).tolist()
        return torch.randperm(m, generator=self.generator, device=self.generator.device).tolist()

    def weights_from_gramian(self, G: Tensor) -> Tensor:
        dtype, device = G.dtype, G.device
        G = gramian_to_numpy(G)
        m = G.shape[0]
        weights = np.zeros(m)
        for i in range(m):
            projected = np.zeros(m)  # g_i^PC = J^T projected
            projected[i] = 1.0
            for j in self._order(m):
                inner = G[j] @ projected
                if j != i and inner < 0.0:
                    projected[j] -= inner / G[j, j]
            weights += projected
        return torch.as_tensor(weights, dtype=dtype, device=device)
