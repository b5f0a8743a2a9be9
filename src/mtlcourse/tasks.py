"""What each task asks of the network: its loss, its prediction and its accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

TaskKind = Literal["regression", "binary", "multiclass"]
_KINDS = ("regression", "binary", "multiclass")


@dataclass(frozen=True)
class Task:
    """One task of a multi-task model.

    Parameters
    ----------
    name
        The key of the task's head in the model and of its target in :class:`~mtlcourse.data.TaskData`.
    kind
        ``"regression"`` (mean squared error on a real output), ``"binary"`` (binary cross-entropy on one
        logit per row, targets 0/1) or ``"multiclass"`` (cross-entropy on one logit per class, integer
        targets).
    """

    name: str
    kind: TaskKind

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {_KINDS}, got {self.kind!r}")

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss of the batch: MSE, BCE with logits, or cross-entropy."""
        if self.kind == "multiclass":
            return F.cross_entropy(output, target)
        if output.shape != target.shape:
            raise ValueError(
                f"task {self.name!r}: output shape {tuple(output.shape)} differs from "
                f"target shape {tuple(target.shape)}"
            )
        if self.kind == "regression":
            return F.mse_loss(output, target)
        return F.binary_cross_entropy_with_logits(output, target)

    def accuracy(self, output: torch.Tensor, target: torch.Tensor) -> float | None:
        """Fraction of correct predictions (threshold 0.5 / arg-max); ``None`` for regression.

        The targets are compared on the predictions' device (e.g. CPU predictions with GPU targets).
        """
        if self.kind == "regression":
            return None
        predicted = output.argmax(dim=-1) if self.kind == "multiclass" else (output > 0).to(target.dtype)
        return (predicted == target.to(predicted.device)).float().mean().item()

    def r2(self, output: torch.Tensor, target: torch.Tensor) -> float | None:
        r"""Coefficient of determination :math:`1 - \sum(\hat y - y)^2 / \sum(y - \bar y)^2`.

        ``None`` unless the task is a regression. The targets are moved to the outputs' device.
        """
        if self.kind != "regression":
            return None
        target = target.to(output.device)
        residual = (output - target).pow(2).sum()
        spread = (target - target.mean()).pow(2).sum()
        return (1 - residual / spread).item()
