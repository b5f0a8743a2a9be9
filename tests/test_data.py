import math

import pytest
import torch

from mtlcourse.data import TaskData, regression_classification, sin_cos, task_clusters


@pytest.fixture(scope="module")
def splits():
    return regression_classification()


def test_split_sizes_follow_the_r_post(splits):
    # 70/30 split of 1000 rows, then 20 % of the 700 training rows held out
    assert (len(splits.train), len(splits.val), len(splits.test)) == (560, 140, 300)


def test_splits_are_disjoint_and_cover_every_row(splits):
    rows = torch.cat([splits.train.x, splits.val.x, splits.test.x])
    assert torch.unique(rows, dim=0).shape[0] == 1000


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (
        regression_classification(seed=1),
        regression_classification(seed=1),
        regression_classification(seed=2),
    )
    assert torch.equal(a.train.x, b.train.x)
    assert not torch.equal(a.train.x, c.train.x)


def test_regression_coefficients_are_recovered_by_least_squares():
    data = regression_classification(n=20_000, seed=0).train
    x = torch.cat([data.x, torch.ones(len(data), 1)], dim=1).double()
    coef = torch.linalg.lstsq(x, data.targets["regression"].double()[:, None]).solution.squeeze()
    # noise sd 0.2 on ~11k rows: the standard error of each coefficient is ~0.002
    torch.testing.assert_close(
        coef, torch.tensor([0.7, 0.3, -0.5, 0.0, 0.0, 0.0], dtype=torch.float64), atol=0.01, rtol=0
    )
    residual = data.targets["regression"] - (x.float() @ coef.float())
    assert residual.std().item() == pytest.approx(0.2, rel=0.05)


def test_classification_target_is_the_stated_linear_rule(splits):
    for part in (splits.train, splits.val, splits.test):
        x = part.x
        expected = (0.8 * x[:, 0] - 0.4 * x[:, 3] + 0.6 * x[:, 4] > 0).float()
        assert torch.equal(part.targets["classification"], expected)


def test_nonlinear_target_is_a_balanced_disc():
    data = regression_classification(n=20_000, seed=0, nonlinear=True).train
    x = data.x
    assert torch.equal(
        data.targets["classification"], (x[:, 0] ** 2 + x[:, 3] ** 2 < 2 * math.log(2)).float()
    )
    assert data.targets["classification"].mean().item() == pytest.approx(0.5, abs=0.02)


def test_test_rows_are_the_last_thirty_percent():
    gen = torch.Generator().manual_seed(123)
    x = torch.randn(1000, 5, generator=gen)
    assert torch.equal(regression_classification(seed=123).test.x, x[700:])


@pytest.mark.parametrize("kwargs", [{"n": 3}, {"test_fraction": 1.0}, {"val_fraction": 0.0}])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        regression_classification(**kwargs)


def test_task_data_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="'y' has 3 rows but x has 4"):
        TaskData(torch.zeros(4, 2), {"y": torch.zeros(3)})


def test_task_data_refuses_nan_targets():
    with pytest.raises(ValueError, match="'y' contains NaN"):
        TaskData(torch.zeros(2, 2), {"y": torch.tensor([0.0, float("nan")])})


def test_task_data_needs_a_target():
    with pytest.raises(ValueError, match="at least one task"):
        TaskData(torch.zeros(2, 2), {})


def test_sin_cos_targets_are_the_functions_of_the_input():
    splits = sin_cos(seed=3, cos_scale=10.0)
    for part in (splits.train, splits.val, splits.test):
        x = part.x[:, 0]
        torch.testing.assert_close(part.targets["sin"], torch.sin(x))
        torch.testing.assert_close(part.targets["cos"], 10 * torch.cos(x))


def test_sin_cos_inputs_cover_the_interval_and_nothing_else():
    splits = sin_cos(n_train=5000)
    x = splits.train.x
    assert x.shape == (5000, 1)
    assert -2 * math.pi <= x.min().item() < -2 * math.pi + 0.05
    assert 2 * math.pi - 0.05 < x.max().item() <= 2 * math.pi


def test_sin_cos_noise_has_the_requested_spread():
    splits = sin_cos(n_train=20_000, noise=0.3)
    residual = splits.train.targets["sin"] - torch.sin(splits.train.x[:, 0])
    assert residual.std().item() == pytest.approx(0.3, rel=0.03)


def test_sin_cos_splits_are_independent_draws():
    splits = sin_cos()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1000, 250, 500)
    assert not torch.isin(splits.test.x, splits.train.x).any()


@pytest.mark.parametrize("kwargs", [{"low": 1.0, "high": 1.0}, {"n_val": 0}, {"noise": -0.1}])
def test_sin_cos_refuses_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        sin_cos(**kwargs)


def test_task_clusters_tasks_of_a_cluster_share_a_subspace_and_clusters_are_orthogonal():
    """Stein's lemma: for x ~ N(0, I), E[x f(Vx)] = V^T E[grad f], so the least-squares coefficients
    of a target on x lie in its cluster's subspace. Three tasks of a rank-2 cluster give three
    coefficient vectors of rank 2; two clusters give orthogonal ones."""
    splits = task_clusters(n_test=40000, clusters=(3, 2), in_features=6, rank=2, seed=3)
    x, y = splits.test.x.double(), splits.test.targets
    assert list(y) == ["a1", "a2", "a3", "b1", "b2", "noise"]
    beta = {k: torch.linalg.lstsq(x, v.double().unsqueeze(1)).solution[:, 0] for k, v in y.items()}
    a = torch.stack([beta[k] / beta[k].norm() for k in ("a1", "a2", "a3")], 1)
    b = torch.stack([beta[k] / beta[k].norm() for k in ("b1", "b2")], 1)
    singular = torch.linalg.svdvals(a)
    assert singular[2] < 0.03 * singular[0]  # rank 2 (sampling error only)
    assert singular[1] > 0.1 * singular[0]  # and not rank 1: the tasks differ
    assert (a.T @ b).abs().max() < 0.03
    assert torch.equal(y["noise"], torch.zeros_like(y["noise"]))


def test_task_clusters_noise_level_and_noiseless_test():
    s = task_clusters(n_train=4000, n_test=4000, noise=0.5, clusters=(1,), in_features=2, seed=1)
    # same inputs law, targets of the train split = clean + noise of variance 0.25: compare variances
    var_train, var_test = s.train.targets["a1"].var().item(), s.test.targets["a1"].var().item()
    assert abs((var_train - var_test) - 0.25) < 0.04
    assert abs(s.train.targets["noise"].std().item() - 1.0) < 0.05


def test_task_clusters_refuses_bad_arguments():
    with pytest.raises(ValueError, match="in_features"):
        task_clusters(clusters=(2, 2, 2), rank=2, in_features=5)
    with pytest.raises(ValueError, match="clusters"):
        task_clusters(clusters=(2, 0))
    with pytest.raises(ValueError, match="noise"):
        task_clusters(noise=-1.0)
