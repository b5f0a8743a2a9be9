"""The chapters as files: every one opens on Colab with the book's release of the package."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import mtlcourse

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


def _toc_chapters() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [c["file"] for part in toc["parts"] for c in part["chapters"] if c["file"].startswith("chapters/")]


def _first_code_cell(path: Path) -> dict:
    cells = json.loads(path.read_text())["cells"]
    return next(c for c in cells if c["cell_type"] == "code")


def test_every_chapter_notebook_is_in_the_table_of_contents():
    assert [f"chapters/{p.stem}" for p in CHAPTERS] == _toc_chapters()


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
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


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_first_cell_is_valid_python_once_ipython_magics_are_translated(path: Path):
    from IPython.core.inputtransformer2 import TransformerManager

    compile(TransformerManager().transform_cell("".join(_first_code_cell(path)["source"])), path.name, "exec")
