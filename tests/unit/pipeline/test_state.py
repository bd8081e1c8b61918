"""StateStore: a damaged pipeline.db is an error naming the file (never an empty history), reads work in a
read-only state directory, and the database is created all at once."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from vintage.errors import PipelineError
from vintage.pipeline.state import DB_FILE, StateStore

STAGES = [("build", None, ["validate", "train"])]


def damage(path: Path, how: str) -> None:
    """Damage a database file the way a full disk, a bad copy or a stray write would."""
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    else:
        path.write_bytes(b"not a database, just some text\n" * 300)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    s = StateStore(tmp_path / ".vintage")
    s.create_run("r1", "me", "digest", STAGES, {})
    return s


@pytest.mark.parametrize(
    ("how", "problem"),
    [
        ("empty", "is empty (0 bytes)"),
        ("truncated", "database disk image is malformed"),
        ("garbage", "is not an SQLite database"),
    ],
)
def test_a_damaged_database_is_an_error_naming_the_file(
    store: StateStore, how: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(store.state_dir.parent)
    damage(store.path, how)
    before = store.path.read_bytes()
    for call in (store.runs, lambda: store.run("r1"), lambda: store.exists("r1")):
        with pytest.raises(PipelineError) as exc:
            call()
        assert exc.value.headline == f"the pipeline state .vintage/pipeline.db is damaged: {problem}"
        assert "mv .vintage/pipeline.db .vintage/pipeline.db.broken" in (exc.value.hint or "")
    with pytest.raises(PipelineError, match="is damaged"):
        store.create_run("r2", "me", "digest", STAGES, {})  # a write neither repairs nor replaces it
    assert store.path.read_bytes() == before


def test_no_database_yet_is_an_empty_history_and_reading_creates_nothing(tmp_path: Path) -> None:
    s = StateStore(tmp_path / ".vintage")
    assert s.runs() == [] and not s.exists("r1") and s.release("r1") is None
    assert not (tmp_path / ".vintage").exists()


def test_the_database_is_created_private_and_whole(store: StateStore) -> None:
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert not list(store.state_dir.glob(f".{DB_FILE}.*"))
    assert [r.id for r in store.runs()] == ["r1"]
