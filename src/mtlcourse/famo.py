r"""FAMO: balance the tasks' rates of improvement from the loss values alone (Liu et al., 2023)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mtlcourse.models import Features, MultiTaskNetwork
from mtlcourse.weighting import LossWeighting

_EPS = 1e-8


class FAMO(LossWeighting):
    r"""Fast Adaptive Multitask Optimization: one backward pass per step, weights learned from the losses.

    FAMO keeps logits :math:`\xi \in \mathbb R^m` (start at 0) and backpropagates

    .. math::

        L = c \sum_i z_i \log(L_i - b_i + \epsilon), \qquad z = \operatorname{softmax}(\xi), \qquad
        c = \Big(\sum_i \frac{z_i}{L_i - b_i + \epsilon}\Big)^{-1} \ \text{(a constant for autograd)},

    whose gradient is :math:`\sum_i w_i \nabla L_i` with :math:`w_i = c\, z_i / (L_i - b_i + \epsilon)`:
    positive weights summing to 1, which is what :meth:`weights` returns and ``fit`` records. :math:`b` is a
    lower bound on the losses (``min_losses``, default 0) and :math:`\epsilon = 10^{-8}`. After the
    optimiser step, FAMO measures how much each log-loss fell,
    :math:`\delta_i = \log(L_i^{\rm before} - b_i + \epsilon) - \log(L_i^{\rm after} - b_i + \epsilon)`, and
    takes one Adam step (rate ``lr``, weight decay ``weight_decay``, an optimiser of its own) on
    :math:`\xi` along :math:`\nabla_\xi\, z(\xi)^\top \delta` (the gradient *is* stepped along, as a loss
    gradient: a task that improved less gains weight). Per step this costs :math:`O(m)` on top of one
    backward pass: no Jacobian, no Gramian.

    **When the update happens.** The official code recomputes the losses on the same batch after
    ``optimizer.step()`` and calls ``update(new_losses)``; ``fit`` does the same through
    :meth:`after_step`, at the cost of one forward pass without graph per step, so full-batch and
    mini-batch training both follow the official procedure. Outside ``fit``, call :meth:`update` yourself
    after the step; if nobody does, :meth:`backward` applies the pending update with the losses it is
    given (the next batch's, so :math:`\delta` then also contains the change of batch). The logits are
    not among ``parameters()``, so ``fit``'s optimiser never touches them; :meth:`reset` (called by
    ``fit`` at the start of every run) puts them back to 0 and discards the Adam state.

    Notes
    -----
    Same formulas, defaults (``lr=0.025``, ``weight_decay=1e-3``, as in the paper's Algorithm 2 and LibMTL)
    and arithmetic as ``torchjd.scalarization.FAMO`` (0.18) used with ``update`` after each step, except
    that the logits and their Adam state are float64 here (float32 there). The official code
    (``Cranial-XIX/FAMO``) defaults to ``weight_decay=1e-5`` and clips the norm of the shared gradient to
    ``max_norm=1`` after ``backward``: use ``fit(..., clip_grad_norm=1.0)`` for that (it clips all the
    model's parameters, heads included). Unlike torchjd, losses not above their lower bound are refused
    (the logarithm needs :math:`L_i > b_i`).

    Parameters
    ----------
    m
        Number of tasks.
    min_losses
        Lower bounds :math:`b_i` of the losses (length :math:`m`); default 0.
    lr, weight_decay
        Learning rate and weight decay of the Adam optimiser of the logits.

    References
    ----------
    B. Liu, Y. Feng, P. Stone, Q. Liu. *FAMO: Fast Adaptive Multitask Optimization*. NeurIPS 2023.
    https://arxiv.org/abs/2306.03792
    """

    def __init__(
        self, m: int, min_losses: Sequence[float] | None = None, lr: float = 0.025, weight_decay: float = 1e-3
    ) -> None:
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"need at least one task, got m={m!r}")
        for name, value in (("lr", lr), ("weight_decay", weight_decay)):
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be nonnegative and finite, got {value}")
        b = torch.zeros(m, dtype=torch.float64) if min_losses is None else torch.tensor(min_losses).double()
        if b.shape != (m,) or not torch.isfinite(b).all():
            raise ValueError(f"min_losses must be {m} finite numbers, got {min_losses!r}")
        self.m, self.min_losses, self.lr, self.weight_decay = m, b, lr, weight_decay
        self.logits = torch.zeros(m, dtype=torch.float64, requires_grad=True)
        self.reset()

    def reset(self) -> None:
        """Logits back to 0, a fresh Adam, no pending update."""
        with torch.no_grad():
            self.logits.zero_()
        self.logits.grad = None
        self._optimizer = torch.optim.Adam([self.logits], lr=self.lr, weight_decay=self.weight_decay)
        self._previous: torch.Tensor | None = None  # the shifted losses of the last step, until its update

    def _shifted(self, losses: torch.Tensor) -> torch.Tensor:
        """:math:`L - b + \\epsilon` in float64, after checking the shape and that :math:`L > b`."""
        if losses.shape != (self.m,):
            raise ValueError(f"FAMO was built for {self.m} tasks, got losses of shape {tuple(losses.shape)}")
        values = losses.detach().to(device="cpu", dtype=torch.float64)
        if not (torch.isfinite(values).all() and (values > self.min_losses).all()):
            raise ValueError(
                f"FAMO takes log(L_i - b_i): every loss must be finite and above its lower bound "
                f"{self.min_losses.tolist()}, got {values.tolist()}"
            )
        return values - self.min_losses + _EPS

    def weights(self, losses: torch.Tensor, model: MultiTaskNetwork | None = None) -> torch.Tensor:
        r"""The weights :math:`w_i = c\, z_i / (L_i - b_i + \epsilon)` of this step (sum 1), float64."""
        return self._weights(self._shifted(losses))

    def _weights(self, shifted: torch.Tensor) -> torch.Tensor:
        ratio = torch.softmax(self.logits.detach(), dim=0) / shifted
        return ratio / ratio.sum()

    def update(self, losses: torch.Tensor) -> None:
        """Adam step on the logits from the losses *after* the last step (no-op before the first step)."""
        if self._previous is None:
            return
        delta = self._previous.log() - self._shifted(losses).log()
        self._previous = None
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(torch.softmax(self.logits, dim=0), self.logits, delta)
        self.logits.grad = gradient
        self._optimizer.step()
        self.logits.grad = None

    def after_step(self, losses_after_step) -> None:
        """``fit``'s hook after the optimiser step: the official update, on the same batch."""
        self.update(losses_after_step())

    def backward(self, losses: torch.Tensor, model: MultiTaskNetwork, features: Features) -> torch.Tensor:
        self.update(losses)  # the previous step's update, if nobody applied it after the step
        shifted = self._shifted(losses)  # one copy of the losses to the CPU per step, used twice
        weights = self._weights(shifted).to(losses)
        (weights @ losses).backward()
        self._previous = shifted
        return weights.detach()

    def __repr__(self) -> str:
        return (
            f"FAMO(m={self.m}, min_losses={self.min_losses.tolist()}, lr={self.lr}, "
            f"weight_decay={self.weight_decay})"
        )
