"""The chapters as files: every one opens on Colab with the book's release of the package."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

import mtlcourse

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
# Back-matter pages written as notebooks (book/own_problem.ipynb): stored executed and checked like a chapter.
BACK_MATTER = sorted((ROOT / "book").glob("*.ipynb"))
NOTEBOOKS = CHAPTERS + BACK_MATTER


def _toc_chapters() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    entries = [e for part in toc["parts"] for c in part["chapters"] for e in (c, *c.get("sections", []))]
    return [e["file"] for e in entries if e["file"].startswith("chapters/")]


def _first_code_cell(path: Path) -> dict:
    cells = json.loads(path.read_text())["cells"]
    return next(c for c in cells if c["cell_type"] == "code")


def test_every_chapter_notebook_is_in_the_table_of_contents():
    assert [f"chapters/{p.stem}" for p in CHAPTERS] == _toc_chapters()


def test_every_back_matter_notebook_is_in_the_table_of_contents():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = {c["file"] for part in toc["parts"] for c in part["chapters"]}
    assert BACK_MATTER, "book/own_problem.ipynb is missing"
    assert {f"book/{p.stem}" for p in BACK_MATTER} <= files


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_cell_installs_the_books_release_on_colab(path: Path):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repository = config["repository"]["url"].rstrip("/")
    cell = _first_code_cell(path)
    source = "".join(cell["source"])
    # Hidden from the website, never run by nbval (it would reinstall the package), nor by a book build.
    assert {"remove-cell", "nbval-skip", "skip-execution"} <= set(cell["metadata"].get("tags", []))
    install = re.search(r'%pip install --quiet "mtlcourse(\[\w+\])? @ git\+(\S+)@(\S+)"', source)
    assert install, "the first code cell must pip-install mtlcourse from the repository"
    assert install.group(2) == repository
    assert install.group(3) == f"v{mtlcourse.__version__}", "pin the tag of the package's current version"
    assert 'if "google.colab" in sys.modules:' in source
    assert f'assert mtlcourse.__version__ == "{mtlcourse.__version__}"' in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_cell_is_valid_python_once_ipython_magics_are_translated(path: Path):
    from IPython.core.inputtransformer2 import TransformerManager

    compile(TransformerManager().transform_cell("".join(_first_code_cell(path)["source"])), path.name, "exec")


# --- Exercises: every solution passes the checker its exercise names --------------------------------


def _solutions(path: Path) -> dict[str, tuple[str, list[str]]]:
    """Exercise label -> (exercise text, code of the cells between solution-start and solution-end)."""
    exercises: dict[str, str] = {}
    solutions: dict[str, tuple[str, list[str]]] = {}
    current = None
    for cell in json.loads(path.read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            for text, label in re.findall(r"```\{exercise\}\n(:label: (\S+)\n[\s\S]*?)```", source):
                exercises[label] = text
            # A cell may close one solution and open the next: the last marker in it decides.
            for marker in re.finditer(r"\{solution-start\} (\S+)|\{solution-end\}", source):
                current = marker.group(1)
                if current is not None:
                    solutions[current] = (exercises[current], [])
        elif current is not None:
            solutions[current][1].append(source)
    return solutions


CHECKED_EXERCISES = [
    (path, label, code)
    for path in CHAPTERS
    for label, (text, code) in _solutions(path).items()
    if "mtlcourse.exercises.check_" in text
]


def test_there_are_self_checking_exercises():
    assert len(CHECKED_EXERCISES) >= 3


@pytest.mark.parametrize(
    ("path", "label", "code"), CHECKED_EXERCISES, ids=[label for _, label, _ in CHECKED_EXERCISES]
)
def test_solution_passes_its_checker(path: Path, label: str, code: list[str], monkeypatch):
    import torch

    import mtlcourse.aggregation
    from mtlcourse import exercises

    verdicts: list[tuple[str, bool]] = []
    for name in [n for n in dir(exercises) if n.startswith("check_")]:
        checker = getattr(exercises, name)

        def recording(candidate, *args, _checker=checker, **kwargs):
            verdict = _checker(candidate, *args, **kwargs)
            verdicts.append((candidate.__name__, verdict))
            return verdict

        monkeypatch.setattr(exercises, name, recording)
    # As in the chapters: torch and the aggregators are in scope.
    namespace = {
        "torch": torch,
        **{n: getattr(mtlcourse.aggregation, n) for n in mtlcourse.aggregation.__all__},
    }
    for source in code:
        exec(compile(source, f"{path.name}:{label}", "exec"), namespace)
    # The reader's solution (my_...) passes; a deliberately wrong variant shown beside it is caught.
    assert any(name.startswith("my_") for name, _ in verdicts), "the solution never calls its checker"
    assert verdicts == [(name, name.startswith("my_")) for name, _ in verdicts]


# --- Stored runs: made with the pinned versions, within the time budget -------------------------------


def _load_course_status():
    """book/_ext/course_status.py, which reads run times the same way for the status page."""
    spec = importlib.util.spec_from_file_location(
        "course_status", ROOT / "book" / "_ext" / "course_status.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


course_status = _load_course_status()


def _run_info(path: Path) -> tuple[dict, float]:
    notebook = json.loads(path.read_text())
    return notebook["metadata"].get("mtlcourse", {}), course_status.run_seconds(notebook)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_were_made_with_the_installed_versions(path: Path):
    import platform
    from importlib.metadata import version

    info, _ = _run_info(path)
    assert info, f"{path.name} was not run with scripts/execute_chapters.py (make execute)"
    used = dict(info["executed_with"])
    assert used.pop("python").rsplit(".", 1)[0] == platform.python_version().rsplit(".", 1)[0]
    assert used == {package: version(package) for package in used}, "re-run the chapter: make execute"
    assert {"mtlcourse", "torch", "numpy", "matplotlib"} <= set(used)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_run_kept_within_the_time_budget(path: Path):
    """120 s per chapter in a fresh kernel on a 2-core CPU, one thread per process; the capstone benchmark
    may take 300 s, a back-matter page 60 s (a reader copies from it and should not wait)."""
    _, seconds = _run_info(path)
    budget = 300 if "benchmark" in path.stem else 60 if path in BACK_MATTER else 120
    assert 0 < seconds <= budget, f"{path.name} ran for {seconds:.0f} s; its budget is {budget} s"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_run_pinned_the_cpu_kernels(path: Path):
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from execute_chapters import cpu_pins

    info, _ = _run_info(path)
    assert info.get("cpu_pins") == cpu_pins(), f"re-run {path.name} with make execute (see scripts/cpu.env)"
