"""The embedded store: created all-or-nothing; a half-migrated store (left by an older version killed or
out of disk space mid-creation) is moved aside with one warning and created again; a store with data
never is."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from vintage.config import Spec, load_spec
from vintage.errors import TrackingError
from vintage.tracking import open_session


@pytest.fixture
def spec(project: Path) -> Spec:
    return load_spec(project / "vintage.yaml")


def half_migrated(db: Path) -> None:
    """What MLflow's migrations leave when interrupted inside one of them: the initial tables, the
    alembic version of the previous migration, and a table of the interrupted one already created."""
    import sqlalchemy
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    db.parent.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{db}"
    engine = sqlalchemy.create_engine(uri)
    InitialBase.metadata.create_all(engine)
    config = _get_alembic_config(uri)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "a5b4c3d2e1f0")  # the one before "add guardrails tables"
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE guardrails (guardrail_id VARCHAR(36) PRIMARY KEY)")
    engine.dispose()


def test_a_new_store_is_created_complete_and_leaves_no_temp_file(spec: Spec, project: Path) -> None:
    session = open_session(spec)
    state = project / ".vintage"
    assert session.client.get_experiment(session.experiment_id).name == "DrinksQuality"
    assert not list(state.glob(".mlflow.db.*"))
    with sqlite3.connect(state / "mlflow.db") as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_half_migrated_store_is_moved_aside_and_created_again(
    spec: Spec, project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = project / ".vintage" / "mlflow.db"
    half_migrated(db)
    with caplog.at_level(logging.WARNING, logger="vintage.tracking"):
        session = open_session(spec)
    assert session.client.search_registered_models() == []
    [aside] = db.parent.glob("mlflow.db.broken-*")
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning == (
        "the tracking store .vintage/mlflow.db was left half-created by an interrupted command"
        " ((sqlite3.OperationalError) table guardrails already exists); moved it to"
        f" {aside.name} and created a new one"
    )
    open_session(spec)  # and the next start is quiet
    assert len(caplog.records) == 1


def test_store_with_runs_that_cannot_be_opened_is_an_error_and_is_kept(spec: Spec, project: Path) -> None:
    db = project / ".vintage" / "mlflow.db"
    half_migrated(db)
    with sqlite3.connect(db) as con:
        con.execute(
            "INSERT INTO experiments (experiment_id, name, lifecycle_stage) VALUES (7, 'e', 'active')"
        )
        con.execute(
            "INSERT INTO runs (run_uuid, experiment_id, lifecycle_stage, status)"
            " VALUES ('r', 7, 'active', 'RUNNING')"
        )
    before = db.read_bytes()
    with pytest.raises(TrackingError) as exc:
        open_session(spec)
    assert exc.value.headline.startswith("the tracking store .vintage/mlflow.db cannot be opened: ")
    assert "mlflow db upgrade" in (exc.value.hint or "")
    assert db.read_bytes() == before and not list(db.parent.glob("mlflow.db.broken-*"))


def test_stale_temp_file_of_a_killed_creator_is_removed(spec: Spec, project: Path) -> None:
    state = project / ".vintage"
    state.mkdir()
    (state / ".mlflow.db.abc123.tmp").write_bytes(b"half")
    open_session(spec)
    assert not list(state.glob(".mlflow.db.*"))


def _schema(db: Path) -> list[tuple[str, list[str]]]:
    """Each table's and index's definition, its lines sorted: MLflow's migrations order a table's CHECK
    constraints by hash, so two stores it creates in two processes differ in that order only."""
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
        return [(str(n), sorted(line.strip().rstrip(",") for line in str(s).splitlines())) for n, s in rows]


def test_a_store_copied_from_the_template_is_what_mlflow_creates(
    spec: Spec, project: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first store of a user makes the template (MLflow's migrations); the next one is a copy of it
    with its own default experiment: same schema and revision as a store MLflow made itself."""
    from vintage import tracking

    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    made: list[Path] = []
    migrate = tracking._migrate
    monkeypatch.setattr(tracking, "_migrate", lambda path, root: made.append(path) or migrate(path, root))
    open_session(spec)
    [template] = (cache / "vintage" / "mlflow-stores").glob("empty-mlflow-*.db")
    assert len(made) == 1 and made[0].parent == template.parent  # the template, not the store itself
    other = project / "other"
    monkeypatch.setenv("VINTAGE_STATE_DIR", str(other))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # exported by the first open_session
    session = open_session(load_spec(project / "vintage.yaml"))
    assert len(made) == 1  # copied, not migrated again
    reference = tmp_path_factory.mktemp("reference") / "mlflow.db"
    migrate(reference, reference.parent / "artifacts")
    assert _schema(other / "mlflow.db") == _schema(reference)
    with sqlite3.connect(other / "mlflow.db") as con:
        [(location, created)] = con.execute(
            "SELECT artifact_location, creation_time FROM experiments WHERE experiment_id = 0"
        )
    assert location == f"{(other / 'artifacts').resolve().as_uri()}/0"
    assert created > 0
    assert session.client.get_experiment("0").artifact_location == location


@pytest.mark.parametrize("damage", ["garbage", "old revision"])
def test_an_unusable_template_is_not_copied(
    spec: Spec,
    project: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    damage: str,
) -> None:
    import mlflow

    from vintage import tracking

    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    stores = cache / "vintage" / "mlflow-stores"
    stores.mkdir(parents=True)
    template = stores / f"empty-mlflow-{mlflow.__version__}.db"
    if damage == "garbage":
        template.write_bytes(b"not a database")
    else:
        half_migrated(template)
    session = open_session(spec)
    assert session.client.get_experiment(session.experiment_id).name == "DrinksQuality"
    reference = tmp_path_factory.mktemp("reference") / "mlflow.db"
    tracking._migrate(reference, reference.parent / "artifacts")
    assert _schema(project / ".vintage" / "mlflow.db") == _schema(reference)
