"""The parts of ``make colab`` that need no new environment: the install cells' rewrite and the
``google.colab`` stand-in (scripts/colab_simulation.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import mtlcourse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import colab_simulation  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
# The extras each chapter's install cell names: torchjd where a chapter compares with it or needs cvxpy.
EXTRAS = {"07_jacobian_descent": ["torchjd"], "09_benchmark": ["torchjd"], "10_at_scale": ["torchjd"]}


# --- make colab ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_has_one_install_cell_rewritten_to_the_local_clone(path: Path):
    ref = "0123456789abcdef0123456789abcdef01234567"
    notebook, install = colab_simulation.colab_notebook(path, Path("/clone"), ref)
    assert install.ref == f"v{mtlcourse.__version__}"
    assert install.extras == EXTRAS.get(path.stem, [])
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
