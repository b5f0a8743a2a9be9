r"""The benchmark protocol of Chapter 9, run: tune each method's learning rate, train seeds, score them.

One function per step of :mod:`mtlcourse.protocol`, on a :class:`Benchmark` (data, tasks, network,
metrics and training budget), so that every method — loss weighting, gradient method, single-task
baseline — goes through exactly the same code:

- :func:`train_and_score`: one run (one method, one learning rate, one seed) with early stopping on
  ``fit``'s method-independent ``val_score``; returns its test *and* training metrics, so that a table
  can show both, and whether the validation curve had flattened (:func:`~mtlcourse.protocol.plateaued`);
- :func:`tune`: the learning rate chosen on the *mean* validation score over the first seeds
  (:func:`~mtlcourse.protocol.select_learning_rate`, extended until the grid brackets it), then the other
  seeds trained at it, every run kept;
- :func:`single_task`: the same for one network per task, the baselines of :math:`\Delta_m\%`;
- :func:`tune_all`: :func:`tune` for many methods at once, in worker processes (one per CPU core), with
  the same result as tuning them one after the other; :func:`map_runs`, the same for any independent runs.

The protocol follows the advice of Xin et al. (2022, "Do current multi-task optimization methods in deep
learning even help?", NeurIPS) and Kurin et al. (2022, "In defense of the unitary scalarization for deep
multi-task learning", NeurIPS): tune every method, equal weights included, with the same care.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from mtlcourse.data import Splits, TaskData
from mtlcourse.metrics import mse
from mtlcourse.models import MultiTaskNetwork
from mtlcourse.protocol import LearningRateChoice, plateaued, select_learning_rate
from mtlcourse.strategy import Strategy
from mtlcourse.tasks import Task
from mtlcourse.training import NO_PROGRESS, fit, predict
from mtlcourse.utils import seed_everything

SCORES = ("accuracy", "mse")
StrategyFactory = Callable[[int, int], Strategy | None]
"""``(number of tasks, seed) -> strategy``; ``None`` means equal weights (``fit``'s default)."""


@dataclass(frozen=True)
class Benchmark:
    """A data set, its tasks, the network to train and the budget: everything but the method.

    Parameters
    ----------
    name
        Shown in tables.
    data
        Train, validation and test splits.
    tasks
        The tasks, in the order of the model's heads.
    network
        ``tasks -> a fresh, randomly initialised network`` with one head per task; called after seeding,
        so the seed fixes the initialisation. Called with a single task for the single-task baselines.
    metrics
        Column name -> ``(task name, score)``, score ``"accuracy"`` (higher is better) or ``"mse"``
        (lower is better), computed on the test split and on the training split.
    grid
        Geometric learning-rate grid of Adam (see :func:`~mtlcourse.protocol.select_learning_rate`).
    epochs
        The most epochs a run may take; early stopping (``patience``) normally ends it first.
    patience
        Stop once ``fit``'s ``val_score`` has not improved for this many epochs; the best epoch's weights
        are kept.
    batch_size, clip_grad_norm
        Passed to :func:`~mtlcourse.training.fit` (``None``: full batch, no clipping).
    """

    name: str
    data: Splits
    tasks: tuple[Task, ...]
    network: Callable[[Sequence[Task]], MultiTaskNetwork]
    metrics: Mapping[str, tuple[str, str]]
    grid: Sequence[float]
    epochs: int = 1000
    patience: int = 30
    batch_size: int | None = None
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        names = [t.name for t in self.tasks]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"a benchmark needs distinct task names, got {names}")
        for column, (task, score) in self.metrics.items():
            if task not in names:
                raise ValueError(f"metric {column!r} scores task {task!r}, which is not among {names}")
            if score not in SCORES:
                raise ValueError(f"metric {column!r}: score must be one of {SCORES}, got {score!r}")
        if self.patience < 1 or self.epochs <= self.patience:
            raise ValueError(
                f"need 1 <= patience < epochs, got patience {self.patience}, epochs {self.epochs}"
            )

    @property
    def higher_is_better(self) -> dict[str, bool]:
        """Metric column -> ``True`` if a higher value is better (accuracy), ``False`` otherwise (MSE)."""
        return {column: score == "accuracy" for column, (_, score) in self.metrics.items()}

    def only(self, task: str) -> Benchmark:
        """The same benchmark restricted to one task (and the metrics of that task)."""
        kept = tuple(t for t in self.tasks if t.name == task)
        if not kept:
            raise ValueError(f"no task {task!r} in {[t.name for t in self.tasks]}")

        def one(part: TaskData) -> TaskData:
            return TaskData(part.x, {task: part.targets[task]})

        return replace(
            self,
            data=Splits(one(self.data.train), one(self.data.val), one(self.data.test)),
            tasks=kept,
            metrics={c: spec for c, spec in self.metrics.items() if spec[0] == task},
        )


