"""One training loop for every chapter: epochs, batches, validation, early stopping, history."""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import pandas as pd
import torch
from tqdm import tqdm

from mtlcourse.data import TaskData
from mtlcourse.models import Features, MultiTaskNetwork
from mtlcourse.strategy import Strategy
from mtlcourse.tasks import Task
from mtlcourse.weighting import equal_weights

OptimizerFactory = Callable[[list[dict]], torch.optim.Optimizer]
Selection = Literal["normalized", "weighted"]
SELECTIONS = ("normalized", "weighted")


def _check_tasks(model: MultiTaskNetwork, tasks: Sequence[Task], *datasets: TaskData | None) -> None:
    if not tasks:
        raise ValueError("fit needs at least one task")
    names = [t.name for t in tasks]
    if names != model.task_names:
        raise ValueError(
            f"tasks {names} do not match the model's heads {model.task_names} (same names, same order)"
        )
    for data in datasets:
        if data is not None and (unknown := set(names) - set(data.task_names)):
            raise ValueError(
                f"no target for task(s) {sorted(unknown)} in the data (it has {data.task_names})"
            )


def task_losses(
    model: MultiTaskNetwork, tasks: Sequence[Task], x: torch.Tensor, targets
) -> tuple[torch.Tensor, dict[str, torch.Tensor], Features]:
    """Forward pass: the per-task mean losses (shape ``(m,)``), the outputs and the shared features."""
    losses, outputs, features = _separate_task_losses(model, tasks, x, targets)
    return torch.stack(losses), outputs, features


def _separate_task_losses(
    model: MultiTaskNetwork, tasks: Sequence[Task], x: torch.Tensor, targets
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor], Features]:
    """:func:`task_losses` before the stacking: one scalar tensor per task."""
    outputs, features = model(x, return_features=True)
    return [task.loss(outputs[task.name], targets[task.name]) for task in tasks], outputs, features


@torch.no_grad()
def _losses_without_graph(
    model: MultiTaskNetwork, tasks: Sequence[Task], x: torch.Tensor, targets
) -> torch.Tensor:
    return task_losses(model, tasks, x, targets)[0]


@torch.no_grad()
def predict(model: MultiTaskNetwork, data: TaskData) -> dict[str, torch.Tensor]:
    """The model's outputs on ``data`` in evaluation mode, as CPU tensors."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs = model(data.x.to(device))
    model.train(was_training)
    return {name: out.cpu() for name, out in outputs.items()}


@torch.no_grad()
def _validate(model: MultiTaskNetwork, tasks: Sequence[Task], data: TaskData, weights: torch.Tensor) -> dict:
    model.eval()
    losses, outputs, _ = task_losses(model, tasks, data.x, data.targets)
    model.train()
    row = {f"val_loss_{t.name}": loss.item() for t, loss in zip(tasks, losses, strict=True)}
    row["val_total"] = (weights @ losses.double()).item()
    for task in tasks:
        acc = task.accuracy(outputs[task.name], data.targets[task.name])
        if acc is not None:
            row[f"val_acc_{task.name}"] = acc
        r2 = task.r2(outputs[task.name], data.targets[task.name])
        if r2 is not None:
            row[f"val_r2_{task.name}"] = r2
    return row


def _raise_if_not_finite(tasks: Sequence[Task], finite: list[torch.Tensor], epoch: int) -> None:
    """Raise for the first step of the epoch whose losses were not all finite (``finite``: one per step)."""
    for step in torch.stack(finite).tolist():
        if not all(step):
            bad = [t.name for t, ok in zip(tasks, step, strict=True) if not ok]
            raise FloatingPointError(f"the loss of task(s) {bad} is not finite at epoch {epoch}")


def _log_line(row: dict, tasks: Sequence[Task]) -> str:
    parts = [f"Epoch {row['epoch']:>3}", f"train loss {row['train_total']:.4f}"]
    if "val_total" in row:
        parts.append(f"val loss {row['val_total']:.4f}")
    parts += [f"val acc {t.name} {row[f'val_acc_{t.name}']:.3f}" for t in tasks if f"val_acc_{t.name}" in row]
    return " | ".join(parts)


NO_PROGRESS = "MTLCOURSE_NO_PROGRESS"


def _in_jupyter_kernel() -> bool:
    """Whether this process is a Jupyter kernel (notebook, JupyterLab, Colab): IPython's shell has a kernel.

    Importing ``ipykernel`` alone is not enough (nbval's pytest plugin imports it in pytest's process).
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def _progress_bar(progress: bool | None) -> type[tqdm] | None:
    """The tqdm class that draws :func:`fit`'s bar, or ``None`` for no bar (see ``fit``'s ``progress``).

    In a kernel, tqdm's widget bar if ``ipywidgets`` is installed (it draws with it), else the text bar.
    """
    if progress is None:
        if os.environ.get(NO_PROGRESS):
            return None
        progress = _in_jupyter_kernel() or sys.stderr.isatty()
    if not progress:
        return None
    if _in_jupyter_kernel():
        from tqdm import notebook

        if notebook.IProgress is not None:
            return notebook.tqdm
    return tqdm


