r"""GradVac: raise the cosine between task gradients towards its running average (Wang et al., 2021)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .base import GramianWeightedAggregator, gramian_to_numpy


class GradVac(GramianWeightedAggregator):
    r"""Gradient Vaccine: a stateful PCGrad whose target cosine is learned instead of fixed at 0.

    For each task :math:`i`, and each other task :math:`j` in a random order, let
    :math:`\phi_{ij} = \cos(g_i^{PC}, g_j)` be the cosine between the (already modified) gradient of task
    :math:`i` and the original gradient of task :math:`j`, and :math:`\hat\phi_{ij}` its target. If
    :math:`\phi_{ij} < \hat\phi_{ij}`, a multiple of :math:`g_j` is added to :math:`g_i^{PC}` so that their
    cosine becomes exactly :math:`\hat\phi_{ij}`:

    .. math::

        g_i^{PC} \leftarrow g_i^{PC} + \frac{\lVert g_i^{PC} \rVert \big(\hat\phi_{ij} \sqrt{1 - \phi_{ij}^2}
        - \phi_{ij} \sqrt{1 - \hat\phi_{ij}^2}\big)}{\lVert g_j \rVert \sqrt{1 - \hat\phi_{ij}^2}}\, g_j ,

    and in every case the target follows an exponential moving average,
    :math:`\hat\phi_{ij} \leftarrow (1 - \beta) \hat\phi_{ij} + \beta \phi_{ij}` (targets start at 0).
    The direction is :math:`d = \sum_i g_i^{PC}`. With targets at 0 (the first call, or ``beta=0``) this is
    exactly PCGrad's projection. Everything is computed from the Gramian (writing
    :math:`g_i^{PC} = \sum_k C_{ik} g_k`, norms and inner products are quadratic forms in :math:`G`), in
    float64, with :math:`\varepsilon` = ``eps`` added to both denominators as in torchjd. The weights are
    :math:`w = C^\top \mathbf 1`. The cosines do not depend on the scale of :math:`J`, so GradVac is
    positively homogeneous (up to ``eps``).

    The orders are drawn by ``torch.randperm`` from the aggregator's own ``torch.Generator``, seeded with
    ``seed``; :meth:`reset` forgets the targets and re-seeds it, so that two training runs see the same
    sequence. The targets are an :math:`m \times m` state: calling with another number of tasks without
    :meth:`reset` is an error.

    Notes
    -----
    Same procedure, defaults (``beta=0.5``, ``eps=1e-8``) and draws as ``torchjd.aggregation.GradVac``
    (0.18) after ``torch.manual_seed(seed)``: torchjd draws the orders from the global generator, and
    computes in the dtype of the Gramian. LibMTL's ``GradVac`` (like the paper, on the whole model by
    default, or per layer) updates the EMA only for the pairs it corrects: the targets start at 0 and can
    then only go down, so they never rise above 0 and the method never pulls gradients closer than
    orthogonal, which is the point of the paper. No official code was released.

    Parameters
    ----------
    beta
        EMA rate :math:`\beta \in [0, 1]` of the targets.
    eps
        Nonnegative constant added to the denominators.
    seed
        Seed of the generator of the orders.

    References
    ----------
    Z. Wang, Y. Tsvetkov, O. Firat, Y. Cao. *Gradient Vaccine: Investigating and Improving Multi-task
    Optimization in Massively Multilingual Models*. ICLR 2021. https://arxiv.org/abs/2010.05874
    """

    def __init__(self, beta: float = 0.5, eps: float = 1e-8, seed: int = 0) -> None:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        if not (math.isfinite(eps) and eps >= 0.0):
            raise ValueError(f"eps must be nonnegative and finite, got {eps}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.beta, self.eps, self.seed = beta, eps, seed
        self.generator = torch.Generator().manual_seed(seed)
        self.targets: np.ndarray | None = None  # \hat\phi, shape (m, m)

    def reset(self) -> None:
        """Forget the targets (back to 0) and re-seed the generator of the orders."""
        self.targets = None
        self.generator.manual_seed(self.seed)

    def weights_from_gramian(self, G: Tensor) -> Tensor:
        dtype, device = G.dtype, G.device
        G = gramian_to_numpy(G)
        m = G.shape[0]
        if self.targets is None:
            self.targets = np.zeros((m, m))
        elif self.targets.shape[0] != m:
            raise ValueError(
                f"GradVac holds targets for {self.targets.shape[0]} tasks, got {m}: call reset() first"
            )
        phi_hat, beta, eps = self.targets, self.beta, self.eps
        norms = np.sqrt(np.maximum(G.diagonal(), 0.0))
        C = np.eye(m)
        for i in range(m):
            others = [j for j in range(m) if j != i]
            order = torch.randperm(len(others), generator=self.generator).tolist()
            inner = G[i].copy()  # g_i^PC . g_k for every k
            for j in (others[k] for k in order):
                norm_i = math.sqrt(max(inner @ C[i], 0.0))
                phi = inner[j] / (norm_i * norms[j] + eps)
                target = phi_hat[i, j]
                if phi < target:
                    root_phi, root_target = (
                        math.sqrt(max(1.0 - phi**2, 0.0)),
                        math.sqrt(max(1.0 - target**2, 0.0)),
                    )
                    step = norm_i * (target * root_phi - phi * root_target) / (norms[j] * root_target + eps)
                    C[i, j] += step
                    inner += step * G[j]
                phi_hat[i, j] = (1.0 - beta) * target + beta * phi
        return torch.as_tensor(C.sum(axis=0), dtype=dtype, device=device)

    def __repr__(self) -> str:
        return f"GradVac(beta={self.beta}, eps={self.eps}, seed={self.seed})"
