"""The public repository's own files: its URL in one place, the licences, the citation file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

import mtlcourse

ROOT = Path(__file__).resolve().parents[1]
CC_BY = "https://creativecommons.org/licenses/by/4.0/"

# Other projects' repositories that the course names on purpose (torchjd, LibMTL, a paper's code, …),
# as "owner/repo" in lower case. None today: add one here when a page or notebook starts citing it.
OTHER_PROJECTS: frozenset[str] = frozenset()

# Text files where a repository URL could sit (the book's pages and notebooks, configuration, code,
# workflows); binary files (figures) and anything git ignores are left out.
TEXT_SUFFIXES = {".md", ".yml", ".yaml", ".toml", ".py", ".ipynb", ".cff", ".cfg", ".txt", ".bib", ".sh"}
TEXT_NAMES = {"Makefile", "LICENSE"}

# github.com/<owner>/<repo>, as in https://…, git+https://…@v0.1.0, …/blob/main/…, a *.git remote,
# or git@github.com:<owner>/<repo>.
GITHUB = re.compile(r"github\.com[/:]([A-Za-z0-9][A-Za-z0-9-]*)/([A-Za-z0-9_.-]+)", re.IGNORECASE)
# The site on GitHub Pages: <owner>.github.io/<repo>.
PAGES = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)\.github\.io/([A-Za-z0-9_.-]+)", re.IGNORECASE)


def _configured() -> str:
    """``repository.url`` of ``_config.yml``: the one place the repository's address is written."""
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def _owner_repo(owner: str, repo: str) -> str:
    repo = repo.rstrip(".")
    return f"{owner}/{repo.removesuffix('.git')}".lower()


def github_mentions(text: str) -> list[str]:
    """Every ``owner/repo`` that ``text`` names on github.com, lower case (GitHub ignores case)."""
    return [_owner_repo(*match.groups()) for match in GITHUB.finditer(text)]


def pages_mentions(text: str) -> list[str]:
    """Every ``owner/repo`` whose GitHub Pages site ``text`` names, lower case."""
    return [_owner_repo(*match.groups()) for match in PAGES.finditer(text)]


def _text_files() -> list[Path]:
    """Tracked and new (not ignored) text files of the checkout, per ``git ls-files``."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of the repository's files")
    paths = [ROOT / name for name in listed]
    return [
        path for path in paths if path.is_file() and (path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES)
    ]


def test_the_configured_url_is_a_github_repository():
    url = _configured()
    assert re.fullmatch(r"https://github\.com/[A-Za-z0-9-]+/[A-Za-z0-9_.-]+", url), url
    assert not url.endswith(".git")


def test_every_github_repository_named_is_this_one_or_a_listed_project():
    own = github_mentions(_configured())[0]
    files = _text_files()
    assert any(path.name == "_config.yml" for path in files)  # the scan sees the files it must
    strays = sorted(
        f"{path.relative_to(ROOT)}: github.com/{name}"
        for path in files
        for name in github_mentions(path.read_text(errors="replace"))
        if name != own and name not in OTHER_PROJECTS
    )
    assert not strays, f"not the repository of _config.yml ({own}) nor in OTHER_PROJECTS: {strays}"


def test_a_github_pages_address_is_this_repository_s_site():
    own = github_mentions(_configured())[0]
    strays = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in _text_files()
        for name in pages_mentions(path.read_text(errors="replace"))
        if name != own
    )
    assert not strays, f"GitHub Pages site of another repository than {own}: {strays}"


def test_listed_other_projects_are_really_named_somewhere():
    named = {name for path in _text_files() for name in github_mentions(path.read_text(errors="replace"))}
    assert OTHER_PROJECTS <= named, f"listed but never named: {sorted(OTHER_PROJECTS - named)}"


# The scanner itself, on text that names a fork. The URLs are assembled so that this file names none.
HOST = "github" + ".com"


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"see https://{HOST}/someone/mtlcourse for the code", ["someone/mtlcourse"]),
        (f'"!pip install git+https://{HOST}/Fork/MTLcourse@v0.1.0"', ["fork/mtlcourse"]),
        (f"git clone git@{HOST}:someone/mtlcourse.git", ["someone/mtlcourse"]),
        (f"git clone https://{HOST}/mtlcourse/mtlcourse.git.", ["mtlcourse/mtlcourse"]),
        (f"[source]({HOST}/mtlcourse/mtlcourse/blob/main/src/mtlcourse/utils.py)", ["mtlcourse/mtlcourse"]),
        (f"{HOST}/a/b and {HOST}/c/d", ["a/b", "c/d"]),
        ("no address here", []),
    ],
)
def test_mentions_are_found_with_their_owner_and_repository(text, expected):
    assert github_mentions(text) == expected


def test_a_fork_url_is_not_the_configured_repository():
    own = github_mentions(_configured())[0]
    owner, repo = own.split("/")
    fork = f"https://{HOST}/{owner}-fork/{repo}"
    assert github_mentions(fork) != [own]
    assert github_mentions(f"https://{HOST}/{owner.upper()}/{repo}") == [own]


def test_pages_mentions_name_owner_and_repository():
    assert pages_mentions("https://mtlcourse.github" + ".io/mtlcourse/intro.html") == ["mtlcourse/mtlcourse"]


# Licences and citation


def test_license_is_mit_with_this_year_and_holder_as_pyproject_says():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 The mtlcourse authors" in text
    assert "Permission is hereby granted, free of charge" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^license = "MIT"$', pyproject, re.MULTILINE)


@pytest.mark.parametrize("page", ["README.md", "book/intro.md"])
def test_text_and_figures_are_cc_by_4_and_the_code_mit(page):
    text = (ROOT / page).read_text()
    assert "CC BY 4.0" in text
    assert CC_BY in text
    assert "MIT" in text


def test_citation_file_is_valid_cff_1_2_and_agrees_with_package_and_config():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    # the keys CFF 1.2.0 requires, and the ones a software citation should carry
    missing = {"cff-version", "message", "title", "authors", "version", "license", "repository-code", "type"}
    assert not missing - cff.keys(), f"missing: {sorted(missing - cff.keys())}"
    assert cff["cff-version"] == "1.2.0"
    assert cff["type"] == "software"
    assert isinstance(cff["message"], str) and cff["message"].strip()
    assert isinstance(cff["title"], str) and cff["title"].strip()
    authors = cff["authors"]
    assert isinstance(authors, list) and authors
    assert all(isinstance(a, dict) and (a.get("name") or a.get("family-names")) for a in authors)
    # YAML would read an unquoted 1.0 as a float; CFF wants a string
    assert isinstance(cff["version"], str)
    assert cff["version"] == mtlcourse.__version__
    assert cff["license"] == "MIT"
    assert cff["repository-code"] == _configured()
