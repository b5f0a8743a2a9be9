"""The one protocol of training: how the per-task losses of a step become gradients.

:func:`mtlcourse.training.fit` holds a :class:`Strategy` and never needs to know which one:
a loss weighting puts gradients into ``.grad`` through a weighted sum of the losses, Jacobian
descent through :func:`mtlcourse.autojac.mtl_backward` and an aggregator. Every strategy
returns the task weights it used, so a chapter can plot them over training.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mtlcourse.models import MultiTaskModel


class Strategy:
    """Base class: override :meth:`backward`; the other hooks are optional."""

    def backward(self, losses: torch.Tensor, model: MultiTaskModel, features: torch.Tensor) -> torch.Tensor:
        """Write gradients into ``.grad`` of the model's parameters (accumulating, like ``backward()``).

        Parameters
        ----------
        losses
            Shape ``(m,)``: the mean loss of each task on this batch, in the model's task order.
        model
            The model being trained.
        features
            The shared features the heads received on this batch (part of the autograd graph).

        Returns
        -------
        torch.Tensor
            Shape ``(m,)``: the weight each task's loss received on this step (detached).
        """
        raise NotImplementedError

    def parameters(self) -> list[torch.nn.Parameter]:
        """Learnable parameters of the strategy itself (e.g. log-variances); ``fit`` optimises them too."""
        return []

    def end_epoch(self, record: Mapping[str, float]) -> None:
        """Called by ``fit`` with the epoch's history row, once the validation metrics are in."""
