"""An in-memory model registry: what pipeline steps use of the registry (:class:`ModelRegistry`), with the
same rules as :mod:`vintage.registry` (idempotent by run and training key, alias moves recorded, moving
an alias where it points is a no-op), and models that predict with a function the test gives.

No MLflow, no files beyond an empty model directory per materialised version: runner, gate and approval
tests run in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vintage.errors import RegistryError
from vintage.registry import RegisteredVersion, RunToRegister

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class _Info:
    columns: tuple[str, ...]


@dataclass
class FakeModel:
    """Quacks like a served-model loader: ``info.columns`` and ``predict(array)``."""

    info: _Info
    fn: Predict

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.fn(x)


@dataclass
class InMemoryRegistry:
    """Registered versions, aliases with their history, run tags and per-version predictions.

    Args:
        columns: The feature columns the models take (the wine features by default).
        default_predict: How a version predicts unless :attr:`predict` names it (default: 5.6 for all).
    """

    columns: Sequence[str] = ()
    default_predict: Predict = field(default=lambda x: np.full(len(x), 5.6))
    versions: dict[str, list[RegisteredVersion]] = field(default_factory=dict)
    aliases: dict[tuple[str, str], int] = field(default_factory=dict)
    history: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    run_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    artifacts: dict[str, dict[str, bytes]] = field(default_factory=dict)
    predict: dict[tuple[str, int], Predict] = field(default_factory=dict)
    materialized: list[tuple[str, int]] = field(default_factory=list)
    fail_register: str | None = None

    def register_run(
        self, name: str, run: RunToRegister, data_digest: str, *, alias: str
    ) -> RegisteredVersion:
        if self.fail_register:
            raise RegistryError(self.fail_register)
        if run.model_uri is None:
            raise RegistryError(f"run {run.run_id} has no logged model to register")
        known = self.versions.setdefault(name, [])
        found = next(
            (
                v
                for v in known
                if v.run_id == run.run_id
                or (run.training_key and v.tags.get("vintage.training_key") == run.training_key)
            ),
            None,
        )
        if found is None:
            tags = {"vintage.run_id": run.run_id, "vintage.data_digest": data_digest}
            if run.training_key:
                tags["vintage.training_key"] = run.training_key
            tags.update({f"metric.{k}": str(v) for k, v in run.metrics.items()})
            found = RegisteredVersion(name, len(known) + 1, run.run_id, tags=tags)
            known.append(found)
        else:
            found = RegisteredVersion(found.name, found.version, found.run_id, tags=found.tags, reused=True)
        self.aliases[(name, alias)] = found.version
        found.aliases = sorted(a for (n, a), v in self.aliases.items() if n == name and v == found.version)
        return found

    def tag_run(self, run_id: str, key: str, value: str) -> None:
        self.run_tags.setdefault(run_id, {})[key] = value

    def alias_version(self, name: str, alias: str) -> int | None:
        return self.aliases.get((name, alias))

    def log_artifact(self, run_id: str, path: Path, artifact_path: str) -> None:
        self.artifacts.setdefault(run_id, {})[f"{artifact_path}/{path.name}"] = path.read_bytes()

    def tag_version(self, name: str, version: int, key: str, value: str) -> None:
        for v in self.versions.get(name, []):
            if v.version == version:
                v.tags[key] = value
                return
        raise RegistryError(f"{name} has no version {version}")

    def move_alias(self, name: str, alias: str, version: int, *, actor: str, reason: str = "") -> int | None:
        previous = self.aliases.get((name, alias))
        if previous == version:
            return previous
        self.aliases[(name, alias)] = version
        entry = {"version": version, "previous": previous, "actor": actor, "reason": reason}
        self.history.setdefault((name, alias), []).append(entry)
        return previous

    def alias_history(self, name: str, alias: str) -> list[dict[str, Any]]:
        return list(self.history.get((name, alias), []))

    def materialize(self, name: str, version: int, store: Path) -> Path:
        if not any(v.version == version for v in self.versions.get(name, [])):
            raise RegistryError(f"{name} has no version {version}")
        path = store / f"{name}-v{version}"
        path.mkdir(parents=True, exist_ok=True)
        self.materialized.append((name, version))
        return path

    def load_model(self, name: str, version: int, store: Path) -> FakeModel:
        self.materialize(name, version, store)
        return FakeModel(_Info(tuple(self.columns)), self.predict.get((name, version), self.default_predict))
