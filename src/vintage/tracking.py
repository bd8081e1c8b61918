"""MLflow setup: the embedded default (sqlite store + local artifacts under the state directory) or a
remote tracking server (``tracking_uri`` / ``MLFLOW_TRACKING_URI``).

MLflow is imported lazily, only when a session is opened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vintage.errors import TrackingError, first_line
from vintage.fsutil import shown_path, user_cache_dir

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from vintage.config import Spec

_QUIET_LOGGERS = ("mlflow", "alembic", "urllib3", "git")


@dataclass(frozen=True)
class TrackingTarget:
    """Where runs and models go. ``store_path``/``artifact_root`` are set for the embedded store only."""

    uri: str
    state_dir: Path
    store_path: Path | None = None
    artifact_root: Path | None = None

    @property
    def embedded(self) -> bool:
        """True for the default sqlite store under the state directory."""
        return self.store_path is not None

    @property
    def display(self) -> str:
        """The URI with any user:password removed, safe to print."""
        return redact_uri(self.uri)


Resolve = Callable[[str], str]


def resolve_target(spec: Spec, resolve: Resolve | None = None) -> TrackingTarget:
    """Resolve the tracking URI without importing MLflow (env > vintage.yaml > embedded default).

    ``resolve`` substitutes ``${secret:...}`` references in the URI (a :class:`SecretReader`'s
    ``resolve``); without it a URI holding a reference is an error.
    """
    state_dir = spec.state_dir.resolve()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or spec.tracking_uri
    if uri and "${secret:" in uri:
        if resolve is None:
            raise TrackingError("tracking_uri holds a secret reference, but no secret reader was given")
        uri = resolve(uri)
    if uri and not uri.startswith("sqlite:///"):
        return TrackingTarget(uri, state_dir)
    # Any sqlite store is handled like the embedded one: artifacts live next to the database file.
    store = Path(uri.removeprefix("sqlite:///")) if uri else state_dir / "mlflow.db"
    return TrackingTarget(f"sqlite:///{store}", state_dir, store, store.parent / "artifacts")


def redact_uri(uri: str) -> str:
    """Drop credentials from a URI (``https://user:token@host`` -> ``https://host``)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return uri


@dataclass
class TrackingSession:
    """An open connection to the tracking store and registry, with the experiment resolved."""

    target: TrackingTarget
    client: MlflowClient
    experiment_id: str


def quiet_mlflow(verbose: bool = False) -> None:
    """Keep MLflow's INFO chatter and deprecation warnings out of vintage's output (unless verbose)."""
    level = logging.INFO if verbose else logging.WARNING
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)
    # pickle/cloudpickle are chosen on purpose (training.model_format); MLflow warns about them at WARNING.
    logging.getLogger("mlflow.sklearn").setLevel(logging.INFO if verbose else logging.ERROR)
    if not verbose:
        warnings.filterwarnings("ignore", module=r"mlflow(\..*)?")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*(Pydantic|pkg_resources|Starlette).*")


def open_session(
    spec: Spec, *, create_experiment: bool = True, resolve: Resolve | None = None
) -> TrackingSession:
    """Point MLflow at the target, create the embedded store on first use, resolve the experiment.

    ``resolve`` resolves ``${secret:...}`` references in ``tracking_uri`` and ``tracking_token`` (the
    token becomes ``MLFLOW_TRACKING_TOKEN``, which MLflow sends as a bearer token).

    Raises:
        TrackingError: the server cannot be reached, the store cannot be created, or the experiment is
            deleted.
    """
    target = resolve_target(spec, resolve)
    if spec.tracking_token:
        if resolve is None:
            raise TrackingError("tracking_token is set, but no secret reader was given to resolve it")
        os.environ["MLFLOW_TRACKING_TOKEN"] = resolve(spec.tracking_token)
    _mlflow_defaults()
    if not target.embedded:
        check_reachable(target)
    import mlflow
    from mlflow.exceptions import MlflowException

    quiet_mlflow(verbose=logging.getLogger("vintage").isEnabledFor(logging.DEBUG))
    mlflow.set_tracking_uri(target.uri)
    mlflow.set_registry_uri(target.uri)
    try:
        client = _init_embedded(target) if target.embedded else _client(target)
        exp_id = _experiment_id(spec.experiment, target, client, create=create_experiment)
    except MlflowException as exc:
        raise TrackingError(
            f"tracking store at {target.display} refused the request: {first_line(exc)}",
            hint="check the tracking URI and that the server runs; --verbose shows the full error",
        ) from exc
    return TrackingSession(target, client, exp_id)


