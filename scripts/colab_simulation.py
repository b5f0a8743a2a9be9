"""Run the chapters as Google Colab would, from a bare image, through their own install cells.

``make colab`` (every chapter) or ``make colab NB=chapters/01_regression_classification.ipynb``.

1. The image: a fresh virtual environment ``_build/colab/image`` with only what Colab preinstalls
   that the course touches, at the versions of ``scripts/colab-constraints.txt``, and a stand-in
   ``google.colab`` module. mtlcourse is *not* installed.
2. For each chapter a fresh runtime, as Colab gives each notebook: a virtual environment
   ``_build/colab/runtime`` that sees the image's packages (through a ``.pth`` file, as Colab's
   ``dist-packages``) and installs into its own ``site-packages``, so what one chapter's install cell
   brought (torchjd, cvxpy) is gone for the next. Its kernel imports ``google.colab`` at start-up, so
   the install cell takes its Colab branch.
3. The chapter runs top to bottom, every cell (the install cell's ``skip-execution`` tag is for the
   book and nbval, not for Colab's *Run all*), in an empty working directory as Colab's ``/content``.
   The install cell's GitHub URL is replaced by this clone at the release tag it names when the tag
   exists here, else at HEAD's commit (uncommitted changes are not part of what a reader installs);
   the extras the cell names are kept.

It stops nothing at the first failure: every chapter runs, and the exit status is 1 if a cell of any
failed, naming the chapter and the cell. Outputs are not compared (``make notebooks`` does that) and
nothing is written back to the notebooks.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from notebook_kernel import CellFailure, run_cells, write_kernelspec

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = Path(__file__).with_name("colab-constraints.txt")
BUILD = ROOT / "_build" / "colab"

# The install line of a chapter's first code cell (tests/test_chapters.py checks its form).
INSTALL = re.compile(
    r'(?P<head>%pip install --quiet "mtlcourse(?P<extras>\[[\w,-]+\])? @ )'
    r'git\+https://github\.com/[^@"\s]+@(?P<ref>[\w.-]+)"'
)
COLAB_BRANCH = 'if "google.colab" in sys.modules:'
STUB = '"""Stand-in for Colab\'s google.colab package (make colab): importing it is all a chapter does."""\n'
STARTUP = "import google.colab  # as Colab's kernel does before the first cell\n"
# What a reader's environment may set that Colab's does not.
UNSET = ["MTLCOURSE_NO_PROGRESS", "PYTHONPATH", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV"]


@dataclass
class InstallCell:
    """A chapter's Colab install cell: its index, the extras it names and the ref it pins."""

    index: int
    extras: list[str]
    ref: str


def find_install_cell(notebook: nbformat.NotebookNode) -> InstallCell:
    """The one code cell that pip-installs mtlcourse from GitHub on Colab.

    Raises
    ------
    ValueError
        If no cell, or more than one, has the install line and the Colab branch.
    """
    found = [
        (index, match)
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and COLAB_BRANCH in cell.source
        for match in INSTALL.finditer(cell.source)
    ]
    if len(found) != 1:
        raise ValueError(f"expected one Colab install line, found {len(found)}")
    index, match = found[0]
    extras = match.group("extras")
    return InstallCell(index, extras.strip("[]").split(",") if extras else [], match.group("ref"))


def rewrite_install(source: str, root: Path, ref: str) -> str:
    """Point the install line at ``git+file://<root>@<ref>``, keeping the extras it names."""
    return INSTALL.sub(lambda match: f'{match.group("head")}git+file://{root}@{ref}"', source)


def release_ref(root: Path, tag: str) -> tuple[str, str]:
    """The commit to install: the tag if this clone has it, else HEAD; with a sentence saying which."""
    if _git(root, "tag", "--list", tag):
        return tag, f"the release tag {tag}"
    head = _git(root, "rev-parse", "HEAD")
    return head, f"HEAD {head[:12]} (no tag {tag} in this clone; uncommitted changes are not installed)"


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def colab_notebook(
    path: Path, root: Path, ref: str | None = None
) -> tuple[nbformat.NotebookNode, InstallCell]:
    """Read a chapter and make it Colab's: its install cell runs and installs from ``root``.

    Parameters
    ----------
    path
        The chapter.
    root
        The clone to install from.
    ref
        The ref to install; by default the tag the cell names if it exists, else HEAD.
    """
    notebook = nbformat.read(path, as_version=4)
    install = find_install_cell(notebook)
    cell = notebook.cells[install.index]
    cell.source = rewrite_install(cell.source, root, ref or release_ref(root, install.ref)[0])
    cell.metadata["tags"] = [tag for tag in cell.metadata.get("tags", []) if tag != "skip-execution"]
    return notebook, install


def pinned_packages(constraints: Path = CONSTRAINTS) -> list[str]:
    """The names of the packages of the constraints file: the image installs exactly these."""
    lines = (line.split("#")[0].strip() for line in constraints.read_text().splitlines())
    return [re.split(r"[=<>!~ ]", line)[0] for line in lines if line]


def site_packages(venv: Path) -> Path:
    """The ``site-packages`` folder of a virtual environment."""
    (found,) = venv.glob("lib/python3*/site-packages")
    return found


def write_stub(site: Path) -> None:
    """Make ``google.colab`` importable from ``site`` (``google`` stays a namespace package)."""
    package = site / "google" / "colab"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(STUB)


def build_image(python: str, image: Path, log: Path) -> None:
    """Create the image: a new virtual environment with the pinned Colab packages and the stub."""
    shutil.rmtree(image, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(image)], check=True)
    command = [str(image / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c", str(CONSTRAINTS)]
    with log.open("w") as out:
        result = subprocess.run([*command, *pinned_packages()], stdout=out, stderr=subprocess.STDOUT)
    if result.returncode:
        sys.exit(f"installing the Colab image failed: see {log}")
    write_stub(site_packages(image))


def new_runtime(image: Path, runtime: Path) -> Path:
    """A fresh runtime over the image, with a kernel that imports ``google.colab``; its kernels folder."""
    shutil.rmtree(runtime, ignore_errors=True)
    subprocess.run([str(image / "bin" / "python"), "-m", "venv", "--without-pip", str(runtime)], check=True)
    layer = f"import site; site.addsitedir({str(site_packages(image))!r})\n"
    (site_packages(runtime) / "colab_image.pth").write_text(layer)
    startup = runtime / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-google-colab.py").write_text(STARTUP)
    # IPYTHONDIR: the runtime's own profile, whose start-up file imports the stub. PYDEVD_…: quiets
    # ipykernel 6.17's debugger warning about Python 3.11's frozen modules (on the kernel's stderr).
    env = {"IPYTHONDIR": str(runtime / "ipython"), "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    return write_kernelspec(runtime, runtime / "bin" / "python", env)


def installed_from(runtime: Path, name: str) -> dict | None:
    """The ``direct_url.json`` of a distribution installed in the runtime's own layer, or None."""
    for info in site_packages(runtime).glob("*.dist-info"):
        if info.name.split("-")[0].lower() == name:
            direct = info / "direct_url.json"
            return json.loads(direct.read_text()) if direct.exists() else {}
    return None


def check_install(runtime: Path, install: InstallCell, commit: str) -> str:
    """Check that the cell installed mtlcourse at ``commit``, with torchjd exactly when asked."""
    direct = installed_from(runtime, "mtlcourse")
    if direct is None:
        raise RuntimeError("the install cell did not install mtlcourse into the runtime")
    got = direct.get("vcs_info", {}).get("commit_id")
    if got != commit:
        raise RuntimeError(f"mtlcourse was installed from {got}, not {commit}")
    has_torchjd = installed_from(runtime, "torchjd") is not None
    if has_torchjd != ("torchjd" in install.extras):
        raise RuntimeError(f"torchjd {'present' if has_torchjd else 'absent'} with extras {install.extras}")
    extras = f"[{','.join(install.extras)}]" if install.extras else " (no extra)"
    return f"mtlcourse{extras} from {commit[:12]}, torchjd {'installed' if has_torchjd else 'absent'}"


def run_chapter(path: Path, image: Path, ref: str, commit: str) -> float:
    """Run one chapter in a fresh runtime; return its wall time."""
    notebook, install = colab_notebook(path, ROOT, ref)
    runtime = BUILD / "runtime"
    kernels = new_runtime(image, runtime)
    content = BUILD / "content"
    shutil.rmtree(content, ignore_errors=True)
    content.mkdir()
    seconds = run_cells(notebook, path, kernels, content)
    print(f"  {check_install(runtime, install, commit)}", flush=True)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every chapters/*.ipynb")
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the image")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((ROOT / "chapters").glob("*.ipynb"))
    for name in UNSET:
        os.environ.pop(name, None)
    BUILD.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    build_image(args.python, BUILD / "image", BUILD / "image-install.log")
    print(f"image: {time.perf_counter() - started:.0f} s ({', '.join(pinned_packages())})", flush=True)
    tag = find_install_cell(nbformat.read(notebooks[0], as_version=4)).ref
    ref, which = release_ref(ROOT, tag)
    commit = _git(ROOT, "rev-parse", f"{ref}^{{commit}}")
    print(f"installing mtlcourse from git+file://{ROOT}@{ref}: {which}", flush=True)
    failures, total = [], 0.0
    for path in notebooks:
        print(f"{path}", flush=True)
        try:
            seconds = run_chapter(path, BUILD / "image", ref, commit)
        except (CellFailure, RuntimeError) as failure:
            failures.append(f"{path}: {failure}" if isinstance(failure, RuntimeError) else str(failure))
            print(f"  FAILED: {failures[-1]}", flush=True)
            continue
        total += seconds
        print(f"  {seconds:.1f} s", flush=True)
    print(f"total: {total:.1f} s, {len(notebooks) - len(failures)} of {len(notebooks)} chapters ran through")
    print(f"wall, with the image: {time.perf_counter() - started:.0f} s")
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
