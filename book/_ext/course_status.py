"""Sphinx extension: the ``course-status`` directive, a table of how each chapter was last run.

Nothing in the table is typed by hand. It is read at build time from the chapter notebooks: the run
time from the cell timings that ``nbclient`` stores in each code cell's metadata, and the package
versions from the ``mtlcourse`` entry that ``scripts/execute_chapters.py`` writes into the notebook's
metadata when it runs it.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

VERSION_KEY = "mtlcourse"


def run_seconds(notebook: dict) -> float:
    """Seconds from the first code cell's start to the last code cell's reply, as nbclient stored them."""
    starts, ends = [], []
    for cell in notebook["cells"]:
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            starts.append(datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00")))
            ends.append(datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00")))
    if not starts:
        raise ValueError("no cell carries execution timings: run scripts/execute_chapters.py")
    return (max(ends) - min(starts)).total_seconds()


def _title(notebook: dict) -> str:
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "untitled"


def status_markdown(chapters: list[Path], link_prefix: str) -> list[str]:
    """The page's two tables as MyST lines: one row per chapter, then the versions they ran with."""
    rows = ["| chapter | run time (s) | executed (UTC) | device |", "|---|---:|---|---|"]
    versions: dict[str, dict[str, list[int]]] = {}
    total = 0.0
    for number, path in enumerate(chapters, start=1):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        info = notebook["metadata"].get(VERSION_KEY)
        if info is None:
            raise ValueError(f"{path.name} has no '{VERSION_KEY}' metadata: run scripts/execute_chapters.py")
        seconds = run_seconds(notebook)
        total += seconds
        link = f"{{doc}}`{number}. {_title(notebook)} <{link_prefix}{path.stem}>`"
        rows.append(f"| {link} | {seconds:.1f} | {info['executed_at'][:10]} | {info['device']} |")
        for package, version in info["executed_with"].items():
            versions.setdefault(package, {}).setdefault(version, []).append(number)
    rows.append(f"| **all chapters** | **{total:.1f}** | | |")
    table = ["| package | version | chapters |", "|---|---|---|"]
    for package, by_version in versions.items():
        for version, numbers in by_version.items():
            which = "all" if len(numbers) == len(chapters) else ", ".join(map(str, numbers))
            table.append(f"| `{package}` | {version} | {which} |")
    return [*rows, "", *table]


class CourseStatus(SphinxDirective):
    """``{course-status} chapters`` renders the tables for the notebooks in that folder."""

    required_arguments = 1

    def run(self):
        folder = Path(self.env.srcdir) / self.arguments[0]
        chapters = sorted(folder.glob("*.ipynb"))
        for path in chapters:
            self.env.note_dependency(str(path))
        prefix = "/" + folder.relative_to(self.env.srcdir).as_posix() + "/"
        try:
            lines = status_markdown(chapters, link_prefix=prefix)
        except ValueError as error:
            raise self.error(str(error)) from error
        return self.parse_text_to_nodes("\n".join(lines))


def setup(app: Sphinx) -> dict:
    app.add_directive("course-status", CourseStatus)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
