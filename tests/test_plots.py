import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from mtlcourse.data import regression_classification
from mtlcourse.models import r_post_model
from mtlcourse.plots import plot_total_loss, training_dashboard
from mtlcourse.tasks import Task
from mtlcourse.training import fit, predict


@pytest.fixture(scope="module")
def figure():
    splits = regression_classification(n=300, seed=0)
    torch.manual_seed(0)
    model = r_post_model()
    tasks = [Task("regression", "regression"), Task("classification", "binary")]
    history = fit(model, tasks, splits.train, splits.val, epochs=20)
    fig = training_dashboard(history, predict(model, splits.test), splits.test.targets)
    yield fig, history
    plt.close(fig)


def test_dashboard_has_the_six_panels_of_the_post_with_the_two_task_curves(figure):
    fig, _ = figure
    assert len(fig.axes) == 7  # six panels, the per-task one faceted into two
    for ax in fig.axes:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), ax.get_title()


def test_best_epoch_line_is_at_the_epoch_fit_selected(figure):
    fig, history = figure
    ax = next(a for a in fig.axes if a.get_title().startswith("Total loss"))
    best_line = next(line for line in ax.get_lines() if line.get_label().startswith("best epoch"))
    assert best_line.get_xdata()[0] == history.loc[history["val_score"].idxmin(), "epoch"]


def test_best_epoch_line_without_fit_attributes_is_at_the_minimum_of_validation_loss(figure):
    _, history = figure
    bare = history.copy()
    bare.attrs = {}
    fig, ax = plt.subplots()
    plot_total_loss(bare, ax)
    best_line = next(line for line in ax.get_lines() if line.get_label().startswith("best epoch"))
    assert best_line.get_xdata()[0] == bare.loc[bare["val_total"].idxmin(), "epoch"]
    plt.close(fig)


def test_threshold_and_identity_lines_are_drawn(figure):
    fig, _ = figure
    probs = next(a for a in fig.axes if a.get_title().startswith("Classification"))
    assert any(list(line.get_xdata()) == [0.5, 0.5] for line in probs.get_lines())
    scatter = next(a for a in fig.axes if a.get_title().startswith("Regression"))
    identity = next(line for line in scatter.get_lines() if line.get_label() == "y = x")
    assert list(identity.get_xdata()) == list(identity.get_ydata())
