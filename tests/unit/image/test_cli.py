"""`vintage image` errors that need no builder run: a one-line headline and a hint, the right exit code."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_missing_builder_says_how_to_install(project: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(project))  # no buildah on it
    result = cli("image", "build", "--model", "1")
    assert result.code == 1
    assert "error: buildah is not installed" in result.err
    assert "install-container-deps.sh" in result.err


def test_unknown_builder_is_a_usage_error(project: Path, cli) -> None:
    result = cli("image", "build", "--builder", "kaniko")
    assert result.code == 2
    assert "unknown image builder 'kaniko'" in result.err


def test_bad_registry_is_a_usage_error(cli) -> None:
    result = cli("image", "push", "localhost/x:1", "--registry", "http://example")
    assert result.code == 2
    assert "invalid registry" in result.err