def _mlflow_defaults() -> None:
    # MLflow writes "View run ... at: URL" to stdout for remote stores; that would corrupt --json output.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow retries an unreachable server for minutes by default; a CLI user wants an answer.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")


def check_reachable(target: TrackingTarget, timeout: float = 5.0) -> None:
    """For http(s) URIs, fail fast with a clear message when nothing answers."""
    parts = urllib.parse.urlsplit(target.uri)
    if parts.scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(target.uri.rstrip("/") + "/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # something answers (auth or proxy in front): let MLflow report the details
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {target.display}",
            hint="start the server, or unset MLFLOW_TRACKING_URI / tracking_uri to use the embedded store",
        ) from exc


def _client(target: TrackingTarget) -> MlflowClient:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=target.uri, registry_uri=target.uri)


def _init_embedded(target: TrackingTarget) -> MlflowClient:
    from filelock import FileLock

    assert target.artifact_root is not None and target.store_path is not None
    store = target.store_path
    locks = target.state_dir / "locks"
    try:
        target.artifact_root.mkdir(parents=True, exist_ok=True)
        store.parent.mkdir(parents=True, exist_ok=True)
        locks.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(
            f"cannot create the state directory {target.state_dir.name}: {exc.strerror}"
        ) from exc
    # Creating a store runs MLflow's migrations (not transactional on sqlite): a store is created in a
    # temp file and renamed into place, so a crash or a full disk leaves no store or a complete one.
    # Serialised, as two vintage processes migrating one file at once fail with "duplicate column".
    lock = FileLock(str(locks / "store.lock"), timeout=300)
    try:
        lock.acquire()
    except OSError as exc:  # a read-only state directory
        raise TrackingError(
            f"cannot open the tracking store {shown_path(store)}: {exc.strerror or first_line(exc)}",
            hint="check that this user may write the state directory"
            " (vintage runs list, status and audit only need to read it)",
        ) from exc
    try:
        return _open_or_create(target)
    finally:
        lock.release()


def _open_or_create(target: TrackingTarget) -> MlflowClient:
    """Open the embedded store, creating it (or replacing a half-created one); the caller holds the lock."""
    assert target.store_path is not None
    store = target.store_path
    for stale in store.parent.glob(f".{store.name}.*.tmp"):  # left by a killed creator
        stale.unlink(missing_ok=True)
    if not store.exists():
        _create_store(target)
    try:
        return _open_store(target)
    except Exception as exc:  # MLflow, SQLAlchemy and sqlite3 errors alike
        failure = exc
    if not _half_created(store):
        raise TrackingError(
            f"the tracking store {shown_path(store)} cannot be opened: {first_line(failure)}",
            hint="if MLflow was upgraded, back the file up and run `mlflow db upgrade sqlite:///"
            f"{shown_path(store)}`; otherwise restore it from a backup",
        ) from failure
    aside = store.with_name(f"{store.name}.broken-{time.strftime('%Y%m%dT%H%M%S')}")
    _forget_engines(target.uri)
    store.replace(aside)
    logging.getLogger(__name__).warning(
        "the tracking store %s was left half-created by an interrupted command (%s); moved it to %s"
        " and created a new one",
        shown_path(store),
        first_line(failure, limit=120),
        aside.name,
    )
    _create_store(target)
    return _open_store(target)


def _open_store(target: TrackingTarget) -> MlflowClient:
    client = _client(target)
    client.search_experiments(max_results=1)
    client.search_registered_models(max_results=1)
    return client


