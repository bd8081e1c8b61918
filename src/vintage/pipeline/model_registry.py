"""The model registry as pipeline steps use it: one small interface, the MLflow one behind it by default.

Steps never call :mod:`vintage.registry` or the tracking client directly; they go through
:attr:`StepContext.registry <vintage.pipeline.context.StepContext.registry>`, a :class:`ModelRegistry`.
The default, :class:`MlflowRegistry`, is the tracking store's registry (opened on first use); tests pass
an in-memory one to :class:`~vintage.pipeline.runner.Runner` (``tests/support/fake_registry.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from vintage.registry import RegisteredVersion, RunToRegister
    from vintage.tracking import TrackingSession


class ModelRegistry(Protocol):
    """Versions, aliases and model files of registered models."""

    def register_run(
        self, name: str, run: RunToRegister, data_digest: str, *, alias: str
    ) -> RegisteredVersion:
        """Register ``run``'s model as a version of ``name`` (or reuse the version holding it); alias it.

        Raises:
            RegistryError: the registry refused.
        """
        ...

    def tag_run(self, run_id: str, key: str, value: str) -> None:
        """Tag the tracking run ``run_id`` (``vintage.registered_version``, ...)."""
        ...

    def alias_version(self, name: str, alias: str) -> int | None:
        """The version ``alias`` points at (``None``: not set)."""
        ...

    def log_artifact(self, run_id: str, path: Path, artifact_path: str) -> None:
        """Store the file ``path`` among the tracking run's artifacts, under ``artifact_path``."""
        ...

    def tag_version(self, name: str, version: int, key: str, value: str) -> None:
        """Tag the registered version ``name`` v``version``."""
        ...

    def move_alias(self, name: str, alias: str, version: int, *, actor: str, reason: str = "") -> int | None:
        """Point ``alias`` at ``version`` (recorded in its history); the version it pointed at before."""
        ...

    def alias_history(self, name: str, alias: str) -> list[dict[str, Any]]:
        """Moves of ``alias``, oldest first: ``{"version", "previous", ...}``."""
        ...

    def materialize(self, name: str, version: int, store: Path) -> Path:
        """The model directory of ``name`` v``version`` under ``store`` (fetched once, digest-checked)."""
        ...

    def load_model(self, name: str, version: int, store: Path) -> Any:
        """The served-model loader of ``name`` v``version``: ``predict(array)`` and ``info.columns``."""
        ...


@contextlib.contextmanager
def _refused(what: str) -> Iterator[None]:
    """MLflow's refusal as a :class:`RegistryError` naming what was refused."""
    from mlflow.exceptions import MlflowException

    from vintage.errors import RegistryError, first_line

    try:
        yield
    except MlflowException as exc:
        raise RegistryError(
            f"the tracking store refused {what}: {first_line(exc)}", hint="--verbose shows the full error"
        ) from exc


class MlflowRegistry:
    """The tracking store's model registry (:mod:`vintage.registry`), the session opened on first use.

    Args:
        session: Returns the tracking session (the step context's, opened once per stage).
    """

    def __init__(self, session: Callable[[], TrackingSession]) -> None:
        self._session = session

    def register_run(
        self, name: str, run: RunToRegister, data_digest: str, *, alias: str
    ) -> RegisteredVersion:
        from vintage.registry import register_run

        return register_run(self._session(), name, run, data_digest, alias=alias)

    def tag_run(self, run_id: str, key: str, value: str) -> None:
        self._session().client.set_tag(run_id, key, value)

    def alias_version(self, name: str, alias: str) -> int | None:
        from vintage.registry import alias_version

        return alias_version(self._session().client, name, alias)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str) -> None:
        with _refused(f"storing {path.name} in run {run_id}"):
            self._session().client.log_artifact(run_id, str(path), artifact_path)

    def tag_version(self, name: str, version: int, key: str, value: str) -> None:
        with _refused(f"tagging {name} v{version}"):
            self._session().client.set_model_version_tag(name, str(version), key, value)

    def move_alias(self, name: str, alias: str, version: int, *, actor: str, reason: str = "") -> int | None:
        from vintage.registry import move_alias

        return move_alias(self._session().client, name, alias, version, actor=actor, reason=reason)

    def alias_history(self, name: str, alias: str) -> list[dict[str, Any]]:
        from vintage.registry import alias_history

        return alias_history(self._session().client, name, alias)

    def materialize(self, name: str, version: int, store: Path) -> Path:
        from vintage.model.materialize import materialize

        return materialize(f"models:/{name}/{version}", store, tracking_uri=self._session().target.uri)

    def load_model(self, name: str, version: int, store: Path) -> Any:
        from vintage.model.load import load_model_dir

        return load_model_dir(self.materialize(name, version, store))
