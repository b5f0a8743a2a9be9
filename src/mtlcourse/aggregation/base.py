r"""The common shape of every aggregator: a direction :math:`d = J^\top w` from weights :math:`w`."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

from torch import Tensor

NON_FINITE = "J has non-finite entries (NaN or inf), or entries so large that the computation overflows."


def check_jacobian(J: object) -> Tensor:
    """Return ``J`` if it is a floating-point matrix with at least one row; raise otherwise.

    Finiteness is not checked here, as a pass over ``J`` would cost as much as :class:`Mean` itself: a NaN
    or inf entry of ``J`` makes the Gramian non-finite (checked before any solve) and the direction
    non-finite (``0 * inf`` is NaN), which :func:`aggregate` checks through its sum.
    """
    if not isinstance(J, Tensor):
        raise TypeError(f"J must be a torch.Tensor of shape (m, n), got {type(J).__name__}.")
    if J.ndim != 2:
        raise ValueError(f"J must be a 2-D matrix of shape (m, n), got a tensor of shape {tuple(J.shape)}.")
    if J.shape[0] == 0:
        raise ValueError(f"J has zero rows (shape {tuple(J.shape)}): there must be at least one task.")
    if not J.is_floating_point():
        raise TypeError(f"J must have a floating-point dtype, got {J.dtype}.")
    return J


def aggregate(aggregator: Aggregator, J: Tensor) -> tuple[Tensor, Tensor]:
    """Validate ``J``, then return the direction ``weights @ J`` and the weights."""
    weights = aggregator.weights(check_jacobian(J))
    direction = weights @ J
    if not math.isfinite(direction.sum().item()):  # a NaN or inf entry makes the sum non-finite
        raise ValueError(NON_FINITE)
    return direction, weights


class Aggregator(ABC):
    r"""Turns a Jacobian :math:`J \in \mathbb{R}^{m \times n}` (one row per task) into an update direction.

    Every method of the course is *weighted*: the direction is :math:`d = J^\top w` for weights
    :math:`w \in \mathbb{R}^m` that depend on :math:`J` (usually only through the Gramian :math:`J J^\top`).
    Subclasses implement :meth:`weights`; calling the aggregator validates ``J`` once and returns
    ``weights(J) @ J``.
    """

    @abstractmethod
    def weights(self, J: Tensor) -> Tensor:
        """Weights :math:`w` of shape ``(m,)``, same dtype and device as ``J`` (not validated here)."""

    def __call__(self, J: Tensor) -> Tensor:
        r"""Direction :math:`J^\top w` of shape ``(n,)`` for a Jacobian ``J`` of shape ``(m, n)``."""
        return aggregate(self, J)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
