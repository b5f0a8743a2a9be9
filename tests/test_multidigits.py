import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from mtlcourse.data import multi_digits, multi_digits_indices

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def default():
    return multi_digits(seed=3), multi_digits_indices(seed=3)


def test_shapes_and_dtypes(default):
    splits, _ = default
    for split, n in zip(SPLITS, (4000, 1000, 1000), strict=True):
        data = getattr(splits, split)
        assert data.x.shape == (n, 144) and data.x.dtype == torch.float32
        assert 0 <= data.x.min() and data.x.max() <= 1
        assert data.task_names == ["left", "right"]
        for y in data.targets.values():
            assert y.shape == (n,) and y.dtype == torch.int64
            assert set(y.unique().tolist()) == set(range(10))
    images = multi_digits(10, 10, 10, flatten=False, offset=2).train.x
    assert images.shape == (10, 1, 10, 10) and images.dtype == torch.float32


def test_labels_are_balanced_within_ten_percent():
    # 20 000 pairs: a share's standard error is 0.002, the digits' own shares are 9.7-10.2 %
    splits = multi_digits(20_000, 20_000, 20_000, seed=0)
    for split in SPLITS:
        for task, y in getattr(splits, split).targets.items():
            share = torch.bincount(y, minlength=10).double() / len(y)
            assert ((share - 0.1).abs() <= 0.01).all(), (split, task, share)


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (
        multi_digits(50, 20, 20, seed=1),
        multi_digits(50, 20, 20, seed=1),
        multi_digits(50, 20, 20, seed=2),
    )
    for split in SPLITS:
        assert torch.equal(getattr(a, split).x, getattr(b, split).x)
        assert not torch.equal(getattr(a, split).x, getattr(c, split).x)
    assert torch.equal(
        multi_digits_indices(50, 20, 20, seed=1)["test"], multi_digits_indices(50, 20, 20, seed=1)["test"]
    )


def test_indices_match_the_builder_and_labels(default, digits):
    splits, indices = default
    for split in SPLITS:
        data, pairs = getattr(splits, split), indices[split].numpy()
        assert pairs.shape == (len(data), 2)
        assert (pairs[:, 0] != pairs[:, 1]).all()  # two different images
        np.testing.assert_array_equal(data.targets["left"].numpy(), digits.target[pairs[:, 0]])
        np.testing.assert_array_equal(data.targets["right"].numpy(), digits.target[pairs[:, 1]])


def test_canvas_is_built_from_sklearn_raw_images(default, digits):
    splits, indices = default
    x = splits.test.x.reshape(-1, 12, 12).numpy()
    left = digits.images[indices["test"][:, 0].numpy()] / 16
    right = digits.images[indices["test"][:, 1].numpy()] / 16
    # where the digits do not overlap, each is copied unchanged
    np.testing.assert_array_equal(x[:, :4, :4], left[:, :4, :4])
    np.testing.assert_array_equal(x[:, 8:, 8:], right[:, 4:, 4:])
    # everywhere: the pixel-wise maximum of the two padded digits
    canvas = np.zeros_like(x)
    canvas[:, :8, :8] = left
    canvas[:, 4:, 4:] = np.maximum(canvas[:, 4:, 4:], right)
    np.testing.assert_array_equal(x, canvas)


@pytest.mark.parametrize("offset", [1, 8])
def test_other_offsets(offset, digits):
    splits = multi_digits(30, 5, 5, seed=4, offset=offset, flatten=False)
    pairs = multi_digits_indices(30, 5, 5, seed=4)["train"].numpy()
    side = 8 + offset
    x = splits.train.x[:, 0].numpy()
    assert x.shape == (30, side, side)
    np.testing.assert_array_equal(x[:, :offset, :8], digits.images[pairs[:, 0], :offset] / 16)
    np.testing.assert_array_equal(x[:, 8:, offset:], digits.images[pairs[:, 1], 8 - offset :] / 16)


def test_no_test_image_in_training_or_validation_pairs():
    # many pairs, so that (almost surely) every image of every pool is used
    indices = multi_digits_indices(20_000, 20_000, 20_000, seed=5)
    used = {split: set(indices[split].flatten().tolist()) for split in SPLITS}
    assert used["test"].isdisjoint(used["train"]) and used["test"].isdisjoint(used["val"])
    assert used["val"].isdisjoint(used["train"])
    assert used["train"] | used["val"] | used["test"] == set(range(1797))
    # stratified pools of 20 / 20 / 60 % of the images
    assert abs(len(used["test"]) - 0.2 * 1797) <= 5 and abs(len(used["val"]) - 0.2 * 1797) <= 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_train": 0},
        {"n_test": -1},
        {"val_fraction": 0.0},
        {"test_fraction": 1.0},
        {"val_fraction": 0.5, "test_fraction": 0.5},
        {"val_fraction": 0.001},  # a class would have no validation image
        {"offset": 0},
        {"offset": 9},
        {"offset": 2.5},
    ],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        multi_digits(**kwargs)
