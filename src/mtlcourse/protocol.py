r"""The benchmark protocol: how a method is tuned, when it has converged, and how sure a comparison is.

One protocol for every method, so that a difference in a table is a difference between methods and not
between the care each one got (Xin et al. 2022, "Do current multi-task optimization methods in deep
learning even help?", NeurIPS; Kurin et al. 2022, "In defense of the unitary scalarization for deep
multi-task learning", NeurIPS — both find that equal weights, tuned with the same care as the
specialised methods, match them on their benchmarks):

1. choose the learning rate on validation from a geometric grid that brackets the optimum
   (:func:`select_learning_rate`);
2. train several seeds at that rate, each stopped by one fixed, method-independent rule (early stopping
   on ``fit``'s ``val_score``), and check that its validation curve had flattened (:func:`plateaued`);
3. report each test metric as mean and confidence interval over the seeds (:func:`mean_ci`,
   :func:`summarize`), and :math:`\Delta_m\%` against the single-task baselines with a
   delta-method Student-*t* interval (:func:`delta_m_interval`);
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


def _sample_variance(x: np.ndarray) -> float:
    """ddof=1 variance, exactly 0 when every value is the same (no rounding residue from the mean)."""
    return 0.0 if (x == x[0]).all() else float(x.var(ddof=1))


def delta_m_interval(
    method: pd.DataFrame,
    baseline: pd.DataFrame,
    higher_is_better: Mapping[str, bool],
    level: float = 0.95,
    *,
    paired: bool = False,
) -> tuple[float, float, float]:
    r""":math:`\Delta_m\%` of a method against its baseline, with a delta-method Student-*t* interval.

    The estimate is :func:`mtlcourse.metrics.delta_m` of the seed means (positive = worse than the
    baseline),

    .. math::
        \widehat{\Delta}_m = \frac{100}{K} \sum_{k=1}^K s_k \Bigl(\frac{\bar a_k}{\bar b_k} - 1\Bigr),
        \qquad s_k = \begin{cases} -1 & \text{higher is better for metric } k \\
                                   +1 & \text{lower is better,} \end{cases}

    with :math:`\bar a_k, \bar b_k` the means over the seeds of the method and of the baseline. The
    interval linearises :math:`\Delta_m` in the means — the delta method (Casella & Berger 2002,
    *Statistical Inference*, 2nd ed., §5.5.4) — which makes it a difference of two means of one number
    per seed, the seed's *influence*:

    .. math::
        u_i = \frac{100}{K} \sum_k s_k \frac{a_{ik}}{\bar b_k} \quad\text{(method seed } i\text{)},
        \qquad
        v_j = -\frac{100}{K} \sum_k s_k \frac{\bar a_k}{\bar b_k} \frac{b_{jk}}{\bar b_k}
        \quad\text{(baseline seed } j\text{)}.

    One number per seed keeps the correlation between the metrics of that seed (a lucky seed is
    often lucky on every metric). The interval is :math:`\widehat{\Delta}_m \pm t_{(1+\gamma)/2,\,\nu}
    \cdot \mathrm{se}`, with sample variances (ddof = 1) and

    * **unpaired** (default): :math:`\mathrm{se}^2 = \operatorname{var}(u)/n_a + \operatorname{var}(v)/n_b`,
      :math:`\nu` by Welch–Satterthwaite (Welch 1947, "The generalization of 'Student's' problem when
      several different population variances are involved", Biometrika 34),
      :math:`\nu = \mathrm{se}^4 / \bigl[(\operatorname{var}(u)/n_a)^2/(n_a-1) +
      (\operatorname{var}(v)/n_b)^2/(n_b-1)\bigr]` — the other side's :math:`n - 1` when one side has no
      spread, and width 0 when neither has;
    * **paired**: :math:`d_s = u_s + v_s`, :math:`\mathrm{se}^2 = \operatorname{var}(d)/n`,
      :math:`\nu = n - 1`.

    Both sides count as random because both are: the single-task baselines are trained on seeds
    too, and a :math:`\Delta_m` against one lucky baseline seed would look better than it is. By
    default the sides are independent: against single-task baselines (other networks), seed *s* of
    the method and seed *s* of the baseline share nothing but a number — the runs are not paired.

    Between two multi-task methods trained on the same network, seed *s* means the same initial weights
    (and the same data order) on both sides: the runs *are* paired, and a seed that is lucky for one
    is often lucky for the other. Then ``paired=True`` takes the per-seed differences :math:`d_s`, so
    the shared luck cancels and the interval is not wider than it needs to be (treated as
    independent, it would be conservative); a side against itself has width 0. Rows must then be the
    same seeds in the same order.

    **Why not the percentile bootstrap** (Efron & Tibshirani 1993, ch. 13), which this function used
    before: with five seeds a side, the resampled means vary less than the means themselves (by the
    factor :math:`\sqrt{(n-1)/n}`) and the bootstrap quantiles behave like normal ones, not *t* ones —
    the small-sample problem for which :func:`mean_ci` uses Student's *t*. Simulated with normal seeds
    (two metrics correlated within a seed, one higher-is-better; 20 000 data sets), the nominal 95 %
    percentile interval covered the true :math:`\Delta_m` 0.88 of the time unpaired (5 against 5
    seeds) and 0.84 paired; this interval covers 0.96 and 0.95. The linearisation is accurate while
    the seeds' spread is small against the baseline means (coverage stayed at 0.95–0.96 with a
    coefficient of variation of 15 %); it is not for a baseline mean near 0.

    Parameters
    ----------
    method, baseline
        One row per seed (at least two each), one column per metric; the same columns on both sides.
        The numbers of rows may differ (unless ``paired``). Every baseline value must be positive.
    higher_is_better
        Metric name -> ``True`` if a higher value is better; the same names as the columns.
    level
        Confidence level :math:`\gamma` of the interval, in (0, 1).
    paired
        Row *s* of ``method`` and row *s* of ``baseline`` come from the same seed (same initialisation):
        the interval is built on the per-seed differences.

    Returns
    -------
    tuple of float
        ``(estimate, low, high)``, in percent; the interval is symmetric around the estimate.
    """
    _check_level(level)
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
    if paired and len(a) != len(b):
        raise ValueError(f"paired runs need as many seeds on both sides, got {len(a)} and {len(b)}")
    higher = dict(higher_is_better)
    a_mean, b_mean = a.mean(axis=0), b.mean(axis=0)
    estimate = delta_m(
        dict(zip(names, a_mean.tolist(), strict=True)), dict(zip(names, b_mean.tolist(), strict=True)), higher
    )
    scale = 100.0 / len(names) * np.array([-1.0 if higher[name] else 1.0 for name in names]) / b_mean
    ratio = a_mean / b_mean
    if paired:
        # d_s = u_s + v_s, written so that a side against itself gives exactly 0
        se2 = _sample_variance((a - ratio * b) @ scale) / len(a)
        df = len(a) - 1.0
    else:
        var_u = _sample_variance(a @ scale) / len(a)
        var_v = _sample_variance(b @ (scale * ratio)) / len(b)
        se2 = var_u + var_v
        denominator = var_u**2 / (len(a) - 1) + var_v**2 / (len(b) - 1)
        df = se2**2 / denominator if denominator > 0 else 1.0  # width 0 whatever df is
    half = float(stats.t.ppf((1.0 + level) / 2.0, df=df) * math.sqrt(se2))
    return estimate, estimate - half, estimate + half


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
