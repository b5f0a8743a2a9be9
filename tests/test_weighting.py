import pytest
import torch

from mtlcourse.models import r_post_model
from mtlcourse.weighting import StaticWeights, equal_weights


def _losses_of(model):
    x = torch.randn(8, 5)
    out, features = model(x, return_features=True)
    return torch.stack([out["regression"].pow(2).mean(), out["classification"].abs().mean()]), features


def test_static_weights_backpropagate_the_weighted_sum():
    torch.manual_seed(0)
    model = r_post_model()
    losses, features = _losses_of(model)
    expected = torch.autograd.grad(
        0.2 * losses[0] + 0.8 * losses[1], list(model.parameters()), retain_graph=True
    )
    w = StaticWeights([0.2, 0.8]).backward(losses, model, features)
    torch.testing.assert_close(w, torch.tensor([0.2, 0.8]))
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_named_weights_follow_the_model_s_task_order():
    torch.manual_seed(0)
    model = r_post_model()
    losses, _ = _losses_of(model)
    w = StaticWeights({"classification": 0.9, "regression": 0.1}).weights(losses, model)
    torch.testing.assert_close(w, torch.tensor([0.1, 0.9], dtype=torch.float64))


def test_equal_weights_are_one_over_m():
    assert equal_weights(4).weights(torch.zeros(4), r_post_model()).tolist() == [0.25] * 4


@pytest.mark.parametrize(
    ("weights", "message"),
    [([], "non-empty"), ([1.0, -0.5], "non-negative"), ([1.0, float("nan")], "finite")],
)
def test_bad_weights_are_refused(weights, message):
    with pytest.raises(ValueError, match=message):
        StaticWeights(weights)


def test_wrong_number_of_weights_is_named():
    with pytest.raises(ValueError, match="3 weights were given for 2 tasks"):
        StaticWeights([1.0, 1.0, 1.0]).weights(torch.zeros(2), r_post_model())


def test_weights_for_unknown_tasks_are_refused():
    with pytest.raises(ValueError, match="the model has"):
        StaticWeights({"regression": 0.5, "ranking": 0.5}).weights(torch.zeros(2), r_post_model())
