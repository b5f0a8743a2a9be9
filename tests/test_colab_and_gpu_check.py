"""The parts of ``make colab`` and ``make gpu-check`` that need neither a new environment nor a GPU.

The install cells' rewrite and the ``google.colab`` stand-in (scripts/colab_simulation.py); the skip
without CUDA and the comparison of ``mean ± spread`` pairs (scripts/gpu_check.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import mtlcourse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import colab_simulation  # noqa: E402
import gpu_check  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
# Chapters whose install cell names the torchjd extra (they compare with it or need cvxpy); any other
# chapter may name it or nothing, never another extra (a chapter added since is checked for that only).
TORCHJD = {"07_jacobian_descent", "09_benchmark", "10_at_scale"}
WITHOUT = {"01_regression_classification", "02_sin_cos", "03_weighting", "04_pcgrad", "05_gradnorm"}
WITHOUT |= {"06_mgda_cagrad", "08_what_to_share"}
# Chapters whose stored tables print mean ± spread pairs.
TABLES = {"01_regression_classification", "02_sin_cos", "03_weighting", "04_pcgrad", "05_gradnorm"}
TABLES |= {"07_jacobian_descent", "08_what_to_share", "09_benchmark"}


# --- make colab ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_has_one_install_cell_rewritten_to_the_local_clone(path: Path):
    ref = "0123456789abcdef0123456789abcdef01234567"
    notebook, install = colab_simulation.colab_notebook(path, Path("/clone"), ref)
    assert install.ref == f"v{mtlcourse.__version__}"
    assert install.extras in ([], ["torchjd"])
    if path.stem in TORCHJD | WITHOUT:
        assert install.extras == (["torchjd"] if path.stem in TORCHJD else [])
    source = notebook.cells[install.index].source
    extras = f"[{','.join(install.extras)}]" if install.extras else ""
    assert f'%pip install --quiet "mtlcourse{extras} @ git+file:///clone@{ref}"' in source
    assert "github" + ".com" not in source
    assert f'assert mtlcourse.__version__ == "{mtlcourse.__version__}"' in source
    assert "skip-execution" not in notebook.cells[install.index].metadata["tags"]
    # the chapter's file is untouched
    assert "github" + ".com" in nbformat.read(path, as_version=4).cells[install.index].source


def test_a_notebook_without_or_with_two_install_lines_is_refused():
    host = "github" + ".com"  # assembled: tests/test_repository.py checks every repository a file names
    line = f'%pip install --quiet "mtlcourse @ git+https://{host}/mtlcourse/mtlcourse@v1"'
    cell = f'import sys\nif "google.colab" in sys.modules:\n    {line}\n'
    for cells in ([], [cell, cell]):
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        with pytest.raises(ValueError, match="expected one Colab install line"):
            colab_simulation.find_install_cell(notebook)


def test_the_release_ref_is_the_tag_when_it_exists_else_head(tmp_path: Path):
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x")
    head = git("rev-parse", "HEAD").strip()
    assert colab_simulation.release_ref(tmp_path, "v9.9.9")[0] == head
    git("tag", "v9.9.9")
    assert colab_simulation.release_ref(tmp_path, "v9.9.9")[0] == "v9.9.9"


def test_the_stub_makes_the_install_cell_take_the_colab_branch(tmp_path: Path):
    colab_simulation.write_stub(tmp_path)
    branch = colab_simulation.COLAB_BRANCH
    code = f"import sys\nexec({colab_simulation.STARTUP!r})\n{branch}\n    print('taken')\n"
    run = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": str(tmp_path)}, capture_output=True, text=True
    )
    assert run.stdout.strip() == "taken", run.stderr
    bare = subprocess.run(
        [sys.executable, "-c", f"import sys\n{branch}\n    print('taken')\n"], capture_output=True
    )
    assert bare.stdout == b""


def test_the_image_pins_torch_exactly_and_the_colab_stack():
    pins = dict(
        line.split("==")
        for line in colab_simulation.CONSTRAINTS.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert pins["torch"] == "2.13.0"
    assert {"numpy", "pandas", "matplotlib", "seaborn", "scikit-learn", "ipykernel"} <= pins.keys()
    assert "mtlcourse" not in pins and "torchjd" not in pins
    assert colab_simulation.pinned_packages() == list(pins)


def _runtime(tmp_path: Path, commit: str, *others: str) -> Path:
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    info = site / "mtlcourse-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "direct_url.json").write_text(
        json.dumps({"url": "file:///clone", "vcs_info": {"commit_id": commit}})
    )
    for name in others:
        (site / f"{name}-1.0.dist-info").mkdir()
    return tmp_path


def test_the_install_is_checked_for_its_commit_and_its_extras(tmp_path: Path):
    commit = "a" * 40
    plain = colab_simulation.InstallCell(1, [], "v0.1.0")
    with_torchjd = colab_simulation.InstallCell(1, ["torchjd"], "v0.1.0")
    assert "torchjd absent" in colab_simulation.check_install(_runtime(tmp_path / "a", commit), plain, commit)
    with pytest.raises(RuntimeError, match="torchjd absent with extras"):
        colab_simulation.check_install(_runtime(tmp_path / "b", commit), with_torchjd, commit)
    with pytest.raises(RuntimeError, match="torchjd present with extras"):
        colab_simulation.check_install(_runtime(tmp_path / "c", commit, "torchjd"), plain, commit)
    with pytest.raises(RuntimeError, match="installed from"):
        colab_simulation.check_install(_runtime(tmp_path / "d", "b" * 40), plain, commit)
    empty = tmp_path / "e"
    (empty / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="did not install mtlcourse"):
        colab_simulation.check_install(empty, plain, commit)


# --- make gpu-check --------------------------------------------------------------------------------


def _notebook(*printed: str) -> nbformat.NotebookNode:
    cells = []
    for text in printed:
        cell = nbformat.v4.new_code_cell("print(table)")
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        cells.append(cell)
    return nbformat.v4.new_notebook(cells=cells)


def test_pairs_are_read_with_the_unit_of_their_last_digit():
    pairs = gpu_check.pairs_in("PCGrad  0.0448 ± 0.0039  600 ± 0\nΔm  −1.5 ± 0.25")
    assert [(p.mean, p.spread, p.unit) for p in pairs] == [
        (0.0448, 0.0039, 1e-4),
        (600.0, 0.0, 1.0),
        (-1.5, 0.25, 0.1),  # the coarser of the two: the mean is rounded to tenths
    ]
    assert pairs[2].line == "Δm  −1.5 ± 0.25"


def test_a_cuda_run_inside_the_widened_interval_is_not_reported():
    stored = _notebook("sum 0.0448 ± 0.0039\nepochs 600 ± 0", "no pairs here")
    cuda = _notebook("sum 0.0500 ± 0.0020\nepochs 599 ± 0", "no pairs here either")
    assert gpu_check.compare(stored, cuda) == []


def test_a_cuda_run_outside_the_widened_interval_is_reported_with_its_cell():
    stored = _notebook("header", "sum 0.0448 ± 0.0039\nepochs 600 ± 0")
    cuda = _notebook("header", "sum 0.0600 ± 0.0010\nepochs 600 ± 0")  # 0.0152 apart > 0.0039 + 0.0010 + 1e-4
    (problem,) = gpu_check.compare(stored, cuda)
    assert problem.startswith("cell 1: CPU 0.0448 ± 0.0039, CUDA 0.06 ± 0.001")


def test_a_cuda_run_with_another_number_of_pairs_is_reported():
    (problem,) = gpu_check.compare(_notebook("a 1.0 ± 0.1\nb 2.0 ± 0.1"), _notebook("a 1.0 ± 0.1"))
    assert problem == "cell 0: 2 mean ± spread pairs stored, 1 on CUDA"


def test_stderr_and_html_are_left_out_of_the_comparison():
    cell = nbformat.v4.new_code_cell("table")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="warning 9.9 ± 0.1"),
        nbformat.v4.new_output(
            "execute_result", data={"text/plain": "1.0 ± 0.1", "text/html": "<td>1.0 ± 0.1</td>"}
        ),
    ]
    assert [p.mean for p in gpu_check.pairs_in(gpu_check.output_text(cell))] == [1.0]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_a_stored_chapter_agrees_with_itself_and_its_tables_are_read(path: Path):
    stored = nbformat.read(path, as_version=4)
    assert gpu_check.compare(stored, nbformat.read(path, as_version=4)) == []
    pairs = sum(len(gpu_check.pairs_in(gpu_check.output_text(cell))) for cell in stored.cells)
    if path.stem in TABLES:
        assert pairs > 0


def test_without_cuda_the_check_is_skipped_with_exit_0(monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "cuda_available", lambda python: False)
    monkeypatch.setattr(gpu_check, "run_cells", lambda *args, **kwargs: pytest.fail("a chapter ran"))
    assert gpu_check.main(["--python", "/some/python"]) == 0
    assert "gpu-check skipped: no CUDA device" in capsys.readouterr().out


def test_cuda_availability_is_asked_of_the_kernel_environment():
    import torch

    assert gpu_check.cuda_available(sys.executable) == torch.cuda.is_available()


def _stored(tmp_path: Path, sources: list[str], printed: list[str]) -> Path:
    notebook = _notebook(*printed)
    for cell, source in zip(notebook.cells, sources, strict=True):
        cell.source = source
    path = tmp_path / "chapter.ipynb"
    nbformat.write(notebook, path)
    return path


def test_a_chapter_is_run_in_the_given_kernel_and_compared(tmp_path: Path, monkeypatch):
    """The whole check on a two-cell notebook, in this environment's kernel instead of a CUDA one."""
    monkeypatch.setattr(gpu_check, "BUILD", tmp_path)
    path = _stored(
        tmp_path, ["print('a 1.02 ± 0.01')", "print('b 2.50 ± 0.01')"], ["a 1.00 ± 0.02", "b 2.00 ± 0.01"]
    )
    kernels = gpu_check.write_kernelspec(tmp_path, Path(sys.executable))
    (problem,) = gpu_check.check_chapter(path, kernels)
    assert problem.startswith(f"{path}: cell 1: CPU 2 ± 0.01, CUDA 2.5 ± 0.01")
    assert (tmp_path / "chapter.ipynb").exists()


def test_a_failing_cell_is_named(tmp_path: Path):
    path = _stored(tmp_path, ["x = 1", "y = 1 / 0"], ["", ""])
    kernels = gpu_check.write_kernelspec(tmp_path, Path(sys.executable))
    with pytest.raises(gpu_check.CellFailure, match=r"cell 1 \('y = 1 / 0'\) failed: ZeroDivisionError"):
        gpu_check.run_cells(nbformat.read(path, as_version=4), path, kernels, tmp_path)
