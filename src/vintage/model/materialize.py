"""Copy a registered model out of MLflow into a local directory the scoring server can load.

This is the only part of :mod:`vintage.serving` that talks to MLflow (imported lazily, inside the
functions). The directory it produces is a plain MLflow model directory plus ``vintage-model.json``
(name, version, run id, URI, time, and for plain linear models their coefficients, so the server can
score them with NumPy alone and start without importing scikit-learn).

Downloads land in a hidden temporary directory inside ``dest`` and are renamed into place only when
complete and loadable, so a killed download never leaves a directory that looks like a model. A
directory that already holds the same version (same run) is reused.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

import numpy as np

from vintage.errors import ServingError, first_line
from vintage.model import digest as model_digest
from vintage.model.load import (
    MLMODEL,
    RTOL,
    VINTAGE_META,
    LoadedModel,
    file_sha256,
    load_model_dir,
    read_meta,
)
from vintage.tracking import TrackingTarget, check_reachable, redact_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

log = logging.getLogger(__name__)

META_FORMAT: Final = 1
_HINT_LIST = "`vintage models` lists the registered versions and their aliases"
_NOT_FOUND: Final = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Resolved:
    """A model URI resolved against the tracking store: what to download and where to put it."""

    requested: str
    source_uri: str
    artifact_uri: str
    dirname: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None


def materialize(model_uri: str, dest: Path, tracking_uri: str | None = None) -> Path:
    """Make ``model_uri`` available as a local model directory under ``dest`` and return its path.

    Args:
        model_uri: ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``models:/<model-id>``,
            ``runs:/<run_id>/<path>``, or a local model directory (only validated, then returned).
        dest: Directory holding materialised models (``dest/<name>-v<version>``); created if needed.
        tracking_uri: Tracking (and registry) store; None lets MLflow resolve it (``MLFLOW_TRACKING_URI``).

    Raises:
        ServingError: unknown model, alias, version or run; unsupported URI; the store refused the
            request; or the downloaded model cannot be loaded.
        TrackingError: an http(s) tracking server does not answer.
    """
    local = _local_path(model_uri)
    if local is not None:
        load_model_dir(local)
        return local
    client = _client(tracking_uri)
    target = resolve(client, model_uri)
    final = dest / target.dirname
    if is_complete(final, target):
        log.info("reusing %s for %s", final, model_uri)
        return final
    dest.mkdir(parents=True, exist_ok=True)
    return _download(target, dest, final, tracking_uri)


def resolve(client: MlflowClient, model_uri: str) -> Resolved:
    """Resolve a ``models:/`` or ``runs:/`` URI to a pinned URI, artifact location, name, version and run.

    An alias is resolved once, here, and the version it points to is downloaded: an alias moved
    meanwhile cannot mix two versions.

    Raises:
        ServingError: the URI is malformed or names something the store does not have.
    """
    if model_uri.startswith("runs:/"):
        return _resolve_run(client, model_uri)
    if not model_uri.startswith("models:/"):
        raise ServingError(
            f"unsupported model URI {model_uri!r}",
            hint="use models:/<name>@<alias>, models:/<name>/<version>, runs:/<run_id>/<path> or a directory",
        )
    rest = model_uri.removeprefix("models:/").strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return _resolve_alias(client, model_uri, name, alias)
    if "/" in rest:
        name, version = rest.split("/", 1)
        return _resolve_version(client, model_uri, name, version)
    return _resolve_logged_model(client, model_uri, rest)


def is_complete(final: Path, target: Resolved) -> bool:
    """True when ``final`` already holds ``target`` (same version and run), fully written, and its files
    are still the ones recorded at materialisation (a changed or older copy is downloaded again)."""
    if not (final / MLMODEL).is_file() or not (final / VINTAGE_META).is_file():
        return False
    try:
        meta = read_meta(final)
    except ServingError:
        return False
    if not (
        meta.get("source_uri") == target.source_uri
        and meta.get("run_id") == target.run_id
        and meta.get("version") == target.version
    ):
        return False
    try:
        model_digest.verify(final)
    except ServingError as exc:
        log.warning("materialised copy %s is not reused: %s", final.name, exc.headline)
        return False
    return True


# --- resolving ---------------------------------------------------------------------------------------


def _local_path(model_uri: str) -> Path | None:
    if model_uri.startswith("file:"):
        return Path(unquote(urlsplit(model_uri).path))
    if model_uri.startswith(("models:/", "runs:/")) or "://" in model_uri:
        return None
    return Path(model_uri).expanduser()


def _client(tracking_uri: str | None) -> MlflowClient:
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        # MLflow would create an empty store there and then report every model as unknown.
        raise ServingError(
            f"no tracking store at {uri}", hint="run `vintage train` first, or check the tracking URI"
        )
    check_reachable(TrackingTarget(uri, Path.cwd()))
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=tracking_uri or mlflow.get_registry_uri())


def _resolve_alias(client: MlflowClient, uri: str, name: str, alias: str) -> Resolved:
    from mlflow.exceptions import MlflowException

    if not name or not alias or "/" in alias:
        raise ServingError(f"malformed model URI {uri!r}", hint="expected models:/<name>@<alias>")
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise _lookup_error(client, exc, uri, name, f"has no alias {alias!r}") from exc
    return _registered(client, uri, name, str(mv.version), mv.run_id)


def _resolve_version(client: MlflowClient, uri: str, name: str, version: str) -> Resolved:
    from mlflow.exceptions import MlflowException

    if not name or not version.isdigit():
        raise ServingError(
            f"malformed model URI {uri!r}",
            hint="expected models:/<name>/<version number> or models:/<name>@<alias> (no stages)",
        )
    try:
        mv = client.get_model_version(name, version)
    except MlflowException as exc:
        raise _lookup_error(client, exc, uri, name, f"has no version {version}") from exc
    return _registered(client, uri, name, str(mv.version), mv.run_id)


def _registered(client: MlflowClient, uri: str, name: str, version: str, run_id: str | None) -> Resolved:
    """The version's own artifact location: MLflow 3.17.2 resolves ``models:/`` download URIs against
    the global registry URI, not the one passed to ``download_artifacts``, so they are not used."""
    from mlflow.exceptions import MlflowException

    try:
        location = client.get_model_version_download_uri(name, version)
    except MlflowException as exc:
        raise _store_error(exc, uri) from exc
    return Resolved(
        uri, f"models:/{name}/{version}", location, f"{_safe(name)}-v{version}", name, version, run_id or None
    )


def _resolve_run(client: MlflowClient, uri: str) -> Resolved:
    from mlflow.exceptions import MlflowException

    run_id, _, path = uri.removeprefix("runs:/").strip("/").partition("/")
    if not run_id or not path:
        raise ServingError(f"malformed model URI {uri!r}", hint="expected runs:/<run_id>/<artifact path>")
    try:
        run = client.get_run(run_id)
        location = _run_model_location(client, run.info.experiment_id, run_id, path)
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:
            raise _store_error(exc, uri) from exc
        raise ServingError(
            f"no run {run_id} in the tracking store", hint="`vintage runs` lists the runs"
        ) from exc
    if location is None:  # a model logged as a plain run artifact (MLflow 2 style)
        if not client.list_artifacts(run_id, path):
            raise ServingError(
                f"run {run_id} has no model {path!r} ({uri})", hint="`vintage runs` lists the runs"
            )
        location = f"{run.info.artifact_uri.rstrip('/')}/{path}"
    pinned = f"runs:/{run_id}/{path}"
    return Resolved(uri, pinned, location, f"run-{run_id}-{_safe(path)}", run_id=run_id)


def _run_model_location(client: MlflowClient, experiment_id: str, run_id: str, path: str) -> str | None:
    """Where the model a run logged as ``path`` lives (MLflow 3 logs models outside run artifacts).

    MLflow's own ``runs:/`` download resolves logged models against the global tracking URI, so the
    location is looked up here with the caller's client.
    """
    name, _, rest = path.partition("/")
    quoted = name.replace("'", "\\'")
    token: str | None = None
    while True:
        page = client.search_logged_models(
            experiment_ids=[experiment_id], filter_string=f"name = '{quoted}'", page_token=token
        )
        for model in page:
            if model.source_run_id == run_id:
                return (
                    f"{model.artifact_location.rstrip('/')}/{rest}" if rest else str(model.artifact_location)
                )
        token = page.token
        if not token:
            return None


def _resolve_logged_model(client: MlflowClient, uri: str, model_id: str) -> Resolved:
    from mlflow.exceptions import MlflowException

    try:
        logged = client.get_logged_model(model_id)
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:
            raise _store_error(exc, uri) from exc
        raise ServingError(
            f"no logged model {model_id!r} in the tracking store",
            hint=f"for a registered model use models:/<name>@<alias> or models:/<name>/<n>; {_HINT_LIST}",
        ) from exc
    return Resolved(
        uri,
        f"models:/{model_id}",
        logged.artifact_location,
        _safe(model_id),
        run_id=logged.source_run_id or None,
    )


def _lookup_error(client: MlflowClient, exc: MlflowException, uri: str, name: str, what: str) -> ServingError:
    """A one-line error saying whether the model or only its alias/version is missing."""
    from mlflow.exceptions import MlflowException

    if exc.error_code not in _NOT_FOUND:
        return _store_error(exc, uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        return ServingError(f"no registered model named {name!r} ({uri})", hint=_HINT_LIST)
    return ServingError(f"registered model {name!r} {what} ({uri})", hint=_HINT_LIST)


def _store_error(exc: MlflowException, uri: str) -> ServingError:
    return ServingError(
        f"the tracking store refused to resolve {uri}: {first_line(exc)}",
        hint="check the tracking URI and that the server runs; --verbose shows the full error",
    )


# --- downloading -------------------------------------------------------------------------------------


def _download(target: Resolved, dest: Path, final: Path, tracking_uri: str | None) -> Path:
    """Download into a hidden temporary directory in ``dest``, validate, then rename into place."""
    import mlflow
    from mlflow.exceptions import MlflowException

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.dirname}.partial-", dir=dest))
    try:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=target.artifact_uri,
                dst_path=str(tmp / "download"),
                tracking_uri=tracking_uri,
                registry_uri=tracking_uri,
            )
        except MlflowException as exc:
            raise ServingError(f"cannot download {target.requested}: {first_line(exc)}") from exc
        model_dir = Path(local)
        _write_meta(model_dir, target, load_model_dir(model_dir), tracking_uri)
        model_digest.write_manifest(model_dir)  # last: the digest covers every file, metadata included
        return _publish(model_dir, final, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_meta(model_dir: Path, target: Resolved, model: LoadedModel, tracking_uri: str | None) -> None:
    """Write ``vintage-model.json``; keep the linear coefficients only if they reproduce the model."""
    meta: dict[str, Any] = {
        "format": META_FORMAT,
        "name": target.name,
        "version": target.version,
        "run_id": target.run_id or model.info.run_id,
        "model_uri": target.requested,
        "source_uri": target.source_uri,
        "tracking_uri": redact_uri(tracking_uri) if tracking_uri else None,
        "materialized_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    file = model_dir / VINTAGE_META
    if model.linear is not None:
        model_file = model_dir / _model_file(model_dir)
        meta["linear"] = {**model.linear.to_json(), "model_sha256": file_sha256(model_file)}
        file.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if _agrees(load_model_dir(model_dir), model):
            return
        log.warning("stored linear coefficients do not reproduce the model; the server will unpickle it")
        del meta["linear"]
    file.write_text(json.dumps(meta, indent=2), encoding="utf-8")


def _model_file(model_dir: Path) -> str:
    import yaml

    mlmodel = yaml.safe_load((model_dir / MLMODEL).read_text(encoding="utf-8"))
    return str(mlmodel["flavors"]["sklearn"]["pickled_model"])


def _agrees(fast: LoadedModel, model: LoadedModel) -> bool:
    """The directory reloaded from its stored coefficients predicts what the estimator predicts."""
    rows = model.example()
    probe = rows if rows is not None else np.ones((1, len(model.info.columns)))
    return fast.predictor == "linear" and bool(
        np.allclose(fast.predict(probe), model.predict(probe), rtol=RTOL)
    )


def _publish(model_dir: Path, final: Path, target: Resolved) -> Path:
    """Rename the complete directory into place; a concurrent identical download may win the race."""
    if is_complete(final, target):  # a concurrent identical download finished first
        return final
    if final.exists():  # a stale or different copy (the store was rebuilt): move it out of the way
        stale = Path(tempfile.mkdtemp(prefix=f".{target.dirname}.stale-", dir=final.parent))
        final.replace(stale / "old")
        shutil.rmtree(stale, ignore_errors=True)
    try:
        model_dir.rename(final)
    except OSError:
        if is_complete(final, target):
            return final
        raise
    log.info("materialized %s into %s", target.requested, final)
    return final


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._") or "model"
