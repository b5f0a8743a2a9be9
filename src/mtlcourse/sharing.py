r"""What to share: architectures beyond one trunk for all tasks.

- :class:`SoftSharing`: a column per task, tied only by a penalty on the distance between the columns;
- :class:`CrossStitch`: a column per task, with learned linear mixes of their activations after every layer;
- :class:`MMoE`: shared experts, mixed for each task by a gate of its own.

Each is a :class:`~mtlcourse.models.MultiTaskNetwork` built from the same parts as
:func:`~mtlcourse.models.hard_sharing_mlp` (ReLU MLPs ``in_features -> hidden[0] -> … -> hidden[-1]`` from
:func:`~mtlcourse.models.mlp`, a linear head per task), so ``fit`` and every strategy accept it, and each
says which parameters are *shared* (aggregated by Jacobian descent) and which belong to one task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import pairwise

import torch
from torch import nn

from mtlcourse.models import MultiTaskNetwork, mlp, squeeze_output


def _check_sizes(in_features: int, hidden: Sequence[int], head_outputs: Mapping[str, int]) -> None:
    if not head_outputs:
        raise ValueError("a multi-task model needs at least one head")
    if in_features < 1 or not hidden or min(hidden) < 1:
        raise ValueError(
            f"in_features and every hidden width must be positive, with at least one hidden layer; got "
            f"in_features={in_features}, hidden={list(hidden)}"
        )
    if bad := {name: out for name, out in head_outputs.items() if out < 1}:
        raise ValueError(f"every head needs at least one output, got {bad}")


def _trainable(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    return [p for p in params if p.requires_grad]


class _WithHeads(MultiTaskNetwork):
    """Task names and linear heads on a representation of width ``hidden[-1]``, common to all three."""

    def __init__(self, hidden: Sequence[int], head_outputs: Mapping[str, int]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Linear(hidden[-1], out) for name, out in head_outputs.items()})

    @property
    def task_names(self) -> list[str]:
        """Task names, in the order the heads were given."""
        return list(self.heads)

    def _outputs(self, representations: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            name: squeeze_output(head(h))
            for (name, head), h in zip(self.heads.items(), representations, strict=True)
        }


class SoftSharing(_WithHeads):
    r"""Soft parameter sharing: one network per task, pulled towards each other by an L2 penalty.

    Task :math:`t` has its own column (an MLP ``in_features -> hidden…``, ReLU) and head; nothing is shared
    in the graph. The columns are tied by

    .. math::
        \Omega(\theta) = \lambda \sum_{\ell} \sum_{t=1}^m \bigl\lVert \theta_t^{\ell} - \bar\theta^{\ell}
        \bigr\rVert_2^2, \qquad \bar\theta^{\ell} = \frac1m \sum_{s=1}^m \theta_s^{\ell},

    summed over every parameter tensor :math:`\ell` of a column (weights and biases). Duong, Cohn, Bird &
    Cook (2015, ACL, "Low resource dependency parsing: Cross-lingual parameter sharing in a neural network
    parser") tie two parsers by :math:`\lVert \theta_1 - \theta_2 \rVert_2^2`; the distance to the mean is
    its form for any :math:`m` (for :math:`m = 2` it is :math:`\tfrac12 \lVert \theta_1 - \theta_2
    \rVert_2^2`); it is computed as the equal sum :math:`\frac{1}{2m} \sum_{t,s} \lVert \theta_t^\ell -
    \theta_s^\ell \rVert_2^2`, which is exactly zero when the columns are equal.
    :func:`mtlcourse.training.fit` adds :math:`\Omega` to every step. With
    :math:`\lambda = 0` the model is :math:`m` independent networks.

    Parameters
    ----------
    in_features, hidden, head_outputs
        As :func:`mtlcourse.models.hard_sharing_mlp`.
    strength
        :math:`\lambda \ge 0`.

    Notes
    -----
    ``shared_parameters()`` is empty: Jacobian descent has nothing to aggregate and gives each column the
    gradient of its own task's loss. Task :math:`t`'s parameters are its column and its head; the features
    are the tuple of the columns' outputs.
    """

    def __init__(
        self, in_features: int, hidden: Sequence[int], head_outputs: Mapping[str, int], strength: float
    ) -> None:
        _check_sizes(in_features, hidden, head_outputs)
        if not strength >= 0:
            raise ValueError(f"strength must be non-negative, got {strength}")
        super().__init__(hidden, head_outputs)
        self.strength = float(strength)
        self.columns = nn.ModuleDict({name: mlp([in_features, *hidden]) for name in head_outputs})

    def forward(self, x: torch.Tensor, return_features: bool = False):
        features = tuple(column(x) for column in self.columns.values())
        outputs = self._outputs(features)
        return (outputs, features) if return_features else outputs

    def shared_parameters(self) -> list[nn.Parameter]:
        """None: the columns share nothing in the graph."""
        return []

    def task_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Task name -> its column and its head."""
        return {
            name: _trainable([*self.columns[name].parameters(), *self.heads[name].parameters()])
            for name in self.task_names
        }

    def penalty(self) -> torch.Tensor:
        r""":math:`\lambda \sum_\ell \sum_t \lVert \theta_t^\ell - \bar\theta^\ell \rVert_2^2`, a scalar."""
        per_column = [list(column.parameters()) for column in self.columns.values()]
        m = len(per_column)
        total = per_column[0][0].new_zeros(())
        for layer in zip(*per_column, strict=True):
            stacked = torch.stack(layer).flatten(1)  # (m, size of the layer)
            # sum_t |theta_t - mean|^2 = sum_{t,s} |theta_t - theta_s|^2 / 2m, exactly 0 for equal columns
            total = total + (stacked[:, None] - stacked[None]).pow(2).sum() / (2 * m)
        return self.strength * total

    def extra_repr(self) -> str:
        return f"strength={self.strength}"


class CrossStitch(_WithHeads):
    r"""Cross-stitch networks (Misra, Shrivastava, Gupta & Hebert 2016, "Cross-stitch networks for
    multi-task learning", CVPR).

    One column per task; after every hidden layer (after its ReLU) a *cross-stitch unit* replaces each
    task's activation by a learned mix of all of them:

    .. math::
        h_t^{\ell} \leftarrow \sum_{s=1}^m \alpha^{\ell}_{ts}\, h_s^{\ell},

    with :math:`\alpha^{\ell}` an :math:`m \times m` learnable matrix, initialised to ``self_weight`` on
    the diagonal and :math:`(1 - \text{self\_weight})/(m - 1)` off it (rows sum to 1; the paper's
    :math:`(\alpha_S, \alpha_D) = (0.9, 0.1)` for two tasks). With one task :math:`\alpha = [1]`. Task
    :math:`t`'s head reads :math:`h_t` after the last unit.

    Parameters
    ----------
    in_features, hidden, head_outputs
        As :func:`mtlcourse.models.hard_sharing_mlp`.
    self_weight
        Initial diagonal of every :math:`\alpha^\ell`, in :math:`[0, 1]`.

    Notes
    -----
    After the first unit every loss depends on every column, so the columns and all :math:`\alpha` are
    shared; each task owns only its head. The features are the tuple of the per-task representations after
    the last unit. With ``self_weight=1`` and the :math:`\alpha` frozen (``requires_grad_(False)``) the
    model is :math:`m` independent networks; frozen parameters are left out of both groups.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        head_outputs: Mapping[str, int],
        self_weight: float = 0.9,
    ) -> None:
        _check_sizes(in_features, hidden, head_outputs)
        if not 0.0 <= self_weight <= 1.0:
            raise ValueError(f"self_weight must lie in [0, 1], got {self_weight}")
        super().__init__(hidden, head_outputs)
        sizes = [in_features, *hidden]
        self.columns = nn.ModuleDict(
            {name: nn.ModuleList(mlp([a, b]) for a, b in pairwise(sizes)) for name in head_outputs}
        )
        m = len(head_outputs)
        off = (1.0 - self_weight) / (m - 1) if m > 1 else 0.0
        init = torch.full((m, m), off).fill_diagonal_(self_weight if m > 1 else 1.0)
        self.alphas = nn.ParameterList(nn.Parameter(init.clone()) for _ in hidden)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        h = torch.stack([x] * len(self.columns))  # (m, N, d)
        for depth, alpha in enumerate(self.alphas):
            columns = (column[depth] for column in self.columns.values())
            h = torch.stack([layer(h_t) for layer, h_t in zip(columns, h, strict=True)])
            h = torch.einsum("ts,snd->tnd", alpha, h)
        features = tuple(h.unbind(0))
        outputs = self._outputs(features)
        return (outputs, features) if return_features else outputs

    def shared_parameters(self) -> list[nn.Parameter]:
        """All columns and all cross-stitch matrices (the trainable ones)."""
        return _trainable([*self.columns.parameters(), *self.alphas])

    def task_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Task name -> its head."""
        return {name: _trainable(head.parameters()) for name, head in self.heads.items()}


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=-1)


