"""Reproducibility and hardware: seeding every generator, picking the device."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

CUBLAS_WORKSPACE_CONFIG = ":4096:8"  # one of the two values that make cuBLAS deterministic (CUDA >= 10.2)


def seed_everything(seed: int, *, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and every CUDA device).

    Parameters
    ----------
    seed
        Any non-negative integer.
    deterministic
        Also ask PyTorch for deterministic algorithms (``torch.use_deterministic_algorithms(True)`` and
        ``torch.backends.cudnn.benchmark = False``): an operation without a deterministic implementation
        then raises ``RuntimeError``. By default this setting is left as it is: seeding alone makes a CPU run
        repeatable, but on a GPU some kernels (atomic adds, cuDNN's autotuned choices) still vary.

    Returns
    -------
    torch.Generator
        A fresh CPU generator seeded with ``seed``, for code that wants its own stream.

    Notes
    -----
    ``PYTHONHASHSEED`` is not set: Python fixes the hash of ``str`` and ``bytes`` when the interpreter
    starts, so setting it at run time changes nothing in this process (only in Python subprocesses started
    later). Set it in the shell if the iteration order of a ``set`` of strings matters.

    When CUDA is available, ``CUBLAS_WORKSPACE_CONFIG`` is set to ``":4096:8"`` (unless already set), which
    makes cuBLAS's matrix products deterministic (NVIDIA's cuBLAS documentation, "Results reproducibility";
    PyTorch requires it for ``use_deterministic_algorithms`` on CUDA). cuBLAS reads it when it first starts
    on the GPU, so call this before the first matrix product there. Nothing is set on a CPU-only machine.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
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
