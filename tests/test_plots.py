import matplotlib

matplotlib.use("Agg")

import itertools
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import same_color
from matplotlib.patches import FancyArrowPatch

from mtlcourse.data import regression_classification
from mtlcourse.models import hard_sharing_mlp, r_post_model
from mtlcourse.plots import plot_total_loss, sharing_diagram, training_dashboard
from mtlcourse.sharing import CrossStitch, MMoE, SoftSharing
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


# --- sharing_diagram ------------------------------------------------------------------------------------

ARCHITECTURES = ["Hard sharing", "Soft sharing", "Cross-stitch", "MMoE"]


@pytest.fixture(scope="module", params=[2, 3], ids=lambda m: f"m={m}")
def diagram(request):
    fig = sharing_diagram(request.param)
    fig.canvas.draw()
    yield fig, request.param
    plt.close(fig)


def _panels(fig):
    return dict(zip(ARCHITECTURES, fig.axes, strict=True))


def _models(m: int) -> dict:
    """The package's own modules for each panel, with the diagram's 3 experts and 2 hidden layers."""
    heads = {f"task {t + 1}": 1 for t in range(m)}
    return {
        "Hard sharing": hard_sharing_mlp(3, [4, 4], heads),
        "Soft sharing": SoftSharing(3, [4, 4], heads, strength=0.1),
        "Cross-stitch": CrossStitch(3, [4, 4], heads),
        "MMoE": MMoE(3, [4], heads, n_experts=3),
    }


def _key(fig) -> dict[str, tuple]:
    legend = fig.legends[0]
    return {
        text.get_text(): handle.get_facecolor()
        for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True)
    }


def test_four_panels_titled_in_order_with_axes_off(diagram):
    fig, _ = diagram
    assert [ax.get_title() for ax in fig.axes] == ARCHITECTURES
    assert not any(ax.axison for ax in fig.axes)


def test_every_panel_has_exactly_one_output_label_per_task(diagram):
    fig, m = diagram
    for title, ax in _panels(fig).items():
        labels = sorted(t.get_text() for t in ax.texts if re.fullmatch(r"task \d+", t.get_text()))
        assert labels == sorted(f"task {t + 1}" for t in range(m)), title


def test_colour_key_has_shared_and_one_distinct_colour_per_task(diagram):
    fig, m = diagram
    key = _key(fig)
    assert list(key) == ["shared parameters", *(f"task {t + 1} only" for t in range(m))]
    for a, b in itertools.combinations(key.values(), 2):
        assert not same_color(a, b)


def test_colours_agree_with_the_package_parameter_split(diagram):
    """A panel fills a box with the shared colour iff the module has shared parameters, and with task t's
    colour iff task t owns parameters (SoftSharing shares nothing; CrossStitch shares its columns)."""
    fig, m = diagram
    key = _key(fig)
    for title, model in _models(m).items():
        fills = [p.get_facecolor() for p in _panels(fig)[title].patches if not isinstance(p, FancyArrowPatch)]
        drawn = {label for label, colour in key.items() if any(same_color(colour, f) for f in fills)}
        expected = {"shared parameters"} if model.shared_parameters() else set()
        expected |= {f"{name} only" for name, params in model.task_parameters().items() if params}
        assert drawn == expected, title


def test_each_panel_draws_its_defining_parts(diagram):
    fig, m = diagram
    panels = _panels(fig)
    texts = {title: [t.get_text() for t in ax.texts] for title, ax in panels.items()}
    mmoe, cross = _models(m)["MMoE"], _models(m)["Cross-stitch"]
    assert sorted(t for t in texts["MMoE"] if t.startswith("gate")) == [f"gate {t + 1}" for t in range(m)]
    assert texts["MMoE"].count("Σ") == m  # one mix per task
    shared = _key(fig)["shared parameters"]
    experts = [
        p
        for p in panels["MMoE"].patches
        if not isinstance(p, FancyArrowPatch) and same_color(p.get_facecolor(), shared)
    ]
    assert len(experts) == len(mmoe.experts)
    assert texts["Cross-stitch"].count("α") == len(cross.alphas)  # one unit after every hidden layer
    if m == 2:
        assert "‖θ₁ − θ₂‖²" in texts["Soft sharing"]
    arrows = [a.arrow_patch for a in panels["Soft sharing"].texts if getattr(a, "arrow_patch", None)]
    dashed = [a for a in arrows if a.get_linestyle() == "--"]
    assert len(dashed) >= m - 1  # the penalty ties every column to its neighbour


def test_text_is_readable_and_never_overlaps(diagram):
    fig, _ = diagram
    renderer = fig.canvas.get_renderer()
    texts = [t for ax in fig.axes for t in (*ax.texts, ax.title)] + fig.legends[0].get_texts()
    texts = [t for t in texts if t.get_text()]
    assert min(t.get_fontsize() for t in texts) >= 9
    boxes = [t.get_window_extent(renderer) for t in texts]
    width, height = fig.canvas.get_width_height()
    for text, box in zip(texts, boxes, strict=True):
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, text.get_text()
    for (a, box_a), (b, box_b) in itertools.combinations(zip(texts, boxes, strict=True), 2):
        assert not box_a.overlaps(box_b), (a.get_text(), b.get_text())


def test_diagram_is_the_same_drawing_on_every_call():
    pixels = []
    for _ in range(2):
        fig = sharing_diagram()
        fig.canvas.draw()
        pixels.append(np.asarray(fig.canvas.buffer_rgba()).copy())
        plt.close(fig)
    np.testing.assert_array_equal(pixels[0], pixels[1])


@pytest.mark.parametrize("m", [1, 0, -2, 2.0, True, "2"])
def test_diagram_refuses_fewer_than_two_tasks_or_a_non_integer(m):
    with pytest.raises(ValueError, match="at least 2"):
        sharing_diagram(m)


def test_diagram_closes_cleanly():
    fig = sharing_diagram(np.int64(2))
    assert fig.number in plt.get_fignums()
    plt.close(fig)
    assert fig.number not in plt.get_fignums()
