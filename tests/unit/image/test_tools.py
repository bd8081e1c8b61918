"""vintage.image.tools: a failing or missing tool becomes one headline (its last error line) and a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from vintage.errors import ImageError
from vintage.image import tools


def test_a_failing_tool_gives_its_last_error_line() -> None:
    with pytest.raises(ImageError) as exc:
        tools.run(["sh", "-c", "echo first >&2; echo 'Error: the real reason' >&2; exit 3"], "cannot do it")
    assert exc.value.headline == "cannot do it: Error: the real reason"
    assert exc.value.details == ["first", "Error: the real reason"]


def test_a_missing_tool_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ImageError, match="skopeo is not installed") as exc:
        tools.run(["skopeo", "inspect"], "cannot inspect")
    assert exc.value.hint == tools.INSTALL_HINT


def test_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert tools.cache_dir() == tmp_path / "vintage" / "image"
    assert tools.cache_dir().is_dir()
