"""The shell of the generated approval jobs, run with a stand-in for ``.venv/bin/vintage`` that records its
calls: the CI's approver is recorded only when vintage's gate waits, failures keep their exit code."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from vintage.ci import render
from vintage.config import load_spec

# Exits with the next code of $CODES for each `stage` call (0 when they run out); `approve` exits
# $APPROVE_CODE. Every call is appended to calls.txt.
STUB = """\
#!/usr/bin/env bash
echo "$*" >> calls.txt
if [ "$1" = approve ]; then exit "${APPROVE_CODE:-0}"; fi
n=$(grep -c '^stage ' calls.txt)
code=$(echo "$CODES" | cut -d' ' -f"$n")
exit "${code:-0}"
"""


def _scripts(project: Path, kind: str) -> dict[str, str]:
    text = render(
        load_spec(project / "vintage.yaml"),
        kind,
        config_path=project / "vintage.yaml",
        cwd=project,
        allow_local_state=True,
    )
    doc = yaml.safe_load(text)
    if kind == "github-actions":
        return {
            name: job["steps"][-1]["run"].replace("${{ github.run_id }}", "42")
            for name, job in doc["jobs"].items()
        }
    scripts = {}
    for stage in doc["stages"]:
        job = stage["jobs"][0]
        steps = job["steps"] if "steps" in job else job["strategy"]["runOnce"]["deploy"]["steps"]
        scripts[stage["displayName"]] = steps[-1]["script"].replace("$(Build.BuildId)", "42")
    return scripts


def _run(project: Path, script: str, codes: str, approve_code: int = 0) -> tuple[int, list[str]]:
    stub = project / ".venv" / "bin" / "vintage"
    stub.parent.mkdir(parents=True, exist_ok=True)
    stub.write_text(STUB)
    stub.chmod(0o755)
    (project / "calls.txt").write_text("")
    env: dict[str, Any] = {
        "PATH": "/usr/bin:/bin",
        "CODES": codes,
        "APPROVE_CODE": str(approve_code),
        "VINTAGE_APPROVER": "carol",
    }
    # GitHub's `shell: bash` (the default on Linux runners): bash --noprofile --norc -eo pipefail
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=project, env=env, check=False
    )
    return done.returncode, (project / "calls.txt").read_text().splitlines()


@pytest.mark.parametrize("kind", ["github-actions", "azure-pipelines"])
def test_waiting_gate_records_the_ci_approver_then_runs_the_stage(custom_project: Path, kind: str) -> None:
    code, calls = _run(custom_project, _scripts(custom_project, kind)["production"], "3 0")

    assert code == 0
    assert calls[0] == "stage production --run-id 42"
    assert calls[1].startswith("approve 42 production --as carol --comment approved in ")
    assert calls[2] == "stage production --run-id 42"
    assert len(calls) == 3


@pytest.mark.parametrize("kind", ["github-actions", "azure-pipelines"])
def test_approval_already_recorded_runs_once(custom_project: Path, kind: str) -> None:
    code, calls = _run(custom_project, _scripts(custom_project, kind)["qa"], "0")

    assert (code, calls) == (0, ["stage qa --run-id 42"])


@pytest.mark.parametrize("kind", ["github-actions", "azure-pipelines"])
def test_failed_stage_keeps_its_exit_code_and_approves_nothing(custom_project: Path, kind: str) -> None:
    code, calls = _run(custom_project, _scripts(custom_project, kind)["production"], "1")

    assert (code, calls) == (1, ["stage production --run-id 42"])


@pytest.mark.parametrize("kind", ["github-actions", "azure-pipelines"])
def test_refused_approver_fails_the_job(custom_project: Path, kind: str) -> None:
    code, calls = _run(custom_project, _scripts(custom_project, kind)["production"], "3 0", approve_code=1)

    assert code == 1
    assert len(calls) == 2 and calls[1].startswith("approve 42 production")


@pytest.mark.parametrize("kind", ["github-actions", "azure-pipelines"])
def test_stage_without_approval_passes_its_exit_code(custom_project: Path, kind: str) -> None:
    scripts = _scripts(custom_project, kind)

    assert _run(custom_project, scripts["build"], "3") == (3, ["stage build --run-id 42"])


# GitHub's review history of a workflow run (GET /repos/{owner}/{repo}/actions/runs/{run_id}/approvals).
REVIEWS = [
    {
        "state": "rejected",
        "comment": "",
        "user": {"login": "mallory"},
        "environments": [{"name": "production"}],
    },
    {"state": "approved", "comment": "", "user": {"login": "dave"}, "environments": [{"name": "qa"}]},
    {
        "state": "approved",
        "comment": "ok",
        "user": {"login": "carol"},
        "environments": [{"name": "production"}],
    },
]

# `gh api PATH --jq FILTER` answered from reviews.json with jq (what gh's --jq does: raw output).
GH_STUB = """\
#!/usr/bin/env bash
echo "$2" > gh-path.txt
exec jq -r "$4" reviews.json
"""


def _who_approved(
    project: Path, environment: str, reviews: list[dict[str, Any]] = REVIEWS
) -> tuple[int, str, str]:
    import json
    import shutil

    assert shutil.which("jq"), "jq is missing: `make system-deps` installs it (apt-get install -y jq)"
    doc = yaml.safe_load(
        render(
            load_spec(project / "vintage.yaml"),
            "github-actions",
            config_path=project / "vintage.yaml",
            cwd=project,
            allow_local_state=True,
        )
    )
    step = next(s for s in doc["jobs"][environment]["steps"] if s.get("id") == "approver")
    stub = project / "bin" / "gh"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text(GH_STUB)
    stub.chmod(0o755)
    (project / "reviews.json").write_text(json.dumps(reviews))
    (project / "out.txt").write_text("")
    env = {
        "PATH": f"{project / 'bin'}:/usr/bin:/bin",
        "GITHUB_REPOSITORY": "team/wine",
        "GITHUB_RUN_ID": "42",
        "GITHUB_OUTPUT": str(project / "out.txt"),
    }
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, (project / "out.txt").read_text(), done.stdout


@pytest.mark.parametrize(("environment", "login"), [("production", "carol"), ("qa", "dave")])
def test_github_approver_is_who_approved_that_environment(
    custom_project: Path, environment: str, login: str
) -> None:
    code, output, _ = _who_approved(custom_project, environment)

    assert code == 0
    assert output == f"login={login}\n"
    assert (custom_project / "gh-path.txt").read_text().strip() == "repos/team/wine/actions/runs/42/approvals"


def test_github_approver_missing_fails_the_job(custom_project: Path) -> None:
    reviews = [r for r in REVIEWS if r["user"]["login"] != "carol"]  # production only rejected
    code, output, stdout = _who_approved(custom_project, "production", reviews)

    assert code == 1
    assert output == ""
    assert "::error::no approval of environment production" in stdout
