"""The model registry: register the chosen run idempotently, set aliases, list versions.

Registration is idempotent by run and by training key: a run that already has a version, or a run
that reproduces an existing version (same estimator, parameters, data and split), reuses that version.
Concurrent vintage processes on one machine serialise on a file lock; across machines, a duplicate
created in a race is detected after creation and removed (the lowest version number wins).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from vintage import statedb
from vintage.errors import RegistryError, first_line

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from vintage.tracking import TrackingSession

CANDIDATE = "candidate"
TAG_RUN = "vintage.run_id"
TAG_KEY = "vintage.training_key"
TAG_DIGEST = "vintage.data_digest"


class RunToRegister(Protocol):
    """What registration needs to know about a run (a training ``PointRun`` fits)."""

    run_id: str
    name: str
    estimator: str
    metrics: dict[str, float]
    model_uri: str | None
    training_key: str | None


@dataclass
class RegisteredVersion:
    """A model version as vintage reports it."""

    name: str
    version: int
    run_id: str | None
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    created_ms: int = 0
    reused: bool = False

    @property
    def source_run_id(self) -> str | None:
        """The MLflow run that produced this version (its ``run_id``; the ``vintage.run_id`` tag when the
        store did not keep it). A later run that reproduces the version (``reused``) is not it."""
        return self.run_id or self.tags.get(TAG_RUN)

    def metric(self, name: str) -> float | None:
        """A metric recorded as a version tag (``metric.rmse``)."""
        value = self.tags.get(f"metric.{name}")
        return float(value) if value is not None else None


def register_run(
    session: TrackingSession, model_name: str, run: RunToRegister, data_digest: str, alias: str = CANDIDATE
) -> RegisteredVersion:
    """Register ``run``'s model as a version of ``model_name`` (or reuse its existing one) and alias it.

    Raises:
        RegistryError: the registry refused the operation (nothing half-registered is left behind).
    """
    from mlflow.exceptions import MlflowException

    if run.model_uri is None:
        raise RegistryError(f"run {run.run_id} has no logged model to register")
    client = session.client
    try:
        # With a shared state (state_url) the lock is the database's, so CI jobs on two machines that register
        # one run at once queue here too; the lowest-version check in _create covers whatever else races.
        with statedb.holding(session.target.state_dir, f"registry-{model_name}", timeout=300) as held:
            if not held:
                raise RegistryError(f"registering {model_name}: another registration held the lock for 300 s")
            existing = _find_existing(client, model_name, run)
            if existing is None:
                existing = _create(client, model_name, run, data_digest)
            else:
                existing.reused = True
            client.set_registered_model_alias(model_name, alias, str(existing.version))
            existing.aliases = sorted({*existing.aliases, alias})
            return existing
    except MlflowException as exc:
        raise RegistryError(
            f"registering {model_name} failed: {first_line(exc)}",
            hint="check the registry; re-running `vintage train` is safe (registration is idempotent)",
        ) from exc


def _find_existing(client: MlflowClient, name: str, run: RunToRegister) -> RegisteredVersion | None:
    matches = [
        v
        for v in list_versions(client, name)
        if v.run_id == run.run_id or (run.training_key and v.tags.get(TAG_KEY) == run.training_key)
    ]
    return min(matches, key=lambda v: v.version) if matches else None


def _create(client: MlflowClient, name: str, run: RunToRegister, data_digest: str) -> RegisteredVersion:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="Registered by vintage.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    tags = {TAG_RUN: run.run_id, TAG_DIGEST: data_digest, "vintage.estimator": run.estimator}
    if run.training_key:
        tags[TAG_KEY] = run.training_key
    tags.update({f"metric.{k}": f"{v:.6g}" for k, v in run.metrics.items()})
    model_id = run.model_uri.removeprefix("models:/") if run.model_uri else None
    mv = client.create_model_version(
        name,
        source=run.model_uri or "",
        run_id=run.run_id,
        tags=tags,
        model_id=model_id,
        description=f"{run.name} from run {run.run_id}",
    )
    mine = _to_version(mv)
    # Another machine may have registered the same run at the same moment: keep the lowest version.
    winner = _find_existing(client, name, run)
    if winner is not None and winner.version < mine.version:
        client.delete_model_version(name, str(mine.version))
        winner.reused = True
        return winner
    return mine


def list_versions(client: MlflowClient, name: str) -> list[RegisteredVersion]:
    """Every version of ``name`` (oldest first), with aliases and tags."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{_quote(name)}'", max_results=10_000)
        aliases = _aliases(client, name) if versions else {}
    except MlflowException as exc:
        raise RegistryError(f"cannot list versions of {name}: {first_line(exc)}") from exc
    out = sorted((_to_version(v) for v in versions), key=lambda v: v.version)
    for v in out:  # search results do not carry aliases on every store; the registered model does
        v.aliases = sorted({*v.aliases, *aliases.get(v.version, [])})
    return out


def _aliases(client: MlflowClient, name: str) -> dict[int, list[str]]:
    by_version: dict[int, list[str]] = {}
    for alias, version in (client.get_registered_model(name).aliases or {}).items():
        by_version.setdefault(int(version), []).append(alias)
    return by_version


def _to_version(mv: Any) -> RegisteredVersion:
    return RegisteredVersion(
        name=mv.name,
        version=int(mv.version),
        run_id=mv.run_id,
        aliases=sorted(getattr(mv, "aliases", []) or []),
        tags=dict(mv.tags or {}),
        created_ms=int(mv.creation_timestamp or 0),
    )


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


HISTORY_TAG = "vintage.alias_history."
_HISTORY_KEEP = 20


def alias_version(client: MlflowClient, name: str, alias: str) -> int | None:
    """The version an alias points at (``None``: the alias or the model does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = client.get_registered_model(name).aliases or {}
    except MlflowException:
        return None
    version = aliases.get(alias)
    return int(version) if version is not None else None


def alias_history(client: MlflowClient, name: str, alias: str) -> list[dict[str, Any]]:
    """Moves of ``alias``, oldest first: ``{"version", "previous", "time", "actor", "reason"}``.

    Kept as a tag of the registered model, so it travels with the registry (embedded store or server).
    """
    import json

    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(name).tags or {}
    except MlflowException:
        return []
    try:
        history = json.loads(tags.get(HISTORY_TAG + alias, "[]"))
    except ValueError:
        return []
    return [h for h in history if isinstance(h, dict)]


def move_alias(
    client: MlflowClient, name: str, alias: str, version: int, *, actor: str, reason: str = ""
) -> int | None:
    """Point ``alias`` at ``version`` and append the move to the alias history; returns the previous
    version (``None`` if the alias was not set). Moving an alias where it already points is a no-op.

    Raises:
        RegistryError: the registry refused.
    """
    import json
    from datetime import UTC, datetime

    from mlflow.exceptions import MlflowException

    previous = alias_version(client, name, alias)
    if previous == version:
        return previous
    entry = {
        "version": version,
        "previous": previous,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "actor": actor,
        "reason": reason[:200],
    }
    history = [*alias_history(client, name, alias), entry][-_HISTORY_KEEP:]
    try:
        client.set_registered_model_alias(name, alias, str(version))
        client.set_registered_model_tag(name, HISTORY_TAG + alias, json.dumps(history))
    except MlflowException as exc:
        raise RegistryError(
            f"cannot move alias {alias} of {name} to version {version}: {first_line(exc)}"
        ) from exc
    return previous
