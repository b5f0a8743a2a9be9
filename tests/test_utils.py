import random

import numpy as np
import pytest
import torch

from mtlcourse.utils import pick_device, seed_everything


def test_seeding_repeats_every_stream():
    seed_everything(7)
    first = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    seed_everything(7)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first  # noqa: NPY002


def test_returned_generator_is_seeded():
    assert torch.equal(
        torch.rand(3, generator=seed_everything(3)), torch.rand(3, generator=seed_everything(3))
    )


@pytest.mark.parametrize("seed", [-1, 1.5, "1"])
def test_bad_seed_is_refused(seed):
    with pytest.raises(ValueError, match="non-negative integer"):
        seed_everything(seed)


def test_device_is_cuda_exactly_when_available():
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
