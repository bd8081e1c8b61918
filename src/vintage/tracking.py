"""MLflow setup: the embedded default (sqlite store + local artifacts under the state directory) or a
remote tracking server (``tracking_uri`` / ``MLFLOW_TRACKING_URI``).

MLflow is imported lazily, only when a session is opened.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vintage.errors import TrackingError, first_line

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
    locks = target.state_dir / "locks"
    try:
        target.artifact_root.mkdir(parents=True, exist_ok=True)
        target.store_path.parent.mkdir(parents=True, exist_ok=True)
        locks.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(
            f"cannot create the state directory {target.state_dir.name}: {exc.strerror}"
        ) from exc
    # The first use of a store creates (migrates) the sqlite schema, once for tracking and once for the
    # registry; two vintage processes doing it at once fail with "duplicate column". Serialise it.
    with FileLock(str(locks / "store.lock"), timeout=300):
        client = _client(target)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    return client


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
