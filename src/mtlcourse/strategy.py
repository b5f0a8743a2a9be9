"""The one protocol of training: how the per-task losses of a step become gradients.

:func:`mtlcourse.training.fit` holds a :class:`Strategy` and never needs to know which one:
a loss weighting puts gradients into ``.grad`` through a weighted sum of the losses, Jacobian
descent through :func:`mtlcourse.autojac.mtl_backward` and an aggregator. Every strategy
returns the task weights it used, so a chapter can plot them over training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from mtlcourse.autojac import mtl_backward
from mtlcourse.models import Features, MultiTaskNetwork


class Strategy:
    """Base class: override :meth:`backward`; the other hooks are optional."""

    separate_losses: bool = False
    """If ``True``, ``fit`` passes :meth:`backward` the losses as a list of scalar tensors, one per task,
    instead of their stacked vector: an entry of the vector is connected to every head, so a strategy
    that backpropagates the losses one by one would run every head once per task."""

    def backward(self, losses: torch.Tensor, model: MultiTaskNetwork, features: Features) -> torch.Tensor:
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

    def to(self, device: torch.device | str) -> Strategy:
        """Put the strategy's own tensors (its :meth:`parameters`, weights it uses every step) on ``device``;
        returns ``self``. ``fit`` calls it with the model's device after :meth:`reset` and before it builds
        the optimiser, so that no step copies them there. The default does nothing."""
        return self

    def after_step(self, losses_after_step: Callable[[], torch.Tensor]) -> None:
        """Called by ``fit`` right after each optimiser step, with a function that recomputes the task
        losses on the same batch (no autograd graph). The default does nothing and never calls it, so
        a strategy that does not need it costs no extra forward pass (FAMO needs it)."""

    def end_epoch(self, record: Mapping[str, float]) -> None:
        """Called by ``fit`` with the epoch's history row, once the validation metrics are in."""

    def reset(self) -> None:
        """Forget what earlier steps taught the strategy (running statistics, random state, learned
        weights); ``fit`` calls it at the start of every run, so two runs in a row give the same result.
        """


class JacobianDescent(Strategy):
    r"""Jacobian descent on the shared parameters: :math:`\nabla_\theta \leftarrow A(J)`.

    Each step calls :func:`mtlcourse.autojac.mtl_backward`: every head receives the plain gradient of
    its own task's loss, and the trunk receives ``aggregator(J)``, where :math:`J` is the Jacobian of the
    task losses with respect to the trunk's parameters (one row per task). With
    :class:`~mtlcourse.aggregation.Mean` this is equal weights :math:`1/m` on the trunk and weight 1 on
    each head.

    Which parameters are "shared" is the model's answer, ``model.shared_parameters()``: a trunk,
    cross-stitch columns and units, MMoE's experts. A model that shares nothing
    (:class:`~mtlcourse.sharing.SoftSharing`) leaves nothing to aggregate: each task's parameters receive the
    gradient of its own loss, and the returned weights are ones.

    Parameters
    ----------
    aggregator
        Any :class:`~mtlcourse.aggregation.Aggregator` (``PCGrad()``, ``MGDA()``, ``CAGrad()``,
        ``UPGrad()``, …); its weights are what ``fit`` records as ``weight_<task>``.
    """

    separate_losses = True  # each loss through its own head only (m head passes, not m²)

    def __init__(self, aggregator) -> None:
        self.aggregator = aggregator

    def backward(
        self, losses: torch.Tensor | Sequence[torch.Tensor], model: MultiTaskNetwork, features: Features
    ) -> torch.Tensor:
        shared = model.shared_parameters()
        if not shared:
            return _own_gradients(losses, model)
        weights = mtl_backward(
            losses=list(losses),
            features=features,
            tasks_params=list(model.task_parameters().values()),
            shared_params=shared,
            aggregator=self.aggregator,
        )
        if weights is None:  # a plain callable J -> d (e.g. a torchjd aggregator) exposes no weights
            return torch.full((len(losses),), float("nan"), device=losses[0].device)
        return weights.detach()

    def reset(self) -> None:
        """Reset a stateful aggregator (one with a ``reset()`` method, e.g. Nash-MTL, GradVac)."""
        if callable(reset := getattr(self.aggregator, "reset", None)):
            reset()

    def __repr__(self) -> str:
        return f"JacobianDescent({self.aggregator!r})"


def _own_gradients(losses: torch.Tensor | Sequence[torch.Tensor], model: MultiTaskNetwork) -> torch.Tensor:
    """No shared parameters: accumulate the gradient of loss ``t`` into task ``t``'s parameters; weights 1."""
    groups = list(model.task_parameters().values())
    if len(groups) != len(losses):
        raise ValueError(f"{len(losses)} losses for a model with {len(groups)} groups of task parameters")
    for i, (loss, group) in enumerate(zip(losses, groups, strict=True)):
        if not group:
            continue
        grads = torch.autograd.grad(loss, group, retain_graph=i < len(losses) - 1, materialize_grads=True)
        for p, g in zip(group, grads, strict=True):
            p.grad = g if p.grad is None else p.grad + g
    return torch.ones(len(losses), device=losses[0].device)
