"""Run every chapter on CUDA and check its results against the stored CPU run's.

``make gpu-check`` (every chapter) or ``make gpu-check NB=chapters/04_pcgrad.ipynb``; the kernel runs
in ``--python`` (``GPU_PYTHON``), an environment with a CUDA build of torch and the course installed.
``mtlcourse.utils.pick_device()`` returns CUDA there, so the chapters move by themselves. Without a
GPU (``torch.cuda.is_available()`` false in that environment) it says so and exits 0.

Two checks per chapter: (a) it runs top to bottom without an error; (b) every ``mean ± spread`` pair
that the stored CPU run printed (the tables of Chapters 1-9: a spread over seeds) has a counterpart
at the same place of the CUDA run's output (same cell, same order) and the two agree:

    |mean_cuda - mean_cpu| <= spread_cpu + spread_cuda + one unit of the last printed digit

that is, the two intervals overlap once rounding is allowed for. A GPU changes the order of floating
point sums, and over training that moves each seed's result by an amount like the seed-to-seed spread;
it does not change what the experiment measures. Two runs of the same experiment whose intervals do
not even overlap differ by more than seed noise: something other than rounding changed (an operation
that behaves differently on CUDA, a tensor left on the CPU). The rule is loose on purpose: it flags
what a reader would call a different result, not a different last digit. The CUDA runs are stored in
``_build/gpu-check`` for a look; nothing is written back to the chapters.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import nbformat
from notebook_kernel import CellFailure, run_cells, write_kernelspec

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build" / "gpu-check"

NUMBER = r"[-−]?\d+(?:\.\d+)?(?:[eE][-+−]?\d+)?"
PAIR = re.compile(rf"(?<![\w.])(?P<mean>{NUMBER})\s*±\s*(?P<spread>{NUMBER})")


@dataclass(frozen=True)
class Pair:
    """A printed ``mean ± spread``, with the size of one unit of its last printed digit."""

    mean: float
    spread: float
    unit: float
    line: str


def _unit(text: str) -> float:
    """One unit of the last printed digit of a number as printed: ``0.0448`` -> 1e-4, ``600`` -> 1."""
    return float(Decimal(1).scaleb(Decimal(text.replace("−", "-")).as_tuple().exponent))


def _float(text: str) -> float:
    return float(text.replace("−", "-"))


def pairs_in(text: str) -> list[Pair]:
    """Every ``mean ± spread`` in ``text``, in order, with the line it stands on."""
    found = []
    for line in text.splitlines():
        for match in PAIR.finditer(line):
            mean, spread = match.group("mean"), match.group("spread")
            unit = max(_unit(mean), _unit(spread))
            found.append(Pair(_float(mean), abs(_float(spread)), unit, line.strip()))
    return found


def output_text(cell: nbformat.NotebookNode) -> str:
    """What a cell printed or displayed as plain text (stderr left out: warnings differ by device)."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream" and output.name == "stdout":
            parts.append(output.text)
        elif output.output_type in {"execute_result", "display_data"}:
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def agree(cpu: Pair, cuda: Pair) -> bool:
    """Whether the two intervals overlap, allowing one unit of the last printed digit for rounding."""
    return abs(cuda.mean - cpu.mean) <= cpu.spread + cuda.spread + max(cpu.unit, cuda.unit)


def compare(stored: nbformat.NotebookNode, cuda: nbformat.NotebookNode) -> list[str]:
    """Every pair of the stored run that the CUDA run does not reproduce, as messages."""
    problems = []
    for index, (before, after) in enumerate(zip(stored.cells, cuda.cells, strict=True)):
        if before.cell_type != "code":
            continue
        old, new = pairs_in(output_text(before)), pairs_in(output_text(after))
        if len(old) != len(new):
            problems.append(f"cell {index}: {len(old)} mean ± spread pairs stored, {len(new)} on CUDA")
            continue
        for cpu, gpu in zip(old, new, strict=True):
            if not agree(cpu, gpu):
                problems.append(
                    f"cell {index}: CPU {cpu.mean:g} ± {cpu.spread:g}, CUDA {gpu.mean:g} ± {gpu.spread:g}"
                    f" (CPU line: {cpu.line!r}; CUDA line: {gpu.line!r})"
                )
    return problems


def cuda_available(python: str) -> bool:
    """Whether torch sees a CUDA device in the environment of ``python``."""
    probe = "import torch; print(torch.cuda.is_available())"
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    return result.stdout.strip() == "True"


def check_chapter(path: Path, kernels: Path) -> list[str]:
    """Run one chapter on CUDA, store the run in ``_build/gpu-check`` and compare it; its problems."""
    stored = nbformat.read(path, as_version=4)
    cuda = nbformat.read(path, as_version=4)
    seconds = run_cells(cuda, path, kernels, path.parent)
    nbformat.write(cuda, BUILD / path.name)
    problems = compare(stored, cuda)
    pairs = sum(len(pairs_in(output_text(cell))) for cell in stored.cells if cell.cell_type == "code")
    verdict = f"{len(problems)} of {pairs} pairs outside" if pairs else "no mean ± spread pairs: ran only"
    print(f"{path}: {seconds:.1f} s on CUDA, {verdict}", flush=True)
    for problem in problems:
        print(f"  {problem}", flush=True)
    return [f"{path}: {problem}" for problem in problems]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every chapters/*.ipynb")
    parser.add_argument("--python", default=sys.executable, help="the kernel's interpreter (CUDA torch)")
    args = parser.parse_args(argv)
    if not cuda_available(args.python):
        print(f"gpu-check skipped: no CUDA device (torch.cuda.is_available() is False in {args.python})")
        return 0
    notebooks = args.notebooks or sorted((ROOT / "chapters").glob("*.ipynb"))
    BUILD.mkdir(parents=True, exist_ok=True)
    # absolute: the kernel starts in chapters/, where a relative path such as .venv/bin/python breaks
    python = Path(args.python).absolute() if "/" in args.python else Path(args.python)
    kernels = write_kernelspec(BUILD, python)
    problems = []
    for path in notebooks:
        try:
            problems += check_chapter(path, kernels)
        except CellFailure as failure:
            print(f"  FAILED: {failure}", flush=True)
            problems.append(str(failure))
    for problem in problems:
        print(f"PROBLEM {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
