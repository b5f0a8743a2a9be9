r"""Which tasks help each other? Inter-task affinity by look-ahead, and the task groups it suggests (TAG).

Fifty, Amid, Zhao, Yu, Anil & Finn (2021), "Efficiently Identifying Task Groupings for Multi-Task Learning",
NeurIPS. While all tasks train together, take a hypothetical SGD step of the *shared* parameters on one task's
loss alone and see how every task's loss on the same batch changes:

.. math::

    Z_{i \to j} = 1 - \frac{L_j(X, \theta_s - \eta \nabla_{\theta_s} L_i(X, \theta_s, \theta_i), \theta_j)}
                           {L_j(X, \theta_s, \theta_j)}.

:math:`Z_{i \to j} > 0`: a step for task :math:`i` lowers task :math:`j`'s loss (:math:`i` helps :math:`j`);
:math:`< 0`: it raises it. Averaged over training, the matrix says which tasks belong in one network.
Everywhere in this module the **row is the task that steps** (the source, :math:`i`) and the **column is the
task affected** (the target, :math:`j`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call

from mtlcourse.data import TaskData
from mtlcourse.tasks import Task

MAX_GROUPING_TASKS = 10


def _check_tasks(model: nn.Module, tasks: Sequence[Task], targets: Mapping[str, torch.Tensor]) -> None:
    names = [t.name for t in tasks]
    if not names:
        raise ValueError("affinity needs at least one task")
    if names != list(model.task_names):
        raise ValueError(f"tasks {names} do not match the model's heads {model.task_names} (same order)")
    if missing := set(names) - set(targets):
        raise ValueError(f"no target for task(s) {sorted(missing)} (targets name {list(targets)})")


def _losses(outputs: Mapping[str, torch.Tensor], tasks: Sequence[Task], targets) -> torch.Tensor:
    return torch.stack([task.loss(outputs[task.name], targets[task.name]) for task in tasks])


def _shared_names(model: nn.Module) -> list[str]:
    """Names (as ``named_parameters`` spells them) of the shared parameters, in their order."""
    name_of = {id(p): name for name, p in model.named_parameters()}
    shared = model.shared_parameters()
    if not shared:
        raise ValueError("the model has no shared parameters: there is no look-ahead step to take")
    if missing := [i for i, p in enumerate(shared) if id(p) not in name_of]:
        raise ValueError(f"shared parameters {missing} are not among the model's named parameters")
    return [name_of[id(p)] for p in shared]


def _affinity_from_losses(
    model: nn.Module, tasks: Sequence[Task], x: torch.Tensor, targets, losses: torch.Tensor, lr: float
) -> torch.Tensor:
    """:math:`Z` from the losses of a forward pass whose graph is still alive (it is retained)."""
    before = losses.detach().double()
    if not (torch.isfinite(before).all() and (before > 0).all()):
        raise ValueError(
            f"affinity divides by each task's loss: they must be positive and finite, got {before}"
        )
    names = _shared_names(model)
    shared = model.shared_parameters()
    m = len(tasks)
    z = torch.empty(m, m, dtype=torch.float64)
    for i in range(m):
        grads = torch.autograd.grad(losses[i], shared, retain_graph=True, allow_unused=True)
        stepped = {
            name: p.detach() if g is None else p.detach() - lr * g
            for name, p, g in zip(names, shared, grads, strict=True)
        }
        with torch.no_grad():
            after = _losses(functional_call(model, stepped, (x,)), tasks, targets).double()
        z[i] = 1.0 - after.cpu() / before.cpu()
    return z


def lookahead_affinity(
    model: nn.Module, tasks: Sequence[Task], x: torch.Tensor, targets: Mapping[str, torch.Tensor], lr: float
) -> torch.Tensor:
    r"""Inter-task affinity on one batch (Fifty et al. 2021, eq. 1): ``Z[i, j]``, shape ``(m, m)``, float64.

    .. math::

        Z[i, j] = 1 - \frac{L_j(x, \theta_s - \eta \nabla_{\theta_s} L_i, \theta_j)}
                           {L_j(x, \theta_s, \theta_j)}

    **Row** :math:`i` is the task that steps, **column** :math:`j` the task whose loss is measured. Only the
    shared parameters :math:`\theta_s` (``model.shared_parameters()``) move, by one plain SGD step of size
    :math:`\eta` on :math:`L_i` alone; every head keeps its parameters. The step is hypothetical: the shifted
    parameters go through :func:`torch.func.functional_call`, and the model's parameters, their ``.grad`` and
    the model's train/eval mode are left as they were. For a small step,
    :math:`Z[i, j] \approx \eta \langle g_i, g_j \rangle / L_j` with :math:`g = \nabla_{\theta_s} L`, so the
    diagonal is positive and :math:`Z` measures gradient alignment weighted by the target's loss.

    Parameters
    ----------
    model
        A multi-task model with ``task_names``, ``shared_parameters()`` and ``forward(x) -> {task: output}``.
    tasks
        One :class:`~mtlcourse.tasks.Task` per head, in the model's order.
    x, targets
        The batch: inputs and task name -> target.
    lr
        The look-ahead learning rate :math:`\eta` (positive). The official Taskonomy code steps with the
        training optimiser's rate and weight decay and divides :math:`Z` by the rate; here the step is plain
        SGD, as in the paper's definition, and :math:`Z` is the relative change itself.

    Returns
    -------
    torch.Tensor
        ``Z[i, j]``: relative decrease of task ``j``'s loss after a step on task ``i``'s loss.
    """
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"the look-ahead learning rate must be positive and finite, got {lr}")
    _check_tasks(model, tasks, targets)
    losses = _losses(model(x), tasks, targets)
    return _affinity_from_losses(model, tasks, x, targets, losses, lr)


@dataclass(frozen=True)
class TaskAffinity:
    """What :func:`train_with_affinity` measured.

    Parameters
    ----------
    mean
        TAG's averaged affinity, ``m x m``: index = the task that steps (source), columns = the task affected
        (target); the mean of :math:`Z` over every recorded step.
    per_epoch
        Long table ``epoch, source, target, affinity``: the mean over each epoch's recorded steps (for a plot
        of affinity over training). Epochs without a recorded step are absent.
    history
        One row per epoch: ``epoch`` and ``train_loss_<task>`` (mean over the epoch's rows).
    """

    mean: pd.DataFrame
    per_epoch: pd.DataFrame
    history: pd.DataFrame


def train_with_affinity(
    model: nn.Module,
    tasks: Sequence[Task],
    train: TaskData,
    *,
    epochs: int,
    lr: float,
    batch_size: int | None = None,
    lookahead_lr: float | None = None,
    every: int = 1,
    seed: int = 0,
) -> TaskAffinity:
    """Train all tasks together with equal weights and record their affinity :math:`Z` along the way (TAG).

    Adam on the mean of the task losses, mini-batches shuffled by a ``torch.Generator`` seeded with
    ``seed`` (as :func:`mtlcourse.training.fit` does, so the training itself matches ``fit`` with equal
    weights). Before every ``every``-th step (counting from the first, over the whole run), compute
    :func:`lookahead_affinity` on that step's batch; Fifty et al. (2021) record every 10th step on their
    large benchmarks. No validation and no early stopping.

    Parameters
    ----------
    model, tasks
        As for :func:`lookahead_affinity`; the model is trained in place.
    train
        Training data with a target for every task.
    epochs, lr, batch_size
        Passes over ``train``, Adam's learning rate, mini-batch size (``None``: full batch).
    lookahead_lr
        Step size of the hypothetical look-ahead step; default ``lr``.
    every
        Record the affinity before steps 0, ``every``, ``2 * every``, …
    seed
        Seed of the mini-batch order.

    Returns
    -------
    TaskAffinity
        The averaged matrix (rows: stepping task, columns: affected task), its per-epoch means and the
        training losses.
    """
    _check_tasks(model, tasks, train.targets)
    lookahead_lr = lr if lookahead_lr is None else lookahead_lr
    for name, value in (("lr", lr), ("lookahead_lr", lookahead_lr)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive and finite, got {value}")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")

    names = [t.name for t in tasks]
    m = len(tasks)
    device = next(model.parameters()).device
    train = train.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(train)
    batch = n if batch_size is None else batch_size
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.train()

    total, count, step = torch.zeros(m, m, dtype=torch.float64), 0, 0
    history: list[dict] = []
    per_epoch: list[dict] = []
    for epoch in range(1, epochs + 1):
        order = torch.arange(n) if batch >= n else torch.randperm(n, generator=gen)
        sum_losses = torch.zeros(m, dtype=torch.float64)
        epoch_z, epoch_count = torch.zeros(m, m, dtype=torch.float64), 0
        for start in range(0, n, batch):
            idx = order[start : start + batch].to(device)
            x, targets = train.x[idx], {k: v[idx] for k, v in train.targets.items()}
            losses = _losses(model(x), tasks, targets)
            if not torch.isfinite(losses).all():
                raise FloatingPointError(f"a task loss is not finite at epoch {epoch}: {losses.tolist()}")
            if step % every == 0:
                z = _affinity_from_losses(model, tasks, x, targets, losses, lookahead_lr)
                epoch_z += z
                epoch_count += 1
            opt.zero_grad()
            losses.mean().backward()
            opt.step()
            sum_losses += losses.detach().double().cpu() * len(idx)
            step += 1
        history.append(
            {"epoch": epoch}
            | {f"train_loss_{k}": v.item() for k, v in zip(names, sum_losses / n, strict=True)}
        )
        if epoch_count:
            total += epoch_z
            count += epoch_count
            z_epoch = (epoch_z / epoch_count).tolist()
            per_epoch += [
                {"epoch": epoch, "source": si, "target": tj, "affinity": z_epoch[i][j]}
                for i, si in enumerate(names)
                for j, tj in enumerate(names)
            ]
    model.train(was_training)

    mean = pd.DataFrame(
        (total / count).numpy(), index=pd.Index(names, name="source"), columns=pd.Index(names, name="target")
    )
    return TaskAffinity(mean=mean, per_epoch=pd.DataFrame(per_epoch), history=pd.DataFrame(history))


def _partitions(m: int, k: int) -> Iterator[list[int]]:
    """Restricted growth strings: ``labels[t]`` = group of task ``t``, groups numbered by first member."""
    labels = [0] * m

    def grow(t: int, used: int) -> Iterator[list[int]]:
        if m - t < k - used:  # too few tasks left to open the missing groups
            return
        if t == m:
            yield labels.copy()
            return
        for g in range(min(used + 1, k)):
            labels[t] = g
            yield from grow(t + 1, max(used, g + 1))

    if m >= 1:
        labels[0] = 0
        yield from grow(1, 1)


def _check_affinity(affinity: pd.DataFrame, n_groups: int) -> np.ndarray:
    if not isinstance(affinity, pd.DataFrame):
        raise ValueError(
            f"affinity must be a pandas DataFrame (rows: stepping task, columns: affected task), "
            f"got {type(affinity).__name__}"
        )
    m = len(affinity.index)
    if affinity.shape != (m, m) or m == 0:
        raise ValueError(f"affinity must be a non-empty square matrix, got shape {affinity.shape}")
    if list(affinity.index) != list(affinity.columns):
        raise ValueError(
            f"affinity rows {list(affinity.index)} and columns {list(affinity.columns)} must name "
            "the same tasks in the same order"
        )
    if not affinity.index.is_unique:
        raise ValueError(f"task names must be unique, got {list(affinity.index)}")
    if m > MAX_GROUPING_TASKS:
        raise ValueError(f"exhaustive grouping is limited to {MAX_GROUPING_TASKS} tasks, got {m}")
    if isinstance(n_groups, bool) or not isinstance(n_groups, int | np.integer) or not 1 <= n_groups <= m:
        raise ValueError(
            f"n_groups must be an integer between 1 and the number of tasks ({m}), got {n_groups!r}"
        )
    z = affinity.to_numpy(dtype=np.float64)
    if not np.isfinite(z).all():
        raise ValueError("affinity contains NaN or infinite values")
    return z


def grouping_scores(affinity: pd.DataFrame, n_groups: int) -> pd.DataFrame:
    r"""Every partition of the tasks into exactly ``n_groups`` non-empty groups, scored, best first.

    Task :math:`j` in group :math:`G` scores the mean affinity *onto* it from the other members,
    :math:`\frac{1}{|G| - 1} \sum_{i \in G, i \ne j} Z[i, j]` (column :math:`j`: the affected task); a task
    alone in its group scores 0. A partition scores the sum over tasks. There are :math:`S(m, k)` partitions
    (Stirling number of the second kind), enumerated exhaustively, hence at most 10 tasks.

    Since a group's members all share one denominator, the partition's score is
    :math:`\sum_G \frac{1}{|G| - 1} \sum_{i \ne j \in G} Z[i, j]`: it is the same for :math:`Z` and
    :math:`Z^\top`. Which task helps which matters for the per-task scores, not for the choice of a partition.

    This is TAG's score (Fifty et al. 2021, network selection, and its official code) on a narrower search
    space. TAG chooses :math:`k` groups among all :math:`2^m - 1` subsets, which may overlap (a task may be
    trained in several networks); each task is then served by the group whose affinity onto it is highest,
    and the objective is the mean over tasks of those best scores. Here the
    groups are a *partition* (each task trained in exactly one network), so each task's score is the one of
    its own group; the sum and TAG's mean give the same ranking. The official code also gives a singleton
    group a large negative score (it never chooses one unless forced); here a task alone scores 0, neither
    helped nor hurt.

    Parameters
    ----------
    affinity
        Square DataFrame, index = stepping task, columns = affected task, same labels in the same order
        (e.g. ``TaskAffinity.mean``). The diagonal is not used.
    n_groups
        Number of groups :math:`k`, ``1 <= k <= m``.

    Returns
    -------
    pandas.DataFrame
        Columns ``groups`` (a tuple of groups, each a tuple of task names; names within a group in the
        order of ``affinity``'s index, groups ordered by their first member) and ``score``; sorted by score,
        best first (ties keep enumeration order).
    """
    z = _check_affinity(affinity, n_groups)
    names = list(affinity.index)
    labels = np.array(list(_partitions(len(names), n_groups)), dtype=np.int64)  # (P, m)
    together = labels[:, :, None] == labels[:, None, :]  # (P, i, j)
    together &= ~np.eye(len(names), dtype=bool)
    onto = (together * z).sum(axis=1)  # (P, j): affinity onto j from its group
    partners = together.sum(axis=1)
    per_task = np.divide(onto, partners, out=np.zeros_like(onto), where=partners > 0)
    groups = [
        tuple(tuple(name for name, g in zip(names, row, strict=True) if g == k) for k in range(n_groups))
        for row in labels
    ]
    table = pd.DataFrame({"groups": groups, "score": per_task.sum(axis=1)})
    return table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def best_grouping(affinity: pd.DataFrame, n_groups: int) -> tuple[tuple[str, ...], ...]:
    """The highest-scoring partition of :func:`grouping_scores` (first in enumeration order among ties)."""
    return grouping_scores(affinity, n_groups)["groups"].iloc[0]