def _create_store(target: TrackingTarget) -> None:
    """Create the sqlite store with MLflow's full schema in a temp file, then rename it into place.

    MLflow creates a store by running each of its schema migrations (about 1.5 s of CPU). An empty store
    is the same file every time, but for the default experiment's artifact location and times: it is
    made once per MLflow version and user (:func:`_template`), copied, and that one row set for this
    store. Without a usable template the store is created by MLflow directly.
    """
    assert target.store_path is not None and target.artifact_root is not None
    store = target.store_path
    fd, name = tempfile.mkstemp(dir=store.parent, prefix=f".{store.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        template = _template()
        if template is not None:
            shutil.copyfile(template, tmp)
            _own_default_experiment(tmp, target.artifact_root)
        else:
            _migrate(tmp, target.artifact_root)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        tmp.replace(store)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise TrackingError(
            f"cannot create the tracking store {shown_path(store)}: {first_line(exc)}",
            hint="free disk space (or fix the directory's permissions) and run the command again;"
            " nothing was written",
        ) from exc
    with contextlib.suppress(OSError):
        dir_fd = os.open(store.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _migrate(path: Path, artifact_root: Path) -> None:
    """Create an empty store at ``path`` with MLflow's own code (every schema migration)."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    uri = f"sqlite:///{path}"
    try:
        SqlAlchemyStore(uri, artifact_root.as_uri())  # type: ignore[no-untyped-call]
        RegistryStore(uri)  # type: ignore[no-untyped-call]
    finally:
        _forget_engines(uri)


def _template() -> Path | None:
    """An empty store made by :func:`_migrate` for this MLflow version, in the user's cache
    (``~/.cache/vintage/mlflow-stores``); made on first use. ``None`` when it cannot be made or read, or
    does not hold MLflow's latest schema revision."""
    import mlflow
    from filelock import FileLock
    from mlflow.store.db.utils import _get_latest_schema_revision

    try:
        cache = user_cache_dir("mlflow-stores")
        path = cache / f"empty-mlflow-{mlflow.__version__}.db"
        with FileLock(str(cache / f"{path.name}.lock"), timeout=300):
            if not path.exists():
                fd, name = tempfile.mkstemp(dir=cache, prefix=f".{path.name}.", suffix=".tmp")
                os.close(fd)
                try:
                    _migrate(Path(name), cache / "artifacts")
                    Path(name).replace(path)
                finally:
                    Path(name).unlink(missing_ok=True)
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
            experiments = db.execute("SELECT COUNT(*) FROM experiments").fetchone()[0]
    except Exception:  # a read-only home, a full disk, a damaged file: MLflow creates the store
        logging.getLogger(__name__).debug("no usable store template", exc_info=True)
        return None
    head = _get_latest_schema_revision()  # type: ignore[no-untyped-call]
    return path if revision == [(head,)] and experiments == 1 else None


def _own_default_experiment(path: Path, artifact_root: Path) -> None:
    """Give a copied template's default experiment (id 0) this store's artifact location and the time
    now, as MLflow does when it creates a store."""
    now = int(time.time() * 1000)
    with contextlib.closing(sqlite3.connect(path)) as db:
        with db:
            changed = db.execute(
                "UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ?"
                " WHERE experiment_id = 0",
                (f"{artifact_root.as_uri()}/0", now, now),
            ).rowcount
        if changed != 1:
            raise sqlite3.DatabaseError("the store template has no default experiment")


def _forget_engines(uri: str) -> None:
    """Close MLflow's cached SQLAlchemy engines for ``uri`` (they would keep the old file open)."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for cls in (SqlAlchemyStore, RegistryStore):
        engine = cls._engine_map.pop(uri, None)
        if engine is not None:
            engine.dispose()


def _half_created(store: Path) -> bool:
    """True for a store whose migrations never finished (no ``alembic_version`` row, or one short of
    MLflow's head) and that holds no run, registered model or logged model: a store with data is
    never moved aside."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    try:
        conn = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = None
        if "alembic_version" in tables:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            version = row[0] if row else None
        if version == _get_latest_schema_revision():  # type: ignore[no-untyped-call]
            return False
        for table in ("runs", "registered_models", "logged_models"):
            if table in tables and conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():
                return False
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return True


def _experiment_id(name: str, target: TrackingTarget, client: MlflowClient, *, create: bool) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise TrackingError(
                f"experiment {name!r} is deleted in the tracking store",
                hint=f"restore it (mlflow experiments restore --experiment-id {exp.experiment_id})"
                " or choose another experiment name",
            )
        return str(exp.experiment_id)
    if not create:
        raise TrackingError(f"experiment {name!r} does not exist yet", hint="run `vintage train` first")
    location = target.artifact_root.as_uri() if target.artifact_root else None
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException as exc:  # created by a concurrent vintage process in the meantime
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        del exc
        return str(again.experiment_id)
