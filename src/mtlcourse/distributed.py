r"""Data-parallel Jacobian descent on ``torch.distributed``: the ranks agree on one Jacobian, then aggregate.

With plain gradient descent, data parallelism averages the ranks' gradients, and averaging commutes with
the (linear) update. An aggregator is not linear: :math:`\frac1R \sum_r A(J_r) \ne A(\frac1R \sum_r J_r)`.
Averaging the ranks' *aggregated* updates — what ``DistributedDataParallel`` would do if each rank ran
Jacobian descent on its shard — is Jacobian descent on each shard separately: the average of directions
that each conflict with no task *on its shard* can conflict with a task on the global batch. The functions
here average (or gather) the **Jacobians** first, so that every rank aggregates the same matrix, the
Jacobian of the global batch, and writes the same ``.grad``: exactly what one process would compute on
the whole batch, up to floating-point summation order.

Both functions wrap their :mod:`mtlcourse.autojac` namesakes with an aggregator that communicates before
it aggregates; they need an initialised process group (``torch.distributed.init_process_group``; gloo on
CPU, NCCL on GPU) and the same call on every rank.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from . import autojac

__all__ = ["backward", "mtl_backward"]


class _Synchronised:
    """An aggregator that first combines the ranks' Jacobians (average or concatenation), then aggregates."""

    def __init__(self, aggregator: Callable[[Tensor], Tensor], group, mode: str) -> None:
        self.aggregator, self.group, self.mode = aggregator, group, mode
        self.weights: Tensor | None = None

    def __call__(self, J: Tensor) -> Tensor:
        world = dist.get_world_size(self.group)
        if self.mode == "average":
            J = J.detach().clone()
            dist.all_reduce(J, op=dist.ReduceOp.SUM, group=self.group)
            J /= world
        else:
            shapes = [
                torch.zeros(2, dtype=torch.long, device=J.device) for _ in range(world)
            ]  # NCCL: on the GPU
            dist.all_gather(shapes, torch.tensor(J.shape, device=J.device), group=self.group)
            if any(not torch.equal(s, shapes[0]) for s in shapes):
                raise ValueError(
                    f"every rank must have the same number of losses and parameters, got shapes "
                    f"{[tuple(s.tolist()) for s in shapes]}"
                )
            rows = [torch.empty_like(J) for _ in range(world)]
            dist.all_gather(rows, J.detach().contiguous(), group=self.group)
            J = torch.cat(rows)
        direction, self.weights = autojac._aggregate(self.aggregator, J)
        return direction


def _average_grads(params: Iterable[Tensor], group) -> None:
    world = dist.get_world_size(group)
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM, group=group)
            p.grad /= world


def mtl_backward(
    losses: Sequence[Tensor] | Tensor,
    features: Sequence[Tensor] | Tensor,
    tasks_params: Sequence[Iterable[Tensor]],
    shared_params: Iterable[Tensor],
    aggregator: Callable[[Tensor], Tensor],
    *,
    group=None,
    retain_graph: bool = False,
    loss_scale: float | Tensor | None = None,
) -> Tensor | None:
    r""":func:`mtlcourse.autojac.mtl_backward` across ranks, each holding a shard of the batch.

    Every rank passes the mean losses of its shard. The ranks' Jacobians with respect to the shared
    parameters are **averaged before aggregation** (with equal shard sizes this is the Jacobian of the
    mean losses over the global batch), every rank aggregates that same matrix, and the task-specific
    gradients are averaged too: afterwards ``.grad`` is identical on every rank and equal to what
    :func:`mtlcourse.autojac.mtl_backward` leaves in one process on the whole batch.

    Stateful aggregators (Nash-MTL, GradVac, Random) see the same Jacobian on every rank, so a rank's
    state stays identical to the others' as long as they were built identically (same seed).

    Parameters
    ----------
    losses, features, tasks_params, shared_params, aggregator, retain_graph, loss_scale
        As in :func:`mtlcourse.autojac.mtl_backward`, for this rank's shard.
    group
        The process group (default: the world).

    Notes
    -----
    Gradients are accumulated like :meth:`torch.Tensor.backward`; the result is identical across ranks if
    the ``.grad`` fields were identical before the call (e.g. all zero, or from earlier calls of this
    function). Shards of different sizes weight the ranks equally, not the examples: use equal shards.
    """
    synchronised = _Synchronised(aggregator, group, "average")
    tasks_params = [list(group_params) for group_params in tasks_params]
    autojac.mtl_backward(
        losses,
        features,
        tasks_params,
        shared_params,
        synchronised,
        retain_graph=retain_graph,
        loss_scale=loss_scale,
    )
    _average_grads([p for group_params in tasks_params for p in group_params], group)
    return synchronised.weights


def backward(
    losses: Sequence[Tensor] | Tensor,
    params: Iterable[Tensor],
    aggregator: Callable[[Tensor], Tensor],
    *,
    group=None,
    retain_graph: bool = False,
    loss_scale: float | Tensor | None = None,
) -> Tensor | None:
    r""":func:`mtlcourse.autojac.backward` across ranks whose losses are *different* objectives.

    For instance-wise risk minimisation, each rank's losses are the per-example losses of its own
    examples: rows of one global Jacobian, not estimates of the same rows. The ranks' Jacobians are
    therefore **gathered** (concatenated in rank order), every rank aggregates the full
    :math:`(R m) \times n` matrix and accumulates the same direction into ``.grad``. ``loss_scale`` is
    as in :func:`mtlcourse.autojac.mtl_backward`.

    Returns
    -------
    Tensor or None
        The weights of all :math:`R m` rows (rank 0's first), when ``aggregator`` is an
        :class:`~mtlcourse.aggregation.Aggregator`; ``None`` otherwise.
    """
    synchronised = _Synchronised(aggregator, group, "gather")
    autojac.backward(losses, params, synchronised, retain_graph=retain_graph, loss_scale=loss_scale)
    return synchronised.weights
