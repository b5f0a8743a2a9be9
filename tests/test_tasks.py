import pytest
import torch
import torch.nn.functional as F

from mtlcourse.tasks import Task


def test_regression_loss_is_mean_squared_error():
    out, y = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 0.0, 1.0])
    assert Task("r", "regression").loss(out, y).item() == pytest.approx((0 + 4 + 9) / 3)


def test_binary_loss_is_bce_on_logits():
    z, y = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
    expected = (torch.log(torch.tensor(2.0)) + torch.log1p(torch.exp(torch.tensor(2.0)))) / 2
    assert Task("c", "binary").loss(z, y).item() == pytest.approx(expected.item())


def test_multiclass_loss_is_cross_entropy():
    z, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    assert Task("d", "multiclass").loss(z, y).item() == pytest.approx(F.cross_entropy(z, y).item())


def test_accuracy_by_kind():
    assert Task("r", "regression").accuracy(torch.zeros(2), torch.zeros(2)) is None
    assert Task("c", "binary").accuracy(
        torch.tensor([-1.0, 3.0, 2.0]), torch.tensor([0.0, 1.0, 0.0])
    ) == pytest.approx(2 / 3)
    z = torch.tensor([[0.0, 1.0], [2.0, 1.0]])
    assert Task("d", "multiclass").accuracy(z, torch.tensor([1, 1])) == pytest.approx(0.5)


def test_unknown_kind_and_shape_mismatch_are_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        Task("x", "ranking")
    with pytest.raises(ValueError, match=r"output shape \(3, 1\) differs from target shape \(3,\)"):
        Task("r", "regression").loss(torch.zeros(3, 1), torch.zeros(3))


def test_r2_is_the_coefficient_of_determination():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert Task("r", "regression").r2(y, y) == pytest.approx(1.0)
    assert Task("r", "regression").r2(torch.full((4,), 2.5), y) == pytest.approx(0.0)
    # residuals 1, 0, 0, 1 against a total sum of squares of 5
    assert Task("r", "regression").r2(torch.tensor([2.0, 2.0, 3.0, 3.0]), y) == pytest.approx(1 - 2 / 5)
    assert Task("c", "binary").r2(y, y) is None
