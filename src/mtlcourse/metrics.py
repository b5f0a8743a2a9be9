"""How good is a model, task by task.

Every function takes predictions and targets (tensors or arrays of the same length) and returns a
float. Classification metrics take *logits* (what the heads output), not probabilities.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm

from mtlcourse.tasks import Task

ArrayLike = torch.Tensor | np.ndarray


def _pair(pred: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = pred.detach().cpu().double().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred, float)
    t = (
        target.detach().cpu().double().numpy()
        if isinstance(target, torch.Tensor)
        else np.asarray(target, float)
    )
    if p.shape != t.shape:
        raise ValueError(f"predictions have shape {p.shape} but targets have shape {t.shape}")
    if p.size == 0:
        raise ValueError("cannot score empty predictions")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise ValueError("predictions or targets contain NaN or infinite values")
    return p, t


def mse(pred: ArrayLike, target: ArrayLike) -> float:
    r"""Mean squared error :math:`\frac1N \sum (\hat y - y)^2`."""
    p, t = _pair(pred, target)
    return float(np.mean((p - t) ** 2))


def rmse(pred: ArrayLike, target: ArrayLike) -> float:
    """Root mean squared error, in the target's units."""
    return mse(pred, target) ** 0.5


def mae(pred: ArrayLike, target: ArrayLike) -> float:
    r"""Mean absolute error :math:`\frac1N \sum |\hat y - y|`."""
    p, t = _pair(pred, target)
    return float(np.mean(np.abs(p - t)))


def r2_correlation(pred: ArrayLike, target: ArrayLike) -> float:
    r"""Squared Pearson correlation between predictions and targets — the R post's "R-squared".

    It ignores bias and scale: predictions ``2·y + 5`` score 1. Compare :func:`r2_score`.
    """
    p, t = _pair(pred, target)
    if p.std() == 0 or t.std() == 0:
        raise ValueError("R² (correlation) is undefined when predictions or targets are constant")
    return float(np.corrcoef(p, t)[0, 1] ** 2)


def r2_score(pred: ArrayLike, target: ArrayLike) -> float:
    r"""Coefficient of determination :math:`1 - \sum(\hat y - y)^2 / \sum(y - \bar y)^2` (scikit-learn's)."""
    p, t = _pair(pred, target)
    return float(skm.r2_score(t, p))


def bce(logits: ArrayLike, target: ArrayLike) -> float:
    r"""Binary cross-entropy of the sigmoid of ``logits``, in nats (``BCEWithLogitsLoss``)."""
    z, t = _pair(logits, target)
    # log(1 + e^z) - t z, written to be stable for large |z|
    return float(np.mean(np.logaddexp(0.0, z) - t * z))


def accuracy(logits: ArrayLike, target: ArrayLike) -> float:
    """Fraction of rows where ``logits > 0`` (probability above 0.5) matches the 0/1 target."""
    z, t = _pair(logits, target)
    return float(np.mean((z > 0) == (t > 0.5)))


def roc_auc(logits: ArrayLike, target: ArrayLike) -> float:
    """Area under the ROC curve (scikit-learn); any monotone score, such as a logit, will do."""
    z, t = _pair(logits, target)
    if len(np.unique(t)) < 2:
        raise ValueError("ROC AUC needs both classes among the targets")
    return float(skm.roc_auc_score(t, z))


def report(
    tasks: list[Task], outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
) -> pd.DataFrame:
    """One row per (task, metric): MSE, RMSE, MAE, R² for regression; BCE, accuracy, AUC for binary tasks.

    Multiclass tasks get cross-entropy and accuracy. Every score is computed on the CPU, so outputs and
    targets may come from any device (each may be on a different one).
    """
    rows = []
    for task in tasks:
        out, y = outputs[task.name], targets[task.name]
        if task.kind == "regression":
            scores = {
                "MSE": mse(out, y),
                "RMSE": rmse(out, y),
                "MAE": mae(out, y),
                "R² (corr²)": r2_correlation(out, y),
            }
        elif task.kind == "binary":
            scores = {"BCE": bce(out, y), "Accuracy": accuracy(out, y), "AUC": roc_auc(out, y)}
        else:  # on the CPU, as the other metrics: the outputs and targets may sit on different devices
            out, y = out.detach().cpu(), y.cpu()
            scores = {"Cross-entropy": task.loss(out, y).item(), "Accuracy": task.accuracy(out, y)}
        rows += [{"task": task.name, "metric": k, "value": v} for k, v in scores.items()]
    return pd.DataFrame(rows)


