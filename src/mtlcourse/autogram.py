r"""The Gramian of instance-wise losses through linear layers, without ever forming the Jacobian.

Every Gramian-based aggregator (its ``weights_from_gramian``) needs only :math:`G = J J^\top`, and the
step is then one ordinary backward pass of :math:`\sum_n w_n \ell_n`.
For *instance-wise* losses — one loss :math:`\ell_n` per example, as in instance-wise risk minimisation
(Quinton & Rey 2024, "Jacobian descent for multi-objective optimization", Sec. 6) — through
``nn.Linear`` layers, :math:`G` has a closed form per layer. Layer :math:`l` maps inputs :math:`a_n` to
outputs :math:`z_n = W a_n + b`; the gradient of :math:`\ell_n` with respect to :math:`W` is the outer
product :math:`\delta_n a_n^\top` with :math:`\delta_n = \partial \ell_n / \partial z_n`, and with respect to
:math:`b` it is :math:`\delta_n`. So

.. math::
    G_{nn'} = \sum_l (\delta^l_n \cdot \delta^l_{n'}) \, (a^l_n \cdot a^l_{n'} + 1),
    \qquad\text{i.e.}\qquad G = \sum_l (\Delta_l \Delta_l^\top) \odot (A_l A_l^\top + \mathbf 1),

(the :math:`+1` only for layers with a bias), where :math:`A_l` stacks the inputs and :math:`\Delta_l` the
back-propagated signals of layer :math:`l`, one row per example. Because :math:`\ell_n` depends on example
:math:`n` only, :math:`\Delta_l` is the gradient of :math:`\sum_n \ell_n` with respect to the layer's outputs:
one ordinary backward pass gives every :math:`\Delta_l`. The cost is :math:`O(N^2)` per layer in the batch
size :math:`N` instead of the :math:`N \times` (number of parameters) of :math:`J` — the "ghost norm" trick
of per-example gradient norms (Goodfellow 2015, "Efficient per-example gradient computations"),
extended to inner products; ``torchjd.autogram.Engine(..., batch_dim=0)`` computes the same matrix.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from mtlcourse import autojac

__all__ = ["LinearGramian", "gramian_backward"]


class LinearGramian:
    r"""Records the ``nn.Linear`` layers of ``model`` during a forward pass and returns the Gramian of
    instance-wise losses with respect to all of the model's trainable parameters.

    Use it as a context manager around the forward pass::

        with LinearGramian(model) as engine:
            losses = F.cross_entropy(model(x), y, reduction="none")  # shape (N,): one loss per example
        G = engine.gramian(losses)                                   # (N, N), float64

    Parameters
    ----------
    model
        A network whose trainable parameters all belong to ``nn.Linear`` layers, each called once per
        forward pass on inputs of shape ``(N, in_features)`` (activations, dropout-free reshapes and other
        parameter-free operations in between are fine). Anything else raises ``ValueError``: use
        :func:`mtlcourse.autojac.jacobian` and ``J @ J.T`` instead.

    Notes
    -----
    The losses must be *instance-wise*: ``losses[n]`` depends on example ``n`` of the batch only. This is
    what makes one backward pass enough; it is not checked (a batch-norm layer, for one, breaks it).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers = [module for module in model.modules() if isinstance(module, nn.Linear)]
        covered = {id(p) for layer in self.layers for p in layer.parameters()}
        foreign = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
        if foreign:
            raise ValueError(
                f"parameters {foreign} are not in an nn.Linear layer: LinearGramian cannot compute their "
                "part of the Gramian; use mtlcourse.autojac.jacobian(losses, params) and J @ J.T"
            )
        if not any(p.requires_grad for layer in self.layers for p in layer.parameters()):
            raise ValueError("the model has no trainable nn.Linear parameter")
        self._records: dict[int, tuple[Tensor, Tensor]] = {}
        self._handles: list = []

    def __enter__(self) -> LinearGramian:
        self._records.clear()
        self._handles = [layer.register_forward_hook(self._record) for layer in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _record(self, layer: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if id(layer) in self._records:
            raise ValueError(
                f"{layer} was called twice in one forward pass: its parameters are shared between calls, "
                "which the per-layer formula does not cover"
            )
        (a,) = inputs
        if a.ndim != 2:
            raise ValueError(f"LinearGramian needs inputs of shape (N, features), got {tuple(a.shape)}")
        self._records[id(layer)] = (a.detach(), output)

    def gramian(self, losses: Tensor, *, retain_graph: bool = False) -> Tensor:
        r""":math:`G = J J^\top` of shape ``(N, N)`` in float64, for the losses of the recorded forward pass.

        Parameters
        ----------
        losses
            Shape ``(N,)``: the loss of each example, from the forward pass recorded in the ``with`` block.
        retain_graph
            Keep the autograd graph (to backpropagate the weighted losses afterwards, as
            :func:`gramian_backward` does).
        """
        if losses.ndim != 1:
            raise ValueError(f"losses must have shape (N,), one per example, got {tuple(losses.shape)}")
        active = [layer for layer in self.layers if any(p.requires_grad for p in layer.parameters())]
        missing = [layer for layer in active if id(layer) not in self._records]
        if missing:
            raise ValueError(
                f"{len(missing)} nn.Linear layer(s) were not called in the recorded forward pass"
            )
        outputs = [self._records[id(layer)][1] for layer in active]
        signals = torch.autograd.grad(losses.sum(), outputs, retain_graph=retain_graph, allow_unused=True)
        n = len(losses)
        G = torch.zeros(n, n, dtype=torch.float64, device=losses.device)
        for layer, delta in zip(active, signals, strict=True):
            if delta is None:  # the losses do not depend on this layer
                continue
            a = self._records[id(layer)][0]
            if len(a) != n:
                raise ValueError(f"{n} losses but a batch of {len(a)} rows reached {layer}")
            delta64 = delta.double()
            inner = torch.zeros(n, n, dtype=torch.float64, device=G.device)
            if layer.weight.requires_grad:
                inner += a.double() @ a.double().T
            if layer.bias is not None and layer.bias.requires_grad:
                inner += 1.0
            G += (delta64 @ delta64.T) * inner
        return G


def gramian_backward(
    model: nn.Module,
    losses_of: Callable[[], Tensor],
    weights_from_gramian: Callable[[Tensor], Tensor],
) -> Tensor:
    r"""One Jacobian-descent backward pass by the Gramian route: accumulate :math:`J^\top w` into ``.grad``.

    Runs ``losses_of()`` (the forward pass, returning ``(N,)`` instance-wise losses) under a
    :class:`LinearGramian`, computes :math:`G`, the weights :math:`w` = ``weights_from_gramian(G)`` (e.g.
    ``UPGrad().weights_from_gramian``), and backpropagates :math:`\sum_n w_n \ell_n`: the same ``.grad`` as
    :func:`mtlcourse.autojac.backward` with that aggregator, without forming :math:`J`. A model with a
    trainable parameter outside ``nn.Linear`` (a convolution, a norm layer's scale) takes the general
    route instead: :math:`G` from :math:`J` (:func:`mtlcourse.autojac.gramian`), the same weights and
    the same single backward pass of :math:`\sum_n w_n \ell_n`.

    Returns
    -------
    Tensor
        The weights :math:`w`, shape ``(N,)``, detached.
    """
    try:
        engine = LinearGramian(model)
    except ValueError:  # a trainable parameter outside nn.Linear: the general route, through J
        losses = losses_of()
        trainable = [p for p in model.parameters() if p.requires_grad]
        G = autojac.gramian(losses, trainable, retain_graph=True)
    else:
        with engine:
            losses = losses_of()
        G = engine.gramian(losses, retain_graph=True)
    weights = weights_from_gramian(G)
    weights = weights.to(dtype=losses.dtype, device=losses.device).detach()
    (weights @ losses).backward()
    return weights
