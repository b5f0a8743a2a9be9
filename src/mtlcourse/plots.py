"""What we look at: the training dashboard of Chapter 1, panel by panel.

Each ``plot_*`` function draws one panel on a given matplotlib ``Axes`` and returns it, so a chapter
can show one panel alone or the whole :func:`training_dashboard`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mtlcourse import metrics

SPLIT_COLOURS = {"train": "#1f77b4", "validation": "#d62728"}


def _numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def plot_total_loss(history: pd.DataFrame, ax: Axes) -> Axes:
    """Training and validation total loss per epoch, the best validation epoch marked.

    The best epoch is the one ``fit`` selected (``history.attrs["best_epoch"]``, by its ``select``
    criterion), which need not be the minimum of the weighted total drawn here; without that
    attribute, the minimum of ``val_total``.
    """
    ax.plot(history["epoch"], history["train_total"], label="training", color=SPLIT_COLOURS["train"])
    ax.plot(history["epoch"], history["val_total"], label="validation", color=SPLIT_COLOURS["validation"])
    best = history.attrs.get("best_epoch", history.loc[history["val_total"].idxmin(), "epoch"])
    ax.axvline(best, linestyle="--", color="grey", label=f"best epoch ({best})")
    ax.set(title="Total loss (weighted sum)", xlabel="epoch", ylabel="loss")
    ax.legend()
    return ax


def plot_val_accuracy(history: pd.DataFrame, task: str, ax: Axes) -> Axes:
    """Validation accuracy of one classification task per epoch, with its peak marked."""
    acc = history[f"val_acc_{task}"]
    ax.plot(history["epoch"], acc, color="#2c3e50")
    ax.axhline(acc.max(), linestyle="--", color="grey", label=f"peak {acc.max():.3f}")
    ax.set(title=f"Validation accuracy ({task})", xlabel="epoch", ylabel="accuracy")
    ax.legend(loc="lower right")
    return ax


def plot_task_losses(history: pd.DataFrame, task: str, ax: Axes) -> Axes:
    """Training and validation loss of one task per epoch."""
    ax.plot(history["epoch"], history[f"train_loss_{task}"], label="training", color=SPLIT_COLOURS["train"])
    ax.plot(
        history["epoch"], history[f"val_loss_{task}"], label="validation", color=SPLIT_COLOURS["validation"]
    )
    ax.set(title=f"Loss of the {task} task", xlabel="epoch", ylabel="loss")
    ax.legend()
    return ax


def plot_generalisation_gap(history: pd.DataFrame, ax: Axes) -> Axes:
    """Training minus validation total loss; below zero, the model does worse on unseen data than on
    the data it was trained on (the usual case), above zero better."""
    ax.plot(history["epoch"], history["train_total"] - history["val_total"], color="#e74c3c")
    ax.axhline(0, linestyle="--", color="grey")
    ax.set(title="Generalisation gap", xlabel="epoch", ylabel="training − validation loss")
    return ax


def plot_actual_vs_predicted(target, prediction, ax: Axes) -> Axes:
    """Regression: predicted against actual values, with the identity line and a least-squares fit."""
    y, p = _numpy(target), _numpy(prediction)
    ax.scatter(y, p, s=10, alpha=0.5, color="#2c3e50", label="test rows")
    lims = np.array([min(y.min(), p.min()), max(y.max(), p.max())])
    ax.plot(lims, lims, linestyle="--", color="#e74c3c", label="y = x")
    slope, intercept = np.polyfit(y, p, 1)
    ax.plot(lims, slope * lims + intercept, color="#3498db", label=f"fit: slope {slope:.2f}")
    r2, rmse = metrics.r2_correlation(p, y), metrics.rmse(p, y)
    ax.set(title=f"Regression: R² = {r2:.3f}, RMSE = {rmse:.3f}", xlabel="actual", ylabel="predicted")
    ax.legend()
    return ax


def plot_probabilities(target, logits, ax: Axes) -> Axes:
    """Classification: histogram of predicted probabilities by true class, with the 0.5 threshold."""
    frame = pd.DataFrame(
        {"probability": torch.sigmoid(torch.as_tensor(_numpy(logits))).numpy(), "class": _numpy(target)}
    )
    frame["class"] = frame["class"].map({0.0: "class 0", 1.0: "class 1"})
    sns.histplot(
        frame,
        x="probability",
        hue="class",
        bins=20,
        binrange=(0, 1),
        ax=ax,
        alpha=0.6,
        hue_order=["class 0", "class 1"],
    )
    ax.axvline(0.5, linestyle="--", color="grey")
    acc = metrics.accuracy(logits, target)
    ax.set(
        title=f"Classification: accuracy = {100 * acc:.1f} %", xlabel="predicted probability", ylabel="count"
    )
    return ax


def training_dashboard(
    history: pd.DataFrame,
    outputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    regression: str = "regression",
    classification: str = "classification",
) -> Figure:
    """The six panels of the R post's diagnostic figure, as one matplotlib figure.

    Rows: total loss | validation accuracy; the two per-task loss curves; the generalisation gap;
    actual vs predicted (regression) | predicted probabilities (classification) on the test set.
    """
    fig, axes = plt.subplot_mosaic(
        [["total", "acc"], ["reg", "cls"], ["gap", "gap"], ["scatter", "probs"]],
        figsize=(12, 15),
        layout="constrained",
    )
    plot_total_loss(history, axes["total"])
    plot_val_accuracy(history, classification, axes["acc"])
    plot_task_losses(history, regression, axes["reg"])
    plot_task_losses(history, classification, axes["cls"])
    plot_generalisation_gap(history, axes["gap"])
    plot_actual_vs_predicted(targets[regression], outputs[regression], axes["scatter"])
    plot_probabilities(targets[classification], outputs[classification], axes["probs"])
    return fig