def _score(task: Task, kind: str, output: torch.Tensor, target: torch.Tensor) -> float:
    if kind == "accuracy":
        value = task.accuracy(output, target)
        if value is None:
            raise ValueError(f"task {task.name!r} is a regression: it has no accuracy")
        return value
    return mse(output, target)


def train_and_score(
    bench: Benchmark, strategy: StrategyFactory, lr: float, seed: int
) -> tuple[dict, pd.DataFrame]:
    """Train one network with one method at one learning rate and seed; score it on test and train.

    The network is built after :func:`~mtlcourse.utils.seed_everything` (``seed``) and trained by
    :func:`~mtlcourse.training.fit` with Adam at ``lr`` (``seed`` also orders the mini-batches) until
    ``val_score`` — each task's validation loss over its value before training, summed — has not improved
    for ``bench.patience`` epochs; the weights of its best epoch are scored.

    Returns
    -------
    tuple
        A record — ``lr``, ``seed``, ``val_score`` (best), ``best_epoch``, ``epochs`` (run),
        ``plateaued`` (the validation curve flattened: :func:`~mtlcourse.protocol.plateaued` with a window
        of ``patience`` epochs, i.e. they improved on the best score by less than 1 %), then
        ``test <metric>`` and ``train <metric>`` for each metric — and the history of the run.
    """
    m = len(bench.tasks)
    seed_everything(seed)
    net = bench.network(bench.tasks)
    history = fit(
        net,
        bench.tasks,
        bench.data.train,
        bench.data.val,
        strategy=strategy(m, seed),
        epochs=bench.epochs,
        optimizer=lambda groups: torch.optim.Adam(groups, lr=lr, foreach=True),
        batch_size=bench.batch_size,
        clip_grad_norm=bench.clip_grad_norm,
        patience=bench.patience,
        progress=False,
        seed=seed,
    )
    finite = bool(np.isfinite(history["val_score"]).all())
    record = {
        "lr": lr,
        "seed": seed,
        "val_score": float(history["val_score"].min()) if finite else float("inf"),
        "best_epoch": history.attrs["best_epoch"],
        "epochs": len(history),
        "plateaued": finite and plateaued(history, window=bench.patience),
    }
    by_name = {t.name: t for t in bench.tasks}
    for split in ("test", "train"):
        part = getattr(bench.data, split)
        outputs = predict(net, part)
        for column, (task, kind) in bench.metrics.items():
            record[f"{split} {column}"] = _score(by_name[task], kind, outputs[task], part.targets[task])
    return record, history


@dataclass
class Tuned:
    """A method tuned by :func:`tune`: the learning-rate choice and every run behind it.

    Attributes
    ----------
    choice
        What :func:`~mtlcourse.protocol.select_learning_rate` chose; its ``table`` holds the mean
        validation score of each learning rate tried.
    runs
        One row per run (every learning rate tried × every seed), as returned by
        :func:`train_and_score`.
    histories
        ``(lr, seed) -> history`` of every run.
    """

    choice: LearningRateChoice
    runs: pd.DataFrame
    histories: dict[tuple[float, int], pd.DataFrame] = field(repr=False)

    @property
    def chosen(self) -> pd.DataFrame:
        """The runs at the chosen learning rate, one per seed."""
        return self.runs[self.runs["lr"] == self.choice.lr].sort_values("seed").reset_index(drop=True)


