import pytest
import torch

from mtlcourse.models import (
    MultiTaskModel,
    MultiTaskNetwork,
    count_parameters,
    hard_sharing_mlp,
    mlp,
    r_post_model,
)


def test_r_post_model_has_192_parameters_split_as_in_the_post():
    model = r_post_model()
    assert count_parameters(model) == 192
    assert [count_parameters(layer) for layer in model.trunk if isinstance(layer, torch.nn.Linear)] == [
        60,
        110,
    ]
    assert {name: count_parameters(head) for name, head in model.heads.items()} == {
        "regression": 11,
        "classification": 11,
    }


def test_forward_returns_one_squeezed_output_per_task_and_the_features():
    model = hard_sharing_mlp(5, [8, 6], {"a": 1, "b": 3})
    outputs, features = model(torch.randn(7, 5), return_features=True)
    assert outputs["a"].shape == (7,)
    assert outputs["b"].shape == (7, 3)
    assert features.shape == (7, 6)


def test_heads_read_the_shared_features():
    model = hard_sharing_mlp(5, [8], {"a": 1})
    x = torch.randn(4, 5)
    outputs, features = model(x, return_features=True)
    torch.testing.assert_close(outputs["a"], model.heads["a"](features).squeeze(-1))


def test_shared_and_task_parameters_partition_the_model():
    model = r_post_model()
    shared = {id(p) for p in model.shared_parameters()}
    per_task = [{id(p) for p in ps} for ps in model.task_parameters().values()]
    assert shared.isdisjoint(set.union(*per_task))
    assert per_task[0].isdisjoint(per_task[1])
    assert shared | set.union(*per_task) == {id(p) for p in model.parameters()}


def test_trunk_ends_with_relu_unless_asked_not_to():
    assert isinstance(mlp([3, 4])[-1], torch.nn.ReLU)
    assert isinstance(mlp([3, 4], final_activation=False)[-1], torch.nn.Linear)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="at least one head"):
        MultiTaskModel(torch.nn.Identity(), {})
    with pytest.raises(ValueError, match="at least an input and an output"):
        mlp([3])


def test_hard_sharing_is_a_multi_task_network_without_penalty():
    model = r_post_model()
    assert isinstance(model, MultiTaskNetwork)
    assert model.penalty() is None


def test_the_base_class_asks_subclasses_for_the_protocol():
    network = MultiTaskNetwork()
    for call in (lambda: network.task_names, network.shared_parameters, network.task_parameters):
        with pytest.raises(NotImplementedError):
            call()
    with pytest.raises(NotImplementedError):
        network(torch.zeros(1, 2))