def fit(
    model: MultiTaskNetwork,
    tasks: Sequence[Task],
    train: TaskData,
    val: TaskData | None = None,
    *,
    strategy: Strategy | None = None,
    epochs: int = 100,
    lr: float = 0.01,
    weight_decay: float = 0.0,
    optimizer: OptimizerFactory | None = None,
    batch_size: int | None = None,
    clip_grad_norm: float | None = None,
    patience: int | None = None,
    select: Selection | Sequence[str] = "normalized",
    log_epochs: Iterable[int] = (),
    progress: bool | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    r"""Train ``model`` on all ``tasks`` at once and return its history.

    Each step computes every task's mean loss on the batch and hands the vector of losses to
    ``strategy``, which fills ``.grad``; if the model has a penalty (``model.penalty()`` is not ``None``,
    e.g. :class:`~mtlcourse.sharing.SoftSharing`'s distance between columns), its gradient is added with
    weight 1, whatever the strategy; then the gradient is clipped (optional) and the optimiser steps.
    After each epoch the model is scored on ``val``. On a GPU, a step reads nothing back from it beyond
    what the strategy needs (a Gramian-based aggregator's :math:`m \times m` Gramian): the epoch's sums
    stay on the device until the epoch ends.

    Parameters
    ----------
    model
        Any :class:`~mtlcourse.models.MultiTaskNetwork`; its task names must be the names of ``tasks``,
        in the same order.
    tasks
        What each head is asked to do (its loss and accuracy).
    train, val
        Training data, and optional validation data scored after every epoch.
    strategy
        How the per-task losses become gradients; default: equal weights ``1/m`` (mean of the losses).
    epochs
        Number of passes over ``train``.
    lr, weight_decay
        Learning rate and L2 penalty of the default optimiser, ``torch.optim.Adam``. The penalty applies
        to the model's parameters only, not to a strategy's own parameters.
    optimizer
        Instead of Adam: a function from parameter groups to an optimiser, e.g.
        ``lambda groups: torch.optim.SGD(groups, lr=0.1)``.
    batch_size
        Mini-batch size; ``None`` trains on the full batch (one step per epoch).
    clip_grad_norm
        If given, clip the global gradient norm of the model's parameters to this value.
    patience
        Early stopping: stop once the selection score (see ``select``) has not improved for this many
        epochs, and restore the weights of the best epoch. Needs ``val``.
    select
        Which validation number picks the best epoch (``attrs["best_epoch"]``, early stopping).
        ``"normalized"`` (default): :math:`\sum_i L_i^{val} / L_i^{val}(0)`, each task's validation loss
        divided by its value before training — one fixed criterion whatever the strategy, so that
        methods are compared at epochs chosen the same way. ``"weighted"``: ``val_total``, the
        validation losses weighted by the strategy's *current* weights; it moves with those weights,
        so two strategies are then selected by different yardsticks. A sequence of task names: the
        normalised sum over those tasks only — for auxiliary tasks, which are trained for the sake of
        a main task and should not decide when training stops (Ruder 2017, "An overview of multi-task
        learning in deep neural networks", Sec. 9.2).
    log_epochs
        Epochs after which to print one summary line (rounded, so stored notebook outputs are stable).
    progress
        Show a tqdm progress bar: a widget in a Jupyter kernel (notebook, JupyterLab, Colab), text on a
        terminal. By default (``None``) a bar shows in a kernel or on a terminal, unless the environment
        variable ``MTLCOURSE_NO_PROGRESS`` is non-empty (``make execute`` and ``make notebooks`` set it,
        so that stored outputs and nbval runs stay free of bars). ``True`` or ``False`` overrides it.
    seed
        Seed of the mini-batch order.

    Returns
    -------
    pandas.DataFrame
        One row per epoch: ``train_loss_<task>``, ``train_total`` (the weighted sum that was
        optimised, without the penalty), ``weight_<task>`` (mean over the epoch's steps), for a model
        with a penalty ``train_penalty`` (its value before each step, averaged over the epoch like
        ``train_total``), and with ``val``:
        ``val_loss_<task>``, ``val_total``, ``val_acc_<task>`` for classification tasks and
        ``val_r2_<task>`` (coefficient of determination) for regression tasks, and ``val_score``
        (the normalised sum above, over the selected tasks when ``select`` names them).
        ``history.attrs["best_epoch"]`` is the epoch with the lowest selection score,
        ``history.attrs["select"]`` names it (with ``val``; a tuple when ``select`` names tasks).

    Raises
    ------
    FloatingPointError
        If a task's training loss is not finite, naming the task(s) of the first such step and the epoch:
        at the end of that epoch (its sum of losses, read then anyway, is not finite), before validation
        and the strategy's ``end_epoch``; or at once, if the strategy fails on that step (FAMO and
        GradNorm refuse a non-finite loss). The rest of the epoch is trained on, with non-finite values.
    """
    _check_tasks(model, tasks, train, val)
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if patience is not None and val is None:
        raise ValueError("early stopping (patience) needs validation data")
    names = [t.name for t in tasks]
    if isinstance(select, str):
        if select not in SELECTIONS:
            raise ValueError(f"select must be one of {SELECTIONS} or a list of task names, got {select!r}")
        scored = names
    else:
        scored = list(select)
        if not scored or len(set(scored)) != len(scored) or not set(scored) <= set(names):
            raise ValueError(f"select must name distinct tasks among {names}, got {select!r}")
        select = tuple(scored)
    strategy = strategy if strategy is not None else equal_weights(len(tasks))
    strategy.reset()
    device = next(model.parameters()).device
    strategy.to(device)  # before the optimiser is built on its parameters
    train = train.to(device)
    val = val.to(device) if val is not None else None
    groups = [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    if extra := strategy.parameters():
        groups.append({"params": extra, "weight_decay": 0.0})
    opt = optimizer(groups) if optimizer is not None else torch.optim.Adam(groups, lr=lr)

    n, m = len(train), len(tasks)
    batch = n if batch_size is None else batch_size
    gen = torch.Generator().manual_seed(seed)
    log_epochs = set(log_epochs)
    bar = _progress_bar(progress)
    rows: list[dict] = []
    best_score, best_state, since_best = float("inf"), None, 0
    score_column = "val_total" if select == "weighted" else "val_score"
    if val is not None:
        initial_val_losses = _validate(model, tasks, val, torch.zeros(m, dtype=torch.float64, device=device))
        initial = [initial_val_losses[f"val_loss_{t.name}"] for t in tasks]
        if not all(v > 0 and v < float("inf") for v in initial):
            raise ValueError(f"selection needs positive, finite validation losses to start, got {initial}")

    with torch.no_grad():
        has_penalty = model.penalty() is not None
    model.train()
    epoch_numbers = range(1, epochs + 1)
    for epoch in bar(epoch_numbers, desc="epochs", leave=False) if bar is not None else epoch_numbers:
        order = torch.arange(n, device=device) if batch >= n else torch.randperm(n, generator=gen).to(device)
        # The epoch's sums stay on the model's device and are read after the epoch, finiteness included (see
        # Raises): no step waits for a GPU.
        zeros = functools.partial(torch.zeros, dtype=torch.float64, device=device)
        sum_losses, sum_weights, sum_total, sum_penalty = zeros(m), zeros(m), zeros(()), zeros(())
        finite: list[torch.Tensor] = []  # per step, which losses were finite: read only if one was not
        steps = 0
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            x, targets = train.x[idx], {k: v[idx] for k, v in train.targets.items()}
            separate, _, features = _separate_task_losses(model, tasks, x, targets)
            losses = torch.stack(separate)
            finite.append(torch.isfinite(losses.detach()))
            opt.zero_grad()
            given = separate if strategy.separate_losses else losses
            try:
                weights = strategy.backward(given, model, features).detach().to(device, torch.float64)
            except Exception:  # e.g. FAMO and GradNorm refuse a non-finite loss: name it as below
                _raise_if_not_finite(tasks, finite, epoch)
                raise
            penalty = model.penalty()
            if penalty is not None:
                if penalty.requires_grad:
                    penalty.backward()
                sum_penalty += penalty.detach().double() * len(idx)
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            opt.step()
            strategy.after_step(functools.partial(_losses_without_graph, model, tasks, x, targets))
            values = losses.detach().double()
            sum_losses += values * len(idx)
            sum_total += (weights @ values) * len(idx)
            sum_weights += weights
            steps += 1

        train_losses = (sum_losses / n).tolist()
        if not all(map(math.isfinite, train_losses)):  # a sum is finite if and only if its terms are
            _raise_if_not_finite(tasks, finite, epoch)
        row: dict = {"epoch": epoch}
        row |= {f"train_loss_{t.name}": v for t, v in zip(tasks, train_losses, strict=True)}
        row["train_total"] = (sum_total / n).item()
        if has_penalty:
            row["train_penalty"] = (sum_penalty / n).item()
        row |= {f"weight_{t.name}": v for t, v in zip(tasks, (sum_weights / steps).tolist(), strict=True)}
        if val is not None:
            row |= _validate(model, tasks, val, weights)
            normalised = (
                row[f"val_loss_{t.name}"] / v0
                for t, v0 in zip(tasks, initial, strict=True)
                if t.name in scored
            )
            row["val_score"] = sum(normalised)
        rows.append(row)
        strategy.end_epoch(row)
        if epoch in log_epochs:
            print(_log_line(row, tasks))

        if val is not None:
            if row[score_column] < best_score:
                best_score, since_best = row[score_column], 0
                if patience is not None:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                since_best += 1
            if patience is not None and since_best >= patience:
                break

    if best_state is not None:
        model.load_state_dict(best_state)
    history = pd.DataFrame(rows)
    if val is not None:
        history.attrs["best_epoch"] = int(history.loc[history[score_column].idxmin(), "epoch"])
        history.attrs["select"] = select
    return history