class MMoE(_WithHeads):
    r"""Multi-gate mixture of experts (Ma, Zhao, Yi, Chen, Hong & Chi 2018, "Modeling task relationships
    in multi-task learning with multi-gate mixture-of-experts", KDD).

    :math:`E` shared experts :math:`f_e` (each an MLP ``in_features -> hidden…``, ReLU); task :math:`t`
    has a gate :math:`g_t(x) = \mathrm{gate}(W_t x + b_t) \in \mathbb{R}^E` and a linear head on

    .. math::
        h_t(x) = \sum_{e=1}^E g_{t,e}(x)\, f_e(x).

    Parameters
    ----------
    in_features, hidden, head_outputs
        As :func:`mtlcourse.models.hard_sharing_mlp`.
    n_experts
        :math:`E \ge 1`. With one expert (and the softmax gate) the model computes what
        :func:`~mtlcourse.models.hard_sharing_mlp` computes with the same weights.
    gate
        Maps the gate logits, shape ``(N, E)``, to the mixing weights; default: softmax over the last
        dimension. E.g. a top-k gate, ``lambda z: top_k_gate(z, 2)``.

    Notes
    -----
    Shared: the experts. Task :math:`t`: its gate and its head. The features are the stacked expert
    outputs, shape ``(N, E, hidden[-1])``, which every task mixes with its own gate.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        head_outputs: Mapping[str, int],
        n_experts: int,
        gate: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        _check_sizes(in_features, hidden, head_outputs)
        if n_experts < 1:
            raise ValueError(f"n_experts must be at least 1, got {n_experts}")
        super().__init__(hidden, head_outputs)
        self.experts = nn.ModuleList(mlp([in_features, *hidden]) for _ in range(n_experts))
        self.gates = nn.ModuleDict({name: nn.Linear(in_features, n_experts) for name in head_outputs})
        self.gate = gate if gate is not None else _softmax

    def _gate(self, name: str, x: torch.Tensor) -> torch.Tensor:
        weights = self.gate(self.gates[name](x))
        expected = (*x.shape[:-1], len(self.experts))
        if weights.shape != expected:
            raise ValueError(f"the gate returned shape {tuple(weights.shape)}, expected {expected}")
        return weights

    def forward(self, x: torch.Tensor, return_features: bool = False):
        features = torch.stack([expert(x) for expert in self.experts], dim=-2)  # (N, E, d)
        mixed = [torch.einsum("ne,ned->nd", self._gate(name, x), features) for name in self.task_names]
        outputs = self._outputs(mixed)
        return (outputs, features) if return_features else outputs

    @torch.no_grad()
    def gate_weights(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Task name -> its mixing weights on ``x``, shape ``(N, n_experts)`` (no gradient)."""
        return {name: self._gate(name, x) for name in self.task_names}

    def shared_parameters(self) -> list[nn.Parameter]:
        """The experts."""
        return _trainable(self.experts.parameters())

    def task_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Task name -> its gate and its head."""
        return {
            name: _trainable([*self.gates[name].parameters(), *self.heads[name].parameters()])
            for name in self.task_names
        }

    def extra_repr(self) -> str:
        return f"n_experts={len(self.experts)}"
