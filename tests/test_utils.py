import os
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


def test_pythonhashseed_is_not_set_at_run_time(monkeypatch):
    """Hash randomisation is fixed at interpreter start: setting it here would only pretend."""
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    seed_everything(1)
    assert "PYTHONHASHSEED" not in os.environ


@pytest.mark.parametrize("cuda", [True, False], ids=["cuda-available", "cpu-only"])
def test_cublas_is_made_deterministic_only_where_cuda_is_used(monkeypatch, cuda):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    seed_everything(1)
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == (":4096:8" if cuda else None)


def test_a_cublas_setting_of_the_reader_is_kept(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    seed_everything(1)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_deterministic_algorithms_only_when_asked():
    was = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    try:
        torch.use_deterministic_algorithms(False)
        seed_everything(1)
        assert not torch.are_deterministic_algorithms_enabled()
        seed_everything(1, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(was[0])
        torch.backends.cudnn.benchmark = was[1]


def test_a_bool_is_not_a_seed():
    with pytest.raises(ValueError, match="non-negative integer"):
        seed_everything(True)