def tune(
    bench: Benchmark,
    strategy: StrategyFactory,
    seeds: Sequence[int],
    *,
    select_on: int | None = None,
    max_extensions: int = 2,
) -> Tuned:
    """Choose a method's learning rate on the mean validation score over seeds; train every seed at it.

    Every learning rate of ``bench.grid`` is trained with the first ``select_on`` seeds (default: all of
    them); the score of a learning rate is the mean over those seeds of the best ``val_score`` (a rate
    whose run diverges scores ``inf``). The grid is extended while the best rate sits at its edge (at most
    ``max_extensions`` points). The remaining seeds are then trained at the chosen rate only. A mean over
    seeds rather than one seed's score: on one seed, a rate that is unstable on the others can win. The
    test metrics of the chosen rate's runs are the method's results — the rate is chosen on validation
    only.
    """
    seeds = list(seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"tune needs at least two distinct seeds, got {seeds}")
    select_on = len(seeds) if select_on is None else select_on
    if not 1 <= select_on <= len(seeds):
        raise ValueError(f"select_on must be between 1 and {len(seeds)}, got {select_on}")
    records: list[dict] = []
    histories: dict[tuple[float, int], pd.DataFrame] = {}

    def train(lr: float, seed: int) -> float:
        try:
            record, history = train_and_score(bench, strategy, lr, seed)
        except FloatingPointError:  # the loss diverged: this rate is out
            record, history = {"lr": lr, "seed": seed, "val_score": float("inf")}, pd.DataFrame()
        records.append(record)
        histories[(lr, seed)] = history
        return record["val_score"]

    def score(lr: float) -> float:
        return float(np.mean([train(lr, seed) for seed in seeds[:select_on]]))

    choice = select_learning_rate(score, bench.grid, max_extensions=max_extensions)
    for seed in seeds[select_on:]:
        train(choice.lr, seed)
    return Tuned(choice, pd.DataFrame(records), histories)


def sweep(
    bench: Benchmark,
    strategies: Mapping[Hashable, StrategyFactory],
    lr: float,
    seeds: Sequence[int],
    *,
    select_on: int | None = None,
    processes: int | None = None,
) -> tuple[Hashable, pd.DataFrame]:
    """Train several settings of one method at one learning rate; the best on validation gets every seed.

    For a hyperparameter other than the learning rate, e.g. the weights of
    :class:`~mtlcourse.weighting.StaticWeights`: each of ``strategies`` (label -> factory) is trained
    with the first ``select_on`` seeds (default: all); the label with the lowest mean best ``val_score``
    is chosen and trained with the remaining seeds too. The runs are shared out among ``processes`` worker
    processes as in :func:`tune_all`, with the same result as training them one after the other.

    Returns
    -------
    tuple
        The chosen label, and one row per run (:func:`train_and_score`'s records with a ``setting``
        column).
    """
    seeds = list(seeds)
    select_on = len(seeds) if select_on is None else select_on
    if not strategies or not 1 <= select_on <= len(seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"sweep needs settings, distinct seeds and 1 <= select_on <= {len(seeds)}")

    def run(setting: tuple[Hashable, int]) -> dict:
        label, seed = setting
        return {"setting": label, **train_and_score(bench, strategies[label], lr, seed)[0]}

    records = map_runs(run, [(label, seed) for label in strategies for seed in seeds[:select_on]], processes)
    means = pd.DataFrame(records).groupby("setting", sort=False)["val_score"].mean()
    best = means.idxmin()
    records += map_runs(run, [(best, seed) for seed in seeds[select_on:]], processes)
    return best, pd.DataFrame(records)


