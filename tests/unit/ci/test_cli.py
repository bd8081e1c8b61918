"""``vintage ci render`` on the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def test_render_to_stdout(repo_project: Path, cli: Any) -> None:
    result = cli("ci", "render", "github-actions", "--allow-local-state")

    assert result.code == 0, result.err
    assert list(yaml.safe_load(result.out)["jobs"]) == ["build", "staging", "production"]


def test_render_to_a_file(repo_project: Path, cli: Any) -> None:
    result = cli("ci", "render", "azure-pipelines", "--allow-local-state", "-o", "ci/azure-pipelines.yml")

    assert result.code == 0, result.err
    assert result.out == ""
    text = (repo_project / "ci" / "azure-pipelines.yml").read_text()
    assert [s["stage"] for s in yaml.safe_load(text)["stages"]] == ["build", "staging", "production"]


def test_local_state_refused_exit_2_one_line(repo_project: Path, cli: Any) -> None:
    result = cli("ci", "render", "github-actions")

    assert result.code == 2
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert lines[0].startswith("error: ") and "different machines" in lines[0]
    assert lines[1].startswith("hint: ") and "--allow-local-state" in lines[1]


def test_unknown_ci_exit_2(repo_project: Path, cli: Any) -> None:
    result = cli("ci", "render", "jenkins", "--allow-local-state")

    assert result.code == 2
    assert "github-actions, azure-pipelines" in result.err


def test_help_does_not_import_the_ci_package() -> None:
    code = (
        "import sys\n"
        "from vintage.cli.main import run\n"
        "try:\n"
        "    run(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('vintage.ci' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert out.strip().splitlines()[-1] == "False"
