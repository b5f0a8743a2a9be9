"""What we look at: the training dashboard of Chapter 1, panel by panel.

Each ``plot_*`` function draws one panel on a given matplotlib ``Axes`` and returns it, so a chapter
can show one panel alone or the whole :func:`training_dashboard`. Chapter 8's boxes-and-arrows picture of
the four sharing architectures is :func:`sharing_diagram`.
"""

from __future__ import annotations

from itertools import pairwise

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse, FancyArrowPatch, FancyBboxPatch, Patch

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


# --- What to share (Chapter 8): the four architectures as boxes and arrows -------------------------------

_FONT = 9
_SHARED = "#949494"  # grey of seaborn's "colorblind" palette: shared parameters
_TASK_ORDER = (0, 1, 2, 3, 4, 5, 9, 8, 6)  # the palette without its grey, darkest first
_Y_X, _Y_HEAD, _Y_TASK, _Y_TOP = (0.35, 1.05), (5.9, 6.6), 7.3, 7.9
_STRETCH = 1.2  # drawn height of a y unit over that of an x unit: fills the (12, 3.6) page-width figure


def _task_colours(m: int) -> list[str]:
    palette = sns.color_palette("colorblind").as_hex()
    return [palette[_TASK_ORDER[t % len(_TASK_ORDER)]] for t in range(m)]


