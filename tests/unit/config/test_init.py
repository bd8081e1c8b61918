"""`vintage init`'s files: the template is the repository's vintage.yaml, .gitignore lines are added once."""

from __future__ import annotations

from pathlib import Path

import pytest

from vintage.config import load_spec
from vintage.config.init import IGNORED, new_project, template
from vintage.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def test_the_template_is_the_repositorys_vintage_yaml() -> None:
    assert template() == (REPO / "vintage.yaml").read_text(encoding="utf-8")


def test_a_new_project_validates_and_ignores_its_state(tmp_path: Path) -> None:
    made = new_project(tmp_path / "a" / "b")
    assert made.config == tmp_path / "a" / "b" / "vintage.yaml"
    spec = load_spec(made.config)
    assert spec.model_name == "winequality" and set(spec.environments) == {"staging", "production"}
    assert made.ignore_added == IGNORED
    lines = (tmp_path / "a" / "b" / ".gitignore").read_text().splitlines()
    assert [line for line in lines if not line.startswith("#")] == list(IGNORED)


def test_an_existing_config_is_kept_unless_forced_and_gitignore_keeps_its_lines(tmp_path: Path) -> None:
    (tmp_path / "vintage.yaml").write_text("mine: true\n")
    (tmp_path / ".gitignore").write_text("node_modules/\n.vintage/")  # no newline at the end
    with pytest.raises(ConfigError, match=r"vintage\.yaml already exists; nothing was changed"):
        new_project(tmp_path)
    assert (tmp_path / "vintage.yaml").read_text() == "mine: true\n"
    made = new_project(tmp_path, force=True)
    assert (tmp_path / "vintage.yaml").read_text() == template()
    assert made.ignore_added == ("__pycache__/", "*.pyc")
    lines = (tmp_path / ".gitignore").read_text().splitlines()
    assert lines[:2] == ["node_modules/", ".vintage/"] and lines[-2:] == ["__pycache__/", "*.pyc"]
    assert new_project(tmp_path, force=True).ignore_added == ()  # nothing added twice


def test_a_file_is_not_a_project_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        new_project(tmp_path / "f")
