"""The benchmark runner: one run is one `fit`, tuning chooses on the mean over seeds, baselines per task."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from mtlcourse import metrics
from mtlcourse.benchmark import (
    Benchmark,
    map_runs,
    single_task,
    single_task_runs,
    sweep,
    train_and_score,
    tune,
    tune_all,
)
from mtlcourse.data import regression_classification
from mtlcourse.models import hard_sharing_mlp
from mtlcourse.tasks import Task
from mtlcourse.training import fit, predict
from mtlcourse.utils import seed_everything
from mtlcourse.weighting import StaticWeights

TASKS = (Task("regression", "regression"), Task("classification", "binary"))
METRICS = {"regression MSE": ("regression", "mse"), "classification accuracy": ("classification", "accuracy")}


def network(tasks):
    return hard_sharing_mlp(5, [6], {t.name: 1 for t in tasks})


@pytest.fixture(scope="module")
def bench() -> Benchmark:
    data = regression_classification(n=240, seed=3)
    return Benchmark("small", data, TASKS, network, METRICS, grid=[1e-3, 1e-2, 1e-1], epochs=40, patience=5)


def test_a_run_is_one_fit_scored_on_test_and_train(bench):
    record, history = train_and_score(bench, lambda m, seed: StaticWeights([0.3, 0.7]), 1e-2, seed=4)

    seed_everything(4)
    net = network(TASKS)
    expected = fit(
        net,
        list(TASKS),
        bench.data.train,
        bench.data.val,
        strategy=StaticWeights([0.3, 0.7]),
        epochs=40,
        optimizer=lambda groups: torch.optim.Adam(groups, lr=1e-2, foreach=True),
        patience=5,
        progress=False,
        seed=4,
    )
    pd.testing.assert_frame_equal(history, expected, rtol=1e-6)
    assert record["best_epoch"] == expected.attrs["best_epoch"]
    assert record["val_score"] == pytest.approx(expected["val_score"].min())
    assert record["epochs"] == len(expected)
    for split in ("test", "train"):
        part = getattr(bench.data, split)
        out = predict(net, part)
        mse = metrics.mse(out["regression"], part.targets["regression"])
        acc = metrics.accuracy(out["classification"], part.targets["classification"])
        assert record[f"{split} regression MSE"] == pytest.approx(mse, rel=1e-5)
        assert record[f"{split} classification accuracy"] == pytest.approx(acc, abs=1e-6)


def test_plateaued_says_whether_early_stopping_ended_the_run(bench):
    roomy = Benchmark("roomy", bench.data, TASKS, network, METRICS, grid=bench.grid, epochs=400, patience=5)
    stopped, history = train_and_score(roomy, lambda m, seed: None, 1e-1, seed=0)
    assert stopped["epochs"] < roomy.epochs and stopped["plateaued"]
    assert stopped["epochs"] - stopped["best_epoch"] == roomy.patience
    cut_short = Benchmark("short", bench.data, TASKS, network, METRICS, grid=bench.grid, epochs=8, patience=3)
    still_falling, history = train_and_score(cut_short, lambda m, seed: None, 3e-2, seed=0)
    assert history["val_score"].is_monotonic_decreasing
    assert not still_falling["plateaued"]


def test_tune_chooses_on_the_mean_of_the_first_seeds_and_trains_the_others_at_the_choice(bench):
    tuned = tune(bench, lambda m, seed: None, seeds=[0, 1, 2, 3], select_on=2)
    runs = tuned.runs
    tried = tuned.choice.table["lr"].tolist()
    grid_runs = runs[runs["seed"].isin([0, 1])]
    assert sorted(grid_runs["lr"].unique()) == pytest.approx(sorted(tried))
    assert len(grid_runs) == 2 * len(tried)
    means = grid_runs.groupby("lr")["val_score"].mean()
    assert tuned.choice.lr == means.idxmin()
    assert tuned.choice.table.set_index("lr")["score"].to_numpy() == pytest.approx(
        means.sort_index().to_numpy()
    )
    late = runs[runs["seed"].isin([2, 3])]
    assert (late["lr"] == tuned.choice.lr).all() and len(late) == 2
    assert tuned.chosen["seed"].tolist() == [0, 1, 2, 3]
    assert set(tuned.histories) == {(r.lr, r.seed) for r in runs.itertuples()}


def test_a_rate_that_diverges_scores_inf_instead_of_failing(bench):
    wild = Benchmark(
        "wild", bench.data, TASKS, network, METRICS, grid=[1e-2, 1e9, 1e20], epochs=20, patience=5
    )
    tuned = tune(wild, lambda m, seed: None, seeds=[0, 1], max_extensions=0)
    assert tuned.choice.lr == 1e-2
    assert np.isinf(tuned.choice.table.set_index("lr").loc[1e20, "score"])


def test_single_task_baselines_train_one_network_per_task(bench):
    baselines = single_task(bench, seeds=[0, 1], max_extensions=0)
    assert list(baselines) == ["regression", "classification"]
    for name, tuned in baselines.items():
        assert set(tuned.runs.filter(regex="^test ").columns) == {
            f"test {c}" for c, (task, _) in METRICS.items() if task == name
        }
    both = single_task_runs(baselines)
    assert both["seed"].tolist() == [0, 1]
    assert {f"test {c}" for c in METRICS} <= set(both.columns)
    alone, _ = train_and_score(
        bench.only("classification"), lambda m, seed: None, baselines["classification"].choice.lr, 1
    )
    assert both.loc[1, "test classification accuracy"] == alone["test classification accuracy"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metrics": {"x": ("nope", "mse")}}, "not among"),
        ({"metrics": {"x": ("regression", "r2")}}, "score must be one of"),
        ({"patience": 50}, "patience < epochs"),
        ({"tasks": (TASKS[0], TASKS[0])}, "distinct task names"),
    ],
)
def test_a_malformed_benchmark_is_refused(bench, change, message):
    fields = dict(name="x", data=bench.data, tasks=TASKS, network=network, metrics=METRICS, grid=bench.grid)
    with pytest.raises(ValueError, match=message):
        Benchmark(**{**fields, "epochs": 40, "patience": 5, **change})


def test_tune_needs_two_seeds_and_a_valid_selection(bench):
    with pytest.raises(ValueError, match="at least two distinct seeds"):
        tune(bench, lambda m, seed: None, seeds=[0])
    with pytest.raises(ValueError, match="select_on"):
        tune(bench, lambda m, seed: None, seeds=[0, 1], select_on=3)


def test_accuracy_of_a_regression_is_refused(bench):
    odd = Benchmark(
        "odd",
        bench.data,
        TASKS,
        network,
        {"r": ("regression", "accuracy")},
        grid=bench.grid,
        epochs=3,
        patience=1,
    )
    with pytest.raises(ValueError, match="regression"):
        train_and_score(odd, lambda m, seed: None, 1e-2, 0)


def test_sweep_chooses_the_setting_with_the_best_mean_validation_score(bench):
    settings = {w: (lambda m, seed, w=w: StaticWeights([w, 1 - w])) for w in (0.001, 0.5, 0.999)}
    best, runs = sweep(bench, settings, 1e-2, seeds=[0, 1, 2], select_on=2)
    first = runs[runs["seed"] < 2]
    assert len(first) == 6
    assert best == first.groupby("setting")["val_score"].mean().idxmin()
    assert runs[runs["seed"] == 2]["setting"].tolist() == [best]
    alone, _ = train_and_score(bench, settings[0.5], 1e-2, 1)
    assert runs.query("setting == 0.5 and seed == 1")["val_score"].item() == alone["val_score"]
    with pytest.raises(ValueError, match="select_on"):
        sweep(bench, settings, 1e-2, seeds=[0, 1], select_on=0)


def test_sweep_in_two_processes_equals_one_run_after_the_other(bench):
    short = replace(bench, epochs=12, patience=3)
    settings = {w: (lambda m, seed, w=w: StaticWeights([w, 1 - w])) for w in (0.2, 0.5, 0.8)}
    alone = sweep(short, settings, 1e-2, seeds=[0, 1, 2], select_on=2, processes=1)
    parallel = sweep(short, settings, 1e-2, seeds=[0, 1, 2], select_on=2, processes=2)
    assert parallel[0] == alone[0]
    assert parallel[1].equals(alone[1])


def _same_tuning(a, b) -> bool:
    return (
        (a.choice.lr, a.choice.extended, a.choice.bracketed)
        == (b.choice.lr, b.choice.extended, b.choice.bracketed)
        and a.choice.table.equals(b.choice.table)
        and a.runs.equals(b.runs)
        and a.histories.keys() == b.histories.keys()
        and all(a.histories[k].equals(b.histories[k]) for k in a.histories)
    )


@pytest.fixture(scope="module")
def jobs(bench):
    from mtlcourse.aggregation import UPGrad
    from mtlcourse.strategy import JacobianDescent
    from mtlcourse.weighting import RandomWeighting

    short = replace(bench, epochs=12, patience=3)
    return {
        "equal weights": (short, lambda m, seed: None),
        "RLW": (short, lambda m, seed: RandomWeighting(seed=seed)),
        "UPGrad": (short, lambda m, seed: JacobianDescent(UPGrad())),
        "single-task regression": (short.only("regression"), lambda m, seed: None),
    }


@pytest.fixture(scope="module")
def one_after_the_other(jobs):
    return {name: tune(b, strategy, [0, 1]) for name, (b, strategy) in jobs.items()}


def test_tune_all_in_two_processes_equals_tuning_one_job_after_the_other(jobs, one_after_the_other):
    parallel = tune_all(jobs, [0, 1], processes=2)
    assert list(parallel) == list(jobs)  # the order of the jobs, whatever finished first
    for name in jobs:
        assert _same_tuning(parallel[name], one_after_the_other[name]), name


def test_tune_all_with_one_process_is_tune(jobs, one_after_the_other):
    alone = tune_all(jobs, [0, 1], processes=1)
    assert all(_same_tuning(alone[name], one_after_the_other[name]) for name in jobs)


def test_map_runs_in_two_processes_keeps_the_order_and_the_results(bench):
    short = replace(bench, epochs=12, patience=3)

    def run(seed):  # a closure: the workers inherit it, nothing pickles it
        return train_and_score(short, lambda m, s: None, 1e-2, seed)[0]

    assert map_runs(run, [2, 0, 1], processes=2) == [run(2), run(0), run(1)]


def test_with_a_cuda_device_the_runs_stay_in_this_process(monkeypatch):
    # a forked child cannot use CUDA once the parent has probed for it (seen on an H200: "Cannot
    # re-initialize CUDA in forked subprocess"), and every chapter probes through pick_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert map_runs(lambda _: os.getpid(), [0, 1], processes=2) == [os.getpid()] * 2


def test_workers_draw_no_progress_bar(monkeypatch):
    """In a kernel, fit's bar is a widget on the kernel's sockets, which a forked worker must not use."""
    monkeypatch.delenv("MTLCOURSE_NO_PROGRESS", raising=False)
    assert map_runs(lambda _: os.environ.get("MTLCOURSE_NO_PROGRESS"), [0, 1], processes=2) == ["1", "1"]


def test_an_error_in_a_worker_reaches_the_caller(jobs):
    def broken(m, seed):
        raise RuntimeError("this strategy cannot be built")

    short, _ = jobs["equal weights"]
    with pytest.raises(RuntimeError, match="cannot be built"):
        tune_all({"broken": (short, broken), **jobs}, [0, 1], processes=2)
