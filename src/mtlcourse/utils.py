"""Reproducibility and hardware: seeding every generator, picking the device."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and every CUDA device).

    Parameters
    ----------
    seed
        Any non-negative integer.

    Returns
    -------
    torch.Generator
        A fresh CPU generator seeded with ``seed``, for code that wants its own stream.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- seeding the global stream is the point
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def pick_device() -> torch.device:
    """Return ``cuda`` when a GPU is available, else ``cpu``.

    The chapters call this once and move models and tensors with ``.to(device)``;
    nothing else in the course is tied to a device.
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
