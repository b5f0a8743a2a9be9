r"""GradNorm: learn the task weights so that every task's gradient on the shared layer is as large as its
training rate deserves (Chen, Badrinarayanan, Lee & Rabinovich 2018, ICML).

The weights are not parameters of ``fit``'s optimiser: they follow their own loss, :math:`L_{\mathrm{grad}}`,
and :class:`GradNorm` updates them itself, inside :meth:`GradNorm.backward`, once the network's gradient is
in ``.grad``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from mtlcourse.models import Features, MultiTaskNetwork
from mtlcourse.weighting import LossWeighting

_OPTIMIZERS = ("sgd", "adam")


def last_linear_weight(model: MultiTaskNetwork) -> nn.Parameter:
    """The weight of the last ``nn.Linear`` registered in ``model.trunk`` (GradNorm's default :math:`W`).

    "Last" is in registration order, which for an ``nn.Sequential`` trunk (as built by
    :func:`mtlcourse.models.mlp`) is the order of the forward pass. A model without a ``trunk`` (e.g. the
    architectures of :mod:`mtlcourse.sharing`) raises ``ValueError``: name the layer yourself.
    """
    trunk = getattr(model, "trunk", None)
    if not isinstance(trunk, nn.Module):
        raise ValueError(
            f"{type(model).__name__} has no trunk, so GradNorm cannot pick the last shared layer by itself: "
            "pass GradNorm(layer=...) with a weight from model.shared_parameters()"
        )
    linears = [module for module in trunk.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(
            f"model.trunk ({type(model.trunk).__name__}) has no nn.Linear layer, so GradNorm cannot pick the "
            "last shared layer by itself: pass GradNorm(layer=...) with the shared weight to use"
        )
    return linears[-1].weight


class GradNorm(LossWeighting):
    r"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich 2018, "GradNorm: Gradient Normalization for
    Adaptive Loss Balancing in Deep Multitask Networks", ICML).

    The network is trained on :math:`\sum_i w_i(t) L_i(t)`; the weights :math:`w_i(t)` are trained on
    a loss of their own. With :math:`W` the weights of the last shared layer,

    .. math::
        G_i(t) = \bigl\lVert \nabla_W\, w_i(t) L_i(t) \bigr\rVert_2, \qquad
        \bar G(t) = \tfrac1m \textstyle\sum_i G_i(t),

    .. math::
        \tilde L_i(t) = \frac{L_i(t)}{L_i(0)}, \qquad
        r_i(t) = \frac{\tilde L_i(t)}{\tfrac1m \sum_j \tilde L_j(t)}, \qquad
        L_{\mathrm{grad}}(t) = \sum_i \Bigl| G_i(t) - \bigl[\bar G(t)\, r_i(t)^\alpha\bigr] \Bigr|,

    where the bracket, the *target* of task :math:`i`, is held constant (detached), and
    :math:`L_i(0)` is the (detached) loss of the first step. A task that trains slowly
    (:math:`r_i > 1`) is given a larger target gradient; :math:`\alpha` sets how strongly. With
    :math:`\alpha = 0` GradNorm only equalises the gradient norms :math:`G_i`.

    Each call of :meth:`backward` (one training step) does, in the paper's order:

    1. compute :math:`G_i`, :math:`r_i`, the targets and :math:`\nabla_w L_{\mathrm{grad}}`
       (differentiating *only* with respect to the weights, not the network);
    2. put :math:`\nabla_\theta \sum_i w_i L_i` into the network's ``.grad``, with the weights of this
       step (``fit``'s optimiser then steps the network);
    3. step the weights on :math:`\nabla_w L_{\mathrm{grad}}` (by default a plain gradient step, as in
       the paper's Algorithm 1), clamp them at ``min_weight`` and renormalise them so that
       :math:`\sum_i w_i = T`.

    It returns the weights of step 2, the ones the losses were multiplied by.

    Since :math:`\nabla_W (w_i L_i) = w_i \nabla_W L_i` and :math:`w_i > 0`,
    :math:`G_i = w_i \lVert\nabla_W L_i\rVert` is linear in :math:`w_i`, and the gradient has a closed form:

    .. math::
        \frac{\partial L_{\mathrm{grad}}}{\partial w_i}
        = \operatorname{sign}\bigl(G_i - \bar G\, r_i^\alpha\bigr)\, \lVert \nabla_W L_i \rVert_2 .

    So no second-order autograd is needed: :math:`m` extra backward passes (``torch.autograd.grad`` of
    each :math:`L_i` down to :math:`W`, keeping the graph) give the :math:`\lVert \nabla_W L_i \rVert`,
    and one ordinary ``backward()`` gives the network's gradient.

    **The weights' update.** The paper's Algorithm 1 takes a gradient step on :math:`w` and
    renormalises; that is the default here (``optimizer="sgd"``): :math:`w \leftarrow w - \eta\,
    \nabla_w L_{\mathrm{grad}}`, then the floor and :math:`w \leftarrow T w / \sum_i w_i`, with
    :math:`\eta` = ``lr``, the weights' own learning rate. The step has the units of a loss gradient on
    :math:`W`: a task whose loss is 100 times larger gets a step 100 times larger, and the steps shrink
    as the losses fall, so ``lr`` must be tuned to the loss scale (too large, and a weight collapses to
    the floor; see *Collapse*). ``optimizer="adam"`` is a variant, not the paper's: ``torch.optim.Adam``
    on the weights, which divides by the gradient's running RMS, so each weight moves by about ``lr``
    per step whatever the losses' units; its momentum carries a weight past its balance (an L1 loss's
    gradient keeps its full size up to the balance point) and the weights oscillate around it.
    ``fit``'s ``optimizer`` and ``lr`` do not touch the weights: they are a plain tensor, not returned
    by ``model.parameters()``.

    **Collapse.** With a weight learning rate too large for the weights' scale, a step can take a weight
    to zero or below (the paper, as we read it, warns that a weight learning rate that is too large makes
    a weight collapse towards 0). A weight :math:`\le 0` would flip the sign of its task's gradient
    (gradient *ascent* on that loss), and :math:`G_i = |w_i|\,\lVert\nabla_W L_i\rVert` would no longer
    be linear in :math:`w_i`. This class therefore clamps every weight at ``min_weight`` before
    renormalising: a collapsing task keeps a tiny positive weight, at least ``min_weight * T / sum(w)``,
    and can recover.

    **Where popular implementations differ** (from our reading of them at the time of writing; check the
    version you use):

    - LibMTL (Lin & Zhang) computes :math:`G_i` from the gradient with respect to *all* shared parameters
      rather than the last shared layer: more faithful to the whole trunk's balance, but as costly as
      :math:`m` full backward passes through the trunk. Its weights are :math:`T \cdot
      \mathrm{softmax}(s)` of unconstrained parameters :math:`s` trained by the network's optimiser, so
      they are positive and sum to :math:`T` by construction (no clamping or renormalisation step), but
      the dynamics differ: a step on :math:`s` changes the weights multiplicatively, and a weight can
      only approach 0. Its default is :math:`\alpha = 1.5`, like here; as far as we know it also takes
      the loss ratios from epoch-mean losses and keeps the weights at 1 during the first epoch.
    - Some re-implementations renormalise the weights to sum to 1 instead of :math:`T`. The ratios
      between tasks are the same, but the network's gradient :math:`\nabla \sum_i w_i L_i` is :math:`T`
      times smaller: under SGD the same as dividing the network's learning rate by :math:`T` (under Adam
      it changes almost nothing); the weights' own step sizes relative to the weights change too.
    - Some differentiate :math:`L_{\mathrm{grad}}` with autograd through
      ``torch.autograd.grad(..., create_graph=True)`` (a double backward); the result is the same closed
      form above, at a higher cost. Forgetting to detach the target :math:`\bar G r_i^\alpha` (which
      depends on all the weights through :math:`\bar G`) silently changes the gradient.

    Parameters
    ----------
    alpha
        The asymmetry :math:`\alpha \ge 0`. As we read the paper, it uses 0.12 on its synthetic tasks and
        1.5 on NYUv2; LibMTL's default is 1.5.
    lr
        The weights' own learning rate :math:`\eta`. With the default update (a plain gradient step) a
        weight moves by ``lr`` times :math:`\lVert \nabla_W L_i \rVert` per step: tune it to the losses'
        scale. With ``optimizer="adam"`` a weight moves by about ``lr`` per step.
    total
        :math:`T > 0`, the sum the weights are renormalised to; ``None`` means the number of tasks
        :math:`m` (the paper's choice). The weights start equal, at :math:`T / m` (1 when :math:`T = m`).
    layer
        The shared weight :math:`W` (a parameter of ``model.trunk``, or a module whose ``weight`` it is);
        ``None``: the weight matrix of the last ``nn.Linear`` of ``model.trunk``.
    optimizer
        ``"sgd"`` (default, the paper's update: plain gradient descent, ``w <- w - lr * grad``) or
        ``"adam"`` (a variant: ``torch.optim.Adam`` with its default betas).
    min_weight
        Floor applied to the weights after each step, before renormalising (see *Collapse*).

    Attributes
    ----------
    initial_losses
        :math:`L_i(0)`, detached, once the first step is done (with mini-batches: the first batch's).
    last_grad_norms
        :math:`G_i(t)` of the last step (computed with that step's weights), float64.
    last_inverse_rates
        :math:`r_i(t)` of the last step.
    last_targets
        :math:`\bar G(t)\, r_i(t)^\alpha` of the last step.
    last_gradnorm_loss
        :math:`L_{\mathrm{grad}}(t)` of the last step (a float).
    last_weight_grad
        :math:`\nabla_w L_{\mathrm{grad}}(t)` of the last step.

    Notes
    -----
    A task whose loss does not depend on :math:`W` has :math:`G_i = 0`: its target is never reached and
    its weight only grows. :math:`L_i(0)`, the weights and the optimiser's state belong to one run:
    :meth:`reset` (which ``fit`` calls at the start of every run) forgets them, so one instance can
    serve several runs. ``fit`` records the weights each step used as
    ``weight_<task>`` (epoch means).

    Raises
    ------
    ValueError
        At construction, for :math:`\alpha < 0`, ``lr``, ``total`` or ``min_weight`` not positive, an
        unknown optimiser; in :meth:`backward`, for a first-step loss that is not positive and finite, a
        negative or non-finite loss later, a number of tasks that changes, a trunk without ``nn.Linear``
        and no ``layer``, or a ``layer`` that is not a shared parameter of the model.
    """

    def __init__(
        self,
        alpha: float = 1.5,
        lr: float = 0.01,
        total: float | None = None,
        layer: torch.Tensor | nn.Module | None = None,
        *,
        optimizer: Literal["sgd", "adam"] = "sgd",
        min_weight: float = 1e-4,
    ) -> None:
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be finite and non-negative, got {alpha}")
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr (the weights' learning rate) must be positive and finite, got {lr}")
        if total is not None and not (math.isfinite(total) and total > 0):
            raise ValueError(f"total (the sum T of the weights) must be positive and finite, got {total}")
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
        if not (math.isfinite(min_weight) and min_weight > 0):
            raise ValueError(f"min_weight must be positive and finite, got {min_weight}")
        if isinstance(layer, nn.Module):
            weight = getattr(layer, "weight", None)
            if not isinstance(weight, torch.Tensor):
                raise ValueError(f"layer {type(layer).__name__} has no weight tensor to take as W")
            layer = weight
        if layer is not None and not (isinstance(layer, torch.Tensor) and layer.requires_grad):
            raise ValueError("layer must be a parameter that requires grad (or a module with such a weight)")
        if total is not None and min_weight >= total:
            raise ValueError(f"min_weight ({min_weight}) must be smaller than total ({total})")
        self.alpha = float(alpha)
        self.lr = float(lr)
        self.total = None if total is None else float(total)
        self.layer = layer
        self.optimizer = optimizer
        self.min_weight = float(min_weight)
        self.initial_losses: torch.Tensor | None = None
        self.last_grad_norms: torch.Tensor | None = None
        self.last_inverse_rates: torch.Tensor | None = None
        self.last_targets: torch.Tensor | None = None
        self.last_gradnorm_loss: float | None = None
        self.last_weight_grad: torch.Tensor | None = None
        self._w: torch.Tensor | None = None
        self._opt: torch.optim.Optimizer | None = None

    def reset(self) -> None:
        """Back to the state before the first step: equal weights :math:`T/m`, no :math:`L_i(0)`, no
        optimiser state, no diagnostics of a last step."""
        self.initial_losses = None
        self.last_grad_norms = None
        self.last_inverse_rates = None
        self.last_targets = None
        self.last_gradnorm_loss = None
        self.last_weight_grad = None
        self._w = None
        self._opt = None

    # --- state -------------------------------------------------------------------------------------

    def _sum(self, m: int) -> float:
        return float(m) if self.total is None else self.total

    def _start(self, losses: torch.Tensor, model: MultiTaskNetwork) -> None:
        """First step: record :math:`L_i(0)`, create the weights and their optimiser."""
        first = losses.detach().double().cpu().clone()
        for name, value in zip(model.task_names, first.tolist(), strict=True):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"initial loss of task {name!r} is {value}: GradNorm's loss ratios L_i(t)/L_i(0) divide "
                    "by it, so it must be positive and finite"
                )
        m = len(first)
        if self.min_weight >= self._sum(m) / m:
            raise ValueError(f"min_weight ({self.min_weight}) must be below the initial weight T/m")
        self.initial_losses = first
        self._w = torch.full((m,), self._sum(m) / m, dtype=torch.float64)
        if self.optimizer == "adam":
            self._opt = torch.optim.Adam([self._w], lr=self.lr)
        else:
            self._opt = torch.optim.SGD([self._w], lr=self.lr)

    @property
    def current_weights(self) -> torch.Tensor | None:
        """The weights the next step will use (a copy); ``None`` before the first step."""
        return None if self._w is None else self._w.clone()

    def weights(self, losses: torch.Tensor, model: MultiTaskNetwork) -> torch.Tensor:
        """The weights of the coming step: :math:`T/m` each before the first step."""
        if self._w is None:
            m = len(losses)
            return torch.full((m,), self._sum(m) / m, dtype=torch.float64)
        return self._w.clone()

    def _shared_weight(self, model: MultiTaskNetwork) -> torch.Tensor:
        if self.layer is None:
            return last_linear_weight(model)
        if not any(p is self.layer for p in model.shared_parameters()):
            raise ValueError(
                "layer is not a parameter of model.trunk: GradNorm's W must be a shared layer (on a head, "
                "the other tasks' gradient norms would be 0)"
            )
        return self.layer

    # --- one step ----------------------------------------------------------------------------------

    def backward(self, losses: torch.Tensor, model: MultiTaskNetwork, features: Features) -> torch.Tensor:
        if losses.ndim != 1 or len(losses) == 0:
            raise ValueError(f"losses must have shape (m,) with m >= 1, got {tuple(losses.shape)}")
        if len(losses) != len(model.task_names):
            raise ValueError(f"{len(losses)} losses for a model with {len(model.task_names)} tasks")
        if self._w is None:
            self._start(losses, model)
        assert self._w is not None and self._opt is not None and self.initial_losses is not None
        if len(losses) != len(self._w):
            raise ValueError(f"GradNorm was started with {len(self._w)} tasks, got {len(losses)} losses")
        current = losses.detach().double().cpu()
        if not (torch.isfinite(current).all() and (current >= 0).all()):
            raise ValueError(f"GradNorm needs non-negative, finite losses, got {current.tolist()}")
        shared = self._shared_weight(model)

        # 1. ||grad_W L_i|| by m backward passes that keep the graph (first-order only), read in one copy.
        per_task = []
        for i in range(len(losses)):
            (g,) = torch.autograd.grad(losses[i], shared, retain_graph=True, allow_unused=True)
            g = shared.new_zeros((), dtype=torch.float64) if g is None else g.detach().double()
            per_task.append(torch.linalg.vector_norm(g))
        norms = torch.stack(per_task).cpu()

        w = self._w.detach().clone()
        grad_norms = w * norms  # G_i = w_i ||grad_W L_i||, w_i > 0
        ratios = current / self.initial_losses
        mean_ratio = ratios.mean()
        inverse_rates = ratios / mean_ratio if mean_ratio > 0 else torch.ones_like(ratios)
        targets = grad_norms.mean() * inverse_rates**self.alpha  # constant: no gradient flows through it
        weight_grad = torch.sign(grad_norms - targets) * norms

        # 2. The network's gradient, with this step's weights.
        (w.to(losses) @ losses).backward()

        # 3. The weights' own step, floor, renormalisation to sum T.
        self._opt.zero_grad()
        self._w.grad = weight_grad.clone()
        self._opt.step()
        with torch.no_grad():
            self._w.clamp_(min=self.min_weight)
            self._w.mul_(self._sum(len(w)) / self._w.sum())
        self._w.grad = None

        self.last_grad_norms = grad_norms
        self.last_inverse_rates = inverse_rates
        self.last_targets = targets
        self.last_gradnorm_loss = (grad_norms - targets).abs().sum().item()
        self.last_weight_grad = weight_grad
        return w

    def __repr__(self) -> str:
        layer = "last Linear of the trunk" if self.layer is None else f"tensor{tuple(self.layer.shape)}"
        return (
            f"GradNorm(alpha={self.alpha}, lr={self.lr}, total={self.total}, layer={layer}, "
            f"optimizer={self.optimizer!r}, min_weight={self.min_weight})"
        )
