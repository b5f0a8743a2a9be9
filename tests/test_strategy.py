import pytest
import torch

from mtlcourse.aggregation import MGDA, Mean, UPGrad
from mtlcourse.data import regression_classification
from mtlcourse.models import r_post_model
from mtlcourse.strategy import JacobianDescent
from mtlcourse.tasks import Task
from mtlcourse.training import fit, task_losses

TASKS = [Task("regression", "regression"), Task("classification", "binary")]


def _grads_after(strategy, seed=0):
    torch.manual_seed(seed)
    model = r_post_model()
    data = regression_classification(n=200, seed=seed).train
    losses, _, features = task_losses(model, TASKS, data.x, data.targets)
    weights = strategy(losses, model, features)
    return model, weights, losses


def test_mean_aggregation_is_the_mean_loss_on_the_trunk_and_each_loss_on_its_head():
    model, weights, _ = _grads_after(JacobianDescent(Mean()).backward)
    torch.manual_seed(0)
    reference = r_post_model()
    data = regression_classification(n=200, seed=0).train
    losses, _, _ = task_losses(reference, TASKS, data.x, data.targets)
    shared = torch.autograd.grad(losses.mean(), reference.shared_parameters(), retain_graph=True)
    heads = [
        torch.autograd.grad(losses[i], list(h.parameters()), retain_graph=True)
        for i, h in enumerate(reference.heads.values())
    ]
    for p, g in zip(model.shared_parameters(), shared, strict=True):
        torch.testing.assert_close(p.grad, g)
    for head, expected in zip(model.heads.values(), heads, strict=True):
        for p, g in zip(head.parameters(), expected, strict=True):
            torch.testing.assert_close(p.grad, g)
    torch.testing.assert_close(weights, torch.full((2,), 0.5))


@pytest.mark.parametrize("aggregator", [UPGrad(), MGDA()], ids=repr)
def test_trunk_update_does_not_conflict_with_any_task(aggregator):
    torch.manual_seed(0)
    model = r_post_model()
    data = regression_classification(n=200, seed=0).train
    losses, _, features = task_losses(model, TASKS, data.x, data.targets)
    rows = [torch.autograd.grad(loss, model.shared_parameters(), retain_graph=True) for loss in losses]
    JacobianDescent(aggregator).backward(losses, model, features)
    update = torch.cat([p.grad.flatten() for p in model.shared_parameters()])
    for row in rows:
        assert torch.cat([g.flatten() for g in row]) @ update >= -1e-7 * update.norm()


def test_fit_trains_with_jacobian_descent_and_records_the_aggregator_weights():
    torch.manual_seed(0)
    splits = regression_classification(n=300, seed=0)
    history = fit(
        r_post_model(), TASKS, splits.train, splits.val, strategy=JacobianDescent(UPGrad()), epochs=100
    )
    assert history["train_total"].iloc[-1] < 0.5 * history["train_total"].iloc[0]
    weights = history[["weight_regression", "weight_classification"]].to_numpy()
    assert (weights > 0).all()


def test_repr_names_the_aggregator():
    assert repr(JacobianDescent(UPGrad())) == "JacobianDescent(UPGrad())"