def gradient_cosine(jacobian: torch.Tensor) -> torch.Tensor:
    r"""Cosine similarity between every pair of task gradients: the rows of :math:`J`.

    .. math::
        S_{ij} = \frac{g_i \cdot g_j}{\lVert g_i \rVert \, \lVert g_j \rVert}
               = \frac{G_{ij}}{\sqrt{G_{ii} G_{jj}}}, \qquad G = J J^\top,

    computed from the Gramian :math:`G` in float64. Two tasks *conflict* when :math:`S_{ij} < 0`
    (Yu et al. 2020): a small step along one gradient increases the other task's loss. A zero row has
    no direction; its cosines are NaN.

    Parameters
    ----------
    jacobian
        Shape ``(m, n)``: one row per task, e.g. from :func:`mtlcourse.autojac.jacobian`.

    Returns
    -------
    torch.Tensor
        Shape ``(m, m)``, float64, ones on the diagonal (for non-zero rows).
    """
    if not isinstance(jacobian, torch.Tensor) or jacobian.ndim != 2 or len(jacobian) == 0:
        shape = tuple(jacobian.shape) if isinstance(jacobian, torch.Tensor) else type(jacobian).__name__
        raise ValueError(f"expected a Jacobian of shape (m, n) with m >= 1, got {shape}")
    J = jacobian.detach().double()
    gram = J @ J.T
    norms = gram.diagonal().sqrt()
    return (gram / torch.outer(norms, norms)).clamp(-1.0, 1.0)


def delta_m(
    model_metrics: dict[str, float],
    baseline_metrics: dict[str, float],
    higher_is_better: dict[str, bool],
) -> float:
    r"""The :math:`\Delta_m\%` of multi-task benchmarks: mean relative change against single-task baselines.

    .. math::
        \Delta_m\% = \frac{100}{K} \sum_{k=1}^K (-1)^{\ell_k} \, \frac{M_{a,k} - M_{b,k}}{M_{b,k}},

    over the :math:`K` metrics (of all tasks together, each counted once), where :math:`M_{a,k}` is
    the multi-task model's value of metric :math:`k`, :math:`M_{b,k}` the single-task baseline's, and
    :math:`\ell_k = 1` if a *higher* value of metric :math:`k` is better.

    **Sign: positive = worse.** :math:`\Delta_m\% > 0` means the multi-task model is on average *worse*
    than the single-task models, :math:`< 0` better — the convention of CAGrad (Liu et al. 2021,
    NeurIPS) and Nash-MTL (Navon et al. 2022, ICML), whose tables report :math:`\Delta_m\% \downarrow`.
    The measure goes back to Maninis et al. (2019, CVPR); other works flip the sign: LibMTL's
    ``count_improvement`` (Lin & Zhang) reports :math:`\Delta_p` with *higher = better* and, unlike here,
    averages the metrics within each task before averaging over tasks; the survey of Vandenhende et
    al. (2021, TPAMI) also counts improvements as positive. Check the sign before comparing tables.

    Parameters
    ----------
    model_metrics
        Metric name -> value of the multi-task model.
    baseline_metrics
        Metric name -> value of the single-task baseline; each must be positive (a relative change
        from a zero or negative value has no meaning).
    higher_is_better
        Metric name -> ``True`` if higher values are better (accuracy, mIoU), ``False`` if lower values
        are (errors, losses).

    Returns
    -------
    float
        :math:`\Delta_m\%`, in percent; 0 when the model equals the baseline.
    """
    names = set(model_metrics)
    if not names:
        raise ValueError("delta_m needs at least one metric")
    if set(baseline_metrics) != names or set(higher_is_better) != names:
        raise ValueError(
            "model_metrics, baseline_metrics and higher_is_better must name the same metrics, got "
            f"{sorted(names)}, {sorted(baseline_metrics)} and {sorted(higher_is_better)}"
        )
    total = 0.0
    for name in sorted(names):
        model, base = float(model_metrics[name]), float(baseline_metrics[name])
        higher = higher_is_better[name]
        if not (np.isfinite(model) and np.isfinite(base)):
            raise ValueError(f"metric {name!r} is not finite: model {model}, baseline {base}")
        if base <= 0:
            raise ValueError(f"baseline of {name!r} must be positive for a relative change, got {base}")
        if not isinstance(higher, (bool, np.bool_)):
            raise ValueError(f"higher_is_better[{name!r}] must be a bool, got {higher!r}")
        total += (-1.0 if higher else 1.0) * (model - base) / base
    return 100.0 * total / len(names)
