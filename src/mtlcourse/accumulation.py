r"""Gradient accumulation for Jacobian descent: accumulate the Jacobian over micro-batches, aggregate once.

With plain gradients, accumulating ``loss.backward()`` over :math:`k` micro-batches and stepping once is
the same as one step on the whole batch. With an aggregator it is not, if each micro-batch is aggregated
on its own: :math:`\frac1k \sum_b A(J_b) \ne A(\frac1k \sum_b J_b)` for any non-linear :math:`A` (UPGrad,
MGDA, CAGrad, …), and the average of directions that each conflict with no task *on their micro-batch*
can conflict with a task on the whole batch. The right way keeps the :math:`m \times n` Jacobian of the
shared parameters across the micro-batches (memory: :math:`m` gradients) and aggregates the average once —
the same step as the whole batch, with equal micro-batch sizes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from . import autojac

__all__ = ["JacobianAccumulator"]


class JacobianAccumulator:
    r"""Accumulates :func:`mtlcourse.autojac.mtl_backward` over micro-batches; :meth:`step` aggregates once.

    Usage, with ``.grad`` zeroed before the first micro-batch::

        accumulator = JacobianAccumulator()
        for x, y in micro_batches:                     # k micro-batches of equal size
            features = trunk(x)
            losses = [...]                             # each task's mean loss on the micro-batch
            accumulator.mtl_backward(losses, features, tasks_params, shared_params)
        weights = accumulator.step(UPGrad())           # .grad now holds the whole batch's update
        optimizer.step()

    The heads' gradients are summed into ``.grad`` as usual and divided by :math:`k` at :meth:`step`; the
    shared parameters' Jacobians are summed here and their average aggregated at :meth:`step`.
    """

    def __init__(self) -> None:
        self._sum: Tensor | None = None
        self._count = 0
        self._shared: list[Tensor] = []
        self._task_params: list[Tensor] = []

    def _capture(self, J: Tensor) -> Tensor:
        self._sum = J.detach().clone() if self._sum is None else self._sum + J.detach()
        return torch.zeros(J.shape[1], dtype=J.dtype, device=J.device)  # nothing written to the trunk yet

    def mtl_backward(
        self,
        losses: Sequence[Tensor] | Tensor,
        features: Sequence[Tensor] | Tensor,
        tasks_params: Sequence[Iterable[Tensor]],
        shared_params: Iterable[Tensor],
    ) -> None:
        """One micro-batch: heads' gradients into ``.grad``, the trunk's Jacobian into the sum."""
        tasks_params = [list(group) for group in tasks_params]
        shared_params = list(shared_params)
        if self._count and [id(p) for p in shared_params] != [id(p) for p in self._shared]:
            raise ValueError("every micro-batch must pass the same shared parameters, in the same order")
        autojac.mtl_backward(losses, features, tasks_params, shared_params, self._capture)
        self._shared = shared_params
        self._task_params = [p for group in tasks_params for p in group]
        self._count += 1

    def step(self, aggregator) -> Tensor | None:
        """Aggregate the average Jacobian into the shared ``.grad``, average the heads' ``.grad``, reset.

        Returns the aggregator's weights (for an :class:`~mtlcourse.aggregation.Aggregator`), else ``None``.
        """
        if self._sum is None:
            raise RuntimeError("step() before any micro-batch: call mtl_backward first")
        J = self._sum / self._count
        direction, weights = autojac._aggregate(aggregator, J)
        autojac._accumulate(self._shared, direction.split([p.numel() for p in self._shared]))
        for p in self._task_params:
            if p.grad is not None:
                p.grad /= self._count
        self._sum, self._count = None, 0
        return weights