def _ink(colour: str) -> str:
    """Black or white, whichever reads better on ``colour`` (relative luminance)."""
    r, g, b = (int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def _box(ax: Axes, cx: float, y: tuple[float, float], width: float, colour: str, label: str = "", **kw):
    patch = FancyBboxPatch(
        (cx - width / 2, y[0]),
        width,
        y[1] - y[0],
        boxstyle="round,pad=0,rounding_size=0.12",
        facecolor=colour,
        edgecolor=kw.pop("edgecolor", "#333333"),
        linewidth=kw.pop("linewidth", 1.0),
        zorder=2,
        **kw,
    )
    ax.add_patch(patch)
    if label:
        ax.text(
            cx,
            (y[0] + y[1]) / 2,
            label,
            ha="center",
            va="center",
            fontsize=_FONT,
            color=_ink(colour) if colour.startswith("#") else "black",
            zorder=3,
        )
    return patch


def _node(ax: Axes, cx: float, cy: float, label: str, colour: str = "white"):
    patch = Ellipse((cx, cy), 0.68, 0.68 / _STRETCH, facecolor=colour, edgecolor="#333333", zorder=4)
    ax.add_patch(patch)
    ax.text(cx, cy, label, ha="center", va="center", fontsize=_FONT + 1, zorder=5)
    return patch


def _centre(patch) -> tuple[float, float]:
    if isinstance(patch, Ellipse):
        return patch.center
    return patch.get_x() + patch.get_width() / 2, patch.get_y() + patch.get_height() / 2


def _arrow(ax: Axes, a, b, style: str = "-|>", **kw) -> None:
    """An arrow from patch ``a`` to patch ``b``, centre to centre (or along ``connectionstyle``), clipped at
    both outlines."""
    ax.add_patch(
        FancyArrowPatch(
            _centre(a),
            _centre(b),
            patchA=a,
            patchB=b,
            arrowstyle=style,
            mutation_scale=9,
            shrinkA=1,
            shrinkB=1,
            color=kw.pop("color", "#333333"),
            linewidth=kw.pop("linewidth", 1.0),
            zorder=1,
            **kw,
        )
    )


def _input_and_outputs(ax: Axes, width: float, xs: np.ndarray, head_width: float, colours: list[str]):
    """Input x at the bottom; a head and an output label per task at the top. Returns (x, heads)."""
    x = _box(ax, width / 2, _Y_X, 1.2, "white")
    ax.text(width / 2, sum(_Y_X) / 2, "x", ha="center", va="center", fontsize=_FONT + 2, style="italic")
    heads = [_box(ax, cx, _Y_HEAD, head_width, colour) for cx, colour in zip(xs, colours, strict=True)]
    for t, cx in enumerate(xs):
        ax.annotate(
            f"task {t + 1}",
            xy=(cx, _Y_HEAD[1]),
            xytext=(cx, _Y_TASK),
            ha="center",
            va="bottom",
            fontsize=_FONT,
            arrowprops={
                "arrowstyle": "-|>",
                "color": "#333333",
                "shrinkA": 1,
                "shrinkB": 1,
                "mutation_scale": 9,
            },
        )
    return x, heads


def _draw_hard(ax: Axes, width: float, xs: np.ndarray, w: float, colours: list[str]) -> None:
    x, heads = _input_and_outputs(ax, width, xs, w, colours)
    trunk = _box(ax, width / 2, (1.8, 5.0), xs[-1] - xs[0] + w, _SHARED, "shared trunk")
    _arrow(ax, x, trunk)
    for head in heads:
        _arrow(ax, trunk, head)


def _draw_soft(ax: Axes, width: float, xs: np.ndarray, w: float, colours: list[str]) -> None:
    x, heads = _input_and_outputs(ax, width, xs, w, colours)
    columns = [
        _box(ax, cx, (1.8, 5.0), w, colour, f"θ{chr(0x2081 + t)}" if t < 9 else f"θ{t + 1}")
        for t, (cx, colour) in enumerate(zip(xs, colours, strict=True))
    ]
    for column, head in zip(columns, heads, strict=True):
        _arrow(ax, x, column)
        _arrow(ax, column, head)
    y = 3.4
    for left, right in pairwise(xs):
        ax.annotate(
            "",
            xy=(right - w / 2, y),
            xytext=(left + w / 2, y),
            arrowprops={
                "arrowstyle": "<|-|>",
                "linestyle": "--",
                "color": "#333333",
                "shrinkA": 1,
                "shrinkB": 1,
                "mutation_scale": 9,
            },
        )
    if len(xs) == 2:
        ax.text(width / 2, y + 0.2, "‖θ₁ − θ₂‖²", ha="center", va="bottom", fontsize=_FONT)
    else:
        y = sum(_Y_X) / 2  # a key at the bottom left: the dashed arrows are the penalty
        ax.annotate(
            "",
            xy=(1.0, y),
            xytext=(0.1, y),
            arrowprops={"arrowstyle": "<|-|>", "linestyle": "--", "color": "#333333", "mutation_scale": 9},
        )
        ax.text(1.1, y, "Σₜ‖θₜ − θ̄‖²", ha="left", va="center", fontsize=_FONT)


def _draw_cross_stitch(ax: Axes, width: float, xs: np.ndarray, w: float, colours: list[str]) -> None:
    x, heads = _input_and_outputs(ax, width, xs, w, colours)
    layers = [
        [
            _box(ax, cx, y, w, _SHARED, edgecolor=colour, linewidth=2.5)
            for cx, colour in zip(xs, colours, strict=True)
        ]
        for y in ((1.5, 2.2), (3.5, 4.2))
    ]
    for layer in layers[0]:
        _arrow(ax, x, layer)
    for below, above, y in ((layers[0], layers[1], 2.85), (layers[1], heads, 5.05)):
        _node(ax, width / 2, y, "α", _SHARED)
        for a in below:
            for b in above:
                _arrow(ax, a, b, linewidth=0.8)


def _draw_mmoe(ax: Axes, width: float, xs: np.ndarray, w: float, colours: list[str]) -> None:
    x, heads = _input_and_outputs(ax, width, xs, w, colours)
    m, gate_width = len(xs), 1.7
    experts = [
        _box(ax, width / 2 + 1.5 * e, (1.8, 3.6), 1.2, _SHARED, f"f{chr(0x2081 + e + 1)}") for e in (-1, 0, 1)
    ]
    n_left = -(-m // 2)
    centres = [0.1 + gate_width / 2 + i * (gate_width + 0.15) for i in range(n_left)]
    centres += [width - 0.1 - gate_width / 2 - i * (gate_width + 0.15) for i in range(m - n_left)][::-1]
    for expert in experts:
        _arrow(ax, x, expert)
    for t, (gx, cx, head, colour) in enumerate(zip(centres, xs, heads, colours, strict=True)):
        gate = _box(ax, gx, (2.0, 2.7), gate_width, colour, f"gate {t + 1}")
        mix = _node(ax, cx, 4.8, "Σ")
        _arrow(ax, x, gate)
        for expert in experts:
            _arrow(ax, expert, mix, linewidth=0.8)
        _arrow(
            ax,
            gate,
            mix,
            linestyle=":",
            color=colour,
            linewidth=1.8,
            connectionstyle="angle,angleA=90,angleB=0,rad=0",
        )
        _arrow(ax, mix, head)


def sharing_diagram(m: int = 2) -> Figure:
    r"""The four ways to share between :math:`m` tasks that Chapter 8 compares, as boxes and arrows.

    One panel each, input :math:`x` at the bottom and one output per task at the top; grey boxes hold
    shared parameters, coloured ones the parameters of one task (seaborn's colour-blind-safe palette):

    - **Hard sharing** (Caruana 1997, "Multitask learning", Machine Learning 28): one trunk for all tasks,
      a head per task (:func:`~mtlcourse.models.hard_sharing_mlp`).
    - **Soft sharing** (Duong, Cohn, Bird & Cook 2015, ACL): a column :math:`\theta_t` per task, tied only by
      the penalty :math:`\lVert \theta_1 - \theta_2 \rVert_2^2` (dashed;
      :class:`~mtlcourse.sharing.SoftSharing`).
    - **Cross-stitch** (Misra, Shrivastava, Gupta & Hebert 2016, CVPR): a column per task, whose activations
      a unit :math:`\alpha` mixes after every layer (:class:`~mtlcourse.sharing.CrossStitch`). The columns
      are drawn grey, outlined in their task's colour: after the first unit every task's loss depends on
      every column, so the package counts them as shared.
    - **MMoE** (Ma, Zhao, Yi, Chen, Hong & Chi 2018, KDD): three shared experts :math:`f_e`, and for each
      task a gate on :math:`x` whose weights (dotted) mix the experts, :math:`\sum_e g_{t,e}(x) f_e(x)`
      (:class:`~mtlcourse.sharing.MMoE`).

    Parameters
    ----------
    m
        Number of tasks, at least 2.

    Returns
    -------
    matplotlib.figure.Figure
        One row of four panels, axes off; the same drawing on every call.
    """
    if isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 2:
        raise ValueError(f"m must be an integer of at least 2 tasks, got {m!r}")
    m = int(m)
    width = max(10.0, 2 * (2.4 + 1.85 * -(-m // 2)), 1.0 + 2.2 * m)
    margin = 0.5
    xs = margin + (np.arange(m) + 0.5) * (width - 2 * margin) / m
    w = min(1.8, 0.5 * (width - 2 * margin) / m)
    colours = _task_colours(m)
    fig, axes = plt.subplots(1, 4, figsize=(12 * width / 10, 3.6), layout="constrained")
    fig.patch.set_facecolor("white")
    draw = {
        "Hard sharing": _draw_hard,
        "Soft sharing": _draw_soft,
        "Cross-stitch": _draw_cross_stitch,
        "MMoE": _draw_mmoe,
    }
    for ax, (title, panel) in zip(axes, draw.items(), strict=True):
        panel(ax, width, xs, w, colours)
        ax.set(xlim=(0, width), ylim=(0, _Y_TOP), aspect=_STRETCH)
        ax.set_title(title, fontsize=_FONT + 2)
        ax.axis("off")
    handles = [Patch(facecolor=_SHARED, edgecolor="#333333", label="shared parameters")]
    handles += [
        Patch(facecolor=c, edgecolor="#333333", label=f"task {t + 1} only") for t, c in enumerate(colours)
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=_FONT)
    return fig
