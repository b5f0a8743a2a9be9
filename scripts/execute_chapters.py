"""Run chapter notebooks top to bottom in a fresh kernel and store their outputs, timings and versions.

This is how a chapter's stored outputs are made: ``make execute`` (every chapter) or
``make execute NB=chapters/04_pcgrad.ipynb``. It runs one CPU thread, the kernel of the current
environment and the chapters folder as working directory. Besides the outputs, it records in the
notebook's metadata when it ran and the versions of the packages it ran with; the book's status page
and ``tests/test_chapters.py`` read them back.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

# The packages whose versions can change a stored output.
PACKAGES = ["mtlcourse", "torch", "numpy", "pandas", "scikit-learn", "matplotlib", "seaborn", "torchjd"]


CPU_ENV = Path(__file__).with_name("cpu.env")


def cpu_pins() -> dict[str, str]:
    """The kernel choices of ``scripts/cpu.env`` (``NAME = value`` lines), which the Makefile pins too."""
    pins = {}
    for line in CPU_ENV.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, value = (part.strip() for part in line.split("=", 1))
            pins[name] = value
    return pins


def installed_versions() -> dict[str, str]:
    """Python's version and each of ``PACKAGES`` that is installed."""
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def coalesce_streams(notebook: nbformat.NotebookNode) -> None:
    """Join consecutive stdout (or stderr) outputs of a cell, so that how the kernel happened to flush
    a stream does not show up as a change of the stored notebook."""
    for cell in notebook.cells:
        merged = []
        for output in cell.get("outputs", []):
            previous = merged[-1] if merged else None
            if (
                output.output_type == "stream"
                and previous is not None
                and previous.output_type == "stream"
                and previous.name == output.name
            ):
                previous.text += output.text
            else:
                merged.append(output)
        if "outputs" in cell:
            cell.outputs = merged


def execute(path: Path, timeout: int = 600) -> float:
    notebook = nbformat.read(path, as_version=4)
    started = datetime.now(timezone.utc)
    NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    coalesce_streams(notebook)
    notebook.metadata["mtlcourse"] = {
        "executed_with": installed_versions(),
        "executed_at": started.isoformat(timespec="seconds"),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu_pins": {name: os.environ.get(name) for name in cpu_pins()},
    }
    nbformat.write(notebook, path)
    return (datetime.now(timezone.utc) - started).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every chapters/*.ipynb")
    notebooks = parser.parse_args().notebooks or sorted(Path("chapters").glob("*.ipynb"))
    os.environ.update(cpu_pins())  # inherited by the kernel: the same settings as `make test`
    os.environ["MTLCOURSE_NO_PROGRESS"] = "1"  # no progress bar in the stored outputs (as `make test`)
    for path in notebooks:
        seconds = execute(path)
        print(f"{path}: {seconds:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
