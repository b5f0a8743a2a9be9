"""Loss weighting: how m task losses are turned into the one number that ``backward()`` sees."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mtlcourse.models import MultiTaskModel
from mtlcourse.strategy import Strategy


class LossWeighting(Strategy):
    r"""A strategy that backpropagates :math:`\sum_i w_i L_i` for weights it chooses each step."""

    def weights(self, losses: torch.Tensor, model: MultiTaskModel) -> torch.Tensor:
        """The weights :math:`w` of this step, shape ``(m,)``."""
        raise NotImplementedError

    def backward(self, losses: torch.Tensor, model: MultiTaskModel, features: torch.Tensor) -> torch.Tensor:
        w = self.weights(losses, model).to(losses)
        (w @ losses).backward()
        return w.detach()


class StaticWeights(LossWeighting):
    r"""Fixed weights chosen by hand: :math:`L = \sum_i w_i L_i`.

    Parameters
    ----------
    weights
        One non-negative, finite weight per task, either in the model's task order or as a mapping
        task name -> weight.
    """

    def __init__(self, weights: Sequence[float] | Mapping[str, float]) -> None:
        values = list(weights.values()) if isinstance(weights, Mapping) else list(weights)
        w = torch.as_tensor(values, dtype=torch.float64)
        if w.ndim != 1 or len(w) == 0:
            raise ValueError(f"weights must be a non-empty list of numbers, got {weights!r}")
        if not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"weights must be finite and non-negative, got {values}")
        self._names = list(weights) if isinstance(weights, Mapping) else None
        self._w = w

    def weights(self, losses: torch.Tensor, model: MultiTaskModel) -> torch.Tensor:
        if len(self._w) != len(losses):
            raise ValueError(f"{len(self._w)} weights were given for {len(losses)} tasks")
        if self._names is None:
            return self._w
        missing = set(model.task_names) ^ set(self._names)
        if missing:
            raise ValueError(f"weights name tasks {self._names}, the model has {model.task_names}")
        order = [self._names.index(name) for name in model.task_names]
        return self._w[order]

    def __repr__(self) -> str:
        names = self._names or range(len(self._w))
        return f"StaticWeights({dict(zip(names, self._w.tolist(), strict=True))})"


def equal_weights(m: int) -> StaticWeights:
    """Weight ``1/m`` on every task: the mean of the losses."""
    if m < 1:
        raise ValueError(f"need at least one task, got m={m}")
    return StaticWeights([1.0 / m] * m)