def single_task(bench: Benchmark, seeds: Sequence[int], **kwargs) -> dict[str, Tuned]:
    """One network per task, each tuned like a method (:func:`tune`, equal weights of one task)."""
    return {t.name: tune(bench.only(t.name), lambda m, seed: None, seeds, **kwargs) for t in bench.tasks}


def single_task_runs(baselines: Mapping[str, Tuned]) -> pd.DataFrame:
    """The single-task baselines' chosen runs side by side: one row per seed, every metric column."""
    parts = [tuned.chosen.set_index("seed").filter(regex="^(test|train) ") for tuned in baselines.values()]
    return pd.concat(parts, axis=1).reset_index()


# The function of the running map_runs, read by its worker processes (inherited by fork, never pickled: it
# closes over strategy factories, which are usually lambdas). Only the items and results are pickled.
_CALL: Callable | None = None


def _worker_setup() -> None:
    """A forked worker: one thread (not the parent's pool), and no writing to the parent's streams —
    in a Jupyter kernel those are the kernel's sockets, which a forked process must not touch; so no
    progress bar either (in a kernel, ``fit``'s bar is a widget that talks to those sockets)."""
    torch.set_num_threads(1)
    sys.stdout = sys.stderr = open(os.devnull, "w")  # for the life of the worker
    os.environ[NO_PROGRESS] = "1"


def _call(item: object) -> object:
    return _CALL(item)


def map_runs(fn: Callable, items: Sequence, processes: int | None = None) -> list:
    """``[fn(item) for item in items]``, shared out among worker processes, one thread each.

    For independent training runs: each must seed itself (as :func:`train_and_score` does), so that its
    result does not depend on the process that trains it or on what ran before it there. ``fn`` may be a
    lambda or a closure (the workers inherit it by ``fork``); the items and the results must pickle.

    ``processes`` defaults to the number of CPU cores this process may use, at most one per item. With 1,
    on a platform without ``fork`` (Windows, macOS' default), or where a CUDA device is available, the items
    run one after the other in this process. (A forked worker cannot use CUDA once its parent has asked
    for the device: ``torch.cuda.is_available()``, which :func:`mtlcourse.utils.pick_device` calls, is
    enough. On an H200, Chapters 8 and 9 failed that way until this rule.)
    """
    if processes is None:
        processes = min(len(items), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    can_fork = "fork" in multiprocessing.get_all_start_methods() and not torch.cuda.is_available()
    if processes <= 1 or not can_fork:
        return [fn(item) for item in items]
    global _CALL
    _CALL = fn
    try:
        with multiprocessing.get_context("fork").Pool(processes, initializer=_worker_setup) as pool:
            return pool.map(_call, list(items), chunksize=1)
    finally:
        _CALL = None


def tune_all(
    jobs: Mapping[Hashable, tuple[Benchmark, StrategyFactory]],
    seeds: Sequence[int],
    *,
    select_on: int | None = None,
    max_extensions: int = 2,
    processes: int | None = None,
) -> dict[Hashable, Tuned]:
    """:func:`tune` every job — ``name -> (benchmark, strategy factory)`` — using every CPU core.

    Each run seeds itself (:func:`train_and_score`), so a run does not depend on which process trains it
    or on what ran before it there: the result equals ``{name: tune(bench, strategy, seeds, ...)}``, run
    by run (tested). A single-task baseline is a job too: ``(bench.only(task), lambda m, seed: None)``.

    Parameters
    ----------
    jobs
        What to tune; the result has the same keys, in the same order.
    seeds, select_on, max_extensions
        As for :func:`tune`.
    processes
        Worker processes, one thread each (default: one per CPU core this process may use). With 1, on a
        platform without ``fork`` (Windows, macOS' default), or where a CUDA device is available (see
        :func:`map_runs`), the jobs run one after the other in this process.
    """
    options = {"seeds": list(seeds), "select_on": select_on, "max_extensions": max_extensions}
    names = list(jobs)
    tuned = map_runs(lambda name: tune(*jobs[name], **options), names, processes)
    return dict(zip(names, tuned, strict=True))
