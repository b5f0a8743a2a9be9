r"""Jacobian descent in a few functions: the Jacobian of the losses, and backward passes that aggregate it.

``jacobian`` stacks the gradients of ``m`` losses into an ``(m, n)`` matrix; ``backward`` and
``mtl_backward`` replace ``sum(losses).backward()`` by ``aggregator(J)`` written into the ``.grad`` fields,
so any ``torch.optim`` optimizer can take the step. The conventions are those of ``torchjd.autojac``
(``mtl_backward`` leaves the same ``.grad`` as ``torchjd.autojac.mtl_backward`` followed by
``torchjd.autojac.jac_to_grad``).

**Non-finite values propagate, as with** ``loss.backward()``: a NaN or infinite loss or Jacobian entry gives
a non-finite ``.grad`` (and NaN weights when the aggregator cannot weigh such a Jacobian), never an error.
This is what ``torch.amp.GradScaler`` needs: when a float16 backward pass overflows, ``scaler.step`` finds
the inf in ``.grad``, skips the step and lowers the scale. Check the losses yourself if a non-finite value
should stop training (``fit`` does). Calling an aggregator directly on such a ``J`` still raises
``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from .aggregation.base import Aggregator, aggregate, autocast_off

__all__ = ["backward", "gramian", "jacobian", "mtl_backward"]


def jacobian(
    losses: Sequence[Tensor] | Tensor, params: Iterable[Tensor], *, retain_graph: bool = False
) -> Tensor:
    r"""Jacobian of the losses with respect to the parameters, as one matrix.

    Parameters
    ----------
    losses : sequence of scalar tensors, or a 1-D tensor
        The ``m`` task losses :math:`L_1, \dots, L_m`.
    params : iterable of tensors
        Tensors requiring grad (e.g. ``model.parameters()``), in the order of the columns.
    retain_graph : bool, default False
        Keep the autograd graph, as in :func:`torch.autograd.grad`.

    Returns
    -------
    Tensor
        :math:`J` of shape ``(m, n)`` with :math:`J_{ij} = \partial L_i / \partial \theta_j`: rows in
        task order, columns the parameters flattened and concatenated in order (zero columns for parameters
        the losses do not depend on). All rows are computed by one batched backward pass
        (``is_grads_batched=True``).
    """
    stacked = _check_losses(losses)
    params = _check_params(params, "params")
    return _flat_jacobian(_batched_grad(stacked, params, _identity(stacked), retain_graph=retain_graph))


def gramian(
    losses: Sequence[Tensor] | Tensor, params: Iterable[Tensor], *, retain_graph: bool = False
) -> Tensor:
    r"""The Gramian :math:`G = J J^\top` of the losses, through :math:`J`: the route for any model.

    Every Gramian-based aggregator needs only :math:`G` (its ``weights_from_gramian``). This forms
    :math:`J` with :func:`jacobian` and returns :math:`J J^\top` in float64, whatever the dtype of
    :math:`J` — correct for any graph. For instance-wise losses through ``nn.Linear`` layers,
    :class:`mtlcourse.autogram.LinearGramian` computes the same matrix without forming :math:`J`, and
    :func:`mtlcourse.autogram.gramian_backward` falls back to this function for other models.

    Returns
    -------
    Tensor
        Shape ``(m, m)``, float64, symmetric positive semi-definite.
    """
    J = jacobian(losses, params, retain_graph=retain_graph).double()
    return J @ J.T


def backward(
    losses: Sequence[Tensor] | Tensor,
    params: Iterable[Tensor],
    aggregator: Callable[[Tensor], Tensor],
    *,
    retain_graph: bool = False,
    loss_scale: float | Tensor | None = None,
) -> Tensor | None:
    r"""Jacobian descent on ``params``: accumulate :math:`A(J)` into their ``.grad`` fields.

    Computes :math:`J` = :func:`jacobian` ``(losses, params)`` and adds ``aggregator(J)``, cut and reshaped
    per parameter, to each ``.grad`` (created if ``None``), like :meth:`torch.Tensor.backward` does with the
    gradient. With :class:`~mtlcourse.aggregation.Mean` this is ``(sum(losses) / m).backward()``.
    ``loss_scale``: see :func:`mtl_backward`.

    Returns
    -------
    Tensor or None
        The weights :math:`w` (shape ``(m,)``) such that the update is :math:`J^\top w`, when ``aggregator``
        is a :class:`~mtlcourse.aggregation.Aggregator`; ``None`` for any other callable (e.g. a torchjd
        aggregator).
    """
    stacked = _check_losses(losses)
    params = _check_params(params, "params")
    J = _flat_jacobian(_batched_grad(stacked, params, _identity(stacked), retain_graph=retain_graph))
    direction, weights = _aggregate(aggregator, J, loss_scale)
    _accumulate(params, direction.split([p.numel() for p in params]))
    return weights


def mtl_backward(
    losses: Sequence[Tensor] | Tensor,
    features: Sequence[Tensor] | Tensor,
    tasks_params: Sequence[Iterable[Tensor]],
    shared_params: Iterable[Tensor],
    aggregator: Callable[[Tensor], Tensor],
    *,
    retain_graph: bool = False,
    loss_scale: float | Tensor | None = None,
) -> Tensor | None:
    r"""Backward pass of a shared trunk with task heads: Jacobian descent on the trunk only.

    For a model ``features = trunk(x)``, ``losses[i] = loss_i(head_i(features))``:

    - each task-specific parameter (``tasks_params[i]``) gets the plain gradient of its own loss;
    - the shared parameters get ``aggregator(J)``, where :math:`J` is the Jacobian of the losses with respect
      to ``shared_params``. It is obtained by backpropagating the ``(m, *features.shape)`` Jacobian of the
      losses with respect to ``features`` through the trunk in one batched pass, never by ``m`` separate
      passes through the trunk.

    Gradients are accumulated into ``.grad`` like :meth:`torch.Tensor.backward`. This leaves the same
    ``.grad`` as ``torchjd.autojac.mtl_backward(losses, features, tasks_params=..., shared_params=...)``
    followed by ``torchjd.autojac.jac_to_grad(shared_params, aggregator)``.

    Parameters
    ----------
    losses : sequence of scalar tensors, or a 1-D tensor
        One loss per task. Prefer the sequence: each loss is then backpropagated through its own head
        only, whereas an entry of a stacked vector reaches every head (zero gradients, but :math:`m^2`
        head passes in all) — invisible for a few tasks, the larger part of the step at :math:`m = 64`.
    features : tensor or sequence of tensors
        The output(s) of the shared trunk, from which every head computes its loss.
    tasks_params : sequence of iterables of tensors
        ``tasks_params[i]`` are the parameters of head ``i``; one group per loss.
    shared_params : iterable of tensors
        The parameters of the trunk (e.g. ``trunk.parameters()``); disjoint from every task group.
    aggregator : callable
        Maps the ``(m, n_shared)`` Jacobian to a direction, e.g. ``UPGrad()``.
    retain_graph : bool, default False
        Keep the autograd graph, as in :func:`torch.autograd.backward`.
    loss_scale : float or Tensor, optional
        The factor :math:`S` the losses were multiplied by for mixed precision (``scaler.get_scale()`` of a
        ``torch.amp.GradScaler`` whose ``scaler.scale(loss)`` produced ``losses``). The Jacobian is divided
        by :math:`S` before aggregation and the direction multiplied by it after, so the aggregator sees the
        true :math:`J` and ``scaler.unscale_``/``scaler.step`` recover :math:`A(J)`. Without it an
        aggregator that is not positively homogeneous gets the wrong step: Nash-MTL's direction does not
        change when :math:`J` is scaled, so :math:`A(SJ) / S = A(J) / S`.

    Returns
    -------
    Tensor or None
        The weights :math:`w` applied to the rows of :math:`J` (shape ``(m,)``), for logging, when
        ``aggregator`` is a :class:`~mtlcourse.aggregation.Aggregator`; ``None`` otherwise.
    """
    losses = losses if isinstance(losses, Tensor) else list(losses)  # a generator is read once
    stacked = _check_losses(losses)
    features = [features] if isinstance(features, Tensor) else list(features)
    if not features:
        raise ValueError("features is empty: pass the output(s) of the shared trunk.")
    for k, f in enumerate(features):
        if not isinstance(f, Tensor) or not f.requires_grad:
            raise ValueError(f"features[{k}] is not a tensor attached to the autograd graph.")
    shared = _check_params(shared_params, "shared_params")
    groups = [_check_params(group, f"tasks_params[{i}]") for i, group in enumerate(tasks_params)]
    if len(groups) != len(stacked):
        raise ValueError(
            f"Got {len(stacked)} losses but {len(groups)} groups of task parameters; need one per loss."
        )
    shared_ids = {id(p) for p in shared}
    for i, group in enumerate(groups):
        if any(id(p) in shared_ids for p in group):
            raise ValueError(f"tasks_params[{i}] and shared_params overlap: a parameter cannot be both.")

    # Heads: one small backward per task, to its own parameters and to the features. Each loss is
    # backpropagated from its own tensor when the caller passed them separately: an entry of the stacked
    # vector would send a (zero) gradient into every head, m² head passes instead of m.
    # feature_rows[k][i] is the gradient of losses[i] with respect to features[k].
    scalars = stacked.unbind() if isinstance(losses, Tensor) else list(losses)
    feature_rows: list[list[Tensor]] = [[] for _ in features]
    for loss, group in zip(scalars, groups, strict=True):
        grads = torch.autograd.grad(loss, [*group, *features], retain_graph=True, materialize_grads=True)
        _accumulate(group, grads[: len(group)])
        for rows, g in zip(feature_rows, grads[len(group) :], strict=True):
            rows.append(g)
    # Trunk: one batched backward of the (m, *feature shape) Jacobian.
    feature_jacobians = [torch.stack(rows) for rows in feature_rows]
    shared_jacobian = _batched_grad(features, shared, feature_jacobians, retain_graph=retain_graph)
    direction, weights = _aggregate(aggregator, _flat_jacobian(shared_jacobian), loss_scale)
    _accumulate(shared, direction.split([p.numel() for p in shared]))
    return weights


def _check_losses(losses: Sequence[Tensor] | Tensor) -> Tensor:
    """Validate the losses and stack them into a vector of shape ``(m,)``."""
    if isinstance(losses, Tensor):
        if losses.ndim > 1:
            raise ValueError(
                f"losses must be scalars or a 1-D tensor, got a tensor of shape {tuple(losses.shape)}."
            )
        losses = losses.reshape(-1)
    losses = list(losses)
    if not losses:
        raise ValueError("No losses: pass at least one scalar loss.")
    for i, loss in enumerate(losses):
        if not isinstance(loss, Tensor):
            raise TypeError(f"losses[{i}] must be a tensor, got {type(loss).__name__}.")
        if loss.ndim != 0:
            raise ValueError(f"losses[{i}] must be a scalar, got a tensor of shape {tuple(loss.shape)}.")
        if not loss.requires_grad:
            raise ValueError(f"losses[{i}] does not require grad: it is not attached to any parameter.")
    return torch.stack(losses)


def _check_params(params: Iterable[Tensor], name: str) -> list[Tensor]:
    """Materialise an iterable of parameters (e.g. a generator) and check it can receive gradients."""
    if isinstance(params, Tensor):
        params = [params]
    params = list(params)
    if not params:
        raise ValueError(f"{name} is empty.")
    for k, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{name}[{k}] must be a tensor, got {type(p).__name__}.")
        if not p.requires_grad:
            raise ValueError(f"{name}[{k}] (shape {tuple(p.shape)}) does not require grad.")
    if len({id(p) for p in params}) != len(params):
        raise ValueError(f"{name} contains the same tensor twice.")
    return params


def _batched_grad(
    outputs: Tensor | Sequence[Tensor],
    inputs: list[Tensor],
    grad_outputs: Tensor | Sequence[Tensor],
    *,
    retain_graph: bool,
) -> list[Tensor]:
    """Vector-Jacobian products for a batch of cotangents (first dimension of ``grad_outputs``) in one
    backward pass (``vmap``); an input the outputs do not depend on gets zeros."""
    m = (grad_outputs if isinstance(grad_outputs, Tensor) else grad_outputs[0]).shape[0]
    grads = torch.autograd.grad(
        outputs, inputs, grad_outputs, is_grads_batched=True, retain_graph=retain_graph, allow_unused=True
    )
    return [g if g is not None else x.new_zeros((m, *x.shape)) for g, x in zip(grads, inputs, strict=True)]


def _identity(stacked: Tensor) -> Tensor:
    return torch.eye(len(stacked), dtype=stacked.dtype, device=stacked.device)


def _flat_jacobian(jacobians: Sequence[Tensor]) -> Tensor:
    return torch.cat([j.reshape(j.shape[0], -1) for j in jacobians], dim=1)


def _aggregate(
    aggregator: Callable[[Tensor], Tensor], J: Tensor, loss_scale: float | Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    if loss_scale is not None:  # aggregate the true Jacobian, hand back the scaled direction
        direction, weights = _aggregate(aggregator, J / loss_scale)
        return direction * loss_scale, weights
    if isinstance(aggregator, Aggregator):
        return aggregate(aggregator, J, nonfinite="propagate")
    with autocast_off(J.device):  # e.g. a torchjd aggregator: its Gramian in J's dtype, not autocast's
        return aggregator(J), None


def _accumulate(params: Sequence[Tensor], grads: Sequence[Tensor]) -> None:
    for p, g in zip(params, grads, strict=True):
        g = g.reshape(p.shape).to(p.dtype)
        if p.grad is None:
            p.grad = g
        else:
            p.grad += g
