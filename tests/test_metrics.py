import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import r2_score as sk_r2

from mtlcourse import metrics
from mtlcourse.tasks import Task


def test_regression_errors_on_a_hand_case():
    pred, target = [1.0, 2.0, 4.0], [1.0, 0.0, 1.0]  # errors 0, 2, 3
    assert metrics.mse(pred, target) == pytest.approx(13 / 3)
    assert metrics.rmse(pred, target) == pytest.approx((13 / 3) ** 0.5)
    assert metrics.mae(pred, target) == pytest.approx(5 / 3)


def test_r2_correlation_ignores_bias_and_scale_while_r2_score_does_not():
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    assert metrics.r2_correlation(2 * y + 5, y) == pytest.approx(1.0)
    assert metrics.r2_score(2 * y + 5, y) < 0
    noisy = y + rng.normal(size=200)
    assert metrics.r2_score(noisy, y) == pytest.approx(sk_r2(y, noisy))
    assert metrics.r2_correlation(noisy, y) == pytest.approx(np.corrcoef(noisy, y)[0, 1] ** 2)


def test_bce_matches_torch_even_for_large_logits():
    z = torch.tensor([-50.0, -1.0, 0.0, 3.0, 80.0], dtype=torch.float64)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(z, y).item()
    assert metrics.bce(z, y) == pytest.approx(expected, rel=1e-12)


def test_accuracy_thresholds_logits_at_zero():
    assert metrics.accuracy([-2.0, 0.5, 3.0, -0.1], [0, 1, 0, 1]) == pytest.approx(0.5)


def test_roc_auc_hand_cases():
    y = [0, 0, 1, 1]
    assert metrics.roc_auc([0.1, 0.2, 0.8, 0.9], y) == 1.0
    assert metrics.roc_auc([0.9, 0.8, 0.2, 0.1], y) == 0.0
    assert metrics.roc_auc([0.5, 0.5, 0.5, 0.5], y) == 0.5
    # one of the four positive/negative pairs is out of order
    assert metrics.roc_auc([0.1, 0.6, 0.5, 0.9], y) == pytest.approx(3 / 4)


def test_bad_input_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="shape"):
        metrics.mse([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        metrics.mae([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="empty"):
        metrics.mse([], [])
    with pytest.raises(ValueError, match="both classes"):
        metrics.roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="constant"):
        metrics.r2_correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])


def test_report_lists_each_task_s_metrics():
    tasks = [Task("r", "regression"), Task("c", "binary")]
    outputs = {"r": torch.tensor([1.0, 2.0, 3.5]), "c": torch.tensor([-1.0, 2.0, 0.5])}
    targets = {"r": torch.tensor([1.0, 2.0, 3.0]), "c": torch.tensor([0.0, 1.0, 0.0])}
    table = metrics.report(tasks, outputs, targets)
    assert isinstance(table, pd.DataFrame)
    assert table.set_index(["task", "metric"]).loc[("r", "MSE"), "value"] == pytest.approx(0.25 / 3)
    assert table.set_index(["task", "metric"]).loc[("c", "Accuracy"), "value"] == pytest.approx(2 / 3)
    assert list(table["task"].unique()) == ["r", "c"]


def test_gradient_cosine_matches_pairwise_cosine_similarity():
    generator = torch.Generator().manual_seed(0)
    J = torch.randn(4, 50, generator=generator)
    C = metrics.gradient_cosine(J)
    for i in range(4):
        for j in range(4):
            expected = torch.nn.functional.cosine_similarity(J[i], J[j], dim=0).double()
            torch.testing.assert_close(C[i, j], expected, atol=1e-6, rtol=0)


def test_gradient_cosine_sign_tells_conflict_and_ignores_scale():
    J = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [2.0, 2.0]])
    C = metrics.gradient_cosine(J)
    assert C[0, 1] < 0 < C[0, 2]
    torch.testing.assert_close(metrics.gradient_cosine(J * torch.tensor([[1e-6], [1.0], [1e6]])), C)


def test_gradient_cosine_rejects_a_non_matrix():
    with pytest.raises(ValueError, match=r"shape \(m, n\)"):
        metrics.gradient_cosine(torch.zeros(3))
