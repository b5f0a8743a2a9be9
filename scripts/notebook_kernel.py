"""Run a notebook cell by cell in a kernel of a chosen Python, naming the cell that fails.

Shared by ``scripts/colab_simulation.py`` (``make colab``) and ``scripts/gpu_check.py``
(``make gpu-check``): both run chapters in another environment than the one that drives them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

KERNEL_NAME = "chapter-run"


@dataclass
class CellFailure(Exception):
    """A cell that raised: the notebook, the cell's index in it, its first line and the error."""

    notebook: Path
    index: int
    first_line: str
    error: str

    def __str__(self) -> str:
        return f"{self.notebook}: cell {self.index} ({self.first_line!r}) failed: {self.error}"


def write_kernelspec(directory: Path, python: Path, env: dict[str, str] | None = None) -> Path:
    """Write a kernelspec that starts ``python -m ipykernel_launcher``; return the folder of kernels.

    Parameters
    ----------
    directory
        Where to write it; ``directory/kernels/chapter-run/kernel.json`` is created.
    python
        The interpreter of the kernel: the environment the notebook runs in.
    env
        Variables set in the kernel's environment on top of the caller's.
    """
    kernels = directory / "kernels"
    spec = kernels / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": KERNEL_NAME, "language": "python", "env": env or {}}
    (spec / "kernel.json").write_text(json.dumps(kernel, indent=1))
    return kernels


def first_line(cell: nbformat.NotebookNode) -> str:
    """The first non-empty line of a cell's source, for messages."""
    lines = [line for line in cell.source.splitlines() if line.strip()]
    return lines[0] if lines else ""


def _error_summary(error: CellExecutionError) -> str:
    name = getattr(error, "ename", "") or "error"
    value = getattr(error, "evalue", "") or str(error).strip().splitlines()[-1]
    return f"{name}: {value}"


def run_cells(
    notebook: nbformat.NotebookNode,
    path: Path,
    kernels: Path,
    cwd: Path,
    timeout: int = 1200,
) -> float:
    """Execute every code cell of ``notebook`` in order, in place; return the wall time in seconds.

    Parameters
    ----------
    notebook
        The notebook, read with nbformat; its outputs are replaced (nothing is written to disk).
    path
        The notebook's file, for messages.
    kernels
        A folder of kernelspecs from :func:`write_kernelspec`.
    cwd
        The kernel's working directory.
    timeout
        Seconds one cell may run.

    Raises
    ------
    CellFailure
        At the first cell that raises, naming it.
    """
    manager = KernelManager(
        kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)])
    )
    client = NotebookClient(
        notebook,
        km=manager,
        timeout=timeout,
        skip_cells_with_tag="",
        resources={"metadata": {"path": str(cwd)}},
    )
    started = time.perf_counter()
    try:
        with client.setup_kernel():
            for index, cell in enumerate(notebook.cells):
                try:
                    client.execute_cell(cell, index)
                except CellExecutionError as error:
                    raise CellFailure(path, index, first_line(cell), _error_summary(error)) from error
    finally:  # nbclient leaves a kernel it was handed running
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
    return time.perf_counter() - started
