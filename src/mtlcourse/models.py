"""The multi-task network protocol, and hard parameter sharing: one trunk for all tasks, one head per task.

Other architectures (soft sharing, cross-stitch units, MMoE) live in :mod:`mtlcourse.sharing`; every one
of them is a :class:`MultiTaskNetwork`, so ``fit`` and every strategy accept it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

import torch
from torch import nn

# What the shared part of a network hands to the task-specific parts: one tensor or a tuple of them.
Features = torch.Tensor | tuple[torch.Tensor, ...]


class MultiTaskNetwork(nn.Module):
    """Base class of every multi-task architecture: named task outputs and a split of the parameters.

    A subclass implements :attr:`task_names`, :meth:`forward`, :meth:`shared_parameters` and
    :meth:`task_parameters`, and may override :meth:`penalty`.

    The split is what Jacobian descent needs: :func:`mtlcourse.autojac.mtl_backward` aggregates the task
    gradients on the *shared* parameters and gives each task's parameters the gradient of its own loss. It
    is exact when the features returned by ``forward(x, return_features=True)`` are the only way the shared
    parameters reach the losses, and task ``t``'s parameters reach only loss ``t``.
    """

    @property
    def task_names(self) -> list[str]:
        """Task names, in the order of the outputs."""
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], Features]:
        """Task name -> output (width-one outputs squeezed to shape ``(N,)``).

        With ``return_features`` also the *features*: the output(s) of the shared part, from which every
        task-specific part computes its output (a tensor, or a tuple of tensors).
        """
        raise NotImplementedError

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters that more than one task's loss depends on (may be empty)."""
        raise NotImplementedError

    def task_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Task name -> the parameters only that task's loss depends on."""
        raise NotImplementedError

    def penalty(self) -> torch.Tensor | None:
        """A regulariser on the parameters that ``fit`` adds to every step (weight 1); ``None``: none."""
        return None


def squeeze_output(out: torch.Tensor) -> torch.Tensor:
    """Drop a last dimension of size one: a regression or binary head returns shape ``(N,)``."""
    return out.squeeze(-1) if out.shape[-1] == 1 else out


class MultiTaskModel(MultiTaskNetwork):
    """A shared trunk followed by named task heads.

    Parameters
    ----------
    trunk
        The shared network; its output (the *shared features*) is the input of every head.
    heads
        Task name -> head. A head with a single output unit has that unit squeezed away, so a
        regression or binary head returns shape ``(N,)``.

    Notes
    -----
    ``forward(x, return_features=True)`` also returns the shared features: Jacobian descent
    (:func:`mtlcourse.autojac.mtl_backward`) backpropagates through them.
    """

    def __init__(self, trunk: nn.Module, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a multi-task model needs at least one head")
        self.trunk = trunk
        self.heads = nn.ModuleDict(heads)

    @property
    def task_names(self) -> list[str]:
        """Task names, in the order the heads were given."""
        return list(self.heads)

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Each head's output by task name; with ``return_features``, also the trunk's output.

        Outputs of width one are squeezed to shape ``(batch,)``.
        """
        features = self.trunk(x)
        outputs = {}
        for name, head in self.heads.items():
            outputs[name] = squeeze_output(head(features))
        return (outputs, features) if return_features else outputs

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of the trunk."""
        return list(self.trunk.parameters())

    def task_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Task name -> parameters of its head."""
        return {name: list(head.parameters()) for name, head in self.heads.items()}


def mlp(sizes: Sequence[int], final_activation: bool = True) -> nn.Sequential:
    """Fully connected layers ``sizes[0] -> sizes[1] -> …`` with ReLU between them.

    With ``final_activation`` the last layer is followed by a ReLU too (as a trunk is).
    """
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least an input and an output size, got {list(sizes)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if final_activation or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def hard_sharing_mlp(
    in_features: int, hidden: Sequence[int], head_outputs: Mapping[str, int]
) -> MultiTaskModel:
    """An MLP trunk ``in_features -> hidden[0] -> … -> hidden[-1]`` (ReLU) and one linear head per task.

    Parameters
    ----------
    in_features
        Size of an input row.
    hidden
        Widths of the trunk's layers; the last one is the size of the shared features.
    head_outputs
        Task name -> number of outputs of its head (1 for regression and binary tasks).
    """
    trunk = mlp([in_features, *hidden])
    heads = {name: nn.Linear(hidden[-1], out) for name, out in head_outputs.items()}
    return MultiTaskModel(trunk, heads)


def r_post_model() -> MultiTaskModel:
    """The R post's network: 5 -> 10 -> 10 (ReLU) shared, a 1-unit regression and classification head.

    60 + 110 + 11 + 11 = 192 parameters.
    """
    return hard_sharing_mlp(5, [10, 10], {"regression": 1, "classification": 1})


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
