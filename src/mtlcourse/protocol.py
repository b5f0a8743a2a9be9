r"""The benchmark protocol: how a method is tuned, when it has converged, and how sure a comparison is.

One protocol for every method, so that a difference in a table is a difference between methods and not
between the care each one got (Xin et al. 2022, "Do current multi-task optimization methods in deep
learning even help?", NeurIPS; Kurin et al. 2022, "In defense of the unitary scalarization for deep
multi-task learning", NeurIPS — both find that equal weights, tuned with the same care as the
specialised methods, match them on their benchmarks):

1. choose the learning rate on validation from a geometric grid that brackets the optimum
   (:func:`select_learning_rate`);
2. train several seeds at that rate until one fixed, method-independent criterion says the validation
   curve has flattened (:func:`plateaued`, on ``fit``'s ``val_score``);
3. report each test metric as mean and confidence interval over the seeds (:func:`mean_ci`,
   :func:`summarize`), and :math:`\Delta_m\%` against the single-task baselines with a bootstrap
   interval (:func:`delta_m_interval`);
4. draw the trade-off: which methods are not dominated by any other (:func:`pareto_front`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from mtlcourse.metrics import delta_m


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")


def mean_ci(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    r"""Mean of a few runs and the half-width of its Student-*t* confidence interval.

    .. math::
        \bar x \pm t_{(1+\gamma)/2,\; n-1} \, \frac{s}{\sqrt n}, \qquad
        s^2 = \frac{1}{n-1} \sum_{i=1}^n (x_i - \bar x)^2,

    for confidence level :math:`\gamma`. The *t* quantile (Student 1908, "The probable error of a
    mean", Biometrika) rather than the normal one, because a benchmark has a handful of seeds: with
    :math:`n = 5` the 97.5 % quantile is 2.776, not 1.960, and a normal-quantile interval would cover the
    true mean only about 88 % of the time. The interval assumes the seeds' results are independent and
    roughly normal.

    Parameters
    ----------
    values
        One number per run (seed), at least two, all finite.
    level
        Confidence level :math:`\gamma`, in (0, 1).

    Returns
    -------
    tuple of float
        ``(mean, half_width)``; the interval is ``mean ± half_width``.
    """
    _check_level(level)
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"values must be one-dimensional (one number per run), got shape {x.shape}")
    if len(x) < 2:
        raise ValueError(f"a confidence interval needs at least 2 runs, got {len(x)}")
    if not np.isfinite(x).all():
        raise ValueError(f"values must be finite, got {x.tolist()}")
    n = len(x)
    quantile = stats.t.ppf((1.0 + level) / 2.0, df=n - 1)
    return float(x.mean()), float(quantile * x.std(ddof=1) / math.sqrt(n))


def summarize(
    runs: pd.DataFrame, by: str | list[str], metrics: list[str], level: float = 0.95
) -> pd.DataFrame:
    """Mean and confidence half-width (:func:`mean_ci`) of each metric, per group of runs.

    Parameters
    ----------
    runs
        One row per run, e.g. columns ``method``, ``seed``, ``acc_left``, ``acc_right``.
    by
        Column(s) that name a group, e.g. ``"method"``; every group needs at least two runs.
    metrics
        Columns to summarise.
    level
        Confidence level of the intervals.

    Returns
    -------
    pandas.DataFrame
        One row per group, in the order the groups first appear in ``runs``: the ``by`` columns, then
        ``<metric>_mean`` and ``<metric>_ci`` (the half-width) for each metric, then ``n`` (runs in
        the group).
    """
    _check_level(level)
    keys = [by] if isinstance(by, str) else list(by)
    if not keys or not metrics:
        raise ValueError("summarize needs at least one grouping column and one metric")
    if missing := [c for c in [*keys, *metrics] if c not in runs.columns]:
        raise ValueError(f"column(s) {missing} not in runs (it has {list(runs.columns)})")
    rows = []
    for group, frame in runs.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, group, strict=True))
        for metric in metrics:
            try:
                row[f"{metric}_mean"], row[f"{metric}_ci"] = mean_ci(frame[metric].to_numpy(), level)
            except ValueError as err:
                raise ValueError(f"group {row}, metric {metric!r}: {err}") from err
        row["n"] = len(frame)
        rows.append(row)
    return pd.DataFrame(rows)


def delta_m_interval(
    method: pd.DataFrame,
    baseline: pd.DataFrame,
    higher_is_better: Mapping[str, bool],
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    *,
    paired: bool = False,
) -> tuple[float, float, float]:
    r""":math:`\Delta_m\%` of a method against its baseline, with a percentile-bootstrap interval.

    The estimate is :func:`mtlcourse.metrics.delta_m` of the seed means (positive = worse than the
    baseline). The interval is the percentile bootstrap (Efron & Tibshirani 1993, *An Introduction to
    the Bootstrap*, ch. 13): draw ``n_boot`` times, with replacement, as many seeds of the method as it
    has and — independently — as many seeds of the baseline as it has, recompute :math:`\Delta_m\%` from
    the two resampled means, and take the :math:`(1 \mp \gamma)/2` quantiles. Both sides are resampled
    because both are random: the single-task baselines are trained on seeds too, and a
    :math:`\Delta_m` against one lucky baseline seed would look better than it is. By default the
    sides are resampled independently: against single-task baselines (other networks), seed *s* of the
    method and seed *s* of the baseline share nothing but a number — the runs are not paired.
    :math:`\Delta_m` is a ratio of means, so no *t* interval applies directly; the bootstrap needs no
    formula for its variance.

    Between two multi-task methods trained on the same network, seed *s* means the same initial weights
    (and the same data order) on both sides: the runs *are* paired, and a seed that is lucky for one
    is often lucky for the other. Then ``paired=True`` resamples the seeds once and takes row *s* on
    both sides, so the shared luck cancels and the interval is not wider than it needs to be (resampled
    independently, it would be conservative). Rows must then be the same seeds in the same order.

    Parameters
    ----------
    method, baseline
        One row per seed (at least two each), one column per metric; the same columns on both sides.
        The numbers of rows may differ.
    higher_is_better
        Metric name -> ``True`` if a higher value is better; the same names as the columns.
    level
        Confidence level :math:`\gamma` of the interval.
    n_boot
        Number of bootstrap resamples.
    seed
        Seed of the ``numpy`` generator that draws the resamples: the same seed gives the same interval.
    paired
        Row *s* of ``method`` and row *s* of ``baseline`` come from the same seed (same initialisation):
        resample the pairs together.

    Returns
    -------
    tuple of float
        ``(estimate, low, high)``, in percent.
    """
    _check_level(level)
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    names = list(method.columns)
    if set(names) != set(baseline.columns) or set(names) != set(higher_is_better):
        raise ValueError(
            "method, baseline and higher_is_better must name the same metrics, got "
            f"{sorted(names)}, {sorted(baseline.columns)} and {sorted(higher_is_better)}"
        )
    a = method[names].to_numpy(dtype=float)
    b = baseline[names].to_numpy(dtype=float)
    for side, values in (("method", a), ("baseline", b)):
        if len(values) < 2:
            raise ValueError(f"the {side} needs at least 2 seeds for an interval, got {len(values)}")
        if not np.isfinite(values).all():
            raise ValueError(f"the {side} has non-finite values")
    if (b <= 0).any():
        raise ValueError("every baseline value must be positive (Δm divides by the baseline)")
    higher = dict(higher_is_better)

    def one(a_means: np.ndarray, b_means: np.ndarray) -> float:
        return delta_m(
            dict(zip(names, a_means.tolist(), strict=True)),
            dict(zip(names, b_means.tolist(), strict=True)),
            higher,
        )

    estimate = one(a.mean(axis=0), b.mean(axis=0))
    rng = np.random.default_rng(seed)
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired runs need as many seeds on both sides, got {len(a)} and {len(b)}")
        rows = rng.integers(0, len(a), size=(n_boot, len(a)))
        a_boot, b_boot = a[rows].mean(axis=1), b[rows].mean(axis=1)
    else:
        a_boot = a[rng.integers(0, len(a), size=(n_boot, len(a)))].mean(axis=1)
        b_boot = b[rng.integers(0, len(b), size=(n_boot, len(b)))].mean(axis=1)
    boot = np.array([one(x, y) for x, y in zip(a_boot, b_boot, strict=True)])
    low, high = np.quantile(boot, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return estimate, float(low), float(high)


@dataclass
class LearningRateChoice:
    """What :func:`select_learning_rate` chose and what it tried.

    Attributes
    ----------
    lr
        The learning rate with the lowest score.
    table
        Every learning rate tried and its score (non-finite scores shown as ``inf``), sorted by ``lr``.
    extended
        The learning rates added beyond the original grid, in the order they were tried.
    bracketed
        ``True`` if the best learning rate has a tried neighbour on each side; ``False`` means the
        optimum may lie beyond the grid even after the extensions.
    """

    lr: float
    table: pd.DataFrame
    extended: list[float] = field(default_factory=list)
    bracketed: bool = False


def _check_grid(grid: Sequence[float]) -> np.ndarray:
    g = np.asarray(grid, dtype=float)
    if g.ndim != 1 or len(g) < 3:
        raise ValueError(f"the grid needs at least 3 learning rates, got {list(np.atleast_1d(g))}")
    if not (np.isfinite(g).all() and (g > 0).all()):
        raise ValueError(f"learning rates must be positive and finite, got {g.tolist()}")
    ratios = g[1:] / g[:-1]
    if not (ratios > 1).all():
        raise ValueError(f"the grid must be sorted in increasing order without repeats, got {g.tolist()}")
    if not np.allclose(ratios, ratios[0], rtol=1e-3, atol=0.0):
        raise ValueError(
            f"the grid must be geometric (a constant ratio, e.g. np.geomspace), got ratios {ratios.tolist()}"
        )
    return g


def select_learning_rate(
    score: Callable[[float], float], grid: Sequence[float], *, max_extensions: int = 3
) -> LearningRateChoice:
    """Pick the learning rate with the lowest validation score, extending the grid until it brackets it.

    ``score(lr)`` is evaluated once per learning rate of the geometric ``grid``. While the best score
    sits at an edge of the grid, the grid grows by one point on that side, with the grid's own ratio,
    at most ``max_extensions`` times. A best value at the edge of a grid says only that the optimum may
    lie beyond it, and a method tuned on such a grid is compared at a handicap (Xin et al. 2022,
    NeurIPS, find that equal weights with tuned hyperparameters match the specialised methods). Ties
    go to the smaller learning rate.

    Parameters
    ----------
    score
        Learning rate -> a number where lower is better, e.g. the best ``val_score`` of a ``fit`` at
        that rate. A non-finite score (a run that diverged) counts as ``+inf``, not as an error.
    grid
        At least 3 positive learning rates in increasing order, with a constant ratio (to 0.1 %):
        ``np.geomspace(1e-3, 1e-1, 5)``, not ``[1e-3, 3e-3, 1e-2]`` (ratios 3 and 3.33).
    max_extensions
        How many points may be added beyond the grid, in total.

    Returns
    -------
    LearningRateChoice
        The chosen ``lr``, the ``table`` of every rate tried, the ``extended`` rates, and whether the
        choice is ``bracketed``.
    """
    g = _check_grid(grid)
    if not isinstance(max_extensions, (int, np.integer)) or max_extensions < 0:
        raise ValueError(f"max_extensions must be a non-negative integer, got {max_extensions!r}")
    ratio = (g[-1] / g[0]) ** (1.0 / (len(g) - 1))

    def evaluate(lr: float) -> float:
        value = float(score(lr))
        return value if math.isfinite(value) else math.inf

    lrs = [float(lr) for lr in g]
    scores = [evaluate(lr) for lr in lrs]
    if all(math.isinf(s) for s in scores):
        raise ValueError(f"every learning rate of the grid gave a non-finite score: {lrs}")
    extended: list[float] = []
    while True:
        best = int(np.argmin(scores))
        at_low, at_high = best == 0, best == len(lrs) - 1
        if not (at_low or at_high) or len(extended) >= max_extensions:
            break
        if at_low:
            lr = lrs[0] / ratio
            lrs.insert(0, lr)
            scores.insert(0, evaluate(lr))
        else:
            lr = lrs[-1] * ratio
            lrs.append(lr)
            scores.append(evaluate(lr))
        extended.append(lr)
    best = int(np.argmin(scores))
    return LearningRateChoice(
        lr=lrs[best],
        table=pd.DataFrame({"lr": lrs, "score": scores}),
        extended=extended,
        bracketed=0 < best < len(lrs) - 1,
    )


def plateaued(history: pd.DataFrame, column: str = "val_score", window: int = 10, rtol: float = 0.01) -> bool:
    r"""Has training converged? The fixed criterion of the protocol, the same for every method.

    With :math:`b` the best (lowest) value of ``column`` before the last ``window`` epochs and
    :math:`r` the best value within them, training has plateaued when

    .. math::
        b - r < \text{rtol} \cdot |b| ,

    i.e. the last ``window`` epochs improved on the best so far by less than ``rtol`` relatively (or
    not at all). For a positive curve this is, up to the boundary case, the test of PyTorch's
    ``ReduceLROnPlateau`` (``mode="min"``, ``threshold_mode="rel"``, ``patience=window``,
    ``threshold=rtol``), applied once to a whole history. On ``fit``'s ``val_score`` (each task's
    validation loss over its initial value, summed) it does not depend on the method's own loss
    weights.

    Parameters
    ----------
    history
        One row per epoch, as returned by :func:`mtlcourse.training.fit`; more than ``window`` rows.
    column
        The column to watch; lower is better.
    window
        Number of final epochs compared with all the earlier ones.
    rtol
        Relative improvement below which the curve counts as flat.

    Returns
    -------
    bool
        ``True`` if the curve has flattened.
    """
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    if not rtol >= 0:
        raise ValueError(f"rtol must be non-negative, got {rtol!r}")
    if column not in history.columns:
        raise ValueError(f"column {column!r} not in the history (it has {list(history.columns)})")
    values = history[column].to_numpy(dtype=float)
    if len(values) <= window:
        raise ValueError(f"plateaued needs more than window={window} epochs, got {len(values)}")
    if not np.isfinite(values).all():
        raise ValueError(f"column {column!r} has non-finite values")
    before, recent = values[:-window].min(), values[-window:].min()
    gain = before - recent
    return bool(gain <= 0 or gain < rtol * abs(before))


def pareto_front(
    points: np.ndarray | Sequence[Sequence[float]], higher_is_better: Sequence[bool]
) -> np.ndarray:
    r"""Which points no other point dominates: the Pareto front of a set of results.

    Point :math:`p` dominates :math:`q` when it is at least as good as :math:`q` on every column and
    strictly better on at least one (Miettinen 1999, *Nonlinear Multiobjective Optimization*, ch.
    2; Sener & Koltun 2018, NeurIPS, for multi-task learning). Equal points do not dominate each
    other, so duplicates on the front are all kept.

    Parameters
    ----------
    points
        Shape ``(n, k)``: one row per result (a method, a static weighting), one column per metric.
    higher_is_better
        One bool per column.

    Returns
    -------
    numpy.ndarray
        Shape ``(n,)``, bool: ``True`` for the non-dominated rows.
    """
    p = np.asarray(points, dtype=float)
    if p.ndim != 2 or p.shape[1] == 0:
        raise ValueError(f"points must have shape (n, k) with k >= 1, got {p.shape}")
    if len(higher_is_better) != p.shape[1]:
        raise ValueError(f"{len(higher_is_better)} directions for {p.shape[1]} columns")
    if not all(isinstance(h, (bool, np.bool_)) for h in higher_is_better):
        raise ValueError(f"higher_is_better must hold bools, got {list(higher_is_better)}")
    if not np.isfinite(p).all():
        raise ValueError("points must be finite")
    # in "lower is better" form; dominates[j, i]: row j dominates row i
    q = np.where(np.asarray(higher_is_better, dtype=bool), -p, p)
    no_worse = (q[:, None, :] <= q[None, :, :]).all(axis=2)
    better = (q[:, None, :] < q[None, :, :]).any(axis=2)
    return ~(no_worse & better).any(axis=0)
